package streams

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// tailReaders is how many batched reads may be in flight at once, so
	// one read's round trip does not hold up rooms that rang meanwhile.
	tailReaders = 2
	// tailBatch is the most rooms one read covers: a multi-key XREAD costs
	// Redis work per key, and only rooms that rang are in it.
	tailBatch = 256
	// sweepTick is how often the sweep hands rooms to the reader, and
	// sweepMax the most rooms a tick may hand: the sweep stays a trickle
	// next to the reads that rings cause, however many rooms there are.
	sweepTick = time.Second
	sweepMax  = 2000
)

// tailer reads rooms that rang: a ring marks a room to read, a room being
// read is never read twice at once (a ring meanwhile reads it once more
// after), and rooms waiting are read together, many in one XREAD.
type tailer struct {
	h     *Hub
	mu    sync.Mutex
	queue []*tailedRoom
	wake  chan struct{}
}

func newTailer(h *Hub) *tailer { return &tailer{h: h, wake: make(chan struct{}, 1)} }

// ring marks r to be read from its heads.
func (t *tailer) ring(rooms ...*tailedRoom) {
	t.mu.Lock()
	for _, r := range rooms {
		switch {
		case r.reading:
			r.again = true
		case !r.queued:
			r.queued = true
			t.queue = append(t.queue, r)
		}
	}
	t.mu.Unlock()
	t.poke()
}

func (t *tailer) poke() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// take returns up to tailBatch rooms to read, marked as being read.
func (t *tailer) take() []*tailedRoom {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := min(len(t.queue), tailBatch)
	if n == 0 {
		return nil
	}
	batch := make([]*tailedRoom, n)
	copy(batch, t.queue)
	rest := copy(t.queue, t.queue[n:])
	clear(t.queue[rest:])
	t.queue = t.queue[:rest]
	for _, r := range batch {
		r.queued, r.reading = false, true
	}
	if rest > 0 {
		t.poke() // another reader may take the rest
	}
	return batch
}

// done releases a batch; rooms that rang meanwhile, and those in again
// (more to read, or a failed read), are queued once more.
func (t *tailer) done(batch, again []*tailedRoom) {
	t.mu.Lock()
	for _, r := range again {
		r.again = true
	}
	requeued := false
	for _, r := range batch {
		r.reading = false
		if r.again && !r.queued {
			r.again, r.queued = false, true
			t.queue = append(t.queue, r)
			requeued = true
		}
	}
	t.mu.Unlock()
	if requeued {
		t.poke()
	}
}

// run starts the readers and the sweep, and waits for them.
func (t *tailer) run() {
	h := t.h
	defer h.wg.Done()
	var wg sync.WaitGroup
	for range tailReaders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.reader()
		}()
	}
	t.sweep()
	wg.Wait()
}

func (t *tailer) reader() {
	h := t.h
	backoff := newBackoff()
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-t.wake:
		}
		for batch := t.take(); len(batch) > 0; batch = t.take() {
			again, err := h.read(h.ctx, batch)
			t.done(batch, again)
			if err != nil {
				if !backoff.wait(h.ctx) {
					return
				}
				continue
			}
			backoff.reset()
		}
	}
}

// sweep reads every tailed room once per SweepEvery whether it rang or not
// (ModeNotify), so that a lost notification costs latency, never a
// message; in ModePoll it is the tail itself, every PollEvery.
func (t *tailer) sweep() {
	h := t.h
	select {
	case <-h.modeSet:
	case <-h.ctx.Done():
		return
	}
	every, tick, most := h.opt.SweepEvery, sweepTick, sweepMax
	switch h.Mode() {
	case ModePoll:
		every, tick, most = h.opt.PollEvery, h.opt.PollEvery, int(^uint(0)>>1)
	case ModeBlocking:
		return // its blocking reads cover every room
	}
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	var order []*tailedRoom
	credit := 0.0 // rooms due, so that each is read once per every
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-ticker.C:
		}
		if len(order) == 0 {
			order = h.roomsNow()
		}
		credit = min(credit+float64(len(order))*float64(tick)/float64(every), float64(most))
		n := min(len(order), int(credit))
		credit -= float64(n)
		if n > 0 {
			var live []*tailedRoom
			for _, r := range order[:n] {
				if h.tailing(r) {
					live = append(live, r)
				}
			}
			order = order[n:]
			t.ring(live...)
		}
	}
}

// read reads rooms from their heads and delivers what it finds. It
// returns the rooms to read again: those with more to read than one read
// takes, and all of them when the read failed.
func (h *Hub) read(ctx context.Context, rooms []*tailedRoom) ([]*tailedRoom, error) {
	ctx, cancel := context.WithTimeout(ctx, h.opt.CatchUpTimeout)
	defer cancel()
	if err := h.checkRollbacks(ctx, rooms); err != nil { // rollback.go
		h.readFailed(err)
		return rooms, err
	}
	if _, cluster := h.store.rdb.(*redis.ClusterClient); cluster {
		return h.readEach(ctx, rooms)
	}
	q := newTailQuery(rooms)
	h.stats.TailReads.Add(1)
	res, err := h.store.rdb.XRead(ctx, &redis.XReadArgs{Streams: q.args, Count: int64(h.opt.ReadCount), Block: -1}).Result()
	if anySuspect(rooms) {
		return rooms, nil // the primary changed during the read: check, then read again
	}
	switch {
	case errors.Is(err, redis.Nil):
		h.health.readOK()
		return nil, nil
	case isWrongType(err):
		return h.readEach(ctx, rooms) // finds the room whose events key is not a stream
	case err != nil:
		h.readFailed(err)
		return rooms, err
	}
	h.health.readOK()
	return h.deliver(q, res), nil
}

