package handlers

// Server-Sent Events: GET /sse/chat/{room}/ serves the room as an event
// stream, for networks and clients where WebSockets are blocked or
// unwanted. It is the WebSocket's feed in other framing: the same checks
// (beforeJoin), resume (Last-Event-ID is since), gaps, limits and metrics.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/gofiber/fiber/v2"
)

const (
	// sseKeepAlive is how often a stream sends a comment line: proxies
	// close connections quiet for 30 to 60 s, and a write is also how a
	// peer that vanished is found out.
	sseKeepAlive = 15 * time.Second
	// sseRetry is the reconnection delay a stream tells EventSource
	// (retry:), spread by sseRetryJitter either way so that the clients
	// of an instance that stops do not all come back in the same instant.
	sseRetry       = 2 * time.Second
	sseRetryJitter = 0.5
)

// beforeStream checks an SSE request as beforeUpgrade checks a WebSocket
// handshake; Last-Event-ID, when present, is the since.
func (s *Server) beforeStream(c *fiber.Ctx) error { return s.beforeJoin(c, sinceFromEventID) }

// serveSSE takes the connection over from the HTTP server, as a WebSocket
// upgrade does: the stream then counts among chat connections (MAX_CONNS)
// rather than holding one of the slots kept for HTTP requests, and
// neither the HTTP write timeout (set once per response) nor the idle
// timeout cuts it. What the stream needs of the request is copied first:
// the request is reused once this returns.
func (s *Server) serveSSE(c *fiber.Ctx) error {
	req := c.Locals(joinKey).(*joinRequest)
	st := s.newStream(c, req)
	s.allowOrigin(c)
	header := sseResponseHeader(c)
	c.Context().HijackSetNoResponse(true)
	c.Context().Hijack(func(conn net.Conn) { s.runStream(st, conn, req.ip, header) })
	return nil
}

// newStream is the stream of an SSE request that passed beforeStream.
func (s *Server) newStream(c *fiber.Ctx, req *joinRequest) *sseStream {
	st := &sseStream{writer: writer{feed: req.feed(s)}}
	st.attach(&st.sse)
	st.expires = tokenDeadline(req.claims)
	st.log = sessionLog{base: s.log, room: req.room, user: st.user, remote: c.Context().RemoteAddr().String()}
	jitter := 1 + (2*rand.Float64()-1)*sseRetryJitter
	st.retry = time.Duration(float64(s.cfg.SSERetry) * jitter).Round(time.Millisecond)
	return st
}

// runStream serves one stream on the hijacked connection until it ends.
// The limits are checked again (the binding checks: requests racing past
// beforeStream may not all fit), and as nothing was written yet, a
// refusal is still an HTTP answer.
func (s *Server) runStream(st *sseStream, conn net.Conn, ip netip.Addr, header []byte) {
	st.conn, st.raw = conn, unwrapConn(conn)
	st.sse.conn, st.sse.wait = st.raw, s.cfg.WriteWait
	st.ctx, st.cancel = context.WithCancel(context.Background())
	defer st.cancel()
	if why := s.register(st); why != refuseReasons {
		s.refused(why, st.log.remote)
		st.refuse(fiber.StatusServiceUnavailable, refuseNames[why], "the server cannot take this stream now; reconnect later, or to another instance")
		return
	}
	defer s.unregister(st)
	if !s.guard.acquireIP(ip) {
		s.refused(refusedPerIP, st.log.remote)
		st.refuse(fiber.StatusTooManyRequests, refuseNames[refusedPerIP], "this address has too many chat connections open")
		return
	}
	defer s.guard.releaseIP(ip)

	ctx, cancel := context.WithTimeout(st.ctx, s.cfg.RedisTimeout)
	sub, err := s.hub.Subscribe(ctx, st.room, st.notify)
	cancel()
	if err != nil {
		st.log.Warn("cannot serve the room", "err", err)
		st.refuse(fiber.StatusServiceUnavailable, "redis_unavailable", "the room is unavailable right now; try again")
		return
	}
	st.follow(sub)
	st.log.Debug("stream opened", "since", st.resume.At.ID.String(), "last_event_id", st.resume.EventID)
	// The head goes out at once, before the join reads Redis: EventSource
	// is open from here on.
	err = st.sse.header(header)
	if err == nil {
		err = st.sse.retry(st.retry.Milliseconds())
	}
	if err == nil {
		err = st.sse.flush()
	}
	st.sse.release()
	if err == nil {
		st.startKeepAlive(s.cfg.SSEKeepAlive)
		st.begin() // after st.sub is set: notify may kick now, and the writer sends the join
		st.waitClosed()
	}
	st.close() // no writer runs after this
	st.leavePresence()
	sub.Close()
}

// refuse answers a stream that never started with an HTTP error and a
// JSON body, as beforeStream's refusals are.
func (st *sseStream) refuse(status int, code, message string) {
	body := encode(fiber.Map{"error": fiber.Map{"code": code, "message": message}})
	head := fmt.Sprintf("HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nX-Content-Type-Options: nosniff\r\nRetry-After: 5\r\nConnection: close\r\n\r\n",
		status, http.StatusText(status), len(body))
	_ = st.raw.SetWriteDeadline(time.Now().Add(st.srv.cfg.WriteWait))
	_, _ = st.raw.Write(append([]byte(head), body...))
}

// unwrapConn is the TCP connection under fasthttp's hijacked one.
func unwrapConn(c net.Conn) net.Conn {
	if u, ok := c.(interface{ UnsafeConn() net.Conn }); ok {
		return u.UnsafeConn()
	}
	return c
}
