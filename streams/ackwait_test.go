package streams_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/streams"
)

// TestAckWaitsForReplica: with AckReplicas=1 an append succeeds only once
// the replica has it; with the replica frozen it fails with
// ErrNotReplicated within the ack timeout, and the resend after the
// replica is back is stored once.
func TestAckWaitsForReplica(t *testing.T) {
	primary := redistest.Start(t)
	replica := redistest.StartReplica(t, primary)
	const ackTimeout = 300 * time.Millisecond
	store := streams.NewStore(primary.Client(t), streams.Options{Prefix: redistest.Prefix(t), AckReplicas: 1, AckTimeout: ackTimeout})
	rc := replica.Client(t)
	ctx := context.Background()
	stream := store.Keys().Messages("r")
	onReplica := func(id streams.ID) bool {
		es, err := rc.XRange(ctx, stream, id.String(), id.String()).Result()
		return err == nil && len(es) == 1
	}

	id, dup, err := store.Append(ctx, "r", streams.Message{User: "u", Text: "one", ClientID: "c1"})
	if err != nil || dup || !onReplica(id) {
		t.Fatalf("append = %v %v %v; on the replica: %v", id, dup, err, onReplica(id))
	}
	for i, r := range store.AppendMany(ctx, "r", []streams.Message{{User: "u", Text: "a", ClientID: "m1"}, {User: "u", Text: "b", ClientID: "m2"}}) {
		if r.Err != nil || !onReplica(r.ID) {
			t.Fatalf("AppendMany[%d] = %+v; on the replica: %v", i, r, onReplica(r.ID))
		}
	}

	replica.Pause(t)
	paused := true
	defer func() {
		if paused {
			replica.Resume(t)
		}
	}()
	for _, m := range []streams.Message{{User: "u", Text: "two", ClientID: "c2"}, {User: "u", Text: "plain"}, {User: "u", Text: "two", ClientID: "c2"}} {
		start := time.Now()
		_, _, err := store.Append(ctx, "r", m)
		if !errors.Is(err, streams.ErrNotReplicated) {
			t.Fatalf("append %q with the replica frozen: err = %v, want ErrNotReplicated", m.ClientID, err)
		}
		if took := time.Since(start); took > ackTimeout+5*time.Second {
			t.Fatalf("the refusal took %s", took)
		}
	}
	replica.Resume(t)
	paused = false

	id2, dup, err := store.Append(ctx, "r", streams.Message{User: "u", Text: "two", ClientID: "c2"})
	if err != nil || !dup || !onReplica(id2) {
		t.Fatalf("resend after resume = %v dup=%v err=%v; on the replica: %v", id2, dup, err, onReplica(id2))
	}
	es, err := primary.Client(t).XRange(ctx, stream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	stored := 0
	for _, e := range es {
		if e.Values["client_id"] == "c2" {
			stored++
		}
	}
	if stored != 1 || len(es) != 5 {
		t.Fatalf("c2 stored %d times, %d entries; want once, 5 (c1, m1, m2, c2, plain)", stored, len(es))
	}
}

// TestAckReplicasZeroSendsNoWait: the default sends no WAIT at all.
func TestAckReplicasZeroSendsNoWait(t *testing.T) {
	srv := redistest.Shared(t)
	rdb := srv.Client(t)
	var waits int
	rdb.AddHook(waitCounter{&waits})
	store := streams.NewStore(rdb, streams.Options{Prefix: redistest.Prefix(t)})
	if _, _, err := store.Append(context.Background(), "r", streams.Message{User: "u", Text: "x", ClientID: "c"}); err != nil {
		t.Fatal(err)
	}
	if waits != 0 {
		t.Fatalf("%d WAITs sent with AckReplicas=0", waits)
	}
}

type waitCounter struct{ n *int }

func (waitCounter) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (waitCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (w waitCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			if c.Name() == "wait" {
				*w.n++
			}
		}
		return next(ctx, cmds)
	}
}

// On a Cluster each primary's appends get their own pipeline and WAIT:
// acks for rooms on every shard come once the shard's replica has them.
func TestAckWaitsForReplicaOnCluster(t *testing.T) {
	c := redistest.StartClusterWithReplicas(t, 3)
	cc := c.Client(t)
	store := streams.NewStore(cc, streams.Options{Prefix: redistest.Prefix(t), AckReplicas: 1})
	ctx := context.Background()
	rooms := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	var wg sync.WaitGroup
	errs := make(chan error, len(rooms)*3)
	for _, room := range rooms {
		for i := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _, err := store.Append(ctx, room, streams.Message{User: "u", Text: "m", ClientID: fmt.Sprintf("c%d", i)})
				errs <- err
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	nodes := map[string]bool{}
	for _, room := range rooms {
		primary, _ := c.PrimaryOf(t, store.Keys().Messages(room))
		nodes[primary] = true
		if n := cc.XLen(ctx, store.Keys().Messages(room)).Val(); n != 3 {
			t.Fatalf("room %s holds %d entries, want 3", room, n)
		}
	}
	if len(nodes) < 2 {
		t.Fatalf("the rooms are all on %v; the test wants several shards", nodes)
	}
}
