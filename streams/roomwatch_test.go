package streams_test

import (
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/internal/testkit"
	"github.com/xroom/xroom/streams"
)

// heardRooms collects what a RoomWatch reports.
type heardRooms struct {
	mu    sync.Mutex
	count map[string]int
}

func (h *heardRooms) changed(room string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.count == nil {
		h.count = map[string]int{}
	}
	h.count[room]++
}

func (h *heardRooms) times(room string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.count[room]
}

// waitFor waits until room has been reported more than `after` times.
func (h *heardRooms) waitFor(t *testing.T, room string, after int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for h.times(room) <= after {
		if time.Now().After(deadline) {
			t.Fatalf("room %q not reported within %v (reported %d times)", room, within, h.times(room))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// xadd writes as redis-cli would: no rooms list, no client_id.
func (e *env) xadd(room, user, text string) {
	e.t.Helper()
	if err := e.rdb.XAdd(ctx10(e.t), &redis.XAddArgs{Stream: e.key(room), Values: []any{"user", user, "message", text}}).Err(); err != nil {
		e.t.Fatal(err)
	}
}

// With keyspace notifications the watch hears every XADD by a pattern on
// the doorbell's connection: rooms nobody subscribes to, written with
// redis-cli, and rooms that existed before it started (the first listing).
// Other prefixes and other keys of a room are not reported.
func TestRoomWatchHearsEveryRoom(t *testing.T) {
	h := newHubEnv(t, streams.HubOptions{Mode: streams.ModeNotify})
	h.xadd("before", "cli", "written before the watch")
	other := h.prefix + "x"
	var heard heardRooms
	w := h.hub.WatchRooms(heard.changed, streams.RoomWatchOptions{})
	t.Cleanup(w.Close)
	heard.waitFor(t, "before", 0, 10*time.Second)
	if w.Mode() != streams.ModeNotify {
		t.Fatalf("mode %v, want notify", w.Mode())
	}
	for _, room := range []string{"cli-only", "a.b-c_d"} {
		n := heard.times(room)
		h.xadd(room, "cli", "hello")
		heard.waitFor(t, room, n, 5*time.Second)
	}
	n := heard.times("api")
	h.add("api", streams.Message{User: "u", Text: "through the store"})
	heard.waitFor(t, "api", n, 5*time.Second)

	// No tail was started for any of them.
	if r := h.hub.Rooms(); r != 0 {
		t.Errorf("the watch tails %d rooms", r)
	}
	ctx := ctx10(t)
	h.rdb.XAdd(ctx, &redis.XAddArgs{Stream: streams.Keys{Prefix: other}.Messages("elsewhere"), Values: []any{"user", "u", "message", "m"}})
	h.rdb.XAdd(ctx, &redis.XAddArgs{Stream: streams.Keys{Prefix: h.prefix}.Dead("api"), Values: []any{"id", "1-1"}})
	h.rdb.Set(ctx, streams.Keys{Prefix: h.prefix}.Messages("notastream"), "x", 0)
	time.Sleep(200 * time.Millisecond)
	if heard.times("elsewhere") != 0 || heard.times("notastream") != 0 {
		t.Errorf("reported rooms of another prefix or not streams: %v", heard.count)
	}
}

// When the pattern's connection is cut, the watch reports every room it
// knows again once it is back (entries added meanwhile are not missed),
// and hears new XADDs again.
func TestRoomWatchAfterReconnect(t *testing.T) {
	h := newHubEnv(t, streams.HubOptions{Mode: streams.ModeNotify})
	var heard heardRooms
	w := h.hub.WatchRooms(heard.changed, streams.RoomWatchOptions{})
	t.Cleanup(w.Close)
	h.xadd("known", "cli", "one")
	heard.waitFor(t, "known", 0, 5*time.Second)
	n := heard.times("known")
	if err := h.rdb.ClientKillByFilter(ctx10(t), "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	// A room created while the pattern was off (here: before the watch
	// reconnected, unknown to it) is found by the resync's listing.
	h.xadd("while-off", "cli", "nobody heard this")
	heard.waitFor(t, "known", n, 10*time.Second) // the resync
	heard.waitFor(t, "while-off", 0, 10*time.Second)
	n = heard.times("fresh")
	h.xadd("fresh", "cli", "after the reconnect")
	heard.waitFor(t, "fresh", n, 10*time.Second)
}

// Without keyspace notifications (the blocking fallback, the embedded
// Redis) the watch reads the rooms list, touched by every xroom append,
// and lists the streams now and then for rooms only redis-cli wrote to.
func TestRoomWatchFallbackPolls(t *testing.T) {
	srv := redistest.Start(t, redistest.WithArgs("--rename-command", "CONFIG", ""))
	h := newHubEnv(t, streams.HubOptions{}, srv)
	var heard heardRooms
	w := h.hub.WatchRooms(heard.changed, streams.RoomWatchOptions{PollEvery: 50 * time.Millisecond, ScanEvery: 400 * time.Millisecond})
	t.Cleanup(w.Close)
	deadline := time.Now().Add(10 * time.Second)
	for w.Mode() == streams.ModeAuto && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if w.Mode() == streams.ModeNotify || w.Mode() == streams.ModeAuto {
		t.Fatalf("mode %v on a Redis that refuses CONFIG", w.Mode())
	}
	h.add("api", streams.Message{User: "u", Text: "through the store"})
	start := time.Now()
	heard.waitFor(t, "api", 0, 2*time.Second)
	t.Logf("an xroom append was reported after %v", time.Since(start).Round(time.Millisecond))
	h.xadd("cli-only", "cli", "hello")
	start = time.Now()
	heard.waitFor(t, "cli-only", 0, 5*time.Second)
	t.Logf("a redis-cli XADD was reported after %v", time.Since(start).Round(time.Millisecond))
}

// On a Cluster each primary publishes the events of its own slots: the
// watch listens on every primary, and finds rooms on each.
func TestRoomWatchOnCluster(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	cc := c.Client(t)
	prefix := redistest.Prefix(t)
	store := streams.NewStore(cc, streams.Options{Prefix: prefix})
	blocking := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs, PoolSize: 2})
	hub := streams.NewHub(store, blocking, streams.HubOptions{Encode: testFrame, Logger: testkit.Quiet()})
	t.Cleanup(func() { _ = hub.Close() })
	var heard heardRooms
	w := hub.WatchRooms(heard.changed, streams.RoomWatchOptions{})
	t.Cleanup(w.Close)
	deadline := time.Now().Add(10 * time.Second)
	for w.Mode() == streams.ModeAuto && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if w.Mode() != streams.ModeNotify {
		t.Fatalf("mode %v on a Cluster, want notify", w.Mode())
	}
	time.Sleep(300 * time.Millisecond) // every primary's pattern confirmed
	nodes := map[string]bool{}
	for i := range 12 {
		room := "r" + strconv.Itoa(i)
		key := streams.Keys{Prefix: prefix}.Messages(room)
		if err := cc.XAdd(ctx10(t), &redis.XAddArgs{Stream: key, Values: []any{"user", "cli", "message", "hi"}}).Err(); err != nil {
			t.Fatal(err)
		}
		node, err := cc.MasterForKey(ctx10(t), key)
		if err != nil {
			t.Fatal(err)
		}
		nodes[node.Options().Addr] = true
		heard.waitFor(t, room, 0, 5*time.Second)
	}
	if len(nodes) < 2 {
		t.Fatalf("the rooms were all on %v; want several primaries", nodes)
	}
}
