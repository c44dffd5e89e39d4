package streams

import (
	"context"
	"errors"
	"slices"

	"github.com/redis/go-redis/v9"
)

// An acknowledged entry can be lost without any connection having been
// sent it. With REDIS_ACK_REPLICAS=0, the old primary of a planned
// failover keeps accepting (and xroom acknowledging) appends that the
// promoted replica never gets; when the tail had not read them before the
// switch, no connection holds them, and the head check of rollback.go
// finds nothing missing. Their senders hold the acks, though. So each
// acknowledged ID is owed a read: the sender's subscription registers it
// (Subscription.Acked), and the first tail read that covers it either
// finds it, or proves it gone, and then that subscriber is told (gap
// rolled_back) whatever its cursor.

// maxOwed bounds the IDs a room keeps waiting for a read. The tail is that
// far behind only while Redis fails, and then the appends fail too; past
// it the oldest go unchecked.
const maxOwed = 4096

// owedRead is an acknowledged entry the tail has not read yet, and the
// subscriber whose connection acknowledged it.
type owedRead struct {
	id  ID
	sub *Subscription
}

// Acked registers that the subscriber's connection acknowledged id, an
// entry it appended to the room: should a failover lose it before the
// room's tail reads it, RolledBack tells this subscriber.
func (s *Subscription) Acked(id ID) {
	r := s.room
	r.mu.Lock()
	if r.head.Less(id) {
		if len(r.owed) >= maxOwed {
			r.owed = slices.Delete(r.owed, 0, 1)
		}
		r.owed = append(r.owed, owedRead{id: id, sub: s})
		r.mu.Unlock()
		return
	}
	// The tail read past id before the ack came back (usual: Redis answers
	// both in one pass). Memory holds every entry after base.
	missing := r.base.Less(id) && !r.holds(id)
	r.mu.Unlock()
	if missing {
		s.hub.confirmLost(r, []owedRead{{id: id, sub: s}})
	}
}

// holds reports whether the ring has the entry id. r.mu must be held.
func (r *tailedRoom) holds(id ID) bool {
	lo, hi := 0, r.n
	for lo < hi {
		mid := (lo + hi) / 2
		if r.at(mid).ID.Less(id) {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo < r.n && r.at(lo).ID == id
}

// settle pays what a tail read owes: the owed entries up to the batch's
// last one are either in it, or missing. batch comes straight after the
// previous head, in order. r.mu must be held.
func (r *tailedRoom) settle(batch []*Entry) (missing []owedRead) {
	if len(r.owed) == 0 || len(batch) == 0 {
		return nil
	}
	last := batch[len(batch)-1].ID
	kept := r.owed[:0]
	for _, o := range r.owed {
		if last.Less(o.id) {
			kept = append(kept, o) // not read yet
			continue
		}
		_, found := slices.BinarySearchFunc(batch, o.id, func(e *Entry, id ID) int { return e.ID.Compare(id) })
		if !found {
			missing = append(missing, o)
		}
	}
	clear(r.owed[len(kept):])
	r.owed = kept
	return missing
}

// confirmLost asks Redis about owed entries a read did not find: an entry
// older than the stream's first was trimmed (MAXLEN), not lost; one that
// is not there and not older was rolled back, and its subscriber is told,
// with the newest entry kept before it.
func (h *Hub) confirmLost(r *tailedRoom, missing []owedRead) {
	ctx, cancel := context.WithTimeout(h.ctx, h.opt.CatchUpTimeout)
	defer cancel()
	pipe := h.store.rdb.Pipeline()
	first := pipe.XRangeN(ctx, r.key, "-", "+", 1)
	at := make([]*redis.XMessageSliceCmd, len(missing))
	kept := make([]*redis.XMessageSliceCmd, len(missing))
	for i, o := range missing {
		at[i] = pipe.XRangeN(ctx, r.key, o.id.String(), o.id.String(), 1)
		kept[i] = pipe.XRevRangeN(ctx, r.key, o.id.String(), "-", 1)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		h.log.Warn("cannot check acknowledged entries the tail did not find", "room", r.name, "entries", len(missing), "err", err)
		return
	}
	oldest := firstID(first.Val())
	for i, o := range missing {
		if len(at[i].Val()) > 0 || oldest.IsZero() || o.id.Less(oldest) {
			continue // there after all, or trimmed, or the room is gone (an epoch change says so)
		}
		h.tellOwed(r, o, firstID(kept[i].Val()))
	}
}

// tellOwed tells o's subscriber that the entry it acknowledged is gone,
// survivor being the newest entry kept before it.
func (h *Hub) tellOwed(r *tailedRoom, o owedRead, survivor ID) {
	h.stats.LostAcked.Add(1)
	h.log.Warn("an acknowledged entry is gone from Redis after a primary change: its sender is told the room was rolled back",
		"room", r.name, "lost", o.id.String(), "last_kept", survivor.String())
	o.sub.tellRolledBack(rollbackNews{to: survivor, owed: true})
	o.sub.notify()
}

// owedPast returns the owed entries newer than last (the stream's newest
// entry on the primary now): they are not there. r.mu must not be held.
func (r *tailedRoom) owedPast(last ID) []owedRead {
	r.mu.Lock()
	defer r.mu.Unlock()
	var gone []owedRead
	kept := r.owed[:0]
	for _, o := range r.owed {
		if last.Less(o.id) {
			gone = append(gone, o)
		} else {
			kept = append(kept, o)
		}
	}
	clear(r.owed[len(kept):])
	r.owed = kept
	return gone
}

// hasOwed reports whether acknowledged entries wait for a read.
func (r *tailedRoom) hasOwed() bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.owed) > 0
}
