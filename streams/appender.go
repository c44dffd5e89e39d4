package streams

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// appendWait bounds one coalesced pipeline when no caller gave a deadline.
	appendWait = 10 * time.Second
	// maxBatchesInFlight: up to this many appends (or batches) go to Redis
	// at once, each on its own connection, so a light load waits for no
	// one; beyond it, appends queue and share the next pipeline.
	maxBatchesInFlight = 4
)

// coalescer turns concurrent appends into shared pipelines (group commit):
// a caller sends its own append at once while fewer than
// maxBatchesInFlight are in flight; callers beyond that queue up, and when
// a batch returns, the first of them sends the whole queue as one pipeline. Redis and this process then pay one round trip
// (two system calls on each side) per batch instead of per message. With Redis Cluster,
// go-redis splits the pipeline by node.
type coalescer struct {
	mu       sync.Mutex
	queue    []*appendCall
	inFlight int // leaders sending a batch
}

type appendCall struct {
	ctx  context.Context
	room string
	m    Message
	id   ID
	dup  bool
	err  error
	lead bool          // woken to send the next batch
	done chan struct{} // cap 1: signalled once the call has a result, or is to lead
	// more are appends that go in the same batch right after this one, in
	// order (AppendMany): only this call is queued and signalled.
	more []*appendCall
	// set when the call is sent
	add   *redis.StringCmd
	group *scriptGroup // client_id appends: the script call it is in
	slot  int          // its place in group
}

var callPool = sync.Pool{New: func() any { return &appendCall{done: make(chan struct{}, 1)} }}

// AppendResult is the outcome of one append of AppendMany.
type AppendResult struct {
	ID        ID
	Duplicate bool
	Err       error
}

// AppendMany stores ms in the room in this order, in one pipeline (a
// connection's messages sent before their acks came back), and returns
// their outcomes in the same order. Plain and client_id messages should
// not be mixed in one call: a batch sends its client_id appends after its
// plain ones.
func (s *Store) AppendMany(ctx context.Context, room string, ms []Message) []AppendResult {
	out := make([]AppendResult, len(ms))
	if len(ms) == 1 {
		out[0].ID, out[0].Duplicate, out[0].Err = s.appendCoalesced(ctx, room, ms[0])
		return out
	}
	if len(ms) == 0 {
		return out
	}
	if err := ctx.Err(); err != nil {
		for i := range out {
			out[i].Err = fmt.Errorf("append to %s: %w", s.keys.Messages(room), err)
		}
		return out
	}
	calls := make([]*appendCall, len(ms))
	for i := range ms {
		calls[i] = &appendCall{ctx: ctx, room: room, m: ms[i]}
	}
	head := calls[0]
	head.done, head.more = make(chan struct{}, 1), calls[1:]
	s.enqueue(head)
	for i, c := range calls {
		out[i] = AppendResult{ID: c.id, Duplicate: c.dup, Err: c.err}
	}
	return out
}

// appendCoalesced is Append through the coalescer.
func (s *Store) appendCoalesced(ctx context.Context, room string, m Message) (ID, bool, error) {
	if err := ctx.Err(); err != nil {
		return ID{}, false, fmt.Errorf("append to %s: %w", s.keys.Messages(room), err)
	}
	c := callPool.Get().(*appendCall)
	c.ctx, c.room, c.m = ctx, room, m
	s.enqueue(c)
	id, dup, err := c.id, c.dup, c.err
	*c = appendCall{done: c.done}
	callPool.Put(c)
	return id, dup, err
}

// enqueue sends c (and c.more) now, or queues it for the next batch, and
// returns once it has its result.
func (s *Store) enqueue(c *appendCall) {
	b := &s.batch
	b.mu.Lock()
	if b.inFlight >= maxBatchesInFlight {
		b.queue = append(b.queue, c)
		b.mu.Unlock()
		<-c.done // bounded: the batch before ours and ours each have a deadline
	} else {
		b.inFlight++
		b.mu.Unlock()
		c.lead = true
	}
	if c.lead {
		s.sendBatch(c)
	}
}

// sendBatch sends the leader's own call and every queued one in one
// pipeline, then hands the lead to the first caller queued meanwhile. A
// call is signalled once: with its result, or to lead (then it is no
// longer in the queue, and sends itself).
func (s *Store) sendBatch(self *appendCall) {
	b := &s.batch
	b.mu.Lock()
	queued := append(b.queue, self)
	b.queue = make([]*appendCall, 0, len(queued))
	b.mu.Unlock()

	calls := queued
	for _, c := range queued {
		if len(c.more) > 0 { // spell out AppendMany's calls, in their order
			calls = make([]*appendCall, 0, len(queued)+len(c.more))
			for _, c := range queued {
				calls = append(append(calls, c), c.more...)
			}
			break
		}
	}
	rb := s.appendAll(calls)

	for _, c := range queued {
		if c != self {
			c.done <- struct{}{}
		}
	}
	b.mu.Lock()
	if len(b.queue) > 0 {
		next := b.queue[0]
		b.queue = b.queue[1:]
		next.lead = true
		next.done <- struct{}{}
	} else {
		b.inFlight--
	}
	b.mu.Unlock()
	// The read back is delivered last: its fan-out (every local member's
	// writer) holds neither the batch's callers nor the next batch, as
	// the tail's own delivery does not. The senders' acks wait for their
	// copies in handlers, so they still go out together.
	if rb != nil {
		rb.done()
	}
}

