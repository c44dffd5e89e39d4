package handlers_test

import (
	"testing"

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
