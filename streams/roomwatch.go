package streams

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// A RoomWatch tells a listener (webhook delivery) which rooms may have new
// entries, whoever wrote them: this instance, another, the HTTP API, a
// person at redis-cli, in rooms nobody here is subscribed to. It rides on
// the tail's doorbell: with keyspace notifications (ModeNotify) each
// subscriber connection also listens to one pattern,
// __keyspace@DB__:PREFIX:{*}:messages, on every primary. Without them (the
// fallback modes, the embedded Redis) it reads the rooms list, which every
// xroom append touches, every PollEvery, and lists the streams (SCAN) every
// ScanEvery for rooms only redis-cli wrote to.
//
// It also lists every stream of the prefix once at the start, so that
// rooms written to while no instance was watching are not missed.

// RoomWatchOptions configure WatchRooms; zero values take the defaults.
type RoomWatchOptions struct {
	// PollEvery is how often the fallback reads the rooms list.
	PollEvery time.Duration
	// ScanEvery is how often the fallback lists every stream again.
	ScanEvery time.Duration
}

const (
	defaultWatchPoll = time.Second
	defaultWatchScan = 30 * time.Second
	// watchSlack widens each read of the rooms list back in time: scores
	// are the appending instance's clock, which may lag ours (5 s), and a
	// room's score moves only once per roomTouchEvery, written up to
	// roomsFlushEvery later.
	watchSlack = 5*time.Second + roomTouchEvery + roomsFlushEvery
	// scanCount is the COUNT of one SCAN call: a few ms of Redis work.
	scanCount = 1000
)

// RoomWatch reports rooms that may have new entries; see WatchRooms.
type RoomWatch struct {
	h       *Hub
	changed func(room string)
	opt     RoomWatchOptions
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}

	mu    sync.Mutex
	known map[string]struct{}

	mode      atomic.Int32 // the TailMode it watches by, once chosen
	heard     atomic.Int64 // Unix ms the pattern subscription last worked
	resync    chan struct{}
	rescan    atomic.Bool   // the pattern was confirmed again: list the streams again
	confirmed chan struct{} // closed at the first pattern confirmation
	confirm   sync.Once
}

// WatchRooms calls changed, from its own goroutine, with every room that
// may have new entries: every stream of the prefix at the start, then
// every room written to. A call may repeat, and may come for a room with
// nothing new; it must not block for long. Stop it with Close (or by
// closing the hub).
func (h *Hub) WatchRooms(changed func(room string), opt RoomWatchOptions) *RoomWatch {
	orDefault(&opt.PollEvery, defaultWatchPoll)
	orDefault(&opt.ScanEvery, defaultWatchScan)
	ctx, cancel := context.WithCancel(h.ctx)
	w := &RoomWatch{h: h, changed: changed, opt: opt, ctx: ctx, cancel: cancel, done: make(chan struct{}),
		known: map[string]struct{}{}, resync: make(chan struct{}, 1), confirmed: make(chan struct{})}
	w.heard.Store(time.Now().UnixMilli())
	go w.run()
	return w
}

// Mode is how rooms are found: ModeNotify (keyspace notifications) or a
// fallback that polls; ModeAuto until the hub has chosen.
func (w *RoomWatch) Mode() TailMode { return TailMode(w.mode.Load()) }

// Close stops the watch and waits for it.
func (w *RoomWatch) Close() {
	w.cancel()
	w.h.bells.unwatch(w)
	<-w.done
}

func (w *RoomWatch) run() {
	defer close(w.done)
	h := w.h
	select {
	case <-h.modeSet:
	case <-w.ctx.Done():
		return
	}
	mode := h.Mode()
	if mode != ModeNotify {
		mode = ModePoll
	}
	w.mode.Store(int32(mode))
	if mode == ModeNotify {
		h.bells.watch(w)
		// Subscribed before the first listing, so no room falls between.
		select {
		case <-w.confirmed:
		case <-time.After(h.opt.CatchUpTimeout):
		case <-w.ctx.Done():
			return
		}
		h.log.Info("rooms with new messages are found by keyspace notifications (a pattern subscription)")
	} else {
		h.log.Warn("no keyspace notifications: rooms with new messages are found by reading the rooms list every "+w.opt.PollEvery.String()+
			" and listing every stream every "+w.opt.ScanEvery.String()+"; a redis-cli XADD to a room xroom has not written to may take that long",
			"fix", "let Redis send keyspace notifications (notify-keyspace-events including K and t)")
	}
	polled := time.Now()
	w.scanUntilDone()
	poll, scan := w.tickers(mode)
	defer poll.Stop()
	defer scan.Stop()
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-w.resync:
			w.resyncNow()
		case <-poll.C:
			now := time.Now()
			w.pollSince(polled)
			polled = now
		case <-scan.C:
			w.scanUntilDone()
		}
	}
}

