package main

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisSnapshot is what the bench reads from the server's Redis around a run.
type redisSnapshot struct {
	calls map[string]int64 // INFO commandstats: calls by command
	cpu   float64          // INFO cpu: used_cpu_user + used_cpu_sys, s
	at    time.Time
}

func openRedis(rawURL string) (*redis.Client, error) {
	if !strings.Contains(rawURL, "://") {
		rawURL = "redis://" + rawURL
	}
	opts, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("-redis %q: %w", rawURL, err)
	}
	opts.PoolSize = 4
	return redis.NewClient(opts), nil
}

func snapshotRedis(ctx context.Context, rdb *redis.Client) (redisSnapshot, error) {
	s := redisSnapshot{calls: map[string]int64{}, at: time.Now()}
	stats, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return s, fmt.Errorf("INFO commandstats: %w", err)
	}
	s.calls = parseCommandStats(stats)
	cpu, err := rdb.Info(ctx, "cpu").Result()
	if err != nil {
		return s, fmt.Errorf("INFO cpu: %w", err)
	}
	for _, line := range strings.Split(cpu, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_user" || k == "used_cpu_sys") {
			f, _ := strconv.ParseFloat(v, 64)
			s.cpu += f
		}
	}
	return s, nil
}

// parseCommandStats reads INFO commandstats lines such as
// "cmdstat_xadd:calls=12,usec=40,usec_per_call=3.33,...".
func parseCommandStats(info string) map[string]int64 {
	calls := map[string]int64{}
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		name, isCmd := strings.CutPrefix(name, "cmdstat_")
		if !ok || !isCmd {
			continue
		}
		for _, kv := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(kv, "calls="); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				calls[name] = n
			}
		}
	}
	return calls
}

// redisCommands is the Redis work of a run.
type redisCommands struct {
	Total      int64            `json:"total"`
	PerMessage float64          `json:"per_message"`
	ByCommand  map[string]int64 `json:"by_command"`
	CPUCores   float64          `json:"cpu_cores"` // Redis CPU time per wall-clock second
	// CPUPerMessage is Redis's CPU time (INFO cpu, user + sys) per
	// message, in µs.
	CPUPerMessage float64 `json:"cpu_us_per_message"`
	// ReadsPerMessage is XREAD and XRANGE calls per message: how often the
	// servers read a room's stream for what was published.
	ReadsPerMessage float64 `json:"reads_per_message"`
}

// benchCommands are the bench's own commands, left out of the counts.
var benchCommands = map[string]bool{"info": true, "client|list": true}

// diffRedis is the work between two snapshots, per message. The bench's own
// INFO and CLIENT LIST calls are left out (their CPU is not: INFO cpu
// cannot tell it apart, and it is small next to a run's).
func diffRedis(before, after redisSnapshot, messages int64) *redisCommands {
	rc := &redisCommands{ByCommand: map[string]int64{}}
	for name, n := range after.calls {
		if benchCommands[name] {
			continue
		}
		if d := n - before.calls[name]; d > 0 {
			rc.ByCommand[name] = d
			rc.Total += d
		}
	}
	if messages > 0 {
		rc.PerMessage = float64(rc.Total) / float64(messages)
		rc.CPUPerMessage = (after.cpu - before.cpu) * 1e6 / float64(messages)
		rc.ReadsPerMessage = float64(rc.ByCommand["xread"]+rc.ByCommand["xrange"]) / float64(messages)
	}
	if wall := after.at.Sub(before.at).Seconds(); wall > 0 {
		rc.CPUCores = (after.cpu - before.cpu) / wall
	}
	return rc
}

func (rc *redisCommands) String() string {
	names := make([]string, 0, len(rc.ByCommand))
	for n := range rc.ByCommand {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s=%d", n, rc.ByCommand[n])
	}
	return fmt.Sprintf("%.2f commands/message, %.1f µs Redis CPU/message, %.2f XREAD+XRANGE/message (%d: %s)",
		rc.PerMessage, rc.CPUPerMessage, rc.ReadsPerMessage, rc.Total, strings.Join(parts, " "))
}
