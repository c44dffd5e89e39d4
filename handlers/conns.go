package handlers

// The open chat connections: a WebSocket session's life from upgrade to
// close, and the count of sessions and SSE streams that MAX_CONNS and
// Shutdown work on.

import (
	"context"

	"github.com/gofiber/contrib/websocket"

	"github.com/xroom/xroom/streams"
)

// serveWS runs one WebSocket session: it subscribes to the room, starts the
// writer on the join, and reads client frames until the end.
func (s *Server) serveWS(c *websocket.Conn) {
	req := c.Locals(joinKey).(*joinRequest)
	room := req.room
	sess := &session{writer: writer{feed: req.feed(s), control: make(chan []byte, controlQueue)}, conn: c.Conn}
	sess.compat = c.Subprotocol() != Subprotocol
	sess.readConn = streams.RandomName(8)
	sess.attach(&sess.ws)
	sess.ctx, sess.cancel = context.WithCancel(context.Background())
	defer sess.cancel()
	sess.expires.Store(tokenDeadline(req.claims))
	sess.log = sessionLog{base: s.log, room: room, user: sess.user, remote: c.RemoteAddr().String()}

	sess.raw = rawConn(c.Conn)
	sess.ws.conn, sess.ws.wait = sess.raw, s.cfg.WriteWait
	if !s.track(sess) {
		return
	}
	defer s.unregister(sess)
	release, ok := s.admitIP(sess, req.ip)
	if !ok {
		return
	}
	defer release()

	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RedisTimeout)
	sub, err := s.hub.Subscribe(ctx, room, sess.notify)
	cancel()
	if err != nil {
		sess.log.Warn("cannot serve the room", "err", err)
		sess.refuse(websocket.CloseTryAgainLater, "redis unavailable", "the room is unavailable right now; reconnect to try again")
		return
	}
	sess.follow(sub)
	sess.log.Debug("joined", "compat", sess.compat)

	sess.startPings()
	sess.begin() // after sess.sub is set: notify may kick now, and the writer sends the join
	sess.readLoop()
	sess.close() // no writer runs after this: sess.member is settled
	sess.leavePresence()
	sub.Close()
}

// chatConn is an open chat connection, a WebSocket session or an SSE
// stream: what Shutdown and the metrics need of it.
type chatConn interface {
	goAway()      // ends it because the server is stopping
	dialect() int // its dialects label
}

// register counts conn in, unless the server is stopping or holds MaxConns
// connections: then it returns why not (refuseReasons: counted in). This
// is the binding check: all the requests racing past checkCapacity may
// not fit.
func (s *Server) register(conn chatConn) refuseReason {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.stopping:
		return refusedStopping
	case s.guard.limits.MaxConns > 0 && len(s.conns) >= s.guard.limits.MaxConns:
		return refusedFull
	}
	s.conns[conn] = struct{}{}
	s.opened(conn)
	s.running.Add(1)
	return refuseReasons
}

func (s *Server) unregister(conn chatConn) {
	s.mu.Lock()
	delete(s.conns, conn)
	s.closed(conn)
	s.mu.Unlock()
	s.running.Done()
}

// track registers a WebSocket session, or closes it when it may not be.
func (s *Server) track(sess *session) bool {
	why := s.register(sess)
	switch why {
	case refuseReasons:
		return true
	case refusedStopping:
		sess.refuse(websocket.CloseGoingAway, "server shutting down", "")
	case refusedFull:
		sess.refuseWith(websocket.CloseTryAgainLater, "server full",
			encode(errorFrame{Type: "error", Code: refuseNames[why], Message: "the server holds the most chat connections it takes; reconnect later"}))
	}
	s.refused(why, sess.log.remote)
	return false
}

// Connections is how many chat connections (WebSocket and SSE) are open.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Shutdown refuses new connections, closes the open WebSockets with 1001
// (going away), ends the SSE streams, and waits for them to end. A
// message being stored when it is called is stored and acknowledged first.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.stopping = true
	open := make([]chatConn, 0, len(s.conns))
	for conn := range s.conns {
		open = append(open, conn)
	}
	s.mu.Unlock()
	for _, conn := range open {
		conn.goAway()
	}
	done := make(chan struct{})
	go func() { s.running.Wait(); close(done) }()
	defer s.closePresence(ctx)
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