// readEach reads each room with its own XREAD, in one pipeline (one per
// node on a Cluster, where keys of different rooms may not share a command).
func (h *Hub) readEach(ctx context.Context, rooms []*tailedRoom) ([]*tailedRoom, error) {
	pipe := h.store.rdb.Pipeline()
	qs := make([]tailQuery, len(rooms))
	cmds := make([]*redis.XStreamSliceCmd, len(rooms))
	for i := range rooms {
		qs[i] = newTailQuery(rooms[i : i+1])
		cmds[i] = pipe.XRead(ctx, &redis.XReadArgs{Streams: qs[i].args, Count: int64(h.opt.ReadCount), Block: -1})
	}
	h.stats.TailReads.Add(int64(len(rooms)))
	_, _ = pipe.Exec(ctx)
	if anySuspect(rooms) {
		return rooms, nil // a room moved during the read: check, then read again
	}
	var again []*tailedRoom
	var failed error
	for i, r := range rooms {
		res, err := cmds[i].Result()
		switch {
		case errors.Is(err, redis.Nil):
		case isWrongType(err) && r.withEvents.Load():
			// Someone made the events key something else than a stream
			// (redis-cli SET ...): messages must go on, without presence.
			r.withEvents.Store(false)
			h.log.Warn("a key of the room is not a stream; tailing its messages without presence events", "room", r.name, "events_key", r.events.key, "err", err)
			again = append(again, r)
		case err != nil:
			failed = err
			again = append(again, r)
		default:
			again = append(again, h.deliver(qs[i], res)...)
		}
	}
	if failed != nil {
		h.readFailed(failed)
		return again, failed
	}
	h.health.readOK()
	return again, nil
}

func (h *Hub) readFailed(err error) {
	h.stats.TailErrors.Add(1)
	h.health.readFailed(err)
	h.log.Debug("tail read failed; retrying", "err", err)
}

// tailQuery is one XREAD's streams: each room's messages key, and its
// events key unless it has none, then the IDs to read after, in order.
type tailQuery struct {
	args  []string
	owner []*tailedRoom // the room of each key
}

func newTailQuery(rooms []*tailedRoom) tailQuery {
	q := tailQuery{args: make([]string, 0, 4*len(rooms)), owner: make([]*tailedRoom, 0, 2*len(rooms))}
	var ids []string
	for _, r := range rooms {
		head, events := r.heads()
		q.args = append(q.args, r.key)
		q.owner = append(q.owner, r)
		ids = append(ids, head.String())
		if r.withEvents.Load() {
			q.args = append(q.args, r.events.key)
			q.owner = append(q.owner, r)
			ids = append(ids, events.String())
		}
	}
	q.args = append(q.args, ids...)
	return q
}

// find returns the index of key among the query's keys, looking from
// from on (where the answer's order puts it) and then from the start; -1
// when it is not there.
func (q tailQuery) find(key string, from int) int {
	for k := from; k < len(q.owner); k++ {
		if q.args[k] == key {
			return k
		}
	}
	for k := 0; k < min(from, len(q.owner)); k++ {
		if q.args[k] == key {
			return k
		}
	}
	return -1
}

// deliver puts what an XREAD returned into the rooms' rings and wakes
// their subscribers. It returns the rooms that got a full COUNT of some
// stream: they have more to read.
func (h *Hub) deliver(q tailQuery, res []redis.XStream) (again []*tailedRoom) {
	read := time.Now()
	k := 0 // Redis answers in the order of the keys asked, leaving out those with nothing
	for _, st := range res {
		if k = q.find(st.Stream, k); k < 0 {
			h.log.Warn("tail read answered a stream it did not ask for", "stream", st.Stream)
			k = 0
			continue
		}
		r := q.owner[k]
		if len(st.Messages) >= h.opt.ReadCount {
			again = append(again, r)
		}
		if st.Stream == r.events.key {
			if h.takeEvents(r, st.Messages) {
				r.notifyAll()
			}
			continue
		}
		batch := make([]*Entry, len(st.Messages))
		entries := make([]Entry, len(st.Messages))
		for i, m := range st.Messages {
			entries[i] = toEntry(m)
			e := &entries[i]
			if !e.HasMessage {
				h.stats.Skipped.Add(1)
				h.log.Warn("skipping stream entry without a message field", "room", r.name, "id", m.ID)
			}
			h.Encode(r.name, e)
			batch[i] = e
		}
		h.observeLag(read, batch)
		r.mu.Lock()
		missing := r.settle(batch)
		if len(missing) == 0 {
			r.push(batch)
		}
		r.mu.Unlock()
		if len(missing) > 0 {
			// Rare: a failover lost acknowledged entries. Their senders
			// are told before the entries that came after them.
			h.confirmLost(r, missing)
			r.mu.Lock()
			r.push(batch)
			r.mu.Unlock()
		}
		r.notifyAll()
	}
	return again
}
