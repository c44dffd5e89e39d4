package streams_test

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/streams"
)

// BenchmarkUnread measures one Unread over 1,000 rooms on the package's
// Redis (a real redis-server when there is one), with the default cap:
// "full", every room has more than the cap unread (the most work a room
// can cost: cap+1 entries read in Redis); "few", every room has 3. The
// figures quoted in docs/protocol.md come from:
//
//	go test -run '^$' -bench BenchmarkUnread -benchtime 20x ./streams
func BenchmarkUnread(b *testing.B) {
	for _, c := range []struct {
		name   string
		unread int
	}{{"full", streams.DefaultUnreadCap + 1}, {"few", 3}} {
		b.Run(c.name, func(b *testing.B) {
			const rooms = 1000
			srv := redistest.Shared(b)
			rdb := srv.Client(b)
			prefix := redistest.Prefix(b)
			ctx := context.Background()
			store := streams.NewStore(rdb, streams.Options{Prefix: prefix})
			keys := store.Keys()
			pipe := rdb.Pipeline()
			for i := range rooms {
				room := fmt.Sprintf("room-%04d", i)
				pipe.ZAdd(ctx, keys.UserRooms("alice"), redis.Z{Score: float64(i), Member: room})
				for j := range c.unread {
					pipe.XAdd(ctx, &redis.XAddArgs{Stream: keys.Messages(room), Values: []any{"user", "bob", "message", fmt.Sprintf("message %d of a typical length, about sixty bytes", j)}})
				}
				if pipe.Len() > 10000 {
					if _, err := pipe.Exec(ctx); err != nil {
						b.Fatal(err)
					}
				}
			}
			if _, err := pipe.Exec(ctx); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() {
				for i := range rooms {
					rdb.Del(context.Background(), keys.Messages(fmt.Sprintf("room-%04d", i)))
				}
				rdb.Del(context.Background(), keys.UserRooms("alice"))
			})
			hook := &pipelineCounter{}
			rdb.AddHook(hook)
			if _, err := store.Unread(ctx, "alice", rooms, streams.DefaultUnreadCap); err != nil { // loads the script
				b.Fatal(err)
			}
			usec := scriptUsec(b, rdb)
			hook.pipelines.Store(0)
			hook.commands.Store(0)
			b.ResetTimer()
			for range b.N {
				list, err := store.Unread(ctx, "alice", rooms, streams.DefaultUnreadCap)
				if err != nil || len(list) != rooms {
					b.Fatalf("%d rooms, %v", len(list), err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(hook.pipelines.Load())/float64(b.N), "round-trips/op")
			b.ReportMetric(float64(hook.commands.Load())/float64(b.N), "single-cmds/op")
			if srv.Real { // INFO commandstats: the time Redis itself spent in the scripts
				b.ReportMetric((scriptUsec(b, rdb)-usec)/float64(b.N)/1000, "redis-ms/op")
			}
		})
	}
}

// scriptUsec is the time Redis has spent in EVALSHA and EVAL calls (µs),
// from INFO commandstats.
func scriptUsec(b *testing.B, rdb *redis.Client) float64 {
	b.Helper()
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total float64
	for _, m := range regexp.MustCompile(`cmdstat_eval(?:sha)?:calls=\d+,usec=(\d+)`).FindAllStringSubmatch(info, -1) {
		n, _ := strconv.ParseFloat(m[1], 64)
		total += n
	}
	return total
}
