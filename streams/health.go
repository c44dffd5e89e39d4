package streams

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrUnavailable is wrapped by the errors of a room that cannot be tailed
// now (Redis refuses the tail's connections, its reads keep failing): its
// subscribers should be told to come back later rather than wait on silence.
var ErrUnavailable = errors.New("room unavailable")

const (
	// watchEvery is how often the watchdog looks at the tail's health.
	watchEvery = 250 * time.Millisecond
	// stallLogEvery bounds the log lines of a lasting stall.
	stallLogEvery = 10 * time.Second
	// watchPing bounds the watchdog's check that Redis takes commands.
	watchPing = time.Second
)

// health is what the tail's own reads say about Redis.
type health struct {
	mu        sync.Mutex
	failSince time.Time // reads failing since; zero while they work
	lastErr   error
}

func (s *health) readOK() {
	s.mu.Lock()
	s.failSince, s.lastErr = time.Time{}, nil
	s.mu.Unlock()
}

func (s *health) readFailed(err error) {
	s.mu.Lock()
	if s.failSince.IsZero() {
		s.failSince = time.Now()
	}
	s.lastErr = err
	s.mu.Unlock()
}

// failing returns why reads have been failing since before cutoff, or nil.
func (s *health) failing(cutoff time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failSince.IsZero() || s.failSince.After(cutoff) {
		return nil
	}
	return fmt.Errorf("%w: tail reads are failing since %s: %v", ErrUnavailable, s.failSince.UTC().Format(time.RFC3339), s.lastErr)
}

// Health is nil while every tailed room can be tailed, else the reason
// (wrapping ErrUnavailable): for readiness checks.
func (h *Hub) Health() error {
	if err := h.stall.Load(); err != nil {
		return *err
	}
	return nil
}

// watch marks the rooms that cannot be tailed while Redis takes commands
// (so messages are being stored that nobody would deliver), and wakes their
// subscribers so they can tell their clients, until they can again. While
// Redis is down as a whole nothing is stored and nothing is missed: the
// connections wait (their sends fail on their own) and the tail resumes
// from its last IDs.
func (h *Hub) watch() {
	defer h.wg.Done()
	tick := time.NewTicker(watchEvery)
	defer tick.Stop()
	var lastLog time.Time
	stalled := false // some room was marked at the last look
	// A failing tail counts as stalled only once Redis has been taking
	// commands for StallAfter while it failed: right after an outage the
	// tail gets a moment to reconnect before anyone is told.
	var allOK time.Time
	bellOK := map[*bell]time.Time{}
	since := func(ok *time.Time, answers bool) bool {
		if !answers {
			*ok = time.Time{}
			return false
		}
		if ok.IsZero() {
			*ok = time.Now()
		}
		return time.Since(*ok) >= h.opt.StallAfter
	}
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		all := h.health.failing(now)
		if all == nil {
			all = h.groups.failing(now)
		}
		if all == nil {
			allOK = time.Time{}
		} else if !since(&allOK, h.answers(h.store.rdb)) {
			all = nil
		}
		bellsDown := h.bells.downOf(now)
		for bl := range bellOK {
			if _, down := bellsDown[bl]; !down {
				delete(bellOK, bl)
			}
		}
		for bl := range bellsDown {
			ok := bellOK[bl]
			stuck := since(&ok, h.answers(bl.commands()))
			bellOK[bl] = ok
			if !stuck {
				delete(bellsDown, bl)
			}
		}
		if all == nil && len(bellsDown) == 0 {
			if stalled {
				stalled = false
				h.stall.Store(nil)
				for _, r := range h.roomsNow() {
					r.stalled.Store(nil)
				}
				h.log.Info("every room can be tailed again")
			}
			continue
		}
		stalled = true
		first := all
		for _, err := range bellsDown {
			if first == nil {
				first = err
			}
		}
		h.stall.Store(&first)
		if time.Since(lastLog) >= stallLogEvery {
			lastLog = time.Now()
			h.log.Error("rooms cannot be tailed; their clients are told to reconnect", "err", first)
		}
		for _, r := range h.roomsNow() {
			err := all
			if err == nil {
				err = bellsDown[h.bells.bellOf(r)]
			}
			if err == nil {
				r.stalled.Store(nil)
				continue
			}
			if r.stalled.Swap(&err) == nil {
				h.stats.Stalls.Add(1)
				r.notifyAll()
			}
		}
	}
}

// answers tells whether Redis takes commands on c's pool now.
func (h *Hub) answers(c redis.UniversalClient) bool {
	ctx, cancel := context.WithTimeout(h.ctx, watchPing)
	defer cancel()
	return c.Ping(ctx).Err() == nil
}
