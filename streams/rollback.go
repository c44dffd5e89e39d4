package streams

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// A failover can roll a room back: entries the old primary had (and the
// tail read and delivered) never reached the replica that was promoted, so
// the room's stream no longer has them. When the tail sees the primary
// change (a Sentinel client dialing a new address, a Cluster room moving
// to another node), it marks its rooms suspect; before its next read of a
// suspect room it checks that the newest entry it read is still there.
// If it is gone, and not because it was trimmed (it is not older than the
// first entry), the room was rolled back: the ring is dropped, the tail
// reads on from the newest entry that survived, and every subscriber that
// was sent something after that entry is told (Subscription.RolledBack)
// before it is sent anything newer.

// suspectAll marks every tailed room to be checked before its next read,
// and queues them all for a read.
func (h *Hub) suspectAll() {
	rooms := h.roomsNow()
	for _, r := range rooms {
		r.suspect.Store(true)
	}
	if h.Mode() == ModeBlocking {
		// Only the blocking groups read their rooms (reads of one room
		// never overlap): each checks before its next read, now.
		go h.groups.wakeAll()
		return
	}
	h.tail.ring(rooms...)
}

// anySuspect reports whether a room of rooms was marked suspect (again)
// while it was being read: what was read may come from the old primary.
func anySuspect(rooms []*tailedRoom) bool {
	for _, r := range rooms {
		if r.suspect.Load() {
			return true
		}
	}
	return false
}

// checkRollbacks checks the suspect rooms of a read, in one pipeline: the
// newest entry at or before each one's head, and its first entry.
func (h *Hub) checkRollbacks(ctx context.Context, rooms []*tailedRoom) error {
	var check []*tailedRoom
	for _, r := range rooms {
		if r.suspect.CompareAndSwap(true, false) {
			check = append(check, r)
		}
	}
	if len(check) == 0 {
		return nil
	}
	pipe := h.store.rdb.Pipeline()
	heads := make([]ID, len(check))
	kept := make([]*redis.XMessageSliceCmd, len(check))
	first := make([]*redis.XMessageSliceCmd, len(check))
	newest := make([]*redis.XMessageSliceCmd, len(check)) // for rooms that owe reads (owed.go)
	for i, r := range check {
		heads[i], _ = r.heads()
		if !heads[i].IsZero() {
			kept[i] = pipe.XRevRangeN(ctx, r.key, heads[i].String(), "-", 1)
			first[i] = pipe.XRangeN(ctx, r.key, "-", "+", 1)
		}
		if r.hasOwed() {
			newest[i] = pipe.XRevRangeN(ctx, r.key, "+", "-", 1)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		for _, r := range check {
			r.suspect.Store(true) // checked at the next read
		}
		return fmt.Errorf("check the rooms for a rollback: %w", err)
	}
	for i, r := range check {
		if newest[i] != nil {
			// Acknowledged entries newer than the newest one there: unless
			// the next read finds them, a quiet room would never say so.
			if gone := r.owedPast(firstID(newest[i].Val())); len(gone) > 0 {
				h.confirmLost(r, gone)
			}
		}
		if kept[i] == nil {
			continue
		}
		survivor := firstID(kept[i].Val())
		if survivor == heads[i] {
			continue
		}
		if f := firstID(first[i].Val()); !f.IsZero() && heads[i].Less(f) {
			continue // trimmed, not rolled back: the gap check of catch-up reads says so
		}
		h.rollBack(r, heads[i], survivor)
	}
	return nil
}

func firstID(ms []redis.XMessage) ID {
	if len(ms) == 0 {
		return Zero
	}
	id, _ := ParseID(ms[0].ID)
	return id
}

// rollBack drops what the tail had of r after survivor, and tells every
// subscriber.
func (h *Hub) rollBack(r *tailedRoom, head, survivor ID) {
	r.mu.Lock()
	clear(r.ring)
	r.start, r.n, r.base, r.head = 0, 0, survivor, survivor
	subs := r.subs
	r.mu.Unlock()
	for _, s := range subs {
		s.tellRolledBack(rollbackNews{to: survivor})
	}
	h.stats.RollBacks.Add(1)
	h.log.Warn("entries delivered from the room are gone from Redis after a primary change: its history was rolled back",
		"room", r.name, "last_read", head.String(), "last_kept", survivor.String())
	r.notifyAll()
}

// rollbackFound is what a subscription was told of a rollback: taken by
// Next, reported once by RolledBack.
type rollbackFound struct {
	found bool
	to    ID
}

// rollbackNews is what the tail tells a subscriber of a rollback: the
// newest entry kept, and whether the subscriber is told because an entry
// it acknowledged is gone (owed.go) rather than entries it was sent.
type rollbackNews struct {
	to   ID
	owed bool
}

// tellRolledBack leaves news for the subscriber's next Next. Of two
// rollbacks not yet reported, the older kept entry is the one to tell.
func (s *Subscription) tellRolledBack(news rollbackNews) {
	for {
		old := s.rolled.Load()
		if old != nil {
			if old.to.Less(news.to) {
				news.to = old.to
			}
			news.owed = news.owed || old.owed
		}
		if s.rolled.CompareAndSwap(old, &news) {
			return
		}
	}
}

// rolledBack is Next's part: when the room was rolled back below cursor
// (this subscriber was sent entries that are gone), the cursor moves back
// to the newest entry kept and RolledBack reports it (moved). When an entry
// the subscriber acknowledged is gone but nothing it was sent, the cursor
// stays and RolledBack reports it all the same.
func (s *Subscription) rolledBack(cursor ID) (next ID, moved bool) {
	p := s.rolled.Swap(nil)
	switch {
	case p == nil:
		return cursor, false
	case p.to.Less(cursor):
		s.rollback = rollbackFound{found: true, to: p.to}
		return p.to, true
	case p.owed:
		s.rollback = rollbackFound{found: true, to: p.to}
	}
	return cursor, false
}

// RolledBack reports, once, that the last Next found the room rolled back
// under this subscriber: entries it was sent are gone from Redis, and what
// Next returns from now on comes after last, the newest entry that is
// still there. Tell the client before anything newer.
func (s *Subscription) RolledBack() (last ID, ok bool) {
	rb := s.rollback
	s.rollback = rollbackFound{}
	return rb.to, rb.found
}
