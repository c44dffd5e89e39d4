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
// notification was held, which the caller passes to wake after queueing
// the ack (or error).
func (s *session) appendStarted() { s.appending.Store(true) }

func (s *session) appendDone() (held bool) {
	s.appending.Store(false)
	return s.heldKick.Swap(false)
}

// wake wakes the writer for a notification appendDone reported held.
func (s *session) wake(held bool) {
	if held {
		s.kick()
	}
}

// notifyDuringAppend is the hub's notification while the reader's append
// is in flight: it holds the kick for the append's ack, with ackHold as
// the bound. false: no append is in flight, kick as usual.
func (s *session) notifyDuringAppend() bool {
	if !s.appending.Load() {
		return false
	}
	s.heldKick.Store(true)
	if !s.appending.Load() && s.heldKick.Swap(false) {
		// The append ended between the two loads, and its reader may have
		// looked for a held notification before this one was set.
		s.kick()
		return true
	}
	s.armAckTimer()
	return true
}

// armAckTimer makes sure the writer is woken within ackHold if what was
// held is still waiting then.
func (s *session) armAckTimer() {
	s.mu.Lock()
	if s.ackTimer == nil {
		s.ackTimer = time.AfterFunc(ackHold, s.ackTimeout)
	} else {
		s.ackTimer.Reset(ackHold)
	}
	s.mu.Unlock()
}

// ackTimeout wakes the writer for a held notification or a queued ack
// that nothing has written yet. Usually the pair has gone out long before,
// and it does nothing: no writer goroutine starts for nothing.
func (s *session) ackTimeout() {
	if s.heldKick.Swap(false) || len(s.control) > 0 {
		s.kick()
	}
}

// queueAck hands the ack of the append that got id to the writer. When the
// room's tail has not read that entry yet, the writer is not woken: the
// tail's notification, which comes with the entry, writes the ack and the
// entry in one pass (one system call), and a timer wakes it after ackHold
// in case the entry is late. Either way the ack is in the queue before the
// writer's next pass, so it is never later than that pass.
func (s *session) queueAck(frame []byte, id streams.ID) {
	if !s.subscribed.Load() || !s.sub.Head().Less(id) {
		s.queue(frame) // no tail to wait for, or it has the entry already
		return
	}
	select {
	case s.control <- frame:
	default:
		s.queue(frame) // full: wait for room, waking the writer
		return
	}
	// The tail may have pushed the entry (and woken the writer, which may
	// have run already) between the check above and the queueing: then
	// nothing else would wake the writer for this ack before the timer.
	if !s.sub.Head().Less(id) {
		s.kick()
		return
	}
	s.armAckTimer()
}
