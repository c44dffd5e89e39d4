package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/internal/testkit"
	"github.com/xroom/xroom/streams"
)

// The server under a low descriptor limit, offered more connections than it
// allows: silent sockets, then WebSocket clients, then both. Its limit is
// 256 descriptors (the shell's ulimit, soft and hard).

const edgeNofile = 256

var budgetRe = regexp.MustCompile(`msg="descriptor limit" soft=(\d+) hard=(\d+) max_conns=(\d+) http_conns=(\d+)`)

// edgeServer starts xroom under edgeNofile descriptors with a 1 s
// HEADER_TIMEOUT, and returns it with its MAX_CONNS as it logged it.
func edgeServer(t *testing.T, env map[string]string) (*proc, int) {
	t.Helper()
	for k, v := range map[string]string{
		"ADDR":           "127.0.0.1:0",
		"HEADER_TIMEOUT": "1s", "REDIS_POOL_SIZE": "4",
		// No join/leave events in the crowded room: they would be most of the traffic.
		"PRESENCE_MAX_MEMBERS": "10",
	} {
		env[k] = v
	}
	p := startProcLimited(t, env, edgeNofile)
	m := budgetRe.FindStringSubmatch(p.out.String())
	if m == nil {
		t.Fatalf("no descriptor limit line in:\n%s", p.out.String())
	}
	if m[1] != strconv.Itoa(edgeNofile) || m[2] != strconv.Itoa(edgeNofile) {
		t.Fatalf("descriptor limit soft %s hard %s, want %d", m[1], m[2], edgeNofile)
	}
	maxConns, _ := strconv.Atoi(m[3])
	return p, maxConns
}

// silentFlood opens n TCP connections that send nothing and reports how
// each ended: refused with 503 at once, or closed (by the server's
// timeout). It fails if any is still open after limit.
func silentFlood(t *testing.T, base string, n int, limit time.Duration) (refused, closed int) {
	t.Helper()
	addr := strings.TrimPrefix(base, "http://")
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range n {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("dial: %v", err) // the kernel's backlog takes them even when accept cannot
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			_ = c.SetReadDeadline(time.Now().Add(limit))
			got, err := io.ReadAll(c)
			var ne net.Error
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.As(err, &ne) && ne.Timeout():
				t.Errorf("a silent connection still open after %v", limit)
			case strings.HasPrefix(string(got), "HTTP/1.1 503 "):
				refused++
			default:
				closed++
			}
		}()
	}
	wg.Wait()
	return refused, closed
}

// dialWS opens a WebSocket in the xroom dialect; on a refusal it returns
// the status and body.
func dialWS(base, room, user string) (*wsClient, int, string, error) {
	conn, _, err := testkit.DialChat(base, room, "user="+user, true, nil)
	var refusal *testkit.Refusal
	switch {
	case errors.As(err, &refusal):
		return nil, refusal.Status, refusal.Body, err
	case err != nil:
		return nil, 0, "", err
	}
	return &wsClient{conn: conn}, http.StatusSwitchingProtocols, "", nil
}

func alive(t *testing.T, p *proc) {
	t.Helper()
	select {
	case <-p.exited:
		t.Fatalf("the server exited (%v); stderr:\n%s", p.err, p.errOut.String())
	default:
	}
	var health struct{ Status string }
	getJSON(t, p.base+"/healthz", &health)
}

