// Package handlers serves xroom over HTTP: the WebSocket chat endpoint, the
// JSON API and the browser client. Redis is reached only through streams.
package handlers

import (
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
	// Metrics, when set, is served at GET /metrics. The server registers
	// nothing itself: the caller registers Collectors (and the hub's).
	Metrics prometheus.Gatherer
	// PublishHook, when set, is asked before each message is stored, from
	// the WebSocket and the HTTP API (hooks.go).
	PublishHook PublishHook
	// Hooks, when set, reports webhook delivery at GET /api/hooks.
	Hooks HooksStatus
}

// Server holds the routes and the open chat connections.
type Server struct {
	hub      *streams.Hub
	presence *streams.Presence // the server's from New: Shutdown closes it
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

// orDefault sets an option left at zero (or below) to its default.
func orDefault[T int | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// New returns a Server that reads and writes rooms through hub and keeps
// its connections' presence in presence. presence is the server's from
// here on: Shutdown closes it once the last connection has left, so that
// what the connections left behind is removed after them.
func New(hub *streams.Hub, presence *streams.Presence, cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	orDefault(&cfg.MaxMessageBytes, 4096)
	orDefault(&cfg.PongWait, pongWait)
	orDefault(&cfg.WriteWait, writeWait)
	orDefault(&cfg.RedisTimeout, redisTimeout)
	orDefault(&cfg.SSEKeepAlive, sseKeepAlive)
	orDefault(&cfg.SSERetry, sseRetry)
	orDefault(&cfg.HeaderTimeout, DefaultHeaderTimeout)
	orDefault(&cfg.IdleTimeout, DefaultIdleTimeout)
	orDefault(&cfg.UnreadCap, streams.DefaultUnreadCap)
	if cfg.PingPeriod <= 0 || cfg.PingPeriod >= cfg.PongWait {
		cfg.PingPeriod = cfg.PongWait * 9 / 10
	}
	return &Server{hub: hub, presence: presence, cfg: cfg, log: cfg.Logger, conns: map[chatConn]struct{}{}, guard: newGuard(cfg.Limits), stats: newServerStats()}
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
		// Frames are read by wsread.go and written by the session's writer (writer.go): the
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
