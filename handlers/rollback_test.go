package handlers_test

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/internal/testkit"
	"github.com/xroom/xroom/streams"
)

// A failover that loses acknowledged messages (REDIS_ACK_REPLICAS=0, the
// primary killed before its replica had the last ones) is never silent: a
// connection that was sent the lost entries gets `gap` rolled_back, naming
// the newest entry kept, before anything newer. A client that comes back
// with since= a lost ID gets `gap` reset while the new primary has not gone
// past it, and after that every entry after it (none is missed).
func TestFaultRolledBackIsAnnounced(t *testing.T) {
	// Both tails: keyspace notifications, and the blocking reads of the
	// fallback (Redis that refuses CONFIG SET).
	for _, mode := range []streams.TailMode{streams.ModeNotify, streams.ModeBlocking} {
		t.Run(mode.String(), func(t *testing.T) { testRolledBackIsAnnounced(t, mode) })
	}
}

func testRolledBackIsAnnounced(t *testing.T, mode streams.TailMode) {
	primary, replica, sentinel, ts := startWithReplica(t, func(o *streams.HubOptions) { o.Mode = mode })
	a := &tracker{client: ts.dial("rb", "user=a", true)}
	a.expect("ready")
	kept := a.sendAcked("kept", "k-1")
	a.until(1)
	if err := redistest.WaitSynced(replica.Addr); err != nil {
		t.Fatal(err)
	}
	// In sync is not yet holding it: wait until the replica has the entry.
	testkit.Eventually(t, 30*time.Second, "the replica has the kept entry", func() bool {
		return strings.Contains(replica.CLI(t, "XRANGE", streams.Keys{Prefix: ts.prefix}.Messages("rb"), kept, kept), kept)
	})

	lost := loseTheNext(t, primary, replica, sentinel, func() string {
		lost := a.sendAcked("lost", "l-1")
		a.until(2)
		return lost
	})

	// The open connection is told, before anything newer.
	for {
		f := a.nextWithin(30 * time.Second)
		if f.Type == "message" {
			t.Fatalf("got %+v before the rollback was announced", f)
		}
		if f.Type == "gap" {
			if f.Reason != "rolled_back" || f.OldestID != kept {
				t.Fatalf("gap %+v, want rolled_back naming %s", f, kept)
			}
			break
		}
	}
	// Resuming from the lost entry while the new primary has not gone past it: reset.
	b := ts.dial("rb", "user=b&since="+lost, true)
	if f := b.expect("gap"); f.Reason != "reset" {
		t.Fatalf("since=%s (lost): %+v, want gap reset", lost, f)
	}
	var after string
	testkit.Eventually(t, 30*time.Second, "a send to the new primary", func() bool {
		a.send(fmt.Sprintf(`{"type":"message","message":"after","client_id":%q}`, "n-1"))
		f := a.reply("n-1")
		after = f.ID
		return f.Type == "ack"
	})
	// Once past it: every entry after it, here the new one.
	c := ts.dial("rb", "user=c&since="+lost, true)
	if f := c.expect("message"); f.ID != after {
		t.Fatalf("since=%s after new writes: %+v, want %s", lost, f, after)
	}
	if lost == after || !idLess(lost, after) {
		t.Fatalf("the new entry %s is not after the lost %s", after, lost)
	}
}

// waitPrimary waits until the Sentinel names addr as the primary.
func waitPrimary(t *testing.T, sentinel, addr string) bool {
	sc := redis.NewSentinelClient(&redis.Options{Addr: sentinel})
	defer sc.Close()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		a, err := sc.GetMasterAddrByName(t.Context(), "mymaster").Result()
		if err == nil && len(a) == 2 && net.JoinHostPort(a[0], a[1]) == addr {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

// With REDIS_ACK_REPLICAS=0 a failover can lose a message that was
// acknowledged before any tail read it back: no connection was sent it,
// so the head check finds nothing gone, but its sender holds the ack. The
// sender's connection is told (gap rolled_back naming the newest entry
// kept). The tail here polls once an hour, so it never reads the message
// before the primary dies; the check after the primary change finds it.
func TestFaultAckedUnreadLossIsAnnounced(t *testing.T) {
	primary, replica, sentinel, ts := startWithReplica(t, func(o *streams.HubOptions) { o.Mode, o.PollEvery = streams.ModePoll, time.Hour })
	key := streams.Keys{Prefix: ts.prefix}.Messages("rc")
	kept := primary.CLI(t, "XADD", key, "*", "user", "z", "message", "kept")
	if err := redistest.WaitSynced(replica.Addr); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 30*time.Second, "the replica has the kept entry", func() bool {
		return strings.Contains(replica.CLI(t, "XRANGE", key, kept, kept), kept)
	})
	a := &tracker{client: ts.dial("rc", "user=a", true)}
	if f := a.expect("message"); f.ID != kept {
		t.Fatalf("history %+v, want %s", f, kept)
	}
	a.expect("ready")

	lost := loseTheNext(t, primary, replica, sentinel, func() string { return a.sendAcked("lost", "l-1") })
	for {
		f := a.nextWithin(30 * time.Second)
		if f.Type == "message" {
			t.Fatalf("got %+v before the loss of %s was announced", f, lost)
		}
		if f.Type == "gap" {
			if f.Reason != "rolled_back" || f.OldestID != kept {
				t.Fatalf("gap %+v, want rolled_back naming %s", f, kept)
			}
			return
		}
	}
}

// loseTheNext runs send while the replica misses what the primary takes,
// then kills the primary and waits for the Sentinel to promote the replica:
// what send stored is lost. It returns what send returned.
func loseTheNext(t *testing.T, primary, replica *redistest.Server, sentinel string, send func() string) string {
	t.Helper()
	replica.Pause(t)
	primary.CLI(t, "CLIENT", "KILL", "TYPE", "replica") // the replica misses what follows
	lost := send()
	primary.Kill(t)
	replica.Resume(t)
	if !waitPrimary(t, sentinel, replica.Addr) {
		t.Fatal("the Sentinel did not promote the replica within 30 s")
	}
	return lost
}

// startWithReplica starts a primary, its replica and a Sentinel, and a
// server reaching the primary through the Sentinel with the hub options
// hub sets.
func startWithReplica(t *testing.T, hub func(*streams.HubOptions)) (primary, replica *redistest.Server, sentinel string, ts *testServer) {
	primary = redistest.Start(t)
	replica = redistest.StartReplica(t, primary)
	sentinel = redistest.StartSentinel(t, "mymaster", primary.Addr)
	ts = startServer(t, func(o *options) {
		o.rs, o.sentinel = primary, sentinel
		o.cfg.RedisTimeout = time.Second
		hub(&o.hub)
	})
	return primary, replica, sentinel, ts
}
