package handlers_test

import (
	"context"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/internal/testkit"
)

// SSE streams count in the same per-address limit as WebSockets (one cap
// for both), are refused with 429 and a JSON body, and free their place
// when they close.
func TestSSEConnectionsPerIPShareTheWebSocketsCap(t *testing.T) {
	ts := startServer(t, twoConnsPerIP)
	ws := ts.dial("cap", "", true)
	ws.expect("ready")
	s := ts.openSSE("cap", "", nil)
	s.expect("ready")
	c, status, body := ts.trySSE("cap", "", nil)
	if c != nil || status != http.StatusTooManyRequests || apiErrorCode(t, body) != "too_many_connections" {
		t.Fatalf("third stream: %d %s, want 429 too_many_connections", status, body)
	}
	if _, err := ts.tryDial("cap", "", true, nil); err == nil || !strings.Contains(err.Error(), "too_many_connections") {
		t.Fatalf("third WebSocket: %v, want 429", err)
	}
	s.resp.Body.Close()
	testkit.Eventually(t, 10*time.Second, "the stream's place freed", func() bool { return ts.srv.OpenFrom("127.0.0.1") == 1 })
	ts.openSSE("cap", "", nil).expect("ready")
}

// MAX_CONNS counts streams with WebSockets. Of many streams opened at
// once on an instance that takes one more, one is served and the others
// are refused with 503 server_full and a JSON body, whether at the check
// before the stream or at the binding one after the connection was taken
// over (nothing was written yet: still an HTTP answer).
func TestSSEMaxConnsRefusesWithJSONEvenWhenRacing(t *testing.T) {
	ts := startServer(t, func(o *options) { o.cfg.Limits.MaxConns = 2 })
	ts.dial("full", "", true).expect("ready")
	const n = 16
	var wg sync.WaitGroup
	var mu sync.Mutex
	served := 0
	codes := map[string]int{}
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(ts.sseURL("full", ""))
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if resp.StatusCode == http.StatusOK {
				served++
				t.Cleanup(func() { resp.Body.Close() }) // open till all are answered
				return
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
				t.Errorf("refusal %d %s (Retry-After %q)", resp.StatusCode, body, resp.Header.Get("Retry-After"))
			}
			codes[apiErrorCode(t, string(body))]++
		}()
	}
	wg.Wait()
	if served != 1 || codes["server_full"] != n-1 {
		t.Fatalf("%d served, refusals %v; want 1 and %d server_full", served, codes, n-1)
	}
	if got := ts.scrape()[`xroom_websocket_refused_total{reason="server_full"}`]; got != n-1 {
		t.Errorf("refused server_full = %v, want %d", got, n-1)
	}
}

// The metrics count streams under the dialect sse, and the messages they
// are sent among those delivered.
func TestSSEMetricsDialect(t *testing.T) {
	ts := startServer(t)
	before := ts.scrape()
	ts.append("metrics", "ana", 3)
	s := ts.openSSE("metrics", "", nil)
	s.messages(3)
	s.expect("ready")
	m := ts.scrape()
	if m[`xroom_connections_open{dialect="sse"}`] != 1 || m[`xroom_connections_total{dialect="sse"}`]-before[`xroom_connections_total{dialect="sse"}`] != 1 {
		t.Errorf("sse open %v, total %v; want 1 and 1", m[`xroom_connections_open{dialect="sse"}`], m[`xroom_connections_total{dialect="sse"}`])
	}
	if m[`xroom_connections_open{dialect="xroom"}`] != 0 {
		t.Errorf("the stream counted as a WebSocket")
	}
	if got := m["xroom_messages_delivered_total"] - before["xroom_messages_delivered_total"]; got != 3 {
		t.Errorf("delivered %v, want 3", got)
	}
	s.resp.Body.Close()
	m = ts.scrapeUntil(func(m map[string]float64) bool { return m[`xroom_connections_open{dialect="sse"}`] == 0 })
	if m[`xroom_connections_open{dialect="sse"}`] != 0 {
		t.Errorf("a closed stream still counted open")
	}
}

