package handlers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/streams"
)

// pframe is a presence frame.
type pframe struct {
	Type    string `json:"type"`
	Room    string `json:"room"`
	Event   string `json:"event"`
	User    string `json:"user"`
	Members []struct {
		User string `json:"user"`
	} `json:"members"`
	Partial bool `json:"partial"`
}

func (f pframe) String() string {
	if f.Event == "snapshot" {
		return "snapshot " + strings.Join(f.users(), ",")
	}
	return f.Event + " " + f.User
}

func (f pframe) users() []string {
	out := []string{}
	for _, m := range f.Members {
		out = append(out, m.User)
	}
	return out
}

// fastPresence makes presence expire and heartbeat quickly.
func fastPresence(o *options) {
	o.presence.TTL = time.Second
	o.presence.Heartbeat = 100 * time.Millisecond
}

// member connects user in the xroom dialect, sees presence frames, and
// checks the start: ready, then the snapshot (returned).
func (ts *testServer) member(room, user string) (*client, pframe) {
	ts.t.Helper()
	c := ts.dial(room, "user="+url.QueryEscape(user), true)
	c.skipPresence = false
	c.expect("ready") // these rooms have no history
	snap := c.nextPresence()
	if snap.Event != "snapshot" || snap.Room != room {
		ts.t.Fatalf("%s: after ready got %v, want the snapshot", user, snap)
	}
	return c, snap
}

// nextPresence reads the next frame, which must be a presence frame.
// joinInTurn connects users to room one after another: each sees its own
// join, then every earlier one sees it, before the next connects.
func (ts *testServer) joinInTurn(room string, users ...string) []*client {
	ts.t.Helper()
	cs := make([]*client, len(users))
	for i, u := range users {
		cs[i], _ = ts.member(room, u)
		cs[i].expectEvent("join " + u)
		for _, c := range cs[:i] {
			c.expectEvent("join " + u)
		}
	}
	return cs
}

func (c *client) nextPresence() pframe {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, data, err := c.conn.ReadMessage()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	var f pframe
	if err := json.Unmarshal(data, &f); err != nil || f.Type != "presence" {
		c.t.Fatalf("got %s, want a presence frame", data)
	}
	if f.Event != "snapshot" && (f.Members != nil || f.User == "") {
		c.t.Fatalf("malformed presence frame %s", data)
	}
	return f
}

// expectEvent reads the next frame: presence event "EVENT USER".
func (c *client) expectEvent(want string) {
	c.t.Helper()
	if f := c.nextPresence(); f.String() != want {
		c.t.Fatalf("got presence %q, want %q", f, want)
	}
}

// collect reads presence frames until it has seen each of want once, in
// any order; any other frame fails.
func (c *client) collect(want ...string) {
	c.t.Helper()
	left := slices.Clone(want)
	for len(left) > 0 {
		f := c.nextPresence()
		i := slices.Index(left, f.String())
		if i < 0 {
			c.t.Fatalf("got presence %q, want one of %q", f, left)
		}
		left = slices.Delete(left, i, i+1)
	}
}

func (ts *testServer) events(room string) []string {
	ts.t.Helper()
	msgs, err := ts.rdb.XRange(context.Background(), streams.Keys{Prefix: ts.prefix}.Events(room), "-", "+").Result()
	if err != nil {
		ts.t.Fatal(err)
	}
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = fmt.Sprint(m.Values["type"], " ", m.Values["user"])
	}
	return out
}

func countOf(lines []string, line string) int {
	n := 0
	for _, l := range lines {
		if l == line {
			n++
		}
	}
	return n
}

type presenceJSON struct {
	Room    string `json:"room"`
	Members []struct {
		User string `json:"user"`
	} `json:"members"`
}

func (ts *testServer) presenceAPI(room string) []string {
	ts.t.Helper()
	var p presenceJSON
	if code := do(ts.t.(*testing.T), "GET", ts.base+"/api/rooms/"+room+"/presence", "", "", &p); code != 200 || p.Room != room {
		ts.t.Fatalf("GET presence of %s: %d %+v", room, code, p)
	}
	out := []string{}
	for _, m := range p.Members {
		out = append(out, m.User)
	}
	return out
}

