package handlers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/streams"
)

func TestTwoClientsGetEveryMessageOnceInOrder(t *testing.T) {
	ts := startServer(t)
	a := ts.dial("lobby", "user=alice", true)
	b := ts.dial("lobby", "user=bob", true)
	a.expect("ready")
	b.expect("ready")
	const n = 50
	for i := range n {
		sender := a
		if i%2 == 1 {
			sender = b
		}
		sender.send(map[string]string{"message": fmt.Sprintf("hello %d", i)})
	}
	ga, gb := a.messages(n), b.messages(n)
	if !slices.Equal(ids(ga), ids(gb)) {
		t.Fatalf("clients saw different IDs:\n%v\n%v", ids(ga), ids(gb))
	}
	seen := map[string]bool{}
	for i, f := range ga {
		if seen[f.Message] {
			t.Fatalf("message %q twice", f.Message)
		}
		seen[f.Message] = true
		if f.Room != "lobby" || f.TS == 0 || f.ID == "" || !strings.HasPrefix(f.ID, fmt.Sprint(f.TS)+"-") {
			t.Fatalf("frame %d incomplete: %+v", i, f)
		}
		if i > 0 && !idLess(ga[i-1].ID, f.ID) {
			t.Fatalf("out of order: %s then %s", ga[i-1].ID, f.ID)
		}
		var k int
		fmt.Sscanf(f.Message, "hello %d", &k)
		if want := map[bool]string{true: "alice", false: "bob"}[k%2 == 0]; f.User != want {
			t.Fatalf("%q by %q, want %q", f.Message, f.User, want)
		}
	}
	if len(seen) != n {
		t.Fatalf("got %d distinct messages, want %d", len(seen), n)
	}
}

func TestJoinWithoutSinceGetsNewestHistoryThenReady(t *testing.T) {
	ts := startServer(t)
	want := ts.append("lobby", "old", 60)[10:]
	c := ts.dial("lobby", "", true)
	got := c.messages(50)
	if !slices.Equal(ids(got), want) {
		t.Fatalf("history = %v, want the newest 50 %v", ids(got), want)
	}
	r := c.expect("ready")
	if r.LastID != want[49] || r.Room != "lobby" || r.Epoch == "" {
		t.Fatalf("ready = %+v, want last_id %s and an epoch", r, want[49])
	}
	if !strings.HasPrefix(got[0].User, "old") {
		t.Fatalf("user = %q", got[0].User)
	}
}

// rawFrames reads frames as generic JSON objects until one has message ==
// last and there were errors error frames.
func rawFrames(t *testing.T, c *client, last string, errors int) []map[string]any {
	t.Helper()
	var out []map[string]any
	seenLast := false
	for !seenLast || errors > 0 {
		_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, data, err := c.conn.ReadMessage()
		if err != nil {
			t.Fatalf("read: %v (after %v)", err, out)
		}
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatalf("frame %q: %v", data, err)
		}
		out = append(out, m)
		seenLast = seenLast || m["message"] == last
		if m["type"] == "error" {
			errors--
		}
	}
	return out
}

