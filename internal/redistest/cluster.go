package redistest

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cluster is a real Redis Cluster of n masters (no replicas) on free local ports.
type Cluster struct {
	Addrs []string // host:port of every node, on 127.0.0.1

	nodes []*Server
}

// StartCluster starts n (>=3) `redis-server --cluster-enabled yes` nodes on
// 127.0.0.1 free ports, each with its own temp dir and cluster-config-file,
// joins them with `redis-cli --cluster create ... --cluster-replicas 0
// --cluster-yes`, waits until CLUSTER INFO says cluster_state:ok on every
// node, and stops them all in tb.Cleanup. Skips without
// redis-server/redis-cli (fails with XROOM_REQUIRE_REAL=1).
//
// Each node's cluster bus port is chosen free too (cluster-port) rather than
// the default port+10000, which can be taken or exceed 65535.
func StartCluster(tb testing.TB, n int) *Cluster {
	tb.Helper()
	return startCluster(tb, n, 0, "5000")
}

// startCluster starts masters*(1+replicas) nodes and joins them with
// --cluster-replicas replicas; nodeTimeout is cluster-node-timeout in ms.
func startCluster(tb testing.TB, masters, replicas int, nodeTimeout string) *Cluster {
	tb.Helper()
	if masters < 3 {
		tb.Fatalf("redistest: a cluster needs at least 3 masters, got %d", masters)
	}
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			skipOrFail(tb, "redistest: no "+bin+" on PATH")
		}
	}
	clusterArgs := func(busPort int) []string {
		return []string{
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf",
			"--cluster-port", strconv.Itoa(busPort),
			"--cluster-node-timeout", nodeTimeout,
		}
	}
	c := &Cluster{}
	for range masters * (1 + replicas) {
		s := startDedicated(tb, config{}, clusterArgs)
		c.nodes = append(c.nodes, s)
		c.Addrs = append(c.Addrs, s.Addr)
	}
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	if _, err := runCLI(args...); err != nil {
		tb.Fatalf("redistest: creating the cluster: %v\n%s", err, c.logTails())
	}
	if err := c.waitOK(); err != nil {
		tb.Fatalf("redistest: cluster %v: %v\n%s", c.Addrs, err, c.logTails())
	}
	return c
}

// Client returns a new go-redis cluster client for c, closed at tb.Cleanup,
// with ContextTimeoutEnabled as in Server.Client.
func (c *Cluster) Client(tb testing.TB) *redis.ClusterClient {
	tb.Helper()
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs, ContextTimeoutEnabled: true})
	tb.Cleanup(func() { _ = cc.Close() })
	return cc
}

// waitOK waits until every node reports cluster_state:ok, all 16384 slots
// assigned and every node known, i.e. the nodes agree, not just one of them.
func (c *Cluster) waitOK() error {
	want := []string{
		"cluster_state:ok",
		"cluster_slots_ok:16384",
		"cluster_known_nodes:" + strconv.Itoa(len(c.nodes)),
	}
	deadline := time.Now().Add(clusterWait)
	for _, s := range c.nodes {
		cl := redis.NewClient(&redis.Options{
			Addr: s.Addr, DialTimeout: probeTimeout, ReadTimeout: time.Second,
			MaxRetries: -1, PoolSize: 1, Protocol: 2, DisableIdentity: true,
		})
		var info string
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			var err error
			info, err = cl.ClusterInfo(ctx).Result()
			cancel()
			if err == nil && hasLines(info, want) {
				break
			}
			if time.Now().After(deadline) {
				_ = cl.Close()
				return fmt.Errorf("node %s not ready within %v: err=%v, CLUSTER INFO:\n%s", s.Addr, clusterWait, err, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
		_ = cl.Close()
	}
	return nil
}

func hasLines(info string, want []string) bool {
	have := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		have[strings.TrimSpace(sc.Text())] = true
	}
	for _, w := range want {
		if !have[w] {
			return false
		}
	}
	return true
}

func (c *Cluster) logTails() string {
	var b strings.Builder
	for _, s := range c.nodes {
		fmt.Fprintf(&b, "--- log of %s (%s) ---\n%s\n", s.Addr, s.log, s.logTail(0))
	}
	return b.String()
}
