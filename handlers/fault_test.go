package handlers_test

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xroom/xroom/handlers"
	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/internal/testkit"
	"github.com/xroom/xroom/streams"
)

// In-process fault tests: a stalled Redis, lost room data, dead peers and
// clients that never read. Process-level faults are in app/fault_test.go.

// liveHeap is the bytes of live heap objects, right after a collection
// (HeapInuse would count half-empty spans too).
func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// heapUnderFlood appends total messages of size bytes to the room
// "flood" and samples the live heap every 1000: early is the most it held
// in the first quarter, peak the most after it; sample, when set, runs at
// each sampling too. want is the IDs stored, in order.
func (ts *testServer) heapUnderFlood(total, size int, sample func()) (want []string, early, peak uint64) {
	ts.t.Helper()
	text := strings.Repeat("x", size)
	want = make([]string, 0, total)
	for i := range total {
		id, _, err := ts.store.Append(context.Background(), "flood", streams.Message{User: "w", Text: text})
		if err != nil {
			ts.t.Fatal(err)
		}
		want = append(want, id.String())
		if i%1000 == 999 {
			h := liveHeap()
			if i < total/4 {
				early = max(early, h)
			} else {
				peak = max(peak, h)
			}
			if sample != nil {
				sample()
			}
		}
	}
	return want, early, peak
}

// rawDial does the WebSocket handshake on a plain TCP connection and then
// leaves it alone: it never reads (so never answers pings) unless the test does.
func rawDial(t *testing.T, ts *testServer, room, query string, rcvBuf int) net.Conn {
	t.Helper()
	conn, _ := upgradeConn(t, ts, "/ws/chat/"+room+"/?"+query, handlers.Subprotocol, rcvBuf)
	return conn
}

