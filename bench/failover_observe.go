package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// How the failover scenario watches Redis from outside: the Sentinel's
// +switch-master, its answer to get-master-addr-by-name, and each replica's
// ROLE, all timed on the bench's clock; and how it causes the fault.

const (
	foPollEvery     = 10 * time.Millisecond // ROLE and get-master-addr-by-name
	foProbeTimeout  = 500 * time.Millisecond
	foReplicasWait  = 30 * time.Second // the Sentinel may take a few INFO rounds to list the replicas
	foFailoverRetry = 20 * time.Second // NOGOODSLAVE until the Sentinel has seen a replica in sync
)

// observer records foMarks while the failover runs.
type observer struct {
	master string
	old    string // the primary before the fault
	key    string // the room's stream

	mu    sync.Mutex
	marks foMarks
	cur   string // the master's address, as the Sentinel last named it
	// switches is the new master of every +switch-master: more than one
	// when the Sentinel failed over again (it can judge a just-promoted
	// primary down when down-after-milliseconds is as short as its
	// 1-second PING period and the machine is busy).
	switches []string
	stop     context.CancelFunc
	wg       sync.WaitGroup
}

// waitReplicas waits until the Sentinel lists every replica the primary
// has (INFO replication, connected_slaves), each with its link up, and
// returns their addresses.
func waitReplicas(ctx context.Context, sc *redis.SentinelClient, primary *redis.Client, master string) ([]string, error) {
	deadline := time.Now().Add(foReplicasWait)
	var last string
	for {
		info, err := primary.Info(ctx, "replication").Result()
		want := -1
		if err == nil {
			for _, line := range strings.Split(info, "\n") {
				if v, ok := strings.CutPrefix(strings.TrimSpace(line), "connected_slaves:"); ok {
					want, _ = strconv.Atoi(v)
				}
			}
		}
		var addrs []string
		list, err2 := sc.Replicas(ctx, master).Result()
		for _, r := range list {
			if r["flags"] == "slave" && r["master-link-status"] == "ok" {
				addrs = append(addrs, net.JoinHostPort(r["ip"], r["port"]))
			}
		}
		if want > 0 && len(addrs) == want && len(list) == want {
			return addrs, nil
		}
		last = fmt.Sprintf("the primary has %d replicas (%v), the Sentinel lists %d in sync of %d (%v)", want, err, len(addrs), len(list), err2)
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("failover: replicas not ready within %s: %s", foReplicasWait, last)
		}
		if !sleepOrDone(ctx, 100*time.Millisecond) {
			return nil, ctx.Err()
		}
	}
}

func sleepOrDone(ctx context.Context, d time.Duration) bool {
	sleepCtx(ctx, d)
	return ctx.Err() == nil
}