// tickers are the fallback's timers; with notifications they never fire.
func (w *RoomWatch) tickers(mode TailMode) (poll, scan *time.Ticker) {
	poll, scan = time.NewTicker(w.opt.PollEvery), time.NewTicker(w.opt.ScanEvery)
	if mode == ModeNotify {
		poll.Stop()
		scan.Stop()
	}
	return poll, scan
}

// report passes rooms on, remembering them for a resync.
func (w *RoomWatch) report(rooms ...string) {
	for _, r := range rooms {
		w.mu.Lock()
		w.known[r] = struct{}{}
		w.mu.Unlock()
		w.changed(r)
	}
}

// heardKey is a notification of the pattern: key had an XADD.
func (w *RoomWatch) heardKey(key string) {
	w.heard.Store(time.Now().UnixMilli())
	if room, ok := w.roomOf(key); ok {
		w.report(room)
	}
}

// subscribed is the pattern's confirmation, first or after a reconnect:
// whatever happened while it was off is looked at again.
func (w *RoomWatch) subscribed() {
	first := false
	w.confirm.Do(func() { close(w.confirmed); first = true })
	if !first {
		w.rescan.Store(true) // a room only redis-cli wrote to while it was off is in no list
	}
	select {
	case w.resync <- struct{}{}:
	default:
	}
}

// resyncNow reports every room known, every room in the rooms list active
// since the pattern last worked, and after a reconnect every stream (a
// SCAN: rare, and the one way to find a room only redis-cli wrote to while
// the pattern was off).
func (w *RoomWatch) resyncNow() {
	since := time.UnixMilli(w.heard.Load())
	w.heard.Store(time.Now().UnixMilli())
	w.mu.Lock()
	rooms := make([]string, 0, len(w.known))
	for r := range w.known {
		rooms = append(rooms, r)
	}
	w.mu.Unlock()
	for _, r := range rooms {
		w.changed(r)
	}
	w.pollSince(since)
	if w.rescan.Swap(false) {
		w.scanUntilDone()
	}
}

// pollSince reports the rooms the rooms list shows active since t.
func (w *RoomWatch) pollSince(t time.Time) {
	ctx, cancel := context.WithTimeout(w.ctx, w.h.opt.CatchUpTimeout)
	defer cancel()
	from := strconv.FormatInt(t.Add(-watchSlack).UnixMilli(), 10)
	rooms, err := w.h.store.rdb.ZRangeByScore(ctx, w.h.store.keys.Rooms(), &redis.ZRangeBy{Min: from, Max: "+inf"}).Result()
	if err != nil {
		if w.ctx.Err() == nil {
			w.h.log.Warn("cannot read the rooms list to find rooms with new messages", "err", err)
		}
		return
	}
	w.report(rooms...)
}

// scanUntilDone lists every stream of the prefix, retrying while Redis
// cannot be reached.
func (w *RoomWatch) scanUntilDone() {
	backoff := newBackoff()
	for {
		err := w.scan()
		if err == nil || w.ctx.Err() != nil {
			return
		}
		w.h.log.Warn("cannot list the rooms' streams; retrying", "err", err)
		if !backoff.wait(w.ctx) {
			return
		}
	}
}

func (w *RoomWatch) scan() error {
	match := globEscape(w.h.store.keys.Prefix) + ":{*}:messages"
	each := func(ctx context.Context, c redis.Cmdable) error {
		var cursor uint64
		for {
			keys, next, err := c.ScanType(ctx, cursor, match, scanCount, "stream").Result()
			if err != nil {
				return err
			}
			for _, k := range keys {
				if room, ok := w.roomOf(k); ok {
					w.report(room)
				}
			}
			if cursor = next; cursor == 0 {
				return nil
			}
		}
	}
	if cc, ok := w.h.store.rdb.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(w.ctx, func(ctx context.Context, c *redis.Client) error { return each(ctx, c) })
	}
	return each(w.ctx, w.h.store.rdb)
}

// roomOf is the room whose stream key is key.
func (w *RoomWatch) roomOf(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, w.h.store.keys.Prefix+":{")
	if !ok {
		return "", false
	}
	room, ok := strings.CutSuffix(rest, "}:messages")
	return room, ok && room != ""
}

// pattern is the keyspace channel pattern of every room's stream, for a
// subscriber whose channels start with chanPrefix ("__keyspace@DB__:").
func (w *RoomWatch) pattern(chanPrefix string) string {
	return globEscape(chanPrefix+w.h.store.keys.Prefix) + ":{*}:messages"
}

// globEscape escapes what Redis patterns treat specially.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
