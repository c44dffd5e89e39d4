package hooks_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/xroom/xroom/hooks"
	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/internal/testkit"
	"github.com/xroom/xroom/streams"
)

func TestMain(m *testing.M) { os.Exit(redistest.Run(m)) }

const secret = "test-secret"

func ctx10(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// env is a hub on Redis with a key prefix of its own.
type env struct {
	t      *testing.T
	srv    *redistest.Server
	rdb    *redis.Client // the test's own client
	prefix string
	store  *streams.Store
	hub    *streams.Hub
}

func newEnv(t *testing.T, srv *redistest.Server, prefix string, mode streams.TailMode) *env {
	t.Helper()
	if prefix == "" {
		prefix = redistest.Prefix(t)
	}
	e := &env{t: t, srv: srv, rdb: srv.Client(t), prefix: prefix}
	e.store = streams.NewStore(srv.Client(t), streams.Options{Prefix: prefix, MaxLen: 100000})
	blocking := redis.NewClient(&redis.Options{Addr: srv.Addr, PoolSize: 4, MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}}) // as app: see handlers tests
	e.hub = streams.NewHub(e.store, blocking, streams.HubOptions{Logger: testkit.Quiet(), Mode: mode})
	t.Cleanup(func() { _ = e.hub.Close() })
	return e
}

// start starts webhooks to url on the env's hub, closed at cleanup.
func (e *env) start(url string, mod func(*hooks.WebhookOptions)) *hooks.Webhooks {
	e.t.Helper()
	opt := hooks.WebhookOptions{URL: url, Secret: secret, Backoff: 20 * time.Millisecond, ClaimAfter: 2 * time.Second,
		Timeout: 5 * time.Second, Logger: testkit.Quiet(), From: streams.HookFromStart,
		Watch: streams.RoomWatchOptions{PollEvery: 50 * time.Millisecond, ScanEvery: 300 * time.Millisecond}}
	if mod != nil {
		mod(&opt)
	}
	w := hooks.StartWebhooks(e.hub, opt)
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = w.Close(ctx)
	})
	return w
}

func (e *env) key(room string) string { return streams.Keys{Prefix: e.prefix}.Messages(room) }

// append stores a message as the WebSocket and the HTTP API do.
func (e *env) append(room, text string) string {
	e.t.Helper()
	id, _, err := e.store.Append(ctx10(e.t), room, streams.Message{User: "alice", Text: text})
	if err != nil {
		e.t.Fatal(err)
	}
	return id.String()
}

// xadd stores a message as redis-cli would: XADD with the same fields,
// nothing else (no rooms list).
func (e *env) xadd(room, text string) string {
	e.t.Helper()
	id, err := e.rdb.XAdd(ctx10(e.t), &redis.XAddArgs{Stream: e.key(room), Values: []any{"user", "cli", "message", text}}).Result()
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

// pending is the room's XPENDING count for the webhook group.
func (e *env) pending(room string) int64 {
	e.t.Helper()
	p, err := e.rdb.XPending(ctx10(e.t), e.key(room), streams.HookGroupName).Result()
	if err != nil {
		e.t.Fatal(err)
	}
	return p.Count
}
