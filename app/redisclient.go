package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/internal/failover"
)

// newRedisClients makes the command client and the tail's client. With
// Sentinel both are plain clients that one failover.Sentinel keeps on the
// primary (go-redis's own failover client leaves closed connections in its
// pool after a switch: see internal/failover); stop ends that following,
// after the clients are closed. Cluster clients reload their slot map on
// the first failure that says it may be stale.
func newRedisClients(opts, tailOpts *redis.UniversalOptions, log *slog.Logger) (rdb, blocking redis.UniversalClient, stop func()) {
	if opts.MasterName == "" {
		rdb, blocking = redis.NewUniversalClient(opts), redis.NewUniversalClient(tailOpts)
		for _, c := range []redis.UniversalClient{rdb, blocking} {
			if cc, ok := c.(*redis.ClusterClient); ok {
				failover.ReloadOnFailure(cc) // a promoted replica is found at once, not after 10 s
			}
		}
		return rdb, blocking, func() {}
	}
	f := failover.New(opts, log)
	return f.Client(opts), f.Client(tailOpts), func() { _ = f.Close() }
}

// redisLog carries go-redis's own log lines (its pool failing to dial, a
// pub/sub connection lost) into slog, so that they come out in the log's
// format with every other line instead of on stderr in the library's.
// go-redis has one logger per process (redis.SetLogger): run sets it.
type redisLog struct{ log *slog.Logger }

func (l redisLog) Printf(ctx context.Context, format string, v ...any) {
	l.log.WarnContext(ctx, "redis client", "says", fmt.Sprintf(format, v...))
}
