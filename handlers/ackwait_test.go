package handlers_test

import (
	"testing"
	"time"

	"github.com/xroom/xroom/internal/redistest"
)

// With REDIS_ACK_REPLICAS=1 and the replica frozen, a WebSocket send gets
// `unavailable` with its client_id and a POST gets 503 redis_unavailable,
// within the ack timeout; once the replica is back, the resends are acked
// (the WebSocket one as a duplicate of what was stored) and stored once.
func TestAckReplicasUnavailableThenResend(t *testing.T) {
	primary := redistest.Start(t)
	replica := redistest.StartReplica(t, primary)
	const key = "k3y"
	ts := startServer(t, func(o *options) {
		o.rs = primary
		o.ackReplicas, o.ackTimeout = 1, 300*time.Millisecond
		o.cfg.APIKey = key
	})
	c := &tracker{client: ts.dial("acks", "user=a", true)}
	c.expect("ready")
	c.sendAcked("replicated", "w-1")

	replica.Pause(t)
	paused := true
	defer func() {
		if paused {
			replica.Resume(t)
		}
	}()
	c.send(`{"type":"message","message":"held","client_id":"w-2"}`)
	if f := c.reply("w-2"); f.Type != "error" || f.Code != "unavailable" {
		t.Fatalf("send with the replica frozen: %+v, want error unavailable", f)
	}
	url := ts.base + "/api/rooms/acks/messages"
	body := `{"user":"bot","message":"api","client_id":"h-1"}`
	var e apiErr
	if s := do(t, "POST", url, "Bearer "+key, body, &e); s != 503 || e.Error.Code != "redis_unavailable" {
		t.Fatalf("POST with the replica frozen: %d %+v, want 503 redis_unavailable", s, e)
	}
	replica.Resume(t)
	paused = false

	c.send(`{"type":"message","message":"held","client_id":"w-2"}`)
	if f := c.reply("w-2"); f.Type != "ack" || !f.Duplicate {
		t.Fatalf("resend: %+v, want an ack of the first store", f)
	}
	var ok struct {
		ID        string
		Duplicate bool
	}
	if s := do(t, "POST", url, "Bearer "+key, body, &ok); s != 200 || !ok.Duplicate {
		t.Fatalf("POST resend: %d %+v, want 200 duplicate", s, ok)
	}
	if n := ts.rdb.XLen(t.Context(), ts.key("acks")).Val(); n != 3 {
		t.Fatalf("the stream holds %d entries, want 3 (w-1, w-2, h-1 once each)", n)
	}
}
