package handlers

import (
	"time"

	"github.com/xroom/xroom/streams"
)

// ackHold bounds how long the ack of a send and the sender's own copy of
// the message wait for each other, so that both go out in one write
// instead of two. Redis answers the append and the room's tail read in the
// same pass of its event loop, so the other one normally comes within tens
// of microseconds; when it is late (Redis slow, the tail retrying), each
// goes alone when this runs out.
const ackHold = 5 * time.Millisecond

// appendStarted and appendDone bracket the reader's append: entries the
// tail announces meanwhile wait (at most ackHold) for the ack, which is
// about to come with one of them. appendDone returns whether a
// notification was held: the caller kicks the writer for it after
// queueing the ack (or error).
func (w *writer) appendStarted() { w.appending.Store(true) }

func (w *writer) appendDone() (held bool) {
	w.appending.Store(false)
	return w.heldKick.Swap(false)
}

// holdForAck is notify's check while the reader's append is in flight: it
// holds the notification for the append's ack, with ackHold as the bound.
// false: no append is in flight, kick as usual.
func (w *writer) holdForAck() bool {
	if !w.appending.Load() {
		return false
	}
	w.heldKick.Store(true)
	if !w.appending.Load() && w.heldKick.Swap(false) {
		// The append ended between the two loads, and its reader may have
		// looked for a held notification before this one was set.
		w.kick()
		return true
	}
	w.armAckTimer()
	return true
}

// armAckTimer makes sure the writer is woken within ackHold if what was
// held is still waiting then.
func (w *writer) armAckTimer() {
	w.mu.Lock()
	if w.ackTimer == nil {
		w.ackTimer = time.AfterFunc(ackHold, w.ackTimeout)
	} else {
		w.ackTimer.Reset(ackHold)
	}
	w.mu.Unlock()
}

// ackTimeout kicks the writer for a held notification or a queued ack
// that nothing has written yet. Usually the pair has gone out long before,
// and it does nothing: no writer goroutine starts for nothing.
func (w *writer) ackTimeout() {
	if w.heldKick.Swap(false) || len(w.control) > 0 {
		w.kick()
	}
}

// queue hands a frame to the writer. It waits while the queue is full, so
// a client that never reads stops being read from.
func (w *writer) queue(frame []byte) {
	select {
	case w.control <- frame:
		w.kick()
	case <-w.ctx.Done():
	}
}

// queueAck hands the ack of the append that got id to the writer. When the
// room's tail has not read that entry yet, the writer is not kicked: the
// tail's notification, which comes with the entry, writes the ack and the
// entry in one pass (one system call), and a timer kicks it after ackHold
// in case the entry is late. Either way the ack is in the queue before the
// writer's next pass, so it is never later than that pass.
func (w *writer) queueAck(frame []byte, id streams.ID) {
	if w.phase() < phaseJoining || !w.sub.Head().Less(id) {
		w.queue(frame) // no tail to wait for, or it has the entry already
		return
	}
	select {
	case w.control <- frame:
	default:
		w.queue(frame) // full: wait for room, kicking the writer
		return
	}
	// The tail may have pushed the entry (and kicked the writer, which may
	// have run already) between the check above and the queueing: then
	// nothing else would kick the writer for this ack before the timer.
	if !w.sub.Head().Less(id) {
		w.kick()
		return
	}
	w.armAckTimer()
}