func TestPresenceSnapshotJoinAndLeave(t *testing.T) {
	ts := startServer(t)
	a, snap := ts.member("lobby", "alice")
	if got := snap.users(); !slices.Equal(got, []string{"alice"}) {
		t.Fatalf("alice's snapshot %v", got)
	}
	a.expectEvent("join alice")
	b, snap := ts.member("lobby", "bob")
	if got := snap.users(); !slices.Equal(got, []string{"alice", "bob"}) {
		t.Fatalf("bob's snapshot %v", got)
	}
	b.expectEvent("join bob")
	a.expectEvent("join bob")
	b.conn.Close()
	a.expectEvent("leave bob")
	if got := ts.presenceAPI("lobby"); !slices.Equal(got, []string{"alice"}) {
		t.Fatalf("API members %v", got)
	}
	// Messages still flow, and are not presence.
	a.send(`{"message":"hi"}`)
	if f := a.expect("message"); f.Message != "hi" {
		t.Fatalf("got %+v", f)
	}
}

func TestPresenceTwoTabsAreOneMember(t *testing.T) {
	ts := startServer(t)
	in := ts.joinInTurn("lobby", "bob", "alice")
	bob, tab1 := in[0], in[1]
	tab2, snap := ts.member("lobby", "alice")
	if got := snap.users(); !slices.Equal(got, []string{"alice", "bob"}) {
		t.Fatalf("second tab's snapshot %v, want alice once", got)
	}
	if got := ts.presenceAPI("lobby"); !slices.Equal(got, []string{"alice", "bob"}) {
		t.Fatalf("API members with two tabs: %v", got)
	}
	// carol is a marker: nothing about alice comes before her join.
	carol, _ := ts.member("lobby", "carol")
	bob.expectEvent("join carol")
	tab2.expectEvent("join carol")
	tab1.conn.Close()
	carol.conn.Close()
	bob.expectEvent("leave carol") // no leave for alice: her second tab is open
	tab2.conn.Close()
	bob.expectEvent("leave alice")
	ev := ts.events("lobby")
	if countOf(ev, "join alice") != 1 || countOf(ev, "leave alice") != 1 {
		t.Fatalf("events %v: want one join and one leave for alice", ev)
	}
}

func TestTypingReachesOthersNotSelf(t *testing.T) {
	ts := startServer(t)
	in := ts.joinInTurn("lobby", "alice", "bob")
	a, b := in[0], in[1]

	start := time.Now()
	for range 5 {
		a.send(`{"type":"typing"}`)
	}
	b.expectEvent("typing alice")
	b.send(`{"type":"typing"}`)
	// alice's next frame is bob typing: no echo of her own, no ack, no error.
	a.expectEvent("typing bob")
	a.send(`{"message":"done","client_id":"t-1"}`)
	if f := a.next(); f.Type != "ack" && f.Type != "message" {
		t.Fatalf("got %+v", f)
	}
	elapsed := time.Since(start)
	// At most one typing event per connection per 2 s gets through.
	if n, most := countOf(ts.events("lobby"), "typing alice"), 1+int(elapsed/(2*time.Second)); n < 1 || n > most {
		t.Fatalf("5 typing frames in %v stored %d typing events, want 1 to %d", elapsed, n, most)
	}
}

func TestCompatibleDialectGetsNoPresence(t *testing.T) {
	ts := startServer(t)
	a, _ := ts.member("lobby", "alice")
	a.expectEvent("join alice")
	compat := ts.dial("lobby", "user=carl", false)
	a.expectEvent("join carl")
	b, _ := ts.member("lobby", "bob")
	b.send(`{"type":"typing"}`)
	a.collect("join bob", "typing bob")
	b.conn.Close()
	a.expectEvent("leave bob")
	a.send(`{"message":"last"}`)
	// carl is present (others see him) but gets only the message.
	if got := ts.presenceAPI("lobby"); !slices.Equal(got, []string{"alice", "carl"}) {
		t.Fatalf("members %v", got)
	}
	if f := compat.expect("message"); f.Message != "last" {
		t.Fatalf("compat got %+v", f)
	}
	a.expect("message")
	compat.send(`{"type":"typing"}`) // accepted silently in this dialect too
	a.expectEvent("typing carl")
}

