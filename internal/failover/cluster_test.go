package failover_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/internal/failover"
	"github.com/xroom/xroom/internal/redistest"
)

// After kill -9 of the primary that owns a key, writes to it succeed again
// soon after its replica is promoted (the time is logged): the slot map is
// reloaded on the first failures, not when it is 10 s old.
func TestClusterWritesFollowAKilledPrimary(t *testing.T) {
	c := redistest.StartClusterWithReplicas(t, 3)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs, ContextTimeoutEnabled: true, DisableIdentity: true})
	defer cc.Close()
	failover.ReloadOnFailure(cc)
	const key = "{room}:messages"
	ctx := context.Background()
	if err := cc.Set(ctx, key, "before", 0).Err(); err != nil {
		t.Fatal(err)
	}
	primary, replica := c.PrimaryOf(t, key)
	for deadline := time.Now().Add(10 * time.Second); replica == ""; primary, replica = c.PrimaryOf(t, key) {
		if time.Now().After(deadline) { // the nodes learn of the replicas by gossip
			t.Fatalf("%s has no replica", primary)
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.Node(t, primary).Kill(t)
	killed := time.Now()

	promoted := make(chan time.Time, 1)
	go func() {
		for time.Since(killed) < 30*time.Second {
			if redistest.IsPrimary(replica) {
				promoted <- time.Now()
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	var at time.Time
	for i := 0; ; i++ {
		wctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		err := cc.Set(wctx, key, i, 0).Err()
		cancel()
		select {
		case at = <-promoted:
		default:
		}
		if err == nil && !at.IsZero() {
			break
		}
		if time.Since(killed) > 30*time.Second {
			t.Fatalf("no write within 30 s of the kill (promoted: %v): %v", !at.IsZero(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(at)
	t.Logf("promoted %s after the kill; first successful write %s after the promotion", at.Sub(killed).Round(time.Millisecond), took.Round(time.Millisecond))
	if took > 5*time.Second { // go-redis alone: up to its 10 s map age
		t.Fatalf("the first write after the promotion took %s", took)
	}
}
