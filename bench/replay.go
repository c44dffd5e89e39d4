package main

import (
	"context"
	"fmt"
	"math"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// seedBatch is how many XADDs go in one pipeline while seeding.
const seedBatch = 1000

type replayResult struct {
	Entries int       `json:"entries"`
	SeedSec float64   `json:"seed_seconds"`
	PerSec  []float64 `json:"entries_per_sec"` // each new client, from dial to ready
	Median  float64   `json:"median_per_sec"`
	Best    float64   `json:"best_per_sec"`
}

// replay seeds a room with entries entries straight into Redis (a pipeline of
// XADDs without MAXLEN, as redis-cli would add them), then connects repeat
// new clients one after another with since=0. Each must get exactly entries
// 0, 1, ..., entries-1 in order before its ready frame; the rate is entries
// per second from the start of the dial to ready.
func replay(ctx context.Context, o *options, f *scenarioFlags, rdb redisClient) (*result, error) {
	r := newRun(o.servers)
	r.measureFrom.Store(math.MaxInt64) // replayed entries have no send time
	room := r.roomName(0)
	res := &result{Scenario: "replay", Params: map[string]any{"entries": f.entries, "repeat": f.repeat, "size": o.size}}
	if rdb == nil {
		return res, fmt.Errorf("replay: -redis is needed to seed the history")
	}
	if f.entries < 1 || f.repeat < 1 {
		return res, fmt.Errorf("replay: -entries and -repeat must be at least 1")
	}
	key := messagesKey(o.prefix, room)
	seedStart := time.Now()
	if err := seed(ctx, rdb, key, r.id, f.entries, o.size); err != nil {
		return res, err
	}
	defer rdb.Del(context.Background(), key, epochKey(o.prefix, room))
	rp := &replayResult{Entries: f.entries, SeedSec: time.Since(seedStart).Seconds()}
	res.Replay = rp

	meters := o.startMeters()
	var before redisSnapshot
	if o.redisCommands {
		var err error
		if before, err = snapshotRedis(ctx, rdb); err != nil {
			return res, err
		}
	}
	for i := range f.repeat {
		c := &client{run: r, num: i, room: room, replay: true, tr: &tracker{}}
		start := mono()
		err := c.dial(ctx, url.Values{"since": {"0"}, "user": {"replay" + strconv.Itoa(i)}})
		if err == nil {
			select {
			case <-c.ready:
				if c.err != nil {
					err = fmt.Errorf("replay %d: connection ended before ready: %w", i, c.err)
				}
			case <-time.After(o.connectTimeout):
				err = fmt.Errorf("replay %d: no ready frame within %v", i, o.connectTimeout)
			case <-ctx.Done():
				err = ctx.Err()
			}
		}
		c.close()
		if err != nil {
			return res, err
		}
		secs := float64(c.readyAt-start) / float64(time.Second)
		rp.PerSec = append(rp.PerSec, float64(c.replayCount)/secs)
		res.Deliveries += c.replayCount
		res.Duplicates += c.tr.dups
		res.Reordered += c.tr.reorders
		res.IDRegressions += c.tr.idRegress
		if missing := int64(f.entries) - c.tr.unique; missing > 0 {
			res.Loss += missing
		}
		if c.replayBad > 0 || c.replayCount != int64(f.entries) {
			res.Errors = append(res.Errors, fmt.Sprintf("replay %d: got %d entries before ready, %d out of place; want %d in order", i, c.replayCount, c.replayBad, f.entries))
		}
		res.Seconds += secs
	}
	res.CPU = meters.report()
	if o.redisCommands {
		after, err := snapshotRedis(ctx, rdb)
		if err != nil {
			return res, err
		}
		res.Redis = diffRedis(before, after, int64(f.entries*f.repeat))
	}
	sorted := slices.Clone(rp.PerSec)
	slices.Sort(sorted)
	rp.Median, rp.Best = sorted[len(sorted)/2], sorted[len(sorted)-1]
	res.DeliveriesPerSec = rp.Median
	res.Foreign = r.foreign.Load()
	res.Gaps = r.gaps.Load()
	if n := r.errs.Load(); n > 0 {
		res.Errors = append(res.Errors, fmt.Sprintf("%d error frames or frames that are not JSON", n))
	}
	if res.Gaps > 0 {
		res.Errors = append(res.Errors, fmt.Sprintf("%d gap frames: since=0 of a stream never trimmed must give none", res.Gaps))
	}
	res.checkNoLoss()
	res.checkMin("entries/s (median)", rp.Median, f.wantRate, "/s")
	if f.baseline > 0 && len(res.Checks) > 0 {
		// Against what one client gets from Redis alone reading such pages.
		res.Checks[len(res.Checks)-1].Ratio = fmt.Sprintf("%.2f × Redis XRANGE", rp.Median/f.baseline)
	}
	return res, nil
}

// seed XADDs entries bench messages of publisher 0 to key, in pipelines.
func seed(ctx context.Context, rdb *redis.Client, key, runID string, entries, size int) error {
	var text []byte
	for done := 0; done < entries; {
		pipe := rdb.Pipeline()
		n := min(seedBatch, entries-done)
		for i := range n {
			text = appendPayload(text[:0], payload{Run: runID, Pub: 0, Seq: int64(done + i)}, size)
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: []any{"user", "seed", "message", string(text)}})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("seeding %s: %w", key, err)
		}
		done += n
	}
	return nil
}

// messagesKey and epochKey copy streams.Keys.Messages and streams.Keys.Epoch
// (streams/keys.go): bench measures xroom from outside and imports none of
// it, so a change of key names there must be made here too.
func messagesKey(prefix, room string) string { return prefix + ":{" + room + "}:messages" }

func epochKey(prefix, room string) string { return prefix + ":{" + room + "}:epoch" }