// observe starts watching: a subscription to +switch-master (confirmed
// before it returns), and polls of the Sentinel and of every replica.
func observe(ctx context.Context, sc *redis.SentinelClient, master, old, key string, replicas []string) (*observer, error) {
	ctx, cancel := context.WithCancel(ctx)
	ob := &observer{master: master, old: old, key: key, cur: old, stop: cancel}
	ps := sc.Subscribe(ctx, "+switch-master")
	if _, err := ps.Receive(ctx); err != nil {
		cancel()
		ps.Close()
		return nil, fmt.Errorf("failover: subscribing to +switch-master: %w", err)
	}
	ob.wg.Add(1)
	go func() {
		defer ob.wg.Done()
		defer ps.Close()
		ch := ps.Channel()
		for {
			select {
			case msg := <-ch:
				if name, addr, ok := parseSwitchMaster(msg.Payload); ok && name == master {
					ob.mark(func(m *foMarks) *int64 { return &m.Switch }, addr)
					ob.mu.Lock()
					ob.switches = append(ob.switches, addr)
					ob.mu.Unlock()
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	ob.wg.Add(1)
	go func() {
		defer ob.wg.Done()
		for sleepOrDone(ctx, foPollEvery) {
			pctx, cancel := context.WithTimeout(ctx, foProbeTimeout)
			a, err := sc.GetMasterAddrByName(pctx, master).Result()
			cancel()
			if err == nil && len(a) == 2 {
				if addr := net.JoinHostPort(a[0], a[1]); addr != old {
					ob.mark(func(m *foMarks) *int64 { return &m.Addr }, addr)
				}
			}
		}
	}()
	for _, addr := range replicas {
		ob.wg.Add(1)
		go func() {
			defer ob.wg.Done()
			ob.pollRole(ctx, addr)
		}()
	}
	return ob, nil
}

// mark sets the moment field picks, the first time, and the master's
// address.
func (ob *observer) mark(field func(*foMarks) *int64, addr string) {
	now := mono()
	ob.mu.Lock()
	defer ob.mu.Unlock()
	if p := field(&ob.marks); *p == 0 {
		*p = now
	}
	ob.cur = addr
}

// pollRole asks a replica, in one MULTI, its ROLE and the room's newest
// entry, until it says master: that entry is the boundary between what it
// had as a replica and what was written to it as the primary.
func (ob *observer) pollRole(ctx context.Context, addr string) {
	cl := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 1, MaxRetries: -1, DialTimeout: foProbeTimeout, ReadTimeout: foProbeTimeout, DisableIdentity: true})
	defer cl.Close()
	for sleepOrDone(ctx, foPollEvery) {
		var role *redis.Cmd
		var newest *redis.XMessageSliceCmd
		_, err := cl.TxPipelined(ctx, func(p redis.Pipeliner) error {
			role = p.Do(ctx, "ROLE")
			newest = p.XRevRangeN(ctx, ob.key, "+", "-", 1)
			return nil
		})
		if err != nil {
			continue
		}
		if r, _ := role.Slice(); len(r) == 0 || r[0] != "master" {
			continue
		}
		var boundary streamID
		if msgs := newest.Val(); len(msgs) > 0 {
			if boundary, err = parseStreamID([]byte(msgs[0].ID)); err != nil {
				continue
			}
		}
		now := mono()
		ob.mu.Lock()
		if ob.marks.Promoted == 0 {
			ob.marks.Promoted, ob.marks.Boundary, ob.marks.HaveBoundary = now, boundary, true
		}
		ob.mu.Unlock()
		return
	}
}

func (ob *observer) snapshot() (foMarks, string) {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	return ob.marks, ob.cur
}

func (ob *observer) switchList() []string {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	return slices.Clone(ob.switches)
}

// switched is when +switch-master came, 0 until it has.
func (ob *observer) switched() int64 {
	ob.mu.Lock()
	defer ob.mu.Unlock()
	return ob.marks.Switch
}

func (ob *observer) setFault(at int64) {
	ob.mu.Lock()
	ob.marks.Fault = at
	ob.mu.Unlock()
}

func (ob *observer) close() {
	ob.stop()
	ob.wg.Wait()
}

// sentinelFailover asks for a planned failover, retrying while the
// Sentinel has no replica it deems good (NOGOODSLAVE) yet.
func sentinelFailover(ctx context.Context, sc *redis.SentinelClient, master string) error {
	deadline := time.Now().Add(foFailoverRetry)
	for {
		err := sc.Failover(ctx, master).Err()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || !sleepOrDone(ctx, 200*time.Millisecond) {
			return fmt.Errorf("failover: SENTINEL FAILOVER %s: %w", master, err)
		}
	}
}

// killPrimary sends SIGKILL to the redis-server listening on addr: pid
// when given (it must be the one listening there), else the one found.
func killPrimary(addr string, pid int) error {
	found, err := pidListening(addr)
	if err != nil {
		return fmt.Errorf("failover: kill: %w", err)
	}
	if pid != 0 && pid != found {
		return fmt.Errorf("failover: kill: -primary-pid %d does not listen on %s (%d does)", pid, addr, found)
	}
	comm, err := os.ReadFile("/proc/" + strconv.Itoa(found) + "/comm")
	if err != nil || !strings.HasPrefix(string(comm), "redis-server") {
		return fmt.Errorf("failover: kill: process %d on %s is %q, not redis-server", found, addr, strings.TrimSpace(string(comm)))
	}
	if err := syscall.Kill(found, syscall.SIGKILL); err != nil {
		return fmt.Errorf("failover: kill %d: %w", found, err)
	}
	return nil
}
