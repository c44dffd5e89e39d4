package main

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/internal/testkit"
	"github.com/xroom/xroom/streams"
)

// Failover fault tests: real redis-server and Sentinel processes, two real
// xroom processes, clients sending on both while a primary is failed over.
// With REDIS_ACK_REPLICAS=1 no acknowledged message is lost and none is
// stored twice; with 0 a lost one is announced (gap rolled_back), never
// silent. Either way every client ends with the room's stream.

// failoverRoom is the room the failover tests send to.
const failoverRoom = "fo"

// failoverSetup is one deployment under test: how xroom reaches Redis, how
// to fail its primary over, and how to read the room's stream afterwards.
type failoverSetup struct {
	env      map[string]string
	fault    func(t *testing.T)
	promoted func() bool        // the new primary is in place
	recover  func(t *testing.T) // after the promotion, if set
	stream   func(t *testing.T, prefix string) []testkit.Frame
}

// idAfter reports whether stream ID a is after b.
func idAfter(a, b string) bool {
	x, errA := streams.ParseID(a)
	y, errB := streams.ParseID(b)
	return errA == nil && errB == nil && y.Less(x)
}

// runFailover sends from two clients on each of two xroom instances, runs
// the fault, waits for the promotion and more acks, and checks the outcome.
func runFailover(t *testing.T, ackReplicas int, s failoverSetup) {
	prefix := redistest.Prefix(t)
	env := map[string]string{"CHAT_PREFIX": prefix, "ADDR": "127.0.0.1:0", "REDIS_ACK_REPLICAS": strconv.Itoa(ackReplicas)}
	for k, v := range s.env {
		env[k] = v
	}
	procs := []*proc{startProc(t, env), startProc(t, env)}
	var senders []*peer
	reconnect := map[*peer]func() error{}
	l := newLoad()
	for i, p := range procs {
		for j := range 2 {
			c := &peer{room: failoverRoom, user: "p" + strconv.Itoa(i) + strconv.Itoa(j)}
			if err := c.connect(p.base, false); err != nil {
				t.Fatal(err)
			}
			senders = append(senders, c)
			base := p.base
			reconnect[c] = func() error { return reconnectWithin(c, base, 30*time.Second) }
			l.send(c, reconnect[c])
		}
	}
	l.acks(20)
	s.fault(t)
	faultAt := time.Now()
	var promotedAt time.Time
	for !s.promoted() {
		if time.Since(faultAt) > 30*time.Second {
			t.Fatal("no promotion within 30 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	promotedAt = time.Now()
	if s.recover != nil {
		s.recover(t)
	}
	l.acksAfter(t, promotedAt, 40)
	// xroom learns of the switch a moment after the test does: until then
	// its acks come from the old primary. Go on until they come from the
	// new one, then a little longer, so that open connections read what
	// they are told of the switch before the load ends.
	for switched := false; !switched; time.Sleep(50 * time.Millisecond) {
		if time.Since(promotedAt) > 30*time.Second {
			t.Fatal("no ack from the new primary within 30 s of the promotion")
		}
		newest := l.newestAcked()
		for _, f := range s.stream(t, prefix) {
			switched = switched || f.ID == newest
		}
	}
	l.acksAfter(t, time.Now(), 20)
	l.end(t)
	stream := s.stream(t, prefix)
	var firstKept time.Time // the first ack, after the promotion, of an entry the new primary has
	for _, f := range stream {
		if at := l.ackTime[f.ID]; at.After(promotedAt) && (firstKept.IsZero() || at.Before(firstKept)) {
			firstKept = at
		}
	}
	t.Logf("REDIS_ACK_REPLICAS=%d: promoted %s after the fault; first ack of an entry the new primary kept %s after the promotion; %d sends refused with unavailable; %d acked",
		ackReplicas, promotedAt.Sub(faultAt).Round(time.Millisecond), firstKept.Sub(promotedAt).Round(time.Millisecond), l.refused, len(l.acked))

	if ackReplicas > 0 {
		checkAcked(t, stream, l.acked)
	} else {
		checkLostAnnounced(t, stream, l.acked, senders)
	}
	for _, c := range senders {
		converge(t, c, stream, reconnect[c])
	}
}

// newestAcked returns the newest ID acked so far.
func (l *load) newestAcked() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	newest := "0-0"
	for _, id := range l.acked {
		if idAfter(id, newest) {
			newest = id
		}
	}
	return newest
}

// acksAfter waits until n sends were acked after since.
func (l *load) acksAfter(t *testing.T, since time.Time, n int) {
	deadline := time.Now().Add(replyWait)
	for {
		l.mu.Lock()
		got := 0
		for _, at := range l.ackedAt {
			if at.After(since) {
				got++
			}
		}
		l.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acks after the promotion within %s", got, n, replyWait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// converge reads what c is sent until it holds exactly the stream (a
// rolled_back gap may still be on its way), reconnecting (with since) if
// its connection was closed, then compares.
func converge(t *testing.T, c *peer, stream []testkit.Frame, reconnect func() error) {
	t.Helper()
	deadline := time.Now().Add(replyWait)
	for !sameIDs(c.msgs, stream) && time.Now().Before(deadline) {
		if _, err := c.read(time.Until(deadline)); err != nil {
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() {
				break
			}
			if err := reconnect(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !sameIDs(c.msgs, stream) {
		last := c.lastID()
		var after []string
		for _, f := range stream {
			if idAfter(f.ID, last) {
				after = append(after, f.User+"/"+f.ID+"/"+f.ClientID)
			}
		}
		t.Logf("%s is missing what the stream has after %s: %v", c.user, last, after)
	}
	checkSequence(t, c.user, c.msgs, stream)
}

func sameIDs(a, b []testkit.Frame) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].ID != b[i].ID {
			return false
		}
	}
	return true
}

// reconnectWithin reconnects c to base with since, retrying while the
// instance refuses (1013 while Redis fails over).
func reconnectWithin(c *peer, base string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		err := c.connect(base, true)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// checkLostAnnounced (REDIS_ACK_REPLICAS=0): no client_id is stored twice,
// and every acked message the stream lost reached no client silently: a
// client that had it was told (gap rolled_back, or reset when it came back
// with since= a lost ID) and dropped it, which converge then confirms.
func checkLostAnnounced(t *testing.T, stream []testkit.Frame, acked map[string]string, peers []*peer) {
	t.Helper()
	in := map[string]bool{}
	seen := map[string]bool{}
	for _, f := range stream {
		if seen[f.ClientID] {
			t.Errorf("client_id %s stored twice", f.ClientID)
		}
		seen[f.ClientID] = true
		in[f.ID] = true
	}
	lost := 0
	for _, id := range acked {
		if !in[id] {
			lost++
		}
	}
	gaps := 0
	for _, p := range peers {
		for _, g := range p.gaps {
			// rolled_back on an open connection; reset for one that came
			// back with since= a lost ID before the new primary was past it.
			if g.Reason == "rolled_back" || g.Reason == "reset" {
				gaps++
			}
		}
	}
	t.Logf("%d acked messages lost in the failover; %d rolled_back or reset gaps sent", lost, gaps)
	if lost > 0 && gaps == 0 {
		t.Errorf("%d acked messages lost without a rolled_back or reset gap", lost)
	}
}

// sentinelSetup is a primary, n replicas and a Sentinel watching them.
func sentinelSetup(t *testing.T, n int, hard bool) failoverSetup {
	primary := redistest.Start(t)
	var replicas []*redistest.Server
	for range n {
		replicas = append(replicas, redistest.StartReplica(t, primary))
	}
	sentinel := redistest.StartSentinel(t, "mymaster", primary.Addr)
	sc := redis.NewSentinelClient(&redis.Options{Addr: sentinel})
	t.Cleanup(func() { _ = sc.Close() })
	named := func() *redistest.Server {
		a, err := sc.GetMasterAddrByName(context.Background(), "mymaster").Result()
		if err != nil || len(a) != 2 {
			return nil
		}
		for _, r := range replicas {
			if net.JoinHostPort(a[0], a[1]) == r.Addr {
				return r
			}
		}
		return nil
	}
	return failoverSetup{
		env: map[string]string{"REDIS_URL": "redis://" + sentinel, "REDIS_SENTINEL_MASTER": "mymaster"},
		fault: func(t *testing.T) {
			if hard {
				primary.Kill(t)
				return
			}
			// NOGOODSLAVE until the Sentinel has seen the replica (its
			// INFO polls of the primary): retry for a while.
			for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
				err := sc.Failover(context.Background(), "mymaster").Err()
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal(err)
				}
			}
		},
		promoted: func() bool { return named() != nil },
		stream: func(t *testing.T, prefix string) []testkit.Frame {
			return streamOf(t, named(), prefix, failoverRoom)
		},
	}
}

// A planned SENTINEL FAILOVER: the old primary takes writes until the
// Sentinel announces the switch, about a second after the replica was
// promoted. With one replica and REDIS_ACK_REPLICAS=1 none of those is
// acked (the old primary has no replica left), and sends are refused until
// the old primary is back as a replica of the new one (the time to the
// first ack is logged). With 0, acked entries the tail had not read before
// the switch are lost unread: their senders are told (streams/owed.go).
// With more replicas than REDIS_ACK_REPLICAS a replica
// that is not promoted could ack them and later drop them: README says so.
func TestFaultSentinelGracefulFailover(t *testing.T) {
	for _, n := range []int{1, 0} {
		t.Run("ack_replicas="+strconv.Itoa(n), func(t *testing.T) {
			runFailover(t, n, sentinelSetup(t, 1, false))
		})
	}
}

// kill -9 of the primary with two replicas: the Sentinel promotes the one
// with the most data, which has every write one replica confirmed.
func TestFaultSentinelPrimaryKilled(t *testing.T) {
	for _, n := range []int{1, 0} {
		t.Run("ack_replicas="+strconv.Itoa(n), func(t *testing.T) { runFailover(t, n, sentinelSetup(t, 2, true)) })
	}
}

// clusterSetup is three primaries with a replica each; the fault hits the
// primary of the test room's slot.
func clusterSetup(t *testing.T, hard bool) failoverSetup {
	c := redistest.StartClusterWithReplicas(t, 3)
	cc := c.Client(t)
	var urls []string
	for _, a := range c.Addrs {
		urls = append(urls, "redis://"+a)
	}
	var primary, replica string
	return failoverSetup{
		env: map[string]string{"REDIS_URL": strings.Join(urls, ",")},
		fault: func(t *testing.T) {
			primary, replica = c.PrimaryOf(t, streams.Keys{Prefix: "x"}.Messages(failoverRoom))
			for deadline := time.Now().Add(10 * time.Second); replica == ""; primary, replica = c.PrimaryOf(t, streams.Keys{Prefix: "x"}.Messages(failoverRoom)) {
				if time.Now().After(deadline) {
					t.Fatalf("%s has no replica", primary)
				}
				time.Sleep(100 * time.Millisecond)
			}
			if hard {
				c.Node(t, primary).Kill(t)
				return
			}
			c.Node(t, replica).CLI(t, "CLUSTER", "FAILOVER")
		},
		recover: func(t *testing.T) {
			if hard { // the shard's only other node: back as a replica, so that WAIT 1 can be met
				c.Node(t, primary).Restart(t)
			}
		},
		promoted: func() bool { return redistest.IsPrimary(replica) },
		stream: func(t *testing.T, prefix string) []testkit.Frame {
			msgs, err := cc.XRange(context.Background(), streams.Keys{Prefix: prefix}.Messages(failoverRoom), "-", "+").Result()
			if err != nil {
				t.Fatal(err)
			}
			return toFrames(msgs)
		},
	}
}

// CLUSTER FAILOVER of the room's primary: live delivery goes on through
// the promoted replica (whose keyspace notifications xroom turns on when it
// starts listening there), and nothing acked is lost.
func TestFaultClusterFailover(t *testing.T) {
	for _, n := range []int{1, 0} {
		t.Run("ack_replicas="+strconv.Itoa(n), func(t *testing.T) { runFailover(t, n, clusterSetup(t, false)) })
	}
}

// kill -9 of the room's primary: its replica is promoted after
// cluster-node-timeout; with REDIS_ACK_REPLICAS=1 sends wait until the
// killed node is back as its replica.
func TestFaultClusterPrimaryKilled(t *testing.T) {
	for _, n := range []int{1, 0} {
		t.Run("ack_replicas="+strconv.Itoa(n), func(t *testing.T) { runFailover(t, n, clusterSetup(t, true)) })
	}
}
