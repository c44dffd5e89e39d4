package handlers

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/xroom/xroom/streams"
)

const (
	// writeWait bounds one write: a client that reads nothing for this long
	// is dropped (it comes back with since= and loses nothing).
	writeWait = 10 * time.Second
	// pongWait: a peer we hear nothing from (no frame, no pong) for this
	// long is taken for dead, so half-open connections are reaped. Pings go
	// out at 9/10 of it, so a live peer's pong arrives in time.
	pongWait = 60 * time.Second
	// redisTimeout bounds one Redis call made for a connection: a stalled
	// Redis yields an error frame, not a hang.
	redisTimeout = 5 * time.Second
	// batchSize is how many entries one pass writes, and the page size of
	// replay and catch-up reads: big enough to amortise a Redis round trip
	// (1024 replays about a third faster than 256), small enough that acks
	// and errors are not held back long (a pass of 1024 takes about 2 ms).
	batchSize = 1024
	// controlQueue holds acks and errors waiting to be written; a client
	// that sends faster than it reads is slowed down, not buffered. Each
	// slot costs every connection, idle or not, 24 bytes.
	controlQueue = 16
	// readBuffer is the frame reader's buffer (wsread.go): client frames
	// are small chat messages, and every idle connection holds one. A
	// larger frame is read in several calls, or straight into its message.
	// With the library's unused 125 bytes (libraryReadBuffer), an idle
	// connection holds the 512 it held when the library read frames.
	readBuffer = 384
	// libraryReadBuffer is the WebSocket library's read buffer, unused
	// after the handshake: it raises 1 to its least, 125 bytes.
	libraryReadBuffer = 1
	// retryDelay is how soon a connection tries Redis again after a failed catch-up read.
	retryDelay = time.Second
	// closeGrace is how long a closing connection waits for the client's close reply.
	closeGrace = time.Second
)

// session is one WebSocket connection in a room. The handler's goroutine
// reads it; a writer goroutine runs only while there is something to write,
// so an idle connection costs no goroutine of its own.
type session struct {
	feed // what it is sent (feed.go), framed as WebSocket frames by wire
	conn *websocket.Conn

	rate    bucket       // messages this connection may send (reader only)
	expires atomic.Int64 // when the token runs out (Unix ns); 0: no token, -1: ran out

	control chan []byte
	out     outbox // the reader's messages on their way to Redis (appends.go)
	// lastTyping is when the reader last passed on a typing frame (unix ns).
	lastTyping int64
	reads      readState          // its last mark (reads.go)
	cancel     context.CancelFunc // ends ctx

	mu      sync.Mutex
	writing bool // a writer goroutine is running
	pending bool // more may have arrived since the writer last looked
	writers sync.WaitGroup
	pinger  *time.Timer
	// ackTimer wakes the writer for an ack held for its echo, or an echo
	// held for its ack; appending and heldKick hold the latter (ackhold.go).
	ackTimer  *time.Timer
	appending atomic.Bool
	heldKick  atomic.Bool
	wants     wants // control frames asked for by other goroutines
	// subscribed is set once sub is: the hub may notify before Subscribe returns.
	subscribed atomic.Bool

	// connMu guards uses of conn from outside the reader and the writer
	// (pings, shutdown): once gone, fasthttp may reuse the connection object.
	connMu sync.RWMutex
	gone   bool

	wire wire // every byte to the client goes through it (owned by the writer)
}

// kick makes sure a writer runs to look for work. Safe from any goroutine; never blocks.
func (s *session) kick() {
	s.mu.Lock()
	if s.ctx.Err() != nil { // ended: no writer starts again
		s.mu.Unlock()
		return
	}
	if s.writing {
		s.pending = true
		s.mu.Unlock()
		return
	}
	s.writing = true
	s.writers.Add(1)
	s.mu.Unlock()
	go s.writeLoop()
}

