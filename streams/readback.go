package streams

import (
	"context"
	"errors"

	"github.com/redis/go-redis/v9"
)

// Reading back what this instance appends. An append to a room this
// instance tails is read back by an XREAD in the append's own pipeline,
// after the XADDs: the sender's copy, and every local member's, comes with
// the ack in one round trip, where the tail would wait for the keyspace
// event and read the room in a second one. It is still a read of the
// stream, from the room's head, of whatever is there (other instances'
// entries included), delivered as the tail delivers (Hub.deliver).
//
// The keyspace events of those XADDs still arrive, and would each read the
// room again for nothing. They are skipped by count: Redis publishes events
// in the order it runs commands, so of the events on the room's channel
// after the claim, the first k (k being the XADDs of the batch that Redis
// stored) are for XADDs no later than the batch's last, which the read
// back, run after them, covered. Events that came during the read back
// count against k; more of them than k read the room again. Anything that
// may have lost events (the doorbell's connection) forgets the counts, and
// only rooms whose channel is confirmed on a live connection are read
// back. Only on a single node and with keyspace notifications: on a
// Cluster a pipeline's commands may be redirected apart; with Sentinel, an
// append may still run on a pooled connection to the demoted primary after
// a failover, and its read back would deliver entries the new primary
// lacks without the tail's rollback check (TestFaultSentinelGracefulFailover
// caught it); without notifications there is nothing to skip. Nor with
// REDIS_ACK_REPLICAS: the pipeline's reply waits for its WAIT, and the
// room's local delivery would wait with it.
//
// A claimed room is read by nobody else until the append's reply comes:
// its local delivery waits for that round trip, as it would for the
// tail's read. TAIL_READ_BACK=false (HubOptions.NoReadBack) turns it off.

// readBack is the read of one append pipeline: the rooms it claimed, each
// with the doorbell generation it was claimed under and the batch's XADDs
// Redis stored in it (what the read covers).
type readBack struct {
	h     *Hub
	rooms []*tailedRoom
	gens  []int64
	added []int
	q     tailQuery
	cmd   *redis.XStreamSliceCmd
	// A batch's rooms are few at the rates where allocations count: they
	// fit here, so that a read back is one allocation.
	roomsBuf [4]*tailedRoom
	gensBuf  [4]int64
	addedBuf [4]int
}

// claimReadBack claims, of the rooms an append batch writes to, those this
// hub tails, hears on a live doorbell and is not reading or about to read:
// the batch's pipeline reads them. Nil when there are none.
func (h *Hub) claimReadBack(names []string) *readBack {
	rb := &readBack{h: h}
	rb.rooms = rb.roomsBuf[:0]
	h.mu.RLock()
	for _, n := range names {
		if r := h.rooms[n]; r != nil && r.bellGen.Load() > 0 && !r.suspect.Load() {
			rb.rooms = append(rb.rooms, r)
		}
	}
	h.mu.RUnlock()
	if len(rb.rooms) == 0 {
		return nil
	}
	rb.gens = rb.gensBuf[:0]
	t := h.tail
	t.mu.Lock()
	kept := rb.rooms[:0]
	for _, r := range rb.rooms {
		if g := r.bellGen.Load(); g > 0 && !r.reading && !r.queued {
			r.reading, r.readingBack, r.early = true, true, 0
			kept = append(kept, r)
			rb.gens = append(rb.gens, g)
		}
	}
	t.mu.Unlock()
	if len(kept) == 0 {
		return nil
	}
	rb.rooms = kept
	if len(kept) <= len(rb.addedBuf) {
		rb.added = rb.addedBuf[:len(kept)]
	} else {
		rb.added = make([]int, len(kept))
	}
	return rb
}

// queue adds the read to pipe, after the batch's XADDs.
func (rb *readBack) queue(ctx context.Context, pipe redis.Pipeliner) {
	rb.q = newTailQuery(rb.rooms)
	rb.cmd = pipe.XRead(ctx, &redis.XReadArgs{Streams: rb.q.args, Count: int64(rb.h.opt.ReadCount), Block: -1})
}

// stored counts one XADD of the batch's first pipeline that Redis stored
// in room.
func (rb *readBack) stored(room string) {
	for i, r := range rb.rooms {
		if r.name == room {
			rb.added[i]++
			return
		}
	}
}

// done delivers what the read found and releases the rooms. A read that
// failed, or raced a primary change, leaves the rooms to the tail.
func (rb *readBack) done() {
	h := rb.h
	h.stats.ReadBacks.Add(1)
	res, err := rb.cmd.Result()
	ok := true
	var again []*tailedRoom
	switch {
	case anySuspect(rb.rooms):
		ok = false
	case errors.Is(err, redis.Nil):
	case err != nil:
		ok = false // the tail reads them again, and says why if it fails too
	default:
		again = h.deliver(rb.q, res)
	}
	h.tail.readBackDone(rb, again, ok)
}

// readBackDone releases the rooms of a read back (see done), setting how
// many of their coming events to skip.
func (t *tailer) readBackDone(rb *readBack, again []*tailedRoom, ok bool) {
	skipped := 0
	t.mu.Lock()
	for _, r := range again {
		r.again = true
	}
	for i, r := range rb.rooms {
		owed := r.skip + rb.added[i]
		r.readingBack = false
		if !ok || r.early > owed || r.bellGen.Load() != rb.gens[i] {
			r.again, r.skip = true, 0
		} else {
			r.skip = owed - r.early
			skipped += r.early
		}
		r.early = 0
	}
	t.mu.Unlock()
	t.h.stats.RingsSkipped.Add(int64(skipped))
	t.done(rb.rooms, nil)
}

// added is the ring of an xadd event on r's messages channel: skipped
// when it is one a read back covered (see above), a ring otherwise.
func (t *tailer) added(r *tailedRoom) {
	t.mu.Lock()
	switch {
	case r.readingBack:
		r.early++
		t.mu.Unlock()
		return
	case r.skip > 0:
		r.skip--
		t.mu.Unlock()
		t.h.stats.RingsSkipped.Add(1)
		return
	}
	t.mu.Unlock()
	t.ring(r)
}

// unheard forgets the counts of rooms whose doorbell may have lost
// events: from here on each of their events reads them.
func (t *tailer) unheard(rooms ...*tailedRoom) {
	for _, r := range rooms {
		r.bellGen.Store(0)
	}
	t.mu.Lock()
	for _, r := range rooms {
		r.skip = 0
	}
	t.mu.Unlock()
}
