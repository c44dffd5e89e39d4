package streams_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/internal/testkit"
	"github.com/xroom/xroom/streams"
)

// namedHubEnv is a hub whose command and tail clients have names of their
// own and bounded pools, so CLIENT LIST can count what it holds.
func namedHubEnv(t *testing.T, srv *redistest.Server, pool int, opt streams.HubOptions) (*hubEnv, string) {
	t.Helper()
	prefix := redistest.Prefix(t)
	cmdName := "cmd-" + prefix
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, ClientName: cmdName, PoolSize: pool, MaxActiveConns: pool, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })
	e := &env{t: t, srv: srv, rdb: srv.Client(t), prefix: prefix, store: streams.NewStore(rdb, streams.Options{Prefix: prefix})}
	h := &hubEnv{env: e, encoded: map[streams.ID]int{}, tailName: "tail-" + prefix}
	h.blocking = redis.NewClient(&redis.Options{Addr: srv.Addr, ClientName: h.tailName, PoolSize: 4, MaxActiveConns: 4, MaintNotificationsConfig: noMaint})
	opt.Encode = testFrame
	if opt.Logger == nil {
		opt.Logger = testkit.Quiet()
	}
	h.hub = streams.NewHub(e.store, h.blocking, opt)
	t.Cleanup(func() { _ = h.hub.Close() })
	return h, cmdName
}

// connsNamed counts the connections CLIENT LIST shows under any of names.
func connsNamed(t *testing.T, rdb *redis.Client, names ...string) int {
	t.Helper()
	list, err := rdb.ClientList(ctx10(t)).Result()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, name := range names {
		n += strings.Count(list, " name="+name+" ")
	}
	return n
}

// subscribeAll subscribes to rooms room0..room(n-1), a few at a time.
func (h *hubEnv) subscribeAll(n int) []*subscriber {
	h.t.Helper()
	subs := make([]*subscriber, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			subs[i] = h.subscribe("room" + strconv.Itoa(i))
		}()
	}
	wg.Wait()
	return subs
}

// An instance's Redis connections do not grow with its rooms: 1,000 rooms
// cost the command pool and one subscriber connection, and every room
// still gets its messages live.
func TestTailConnectionsDoNotGrowWithRooms(t *testing.T) {
	srv := redistest.Shared(t)
	redistest.RequireReal(t, srv) // CLIENT LIST, keyspace notifications
	const pool, rooms = 10, 1000
	logs := &testkit.SyncBuffer{}
	h, cmdName := namedHubEnv(t, srv, pool, streams.HubOptions{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	subs := h.subscribeAll(rooms)
	if m := h.hub.Mode(); m != streams.ModeNotify {
		t.Fatalf("mode %v on a real Redis, want notify", m)
	}
	ids := make([]streams.ID, rooms)
	var wg sync.WaitGroup
	for w := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < rooms; i += 20 {
				id, _, err := h.store.Append(context.Background(), "room"+strconv.Itoa(i), streams.Message{User: "u", Text: "hi"})
				if err != nil {
					t.Error(err)
					return
				}
				ids[i] = id
			}
		}()
	}
	wg.Wait()
	for i, s := range subs {
		deadline := time.Now().Add(20 * time.Second)
		for s.sub.Head().Less(ids[i]) {
			if time.Now().After(deadline) {
				st := h.hub.Stats()
				numsub := h.rdb.PubSubNumSub(ctx10(t), "__keyspace@0__:"+h.key("room"+strconv.Itoa(i))).Val()
				t.Fatalf("room%d: the tail is at %v, not %v, after 20s (reads %d, rings %d, errors %d, reconnects %d, subscribers of its channel %v)\n%s",
					i, s.sub.Head(), ids[i], st.TailReads.Load(), st.Rings.Load(), st.TailErrors.Load(), st.Reconnects.Load(), numsub, logs.String())
			}
			time.Sleep(5 * time.Millisecond)
		}
		s.readUntil(ids[i], 10)
		if !slices.Equal(s.ids(), []streams.ID{ids[i]}) {
			t.Fatalf("room%d got %v, want %v", i, s.ids(), ids[i])
		}
	}
	if n := connsNamed(t, h.rdb, cmdName, h.tailName); n > pool+4 {
		t.Fatalf("%d Redis connections for %d rooms, want at most the pool (%d) + 4", n, rooms, pool)
	}
	if n := connsNamed(t, h.rdb, h.tailName); n != 1 {
		t.Errorf("%d tail connections, want the one subscriber", n)
	}
	if r := h.hub.Stats().Rings.Load(); r < rooms {
		t.Errorf("%d rings for %d messages: the doorbell did not ring", r, rooms)
	}
}

