package handlers_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/internal/testkit"
	"github.com/xroom/xroom/streams"
)

// gate is a go-redis hook that, once closed, holds the replies of the
// commands it matches (before the caller sees them) until opened again.
type gate struct {
	match  func(name string) bool
	closed atomic.Bool
	held   atomic.Int64 // replies held so far
	mu     sync.Mutex
	open   chan struct{}
}

func newGate(match func(string) bool) *gate {
	return &gate{match: match, open: make(chan struct{})}
}

// hold closes the gate until release, which also runs when the test ends
// (a held reply would keep the server from shutting down).
func (g *gate) hold(t *testing.T) {
	g.mu.Lock()
	g.open = make(chan struct{})
	g.mu.Unlock()
	g.closed.Store(true)
	t.Cleanup(g.release)
}

func (g *gate) release() {
	g.closed.Store(false)
	g.mu.Lock()
	select {
	case <-g.open:
	default:
		close(g.open)
	}
	g.mu.Unlock()
}

func (g *gate) wait(cmds []redis.Cmder) {
	if !g.closed.Load() {
		return
	}
	for _, c := range cmds {
		if g.match(c.Name()) {
			g.mu.Lock()
			open := g.open
			g.mu.Unlock()
			g.held.Add(1)
			<-open
			return
		}
	}
}

func (g *gate) DialHook(next redis.DialHook) redis.DialHook { return next }
func (g *gate) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		g.wait([]redis.Cmder{cmd})
		return err
	}
}
func (g *gate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		g.wait(cmds)
		return err
	}
}

// A sender's ack and its own copy of the message leave in one write: a
// lone sender costs one write system call per message, not two.
func TestAckAndOwnMessageShareOneWrite(t *testing.T) {
	ts := startServer(t)
	c := ts.dial("solo", "user=alice", true)
	c.expect("ready")
	const n = 40
	before := ts.scrape()["xroom_websocket_writes_total"]
	for i := range n {
		cid := fmt.Sprintf("c%d", i)
		c.send(map[string]string{"type": "message", "message": "hi", "client_id": cid})
		got := map[string]bool{}
		for range 2 {
			f := c.next()
			if f.ClientID != cid {
				t.Fatalf("send %d: got %+v", i, f)
			}
			got[f.Type] = true
		}
		if !got["ack"] || !got["message"] {
			t.Fatalf("send %d: got %v, want its ack and its message", i, got)
		}
	}
	// Without the pairing this is 2n; a pair split by a late tail (the
	// ack then goes alone after ackHold) still counts, hence the margin.
	if w := ts.scrape()["xroom_websocket_writes_total"] - before; w > 1.5*n {
		t.Fatalf("%d acked messages took %.0f writes, want about one each", n, w)
	}
}

// An ack waiting for its message does not wait for a tail that is stuck:
// it goes alone, and the message follows when the tail reads it. (The
// tail's path: with the read back, the message comes in the append's own
// round trip, and a stuck read is a stuck append.)
func TestAckDoesNotWaitForAStuckTail(t *testing.T) {
	tail := newGate(func(name string) bool { return name == "xread" })
	ts := startServer(t, func(o *options) { o.tailHook = tail; o.hub.NoReadBack = true })
	c := ts.dial("stuck", "user=alice", true)
	c.expect("ready")
	tail.hold(t)
	c.send(map[string]string{"type": "message", "message": "hi", "client_id": "c1"})
	if f := c.expect("ack"); f.ClientID != "c1" || f.ID == "" {
		t.Fatalf("ack %+v", f)
	}
	if tail.held.Load() == 0 {
		t.Fatal("the tail's read was not held: the test proves nothing")
	}
	tail.release()
	if f := c.expect("message"); f.ClientID != "c1" {
		t.Fatalf("message %+v", f)
	}
}

// Entries that arrive while a sender's own append is in flight wait for
// its ack only briefly: an append whose reply is stuck does not hold back
// the room, neither the sender's own message (already in the stream) nor
// others'. (The tail's path: a read back waits for its append's reply,
// see TestReadBackWaitsForItsAppend.)
func TestMessagesDoNotWaitForAStuckAppend(t *testing.T) {
	appends := newGate(func(name string) bool { return name == "evalsha" || name == "eval" })
	ts := startServer(t, func(o *options) { o.storeHook = appends; o.hub.NoReadBack = true })
	c := ts.dial("busy", "user=alice", true)
	c.expect("ready")
	appends.hold(t)
	c.send(map[string]string{"type": "message", "message": "mine", "client_id": "c1"})
	if f := c.expect("message"); f.ClientID != "c1" || f.User != "alice" {
		t.Fatalf("got %+v, want alice's own message", f)
	}
	// Another instance (or redis-cli) adds a message to the room meanwhile.
	other := streams.NewStore(ts.rdb, streams.Options{Prefix: ts.prefix})
	if _, _, err := other.Append(context.Background(), "busy", streams.Message{User: "bob", Text: "theirs"}); err != nil {
		t.Fatal(err)
	}
	if f := c.expect("message"); f.User != "bob" || f.Message != "theirs" {
		t.Fatalf("got %+v, want bob's message", f)
	}
	if appends.held.Load() == 0 {
		t.Fatal("alice's append was not held: the test proves nothing")
	}
	appends.release()
	if f := c.expect("ack"); f.ClientID != "c1" || f.Duplicate {
		t.Fatalf("got %+v, want alice's ack", f)
	}
}

// With the read back (the default on a single node), a sender's message
// comes with its ack, from the append's own round trip: while that reply
// is held, neither comes, and once it comes both do, in one write.
func TestReadBackWaitsForItsAppend(t *testing.T) {
	appends := newGate(func(name string) bool { return name == "evalsha" || name == "eval" })
	ts := startServer(t, func(o *options) { o.storeHook = appends })
	c := ts.dial("rb", "user=alice", true)
	c.expect("ready")
	testkit.Eventually(t, 10*time.Second, "an append read back", func() bool {
		c.send(map[string]string{"type": "message", "message": "warm", "client_id": fmt.Sprint("w", time.Now().UnixNano())})
		c.expect("ack")
		c.expect("message")
		return ts.hub.Stats().ReadBacks.Load() > 0
	})
	appends.hold(t)
	c.send(map[string]string{"type": "message", "message": "mine", "client_id": "c1"})
	frames := make(chan frame, 2)
	go func() {
		for range 2 {
			frames <- c.next()
		}
	}()
	select {
	case f := <-frames:
		t.Fatalf("got %+v while the append's reply was held", f)
	case <-time.After(300 * time.Millisecond):
	}
	if appends.held.Load() == 0 {
		t.Fatal("alice's append was not held: the test proves nothing")
	}
	reads := ts.hub.Stats().ReadBacks.Load()
	appends.release()
	got := map[string]bool{}
	for range 2 {
		f := <-frames
		if f.ClientID != "c1" {
			t.Fatalf("got %+v, want c1's ack and message", f)
		}
		got[f.Type] = true
	}
	if !got["ack"] || !got["message"] || ts.hub.Stats().ReadBacks.Load() == reads {
		t.Fatalf("got %v (read backs %d → %d), want c1's ack and its message read back", got, reads, ts.hub.Stats().ReadBacks.Load())
	}
}
