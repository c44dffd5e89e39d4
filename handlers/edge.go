package handlers

import (
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"

	"github.com/xroom/xroom/netedge"
)

// Bounds on how long an HTTP connection may hold a descriptor without
// progress. HEADER_TIMEOUT and IDLE_TIMEOUT set the first two
// (Config.HeaderTimeout, Config.IdleTimeout).
const (
	// DefaultHeaderTimeout: a new connection must send its first byte within it,
	// and then its request line and headers within it of that byte. Any
	// client on any link needs far less; sockets opened only to hold
	// descriptors (a silent flood) are gone as quickly.
	DefaultHeaderTimeout = 5 * time.Second
	// DefaultIdleTimeout: how long a keep-alive connection may wait for its next
	// request. It spans the page's 15-second room-list refresh; past it,
	// the descriptor (and the slot of HTTP's share) is worth more than the
	// handshake that reuse saves.
	DefaultIdleTimeout = 60 * time.Second
	// bodyTimeout: a request body (at most BodyLimit) must arrive within
	// this of its headers: the 30 s slow links always had (408 after it).
	bodyTimeout = 30 * time.Second
)

// fiberConfig is the HTTP server's configuration, with the edge's limits.
func (s *Server) fiberConfig() fiber.Config {
	return fiber.Config{
		AppName:               "xroom",
		DisableStartupMessage: true,
		BodyLimit:             max(64<<10, s.frameLimit()),
		ErrorHandler:          s.errorHandler,
		// fasthttp's ReadTimeout runs from a request's first byte to the
		// end of its headers; tuneHTTP gives the body its own bound.
		ReadTimeout: s.cfg.HeaderTimeout,
		// An HTTP client that reads no answer for WriteWait is dropped, as
		// a WebSocket one is. (Set once per answer: an SSE stream, which
		// has no end, is taken over from the HTTP server; see sse.go.)
		WriteTimeout: s.cfg.WriteWait,
		IdleTimeout:  s.cfg.IdleTimeout,
		// Connections in HTTP at once (an upgraded one no longer counts);
		// beyond it fasthttp answers 503 and closes. 0: fasthttp's default.
		Concurrency: s.cfg.HTTPConns,
		// Release fasthttp's read buffer before a WebSocket upgrade: a
		// hijacked connection would otherwise keep it for its lifetime.
		ReduceMemoryUsage: true,
	}
}

// tuneHTTP sets what Fiber's configuration does not reach.
func (s *Server) tuneHTTP(srv *fasthttp.Server) {
	srv.HeaderReceived = func(*fasthttp.RequestHeader) fasthttp.RequestConfig {
		return fasthttp.RequestConfig{ReadTimeout: bodyTimeout}
	}
	srv.Logger = fasthttpLog{s}
	s.httpServer.Store(srv)
}

// fasthttpLog sends fasthttp's own lines (a refused connection, a request
// it could not parse) to the server's log, rate-limited: one per client
// error would let clients flood the log.
type fasthttpLog struct{ s *Server }

func (l fasthttpLog) Printf(format string, args ...any) {
	l.s.edge.logf(l.s.log, slog.LevelInfo, "http", "fasthttp: "+fmt.Sprintf(format, args...))
}

// WrapListener makes ln the server's edge (see netedge.Listener): accept
// errors are retried after a pause and logged at most once a second, and
// a connection that sends nothing within HeaderTimeout is closed.
func (s *Server) WrapListener(ln net.Listener) net.Listener {
	l := netedge.Wrap(ln, netedge.Options{
		FirstByte: s.cfg.HeaderTimeout,
		AcceptError: func(err error, pause time.Duration) {
			s.edge.acceptErrors.Add(1)
			s.edge.logf(s.log, slog.LevelWarn, "accept", "accepting a connection failed; retrying", "err", err, "pause", pause)
		},
		Silent: func(remote net.Addr) { s.timedOut(timeoutFirstByte, remote.String()) },
	})
	s.mu.Lock()
	s.listeners = append(s.listeners, l)
	s.mu.Unlock()
	return l
}

// TCPOpen is how many client connections (HTTP and WebSocket) the server's listeners hold.
func (s *Server) TCPOpen() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for _, l := range s.listeners {
		n += l.Open()
	}
	return n
}

// httpRefused is how many connections fasthttp refused for want of a slot.
func (s *Server) httpRefused() uint32 {
	if srv := s.httpServer.Load(); srv != nil {
		return srv.GetRejectedConnectionsCount()
	}
	return 0
}

// timedOut counts and logs a connection closed for silence.
func (s *Server) timedOut(kind timeoutKind, remote string) {
	s.edge.timeouts[kind].Add(1)
	s.edge.logf(s.log, slog.LevelInfo, "timeout."+timeoutNames[kind], "connection timed out; closing", "phase", timeoutNames[kind], "remote", remote)
}

// refused counts and logs a WebSocket handshake refused for capacity.
func (s *Server) refused(why refuseReason, remote string) {
	s.edge.refused[why].Add(1)
	s.edge.logf(s.log, slog.LevelInfo, "refused."+refuseNames[why], "WebSocket connection refused", "reason", refuseNames[why], "remote", remote)
}

// refuseHandshake answers a handshake refused for capacity with status and
// a JSON error, and counts and logs it.
func (s *Server) refuseHandshake(c *fiber.Ctx, why refuseReason, status int, message string) error {
	s.refused(why, c.Context().RemoteAddr().String())
	return apiError(c, status, refuseNames[why], message)
}
