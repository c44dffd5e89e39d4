package handlers

// The writer of a chat connection, WebSocket session and SSE stream alike,
// and the connection's life as phases.
//
// THE RULE. Only the writer goroutine writes the socket. A writer goroutine
// exists only while there is something to write: kick starts one when none
// runs (or has the running one look again), and it ends after a pass that
// leaves nothing to do, so an idle connection costs no goroutine. Everyone
// else (the room's tail, the reader's acks and errors, the ping, keep-alive
// and ack timers, shutdown) asks: it sets what it wants (wants, the control
// queue, a close) and calls kick, which never blocks and never writes. A
// pass gathers all that is due and writes it with one system call (a long
// replay: one per flushAt bytes), so what many asked for goes out together.
// The exceptions are the two ends of a connection, before any writer ran
// and after the last one ended: a refused SSE stream's HTTP answer, and
// the WebSocket's linger, which reads after the writer is done.

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/xroom/xroom/streams"
)

// phase is where a connection is in its life. It only moves forward. The
// writer moves it through joining, replaying and live; the connection's
// goroutine opens it (joining, once subscribed); anyone may ask for
// closing; and stop, the end, makes it closed.
type phase int32

const (
	phaseOpening   phase = iota // accepted, not subscribed yet: notifications are ignored, only a refusal is written
	phaseJoining                // subscribed: the next pass writes the join (gap, newest history)
	phaseReplaying              // the join is written: entries up to readyAt are history, before ready
	phaseLive                   // ready is written: entries are live, presence events pass
	// phaseClosing: a close was asked for. The next pass writes it (a close
	// frame, or an event stream's end) and nothing is written after it; a
	// WebSocket then waits for the client's reply.
	phaseClosing
	// phaseClosed: the connection ended (stop): no writer starts again, and
	// nothing else uses the connection.
	phaseClosed
)

var phaseNames = [...]string{"opening", "joining", "replaying", "live", "closing", "closed"}

func (p phase) String() string {
	if p < 0 || int(p) >= len(phaseNames) {
		return "phase(" + strconv.Itoa(int(p)) + ")"
	}
	return phaseNames[p]
}

// life holds a connection's phase: any goroutine may read it.
type life struct{ v atomic.Int32 }

func (l *life) phase() phase { return phase(l.v.Load()) }

// advance moves the phase on to p from any earlier one and reports whether
// it did: a phase never goes back, so a late step (ready after a close was
// asked for, a second close) changes nothing.
func (l *life) advance(p phase) bool {
	for {
		cur := l.v.Load()
		if phase(cur) >= p {
			return false
		}
		if l.v.CompareAndSwap(cur, int32(p)) {
			return true
		}
	}
}

// transport is what differs between a WebSocket and an event stream: how
// frames are framed and written. wire (wire.go) writes WebSocket frames,
// sseWire (sse_wire.go) events. Each gathers a pass's frames in a pooled
// buffer and writes them in one system call.
type transport interface {
	frameSink // entry, ready, event: the feed's frames
	// control adds a ping, a pong or the close: on an event stream a
	// keep-alive comment, nothing, and the end of the stream. Nothing is
	// added after the close.
	control(op byte, payload []byte) error
	flush() error // writes what is gathered: one system call
	release()     // gives the buffer back: an idle connection holds none
	// tally returns, and zeroes, the counts since it was last called: the
	// message frames gathered, and the writes and failed writes that the
	// WebSocket write metrics count (an event stream reports none).
	tally() (frames, writes, failed int)
	// hangsUp reports whether the writer ends the connection once its
	// close is written: an event stream has nothing after its end, while a
	// WebSocket waits for the client's close reply (RFC 6455 7.1.1).
	hangsUp() bool
}

// writer is a connection's feed and the one goroutine at a time that
// writes it; session and sseStream embed it.
type writer struct {
	feed                      // what the connection is sent (feed.go)
	wire   transport          // how it is framed and written; owned by the writer
	raw    net.Conn           // the TCP connection: closing it ends a blocked read or write at once
	cancel context.CancelFunc // ends ctx

	mu      sync.Mutex
	running bool // a writer goroutine is running
	pending bool // more may have arrived since the writer last looked
	writers sync.WaitGroup
	wants   wants
	beat    *time.Timer   // asks for a ping every period (on SSE, a comment)
	every   time.Duration // beat's period

	// control holds acks and errors waiting to be written (a WebSocket's:
	// nil on an event stream, which gets no client frames to answer).
	control chan []byte
	// ackTimer, appending and heldKick hold an ack and the sender's own
	// copy of its message for each other (ackhold.go).
	ackTimer  *time.Timer
	appending atomic.Bool
	heldKick  atomic.Bool

	ents *[]*streams.Entry // the pass's entries, pooled: an idle connection holds none
}

