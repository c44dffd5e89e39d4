package redistest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// syncWait is how long a new replica may take to finish its first sync.
const syncWait = 20 * time.Second

// StartReplica starts a dedicated real server replicating primary
// (--replicaof), and returns once its link is up and the first sync done.
// Stopped in tb.Cleanup, like Start.
func StartReplica(tb testing.TB, primary *Server, opts ...Option) *Server {
	tb.Helper()
	_, port, _ := strings.Cut(primary.Addr, ":")
	replica := Start(tb, append(opts, WithArgs("--replicaof", "127.0.0.1", port))...)
	if err := WaitSynced(replica.Addr); err != nil {
		tb.Fatalf("redistest: replica %s of %s: %v\n%s", replica.Addr, primary.Addr, err, replica.logTail(0))
	}
	return replica
}

// WaitSynced waits until the server at addr is a replica whose link to
// its primary is up (master_link_status:up, no sync in progress).
func WaitSynced(addr string) error {
	cl := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: probeTimeout, MaxRetries: -1, PoolSize: 1, DisableIdentity: true})
	defer cl.Close()
	deadline := time.Now().Add(syncWait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		info, err := cl.Info(ctx, "replication").Result()
		cancel()
		if err == nil && hasLines(info, []string{"master_link_status:up", "master_sync_in_progress:0"}) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not in sync within %s (err: %v):\n%s", syncWait, err, info)
		}
		time.Sleep(pollEvery)
	}
}
