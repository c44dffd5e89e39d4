package handlers_test

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/internal/redistest"
)

// A failover that loses acknowledged messages (REDIS_ACK_REPLICAS=0, the
// primary killed before its replica had the last ones) is never silent: a
// connection that was sent the lost entries gets `gap` rolled_back, naming
// the newest entry kept, before anything newer. A client that comes back
// with since= a lost ID gets `gap` reset while the new primary has not gone
// past it, and after that every entry after it (none is missed).
func TestFaultRolledBackIsAnnounced(t *testing.T) {
	primary := redistest.Start(t)
	replica := redistest.StartReplica(t, primary)
	sentinel := redistest.StartSentinel(t, "mymaster", primary.Addr)
	ts := startServer(t, func(o *options) {
		o.rs, o.sentinel = primary, sentinel
		o.cfg.RedisTimeout = time.Second
	})
	a := &tracker{client: ts.dial("rb", "user=a", true)}
	a.expect("ready")
	kept := a.sendAcked("kept", "k-1")
	a.until(1)
	if err := redistest.WaitSynced(replica.Addr); err != nil {
		t.Fatal(err)
	}
	// In sync is not yet holding it: wait until the replica has the entry.
	waitUntil(t, 30*time.Second, "the replica has the kept entry", func() bool {
		return strings.Contains(replica.CLI(t, "XRANGE", ts.prefix+":{rb}:messages", kept, kept), kept)
	})

	replica.Pause(t)
	primary.CLI(t, "CLIENT", "KILL", "TYPE", "replica") // the replica misses what follows
	lost := a.sendAcked("lost", "l-1")
	a.until(2)
	primary.Kill(t)
	replica.Resume(t)
	if !waitPrimary(t, sentinel, replica.Addr) {
		t.Fatal("the Sentinel did not promote the replica within 30 s")
	}

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
	waitUntil(t, 30*time.Second, "a send to the new primary", func() bool {
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
