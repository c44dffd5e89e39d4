package streams

import (
	"sync"
	"time"
)

// reaper holds rooms whose last subscriber left, until they have been
// empty for Linger: only rooms that emptied cost it any work.
type reaper struct {
	mu    sync.Mutex
	rooms []*tailedRoom
	wake  chan struct{}
}

func (rp *reaper) add(r *tailedRoom) {
	rp.mu.Lock()
	rp.rooms = append(rp.rooms, r)
	rp.mu.Unlock()
	select {
	case rp.wake <- struct{}{}:
	default:
	}
}

// reap forgets rooms nobody has wanted for Linger.
func (h *Hub) reap() {
	defer h.wg.Done()
	tick := time.NewTicker(max(h.opt.Linger/4, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-h.reaper.wake:
		case <-tick.C:
		}
		h.reaper.mu.Lock()
		waiting := h.reaper.rooms
		h.reaper.rooms = nil
		h.reaper.mu.Unlock()
		var keep []*tailedRoom
		for _, r := range waiting {
			switch h.forgetIfIdle(r) {
			case stillEmpty:
				keep = append(keep, r)
			case forgotten:
				h.bells.remove(r)
				h.groups.remove(r)
			}
		}
		if len(keep) > 0 {
			h.reaper.mu.Lock()
			h.reaper.rooms = append(h.reaper.rooms, keep...)
			h.reaper.mu.Unlock()
		}
	}
}

type idleness int

const (
	wanted idleness = iota // someone subscribed again, or the room was already forgotten
	stillEmpty
	forgotten
)

func (h *Hub) forgetIfIdle(r *tailedRoom) idleness {
	h.mu.Lock()
	defer h.mu.Unlock()
	r.mu.RLock()
	empty, since := len(r.subs) == 0, r.emptySince
	r.mu.RUnlock()
	switch {
	case !empty || h.rooms[r.name] != r:
		return wanted
	case time.Since(since) < h.opt.Linger:
		return stillEmpty
	}
	delete(h.rooms, r.name)
	return forgotten
}
