// Package handlers serves xroom over HTTP: the WebSocket chat endpoint, the
// JSON API and the browser client. Redis is reached only through streams.
package handlers

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/contrib/websocket"
	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/filesystem"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/xroom/xroom/netedge"
	"github.com/xroom/xroom/streams"
)

// Subprotocol selects the full xroom dialect; without it a connection gets
// only frames that carry "message" (what Django Channels' tutorial client prints).
const Subprotocol = "xroom.v1"

// Config is what the handlers need to know.
type Config struct {
	HistoryOnJoin   int      // entries replayed to a client without since
	MaxMessageBytes int      // longest message, in bytes
	APIKey          string   // bearer key for POST /api/rooms/{room}/messages; empty disables it
	AllowedOrigins  []string // browser origins allowed to open WebSockets besides the server's own; "*" allows any
	AuthSecret      []byte   // HS256 key of user tokens (AUTH_SECRET); empty: no authentication (see auth.go)
	Limits          Limits   // rates, connections per address, replay size (see limits.go)
	Static          fs.FS    // the browser client, served at /
	Logger          *slog.Logger
	// PingPeriod and PongWait override the keep-alive timing (tests).
	PingPeriod, PongWait time.Duration
	// PresenceTTL, PresenceHeartbeat and PresenceMaxMembers: see streams.PresenceOptions (0 = defaults).
	PresenceTTL, PresenceHeartbeat time.Duration
	PresenceMaxMembers             int
	// UnreadCap: unread counts are exact up to it, "more" above (UNREAD_CAP;
	// 0: streams.DefaultUnreadCap).
	UnreadCap int
	// WriteWait and RedisTimeout override writeWait and redisTimeout (tests).
	WriteWait, RedisTimeout time.Duration
	// SSEKeepAlive and SSERetry override sseKeepAlive and sseRetry (tests).
	SSEKeepAlive, SSERetry time.Duration
	// HeaderTimeout and IdleTimeout bound silent HTTP connections (edge.go;
	// 0: DefaultHeaderTimeout, DefaultIdleTimeout). HTTPConns caps the
	// connections still in HTTP (0: fasthttp's default); see netedge.Budget.
	HeaderTimeout, IdleTimeout time.Duration
	HTTPConns                  int
	// Metrics, when set, gets the server's and the hub's metrics registered
	// and is served at GET /metrics.
	Metrics *prometheus.Registry
	// PublishHook, when set, is asked before each message is stored, from
	// the WebSocket and the HTTP API (hooks.go).
	PublishHook PublishHook
	// Hooks, when set, reports webhook delivery at GET /api/hooks.
	Hooks HooksStatus
}

// Server holds the routes and the open chat connections.
type Server struct {
	hub      *streams.Hub
	presence *streams.Presence // its heartbeat runs from New to Shutdown
	cfg      Config
	log      *slog.Logger

	guard *guard // limits across connections

	mu       sync.Mutex
	conns    map[chatConn]struct{} // WebSocket sessions and SSE streams
	stopping bool
	running  sync.WaitGroup
	stats    *serverStats
	// gorillaBuffers backs gorilla's write buffer, never used: xroom
	// writes every frame itself (see App).
	gorillaBuffers sync.Pool

	edge       edgeStats // edgestats.go
	listeners  []*netedge.Listener
	httpServer atomic.Pointer[fasthttp.Server]
}

// New returns a Server that reads and writes rooms through hub.
func New(hub *streams.Hub, cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = 4096
	}
	if cfg.PongWait <= 0 {
		cfg.PongWait = pongWait
	}
	if cfg.WriteWait <= 0 {
		cfg.WriteWait = writeWait
	}
	if cfg.RedisTimeout <= 0 {
		cfg.RedisTimeout = redisTimeout
	}
	if cfg.SSEKeepAlive <= 0 {
		cfg.SSEKeepAlive = sseKeepAlive
	}
	if cfg.SSERetry <= 0 {
		cfg.SSERetry = sseRetry
	}
	if cfg.HeaderTimeout <= 0 {
		cfg.HeaderTimeout = DefaultHeaderTimeout
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.UnreadCap <= 0 {
		cfg.UnreadCap = streams.DefaultUnreadCap
	}
	if cfg.PingPeriod <= 0 || cfg.PingPeriod >= cfg.PongWait {
		cfg.PingPeriod = cfg.PongWait * 9 / 10
	}
	presence := streams.NewPresence(hub.Store(), streams.PresenceOptions{TTL: cfg.PresenceTTL, Heartbeat: cfg.PresenceHeartbeat, MaxMembers: cfg.PresenceMaxMembers, Logger: cfg.Logger})
	s := &Server{hub: hub, presence: presence, cfg: cfg, log: cfg.Logger, conns: map[chatConn]struct{}{}, guard: newGuard(cfg.Limits), stats: newServerStats()}
	if cfg.Metrics != nil {
		s.registerMetrics(cfg.Metrics)
	}
	return s
}

