package handlers_test

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/xroom/xroom/streams"
)

// slowRoom is a server whose connections fall behind easily: a 16-entry
// hub buffer, a store capped at maxLen (MAXLEN ~), and a write deadline
// long enough that a client that pauses reading is not cut off.
func slowRoom(t *testing.T, maxLen int64) *testServer {
	return startServer(t, func(o *options) {
		o.hub.Buffer = 16
		o.maxLen = maxLen
		o.cfg.WriteWait = time.Minute
	})
}

// dialSmallWindow dials like ts.dial with a socket receive buffer fixed at
// 256 KiB (no autotuning), so that a client that stops reading soon blocks
// the server's writes.
func (ts *testServer) dialSmallWindow(room, query string, xroom bool) *client {
	ts.t.Helper()
	u := "ws" + strings.TrimPrefix(ts.base, "http") + "/ws/chat/" + room + "/"
	if query != "" {
		u += "?" + query
	}
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, NetDial: func(network, addr string) (net.Conn, error) {
		c, err := net.Dial(network, addr)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(256 << 10)
		}
		return c, err
	}}
	if xroom {
		d.Subprotocols = []string{"xroom.v1"}
	}
	conn, _, err := d.Dial(u, nil)
	if err != nil {
		ts.t.Fatalf("dial %s: %v", u, err)
	}
	ts.t.Cleanup(func() { conn.Close() })
	return &client{t: ts.t, conn: conn, skipPresence: xroom}
}

// flood appends n messages of 16 KiB while nobody reads: far more than the
// socket buffers, the hub buffer and (when capped) the stream hold.
func (ts *testServer) flood(room string, n int) []string {
	ts.t.Helper()
	pad := strings.Repeat("x", 16<<10)
	ids := make([]string, n)
	for i := range n {
		id, _, err := ts.store.Append(context.Background(), room, streams.Message{User: "bob", Text: pad})
		if err != nil {
			ts.t.Fatal(err)
		}
		ids[i] = id.String()
	}
	return ids
}

// readBehind reads until the message with ID last and checks what a slow
// client got: every entry at most once and in order, and entries skipped
// only right after a gap frame of reason trimmed, whose oldest_id is not
// after the next entry. It returns how many gaps and messages came.
func (c *client) readBehind(ids []string, last string) (gaps, got int) {
	c.t.Helper()
	index := make(map[string]int, len(ids))
	for i, id := range ids {
		index[id] = i
	}
	want, announced := 0, ""
	for {
		f := c.nextWithin(20 * time.Second)
		switch f.Type {
		case "gap":
			if f.Reason != "trimmed" || f.OldestID == "" {
				c.t.Fatalf("gap frame %+v, want reason trimmed with oldest_id", f)
			}
			gaps++
			announced = f.OldestID
		case "message":
			i, ok := index[f.ID]
			if !ok {
				c.t.Fatalf("message %s was not flooded", f.ID)
			}
			if i < want {
				c.t.Fatalf("message %s (#%d) again or out of order; expected #%d next", f.ID, i, want)
			}
			if i > want {
				if announced == "" {
					c.t.Fatalf("messages #%d to #%d skipped without a gap frame", want, i-1)
				}
				if idLess(f.ID, announced) {
					c.t.Fatalf("message %s after a gap whose oldest_id is %s", f.ID, announced)
				}
			}
			announced = ""
			want = i + 1
			got++
			if f.ID == last {
				return gaps, got
			}
		default:
			c.t.Fatalf("unexpected frame %+v", f)
		}
	}
}

func TestSlowClientGetsGapWhenTrimmedMidStream(t *testing.T) {
	ts := slowRoom(t, 50)
	c := ts.dialSmallWindow("slow", "", true)
	c.expect("ready")
	ids := ts.flood("slow", 1500) // c reads nothing meanwhile
	gaps, got := c.readBehind(ids, ids[len(ids)-1])
	if gaps == 0 || got == len(ids) {
		t.Fatalf("%d gaps, %d of %d messages: the client did not fall behind the trimming", gaps, got, len(ids))
	}
	// Live again, and told nothing more.
	live := ts.append("slow", "ana", 1)[0]
	if f := c.expect("message"); f.ID != live {
		t.Fatalf("live message %s, want %s", f.ID, live)
	}
	if ts.hub.Stats().Gaps.Load() == 0 {
		t.Fatal("hub counted no gap")
	}
}

