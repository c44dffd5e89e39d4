package streams

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// tailedRoom is one room being tailed: the recent entries and who wants them.
type tailedRoom struct {
	name  string
	key   string
	ready chan struct{} // closed once the starting position is known

	mu   sync.RWMutex
	subs []*Subscription // copy-on-write: the tail notifies a snapshot without locking
	// ring holds the newest entries in order. Every entry after base up to
	// head is in it, so a subscriber at or after base is served from memory.
	ring    []*Entry
	ringMax int // the most entries ring grows to (HubOptions.Buffer)
	start   int // index of the oldest entry in ring
	n       int
	base    ID
	head    ID
	// emptySince is when the last subscriber left (zero while it has some):
	// the room is forgotten once it has been empty for HubOptions.Linger.
	emptySince time.Time

	events eventRing // presence events, read by the same XREAD (events.go)
	// withEvents is false once the events key turned out not to be a
	// stream (redis-cli SET ...): messages go on without presence events.
	withEvents atomic.Bool
	// epoch is the incarnation of the room's history the ring belongs to,
	// as the last subscriber to look found it in Redis (see Subscription.Epoch).
	epoch string

	// stalled is the reason the room cannot be tailed now (health.go), or
	// nil: its subscribers are told unavailable instead of waiting on silence.
	stalled atomic.Pointer[error]

	// suspect: the primary may have changed since the room was last read;
	// the next read checks for a rollback first (rollback.go).
	suspect atomic.Bool
	// owed are entries subscribers acknowledged that the tail has not read
	// yet (owed.go), guarded by mu.
	owed []owedRead

	// The reader's bookkeeping (tail.go), guarded by tailer.mu.
	queued  bool // waiting in the read queue
	reading bool // a read of it is in flight
	again   bool // it rang while being read: read once more after
	// Reads back of this instance's appends (readback.go), guarded by
	// tailer.mu: readingBack while an append pipeline reads it, early the
	// xadd events heard meanwhile, skip the coming ones a read back covered.
	readingBack bool
	early, skip int
	// bellGen is the doorbell generation the room's channel was confirmed
	// on (readback.go), 0 while its events may be lost.
	bellGen atomic.Int64
}

// Subscription is one subscriber's view of a room.
type Subscription struct {
	hub    *Hub
	room   *tailedRoom
	notify func()
	gap    catchUpGap // livegap.go
	// rolled is set by the tail when the room was rolled back (rollback.go),
	// rollback is what Next made of it, for whoever calls Next.
	rolled   atomic.Pointer[rollbackNews]
	rollback rollbackFound
}

// Close stops notifications. The room stops being tailed once nobody has
// been subscribed to it for HubOptions.Linger.
func (s *Subscription) Close() {
	r := s.room
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, x := range r.subs {
		if x == s {
			subs := make([]*Subscription, 0, len(r.subs)-1)
			r.subs = append(append(subs, r.subs[:i]...), r.subs[i+1:]...)
			if len(r.subs) == 0 {
				r.emptySince = time.Now()
				s.hub.reaper.add(r)
			}
			return
		}
	}
}

// sawEpoch tells the room's tail which incarnation of the room's history a
// join found in Redis (Joined, with the plan's epoch). When it differs from the one seen
// before, Redis lost the room (FLUSHALL, a restart without persistence):
// the entries in memory are gone from Redis, so they are dropped and
// subscribers behind the tail read what Redis holds now.
func (s *Subscription) sawEpoch(epoch string) {
	r := s.room
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.epoch != "" && r.epoch != epoch {
		clear(r.ring)
		r.start, r.n, r.base = 0, 0, r.head
	}
	r.epoch = epoch
}

// Head is the newest ID the room's tail has read: a point up to which the
// history already exists.
func (s *Subscription) Head() ID {
	s.room.mu.RLock()
	defer s.room.mu.RUnlock()
	return s.room.head
}