func TestCompatibleDialectOnlySendsFramesWithMessage(t *testing.T) {
	ts := startServer(t)
	ts.append("lobby", "old", 3)
	c := ts.dial("lobby", "user=tutorial", false)
	if p := c.conn.Subprotocol(); p != "" {
		t.Fatalf("subprotocol %q without asking", p)
	}
	c.send(`{"message": "hi"}`)
	c.send(`{"type": "message", "message": "with id", "client_id": "c-1"}`)
	c.send(`{`)
	c.send(`{"message": "end"}`)
	frames := rawFrames(t, c, "end", 1)
	var texts []string
	for _, f := range frames {
		msg, ok := f["message"].(string)
		if !ok {
			t.Fatalf("compatible client got a frame without message: %v", f)
		}
		if f["type"] != "message" && f["type"] != "error" {
			t.Fatalf("compatible client got a %v frame", f["type"])
		}
		texts = append(texts, fmt.Sprint(f["type"], ":", msg))
	}
	sort.Strings(texts) // an error may come before or after others' messages
	want := []string{"error:malformed JSON", "message:end", "message:hi", "message:m0", "message:m1", "message:m2", "message:with id"}
	if len(texts) != len(want) {
		t.Fatalf("frames %v, want %v", texts, want)
	}
	for i := range want {
		if !strings.HasPrefix(texts[i], want[i]) {
			t.Fatalf("frame %d = %q, want %q (all: %v)", i, texts[i], want[i], texts)
		}
	}

	// The xroom dialect gets ready and ack too.
	x := ts.dial("lobby", "user=full", true)
	if p := x.conn.Subprotocol(); p != "xroom.v1" {
		t.Fatalf("subprotocol = %q, want xroom.v1 echoed", p)
	}
	x.messages(6)
	x.expect("ready")
	x.send(`{"type": "message", "message": "acked", "client_id": "c-2"}`)
	var gotAck, gotMsg bool
	for !gotAck || !gotMsg {
		f := x.next()
		switch {
		case f.Type == "ack" && f.ClientID == "c-2" && f.ID != "":
			gotAck = true
		case f.Type == "message" && f.Message == "acked" && f.ClientID == "c-2":
			gotMsg = true
		default:
			t.Fatalf("unexpected %+v", f)
		}
	}
}

func TestReconnectWithSinceGetsExactlyWhatWasMissed(t *testing.T) {
	ts := startServer(t)
	ts.append("lobby", "early", 10)
	c := ts.dial("lobby", "", true)
	last := c.messages(10)[9].ID
	c.expect("ready")
	c.conn.Close()

	missed := ts.append("lobby", "while-away", 100)
	c = ts.dial("lobby", "since="+last, true)
	got := c.messages(100)
	if !slices.Equal(ids(got), missed) {
		t.Fatalf("replay = %v\nwant %v", ids(got), missed)
	}
	if r := c.expect("ready"); r.LastID != missed[99] {
		t.Fatalf("ready.last_id = %s, want %s", r.LastID, missed[99])
	}
	c.send(`{"message": "live"}`)
	if f := c.expect("message"); f.Message != "live" || !idLess(missed[99], f.ID) {
		t.Fatalf("live = %+v", f)
	}
}

func TestSinceZeroAndMillisecondForms(t *testing.T) {
	ts := startServer(t)
	all := ts.append("lobby", "u", 70)
	c := ts.dial("lobby", "since=0", true)
	if got := c.messages(70); !slices.Equal(ids(got), all) {
		t.Fatalf("since=0 replayed %d entries, want all 70", len(got))
	}
	c.expect("ready")
	ms := strings.Split(all[69], "-")[0]
	c2 := ts.dial("lobby", "since="+ms, true) // MS alone means MS-0
	for _, f := range c2.messages(countAfter(all, ms+"-0")) {
		if !idLess(ms+"-0", f.ID) {
			t.Fatalf("%s is not after %s-0", f.ID, ms)
		}
	}
	c2.expect("ready")
}

func countAfter(all []string, id string) int {
	n := 0
	for _, x := range all {
		if idLess(id, x) {
			n++
		}
	}
	return n
}

func TestEntryAddedDuringLongReplayArrivesOnce(t *testing.T) {
	ts := startServer(t)
	const n = 10000
	pipe := ts.rdb.Pipeline()
	for i := range n {
		pipe.XAdd(context.Background(), &redis.XAddArgs{Stream: ts.key("big"), Values: []any{"user", "bulk", "message", fmt.Sprint(i)}})
	}
	if _, err := pipe.Exec(context.Background()); err != nil {
		t.Fatal(err)
	}
	c := ts.dial("big", "since=0", true)
	first := c.expect("message")
	// The replay has begun and is far from done: add one entry now.
	id, _, err := ts.store.Append(context.Background(), "big", streams.Message{User: "late", Text: "during replay"})
	if err != nil {
		t.Fatal(err)
	}
	prev, count, late, readyAt := first.ID, 1, 0, -1
	for late == 0 || readyAt < 0 {
		f := c.next()
		if f.Type == "ready" {
			readyAt = count
			continue
		}
		if f.Type != "message" {
			t.Fatalf("unexpected %+v", f)
		}
		if !idLess(prev, f.ID) {
			t.Fatalf("out of order or repeated: %s after %s", f.ID, prev)
		}
		prev = f.ID
		count++
		if f.ID == id.String() {
			late++
		}
	}
	if count != n+1 || late != 1 || readyAt < n {
		t.Fatalf("got %d messages (want %d), the late one %d times, ready after %d", count, n+1, late, readyAt)
	}
	c.send(`{"message": "after"}`)
	if f := c.expect("message"); f.Message != "after" {
		t.Fatalf("after the replay: %+v", f)
	}
}

