package main

import (
	"context"
	"fmt"
	"testing"

	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/streams"
)

// Out of the box, a client that floods is refused with rate_limited frames
// and what is refused is not stored.
func TestRunAppliesDefaultRateLimits(t *testing.T) {
	srv := redistest.Shared(t)
	prefix := redistest.Prefix(t)
	env := baseEnv(t, map[string]string{"REDIS_URL": srv.URL(), "CHAT_PREFIX": prefix, "HISTORY_ON_JOIN": "0"})
	delete(env, "RATE_LIMIT")
	delete(env, "USER_RATE_LIMIT")
	r := startRun(t, env)
	c := dial(t, r.base, "flood", "fl")
	c.expect("ready")
	// 200 at once: accepting them all would take 8 s of refill at the
	// defaults (burst 40 then 20/s per user), far longer than sending does.
	const n = 200
	for i := range n {
		c.send(map[string]string{"type": "message", "message": "x", "client_id": fmt.Sprintf("f%d", i)})
	}
	acked, limited := 0, 0
	for acked+limited < n {
		switch f := c.next(); {
		case f.Type == "ack":
			acked++
		case f.Type == "error" && f.Code == "rate_limited":
			limited++
		case f.Type == "message":
		default:
			t.Fatalf("unexpected %+v", f)
		}
	}
	if limited == 0 || acked < 20 {
		t.Fatalf("%d acked, %d limited; want the burst through and the rest limited", acked, limited)
	}
	if got := srv.Client(t).XLen(context.Background(), streams.Keys{Prefix: prefix}.Messages("flood")).Val(); got != int64(acked) {
		t.Fatalf("%d stored, %d acked", got, acked)
	}
}