// Redis frozen (SIGSTOP): every send is answered with an `unavailable`
// error within a bounded time, nothing piles up (goroutines) while it
// lasts, the tail resumes afterwards, and resending the unacked client_ids
// leaves each message exactly once on every client.
func TestFaultRedisStalled(t *testing.T) {
	rs := redistest.Start(t)
	const redisTimeout = 500 * time.Millisecond
	ts := startServer(t, func(o *options) {
		o.rs = rs
		o.cfg.RedisTimeout = redisTimeout
		o.hub.CatchUpTimeout = redisTimeout
		o.hub.Block = 300 * time.Millisecond
	})
	a := &tracker{client: ts.dial("stall", "user=a", true)}
	b := &tracker{client: ts.dial("stall", "user=b", true)}
	a.expect("ready")
	b.expect("ready")
	blasters := make([]*tracker, 4)
	for i := range blasters {
		blasters[i] = &tracker{client: ts.dial("stall", fmt.Sprintf("user=blaster%d", i), true)}
		blasters[i].expect("ready")
	}
	acked := map[string]string{"s-0": a.sendAcked("before", "s-0")}

	heapBefore := liveHeap()
	before := runtime.NumGoroutine()
	rs.Pause(t)
	paused := true
	defer func() {
		if paused {
			rs.Resume(t)
		}
	}()

	// Send for a while: each send gets its error in bounded time, and the
	// goroutine count stays flat however many sends have failed.
	var failed []string
	most := before
	for i := 1; i <= 6; i++ {
		cid := fmt.Sprintf("s-%d", i)
		start := time.Now()
		a.send(fmt.Sprintf(`{"type":"message","message":"m%d","client_id":"%s"}`, i, cid))
		f := a.reply(cid)
		if f.Type != "error" || f.Code != "unavailable" {
			t.Fatalf("send %d while stalled: got %+v, want an unavailable error", i, f)
		}
		if took := time.Since(start); took > redisTimeout+5*time.Second {
			t.Errorf("send %d answered after %v", i, took)
		}
		failed = append(failed, cid)
		most = max(most, runtime.NumGoroutine())
	}
	// A join while stalled is refused, not left hanging.
	c := ts.dial("stall", "user=c&since=0", true)
	if f := c.nextWithin(3*redisTimeout + 10*time.Second); f.Type != "error" || f.Code != "unavailable" {
		t.Fatalf("join while stalled: %+v", f)
	}
	// Clients that send without waiting for replies: their frames wait in
	// the socket (one at a time is handled), not in goroutines or memory.
	const blasts = 10
	for i, c := range blasters {
		for j := range blasts {
			c.send(fmt.Sprintf(`{"type":"message","message":"blast","client_id":"b%d-%d"}`, i, j))
		}
	}
	mostHeap := heapBefore
	for range 15 {
		time.Sleep(100 * time.Millisecond)
		most = max(most, runtime.NumGoroutine())
		mostHeap = max(mostHeap, liveHeap())
	}
	t.Logf("while stalled: goroutines %d before, at most %d; heap %d KB before, at most %d KB", before, most, heapBefore>>10, mostHeap>>10)
	if grew := most - before; grew > 20 {
		t.Errorf("goroutines grew by %d while Redis was stalled (%d before)", grew, before)
	}
	if grew := int64(mostHeap) - int64(heapBefore); grew > 16<<20 {
		t.Errorf("heap grew by %d KB while Redis was stalled", grew>>10)
	}

	rs.Resume(t)
	paused = false
	// A timed-out command may still run once Redis wakes: resending with the
	// same client_id stores each message once and acks the stored ID.
	resend := func(c *tracker, cid string) {
		for {
			c.send(fmt.Sprintf(`{"type":"message","message":"again","client_id":"%s"}`, cid))
			if f := c.reply(cid); f.Type == "ack" {
				acked[cid] = f.ID
				return
			}
			time.Sleep(100 * time.Millisecond) // still reconnecting
		}
	}
	for _, cid := range failed {
		resend(a, cid)
	}
	for i, c := range blasters {
		var refused []string // every blast is answered first, in order
		for j := range blasts {
			cid := fmt.Sprintf("b%d-%d", i, j)
			if f := c.reply(cid); f.Type == "ack" {
				acked[cid] = f.ID
			} else {
				refused = append(refused, cid)
			}
		}
		for _, cid := range refused {
			resend(c, cid)
		}
	}
	// Each acked client_id is in the stream once, under its acked ID, and
	// every client got the whole stream in order.
	msgs, err := ts.rdb.XRange(context.Background(), ts.key("stall"), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	stream := make([]string, len(msgs))
	for i, m := range msgs {
		stream[i] = m.ID
		if cid := m.Values["client_id"]; acked[cid.(string)] != m.ID {
			t.Errorf("%v stored as %s, acked as %q", cid, m.ID, acked[cid.(string)])
		}
	}
	if len(stream) != len(acked) {
		t.Fatalf("the stream holds %d entries, %d client_ids were acked", len(stream), len(acked))
	}
	for _, c := range append([]*tracker{a, b}, blasters...) {
		c.until(len(stream))
		if !slices.Equal(c.seen, stream) {
			t.Fatalf("a client got %v, want the stream %v", c.seen, stream)
		}
	}
	testkit.Eventually(t, 10*time.Second, "goroutines back to normal", func() bool {
		return runtime.NumGoroutine() <= before+5
	})
}

// tracker is a client that records the IDs of the messages it receives
// while it waits for replies.
type tracker struct {
	*client
	seen []string
}

// reply reads until the ack or error for cid, recording messages.
func (c *tracker) reply(cid string) frame {
	c.t.Helper()
	for {
		f := c.nextWithin(20 * time.Second)
		switch {
		case f.Type == "message":
			c.seen = append(c.seen, f.ID)
		case (f.Type == "ack" || f.Type == "error") && f.ClientID == cid:
			return f
		default:
			c.t.Fatalf("waiting for the reply to %s, got %+v", cid, f)
		}
	}
}

// sendAcked sends one message and returns its acked ID.
func (c *tracker) sendAcked(text, cid string) string {
	c.t.Helper()
	c.send(fmt.Sprintf(`{"type":"message","message":%q,"client_id":%q}`, text, cid))
	f := c.reply(cid)
	if f.Type != "ack" {
		c.t.Fatalf("send %s: %+v", cid, f)
	}
	return f.ID
}

// until reads message frames until n have been seen (more is a failure
// the caller's comparison reports).
func (c *tracker) until(n int) {
	c.t.Helper()
	for len(c.seen) < n {
		f := c.nextWithin(20 * time.Second)
		if f.Type != "message" {
			c.t.Fatalf("got %+v, want a message", f)
		}
		c.seen = append(c.seen, f.ID)
	}
}

// Redis lost the room (FLUSHALL) while this process was tailing it: a
// client that comes back with the old epoch gets `gap` reset first, then
// exactly the new history, never entries Redis no longer has.
func TestFaultFlushallWhileTailed(t *testing.T) {
	rs := redistest.Start(t)
	ts := startServer(t, func(o *options) { o.rs = rs })
	stay := ts.dial("lost", "user=stay&since=0", true)
	stay.expect("ready") // keeps the room tailed across the flush
	a := ts.dial("lost", "user=a&since=0", true)
	epoch := a.expect("ready").Epoch
	old := ts.append("lost", "u", 5)
	if got := ids(a.messages(5)); !slices.Equal(got, old) {
		t.Fatalf("a got %v", got)
	}
	a.conn.Close()
	if got := ids(stay.messages(5)); !slices.Equal(got, old) {
		t.Fatalf("stay got %v", got)
	}

	rs.CLI(t, "FLUSHALL")
	fresh := ts.append("lost", "u", 2)
	if got := ids(stay.messages(2)); !slices.Equal(got, fresh) {
		t.Fatalf("the live client got %v after the flush, want %v", got, fresh)
	}
	c := ts.dial("lost", "user=a&since="+old[4]+"&epoch="+epoch, true)
	if g := c.expect("gap"); g.Reason != "reset" || g.OldestID != fresh[0] {
		t.Fatalf("got %+v, want gap reset with oldest_id %s", g, fresh[0])
	}
	if got := ids(c.messages(2)); !slices.Equal(got, fresh) {
		t.Fatalf("after the reset got %v, want exactly the new history %v", got, fresh)
	}
	r := c.expect("ready")
	if r.Epoch == epoch || r.LastID != fresh[1] {
		t.Fatalf("ready %+v", r)
	}
	// A new client replaying everything sees only what Redis holds.
	d := ts.dial("lost", "user=d&since=0", true)
	if got := ids(d.messages(2)); !slices.Equal(got, fresh) {
		t.Fatalf("since=0 after the flush got %v, want %v", got, fresh)
	}
	d.expect("ready")
}

// A peer that did the handshake and then went silent (no reads, no pongs)
// is reaped once PongWait passes without a word; a live peer that answers
// pings stays.
func TestFaultHalfOpenPeerIsReaped(t *testing.T) {
	ts := startServer(t, func(o *options) {
		o.cfg.PingPeriod = 100 * time.Millisecond
		o.cfg.PongWait = 500 * time.Millisecond
	})
	live := ts.dial("peers", "user=live", true)
	live.expect("ready")
	var wg sync.WaitGroup
	wg.Add(1)
	liveErr := make(chan error, 1)
	go func() { // reading makes gorilla answer pings
		defer wg.Done()
		_ = live.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		var err error
		for err == nil { // past presence frames (the dead peer's join and leave)
			_, _, err = live.conn.ReadMessage()
		}
		liveErr <- err
	}()
	rawDial(t, ts, "peers", "user=dead", 0)
	testkit.Eventually(t, 10*time.Second, "both connected", func() bool { return ts.srv.Connections() == 2 })
	start := time.Now()
	testkit.Eventually(t, 10*time.Second, "the silent peer reaped", func() bool { return ts.srv.Connections() == 1 })
	t.Logf("reaped after %v", time.Since(start).Round(time.Millisecond))
	wg.Wait()
	if err := <-liveErr; err == nil || !isTimeout(err) {
		t.Fatalf("the live peer's read ended with %v, want its own deadline", err)
	}
	if n := ts.srv.Connections(); n != 1 {
		t.Fatalf("%d connections, want the live one only", n)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// A client that connects and never reads, while many MB go through its
// room, costs bounded memory (the room's ring, not a queue per client), is
// cut off by the write deadline, and does not slow down a reader.
func TestFaultNeverReadingClientIsBounded(t *testing.T) {
	const (
		ring    = 64
		msgSize = 4000
		total   = 12000 // 48 MB of messages; holding them would take about 100 MB (text and frame)
	)
	ts := startServer(t, func(o *options) {
		o.cfg.WriteWait = 3 * time.Second
		o.cfg.MaxMessageBytes = msgSize
		o.hub.Buffer = ring
		o.hub.ReadCount = ring
	})
	redistest.RequireReal(t, ts.redis) // an in-process Redis would hold the flood in this heap
	reader := ts.dial("flood", "user=reader", true)
	reader.expect("ready")
	rawDial(t, ts, "flood", "user=stuck", 4096)
	testkit.Eventually(t, 10*time.Second, "both connected", func() bool { return ts.srv.Connections() == 2 })

	base := liveHeap()
	got := make(chan []string, 1)
	go func() {
		var out []string
		for len(out) < total {
			_ = reader.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
			_, data, err := reader.conn.ReadMessage()
			if err != nil {
				break
			}
			head := string(data[:min(len(data), 80)]) // a copy: the frame is not kept
			if i := strings.Index(head, `"id":"`); i >= 0 && strings.HasPrefix(head, `{"type":"message"`) {
				rest := head[i+6:]
				out = append(out, rest[:strings.IndexByte(rest, '"')])
			}
		}
		got <- out
	}()
	want, early, peak := ts.heapUnderFlood(total, msgSize, nil) // heap in the first quarter of the flood, and after it
	stuckToTheEnd := ts.srv.Connections() == 2
	testkit.Eventually(t, 20*time.Second, "the stuck client cut off", func() bool { return ts.srv.Connections() == 1 })
	peak = max(peak, liveHeap())
	if r := <-got; !slices.Equal(r, want) {
		t.Fatalf("the reader got %d messages, want all %d in order", len(r), len(want))
	}
	t.Logf("live heap: %d KB before, %d KB in the first quarter, peak %d KB after it, with 48 MB through the room (stuck client connected throughout: %v)",
		base>>10, early>>10, peak>>10, stuckToTheEnd)
	// What the server holds is a few batches of entries (the ring and one
	// tail read of 64, a catch-up read of 256, about 8 KB each), whatever the
	// flood: it must not keep growing after the first quarter, and stays far
	// below what went through. (Generous: other tests' garbage is in the heap too.)
	if grew := int64(peak) - int64(early); grew > 16<<20 {
		t.Errorf("heap grew by %d KB from the first quarter of the flood to the end", grew>>10)
	}
	if grew := int64(peak) - int64(base); grew > 32<<20 {
		t.Errorf("heap grew by %d KB while 48 MB went to a client that never reads", grew>>10)
	}
}
