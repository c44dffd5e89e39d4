package redistest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	// A killed primary is declared down after 2 s. At 1 s (the Sentinel's
	// own PING period) the Sentinel failed over twice in 3 runs of 11 of
	// the failover bench, judging the new primary down a second after the
	// switch; at 2 s, in none of 6 (bench/README, "Issue 10").
	sentinelDownAfterMs       = 2000
	sentinelFailoverTimeoutMs = 10000 // a stuck failover is retried after 10 s
)

// StartSentinel runs a real Sentinel (redis-server FILE --sentinel) on a
// free 127.0.0.1 port, watching the primary at masterAddr as masterName
// with quorum 1 and fast failure detection, and returns its address once it
// names the primary. Killed at tb.Cleanup. Skips without redis-server
// (fails with XROOM_REQUIRE_REAL=1).
func StartSentinel(tb testing.TB, masterName, masterAddr string) string {
	tb.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		skipOrFail(tb, "redistest: no redis-server on PATH")
	}
	ports, err := freePorts(1)
	if err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	host, mport, _ := net.SplitHostPort(masterAddr)
	dir := tb.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	body := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor %s %s %s 1\n", ports[0], dir, masterName, host, mport) +
		// Fast failure detection: tests kill primaries and wait for the switch.
		fmt.Sprintf("sentinel down-after-milliseconds %s %d\nsentinel failover-timeout %s %d\n", masterName, sentinelDownAfterMs, masterName, sentinelFailoverTimeoutMs)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	logf, err := os.Create(filepath.Join(dir, "sentinel.log"))
	if err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	p, err := startProcess([]string{conf, "--sentinel"}, dir, logf)
	if err != nil {
		tb.Fatalf("redistest: starting a sentinel: %v", err)
	}
	tb.Cleanup(func() { _ = p.cmd.Process.Kill(); <-p.done; _ = logf.Close() })
	addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	deadline := time.Now().Add(readyTimeout)
	for {
		out, _ := runCLI("-p", fmt.Sprint(ports[0]), "SENTINEL", "get-master-addr-by-name", masterName)
		if strings.Contains(out, mport) {
			return addr
		}
		if time.Now().After(deadline) || p.exited() {
			log, _ := os.ReadFile(logf.Name())
			tb.Fatalf("redistest: sentinel did not come up: %s\n%s", out, log)
		}
		time.Sleep(pollEvery)
	}
}