// Shutdown ends open streams (EventSource then reconnects, to another
// instance or this one restarted), waits for them, and refuses new ones
// with 503 shutting_down.
func TestSSEShutdownEndsStreams(t *testing.T) {
	ts := startServer(t)
	s := ts.openSSE("bye", "", nil)
	s.expect("ready")
	if n := ts.srv.Connections(); n != 1 {
		t.Fatalf("%d connections, want the stream", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := ts.srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	s.waitEnd(5 * time.Second)
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("shutdown took %v", took)
	}
	if n := ts.srv.Connections(); n != 0 {
		t.Fatalf("%d connections left", n)
	}
	c, status, body := ts.trySSE("bye", "", nil)
	if c != nil || status != http.StatusServiceUnavailable || apiErrorCode(t, body) != "shutting_down" {
		t.Fatalf("a stream during shutdown: %d %s", status, body)
	}
}

// A stream lives far beyond the HTTP timeouts (header, idle, and the
// write timeout set once per answer): it is no longer the HTTP server's.
// Keep-alive comments come every SSEKeepAlive, and messages still flow.
func TestSSEOutlivesTheHTTPTimeoutsWithKeepAlives(t *testing.T) {
	const bound = 300 * time.Millisecond
	ts := startServer(t, func(o *options) {
		o.cfg.HeaderTimeout, o.cfg.IdleTimeout, o.cfg.WriteWait = bound, bound, bound
		o.cfg.SSEKeepAlive = 100 * time.Millisecond
	})
	s := ts.openSSE("long", "", nil)
	s.expect("ready")
	time.Sleep(10 * bound)
	id := ts.append("long", "ana", 1)[0]
	if f := s.messages(1)[0]; f.ID != id {
		t.Fatalf("got %+v", f)
	}
	if n := len(s.comment); n < 10 || s.comment[0] != "keep-alive" {
		t.Fatalf("%d comments %q in %v, want one every 100 ms", n, s.comment, 10*bound)
	}
}

// A token that runs out ends the stream with an error event of code
// token_expired (checked at each keep-alive); a reconnect with it is
// then refused (401).
func TestSSEStreamEndsWhenItsTokenExpires(t *testing.T) {
	ts := startServer(t, withAuth, func(o *options) { o.cfg.SSEKeepAlive = 200 * time.Millisecond })
	// Expired 28 s ago: the 30 s leeway leaves it valid for 2 s more.
	soon := expiredToken(t, "alice", 28*time.Second)
	s := ts.openSSE("auth", "token="+soon, nil)
	if f := s.expect("ready").frame(t); f.Type != "ready" {
		t.Fatal(f)
	}
	evs := s.waitEnd(20 * time.Second)
	if len(evs) == 0 || evs[len(evs)-1].Event != "error" || !strings.Contains(evs[len(evs)-1].Data, `"code":"token_expired"`) {
		t.Fatalf("the stream ended after %+v, want an error event token_expired", evs)
	}
	c, status, body := ts.trySSE("auth", "token="+soon, nil)
	if c != nil || status != http.StatusUnauthorized || apiErrorCode(t, body) != "token_expired" {
		t.Fatalf("reconnect: %d %s", status, body)
	}
}

// Streams pass the WebSocket's checks: a token (user from its sub, room
// from its rooms), and the origin.
func TestSSEAuthAndOriginChecks(t *testing.T) {
	ts := startServer(t, withAuth, func(o *options) { o.cfg.AllowedOrigins = []string{"https://app.example"} })
	tok := mint(t, "alice", []string{"team-*"}, time.Hour)
	for _, tc := range []struct {
		room, query string
		header      http.Header
		status      int
		code        string
	}{
		{"team-a", "", nil, 401, "token_required"},
		{"team-a", "token=nope", nil, 401, "token_invalid"},
		{"lobby", "token=" + tok, nil, 403, "room_forbidden"},
		{"team-a", "user=bob&token=" + tok, nil, 403, "user_mismatch"},
		{"team-a", "token=" + tok, http.Header{"Origin": {"http://evil.example"}}, 403, "bad_origin"},
	} {
		c, status, body := ts.trySSE(tc.room, tc.query, tc.header)
		if c != nil || status != tc.status || apiErrorCode(t, body) != tc.code {
			t.Errorf("%s?%s %v: %d %s; want %d %s", tc.room, tc.query, tc.header, status, body, tc.status, tc.code)
		}
	}
	s := ts.openSSE("team-a", "", http.Header{"Authorization": {"Bearer " + tok}, "Origin": {"https://app.example"}})
	s.expect("ready")
	if got := s.resp.Header.Get("Access-Control-Allow-Origin"); got != "https://app.example" {
		t.Errorf("Access-Control-Allow-Origin %q for an allowed origin", got)
	}
	ws := ts.dial("team-a", "token="+mint(t, "bob", nil, time.Hour), true)
	ws.expect("ready")
	ws.send(`{"message":"hi"}`)
	if f := s.messages(1)[0]; f.User != "bob" || f.Message != "hi" {
		t.Fatalf("got %+v", f)
	}
}

// A reader that stops reading while many MB go through its room holds
// bounded memory in the server (a batch, not a queue: the writer blocks
// on the full socket and reads the room no further) and no goroutines
// pile up; once it reads again it catches up from Redis with every
// message, once and in order, on the same stream.
func TestSSESlowReaderIsBoundedAndCatchesUp(t *testing.T) {
	const (
		ring    = 64
		msgSize = 4000
		total   = 8000 // 32 MB of messages
	)
	ts := startServer(t, func(o *options) {
		o.cfg.WriteWait = 2 * time.Minute // stopped, not gone: it must not be cut off
		o.cfg.MaxMessageBytes = msgSize
		o.hub.Buffer = ring
		o.hub.ReadCount = ring
		o.maxLen = 2 * total // nothing trimmed: no gap either
	})
	redistest.RequireReal(t, ts.redis)                   // an in-process Redis would hold the flood in this heap
	conn := rawSSE(t, ts, "flood", "user=stuck", 64<<10) // small and fixed: the writer soon blocks
	testkit.Eventually(t, 10*time.Second, "the stream open", func() bool { return ts.srv.Connections() == 1 })

	base, baseG := liveHeap(), runtime.NumGoroutine()
	peakG := 0
	want, early, peak := ts.heapUnderFlood(total, msgSize, func() { peakG = max(peakG, runtime.NumGoroutine()) })
	if ts.srv.Connections() != 1 {
		t.Fatal("the stopped reader was cut off")
	}
	t.Logf("live heap: %d KB before, %d KB in the first quarter, peak %d KB after it, with 32 MB through the room; goroutines %d before, %d at most",
		base>>10, early>>10, peak>>10, baseG, peakG)
	if grew := int64(peak) - int64(early); grew > 16<<20 {
		t.Errorf("heap grew by %d KB from the first quarter of the flood to the end", grew>>10)
	}
	if grew := int64(peak) - int64(base); grew > 32<<20 {
		t.Errorf("heap grew by %d KB while 32 MB went to a reader that reads nothing", grew>>10)
	}
	if peakG > baseG+8 {
		t.Errorf("goroutines grew from %d to %d", baseG, peakG)
	}

	// It reads again: everything, once, in order, on the same stream (the
	// first ones may come before ready, as history: the join may have
	// read the room after the flood began).
	items := make(chan sseItem, 256)
	go parseSSE(conn, items)
	c := &sseConn{t: t, items: items, skipPresence: true}
	got, readies := make([]string, 0, total), 0
	for len(got) < total {
		switch e := c.nextWithin(60 * time.Second); e.Event {
		case "message":
			got = append(got, e.ID)
		case "ready":
			readies++
		default:
			t.Fatalf("after %d messages: a %s event %.200s", len(got), e.Event, e.Data)
		}
	}
	if readies != 1 {
		t.Fatalf("%d ready events", readies)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %d messages, not the %d stored in order", len(got), len(want))
	}
	if ts.hub.Stats().CatchUps.Load() == 0 {
		t.Fatal("the reader never caught up from Redis: it was buffered instead")
	}
}

// A reader stuck past WriteWait is cut off, as on the WebSocket; it
// resumes with Last-Event-ID set to the last event it got (what
// EventSource does) and loses nothing.
func TestSSEReaderCutOffResumesWithLastEventID(t *testing.T) {
	ts := startServer(t, func(o *options) {
		o.cfg.WriteWait = 500 * time.Millisecond
		o.hub.Buffer = 64
	})
	conn := rawSSE(t, ts, "cut", "", 64<<10)
	testkit.Eventually(t, 10*time.Second, "the stream open", func() bool { return ts.srv.Connections() == 1 })
	want := ts.flood("cut", 600) // 16 KiB each: more than the socket buffers hold
	testkit.Eventually(t, 20*time.Second, "the stuck reader cut off", func() bool { return ts.srv.Connections() == 0 })

	items := make(chan sseItem, 256)
	go parseSSE(conn, items)
	first := &sseConn{t: t, items: items, skipPresence: true}
	evs := first.waitEnd(20 * time.Second)
	var got []string
	for _, e := range evs {
		if e.Event == "message" {
			got = append(got, e.ID)
		}
	}
	if len(got) >= len(want) {
		t.Fatalf("the stuck reader got all %d messages before it was cut off", len(got))
	}
	last := ""
	if len(got) > 0 {
		last = got[len(got)-1]
	}
	h := http.Header{}
	if last != "" {
		h.Set("Last-Event-ID", last)
	}
	again := ts.openSSE("cut", "since=0", h)
	for _, f := range again.messages(len(want) - len(got)) {
		got = append(got, f.ID)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("after the resume: %d messages, not the %d stored once in order", len(got), len(want))
	}
	again.expect("ready")
}

// expiredToken is a token for sub whose exp was ago: with the 30 s
// leeway it is honoured for 30 s - ago more.
func expiredToken(t *testing.T, sub string, ago time.Duration) string {
	t.Helper()
	return signed(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": sub, "exp": time.Now().Add(-ago).Unix()})
}

// Redis failing while a stream joins (its room followed already, so the
// subscription is served from memory): an error event of code
// unavailable, and the stream ends, for EventSource to come back after
// its retry delay; it does, once Redis is back.
func TestSSEEndsWithUnavailableWhenRedisFailsAtTheJoin(t *testing.T) {
	rs := redistest.Start(t)
	ts := startServer(t, func(o *options) {
		o.rs = rs
		o.cfg.RedisTimeout = 500 * time.Millisecond
	})
	ts.append("down", "ana", 2)
	ws := ts.dial("down", "", true) // keeps the room followed
	ws.messages(2)
	ws.expect("ready")
	rs.Pause(t)
	s := ts.openSSE("down", "", nil)
	evs := s.waitEnd(20 * time.Second)
	if len(evs) != 1 || evs[0].Event != "error" || !strings.Contains(evs[0].Data, `"code":"unavailable"`) {
		t.Fatalf("events %+v, want one error event unavailable", evs)
	}
	rs.Resume(t)
	again := ts.openSSE("down", "", nil)
	again.messages(2)
	again.expect("ready")
}
