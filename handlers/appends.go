package handlers

import (
	"context"
	"sync"

	"github.com/xroom/xroom/streams"
)

// appendWindow is how many of a connection's frames may wait behind the
// batch of its messages being stored. The reader reads on meanwhile, so a
// client with many messages in flight pays one Redis round trip per batch
// rather than per message; past the window the reader stops reading and
// TCP slows the client down.
const appendWindow = 64

// outbox stores a connection's messages in the order they were sent: one
// batch at a time (Redis runs a pipeline's commands in order, and a batch
// starts only when the one before it has its replies), and their replies
// (acks, errors, refusals of bad frames) go to the writer in that order too.
type outbox struct {
	mu      sync.Mutex
	space   sync.Cond // signalled when waiting shrinks or the batch ends
	busy    bool      // a batch is being stored
	waiting []outgoing
	done    sync.WaitGroup // the batch goroutine
}

// outgoing is a client frame waiting for its reply: a message to store, or
// a refusal to send once the replies before it are out.
type outgoing struct {
	m       streams.Message
	refusal *refusal
}

// submit hands a frame's outcome to the outbox: at once when nothing is
// in flight, else behind what is. Only the reader calls it.
func (s *session) submit(o outgoing) {
	ob := &s.out
	ob.mu.Lock()
	if !ob.busy {
		if o.refusal != nil { // nothing to wait for
			ob.mu.Unlock()
			s.queueError(o.refusal)
			return
		}
		ob.busy = true
		ob.mu.Unlock()
		ob.done.Add(1)
		go s.storeAll([]outgoing{o})
		return
	}
	if ob.space.L == nil {
		ob.space.L = &ob.mu
	}
	for len(ob.waiting) >= appendWindow && s.ctx.Err() == nil {
		ob.space.Wait()
	}
	ob.waiting = append(ob.waiting, o)
	ob.mu.Unlock()
}

// storeAll stores batches until nothing waits.
func (s *session) storeAll(batch []outgoing) {
	ob := &s.out
	defer ob.done.Done()
	for {
		s.storeBatch(batch)
		ob.mu.Lock()
		batch, ob.waiting = ob.waiting, nil
		if len(batch) == 0 {
			ob.busy = false
		}
		if ob.space.L != nil {
			ob.space.Broadcast()
		}
		ob.mu.Unlock()
		if len(batch) == 0 {
			return
		}
	}
}

// storeBatch stores a batch's messages, a run of the same kind (with or
// without client_id) per pipeline, and queues every reply in order.
func (s *session) storeBatch(batch []outgoing) {
	s.vetBatch(batch) // the publish hook first, if any (hooks.go)
	for len(batch) > 0 {
		if batch[0].refusal != nil {
			s.queueError(batch[0].refusal)
			batch = batch[1:]
			continue
		}
		n := 1
		for n < len(batch) && batch[n].refusal == nil && (batch[n].m.ClientID == "") == (batch[0].m.ClientID == "") {
			n++
		}
		s.storeRun(batch[:n])
		batch = batch[n:]
	}
}

func (s *session) storeRun(run []outgoing) {
	ms := make([]streams.Message, len(run))
	for i := range run {
		ms[i] = run[i].m
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.srv.cfg.RedisTimeout)
	s.appendStarted()
	results := s.srv.hub.Store().AppendMany(ctx, s.room, ms)
	cancel()
	if s.appendDone() { // a notification was held: kick for it after the acks and errors are queued
		defer s.kick()
	}
	for i, r := range results {
		m := &ms[i]
		if r.Err != nil {
			s.log.Warn("append failed", "err", r.Err)
			s.queueError(&refusal{code: codeUnavailable, message: "the message was not stored: storage is unavailable, try again", clientID: m.ClientID})
			continue
		}
		if m.ClientID != "" && !s.compat {
			s.queueAck(encodeAck(m.ClientID, r.ID, r.Duplicate), r.ID)
			s.sub.Acked(r.ID) // should a failover lose it unread, this connection is told
		}
	}
}