func TestSlowClientWithoutTrimmingGetsNoGap(t *testing.T) {
	ts := slowRoom(t, 0) // capped at 10000: nothing is trimmed
	c := ts.dialSmallWindow("slow", "", true)
	c.expect("ready")
	ids := ts.flood("slow", 1500)
	gaps, got := c.readBehind(ids, ids[len(ids)-1])
	if gaps != 0 || got != len(ids) {
		t.Fatalf("%d gaps, %d of %d messages; want no gap and every message", gaps, got, len(ids))
	}
	if ts.hub.Stats().CatchUps.Load() == 0 {
		t.Fatal("the client never caught up from Redis: the test did not make it fall behind")
	}
}

func TestSlowCompatClientGetsNoGapFrame(t *testing.T) {
	ts := slowRoom(t, 50)
	c := ts.dialSmallWindow("slow", "", false)
	ids := ts.flood("slow", 1500)
	// readBehind fails on any frame but message; skipping without a gap
	// is what the compatible dialect gets, so only order is checked here.
	index := make(map[string]int, len(ids))
	for i, id := range ids {
		index[id] = i
	}
	last, got := -1, 0
	for last != len(ids)-1 {
		f := c.nextWithin(20 * time.Second)
		if f.Type != "message" || f.Message == "" {
			t.Fatalf("compatible client got %+v", f)
		}
		i, ok := index[f.ID]
		if !ok || i <= last {
			t.Fatalf("message %s (#%d) after #%d", f.ID, i, last)
		}
		last = i
		got++
	}
	if got == len(ids) || ts.hub.Stats().Gaps.Load() == 0 {
		t.Fatalf("%d of %d messages, %d gaps: the client did not fall behind the trimming", got, len(ids), ts.hub.Stats().Gaps.Load())
	}
}

// A since newer than any ID the room's stream handed out (an ID from an
// earlier life of the room, or made up) is treated like a reset: the client
// is told, gets the history from its start, then live messages.
func TestSinceBeyondLastIDStartsOver(t *testing.T) {
	ts := startServer(t)
	want := ts.append("lobby", "ana", 3)
	for _, beyond := range []func(last streams.ID) streams.ID{
		func(streams.ID) streams.ID { return streams.MaxID }, // 18446744073709551615-18446744073709551615
		streams.ID.Next, // the next ID the room would hand out
	} {
		last, _ := streams.ParseID(want[len(want)-1])
		since := beyond(last).String()
		c := ts.dial("lobby", "since="+since, true)
		if g := c.expect("gap"); g.Reason != "reset" || g.OldestID != want[0] {
			t.Fatalf("since=%s: gap %+v, want reason reset, oldest_id %s", since, g, want[0])
		}
		if got := ids(c.messages(len(want))); !slices.Equal(got, want) {
			t.Fatalf("since=%s: replay %v, want %v", since, got, want)
		}
		if r := c.expect("ready"); r.LastID != last.String() {
			t.Fatalf("since=%s: ready.last_id %s, want %s", since, r.LastID, last)
		}
		compat := ts.dial("lobby", "since="+since, false)
		if got := ids(compat.messages(len(want))); !slices.Equal(got, want) {
			t.Fatalf("since=%s, compatible: replay %v, want %v", since, got, want)
		}
		live := ts.append("lobby", "ana", 1)[0]
		for _, cl := range []*client{c, compat} {
			if f := cl.expect("message"); f.ID != live {
				t.Fatalf("since=%s: live message %s, want %s", since, f.ID, live)
			}
		}
		want = append(want, live)
	}
}

// A room whose stream is gone (deleted or flushed, the client passing no
// epoch) handed out nothing: any since is beyond it.
func TestSinceIntoEmptyRoomStartsOver(t *testing.T) {
	ts := startServer(t)
	c := ts.dial("fresh", "since=1732380000000-5", true)
	if g := c.expect("gap"); g.Reason != "reset" || g.OldestID != "0-0" {
		t.Fatalf("gap %+v, want reason reset, oldest_id 0-0", g)
	}
	if r := c.expect("ready"); r.LastID != "0-0" {
		t.Fatalf("ready.last_id %s, want 0-0", r.LastID)
	}
	live := ts.append("fresh", "ana", 1)[0]
	if f := c.expect("message"); f.ID != live {
		t.Fatalf("live message %s, want %s", f.ID, live)
	}
}

// A since within the room's history is not beyond it, even when the
// newest entries were deleted.
func TestSinceAtDeletedNewestIsNotAReset(t *testing.T) {
	ts := startServer(t)
	ids := ts.append("lobby", "ana", 2)
	if err := ts.rdb.XDel(context.Background(), ts.key("lobby"), ids[1]).Err(); err != nil {
		t.Fatal(err)
	}
	c := ts.dial("lobby", "since="+ids[1], true)
	if r := c.expect("ready"); r.LastID != ids[1] {
		t.Fatalf("ready %+v, want last_id %s and no gap before it", r, ids[1])
	}
}
