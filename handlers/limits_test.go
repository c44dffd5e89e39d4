package handlers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xroom/xroom/handlers"
)

// slowRate refills one token in 1000 s: no test run refills one by chance.
const slowRate = 0.001

// sendAll sends n messages with client_ids prefix0..prefix(n-1) and sorts
// the answers: the client_ids acked and those refused with rate_limited.
func sendAll(t *testing.T, c *client, prefix string, n int) (acked, limited []string) {
	t.Helper()
	for i := range n {
		c.send(fmt.Sprintf(`{"type":"message","message":"m%d","client_id":"%s%d"}`, i, prefix, i))
	}
	for len(acked)+len(limited) < n {
		f := c.next()
		switch {
		case f.Type == "ack":
			acked = append(acked, f.ClientID)
		case f.Type == "error" && f.Code == "rate_limited":
			if f.ClientID == "" || !strings.Contains(f.Message, "not stored") {
				t.Fatalf("rate_limited frame %+v lacks its client_id or a readable message", f)
			}
			limited = append(limited, f.ClientID)
		case f.Type == "message":
		default:
			t.Fatalf("unexpected frame %+v", f)
		}
	}
	return acked, limited
}

func TestRateLimitPerConnection(t *testing.T) {
	ts := startServer(t, func(o *options) { o.cfg.Limits = handlers.Limits{Rate: slowRate, Burst: 3}; o.cfg.HistoryOnJoin = 0 })
	c := ts.dial("lobby", "user=ana", true)
	c.expect("ready")
	acked, limited := sendAll(t, c, "a", 5)
	if len(acked) != 3 || len(limited) != 2 || limited[0] != "a3" || limited[1] != "a4" {
		t.Fatalf("acked %v, limited %v; want the first 3 acked", acked, limited)
	}
	// The connection lives on and nothing refused was stored.
	if n := ts.rdb.XLen(context.Background(), ts.key("lobby")).Val(); n != 3 {
		t.Fatalf("%d entries stored, want 3", n)
	}
	// Another connection of the same user has its own bucket.
	c2 := ts.dial("lobby", "user=ana", true)
	c2.expect("ready")
	if acked, _ := sendAll(t, c2, "b", 1); len(acked) != 1 {
		t.Fatal("a second connection was limited by the first one's bucket")
	}
}

func TestRateLimitPerUserAcrossConnections(t *testing.T) {
	ts := startServer(t, func(o *options) {
		o.cfg.Limits = handlers.Limits{UserRate: slowRate, UserBurst: 3}
		o.cfg.HistoryOnJoin = 0
	})
	a1 := ts.dial("lobby", "user=ana", true)
	a1.expect("ready")
	a2 := ts.dial("lobby", "user=ana", true)
	a2.expect("ready")
	ack1, _ := sendAll(t, a1, "x", 2)
	ack2, lim2 := sendAll(t, a2, "y", 2)
	if len(ack1) != 2 || len(ack2) != 1 || len(lim2) != 1 {
		t.Fatalf("ana's two connections: acked %v and %v, limited %v; want 3 in all", ack1, ack2, lim2)
	}
	bob := ts.dial("lobby", "user=bob", true)
	bob.expect("ready")
	if acked, _ := sendAll(t, bob, "z", 3); len(acked) != 3 {
		t.Fatal("bob was limited by ana's sends")
	}
}

func TestRateLimitedCompatibleClientGetsAnErrorWithMessage(t *testing.T) {
	ts := startServer(t, func(o *options) { o.cfg.Limits = handlers.Limits{Rate: slowRate, Burst: 1} })
	c := ts.dial("lobby", "", false)
	c.send(`{"message":"one"}`)
	if f := c.expect("message"); f.Message != "one" {
		t.Fatalf("got %+v", f)
	}
	c.send(`{"message":"two","client_id":"c2"}`)
	// The refusal says, for programs too, when to send it again.
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, data, err := c.conn.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Type, Code, Message string
		ClientID            string `json:"client_id"`
		RetryAfterMs        int64  `json:"retry_after_ms"`
	}
	if json.Unmarshal(data, &f) != nil || f.Type != "error" || f.Code != "rate_limited" || f.Message == "" || f.ClientID != "c2" {
		t.Fatalf("got %s, want rate_limited with a message and the client_id", data)
	}
	// One token per 1000 s: the wait is about that long.
	if f.RetryAfterMs < 990_000 || f.RetryAfterMs > 1_000_000 {
		t.Fatalf("retry_after_ms %d, want about 1000000", f.RetryAfterMs)
	}
}

// twoConnsPerIP caps connections (WebSockets and event streams) per address at 2.
func twoConnsPerIP(o *options) { o.cfg.Limits = handlers.Limits{MaxConnsPerIP: 2} }