// wants is what other goroutines asked the writer for since its last pass.
// Guarded by mu.
type wants struct {
	ping    bool   // a ping is due (on SSE, a keep-alive comment)
	pong    []byte // the payload of the newest client ping to answer
	hasPong bool
	// close is the close frame's payload (an event stream just ends) and
	// errFrame an error frame to send before it (nil: none), as closeWith
	// was first asked.
	close    []byte
	errFrame []byte
}

// attach sets the transport the writer and its feed write through.
func (w *writer) attach(t transport) { w.wire, w.sink = t, t }

// kick makes sure a writer runs to look for work: the one way to wake it.
// Safe from any goroutine; never blocks.
func (w *writer) kick() {
	w.mu.Lock()
	if w.phase() == phaseClosed { // ended: no writer starts again
		w.mu.Unlock()
		return
	}
	if w.running {
		w.pending = true
		w.mu.Unlock()
		return
	}
	w.running = true
	w.writers.Add(1)
	w.mu.Unlock()
	go w.run()
}

// begin opens the connection once its subscription is set (the hub may
// notify before Subscribe returns), and starts the writer on the join.
func (w *writer) begin() {
	w.advance(phaseJoining)
	w.kick()
}

// notify is the hub's notification: new entries may be in the room. While
// the reader's append is in flight it is held for the ack (ackhold.go).
func (w *writer) notify() {
	if w.phase() >= phaseJoining && !w.holdForAck() {
		w.kick()
	}
}