func TestProcessUnderLowDescriptorLimit(t *testing.T) {
	srv := redistest.Shared(t)
	p, maxConns := edgeServer(t, map[string]string{"REDIS_URL": srv.URL(), "CHAT_PREFIX": redistest.Prefix(t)})
	if maxConns <= 0 || maxConns >= edgeNofile {
		t.Fatalf("MAX_CONNS %d derived from %d descriptors", maxConns, edgeNofile)
	}
	const bound = 10 * time.Second // HEADER_TIMEOUT is 1 s; a loaded machine is late, never early

	// 1. More silent sockets than descriptors: the excess is refused (503,
	// or closed at once), the rest closed at HEADER_TIMEOUT.
	refused, closed := silentFlood(t, p.base, 300, bound)
	t.Logf("300 silent sockets: %d refused with 503, %d closed", refused, closed)
	if refused == 0 || closed == 0 {
		t.Errorf("want some refused with 503 and some closed after HEADER_TIMEOUT")
	}
	alive(t, p)

	// 2. More WebSocket clients than MAX_CONNS: the excess gets 503
	// server_full with a JSON body before any upgrade.
	var held []*wsClient
	for i := range maxConns + 20 {
		c, status, body, err := dialWS(p.base, "crowd", fmt.Sprintf("u%d", i))
		if err == nil {
			c.t = t
			t.Cleanup(func() { c.conn.Close() })
			c.expect("ready")
			held = append(held, c)
			continue
		}
		if status != http.StatusServiceUnavailable || !strings.Contains(body, `"code":"server_full"`) {
			t.Fatalf("client %d: %v, status %d %s; want 101, or 503 server_full", i, err, status, body)
		}
	}
	if len(held) != maxConns {
		t.Fatalf("%d WebSockets accepted, want MAX_CONNS = %d", len(held), maxConns)
	}
	everyoneGets := func(text string) {
		t.Helper()
		held[0].send(map[string]string{"message": text})
		for i, c := range held {
			if f := c.expect("message"); f.Message != text {
				t.Fatalf("client %d got %+v, want %q", i, f, text)
			}
		}
	}
	everyoneGets("all of you")

	// 3. A silent flood while the WebSockets are held: they are still served.
	done := make(chan struct{})
	go func() {
		defer close(done)
		silentFlood(t, p.base, 300, bound)
	}()
	everyoneGets("during the flood")
	<-done
	alive(t, p)
	for _, want := range []string{`msg="WebSocket connection refused" reason=server_full`, `msg="connection timed out; closing" phase=first_byte`} {
		if !strings.Contains(p.out.String(), want) {
			t.Errorf("no log line %s", want)
		}
	}
}

// The server's own limit lowered under it while it runs: accepts fail
// with EMFILE, are retried and logged at most once a second, the clients
// it holds are still served, and it accepts again once descriptors free up.
func TestProcessLivesThroughEMFILE(t *testing.T) {
	srv := redistest.Shared(t)
	prefix := redistest.Prefix(t)
	p, _ := edgeServer(t, map[string]string{"REDIS_URL": srv.URL(), "CHAT_PREFIX": prefix})
	var held []*wsClient
	for i := range 10 {
		c := dial(t, p.base, "held", fmt.Sprintf("h%d", i))
		c.expect("ready")
		held = append(held, c)
	}
	pid := p.cmd.Process.Pid
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	used := map[int]bool{}
	for _, fd := range fds {
		n, _ := strconv.Atoi(fd.Name())
		used[n] = true
	}
	free := 0 // the lowest free descriptor: the only one left under the limit
	for used[free] {
		free++
	}
	setNofile(t, pid, uint64(free+1))
	start := time.Now()

	flood := make(chan struct{})
	go func() {
		defer close(flood)
		silentFlood(t, p.base, 60, 30*time.Second)
	}()
	p.out.waitFor(t, regexp.MustCompile(`msg="accepting a connection failed; retrying" err=".*too many open files"`), nil)
	// Added straight to the stream: the room's tail reads it on the
	// connection it has, where a send would need a new Redis connection.
	if err := srv.Client(t).XAdd(context.Background(), &redis.XAddArgs{Stream: streams.Keys{Prefix: prefix}.Messages("held"),
		Values: []string{"user", "ops", "message", "while out of descriptors"}}).Err(); err != nil {
		t.Fatal(err)
	}
	for i, c := range held {
		if f := c.expect("message"); f.Message != "while out of descriptors" {
			t.Fatalf("client %d got %+v", i, f)
		}
	}
	setNofile(t, pid, edgeNofile)
	<-flood // each silent socket was accepted in the end, and closed
	alive(t, p)
	late := dial(t, p.base, "held", "late")
	for f := late.next(); f.Type != "ready"; f = late.next() { // the history first
	}

	lines := strings.Count(p.out.String(), "accepting a connection failed")
	if most := int(time.Since(start)/time.Second) + 2; lines > most {
		t.Errorf("%d accept-failure lines in %v: more than one a second", lines, time.Since(start))
	}
	resp, err := http.Get(p.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if v := regexp.MustCompile(`(?m)^xroom_accept_errors_total (\d+)`).FindSubmatch(body); v == nil || string(v[1]) == "0" {
		t.Errorf("xroom_accept_errors_total: %q", v)
	}
}

// setNofile sets the soft descriptor limit of process pid (prlimit(2)).
func setNofile(t *testing.T, pid int, soft uint64) {
	t.Helper()
	lim := syscall.Rlimit{Cur: soft, Max: edgeNofile}
	if _, _, errno := syscall.Syscall6(syscall.SYS_PRLIMIT64, uintptr(pid), uintptr(syscall.RLIMIT_NOFILE),
		uintptr(unsafe.Pointer(&lim)), 0, 0, 0); errno != 0 {
		t.Fatalf("prlimit: %v", errno)
	}
}