// A member of a crashed instance (here written by hand with a short
// expiry) fades out, with one leave, while two instances sweep; a second
// instance on the same Redis sees the same presence.
func TestPresenceSharedByInstancesAndCrashedMembersFade(t *testing.T) {
	srvA := startServer(t, fastPresence)
	srvB := startServer(t, fastPresence, func(o *options) { o.prefix = srvA.prefix; o.rs = srvA.redis })
	key := streams.Keys{Prefix: srvA.prefix}.Presence("lobby")
	if err := srvA.rdb.ZAdd(context.Background(), key, redis.Z{Score: float64(time.Now().Add(1500 * time.Millisecond).UnixMilli()), Member: "ghost:x1"}).Err(); err != nil {
		t.Fatal(err)
	}
	a, snap := srvA.member("lobby", "alice")
	if got := snap.users(); !slices.Equal(got, []string{"alice", "ghost"}) {
		t.Fatalf("alice's snapshot %v", got)
	}
	a.expectEvent("join alice")
	b, snap := srvB.member("lobby", "bob")
	if got := snap.users(); !slices.Contains(got, "alice") || !slices.Contains(got, "bob") {
		t.Fatalf("bob's snapshot on the second instance %v", got)
	}
	if got := srvB.presenceAPI("lobby"); !slices.Contains(got, "alice") {
		t.Fatalf("second instance's API %v", got)
	}
	b.collect("join bob", "leave ghost")
	a.collect("join bob", "leave ghost")
	// Both instances keep sweeping: still exactly one leave.
	time.Sleep(300 * time.Millisecond)
	if ev := srvA.events("lobby"); countOf(ev, "leave ghost") != 1 {
		t.Fatalf("events %v: want one leave for ghost", ev)
	}
	// Nothing more reached the clients: the next presence is carol's join.
	srvB.member("lobby", "carol")
	a.expectEvent("join carol")
	b.expectEvent("join carol")
	if got := srvA.presenceAPI("lobby"); !slices.Equal(got, []string{"alice", "bob", "carol"}) {
		t.Fatalf("members %v", got)
	}
	// Heartbeats keep everyone present well past the TTL.
	time.Sleep(1500 * time.Millisecond)
	if got := srvB.presenceAPI("lobby"); !slices.Equal(got, []string{"alice", "bob", "carol"}) {
		t.Fatalf("members after the TTL %v", got)
	}
}

func TestShutdownRemovesTheInstancesMembers(t *testing.T) {
	srvA := startServer(t)
	srvB := startServer(t, func(o *options) { o.prefix = srvA.prefix; o.rs = srvA.redis })
	b, _ := srvB.member("lobby", "bob")
	b.expectEvent("join bob")
	a, _ := srvA.member("lobby", "alice")
	b.expectEvent("join alice")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		// alice answers the 1001 close so that shutdown is quick.
		for {
			if _, _, err := a.conn.ReadMessage(); err != nil {
				_ = a.conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, ""))
				return
			}
		}
	}()
	if err := srvA.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	b.expectEvent("leave alice")
	zs := srvB.rdb.ZRange(context.Background(), streams.Keys{Prefix: srvA.prefix}.Presence("lobby"), 0, -1).Val()
	if len(zs) != 1 || !strings.HasPrefix(zs[0], "bob:") {
		t.Fatalf("presence after shutdown %v, want only bob", zs)
	}
}

// A presence failure never breaks messaging: the connection gets ready and
// its acks, and presence heals on the next heartbeat.
func TestPresenceFailureDoesNotBreakMessaging(t *testing.T) {
	ts := startServer(t, fastPresence)
	key := streams.Keys{Prefix: ts.prefix}.Presence("lobby")
	// A key of the wrong type makes every presence call fail.
	if err := ts.rdb.Set(context.Background(), key, "not a set", 0).Err(); err != nil {
		t.Fatal(err)
	}
	a := ts.dial("lobby", "user=alice", true)
	a.skipPresence = false
	a.expect("ready")
	a.send(`{"type":"typing"}`)
	a.send(`{"message":"still works","client_id":"p-1"}`)
	for got := 0; got < 2; got++ {
		f := a.next() // no snapshot (it failed), no error for typing
		if f.Type != "ack" && f.Type != "message" || f.ClientID != "p-1" {
			t.Fatalf("got %+v, want the ack and the message", f)
		}
	}
	var apiE apiErr
	if code := do(t, "GET", ts.base+"/api/rooms/lobby/presence", "", "", &apiE); code != 503 || apiE.Error.Code != "redis_unavailable" {
		t.Fatalf("presence API with a broken key: %d %+v", code, apiE)
	}
	ts.rdb.Del(context.Background(), key)
	a.expectEvent("join alice") // the heartbeat put her back
	if got := ts.presenceAPI("lobby"); !slices.Equal(got, []string{"alice"}) {
		t.Fatalf("members %v", got)
	}
}