// run is a writer goroutine: passes until nothing more is due.
func (w *writer) run() {
	defer w.writers.Done()
	for {
		w.mu.Lock()
		w.pending = false
		want, p := w.wants, w.phase()
		w.wants = wants{}
		w.mu.Unlock()
		more, err := w.pass(want, p)
		// One write system call per pass; also after a failed join, whose
		// error and close frames are gathered.
		if ferr := w.wire.flush(); err == nil {
			err = ferr
		}
		w.count(err)
		w.release() // before another writer may start
		if err != nil || p >= phaseClosing && w.wire.hangsUp() {
			if err != nil {
				w.log.Debug("writer ended; closing", "err", err)
			}
			w.stop()
			w.hangUp() // the reader sees it and ends the connection
			w.mu.Lock()
			w.running = false
			w.mu.Unlock()
			return
		}
		w.mu.Lock()
		if !more && !w.pending || w.phase() == phaseClosed {
			w.running = false
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
	}
}

// pass writes what is waiting: pong and ping; then either the close, or
// the join (gap, newest history), queued acks and errors, and one batch of
// entries. p is the phase when it started. more reports that another pass
// is due right away.
func (w *writer) pass(want wants, p phase) (more bool, err error) {
	if want.hasPong {
		if err := w.wire.control(opPong, want.pong); err != nil {
			return false, err
		}
	}
	if want.ping {
		if err := w.wire.control(opPing, nil); err != nil {
			return false, err
		}
	}
	if p >= phaseClosing {
		if want.errFrame != nil {
			if err := w.wire.event(kindError, want.errFrame); err != nil {
				return false, err
			}
		}
		return false, w.wire.control(opClose, want.close)
	}
	if err := w.joinOnce(); err != nil {
		var we writeError
		if !errors.As(err, &we) { // Redis failed, the socket did not
			w.giveUp("history", err)
		}
		return false, err
	}
	if err := w.drainControl(); err != nil {
		return false, err
	}
	more, err = w.writeEntries(w.entries())
	if err != nil { // re declared here: taking its address makes it escape, and most passes succeed
		var re readError
		switch {
		case errors.As(err, &re) && errors.Is(err, streams.ErrUnavailable):
			// The room cannot be tailed now: say so, and let the client come
			// back (with since=) rather than wait on silence.
			return false, w.giveUp("the room", err)
		case errors.As(err, &re):
			w.log.Warn("reading the room failed; retrying", "err", err)
			time.AfterFunc(retryDelay, w.kick)
			return false, nil
		}
	}
	return more, err
}

// drainControl writes the acks and errors waiting in the queue. Each
// carries its type in its JSON; only a WebSocket has a queue, and its
// frames are not named.
func (w *writer) drainControl() error {
	for {
		select {
		case f := <-w.control:
			if err := w.wire.event("", f); err != nil {
				return err
			}
		default:
			return nil
		}
	}
}

// giveUp tells the client that what (the history, the room) cannot be
// served now: an error frame, then close 1013 (try again later) or the
// stream's end, so that it reconnects with backoff. It returns err.
func (w *writer) giveUp(what string, err error) error {
	w.log.Warn("cannot serve the room", "err", err)
	then := "reconnect to try again"
	if w.wire.hangsUp() {
		then = "the stream ends, " + then
	}
	_ = w.wire.event(kindError, encode(errorFrame{Type: kindError, Code: codeUnavailable, Message: what + " is unavailable right now; " + then}))
	_ = w.wire.control(opClose, websocket.FormatCloseMessage(websocket.CloseTryAgainLater, "redis unavailable"))
	return err
}

// entries returns the pass's entry slice (batchSize long), from the pool.
func (w *writer) entries() []*streams.Entry {
	if w.ents == nil {
		w.ents = entryPool.Get().(*[]*streams.Entry)
	}
	return (*w.ents)[:0]
}

// release returns the pass's buffers to their pools.
func (w *writer) release() {
	w.wire.release()
	if w.ents != nil {
		clear((*w.ents)[:cap(*w.ents)]) // hold no entries in the pool
		entryPool.Put(w.ents)
		w.ents = nil
	}
}

// closeWith asks the writer to end the connection: errFrame (nil: none),
// then the close, whose payload is a close frame's (an event stream just
// ends). The first request wins: a reply to the client's close, 1009, 1001
// at shutdown, 1013 when Redis is down.
func (w *writer) closeWith(payload, errFrame []byte) {
	w.mu.Lock()
	if w.advance(phaseClosing) {
		w.wants.close, w.wants.errFrame = payload, errFrame
	}
	w.mu.Unlock()
	w.kick()
}

// startBeat runs tick after period, from a timer rather than a goroutine;
// tick calls askPing, which sets the timer again, or closes (token ran out).
func (w *writer) startBeat(period time.Duration, tick func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.every = period
	w.beat = time.AfterFunc(period, tick)
}

// askPing asks the writer for a ping (on SSE, a keep-alive comment).
func (w *writer) askPing() {
	w.mu.Lock()
	if w.phase() != phaseClosed {
		w.wants.ping = true
		w.beat.Reset(w.every)
	}
	w.mu.Unlock()
	w.kick()
}

// askPong asks the writer to answer a client's ping; only the newest ping
// waiting is answered, as RFC 6455 (5.5.3) allows.
func (w *writer) askPong(payload []byte) {
	w.mu.Lock()
	w.wants.pong, w.wants.hasPong = payload, true
	w.mu.Unlock()
	w.kick()
}

// stopTimers stops the beat and the ack timer: the connection is ending.
func (w *writer) stopTimers() {
	w.mu.Lock()
	if w.beat != nil {
		w.beat.Stop()
	}
	if w.ackTimer != nil {
		w.ackTimer.Stop()
	}
	w.mu.Unlock()
}

// stop ends the connection: closed, so no writer starts again, a full
// queue no longer blocks the reader, and Redis reads made for it are
// cancelled. Taken under mu so that kick cannot start a writer after
// close waits.
func (w *writer) stop() {
	w.mu.Lock()
	w.advance(phaseClosed)
	w.cancel()
	w.mu.Unlock()
}

// hangUp closes the TCP connection, which ends a blocked read or write at
// once. (fasthttp's hijacked connection ignores Close: it closes the
// socket itself after the handler returns.)
func (w *writer) hangUp() { _ = w.raw.Close() }

// waitIdle waits up to d for the running writer, if any, to finish. It
// polls: writers come and go with every message, and a channel or a
// WaitGroup.Wait racing with kick's Add would cost them; closing is rare.
func (w *writer) waitIdle(d time.Duration) {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(2 * time.Millisecond) {
		w.mu.Lock()
		running := w.running
		w.mu.Unlock()
		if !running {
			return
		}
	}
}
