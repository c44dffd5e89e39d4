package redistest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// replicaNodeTimeout is the cluster-node-timeout (ms) of clusters with
// replicas: a killed primary's replica is promoted a few seconds later.
const replicaNodeTimeout = "2000"

// StartClusterWithReplicas starts a Cluster of masters primaries, each with
// one replica (2*masters nodes, --cluster-replicas 1), and waits until
// every replica is in sync. Otherwise as StartCluster.
func StartClusterWithReplicas(tb testing.TB, masters int) *Cluster {
	tb.Helper()
	c := startCluster(tb, masters, 1, replicaNodeTimeout)
	for _, s := range c.nodes {
		if role, _ := nodeRole(s.Addr); role == "slave" {
			if err := WaitSynced(s.Addr); err != nil {
				tb.Fatalf("redistest: replica %s: %v", s.Addr, err)
			}
		}
	}
	return c
}

// Node is the node at addr, to stop, kill or pause it.
func (c *Cluster) Node(tb testing.TB, addr string) *Server {
	tb.Helper()
	for _, s := range c.nodes {
		if s.Addr == addr {
			return s
		}
	}
	tb.Fatalf("redistest: no cluster node %s", addr)
	return nil
}

// PrimaryOf returns the address of the primary that owns key's slot, and
// of one of its replicas ("" when it has none), as the node at c.Addrs
// that answers first sees them.
func (c *Cluster) PrimaryOf(tb testing.TB, key string) (primary, replica string) {
	tb.Helper()
	for _, a := range c.Addrs {
		cl := redis.NewClient(&redis.Options{Addr: a, DialTimeout: probeTimeout, MaxRetries: -1, PoolSize: 1, DisableIdentity: true})
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		slot, err := cl.ClusterKeySlot(ctx, key).Result()
		var shards []redis.ClusterSlot
		if err == nil {
			shards, err = cl.ClusterSlots(ctx).Result()
		}
		cancel()
		_ = cl.Close()
		if err != nil {
			continue
		}
		for _, sh := range shards {
			if int64(sh.Start) <= slot && slot <= int64(sh.End) && len(sh.Nodes) > 0 {
				if len(sh.Nodes) > 1 {
					replica = sh.Nodes[1].Addr
				}
				return sh.Nodes[0].Addr, replica
			}
		}
	}
	tb.Fatalf("redistest: no node knows the owner of %q", key)
	return "", ""
}

// nodeRole is "master" or "slave", from INFO replication.
func nodeRole(addr string) (string, error) {
	cl := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: probeTimeout, MaxRetries: -1, PoolSize: 1, DisableIdentity: true})
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	info, err := cl.Info(ctx, "replication").Result()
	if err != nil {
		return "", fmt.Errorf("role of %s: %w", addr, err)
	}
	for _, l := range strings.Split(info, "\n") {
		if r, ok := strings.CutPrefix(strings.TrimSpace(l), "role:"); ok {
			return r, nil
		}
	}
	return "", fmt.Errorf("role of %s: not in INFO", addr)
}

// IsPrimary reports whether the node at addr answers as a primary now.
func IsPrimary(addr string) bool {
	r, err := nodeRole(addr)
	return err == nil && r == "master"
}
