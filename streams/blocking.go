package streams

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// The fallback tail (ModeBlocking), for a Redis that will not send
// keyspace notifications (CONFIG renamed away, a managed service, the
// embedded server): blockingConns connections, each blocking on one XREAD
// over its group of rooms, issued again when it returns or the group
// changes. The connections stay blockingConns however many rooms there
// are; the price is Redis work per key of the group each time a read is
// issued, which notifications avoid.

const (
	// blockingConns is how many groups, and so connections, there are.
	blockingConns = 2
	// unblockless is how long a blocking read waits on a server without
	// CLIENT UNBLOCK (the embedded one), so a room added to the group is
	// read within this time.
	unblockless = 100 * time.Millisecond
	// unblockTries and unblockRetry bound how long a change waits for the
	// group's read to reach Redis, so that CLIENT UNBLOCK finds it.
	unblockTries = 200
	unblockRetry = 2 * time.Millisecond
)

type groups struct {
	h  *Hub
	gs [blockingConns]*group
}

func newGroups(h *Hub) *groups {
	g := &groups{h: h}
	for i := range g.gs {
		g.gs[i] = &group{h: h, rooms: map[*tailedRoom]struct{}{}, changed: make(chan struct{}, 1)}
	}
	return g
}

func (g *groups) of(r *tailedRoom) *group {
	f := fnv.New32a()
	_, _ = f.Write([]byte(r.name))
	return g.gs[f.Sum32()%blockingConns]
}

func (g *groups) add(r *tailedRoom) {
	grp := g.of(r)
	grp.mu.Lock()
	grp.rooms[r] = struct{}{}
	start := !grp.started
	grp.started = true
	grp.mu.Unlock()
	if start {
		g.h.wg.Add(1)
		go grp.run()
	}
	grp.changedNow()
}

func (g *groups) remove(r *tailedRoom) {
	grp := g.of(r)
	grp.mu.Lock()
	_, had := grp.rooms[r]
	delete(grp.rooms, r)
	grp.mu.Unlock()
	if had {
		grp.changedNow()
	}
}

// wakeAll makes every running group start its read over.
func (g *groups) wakeAll() {
	for _, grp := range g.gs {
		grp.mu.Lock()
		started := grp.started
		grp.mu.Unlock()
		if started {
			grp.changedNow()
		}
	}
}

// failing returns why a group has been unable to read since before cutoff.
func (g *groups) failing(cutoff time.Time) error {
	for _, grp := range g.gs {
		if err := grp.health.failing(cutoff); err != nil {
			return err
		}
	}
	return nil
}

// group is one blocking connection and its rooms.
type group struct {
	h       *Hub
	mu      sync.Mutex
	rooms   map[*tailedRoom]struct{}
	started bool
	changed chan struct{}
	// id is the connection's CLIENT ID while it reads (0 otherwise):
	// a change unblocks it with CLIENT UNBLOCK. unblockable is false on a
	// server without CLIENT ID (the embedded one).
	id          atomic.Int64
	unblockable atomic.Bool
	// gen counts changes to rooms; readGen is the gen the read in flight
	// was built from.
	gen, readGen atomic.Int64
	health       health
}

// changedNow makes the group's read start over with its new rooms. The
// read may be on its way to Redis with the old rooms when CLIENT UNBLOCK
// gets there, so it unblocks until the group has read the change (or,
// briefly bounded, gives up: the read then ends within Block).
func (grp *group) changedNow() {
	gen := grp.gen.Add(1)
	select {
	case grp.changed <- struct{}{}:
	default:
	}
	if !grp.unblockable.Load() {
		return
	}
	for try := 0; try < unblockTries && grp.readGen.Load() < gen; try++ {
		if id := grp.id.Load(); id != 0 {
			ctx, cancel := context.WithTimeout(grp.h.ctx, grp.h.opt.CatchUpTimeout)
			n, _ := grp.h.store.rdb.ClientUnblock(ctx, id).Result()
			cancel()
			if n == 1 {
				return
			}
		}
		time.Sleep(unblockRetry)
	}
}

func (grp *group) snapshot() []*tailedRoom {
	grp.mu.Lock()
	defer grp.mu.Unlock()
	out := make([]*tailedRoom, 0, len(grp.rooms))
	for r := range grp.rooms {
		out = append(out, r)
	}
	return out
}

func (grp *group) run() {
	h := grp.h
	defer h.wg.Done()
	c, ok := h.blocking.(*redis.Client)
	if !ok {
		h.log.Error("the blocking tail needs a single Redis node", "client", fmt.Sprintf("%T", h.blocking))
		return
	}
	var conn *redis.Conn
	var id int64 // 0: the server has no CLIENT ID
	defer func() {
		if conn != nil {
			_ = conn.Close()
		}
	}()
	backoff := newBackoff()
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-grp.changed:
		default:
		}
		grp.readGen.Store(grp.gen.Load())
		rooms := grp.snapshot()
		if len(rooms) == 0 {
			select {
			case <-h.ctx.Done():
				return
			case <-grp.changed:
				continue
			}
		}
		if conn == nil {
			conn = c.Conn()
			id, _ = conn.ClientID(h.ctx).Result()
			grp.unblockable.Store(id != 0)
		}
		block := h.opt.Block
		if id == 0 {
			block = min(block, unblockless)
		}
		if err := h.checkRollbacks(h.ctx, rooms); err != nil { // rollback.go: after a primary change
			h.log.Debug("rollback check failed; retrying", "err", err)
			if !backoff.wait(h.ctx) {
				return
			}
			continue
		}
		q := newTailQuery(rooms)
		grp.id.Store(id)
		h.stats.TailReads.Add(1)
		res, err := conn.XRead(h.ctx, &redis.XReadArgs{Streams: q.args, Count: int64(h.opt.ReadCount), Block: block}).Result()
		grp.id.Store(0)
		switch {
		case h.ctx.Err() != nil:
			return
		case anySuspect(rooms):
			continue // the primary changed during the read: check, then read again
		case errors.Is(err, redis.Nil): // timed out, or unblocked for a change
			grp.health.readOK()
			backoff.reset()
			continue
		case isWrongType(err):
			// Some room's events key is not a stream: find it (its
			// messages go on without presence) and read again.
			_, _ = h.readEach(h.ctx, rooms)
			continue
		case err != nil:
			h.stats.TailErrors.Add(1)
			grp.health.readFailed(err)
			h.log.Debug("blocking tail read failed; retrying", "err", err)
			_ = conn.Close()
			conn = nil
			if !backoff.wait(h.ctx) {
				return
			}
			continue
		}
		grp.health.readOK()
		backoff.reset()
		h.deliver(q, res) // a room with more to read returns at once next time
	}
}
