package handlers

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"
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
// reads it (session_read.go); its writer (writer.go) writes WebSocket
// frames through ws.
type session struct {
	writer // the feed and its one writer
	conn   *websocket.Conn
	ws     wire // the writer's transport

	rate    bucket       // messages this connection may send (reader only)
	expires atomic.Int64 // when the token runs out (Unix ns); 0: no token, -1: ran out

	out outbox // the reader's messages on their way to Redis (appends.go)
	// lastTyping is when the reader last passed on a typing frame (unix ns).
	lastTyping int64
	reads      readState // its last mark (reads.go)

	// connMu guards uses of conn from outside the reader and the writer
	// (pings, shutdown): once the session is closed, fasthttp may reuse the
	// connection object.
	connMu sync.RWMutex
}

func (s *session) queueError(r *refusal) {
	s.queue(encode(errorFrame{Type: "error", Code: r.code, Message: r.message, ClientID: r.clientID, RetryAfterMs: r.retryAfterMs}))
}

// startPings pings the client every PingPeriod; the writer sends the ping.
func (s *session) startPings() { s.startBeat(s.srv.cfg.PingPeriod, s.ping) }

// ping asks for the next ping, unless the token has run out: the session
// closes instead.
func (s *session) ping() {
	if !s.tokenExpired() {
		s.askPing()
	}
}

// close ends the session and waits until nothing else uses the connection.
// The writer first sends a close frame (the reply to the client's, or the
// reason the server ends it), given closeGrace to do so.
func (s *session) close() {
	s.stopTimers()
	s.out.done.Wait() // the messages read are stored and their replies queued first
	s.requestClose(websocket.CloseNormalClosure, "")
	s.waitIdle(closeGrace)
	s.stop()
	s.linger()
	s.hangUp()
	s.connMu.Lock() // waits for a ping or goAway in flight; later ones see the session closed
	s.connMu.Unlock()
	s.writers.Wait()
}

// withConn runs f on the connection unless the session is closed.
func (s *session) withConn(f func() error) error {
	s.connMu.RLock()
	defer s.connMu.RUnlock()
	if s.phase() == phaseClosed {
		return net.ErrClosed
	}
	return f()
}

// goAway tells the client the server is going away (1001) and gives it a
// moment to answer before the read loop is cut off.
func (s *session) goAway() {
	s.requestClose(websocket.CloseGoingAway, "server shutting down")
	_ = s.withConn(func() error {
		return s.conn.SetReadDeadline(time.Now().Add(closeGrace))
	})
}

// requestClose asks the writer to send a close frame, unless one was
// asked for already.
func (s *session) requestClose(code int, reason string) {
	s.requestCloseWith(code, reason, nil)
}

func (s *session) requestCloseWith(code int, reason string, errFrame []byte) {
	s.closeWith(websocket.FormatCloseMessage(code, reason), errFrame)
}

// refuse ends a session that never started reading: an optional
// "unavailable" error frame, then a close frame with code.
func (s *session) refuse(code int, reason, unavailable string) {
	var frame []byte
	if unavailable != "" {
		frame = encode(errorFrame{Type: "error", Code: codeUnavailable, Message: unavailable})
	}
	s.refuseWith(code, reason, frame)
}

// refuseWith is refuse with any error frame (nil: none).
func (s *session) refuseWith(code int, reason string, errFrame []byte) {
	s.requestCloseWith(code, reason, errFrame)
	s.close()
}

// rawConn is the TCP connection under a WebSocket (fasthttp wraps a
// hijacked connection; its wrapper only forwards).
func rawConn(c *websocket.Conn) net.Conn {
	if u, ok := c.NetConn().(interface{ UnsafeConn() net.Conn }); ok {
		return u.UnsafeConn()
	}
	return c.NetConn()
}
