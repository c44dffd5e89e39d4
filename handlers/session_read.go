package handlers

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"time"
)

// readLoop reads client frames until the connection ends. Every frame,
// pongs included, shows the peer is alive and pushes the read deadline.
func (s *session) readLoop() {
	wait := s.srv.cfg.PongWait
	conn := s.conn.NetConn() // fasthttp's hijacked connection: it hands over bytes it had buffered
	alive := func() { _ = conn.SetReadDeadline(time.Now().Add(wait)) }
	fr := newFrameReader(conn, s.srv.frameLimit(), func(p []byte) { s.answerPing(p); alive() }, alive)
	alive()
	for {
		op, data, err := fr.next()
		if err != nil {
			s.readEnded(err)
			return
		}
		alive()
		if op != opText {
			s.queueError(&refusal{code: codeBadFrame, message: "binary frames are not supported; send JSON text frames"})
			continue
		}
		s.handle(data)
	}
}

// handle stores one client frame, answering with an ack or an error frame.
func (s *session) handle(data []byte) {
	if s.tokenExpired() {
		return
	}
	m, bad := decodeFrame(data, s.srv.cfg.MaxMessageBytes)
	switch bad {
	case typingFrame:
		s.typing()
		return
	case readFrame:
		s.markRead(data) // reads.go
		return
	}
	if bad != nil {
		s.submit(outgoing{refusal: bad})
		return
	}
	if r := s.srv.guard.allowMessage(&s.rate, s.user, m.ClientID); r != nil {
		s.submit(outgoing{refusal: r})
		return
	}
	m.User = s.user
	s.submit(outgoing{m: m}) // appends.go: stored in order, the reader reads on
}

// answerPing has the writer send a pong with the ping's payload.
func (s *session) answerPing(payload []byte) { s.askPong(bytes.Clone(payload)) }

// readEnded answers how the client's side ended: its close frame is
// echoed, a broken rule fails the connection with its code, and either
// way the writer sends the one close frame of the connection.
func (s *session) readEnded(err error) {
	var closed *peerClose
	var failed *wsFailure
	switch {
	case errors.As(err, &closed):
		s.requestClose(closed.code, "") // echo the code, as RFC 6455 5.5.1 asks
	case errors.As(err, &failed):
		e := &s.srv.edge
		e.protocol[failed.why].Add(1)
		e.logf(s.srv.log, slog.LevelInfo, "protocol", "WebSocket client broke the protocol; closing",
			"reason", failNames[failed.why], "close", failed.code, "detail", failed.text, "remote", s.log.remote, "room", s.room, "user", s.user)
		s.requestClose(failed.code, failed.text)
	case errors.Is(err, os.ErrDeadlineExceeded) && !s.closing():
		s.srv.timedOut(timeoutWebSocket, s.log.remote)
	default:
		s.log.Debug("connection ended", "err", err)
	}
}

// closing reports whether the session is closing already (a goAway or a
// token expiry then cut the read short on purpose).
func (s *session) closing() bool { return s.phase() >= phaseClosing }

// linger half-closes the connection once the close frame is out, and
// reads what the client still sends until it closes too, for closeGrace
// at most. Closing with unread bytes would send a reset, which can destroy
// the close frame before the client reads it (a 1009 for a frame it is
// still sending, say). The client sees the server close the connection
// first, as RFC 6455 (7.1.1) asks.
func (s *session) linger() {
	raw := rawConn(s.conn)
	cw, ok := raw.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	if raw.SetReadDeadline(time.Now().Add(closeGrace)) == nil {
		_, _ = io.Copy(io.Discard, raw)
	}
}
