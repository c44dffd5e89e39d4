// Package wiring builds one xroom instance from its options and its two
// Redis clients: the store, the hub, presence, the hooks, the HTTP server,
// and the metrics registry that serves them all. app calls Build with what
// it read from the environment; tests (internal/testkit/testserver) call it
// with theirs, so that a test's server is wired as the binary's is.
package wiring

import (
	"context"
	"errors"
	"log/slog"
	"net"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/handlers"
	"github.com/xroom/xroom/hooks"
	"github.com/xroom/xroom/streams"
)

// Options is what an instance is built from. A component's Logger left
// nil is Logger.
type Options struct {
	Store    streams.Options
	Hub      streams.HubOptions // Encode and EncodeEvent are handlers'
	Presence streams.PresenceOptions
	Webhook  hooks.WebhookOptions // URL "": no webhooks
	Publish  hooks.PublishOptions // URL "": no publish hook
	// Server is the handlers' configuration. Metrics is set here, and
	// PublishHook and Hooks when Publish and Webhook make them (a test may
	// give its own).
	Server handlers.Config
	Logger *slog.Logger
}

// Instance is one wired xroom: what Build made, for the caller to serve,
// inspect (tests) and stop.
type Instance struct {
	Store    *streams.Store
	Hub      *streams.Hub
	Presence *streams.Presence  // the server's: its Shutdown closes it
	Webhooks *hooks.Webhooks    // nil without Options.Webhook.URL
	Publish  *hooks.PublishHook // nil without Options.Publish.URL
	Server   *handlers.Server
	// Metrics is the registry served at /metrics, every collector in it.
	Metrics *prometheus.Registry
	// Redis times the calls of both clients and counts their errors.
	RedisMetrics *streams.RedisMetrics

	app *fiber.App
	log *slog.Logger
}

// Build wires an instance over rdb (commands) and blocking (the tail's
// reads). It starts presence's heartbeat and, when configured, webhook
// delivery; nothing listens until Serve. Stop undoes it all.
func Build(rdb, blocking redis.UniversalClient, o Options) *Instance {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	orLog := func(l **slog.Logger) {
		if *l == nil {
			*l = log
		}
	}
	orLog(&o.Hub.Logger)
	orLog(&o.Presence.Logger)
	orLog(&o.Webhook.Logger)
	orLog(&o.Publish.Logger)
	orLog(&o.Server.Logger)

	x := &Instance{log: log, RedisMetrics: redisMetrics(rdb, blocking)}
	x.Store = streams.NewStore(rdb, o.Store)
	o.Hub.Encode, o.Hub.EncodeEvent = handlers.EncodeMessage, handlers.EncodeEvent
	x.Hub = streams.NewHub(x.Store, blocking, o.Hub)
	// The heartbeat runs until Server.Shutdown, which removes this
	// instance's members (see handlers/presence.go).
	x.Presence = streams.NewPresence(x.Store, o.Presence)
	x.Webhooks, x.Publish = startHooks(x.Hub, o.Webhook, o.Publish, log)
	x.Metrics = prometheus.NewRegistry()
	if x.Publish != nil {
		o.Server.PublishHook = x.Publish
	}
	if x.Webhooks != nil {
		o.Server.Hooks = x.Webhooks
	}
	o.Server.Metrics = x.Metrics
	x.Server = handlers.New(x.Hub, x.Presence, o.Server)
	x.registerMetrics()
	x.app = x.Server.App()
	return x
}

// Serve serves HTTP, the WebSocket and the event stream on ln until Stop.
// The edge retries failed accepts rather than return (handlers/edge.go).
func (x *Instance) Serve(ln net.Listener) error {
	return x.app.Listener(x.Server.WrapListener(ln))
}

// Stop stops gracefully within ctx: no new connections, every open one
// told to go and waited for, idle HTTP connections ended, then the last
// webhook batches sent (after the last message is stored: its batch may
// still go out) and the hub closed.
func (x *Instance) Stop(ctx context.Context) {
	httpDone := make(chan error, 1)
	go func() { httpDone <- x.app.ShutdownWithContext(ctx) }() // stops accepting, ends idle HTTP connections
	if err := x.Server.Shutdown(ctx); err != nil {
		x.log.Warn("some connections did not close in time", "err", err)
	}
	if err := <-httpDone; err != nil && !errors.Is(err, context.DeadlineExceeded) {
		x.log.Warn("HTTP shutdown", "err", err)
	}
	if x.Webhooks != nil {
		if err := x.Webhooks.Close(ctx); err != nil {
			x.log.Warn("webhook batches were still in flight; another instance sends them after WEBHOOK_CLAIM_AFTER", "err", err)
		}
	}
	_ = x.Hub.Close()
}

// redisMetrics times the Redis calls of both clients and counts their
// errors (hooks installed on each), from their first call on.
func redisMetrics(rdb, blocking redis.UniversalClient) *streams.RedisMetrics {
	rm := streams.NewRedisMetrics()
	rdb.AddHook(rm.Hook())
	blocking.AddHook(rm.BlockingHook())
	return rm
}

// registerMetrics is the one place every collector served at /metrics is
// registered: the Go and process collectors, Redis timings and errors, the
// hub's, the server's, and the hooks' when they are on. The registry is
// the instance's own: no global state.
func (x *Instance) registerMetrics() {
	reg := x.Metrics
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), x.RedisMetrics)
	reg.MustRegister(x.Hub.Collectors()...)
	reg.MustRegister(x.Server.Collectors()...)
	if x.Webhooks != nil {
		reg.MustRegister(x.Webhooks.Collectors()...)
	}
	if x.Publish != nil {
		reg.MustRegister(x.Publish.Collectors()...)
	}
}