func (s *session) writeLoop() {
	defer s.writers.Done()
	for {
		s.mu.Lock()
		s.pending = false
		w := s.takeWants()
		s.mu.Unlock()
		more, err := s.writePass(w)
		// One write system call per pass; also after a failed join, whose
		// error and close frames are gathered.
		if ferr := s.wire.flush(); err == nil {
			err = ferr
		}
		s.countFrames(err == nil)
		s.wire.release() // before another writer may start
		if err != nil {
			var we writeError
			if errors.As(err, &we) && s.ctx.Err() == nil {
				s.srv.stats.writeErrors.Add(1)
			}
			s.log.Debug("write failed; closing", "err", err)
			s.stop()
			s.closeRaw() // the reader sees it and ends the session
			s.mu.Lock()
			s.writing = false
			s.mu.Unlock()
			return
		}
		s.mu.Lock()
		if !more && !s.pending || s.ctx.Err() != nil {
			s.writing = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
	}
}

// writePass writes what is waiting: first the join (gap, newest history),
// then queued acks and errors, then one batch of entries. more reports that
// another pass is due right away.
func (s *session) writePass(w wants) (more bool, err error) {
	if done, err := s.writeControl(w); done || err != nil {
		return false, err
	}
	if err := s.joinOnce(); err != nil {
		var we writeError
		if !errors.As(err, &we) { // Redis failed, the socket did not
			s.giveUp("history is unavailable right now; reconnect to try again", err)
		}
		return false, err
	}
	if err := s.drainControl(); err != nil {
		return false, err
	}
	more, err = s.writeEntries(s.wire.entries()) // pooled: an idle connection holds none
	if err != nil {                              // re declared here: taking its address makes it escape, and most passes succeed
		var re readError
		switch {
		case errors.As(err, &re) && errors.Is(err, streams.ErrUnavailable):
			// The room cannot be tailed now: say so, and let the client come
			// back (with since=) rather than wait on silence.
			s.giveUp("the room is unavailable right now; reconnect to try again", err)
			return false, err
		case errors.As(err, &re):
			s.log.Warn("reading the room failed; retrying", "err", err)
			time.AfterFunc(retryDelay, s.kick)
			return false, nil
		}
	}
	return more, err
}

// drainControl writes the acks and errors waiting in the queue.
func (s *session) drainControl() error {
	for {
		select {
		case f := <-s.control:
			if err := s.writeText(f); err != nil {
				return err
			}
		default:
			return nil
		}
	}
}

// giveUp tells the client the room cannot be served now: an error frame,
// then close 1013 (try again later), so it reconnects with backoff. Only
// the writer calls it.
func (s *session) giveUp(message string, err error) {
	s.log.Warn("cannot serve the room", "err", err)
	_ = s.writeText(encode(errorFrame{Type: "error", Code: codeUnavailable, Message: message}))
	_ = s.wire.control(opClose, websocket.FormatCloseMessage(websocket.CloseTryAgainLater, "redis unavailable"))
}

// writeText adds a JSON payload as a text frame to the pass's write.
func (s *session) writeText(b []byte) error { return s.wire.text(b) }

// writeError is a failed write to the socket, as opposed to a failed Redis call.
type writeError struct{ error }

func (e writeError) Unwrap() error { return e.error }

// queue hands a frame to the writer. It waits while the queue is full, so
// a client that never reads stops being read from.
func (s *session) queue(frame []byte) {
	select {
	case s.control <- frame:
		s.kick()
	case <-s.ctx.Done():
	}
}

func (s *session) queueError(r *refusal) {
	s.queue(encode(errorFrame{Type: "error", Code: r.code, Message: r.message, ClientID: r.clientID, RetryAfterMs: r.retryAfterMs}))
}

// startPings pings the client every PingPeriod, from a timer rather than a
// goroutine of its own; the writer sends the ping.
func (s *session) startPings() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pinger = time.AfterFunc(s.srv.cfg.PingPeriod, s.ping)
}

func (s *session) ping() {
	if s.tokenExpired() {
		return
	}
	s.mu.Lock()
	if s.ctx.Err() == nil {
		s.wants.ping = true
		s.pinger.Reset(s.srv.cfg.PingPeriod)
	}
	s.mu.Unlock()
	s.kick()
}

// stop marks the session ended: no writer starts again, a full queue no
// longer blocks the reader, and Redis reads made for it are cancelled.
// Taken under mu so that kick cannot start a writer after close waits.
func (s *session) stop() {
	s.mu.Lock()
	s.cancel()
	s.mu.Unlock()
}

// close ends the session and waits until nothing else uses the connection.
// The writer first sends a close frame (the reply to the client's, or the
// reason the server ends it), given closeGrace to do so.
func (s *session) close() {
	s.mu.Lock()
	if s.pinger != nil {
		s.pinger.Stop()
	}
	if s.ackTimer != nil {
		s.ackTimer.Stop()
	}
	s.mu.Unlock()
	s.out.done.Wait() // the messages read are stored and their replies queued first
	s.requestClose(websocket.CloseNormalClosure, "")
	s.waitWriter(closeGrace)
	s.stop()
	s.linger()
	s.closeRaw()
	s.connMu.Lock() // waits for a ping or goAway in flight; they fail fast now
	s.gone = true
	s.connMu.Unlock()
	s.writers.Wait()
}

// withConn runs f on the connection unless the session is gone.
func (s *session) withConn(f func() error) error {
	s.connMu.RLock()
	defer s.connMu.RUnlock()
	if s.gone {
		return net.ErrClosed
	}
	return f()
}

// closeRaw closes the TCP connection under the WebSocket, which ends a
// blocked read or write at once. (fasthttp's hijacked connection ignores
// Close: it closes the socket itself after the handler returns.)
func (s *session) closeRaw() { _ = rawConn(s.conn).Close() }

// goAway tells the client the server is going away (1001) and gives it a
// moment to answer before the read loop is cut off.
func (s *session) goAway() {
	s.requestClose(websocket.CloseGoingAway, "server shutting down")
	_ = s.withConn(func() error {
		return s.conn.SetReadDeadline(time.Now().Add(closeGrace))
	})
}
