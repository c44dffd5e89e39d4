package main

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/streams"
)

// A Redis failover that loses a message the page showed (REDIS_ACK_REPLICAS
// is 0 and the primary died before its replica had it): the page is told
// (gap rolled_back), says so, and reloads the room from Redis, so what it
// shows is what the room holds: the lost message is gone, and what comes
// after shows once.
func TestBrowserRolledBackReloadsTheRoom(t *testing.T) {
	primary := redistest.Start(t)
	redistest.RequireReal(t, primary)
	replica := redistest.StartReplica(t, primary)
	sentinel := redistest.StartSentinel(t, "mymaster", primary.Addr)
	p, env := browserServer(t, map[string]string{"REDIS_URL": "redis://" + sentinel, "REDIS_SENTINEL_MASTER": "mymaster"})
	b := startBrowser(t)
	const room = "rolled"
	key := streams.Keys{Prefix: env["CHAT_PREFIX"]}.Messages(room)

	alice := b.join(p.base, "alice", room)
	alice.say("kept")
	alice.waitSettled("kept")
	waitReplicaHas(t, replica, key, 1)

	replica.Pause(t)
	primary.CLI(t, "CLIENT", "KILL", "TYPE", "replica") // the replica misses what follows
	alice.say("lost")
	alice.waitSettled("lost")
	primary.Kill(t)
	replica.Resume(t)
	waitNamedPrimary(t, sentinel, replica.Addr)

	alice.waitFor("the failover notice", `[...document.querySelectorAll("#log .notice")].some((n) => n.textContent.includes("failover lost"))`)
	alice.waitFor("the lost message gone", `!`+rowsJS+`.some((r) => r.text === "lost")`)
	alice.waitConnected()
	alice.say("after")
	alice.waitSettled("kept", "after")
	alice.expectOnce("kept", "after")
	alice.expectInOrder()
	alice.screenshot("rolled-back")
}

// waitReplicaHas waits until the replica holds n entries of the stream key.
func waitReplicaHas(t *testing.T, replica *redistest.Server, key string, n int) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); replica.CLI(t, "XLEN", key) != strconv.Itoa(n); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the replica does not hold %d entries of %s within 30 s", n, key)
		}
	}
}

// waitNamedPrimary waits until the Sentinel names addr as the primary.
func waitNamedPrimary(t *testing.T, sentinel, addr string) {
	t.Helper()
	sc := redis.NewSentinelClient(&redis.Options{Addr: sentinel})
	defer sc.Close()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		a, err := sc.GetMasterAddrByName(context.Background(), "mymaster").Result()
		if err == nil && len(a) == 2 && net.JoinHostPort(a[0], a[1]) == addr {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the Sentinel did not promote the replica within 30 s")
		}
	}
}
