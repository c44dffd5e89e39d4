package streams_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/streams"
)

// pipelineCounter is a go-redis hook counting round trips: single commands
// and pipelines sent by a client.
type pipelineCounter struct{ pipelines, commands atomic.Int64 }

func (h *pipelineCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *pipelineCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.commands.Add(1); return next(ctx, cmd) }
}
func (h *pipelineCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { h.pipelines.Add(1); return next(ctx, cmds) }
}

// countedEnv is an env whose store's client counts its round trips in
// hook (e.rdb, the test's own client, is not counted).
func countedEnv(t *testing.T) (*env, *pipelineCounter) {
	srv := redistest.Shared(t)
	rdb := srv.Client(t)
	hook := &pipelineCounter{}
	rdb.AddHook(hook)
	prefix := redistest.Prefix(t)
	return &env{t: t, srv: srv, rdb: srv.Client(t), prefix: prefix, store: streams.NewStore(rdb, streams.Options{Prefix: prefix})}, hook
}

// Appends that arrive while Redis is busy share pipelines, and
// each still gets its own ID, duplicates detected, nothing lost.
func TestConcurrentAppendsShareAPipeline(t *testing.T) {
	rs := redistest.Start(t)
	rdb := rs.Client(t)
	var count pipelineCounter
	rdb.AddHook(&count)
	store := streams.NewStore(rdb, streams.Options{Prefix: redistest.Prefix(t)})
	ctx := ctx10(t)
	if _, _, err := store.Append(ctx, "r", streams.Message{User: "u", Text: "warm"}); err != nil {
		t.Fatal(err)
	}
	before := count.pipelines.Load()

	// Redis stops answering: the first append waits in flight, the others queue.
	rs.Pause(t)
	const n = 50
	type result struct {
		id  streams.ID
		dup bool
		err error
	}
	results := make([]result, n+1)
	roomOf := func(i int) int { // append n (c0 again) goes to r0, like append 0
		if i == n {
			return 0
		}
		return i % 4
	}
	var wg sync.WaitGroup
	for i := range n + 1 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := streams.Message{User: "u", Text: fmt.Sprint(i), ClientID: fmt.Sprintf("c%d", i)}
			if i == n {
				m.ClientID = "c0" // a duplicate of the first, in the same batch or the next
			}
			if i%3 == 0 && i != n && i != 0 {
				m.ClientID = "" // plain XADD mixed with the script
			}
			results[i].id, results[i].dup, results[i].err = store.Append(ctx, fmt.Sprintf("r%d", roomOf(i)), m)
		}()
	}
	time.Sleep(300 * time.Millisecond)
	rs.Resume(t)
	wg.Wait()
	seen := map[string]int{} // room and ID
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("append %d: %v", i, r.err)
		}
		key := fmt.Sprint(roomOf(i), r.id)
		if prev, ok := seen[key]; ok && !(i == n && prev == 0) {
			t.Fatalf("appends %d and %d got the same ID %v in one room", prev, i, r.id)
		}
		seen[key] = i
	}
	if results[0].dup == results[n].dup || results[0].id != results[n].id {
		t.Fatalf("c0 twice: %+v and %+v, want one stored and one duplicate of it", results[0], results[n])
	}
	// A few go alone (one per connection in flight), the rest share pipelines.
	if got := count.pipelines.Load() - before; got > 12 {
		t.Fatalf("%d appends took %d pipelines, want them to share a few", n+1, got)
	}
	var stored int64
	for room := range 4 {
		stored += rdb.XLen(ctx, store.Keys().Messages(fmt.Sprintf("r%d", room))).Val()
	}
	if stored != n { // n+1 appends less one duplicate
		t.Fatalf("%d entries stored, want %d", stored, n)
	}
}