// An XADD typed at redis-cli (no xroom involved) rings the room too.
func TestTailHearsARawXADD(t *testing.T) {
	h := newHubEnv(t, streams.HubOptions{})
	s := h.subscribe("r")
	id, err := h.rdb.XAdd(ctx10(t), &redis.XAddArgs{Stream: h.key("r"), Values: []string{"user", "cli", "message", "typed by hand"}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := streams.ParseID(id)
	s.readUntil(want, 10)
	if !bytes.Contains(s.got[0].Frame, []byte("typed by hand")) {
		t.Fatalf("frame %q", s.got[0].Frame)
	}
}

// The subscriber connection killed again and again under load loses
// nothing: every room is read from its last ID once it is back. The sweep
// is off, so only that recovery can deliver what the kills hid.
func TestTailSubscriberKilledLosesNothing(t *testing.T) {
	srv := redistest.Start(t)
	h := newHubEnv(t, streams.HubOptions{SweepEvery: time.Hour}, srv)
	const rooms, per = 20, 100
	subs := h.subscribeAll(rooms)
	want := make([][]streams.ID, rooms)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for k := range rooms * per {
			i := k % rooms
			id, _, err := h.store.Append(context.Background(), "room"+strconv.Itoa(i), streams.Message{User: "u", Text: strconv.Itoa(k)})
			if err != nil {
				t.Error(err)
				return
			}
			want[i] = append(want[i], id)
			if k%10 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	for range 5 {
		time.Sleep(30 * time.Millisecond)
		if err := h.rdb.Do(ctx10(t), "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
			t.Fatal(err)
		}
	}
	<-done
	for i, s := range subs {
		s.readUntil(want[i][per-1], 1000)
		if !slices.Equal(s.ids(), want[i]) {
			t.Fatalf("room%d got %d entries, want %d in order", i, len(s.ids()), len(want[i]))
		}
	}
	if n := h.hub.Stats().Reconnects.Load(); n == 0 {
		t.Fatal("the subscriber connection was never lost: the test proves nothing")
	}
}

// A Redis restart heals every tailed room.
func TestTailHealsEveryRoomAfterRedisRestart(t *testing.T) {
	srv := redistest.Start(t, redistest.WithAOF())
	h := newHubEnv(t, streams.HubOptions{SweepEvery: time.Hour}, srv)
	const rooms = 30
	subs := h.subscribeAll(rooms)
	srv.Stop(t)
	testkit.Eventually(t, 10*time.Second, "the tail noticed the outage", func() bool { return h.hub.Stats().Reconnects.Load() > 0 })
	srv.Restart(t)
	for i, s := range subs {
		var id streams.ID
		testkit.Eventually(t, 10*time.Second, "append after restart", func() bool {
			var err error
			id, _, err = h.store.Append(context.Background(), "room"+strconv.Itoa(i), streams.Message{User: "u", Text: "after"})
			return err == nil
		})
		s.readUntil(id, 10)
		if !slices.Equal(s.ids(), []streams.ID{id}) {
			t.Fatalf("room%d got %v, want %v", i, s.ids(), id)
		}
	}
}

// A Redis that refuses CONFIG (renamed away, as managed services do) gets
// the fallback tail, named in the log with the setting to make; it holds
// the connection bound and delivers, also to a room added while the group
// is blocked (Block is far longer than the test waits).
func TestTailFallsBackWhenConfigIsRefused(t *testing.T) {
	srv := redistest.Start(t, redistest.WithArgs("--rename-command", "CONFIG", `""`))
	logs := &testkit.SyncBuffer{}
	h, cmdName := namedHubEnv(t, srv, 10, streams.HubOptions{Block: time.Minute, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	subs := h.subscribeAll(100)
	if m := h.hub.Mode(); m != streams.ModeBlocking {
		t.Fatalf("mode %v with CONFIG refused, want blocking", m)
	}
	for _, want := range []string{"notify-keyspace-events", "mode=blocking"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("the log does not say %q:\n%s", want, logs.String())
		}
	}
	late := h.subscribe("late")
	time.Sleep(50 * time.Millisecond) // the groups are blocked again
	for i, s := range append(subs, late) {
		room := "late"
		if i < len(subs) {
			room = "room" + strconv.Itoa(i)
		}
		id, _ := h.add(room, streams.Message{User: "u", Text: "hi"})
		s.readUntil(id, 10)
	}
	if n := connsNamed(t, h.rdb, cmdName, h.tailName); n > 10+4 {
		t.Fatalf("%d connections, want at most the pool + 4", n)
	}
}

// The embedded Redis (no CONFIG, no notifications) works as before.
func TestTailOnEmbeddedRedis(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	store := streams.NewStore(rdb, streams.Options{})
	hub := streams.NewHub(store, redis.NewClient(&redis.Options{Addr: mr.Addr(), MaintNotificationsConfig: noMaint}), streams.HubOptions{Encode: testFrame, Logger: testkit.Quiet()})
	t.Cleanup(func() { _ = hub.Close() })
	h := &hubEnv{env: &env{t: t, rdb: rdb, store: store, prefix: "chat"}, hub: hub}
	a := h.subscribe("a")
	id, _ := h.add("a", streams.Message{User: "u", Text: "one"})
	a.readUntil(id, 10)
	b := h.subscribe("b") // joins a group that is already reading
	id, _ = h.add("b", streams.Message{User: "u", Text: "two"})
	b.readUntil(id, 10)
	if m := hub.Mode(); m != streams.ModeBlocking {
		t.Fatalf("mode %v on the embedded Redis, want blocking", m)
	}
}

// When Redis refuses the tail's connection (maxclients), the room is not
// left in silence: its subscribers are woken and told unavailable, Health
// says why, and both heal once Redis takes connections again.
func TestTailStallIsToldNotSilent(t *testing.T) {
	srv := redistest.Start(t)
	h := newHubEnv(t, streams.HubOptions{StallAfter: 300 * time.Millisecond, SweepEvery: time.Hour}, srv)
	s := h.subscribe("r")
	id, _ := h.add("r", streams.Message{User: "u", Text: "before"})
	s.readUntil(id, 10)
	// Connections already open stay; every new one is refused.
	if err := h.rdb.ConfigSet(ctx10(t), "maxclients", "1").Err(); err != nil {
		t.Fatal(err)
	}
	if err := h.rdb.Do(ctx10(t), "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "Health reports the stall", func() bool { return errors.Is(h.hub.Health(), streams.ErrUnavailable) })
	s.waitNote()
	if _, _, err := s.sub.Next(ctx10(t), s.cursor, make([]*streams.Entry, 0, 10)); !errors.Is(err, streams.ErrUnavailable) {
		t.Fatalf("Next on a stalled room = %v, want ErrUnavailable", err)
	}
	if _, err := h.hub.Subscribe(ctx10(t), "r", func() {}); !errors.Is(err, streams.ErrUnavailable) {
		t.Fatalf("Subscribe to a stalled room = %v, want ErrUnavailable", err)
	}
	if !strings.Contains(h.hub.Health().Error(), "notification connection") {
		t.Errorf("Health = %v, want the reason", h.hub.Health())
	}

	if err := h.rdb.ConfigSet(ctx10(t), "maxclients", "10000").Err(); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "Health heals", func() bool { return h.hub.Health() == nil })
	id, _ = h.add("r", streams.Message{User: "u", Text: "after"})
	s.readUntil(id, 10)
}

func TestWithNotifyFlags(t *testing.T) {
	for in, want := range map[string]string{"": "Kt", "Ex": "ExKt", "AKE": "AKE", "Kx": "Kxt", "KEA": "KEA", "tK": "tK"} {
		if got := streams.WithNotifyFlags(in); got != want {
			t.Errorf("withNotifyFlags(%q) = %q, want %q", in, got, want)
		}
	}
}

// A room's slot migrated to another node of a real Cluster while its
// members chat: nothing is lost, and live delivery resumes through the
// new owner's doorbell (the sweep is off, so nothing else delivers).
func TestTailFollowsASlotMigration(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	cc := c.Client(t)
	h := clusterHub(t, c, cc)
	hub, store, prefix := h.hub, h.store, h.prefix
	s := h.subscribe("mig")
	if m := hub.Mode(); m != streams.ModeNotify {
		t.Fatalf("mode %v on a Cluster, want notify", m)
	}
	key := streams.Keys{Prefix: prefix}.Messages("mig")

	var mu sync.Mutex
	var acked []streams.ID
	stopSending := sendUntilStopped(5*time.Millisecond, func(k int) {
		m := streams.Message{User: "u", Text: strconv.Itoa(k), ClientID: "c" + strconv.Itoa(k)}
		for { // a resilient client: resend with the same client_id until acked
			id, _, err := store.Append(context.Background(), "mig", m)
			if err == nil {
				mu.Lock()
				if len(acked) == 0 || acked[len(acked)-1] != id {
					acked = append(acked, id)
				}
				mu.Unlock()
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	time.Sleep(300 * time.Millisecond)
	from, to := migrateSlotOf(t, c, cc, key)
	t.Logf("slot of %s moved from %s to %s", key, from, to)
	time.Sleep(300 * time.Millisecond)
	rings := hub.Stats().Rings.Load()
	time.Sleep(1500 * time.Millisecond) // the doorbell follows within remapEvery
	stopSending()
	mu.Lock()
	want := append([]streams.ID(nil), acked...)
	mu.Unlock()
	s.readUntil(want[len(want)-1], 1000)
	if !slices.Equal(s.ids(), want) {
		t.Fatalf("got %d entries, want the %d acked in order", len(s.ids()), len(want))
	}
	if hub.Stats().Rings.Load() == rings {
		t.Fatal("no ring after the migration: live delivery did not resume through the new owner")
	}
}

// migrateSlotOf moves key's slot to another master, keys and all, as
// redis-cli --cluster reshard does, and returns the two nodes' addresses.
func migrateSlotOf(t *testing.T, c *redistest.Cluster, cc *redis.ClusterClient, key string) (from, to string) {
	t.Helper()
	ctx := ctx10(t)
	slot, err := cc.ClusterKeySlot(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	owner, err := cc.MasterForKey(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	from = owner.Options().Addr
	for _, a := range c.Addrs {
		if a != from {
			to = a
			break
		}
	}
	node := func(addr string) *redis.Client {
		cl := redis.NewClient(&redis.Options{Addr: addr})
		t.Cleanup(func() { _ = cl.Close() })
		return cl
	}
	src, dst := node(from), node(to)
	srcID, dstID := src.ClusterMyID(ctx).Val(), dst.ClusterMyID(ctx).Val()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(dst.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", srcID).Err())
	must(src.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", dstID).Err())
	host, port, _ := strings.Cut(to, ":")
	for {
		keys, err := src.ClusterGetKeysInSlot(ctx, int(slot), 100).Result()
		must(err)
		if len(keys) == 0 {
			break
		}
		args := []any{"MIGRATE", host, port, "", 0, 5000, "KEYS"}
		for _, k := range keys {
			args = append(args, k)
		}
		must(src.Do(ctx, args...).Err())
	}
	for _, a := range c.Addrs {
		must(node(a).Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", dstID).Err())
	}
	return from, fmt.Sprint(to)
}

// A room's buffer starts small and grows to Buffer as entries come: a
// quiet room (most direct messages) holds a few pointers, not Buffer, and
// a busy one still serves its newest Buffer entries from memory.
func TestTailBufferGrowsAsNeeded(t *testing.T) {
	h := newHubEnv(t, streams.HubOptions{Buffer: 64})
	s := h.subscribe("r")
	s.cursor = s.sub.Head()
	ids := h.addN("r", "u", 50)
	s.waitHead(ids[49])
	s.readUntil(ids[49], 100)
	if !slices.Equal(s.ids(), ids) {
		t.Fatalf("got %d entries, want the 50 added", len(s.ids()))
	}
	if n := h.hub.Stats().CatchUps.Load(); n != 0 {
		t.Fatalf("%d catch-ups from Redis: 50 entries did not stay in a buffer of 64", n)
	}
	more := h.addN("r", "u", 100) // beyond Buffer: the oldest leave memory
	s.waitHead(more[99])
	late := &subscriber{t: t, sub: s.sub, notes: s.notes, cursor: ids[0]}
	late.readUntil(more[99], 200)
	if n := h.hub.Stats().CatchUps.Load(); n == 0 {
		t.Fatal("a cursor older than the buffer was served from memory")
	}
}

// After a CLUSTER FAILOVER the demoted node still answers, but a replica
// publishes no keyspace notification for the writes it replicates: the
// doorbell must move to the promoted node, and live delivery go on, with
// no sweep to fall back on. Appends run through the failover, as a chat's
// would, some through another instance.
func TestTailFollowsClusterFailover(t *testing.T) {
	c := redistest.StartClusterWithReplicas(t, 3)
	other := c.Client(t) // another instance's appends
	h := clusterHub(t, c, c.Client(t))
	store, prefix := h.store, h.prefix
	s := h.subscribe("cfo")
	key := streams.Keys{Prefix: prefix}.Messages("cfo")
	others := streams.NewStore(other, streams.Options{Prefix: prefix})

	var mu sync.Mutex
	var last streams.ID
	stopSending := sendUntilStopped(2*time.Millisecond, func(k int) {
		st := store
		if k%2 == 1 {
			st = others
		}
		m := streams.Message{User: "u", Text: strconv.Itoa(k), ClientID: "c" + strconv.Itoa(k)}
		if id, _, err := st.Append(context.Background(), "cfo", m); err == nil {
			mu.Lock()
			if last.Less(id) {
				last = id
			}
			mu.Unlock()
		}
	})
	time.Sleep(300 * time.Millisecond)
	var replica string
	testkit.Eventually(t, 10*time.Second, "the room's primary has a replica", func() bool { _, replica = c.PrimaryOf(t, key); return replica != "" })
	c.Node(t, replica).CLI(t, "CLUSTER", "FAILOVER")
	testkit.Eventually(t, 10*time.Second, "the replica promoted", func() bool { return redistest.IsPrimary(replica) })
	time.Sleep(2 * time.Second)
	stopSending()
	mu.Lock()
	want := last
	mu.Unlock()
	s.readUntil(want, 1000)
}

// clusterHub is a hub tailing Cluster c through cc, with no sweep to
// hide a silent doorbell.
func clusterHub(t *testing.T, c *redistest.Cluster, cc *redis.ClusterClient) *hubEnv {
	prefix := redistest.Prefix(t)
	store := streams.NewStore(cc, streams.Options{Prefix: prefix})
	blocking := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs, PoolSize: 2})
	hub := streams.NewHub(store, blocking, streams.HubOptions{Encode: testFrame, Logger: testkit.Quiet(), SweepEvery: time.Hour})
	t.Cleanup(func() { _ = hub.Close() })
	return &hubEnv{env: &env{t: t, store: store, prefix: prefix}, hub: hub}
}

// sendUntilStopped calls send(0), send(1)… in a goroutine, pause apart,
// until stop is called; stop returns once the last send has.
func sendUntilStopped(pause time.Duration, send func(k int)) (stop func()) {
	stopped, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for k := 0; ; k++ {
			send(k)
			select {
			case <-stopped:
				return
			case <-time.After(pause):
			}
		}
	}()
	return func() { close(stopped); <-done }
}
