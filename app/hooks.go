package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/xroom/xroom/handlers"
	"github.com/xroom/xroom/hooks"
	"github.com/xroom/xroom/streams"
)

// embeddedScanEvery: on the embedded Redis (no keyspace notifications)
// rooms only redis-cli wrote to are found by listing the streams this
// often; its few keys make that cheap, and a developer trying redis-cli
// should not wait the default 30 s.
const embeddedScanEvery = 2 * time.Second

// hooksCommand is `xroom hooks replay ROOM`: it sends the room's dead
// letters to WEBHOOK_URL again and removes those the webhook takes. It
// reads the server's configuration (environment and .env) and returns
// the exit status: 0 when none are left, 1 when some could not be sent.
func hooksCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) != 2 || args[0] != "replay" || !handlers.ValidRoom(args[1]) {
		fmt.Fprintln(stderr, "usage: xroom hooks replay ROOM")
		fmt.Fprintln(stderr, "Sends the room's webhook dead letters (CHAT_PREFIX:{ROOM}:hooks:dead) to WEBHOOK_URL again, oldest first,")
		fmt.Fprintln(stderr, "and removes each batch the webhook acknowledges. Reads REDIS_URL, WEBHOOK_URL and the rest from the environment or .env.")
		return 2
	}
	room := args[1]
	sent, err := replay(ctx, getenv, room)
	if err != nil {
		fmt.Fprintf(stderr, "xroom hooks replay %s: %v (%d sent before that)\n", room, err, sent)
		return 1
	}
	fmt.Fprintf(stdout, "sent %d dead letters of room %s to the webhook; none are left\n", sent, room)
	return 0
}

func replay(ctx context.Context, getenv func(string) string, room string) (int, error) {
	getenv, err := withDotEnv(getenv)
	if err != nil {
		return 0, err
	}
	cfg, err := loadConfig(getenv)
	if err != nil {
		return 0, err
	}
	if cfg.Hooks.Webhook.URL == "" {
		return 0, errors.New("WEBHOOK_URL is not set: nowhere to send the dead letters")
	}
	if cfg.RedisURL == "" {
		return 0, errors.New("REDIS_URL is not set: the dead letters are in the server's Redis")
	}
	opts, err := cfg.redisOptions()
	if err != nil {
		return 0, fmt.Errorf("REDIS_URL: %w", err)
	}
	opts.ClientName = "xroom-replay"
	opts.PoolSize, opts.MaxActiveConns = 2, 2
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	rdb, blocking, stop := newRedisClients(opts, opts, quiet) // blocking is never used: it connects to nothing
	defer stop()
	defer rdb.Close()
	defer blocking.Close()
	store := streams.NewStore(rdb, streams.Options{Prefix: cfg.Prefix, MaxLen: cfg.HistoryMaxLen})
	sender := hooks.NewSender(cfg.Hooks.Webhook.URL, cfg.Hooks.Webhook.Secret, cfg.Hooks.Webhook.Timeout, 1)
	return hooks.Replay(ctx, store, sender, room, cfg.Hooks.Webhook.Batch)
}