// frameLimit is the transport limit on a client frame: the largest message
// fully JSON-escaped (\u00XX is 6 bytes a byte) plus room for the other
// fields. A larger frame closes the connection with 1009.
func (s *Server) frameLimit() int { return s.cfg.MaxMessageBytes*6 + 1024 }

// App builds the Fiber app with every route.
func (s *Server) App() *fiber.App {
	app := fiber.New(s.fiberConfig()) // edge.go
	s.tuneHTTP(app.Server())
	app.Use(securityHeaders)
	app.Get("/healthz", func(c *fiber.Ctx) error { return c.JSON(fiber.Map{"status": "ok"}) })
	app.Get("/readyz", s.readyz)
	if s.cfg.Metrics != nil {
		app.Get("/metrics", metricsHandler(s.cfg.Metrics))
	}

	api := app.Group("/api")
	api.Get("/rooms", s.authRead, s.listRooms)
	api.Get("/rooms/:room/messages", s.validRoom, s.authRead, s.history)
	api.Post("/rooms/:room/messages", s.validRoom, s.publish)
	api.Options("/rooms/:room/messages", s.preflight) // cors.go
	api.Get("/rooms/:room/presence", s.validRoom, s.authRead, s.presenceAPI)
	s.readRoutes(api) // reads.go
	api.Get("/hooks", s.hooksStatus)
	api.Use(func(c *fiber.Ctx) error { return fiber.ErrNotFound })

	app.Get("/ws/chat/:room", s.validRoom, s.beforeUpgrade, websocket.New(s.serveWS, websocket.Config{
		Subprotocols:     []string{Subprotocol},
		HandshakeTimeout: 10 * time.Second,
		// Frames are read by wsread.go and written by session.wire: the
		// library's buffers are only allocated, so keep them small.
		ReadBufferSize:  libraryReadBuffer,
		WriteBufferPool: &s.gorillaBuffers,
	}))
	app.Get("/sse/chat/:room", s.validRoom, s.beforeStream, s.serveSSE) // sse.go
	if s.cfg.Static != nil {
		app.Use("/", filesystem.New(filesystem.Config{Root: http.FS(s.cfg.Static), Index: "index.html"}))
	}
	return app
}

// apiError answers {"error": {"code", "message"}}.
func apiError(c *fiber.Ctx, status int, code, message string) error {
	return c.Status(status).JSON(fiber.Map{"error": fiber.Map{"code": code, "message": message}})
}

func (s *Server) errorHandler(c *fiber.Ctx, err error) error {
	var fe *fiber.Error
	if errors.As(err, &fe) {
		code := strings.ToLower(strings.ReplaceAll(http.StatusText(fe.Code), " ", "_"))
		if code == "" {
			code = "error"
		}
		switch fe.Code {
		case fiber.StatusRequestTimeout: // from fasthttp: headers or body too slow
			s.timedOut(timeoutRequest, c.Context().RemoteAddr().String())
		case fiber.StatusUpgradeRequired:
			return upgradeRequired(c, code, fe.Message)
		}
		return apiError(c, fe.Code, code, fe.Message)
	}
	s.log.Error("request failed", "method", c.Method(), "path", c.Path(), "err", err)
	return apiError(c, fiber.StatusInternalServerError, "internal", "internal error")
}

func (s *Server) validRoom(c *fiber.Ctx) error {
	room := c.Params("room")
	if !ValidRoom(room) {
		return apiError(c, fiber.StatusBadRequest, "bad_room", "a room name is 1 to 100 characters from A-Z a-z 0-9 . _ -")
	}
	return c.Next()
}

// serveWS runs one WebSocket session: it subscribes to the room, starts the
// writer for the replay, and reads client frames until the end.
func (s *Server) serveWS(c *websocket.Conn) {
	req := c.Locals(joinKey).(*joinRequest)
	room := req.room
	sess := &session{
		feed:    req.feed(s),
		conn:    c.Conn,
		control: make(chan []byte, controlQueue),
	}
	sess.compat = c.Subprotocol() != Subprotocol
	sess.readConn = streams.RandomName(8)
	sess.sink = &sess.wire
	sess.ctx, sess.cancel = context.WithCancel(context.Background())
	defer sess.cancel()
	sess.expires.Store(tokenDeadline(req.claims))
	sess.log = sessionLog{base: s.log, room: room, user: sess.user, remote: c.RemoteAddr().String()}

	sess.wire.conn = rawConn(c.Conn)
	sess.wire.wait = s.cfg.WriteWait
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
	sess.subscribed.Store(true) // after sess.sub is set: notify may kick now
	sess.kick()                 // the writer sends the history
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