func TestConnectionsPerIPAreCapped(t *testing.T) {
	ts := startServer(t, twoConnsPerIP)
	a := ts.dial("lobby", "", true)
	a.expect("ready")
	b := ts.dial("lobby", "", true)
	b.expect("ready")
	c, err := ts.tryDial("lobby", "", true, nil)
	if err == nil || c == nil || c.resp == nil || c.resp.StatusCode != 429 || !strings.Contains(err.Error(), `"too_many_connections"`) {
		t.Fatalf("third connection from loopback: %v, want 429 too_many_connections", err)
	}
	// Other clients and the API still work; a closed connection frees its place.
	if s := do(t, "GET", ts.base+"/api/rooms", "", "", nil); s != 200 {
		t.Fatalf("API: %d", s)
	}
	a.conn.Close()
	deadline := time.Now().Add(10 * time.Second)
	for ts.srv.OpenFrom("127.0.0.1") > 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still counted", ts.srv.OpenFrom("127.0.0.1"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	ts.dial("lobby", "", true).expect("ready")
	if n := ts.srv.OpenFrom("127.0.0.1"); n != 2 {
		t.Fatalf("%d counted, want 2", n)
	}
}

func TestConnectionCapBehindATrustedProxy(t *testing.T) {
	xff := func(v string) http.Header { return http.Header{"X-Forwarded-For": {v}} }
	direct := startServer(t, func(o *options) { o.cfg.Limits = handlers.Limits{MaxConnsPerIP: 1} })
	direct.dial("lobby", "", true).expect("ready")
	// Without TRUSTED_PROXIES the header is the client's own word: ignored.
	if _, err := direct.tryDial("lobby", "", true, xff("203.0.113.9")); err == nil {
		t.Fatal("X-Forwarded-For from an untrusted peer got around the cap")
	}

	proxied := startServer(t, func(o *options) {
		o.cfg.Limits = handlers.Limits{MaxConnsPerIP: 1, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	})
	for _, h := range []string{"203.0.113.1", "198.51.100.7, 203.0.113.2", "203.0.113.3, 127.0.0.5"} {
		c, err := proxied.tryDial("lobby", "", true, xff(h))
		if err != nil {
			t.Fatalf("X-Forwarded-For %s: %v", h, err)
		}
		c.expect("ready")
	}
	// The nearest untrusted hop counts, not the leftmost (which a client can forge).
	if _, err := proxied.tryDial("lobby", "", true, xff("10.9.9.9, 203.0.113.2")); err == nil {
		t.Fatal("a second connection from 203.0.113.2 was accepted")
	}
	for _, ip := range []string{"203.0.113.1", "203.0.113.2", "203.0.113.3"} {
		if n := proxied.srv.OpenFrom(ip); n != 1 {
			t.Errorf("%s: %d counted, want 1", ip, n)
		}
	}
}

func TestReplayIsCappedWithALimitedGap(t *testing.T) {
	ts := startServer(t, func(o *options) { o.cfg.Limits = handlers.Limits{MaxReplay: 5} })
	all := ts.append("lobby", "u", 20)
	for _, since := range []string{"0", all[2]} {
		c := ts.dial("lobby", "since="+since, true)
		g := c.expect("gap")
		if g.Reason != "limited" || g.OldestID != all[15] {
			t.Fatalf("since=%s: gap %+v, want limited from %s", since, g, all[15])
		}
		if got := ids(c.messages(5)); !slices.Equal(got, all[15:]) {
			t.Fatalf("since=%s: replayed %v, want %v", since, got, all[15:])
		}
		if r := c.expect("ready"); r.LastID != all[19] {
			t.Fatalf("ready %+v", r)
		}
	}
	// Within the cap: no gap, exactly what was missed.
	c := ts.dial("lobby", "since="+all[14], true)
	if got := ids(c.messages(5)); !slices.Equal(got, all[15:]) {
		t.Fatalf("replayed %v", got)
	}
	c.expect("ready")
	// The compatible dialect gets the newest 5 and nothing else.
	compat := ts.dial("lobby", "since=0", false)
	if got := ids(compat.messages(5)); !slices.Equal(got, all[15:]) {
		t.Fatalf("compatible: replayed %v", got)
	}
	// The rest is still there for paging.
	var p page
	if s := do(t, "GET", ts.base+"/api/rooms/lobby/messages?before="+all[15]+"&limit=500", "", "", &p); s != 200 || len(p.Messages) != 15 {
		t.Fatalf("older history: %d, %d messages", s, len(p.Messages))
	}
}

func TestReplayCapAppliesAfterAReset(t *testing.T) {
	ts := startServer(t, func(o *options) { o.cfg.Limits = handlers.Limits{MaxReplay: 3} })
	all := ts.append("lobby", "u", 8)
	c := ts.dial("lobby", "epoch=an-old-epoch", true)
	if g := c.expect("gap"); g.Reason != "reset" {
		t.Fatalf("gap %+v, want reset", g)
	}
	if g := c.expect("gap"); g.Reason != "limited" || g.OldestID != all[5] {
		t.Fatalf("gap %+v, want limited from %s", g, all[5])
	}
	if got := ids(c.messages(3)); !slices.Equal(got, all[5:]) {
		t.Fatalf("replayed %v", got)
	}
	c.expect("ready")
}
