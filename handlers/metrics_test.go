package handlers_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/internal/redistest"
)

// scrape reads GET /metrics and returns each sample by its series
// ("name" or `name{label="v"}`).
func (ts *testServer) scrape() map[string]float64 {
	ts.t.Helper()
	resp, err := http.Get(ts.base + "/metrics")
	if err != nil {
		ts.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		ts.t.Fatalf("GET /metrics: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			ts.t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// scrapeUntil scrapes until ok holds (or 10 s pass) and returns the last scrape.
func (ts *testServer) scrapeUntil(ok func(map[string]float64) bool) map[string]float64 {
	ts.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		m := ts.scrape()
		if ok(m) || time.Now().After(deadline) {
			return m
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestMetricsCountConnectionsMessagesAndRedis(t *testing.T) {
	ts := startServer(t)
	before := ts.scrape()
	for _, name := range []string{`xroom_connections_open{dialect="xroom"}`, `xroom_connections_open{dialect="compatible"}`, "xroom_messages_appended_total", "xroom_messages_delivered_total", "xroom_catchups_total", "xroom_websocket_write_errors_total", "xroom_redis_rtt_seconds_count", "xroom_tail_lag_seconds_count", "xroom_replay_entries_count"} {
		if _, ok := before[name]; !ok {
			t.Errorf("no %s in /metrics", name)
		}
	}
	ts.append("lobby", "old", 3)
	a := ts.dial("lobby", "user=a", true)
	b := ts.dial("lobby", "user=b", false)
	a.messages(3)
	a.expect("ready")
	b.messages(3)
	mid := ts.scrapeUntil(func(m map[string]float64) bool {
		return m["xroom_replay_entries_count"]-before["xroom_replay_entries_count"] >= 1
	})
	if mid[`xroom_connections_open{dialect="xroom"}`] != 1 || mid[`xroom_connections_open{dialect="compatible"}`] != 1 {
		t.Errorf("connections open = %v xroom, %v compatible; want 1 and 1", mid[`xroom_connections_open{dialect="xroom"}`], mid[`xroom_connections_open{dialect="compatible"}`])
	}
	if got := mid["xroom_replay_entries_count"] - before["xroom_replay_entries_count"]; got < 1 {
		t.Errorf("replay sizes observed %v times, want at least 1 (a's ready)", got)
	}
	if got := mid["xroom_replay_entries_sum"] - before["xroom_replay_entries_sum"]; got < 3 {
		t.Errorf("replayed entries sum grew by %v, want at least 3", got)
	}

	// With client_ids, so that the acks say when each append is counted
	// (the tail may deliver an entry before its append has returned).
	const n = 5
	for i := range n {
		a.send(fmt.Sprintf(`{"message":"live %d","client_id":"c%d"}`, i, i))
	}
	for acks, msgs := 0, 0; acks < n || msgs < n; {
		switch f := a.next(); f.Type {
		case "ack":
			acks++
		case "message":
			msgs++
		default:
			t.Fatalf("got %+v", f)
		}
	}
	b.messages(n)
	// A frame is counted just after its write returns: the client may read
	// it a moment before.
	after := ts.scrapeUntil(func(m map[string]float64) bool {
		return m["xroom_messages_delivered_total"]-before["xroom_messages_delivered_total"] >= 2*(3+n)
	})
	if got := after["xroom_messages_appended_total"] - before["xroom_messages_appended_total"]; got != 3+n {
		t.Errorf("appended grew by %v, want %d", got, 3+n)
	}
	// 3 history + 5 live to each of two clients.
	if got := after["xroom_messages_delivered_total"] - before["xroom_messages_delivered_total"]; got != 2*(3+n) {
		t.Errorf("delivered grew by %v, want %d", got, 2*(3+n))
	}
	if got := after["xroom_tail_lag_seconds_count"] - before["xroom_tail_lag_seconds_count"]; got < n {
		t.Errorf("tail lag observed %v times, want at least %d", got, n)
	}
	if got := after["xroom_redis_rtt_seconds_count"] - before["xroom_redis_rtt_seconds_count"]; got < n {
		t.Errorf("Redis round trips observed %v times, want at least %d", got, n)
	}
	if after["xroom_rooms_tailed"] != 1 {
		t.Errorf("rooms tailed = %v, want 1", after["xroom_rooms_tailed"])
	}
}

// A connection that falls behind its room's buffer reads from Redis, and
// the catch-up counter shows it.
func TestMetricsCountCatchUps(t *testing.T) {
	ts := startServer(t, func(o *options) { o.hub.Buffer = 16 })
	c := ts.dial("busy", "", true)
	c.expect("ready")
	before := ts.scrape()["xroom_catchups_total"]
	// One transaction: the tail reads all 200 in one XREAD, so its buffer
	// of 16 drops most of them before the connection's writer looks.
	const n = 200
	tx := ts.rdb.TxPipeline()
	for i := range n {
		tx.XAdd(context.Background(), &redis.XAddArgs{Stream: ts.key("busy"), Values: []any{"user", "u", "message", fmt.Sprint(i)}})
	}
	if _, err := tx.Exec(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i, f := range c.messages(n) {
		if f.Message != fmt.Sprint(i) {
			t.Fatalf("message %d = %q", i, f.Message)
		}
	}
	if got := ts.scrape()["xroom_catchups_total"] - before; got < 1 {
		t.Fatalf("catch-ups grew by %v, want at least 1", got)
	}
}

// Redis errors are counted by command while Redis is down.
func TestMetricsCountRedisErrors(t *testing.T) {
	rs := redistest.Start(t)
	ts := startServer(t, func(o *options) { o.rs = rs })
	a := ts.dial("lobby", "user=a", true)
	a.expect("ready")
	before := ts.scrape()
	rs.Stop(t)
	a.send(`{"type":"message","message":"while down","client_id":"d-1"}`)
	if f := a.expect("error"); f.Code != "unavailable" {
		t.Fatalf("got %+v, want unavailable", f)
	}
	after := ts.scrape()
	var grew float64
	for series, v := range after {
		if strings.HasPrefix(series, "xroom_redis_errors_total{") {
			grew += v - before[series]
		}
	}
	if grew < 1 {
		t.Fatalf("Redis errors grew by %v during an outage, want at least 1 (%v)", grew, after)
	}
}
