package main

import (
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/streams"
)

// startSentinel runs a real Sentinel watching the master at masterAddr as
// "mymaster", and returns its address.
func startSentinel(t *testing.T, masterAddr string) string {
	t.Helper()
	return redistest.StartSentinel(t, "mymaster", masterAddr)
}

// twoThroughSentinel starts xroom on Redis through sentinel, and joins
// alice and bob to lobby.
func twoThroughSentinel(t *testing.T, sentinel, prefix string) (a, b *wsClient) {
	t.Helper()
	r := startRun(t, baseEnv(t, map[string]string{
		"REDIS_URL":             "redis://" + sentinel,
		"REDIS_SENTINEL_MASTER": "mymaster",
		"CHAT_PREFIX":           prefix,
	}))
	a = dial(t, r.base, "lobby", "alice")
	b = dial(t, r.base, "lobby", "bob")
	a.expect("ready")
	b.expect("ready")
	return a, b
}

func TestRunThroughSentinel(t *testing.T) {
	master := redistest.Start(t)
	sentinel := startSentinel(t, master.Addr)
	prefix := redistest.Prefix(t)
	a, b := twoThroughSentinel(t, sentinel, prefix)
	ack, _ := a.sendAcked("via sentinel", "s-1")
	if f := b.expect("message"); f.ID != ack.ID || f.Message != "via sentinel" {
		t.Fatalf("bob got %+v, want %s", f, ack.ID)
	}
	// The message is on the master that Sentinel named.
	out := master.CLI(t, "XRANGE", streams.Keys{Prefix: prefix}.Messages("lobby"), "-", "+")
	if !strings.Contains(out, ack.ID) || !strings.Contains(out, "via sentinel") {
		t.Fatalf("master lacks the entry:\n%s", out)
	}
}

// After a planned Sentinel failover the doorbell follows the new primary:
// a message sent after the switch reaches the other client live, well
// before the tail's slow sweep (30 s) could have found it.
func TestRunFollowsASentinelFailover(t *testing.T) {
	master := redistest.Start(t)
	_, mport, _ := net.SplitHostPort(master.Addr)
	replica := redistest.Start(t, redistest.WithArgs("--replicaof", "127.0.0.1", mport))
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 30s", what)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitFor("the replica in sync", func() bool {
		return strings.Contains(replica.CLI(t, "INFO", "replication"), "master_link_status:up")
	})
	sentinel := startSentinel(t, master.Addr)
	_, sport, _ := net.SplitHostPort(sentinel)
	a, b := twoThroughSentinel(t, sentinel, redistest.Prefix(t))
	ack, _ := a.sendAcked("before", "f-1")
	if f := b.expect("message"); f.ID != ack.ID {
		t.Fatalf("bob got %+v, want %s", f, ack.ID)
	}
	_, rport, _ := net.SplitHostPort(replica.Addr)
	waitFor("the failover", func() bool {
		out, _ := exec.Command("redis-cli", "-p", sport, "SENTINEL", "FAILOVER", "mymaster").CombinedOutput()
		if strings.Contains(string(out), "INPROG") {
			return false
		}
		addr, _ := exec.Command("redis-cli", "-p", sport, "SENTINEL", "get-master-addr-by-name", "mymaster").Output()
		return strings.Contains(string(addr), rport)
	})
	// Sends may fail while the switch settles; a client resends the same client_id.
	var id string
	waitFor("a send after the failover", func() bool {
		a.send(map[string]string{"type": "message", "message": "after", "client_id": "f-2"})
		for {
			f := a.next()
			switch {
			case f.Type == "ack":
				id = f.ID
				return true
			case f.Type == "error" && f.Code == "unavailable":
				return false
			}
		}
	})
	for {
		f := b.next() // within 10 s
		if f.Type == "message" && f.ID == id {
			break
		}
	}
}
