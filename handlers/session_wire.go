package handlers

import (
	"net"
	"time"

	"github.com/fasthttp/websocket"
)

// wants are control frames other goroutines (the reader, the ping timer,
// shutdown) ask the writer to send: only the writer touches the socket.
// Guarded by session.mu.
type wants struct {
	ping    bool
	pong    []byte // the payload of the newest ping to answer
	hasPong bool
	// close is the payload of the close frame to send, nil when none is
	// asked for. The first request wins: a reply to the client's close,
	// 1009, 1001 at shutdown, 1013 when Redis is down.
	close      []byte
	closeAsked bool
	errFrame   []byte // an error frame to send before the close, if any
}

// takeWants returns what was asked for since the last pass. s.mu must be held.
func (s *session) takeWants() wants {
	w := s.wants
	s.wants = wants{closeAsked: w.closeAsked}
	return w
}

// writeControl writes the control frames asked for. done means the
// connection is closing: nothing else is to be written.
func (s *session) writeControl(w wants) (done bool, err error) {
	if w.hasPong {
		if err := s.wire.control(opPong, w.pong); err != nil {
			return true, err
		}
	}
	if w.ping {
		if err := s.wire.control(opPing, nil); err != nil {
			return true, err
		}
	}
	if w.close != nil {
		if w.errFrame != nil {
			if err := s.writeText(w.errFrame); err != nil {
				return true, err
			}
		}
		return true, s.wire.control(opClose, w.close)
	}
	return s.wire.closed, nil
}

// requestClose asks the writer to send a close frame (unless one was
// asked for already) and wakes it.
func (s *session) requestClose(code int, reason string) {
	s.requestCloseWith(code, reason, nil)
}

func (s *session) requestCloseWith(code int, reason string, errFrame []byte) {
	s.mu.Lock()
	if !s.wants.closeAsked {
		s.wants.closeAsked = true
		s.wants.close = websocket.FormatCloseMessage(code, reason)
		s.wants.errFrame = errFrame
	}
	s.mu.Unlock()
	s.kick()
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

// waitWriter waits up to d for the running writer, if any, to finish. It
// polls: writers come and go with every message, and a channel or a
// WaitGroup.Wait racing with kick's Add would cost them; closing is rare.
func (s *session) waitWriter(d time.Duration) {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(2 * time.Millisecond) {
		s.mu.Lock()
		writing := s.writing
		s.mu.Unlock()
		if !writing {
			return
		}
	}
}

// notify is the hub's notification: new entries may be in the room. Before
// the session has its subscription, the writer must not start on entries.
func (s *session) notify() {
	if s.subscribed.Load() && !s.notifyDuringAppend() {
		s.kick()
	}
}

// rawConn is the TCP connection under a WebSocket (fasthttp wraps a
// hijacked connection; its wrapper only forwards).
func rawConn(c *websocket.Conn) net.Conn {
	if u, ok := c.NetConn().(interface{ UnsafeConn() net.Conn }); ok {
		return u.UnsafeConn()
	}
	return c.NetConn()
}
