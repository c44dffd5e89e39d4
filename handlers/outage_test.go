package handlers_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/xroom/xroom/internal/redistest"
)

// A Redis outage is answered with error frames, not hangs or crashes, and
// everything heals once Redis is back.
func TestRedisOutageIsSurvivedAndHealed(t *testing.T) {
	rs := redistest.Start(t, redistest.WithAOF())
	ts := startServer(t, func(o *options) { o.rs = rs })
	a := ts.dial("lobby", "user=a", true)
	b := ts.dial("lobby", "user=b", true)
	a.expect("ready")
	b.expect("ready")

	rs.Stop(t)
	a.send(`{"type":"message","message":"while down","client_id":"d-1"}`)
	if f := a.expect("error"); f.Code != "unavailable" || f.ClientID != "d-1" {
		t.Fatalf("got %+v, want unavailable for d-1", f)
	}
	rs.Restart(t)

	// The same client_id goes through now, and both clients get it live.
	a.send(`{"type":"message","message":"after","client_id":"d-1"}`)
	var acked string
	for acked == "" {
		switch f := a.next(); f.Type {
		case "ack":
			acked = f.ID
		case "message":
			if f.Message != "after" {
				t.Fatalf("got %+v", f)
			}
		default:
			t.Fatalf("got %+v", f)
		}
	}
	if f := b.expect("message"); f.ID != acked || f.Message != "after" {
		t.Fatalf("b got %+v, want %s", f, acked)
	}
	// New connections work again, with the history.
	c := ts.dial("lobby", "since=0", true)
	if f := c.expect("message"); f.ID != acked {
		t.Fatalf("history %+v", f)
	}
	c.expect("ready")
}

// When Redis takes commands but refuses the tail's connection (maxclients),
// nobody waits on silence: /readyz answers 503 with the reason, and the
// room's clients get unavailable and close 1013, so they reconnect. Once
// Redis takes connections again, readiness and delivery come back.
func TestTailRefusedIsToldNotSilent(t *testing.T) {
	rs := redistest.Start(t)
	ts := startServer(t, func(o *options) {
		o.rs = rs
		o.hub.StallAfter = 300 * time.Millisecond
	})
	a := ts.dial("lobby", "user=a", true)
	a.expect("ready")
	if code := ts.readyz(); code != http.StatusOK {
		t.Fatalf("/readyz = %d before the fault", code)
	}
	ctx := context.Background()
	// Connections already open stay; every new one is refused.
	if err := ts.rdb.ConfigSet(ctx, "maxclients", "1").Err(); err != nil {
		t.Fatal(err)
	}
	if err := ts.rdb.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	if f := a.nextWithin(10 * time.Second); f.Type != "error" || f.Code != "unavailable" {
		t.Fatalf("got %+v, want unavailable", f)
	}
	_, _, err := a.conn.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseTryAgainLater {
		t.Fatalf("got %v, want close 1013", err)
	}
	if code := ts.readyz(); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz = %d while the tail is refused, want 503", code)
	}

	if err := ts.rdb.ConfigSet(ctx, "maxclients", "10000").Err(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for ts.readyz() != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("/readyz did not heal within 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	b := ts.dial("lobby", "user=b", true)
	b.expect("ready")
	b.send(`{"type":"message","message":"back","client_id":"k1"}`)
	got := map[string]bool{}
	for len(got) < 2 {
		got[b.next().Type] = true
	}
	if !got["ack"] || !got["message"] {
		t.Fatalf("after healing got %v, want the ack and the message", got)
	}
}

// readyz returns the status of GET /readyz.
func (ts *testServer) readyz() int {
	resp, err := http.Get(ts.base + "/readyz")
	if err != nil {
		ts.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
