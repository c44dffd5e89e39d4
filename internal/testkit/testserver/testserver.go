// Package testserver starts a real xroom for tests: the instance app's
// run builds (internal/wiring), on a real redis-server (internal/redistest),
// listening on a free port of 127.0.0.1. It is apart from testkit because
// it imports handlers and streams, whose own tests use testkit.
package testserver

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/xroom/xroom/internal/failover"
	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/internal/testkit"
	"github.com/xroom/xroom/internal/wiring"
)

const (
	// tailPool is the tail client's pool: more than any test tails at
	// once, so that no test waits for a connection.
	tailPool = 1000
	// stopTimeout bounds the graceful stop at cleanup.
	stopTimeout = 5 * time.Second
)

// Options are the instance's (wiring.Options; Store.Prefix "" is a fresh
// prefix, Logger nil writes nothing) and how the test reaches Redis.
type Options struct {
	wiring.Options
	// Redis is the server; nil is the package's shared one.
	Redis *redistest.Server
	// Sentinel, when set, is the address of a Sentinel watching Redis as
	// "mymaster": both clients follow it (internal/failover), as app's do.
	Sentinel string
	// PoolSize of the command client; 0 is go-redis's default.
	PoolSize int
	// StoreHook, when set, goes on the command client; TailHook on both
	// clients (the tail blocks on its own client only without
	// notifications; with them it reads over the command client).
	StoreHook, TailHook redis.Hook
}

// Server is a running instance.
type Server struct {
	*wiring.Instance
	Base   string // http://127.0.0.1:PORT
	Redis  *redistest.Server
	Prefix string // its keys' prefix
	Name   string // the CLIENT SETNAME of its command connections ("-tail" added for the tail's)
}

// Start builds an instance through wiring.Build, serves it, and stops it
// at the test's cleanup.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	s := &Server{Redis: o.Redis, Prefix: o.Store.Prefix}
	if s.Redis == nil {
		s.Redis = redistest.Shared(t)
	}
	if s.Prefix == "" {
		s.Prefix = redistest.Prefix(t)
	}
	o.Store.Prefix = s.Prefix
	if o.Logger == nil {
		o.Logger = testkit.Quiet()
	}
	s.Name = "xroom-" + s.Prefix
	rdb := s.client(t, o.Sentinel, s.Name, o.PoolSize)
	tail := s.client(t, o.Sentinel, s.Name+"-tail", tailPool)
	if o.StoreHook != nil {
		rdb.AddHook(o.StoreHook)
	}
	if o.TailHook != nil {
		tail.AddHook(o.TailHook)
		rdb.AddHook(o.TailHook)
	}
	s.Instance = wiring.Build(rdb, tail, o.Options)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	s.Base = "http://" + ln.Addr().String()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		defer cancel()
		s.Stop(ctx)
	})
	return s
}

// client is a client of the server, or of the primary the Sentinel at
// sentinel names "mymaster", closed at cleanup.
func (s *Server) client(t testing.TB, sentinel, name string, pool int) redis.UniversalClient {
	if sentinel != "" {
		uo := &redis.UniversalOptions{Addrs: []string{sentinel}, MasterName: "mymaster", ClientName: name, PoolSize: pool, MaxActiveConns: pool, ContextTimeoutEnabled: true}
		f := failover.New(uo, testkit.Quiet())
		c := f.Client(uo)
		t.Cleanup(func() { c.Close(); _ = f.Close() })
		return c
	}
	// No CLIENT MAINT_NOTIFICATIONS, as app: go-redis's fallback after
	// Redis refuses it races between connections made at once.
	c := redis.NewClient(&redis.Options{Addr: s.Redis.Addr, ClientName: name, PoolSize: pool, MaxActiveConns: pool, ContextTimeoutEnabled: true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}})
	t.Cleanup(func() { c.Close() })
	return c
}
