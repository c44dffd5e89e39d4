package handlers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/handlers"
	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/internal/testkit"
	"github.com/xroom/xroom/internal/testkit/testserver"
	"github.com/xroom/xroom/internal/wiring"
	"github.com/xroom/xroom/streams"
)

func TestMain(m *testing.M) { os.Exit(redistest.Run(m)) }

// testServer is a full xroom built by app's wiring (internal/wiring,
// started by testserver) on a free port, with its own key prefix on the
// package's Redis.
type testServer struct {
	t      testing.TB
	base   string // http://127.0.0.1:PORT
	redis  *redistest.Server
	rdb    *redis.Client // the test's own client, for checks
	name   string        // the CLIENT SETNAME of the server's connections
	prefix string
	store  *streams.Store
	hub    *streams.Hub
	srv    *handlers.Server
}

type options struct {
	cfg      handlers.Config
	hub      streams.HubOptions
	presence streams.PresenceOptions
	rs       *redistest.Server
	// poolSize of the server's Redis client; 0 is go-redis's default.
	poolSize int
	// prefix shares another server's keys (a second instance); "" is a fresh one.
	prefix string
	// maxLen is the store's MAXLEN ~ cap; 0 is 10000.
	maxLen int64
	// sentinel, when set, is the address of a Sentinel watching rs as
	// "mymaster": the server's clients follow it (internal/failover).
	sentinel string
	// ackReplicas and ackTimeout are the store's AckReplicas and AckTimeout.
	ackReplicas int
	ackTimeout  time.Duration
	// storeHook, when set, goes on the server's Redis client; tailHook on
	// every client the hub's tail reads with.
	storeHook, tailHook redis.Hook
}

func startServer(t testing.TB, mods ...func(*options)) *testServer {
	t.Helper()
	o := &options{cfg: handlers.Config{HistoryOnJoin: 50, MaxMessageBytes: 4096}}
	for _, m := range mods {
		m(o)
	}
	if o.maxLen == 0 {
		o.maxLen = 10000
	}
	if o.hub.Block == 0 {
		o.hub.Block = time.Second
	}
	o.hub.Logger = quietLogger()
	if o.cfg.Logger == nil {
		o.cfg.Logger = quietLogger()
	}
	s := testserver.Start(t, testserver.Options{
		Options: wiring.Options{
			Store:    streams.Options{Prefix: o.prefix, MaxLen: o.maxLen, AckReplicas: o.ackReplicas, AckTimeout: o.ackTimeout},
			Hub:      o.hub,
			Presence: o.presence,
			Server:   o.cfg,
			Logger:   o.cfg.Logger,
		},
		Redis:     o.rs,
		Sentinel:  o.sentinel,
		PoolSize:  o.poolSize,
		StoreHook: o.storeHook,
		TailHook:  o.tailHook,
	})
	return &testServer{t: t, base: s.Base, redis: s.Redis, rdb: s.Redis.Client(t), name: s.Name, prefix: s.Prefix,
		store: s.Store, hub: s.Hub, srv: s.Server}
}

func quietLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func (ts *testServer) key(room string) string { return streams.Keys{Prefix: ts.prefix}.Messages(room) }

// append stores n messages "m0".."m(n-1)" from user and returns their IDs.
func (ts *testServer) append(room, user string, n int) []string {
	ts.t.Helper()
	ids := make([]string, n)
	for i := range n {
		id, _, err := ts.store.Append(context.Background(), room, streams.Message{User: user, Text: fmt.Sprintf("m%d", i)})
		if err != nil {
			ts.t.Fatal(err)
		}
		ids[i] = id.String()
	}
	return ids
}

// frame is any server frame.
type frame = testkit.Frame

type client struct {
	t    testing.TB
	conn *websocket.Conn
	resp *http.Response
	// skipPresence passes over presence frames (set for xroom.v1 clients:
	// most tests are about messages; presence tests clear it).
	skipPresence bool
}

// dial opens /ws/chat/{room}/?query; xroom selects the xroom.v1 subprotocol.
func (ts *testServer) dial(room, query string, xroom bool) *client {
	ts.t.Helper()
	c, err := ts.tryDial(room, query, xroom, nil)
	if err != nil {
		ts.t.Fatalf("dial %s?%s: %v", room, query, err)
	}
	return c
}

func (ts *testServer) tryDial(room, query string, xroom bool, header http.Header) (*client, error) {
	conn, resp, err := testkit.DialChat(ts.base, room, query, xroom, header)
	if err != nil {
		if resp != nil {
			return &client{t: ts.t, resp: resp}, err
		}
		return nil, err
	}
	c := &client{t: ts.t, conn: conn, resp: resp, skipPresence: xroom}
	ts.t.Cleanup(func() { conn.Close() })
	return c, nil
}

// nextWithin reads one frame, failing the test after d.
func (c *client) nextWithin(d time.Duration) frame {
	c.t.Helper()
	return testkit.ReadFrame(c.t, c.conn, d, c.skipPresence)
}

func (c *client) next() frame { c.t.Helper(); return c.nextWithin(10 * time.Second) }

// expect reads the next frame and checks its type.
func (c *client) expect(typ string) frame {
	c.t.Helper()
	return testkit.ExpectFrame(c.t, c.next(), typ)
}

// messages reads n message frames, failing on any other frame type.
func (c *client) messages(n int) []frame {
	c.t.Helper()
	out := make([]frame, 0, n)
	for len(out) < n {
		out = append(out, c.expect("message"))
	}
	return out
}

// silent checks that no frame arrives within d; read no more after it.
func (c *client) silent(d time.Duration) {
	c.t.Helper()
	testkit.Silent(c.t, c.conn, d, c.skipPresence)
}

func (c *client) send(v any) { c.t.Helper(); testkit.Send(c.t, c.conn, v) }

// ids returns the IDs of frames.
func ids(fs []frame) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.ID
	}
	return out
}

// isPresence tells a presence frame.
func isPresence(data []byte) bool {
	var f struct{ Type string }
	return json.Unmarshal(data, &f) == nil && f.Type == "presence"
}