// batchContext is the context of a batch: no caller's deadline is cut short.
// A batch of one caller's appends (the usual case below the coalescer's
// limit) runs under that caller's own deadline, sparing a timer per batch.
func batchContext(calls []*appendCall) (context.Context, context.CancelFunc) {
	if one := calls[0].ctx; sameContext(calls, one) {
		if _, ok := one.Deadline(); ok {
			return one, func() {}
		}
	}
	var latest time.Time
	for _, c := range calls {
		d, ok := c.ctx.Deadline()
		if !ok {
			d = time.Now().Add(appendWait)
		}
		if d.After(latest) {
			latest = d
		}
	}
	return context.WithDeadline(context.Background(), latest)
}

// sameContext reports whether every call was made with ctx.
func sameContext(calls []*appendCall, ctx context.Context) bool {
	for _, c := range calls[1:] {
		if c.ctx != ctx {
			return false
		}
	}
	return true
}

// appendAll stores calls and sets each call's result, and returns the
// batch's read back, still to be delivered (nil when none). When acks wait
// for replicas on a Cluster, each primary gets a pipeline of its own (see
// appendByNode); otherwise one pipeline carries the whole batch.
func (s *Store) appendAll(calls []*appendCall) *readBack {
	ctx, cancel := batchContext(calls)
	defer cancel()
	if s.ackReplicas > 0 {
		if cc, ok := s.rdb.(*redis.ClusterClient); ok {
			s.appendByNode(ctx, cc, calls)
			return nil
		}
	}
	return s.appendOn(ctx, s.rdb, calls, true)
}

// appendOn stores calls in one pipeline of rdb: plain appends as XADDs,
// client_id appends through appendDedupMany (one script call for the batch
// on a single node, one per room on a Cluster), the read back of the rooms
// this instance tails (readback.go), the advisory writes when touch
// (touch), and a WAIT when acks wait for replicas. It returns the read
// back, which the caller delivers (readBack.done) once the batch's callers
// have their results; nil when there is none.
func (s *Store) appendOn(ctx context.Context, rdb pipeliner, calls []*appendCall, touch bool) *readBack {
	pipe := rdb.Pipeline()
	var rooms []string
	touched := make(map[string]bool, 1)
	var dedup []*appendCall
	for _, c := range calls {
		if err := c.ctx.Err(); err != nil { // its caller gave up while queued
			c.err = fmt.Errorf("append to %s: %w", s.keys.Messages(c.room), err)
			continue
		}
		if c.m.ClientID == "" {
			s.queueAppend(ctx, pipe, c)
		} else {
			dedup = append(dedup, c)
		}
		if !touched[c.room] {
			touched[c.room] = true
			rooms = append(rooms, c.room)
		}
	}
	if len(rooms) == 0 {
		return nil
	}
	var rb *readBack
	if hub := s.tail.Load(); hub != nil && touch {
		rb = hub.claimReadBack(rooms) // before the pipeline goes: see readback.go
	}
	groups := s.groupScripts(dedup)
	for _, g := range groups {
		s.queueScript(ctx, pipe, g, false)
	}
	if rb != nil {
		rb.queue(ctx, pipe) // after the XADDs
	}
	var t touches
	if touch {
		t = s.touch(ctx, pipe, calls, rooms) // advisory: each append's own outcome is what counts
	}
	wait := s.queueWait(ctx, pipe) // last: it covers every write before it on this connection
	_, execErr := pipe.Exec(ctx)
	t.settle()
	var again []*scriptGroup
	for _, g := range groups {
		if noScript(g.eval.Err()) {
			g.resent = true
			again = append(again, g)
		}
	}
	if len(again) > 0 {
		// Redis forgot the script (restart, failover, SCRIPT FLUSH): send it whole.
		pipe := rdb.Pipeline()
		for _, g := range again {
			s.queueScript(ctx, pipe, g, true)
		}
		waitAgain := s.queueWait(ctx, pipe)
		_, againErr := pipe.Exec(ctx)
		for _, g := range again {
			for _, c := range g.calls {
				s.appendResult(c, againErr)
				s.replicated(c, waitAgain, againErr)
			}
		}
	}
	for _, c := range calls {
		if c.add == nil && (c.group == nil || c.group.resent) {
			continue // not sent, or sent again above
		}
		s.appendResult(c, execErr)
		if rb != nil && c.err == nil && !c.dup {
			rb.stored(c.room)
		}
		s.replicated(c, wait, execErr)
	}
	return rb
}

// queueAppend adds one plain append (no client_id) to pipe.
func (s *Store) queueAppend(ctx context.Context, pipe redis.Pipeliner, c *appendCall) {
	args := &redis.XAddArgs{Stream: s.keys.Messages(c.room), Values: []any{"user", c.m.User, "message", c.m.Text}}
	if s.maxLen > 0 {
		args.MaxLen, args.Approx = s.maxLen, true
	}
	c.add = pipe.XAdd(ctx, args)
}

// appendResult reads one append's reply into c.
func (s *Store) appendResult(c *appendCall, execErr error) {
	var raw string
	var err error
	if c.add != nil {
		if err = cmdErr(c.add.Err(), c.add.Val() == "", execErr); err == nil {
			raw = c.add.Val()
		}
	} else {
		raw, c.dup, err = scriptResult(c, execErr)
	}
	var id ID
	if err == nil {
		id, err = ParseID(raw)
	}
	if err != nil {
		c.err = fmt.Errorf("append to %s: %w", s.keys.Messages(c.room), err) // the key only when it fails
		return
	}
	c.id = id
	if !c.dup {
		s.appended.Add(1)
	}
}