func TestPresenceAPI(t *testing.T) {
	rs := redistest.Start(t)
	ts := startServer(t, func(o *options) { o.rs = rs })
	if got := ts.presenceAPI("empty"); len(got) != 0 {
		t.Fatalf("empty room: %v", got)
	}
	ts.member("lobby", "bob")
	ts.member("lobby", "alice")
	ts.member("lobby", "alice")
	// An expired member (a crashed instance's, not yet swept) is not listed.
	ts.rdb.ZAdd(context.Background(), streams.Keys{Prefix: ts.prefix}.Presence("lobby"), redis.Z{Score: float64(time.Now().Add(-time.Second).UnixMilli()), Member: "ghost:x"})
	if got := ts.presenceAPI("lobby"); !slices.Equal(got, []string{"alice", "bob"}) {
		t.Fatalf("members %v", got)
	}
	var e apiErr
	if code := do(t, "GET", ts.base+"/api/rooms/bad%20room/presence", "", "", &e); code != 400 || e.Error.Code != "bad_room" {
		t.Fatalf("bad room: %d %+v", code, e)
	}
	rs.Stop(t)
	e = apiErr{}
	if code := do(t, "GET", ts.base+"/api/rooms/lobby/presence", "", "", &e); code != 503 || e.Error.Code != "redis_unavailable" {
		t.Fatalf("Redis down: %d %+v", code, e)
	}
}

// Presence costs no goroutine (and no timer) per connection: one heartbeat
// goroutine per server does it all.
func TestPresenceAddsNoGoroutinePerConnection(t *testing.T) {
	ts := startServer(t, fastPresence)
	settle := func() int {
		time.Sleep(50 * time.Millisecond)
		return runtime.NumGoroutine()
	}
	first, _ := ts.member("idle", "u0")
	first.expectEvent("join u0")
	before := settle()
	const n = 50
	for i := 1; i <= n; i++ {
		c, _ := ts.member("idle", fmt.Sprintf("u%d", i))
		c.expectEvent(fmt.Sprintf("join u%d", i))
	}
	// Let a few heartbeats pass; writers end when idle.
	time.Sleep(300 * time.Millisecond)
	deadline := time.Now().Add(10 * time.Second)
	for {
		// Each connection has its reader goroutine (the WebSocket handler),
		// and the test's client side has none while idle.
		delta := settle() - before
		if delta <= n+5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d idle connections added %d goroutines, want about one each", n, delta)
		}
	}
}

// Past PRESENCE_MAX_MEMBERS users a room gets no presence events and a
// partial snapshot (each event would go to every connection).
func TestPresenceBigRoom(t *testing.T) {
	ts := startServer(t, func(o *options) { o.presence.MaxMembers = 2 })
	a, _ := ts.member("big", "alice")
	a.expectEvent("join alice")
	b, _ := ts.member("big", "bob")
	a.expectEvent("join bob")
	b.expectEvent("join bob")
	_, snap := ts.member("big", "carol")
	if len(snap.Members) != 2 || !snap.Partial {
		t.Fatalf("carol's snapshot %+v, want 2 members and partial", snap)
	}
	var p struct {
		Members []struct{ User string }
		Partial bool
	}
	if code := do(t, "GET", ts.base+"/api/rooms/big/presence", "", "", &p); code != 200 || len(p.Members) != 2 || !p.Partial {
		t.Fatalf("API of a big room: %d %+v", code, p)
	}
	b.send(`{"type":"typing"}`)
	// No join for carol, no typing from bob: alice's next frame is the message.
	b.send(`{"message":"hello"}`)
	if f := a.expect("message"); f.Message != "hello" {
		t.Fatalf("got %+v", f)
	}
}