// Next fills dst (up to its capacity) with the entries after cursor, in
// order, and returns them with the new cursor. It serves from memory when
// it can and reads Redis (within CatchUpTimeout) when cursor is behind the
// room's buffer. Entries without a message are included (so the cursor
// passes them) with no Frame. When a read from Redis finds entries after
// cursor trimmed away, Gap says so. When the room cannot be tailed now
// (Redis refuses the tail's connection, say), it fails with an error that
// wraps ErrUnavailable: the caller should tell its client to come back later.
// When a failover rolled the room back below cursor, it returns no entries
// and the cursor to go on from, and RolledBack says so.
func (s *Subscription) Next(ctx context.Context, cursor ID, dst []*Entry) ([]*Entry, ID, error) {
	r := s.room
	if err := r.stalled.Load(); err != nil {
		return dst[:0], cursor, *err
	}
	dst = dst[:0]
	if back, ok := s.rolledBack(cursor); ok {
		return dst, back, nil // RolledBack says so; what comes after back follows
	}
	max := cap(dst)
	if max == 0 {
		max = 1
	}
	r.mu.RLock()
	if !cursor.Less(r.base) {
		dst = r.after(cursor, dst, max)
		r.mu.RUnlock()
		if len(dst) > 0 {
			cursor = dst[len(dst)-1].ID
		}
		return dst, cursor, nil
	}
	base := r.base
	r.mu.RUnlock()

	s.hub.stats.CatchUps.Add(1)
	ctx, cancel := context.WithTimeout(ctx, s.hub.opt.CatchUpTimeout)
	defer cancel()
	es, err := s.hub.store.Range(ctx, r.name, cursor, max)
	if err == nil {
		err = s.checkGap(ctx, cursor, es) // announced before es (Subscription.Gap)
	}
	if err != nil {
		return dst, cursor, err
	}
	if len(es) == 0 {
		// Nothing retained between cursor and the buffer (trimmed or
		// deleted): continue from the buffer.
		return dst, base, nil
	}
	for i := range es {
		s.hub.Encode(r.name, &es[i])
		dst = append(dst, &es[i])
	}
	return dst, es[len(es)-1].ID, nil
}

// Read is Next without the buffer: up to cap(dst) entries after cursor,
// straight from Redis, and the new cursor (cursor itself when Redis has
// nothing newer). A joining connection uses it when the buffer has nothing
// for it yet but the replay is not done: the room's tail may not have read
// that far, and only Redis can tell that from a stream that was reset.
func (s *Subscription) Read(ctx context.Context, cursor ID, dst []*Entry) ([]*Entry, ID, error) {
	dst = dst[:0]
	ctx, cancel := context.WithTimeout(ctx, s.hub.opt.CatchUpTimeout)
	defer cancel()
	es, err := s.hub.store.Range(ctx, s.room.name, cursor, max(cap(dst), 1))
	if err != nil || len(es) == 0 {
		return dst, cursor, err
	}
	for i := range es {
		s.hub.Encode(s.room.name, &es[i])
		dst = append(dst, &es[i])
	}
	return dst, es[len(es)-1].ID, nil
}

// after appends to dst up to max ring entries newer than cursor. r.mu must be held.
func (r *tailedRoom) after(cursor ID, dst []*Entry, max int) []*Entry {
	// Binary search for the first entry newer than cursor.
	lo, hi := 0, r.n
	for lo < hi {
		mid := (lo + hi) / 2
		if cursor.Less(r.at(mid).ID) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	for i := lo; i < r.n && len(dst) < max; i++ {
		dst = append(dst, r.at(i))
	}
	return dst
}

func (r *tailedRoom) at(i int) *Entry { return r.ring[(r.start+i)%len(r.ring)] }

// ringStart is a new room's ring: small, since most rooms (direct
// messages, say) never need the whole buffer; it doubles up to ringMax.
const ringStart = 16

// push adds entries read by the tail. r.mu must be held.
func (r *tailedRoom) push(es []*Entry) {
	for _, e := range es {
		if r.n == len(r.ring) && len(r.ring) < r.ringMax {
			grown := make([]*Entry, min(2*len(r.ring), r.ringMax))
			for i := range r.n {
				grown[i] = r.at(i)
			}
			r.ring, r.start = grown, 0
		}
		if r.n == len(r.ring) {
			r.base = r.ring[r.start].ID
			r.ring[r.start] = nil
			r.start = (r.start + 1) % len(r.ring)
			r.n--
		}
		r.ring[(r.start+r.n)%len(r.ring)] = e
		r.n++
		r.head = e.ID
	}
}

// notifyAll wakes every subscriber; they look for themselves what is new.
func (r *tailedRoom) notifyAll() {
	r.mu.RLock()
	subs := r.subs
	r.mu.RUnlock()
	for _, s := range subs {
		s.notify()
	}
}

// heads returns where the tail reads the room's two streams from next.
// Reads of one room never overlap (tail.go), so events.head, which only
// they touch, needs no lock.
func (r *tailedRoom) heads() (messages, events ID) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.head, r.events.head
}