// redisConns counts the server's connections in CLIENT LIST.
func redisConns(t *testing.T, ts *testServer) int {
	return strings.Count(ts.redis.CLI(t, "CLIENT", "LIST"), "name="+ts.name+" ")
}

func TestManyConnectionsShareFewRedisConnections(t *testing.T) {
	const pool = 8
	ts := startServer(t, func(o *options) { o.poolSize = pool })
	redistest.RequireReal(t, ts.redis)
	const n = 200
	var clients []*client
	// Clients arriving one after another: one tail and a pooled connection or two.
	for i := range n / 2 {
		c := ts.dial("crowd", fmt.Sprintf("user=u%d", i), true)
		c.expect("ready")
		clients = append(clients, c)
	}
	if conns := redisConns(t, ts); conns == 0 || conns > 3 {
		t.Fatalf("%d WebSocket connections use %d Redis connections, want at most 3", len(clients), conns)
	}
	// A burst of joins: bounded by the pool, whatever the number of clients.
	burst := make([]*client, n/2)
	var wg sync.WaitGroup
	for i := range burst {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := ts.tryDial("crowd", fmt.Sprintf("user=b%d", i), true, nil)
			if err != nil {
				t.Error(err)
				return
			}
			burst[i] = c
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for _, c := range burst {
		c.expect("ready")
	}
	clients = append(clients, burst...)
	clients[0].send(`{"message": "to all"}`)
	for _, c := range clients {
		if f := c.expect("message"); f.Message != "to all" {
			t.Fatalf("got %+v", f)
		}
	}
	conns := redisConns(t, ts)
	t.Logf("%d WebSocket connections, %d Redis connections, pool %+v", ts.srv.Connections(), conns, ts.store.Client().PoolStats())
	if ts.srv.Connections() != n || conns > pool+1 {
		t.Fatalf("%d WebSocket connections use %d Redis connections, want at most %d (the pool and one tail)", ts.srv.Connections(), conns, pool+1)
	}
	if ts.hub.Rooms() != 1 {
		t.Fatalf("tailing %d rooms, want 1", ts.hub.Rooms())
	}
}

func TestRedisCLIEntriesAreChatMessages(t *testing.T) {
	ts := startServer(t)
	redistest.RequireReal(t, ts.redis)
	c := ts.dial("lobby", "", true)
	c.expect("ready")
	id := ts.redis.CLI(t, "XADD", ts.key("lobby"), "*", "user", "ops", "message", "back in 5")
	f := c.expect("message")
	if f.ID != id || f.User != "ops" || f.Message != "back in 5" {
		t.Fatalf("got %+v, want the redis-cli entry %s", f, id)
	}
	c.send(`{"type": "message", "message": "plain text", "client_id": "k1"}`)
	c.next() // the ack and the message, in either order
	c.next()
	out := ts.redis.CLI(t, "XRANGE", ts.key("lobby"), "-", "+")
	for _, want := range []string{"user\nops\nmessage\nback in 5", "message\nplain text\nclient_id\nk1"} {
		if !strings.Contains(out, want) {
			t.Fatalf("XRANGE output lacks %q:\n%s", want, out)
		}
	}
	// An entry without a message is skipped, the next one still arrives.
	ts.redis.CLI(t, "XADD", ts.key("lobby"), "*", "user", "ops", "note", "no message field")
	ts.redis.CLI(t, "XADD", ts.key("lobby"), "*", "user", "ops", "message", "still here")
	if f := c.expect("message"); f.Message != "still here" {
		t.Fatalf("got %+v", f)
	}
	if ts.hub.Stats().Skipped.Load() != 1 {
		t.Fatalf("skipped = %d, want 1", ts.hub.Stats().Skipped.Load())
	}
	r := ts.dial("lobby", "since=0", true)
	for _, f := range r.messages(3) {
		if f.Message == "" {
			t.Fatalf("replayed an entry without message: %+v", f)
		}
	}
	r.expect("ready")
}

func TestSlowClientDoesNotDelayOthersAndCatchesUp(t *testing.T) {
	ts := startServer(t, func(o *options) {
		o.hub.Buffer = 64
		// The slow client must not be cut by the write deadline while the
		// fast ones read 9 MB on a busy machine: this test is about order,
		// not speed (the deadline itself has its own fault tests).
		o.cfg.WriteWait = 2 * time.Minute
	})
	fast1 := ts.dial("busy", "", true)
	fast2 := ts.dial("busy", "", true)
	// The slow client's socket buffer is small, so its writer really blocks.
	d := websocket.Dialer{NetDial: func(network, addr string) (net.Conn, error) {
		conn, err := net.Dial(network, addr)
		if err == nil {
			_ = conn.(*net.TCPConn).SetReadBuffer(64 << 10)
		}
		return conn, err
	}, Subprotocols: []string{"xroom.v1"}}
	slowConn, _, err := d.Dial("ws"+strings.TrimPrefix(ts.base, "http")+"/ws/chat/busy/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer slowConn.Close()
	slow := &client{t: t, conn: slowConn, skipPresence: true}
	for _, c := range []*client{fast1, fast2, slow} {
		c.expect("ready")
	}

	const n = 3000
	body := strings.Repeat("x", 3000) // 9 MB in all: more than socket buffers hold
	go func() {
		for i := range n {
			if _, _, err := ts.store.Append(context.Background(), "busy", streams.Message{User: "pub", Text: fmt.Sprintf("%d %s", i, body)}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	// The others get everything while the slow one reads nothing.
	start := time.Now()
	a, b := fast1.messages(n), fast2.messages(n)
	t.Logf("fast clients done in %v", time.Since(start))
	if !slices.Equal(ids(a), ids(b)) {
		t.Fatal("fast clients disagree")
	}
	got := slow.messages(n)
	if !slices.Equal(ids(got), ids(a)) {
		t.Fatalf("slow client got %d messages, not the same sequence", len(got))
	}
	if ts.hub.Stats().CatchUps.Load() == 0 {
		t.Fatal("the slow client never caught up from Redis: it was buffered instead")
	}
}

func TestDuplicateClientIDIsStoredOnce(t *testing.T) {
	ts := startServer(t)
	c := ts.dial("lobby", "user=alice", true)
	c.expect("ready")
	c.send(`{"type": "message", "message": "once", "client_id": "dup-1"}`)
	c.send(`{"type": "message", "message": "once", "client_id": "dup-1"}`)
	var acks []frame
	msgs := 0
	for len(acks) < 2 {
		switch f := c.next(); f.Type {
		case "ack":
			acks = append(acks, f)
		case "message":
			msgs++
		}
	}
	if acks[0].ID != acks[1].ID || acks[0].Duplicate || !acks[1].Duplicate {
		t.Fatalf("acks = %+v, want the same ID, the second marked duplicate", acks)
	}
	if n := ts.rdb.XLen(context.Background(), ts.key("lobby")).Val(); n != 1 {
		t.Fatalf("stored %d entries, want 1", n)
	}
	// Another user may use the same client_id.
	b := ts.dial("lobby", "user=bob", true)
	b.messages(1)
	b.expect("ready")
	b.send(`{"type": "message", "message": "mine", "client_id": "dup-1"}`)
	for f := b.next(); ; f = b.next() {
		if f.Type == "ack" {
			if f.ID == acks[0].ID || f.Duplicate {
				t.Fatalf("bob's message was taken for alice's: %+v", f)
			}
			break
		}
	}
}

func TestGapWhenHistoryWasTrimmed(t *testing.T) {
	ts := startServer(t)
	all := ts.append("lobby", "u", 100)
	ts.rdb.XTrimMaxLen(context.Background(), ts.key("lobby"), 10)
	c := ts.dial("lobby", "since="+all[5], true)
	g := c.expect("gap")
	if g.Reason != "trimmed" || g.OldestID != all[90] {
		t.Fatalf("gap = %+v, want trimmed with oldest_id %s", g, all[90])
	}
	if got := c.messages(10); !slices.Equal(ids(got), all[90:]) {
		t.Fatalf("after the gap: %v", ids(got))
	}
	c.expect("ready")

	// Resuming from a retained entry is no gap.
	c2 := ts.dial("lobby", "since="+all[95], true)
	if f := c2.next(); f.Type != "message" || f.ID != all[96] {
		t.Fatalf("got %+v, want message %s", f, all[96])
	}
}

func TestEpochResetWhenHistoryWasLost(t *testing.T) {
	ts := startServer(t)
	ts.append("lobby", "before", 5)
	c := ts.dial("lobby", "", true)
	last := c.messages(5)[4].ID
	epoch := c.expect("ready").Epoch
	c.conn.Close()

	// Same epoch: no gap.
	c = ts.dial("lobby", "since="+last+"&epoch="+epoch, true)
	if r := c.expect("ready"); r.Epoch != epoch {
		t.Fatalf("epoch changed to %q without a reset", r.Epoch)
	}
	c.conn.Close()

	// Redis loses the room; new messages arrive.
	ts.rdb.Del(context.Background(), ts.key("lobby"), streams.Keys{Prefix: ts.prefix}.Epoch("lobby"))
	fresh := ts.append("lobby", "after", 3)
	c = ts.dial("lobby", "since="+last+"&epoch="+epoch, true)
	g := c.expect("gap")
	if g.Reason != "reset" || g.OldestID != fresh[0] {
		t.Fatalf("gap = %+v, want reset with oldest_id %s", g, fresh[0])
	}
	if got := c.messages(3); !slices.Equal(ids(got), fresh) {
		t.Fatalf("after reset got %v, want the whole new history %v", ids(got), fresh)
	}
	if r := c.expect("ready"); r.Epoch == epoch || r.Epoch == "" {
		t.Fatalf("ready epoch %q, want a new one", r.Epoch)
	}
}

func TestTrailingSlashIsOptional(t *testing.T) {
	ts := startServer(t)
	d := websocket.Dialer{Subprotocols: []string{"xroom.v1"}}
	conn, _, err := d.Dial("ws"+strings.TrimPrefix(ts.base, "http")+"/ws/chat/lobby?user=noslash", nil)
	if err != nil {
		t.Fatalf("without the trailing slash: %v", err)
	}
	defer conn.Close()
	c := &client{t: t, conn: conn, skipPresence: true}
	c.expect("ready")
	c.send(`{"message": "hi"}`)
	if f := c.expect("message"); f.User != "noslash" {
		t.Fatalf("got %+v", f)
	}
}

// A replay is complete before ready even when the room's tail is behind:
// the entries the tail has not read yet come from Redis, not after ready.
func TestReplayIsCompleteWhileTheTailIsBehind(t *testing.T) {
	ts := startServer(t, func(o *options) { o.hub.ReadCount = 1 }) // a tail that reads one entry at a time
	for round := range 3 {
		room := fmt.Sprint("lag", round)
		keep := ts.dial(room, "user=keep", true) // holds the room's tail
		keep.expect("ready")
		missed := ts.append(room, "u", 200)
		c := ts.dial(room, "since=0", true)
		if got := ids(c.messages(200)); !slices.Equal(got, missed) {
			t.Fatalf("replay = %d entries, want the 200 appended", len(got))
		}
		if r := c.expect("ready"); r.LastID != missed[199] {
			t.Fatalf("ready.last_id = %s, want %s", r.LastID, missed[199])
		}
	}
}
