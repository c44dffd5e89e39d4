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

	"github.com/redis/go-redis/v9"

	"github.com/alicebob/miniredis/v2"

	"github.com/xroom/xroom/handlers"
	"github.com/xroom/xroom/internal/wiring"
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

	if cfg.PprofAddr != "" {
		stopPprof, err := servePprof(cfg.PprofAddr, log)
		if err != nil {
			return err
		}
		defer stopPprof()
	}

	cfg.Limits.MaxConns = budget.MaxConns
	webhook := cfg.Hooks.Webhook
	if embedded {
		webhook.Watch.ScanEvery = embeddedScanEvery
	}
	x := wiring.Build(rdb, blocking, wiring.Options{
		Store:    streams.Options{Prefix: cfg.Prefix, MaxLen: cfg.HistoryMaxLen, DedupWindow: cfg.DedupWindow, AckReplicas: cfg.AckReplicas, AckTimeout: cfg.AckTimeout},
		Hub:      streams.HubOptions{Buffer: cfg.TailBuffer, Mode: cfg.TailMode, NoReadBack: cfg.TailNoReadBack},
		Presence: streams.PresenceOptions{TTL: cfg.PresenceTTL, Heartbeat: cfg.PresenceHeartbeat, MaxMembers: cfg.PresenceMaxMembers},
		Webhook:  webhook,
		Publish:  cfg.Hooks.Publish,
		Server: handlers.Config{
			HistoryOnJoin:   cfg.HistoryOnJoin,
			MaxMessageBytes: cfg.MaxMessageBytes,
			APIKey:          cfg.APIKey,
			AllowedOrigins:  cfg.AllowedOrigins,
			AuthSecret:      []byte(cfg.AuthSecret),
			Limits:          cfg.Limits,
			Static:          static.Files,
			UnreadCap:       cfg.UnreadCap,
			HeaderTimeout:   cfg.HeaderTimeout,
			IdleTimeout:     cfg.IdleTimeout,
			HTTPConns:       budget.HTTPConns,
		},
		Logger: log,
	})

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		x.Stop(ctx) // stops the presence heartbeat and the hooks
		return fmt.Errorf("listen on ADDR=%s: %w", cfg.Addr, err)
	}
	log.Info("xroom is serving", "url", "http://"+displayAddr(ln.Addr()), "prefix", cfg.Prefix, "auth", cfg.AuthSecret != "")
	served := make(chan error, 1)
	go func() { served <- x.Serve(ln) }()

	select {
	case <-ctx.Done():
	case err := <-served:
		x.Stop(context.Background())
		return fmt.Errorf("serve: %w", err)
	}

	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	x.Stop(sctx)
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
