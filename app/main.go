// Command xroom serves realtime chat rooms kept in Redis Streams.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/alicebob/miniredis/v2"

	"github.com/xroom/xroom/handlers"
	"github.com/xroom/xroom/netedge"
	"github.com/xroom/xroom/static"
	"github.com/xroom/xroom/streams"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "token" { // xroom token -sub NAME: a development token
		os.Exit(tokenCommand(os.Args[2:], os.Getenv, os.Stdout, os.Stderr))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) > 1 && os.Args[1] == "hooks" { // xroom hooks replay ROOM: send dead letters again
		code := hooksCommand(ctx, os.Args[2:], os.Getenv, os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	if err := run(ctx, os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "xroom:", err)
		os.Exit(1)
	}
}

// run serves until ctx ends, then stops gracefully.
func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	getenv, err := withDotEnv(getenv)
	if err != nil {
		return err
	}
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stdout)
	redis.SetLogger(redisLog{log})
	budget, err := spendDescriptors(cfg, log)
	if err != nil {
		return err
	}

	embedded := cfg.RedisURL == ""
	if embedded {
		mr, err := startEmbedded(cfg.EmbeddedRedisAddr)
		if err != nil {
			return err
		}
		defer mr.Close()
		log.Warn("no REDIS_URL: using an embedded in-memory Redis; history lives in memory only and is lost on exit",
			"addr", mr.Addr(), "redis-cli", "redis-cli -p "+mr.Port())
		cfg.RedisURL = "redis://" + mr.Addr()
		if cfg.TailMode == streams.ModeAuto {
			cfg.TailMode = streams.ModeBlocking // it has no keyspace notifications
		}
	}
	opts, err := cfg.redisOptions()
	if err != nil {
		return fmt.Errorf("REDIS_URL: %w", err)
	}
	tailOpts := *opts
	tailOpts.ClientName = "xroom-tail"
	tailOpts.PoolSize, tailOpts.MaxActiveConns = budget.Tails, budget.Tails
	tailOpts.MaxIdleConns = budget.Tails
	rdb, blocking, stopFollowing := newRedisClients(opts, &tailOpts, log)
	defer stopFollowing()
	defer rdb.Close()

	if err := rdb.Ping(ctx).Err(); err != nil {
		// Not fatal: xroom starts and heals once Redis answers (see /readyz).
		log.Warn("Redis does not answer yet", "err", err)
	}

	rm := redisMetrics(rdb, blocking)
	if cfg.PprofAddr != "" {
		stopPprof, err := servePprof(cfg.PprofAddr, log)
		if err != nil {
			return err
		}
		defer stopPprof()
	}

	store := streams.NewStore(rdb, streams.Options{Prefix: cfg.Prefix, MaxLen: cfg.HistoryMaxLen, DedupWindow: cfg.DedupWindow, AckReplicas: cfg.AckReplicas, AckTimeout: cfg.AckTimeout})
	hub := streams.NewHub(store, blocking, streams.HubOptions{Encode: handlers.EncodeMessage, EncodeEvent: handlers.EncodeEvent, Buffer: cfg.TailBuffer, Mode: cfg.TailMode, Logger: log})
	// The server's presence heartbeat runs until srv.Shutdown, which
	// removes this instance's members (see handlers/presence.go).
	presence := streams.NewPresence(store, streams.PresenceOptions{TTL: cfg.PresenceTTL, Heartbeat: cfg.PresenceHeartbeat, MaxMembers: cfg.PresenceMaxMembers, Logger: log})
	webhooks, publish := startHooks(cfg, hub, log, embedded)
	closeHooks := func(ctx context.Context) {
		if webhooks != nil {
			if err := webhooks.Close(ctx); err != nil {
				log.Warn("webhook batches were still in flight; another instance sends them after WEBHOOK_CLAIM_AFTER", "err", err)
			}
		}
	}
	cfg.Limits.MaxConns = budget.MaxConns
	metrics := prometheus.NewRegistry()
	srv := handlers.New(hub, presence, handlers.Config{
		PublishHook:     publishHook(publish),
		Hooks:           hooksStatus(webhooks),
		HistoryOnJoin:   cfg.HistoryOnJoin,
		MaxMessageBytes: cfg.MaxMessageBytes,
		APIKey:          cfg.APIKey,
		AllowedOrigins:  cfg.AllowedOrigins,
		AuthSecret:      []byte(cfg.AuthSecret),
		Limits:          cfg.Limits,
		Static:          static.Files,
		Logger:          log,
		UnreadCap:       cfg.UnreadCap,
		Metrics:         metrics,
		HeaderTimeout:   cfg.HeaderTimeout,
		IdleTimeout:     cfg.IdleTimeout,
		HTTPConns:       budget.HTTPConns,
	})
	registerMetrics(metrics, rm, hub, srv, webhooks, publish)
	app := srv.App()

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		_ = srv.Shutdown(ctx) // stops the presence heartbeat
		closeHooks(ctx)
		hub.Close()
		return fmt.Errorf("listen on ADDR=%s: %w", cfg.Addr, err)
	}
	log.Info("xroom is serving", "url", "http://"+displayAddr(ln.Addr()), "prefix", cfg.Prefix, "auth", cfg.AuthSecret != "")
	served := make(chan error, 1)
	// The edge: failed accepts are retried, never fatal (handlers/edge.go).
	go func() { served <- app.Listener(srv.WrapListener(ln)) }()

	select {
	case <-ctx.Done():
	case err := <-served:
		_ = srv.Shutdown(context.Background())
		closeHooks(context.Background())
		hub.Close()
		return fmt.Errorf("serve: %w", err)
	}

	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	httpDone := make(chan error, 1)
	go func() { httpDone <- app.ShutdownWithContext(sctx) }() // stops accepting, ends idle HTTP connections
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("some connections did not close in time", "err", err)
	}
	if err := <-httpDone; err != nil && !errors.Is(err, context.DeadlineExceeded) {
		log.Warn("HTTP shutdown", "err", err)
	}
	closeHooks(sctx) // after the last message is stored: its batch may still go out
	_ = hub.Close()
	log.Info("stopped")
	return nil
}

// spendDescriptors raises the soft descriptor limit to the hard one, logs
// both, and plans how they are spent (config.planDescriptors).
func spendDescriptors(cfg config, log *slog.Logger) (netedge.Budget, error) {
	soft, hard, err := netedge.RaiseFileLimit()
	if err != nil {
		log.Warn("cannot raise the descriptor limit (RLIMIT_NOFILE)", "soft", soft, "hard", hard, "err", err)
	}
	b, err := cfg.planDescriptors(soft)
	if err != nil {
		return b, err
	}
	log.Info("descriptor limit", "soft", soft, "hard", hard, "max_conns", b.MaxConns, "http_conns", b.HTTPConns,
		"redis_conns", b.Redis, "room_tails", b.Tails)
	return b, nil
}

func newLogger(cfg config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// startEmbedded starts miniredis on addr, or on any free local port when
// addr is taken (a real Redis may already own 6379).
func startEmbedded(addr string) (*miniredis.Miniredis, error) {
	mr := miniredis.NewMiniRedis()
	err := mr.StartAddr(addr)
	if err == nil {
		return mr, nil
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("start embedded Redis on EMBEDDED_REDIS_ADDR=%s: %w", addr, err)
	}
	mr = miniredis.NewMiniRedis()
	if err := mr.StartAddr("127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("start embedded Redis: %w", err)
	}
	return mr, nil
}

// displayAddr turns ":8080" into "localhost:8080" for a clickable URL.
func displayAddr(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}
