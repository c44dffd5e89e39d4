package hooks

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xroom/xroom/streams"
)

// phase is where a room is in delivery.
type phase int

const (
	idle    phase = iota // nothing known to be waiting
	queued               // waiting for a worker
	working              // a worker reads or delivers it
	waiting              // a timer queues it again: a retry's backoff, or another instance holds it
)

// room is one room's delivery state. phase, again and timer are guarded
// by Webhooks.mu; batch by mu, and changed only by the worker that has the
// room.
type room struct {
	name  string
	phase phase
	again bool // rang while not idle: look again once the room is settled
	timer *time.Timer

	mu    sync.Mutex
	batch *batch
}

func (r *room) held() *batch {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.batch
}

func (r *room) setBatch(b *batch) {
	r.mu.Lock()
	r.batch = b
	r.mu.Unlock()
}

// batch is a batch this instance holds until the webhook takes it (or it
// goes to the dead letters), across retries.
type batch struct {
	streams.HookBatch
	msgs      []Message // the entries that carry a message
	delivery  string    // X-Xroom-Delivery
	attempts  int
	delivered bool        // the webhook took it: only the XACK is left
	lost      atomic.Bool // another instance took it (holdAll)
	lastErr   error
}

// outcome is what a step leaves the room to do.
type outcome struct {
	more bool          // look again at once (a full batch was delivered)
	wait time.Duration // look again after this
}

// step moves the room on by one batch: reads it if none is held, sends
// it, and acknowledges it, or schedules a retry, or buries it.
func (w *Webhooks) step(r *room) outcome {
	b := r.held()
	if b == nil {
		var o outcome
		if b, o = w.read(r); b == nil {
			return o
		}
	}
	if b.lost.Load() {
		r.setBatch(nil) // the instance that took it delivers it
		return outcome{more: true}
	}
	if !b.delivered && b.attempts < w.opt.MaxAttempts {
		b.attempts++
		err := w.sender.Send(w.sendCx, b.delivery, b.attempts, b.msgs)
		if err != nil {
			b.lastErr = err
			w.stats.failed.Add(1)
			w.noteFailure(r.name, err)
			if b.attempts < w.opt.MaxAttempts {
				w.stats.retried.Add(1)
				wait := w.backoff(b.attempts)
				w.log.Warn("the webhook did not take a batch; retrying", "room", r.name, "messages", len(b.msgs),
					"attempt", b.attempts, "retry_in", wait.Round(time.Millisecond), "err", err)
				return outcome{wait: wait}
			}
		} else {
			b.delivered = true
			w.stats.sent.Add(int64(len(b.msgs)))
		}
	}
	ctx, cancel := context.WithTimeout(w.sendCx, w.opt.Timeout)
	defer cancel()
	if !b.delivered {
		return w.bury(ctx, r, b)
	}
	if err := w.group.Ack(ctx, r.name, b.IDs()); err != nil {
		w.noteFailure(r.name, err)
		w.log.Warn("cannot acknowledge a delivered batch; retrying", "room", r.name, "err", err)
		return outcome{wait: redisRetry}
	}
	r.setBatch(nil)
	return outcome{more: len(b.Entries) >= w.opt.Batch || b.Pending}
}

// read takes the room's next batch, or says why there is none.
func (w *Webhooks) read(r *room) (*batch, outcome) {
	w.mu.Lock()
	r.again = false // what rang so far is read now; a ring from here on looks again
	w.mu.Unlock()
	ctx, cancel := context.WithTimeout(w.sendCx, w.opt.Timeout)
	hb, err := w.group.Next(ctx, r.name)
	cancel()
	var busy *streams.BusyError
	switch {
	case errors.As(err, &busy):
		return nil, outcome{wait: busy.RetryIn}
	case err != nil:
		if w.sendCx.Err() == nil {
			w.noteFailure(r.name, err)
			w.log.Warn("cannot read a room for the webhook; retrying", "room", r.name, "err", err)
		}
		return nil, outcome{wait: redisRetry}
	case len(hb.Entries) == 0:
		return nil, outcome{}
	}
	b := &batch{HookBatch: hb, delivery: newDeliveryID()}
	for i := range hb.Entries {
		if e := &hb.Entries[i]; e.HasMessage {
			b.msgs = append(b.msgs, MessageOf(r.name, e))
		}
	}
	b.delivered = len(b.msgs) == 0 // only entries without a message: acknowledge them
	if hb.ClaimedFrom != "" {
		w.stats.claimed.Add(1)
		w.log.Info("took over a webhook batch from an instance that stopped renewing it", "room", r.name,
			"from", hb.ClaimedFrom, "entries", len(hb.Entries))
	}
	r.setBatch(b)
	return b, outcome{}
}

// bury moves a batch the webhook refused MaxAttempts times to the room's
// dead letters, so the room goes on.
func (w *Webhooks) bury(ctx context.Context, r *room, b *batch) outcome {
	why := streams.Failure{Status: errStatus(b.lastErr), Attempts: b.attempts}
	if b.lastErr != nil {
		why.Error = b.lastErr.Error()
	}
	buried, err := w.group.Bury(ctx, r.name, b.Entries, why)
	if err != nil {
		w.noteFailure(r.name, err)
		w.log.Warn("cannot move a failed batch to the dead letters; retrying", "room", r.name, "err", err)
		return outcome{wait: redisRetry}
	}
	r.setBatch(nil)
	if buried {
		w.stats.dead.Add(int64(len(b.msgs)))
		w.log.Error("the webhook refused a batch every time; it is in the dead letters", "room", r.name,
			"messages", len(b.msgs), "attempts", b.attempts, "dead_letters", w.hub.Store().Keys().Dead(r.name),
			"replay", "xroom hooks replay "+r.name, "err", why.Error)
	}
	return outcome{more: true}
}

// backoff is the wait before try n+1: Backoff doubled n-1 times, at most
// maxBackoff, with half of it random so that rooms do not retry in step.
func (w *Webhooks) backoff(n int) time.Duration {
	d := w.opt.Backoff
	for i := 1; i < n && d < maxBackoff; i++ {
		d *= 2
	}
	d = min(d, max(maxBackoff, w.opt.Backoff))
	return d/2 + rand.N(d/2+1)
}
