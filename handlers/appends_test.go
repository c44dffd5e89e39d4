package handlers_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/streams"
)

// pipelines counts the pipelines a client sends.
type pipelines struct{ n atomic.Int64 }

func (p *pipelines) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (p *pipelines) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (p *pipelines) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		p.n.Add(1)
		return next(ctx, cmds)
	}
}

// A client that sends many messages without waiting for their acks has
// them stored in batches (fewer pipelines than messages), in the order it
// sent them, and gets every reply in that order, a bad frame's error too.
func TestAppendsOfOneConnectionArePipelinedInOrder(t *testing.T) {
	counter := &pipelines{}
	ts := startServer(t, func(o *options) { o.storeHook = counter })
	c := ts.dial("burst", "user=ana", true)
	c.expect("ready")
	const n = 60
	before := counter.n.Load()
	for i := range n {
		if i == n/2 {
			c.send(`{"type":"message","message":""}`) // refused: empty
		}
		c.send(map[string]string{"type": "message", "message": fmt.Sprint(i), "client_id": fmt.Sprintf("b%d", i)})
	}
	var acks []frame
	refusedAt := -1
	var last string
	for len(acks) < n {
		switch f := c.next(); f.Type {
		case "ack":
			if want := fmt.Sprintf("b%d", len(acks)); f.ClientID != want {
				t.Fatalf("ack %d is for %s, want %s: replies out of send order", len(acks), f.ClientID, want)
			}
			if last != "" && !idLess(last, f.ID) {
				t.Fatalf("ack %s has ID %s, not after %s: stored out of send order", f.ClientID, f.ID, last)
			}
			last = f.ID
			acks = append(acks, f)
		case "error":
			refusedAt = len(acks)
		case "message":
		default:
			t.Fatalf("got %+v", f)
		}
	}
	if refusedAt != n/2 {
		t.Fatalf("the bad frame's error came after %d acks, want after %d (its place in the sends)", refusedAt, n/2)
	}
	if p := counter.n.Load() - before; p >= n {
		t.Fatalf("%d messages took %d pipelines: not batched", n, p)
	}
	stored, err := ts.rdb.XRange(context.Background(), streams.Keys{Prefix: ts.prefix}.Messages("burst"), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range stored {
		if e.Values["message"] != fmt.Sprint(i) {
			t.Fatalf("entry %d is %v: stored out of send order", i, e.Values)
		}
	}
}
