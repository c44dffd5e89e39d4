package main

import (
	"bufio"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/xroom/xroom/internal/redistest"
)

// SIGTERM ends the process's event streams (EventSource then reconnects,
// to another instance or this one restarted) and the process exits
// promptly, not after waiting out SHUTDOWN_TIMEOUT for them.
func TestProcessSIGTERMEndsEventStreams(t *testing.T) {
	srv := redistest.Shared(t)
	const shutdownTimeout = 20 * time.Second
	p := startProc(t, map[string]string{
		"REDIS_URL": srv.URL(), "CHAT_PREFIX": redistest.Prefix(t), "ADDR": "127.0.0.1:0",
		"SHUTDOWN_TIMEOUT": shutdownTimeout.String(),
	})
	resp, err := http.Get(p.base + "/sse/chat/lobby/?user=ana")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("%d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	lines := make(chan string, 64)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	for line := range lines {
		if line == "event: ready" {
			break
		}
	}
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ended := time.After(shutdownTimeout / 2)
	for open := true; open; {
		select {
		case _, open = <-lines:
		case <-ended:
			t.Fatal("the stream was still open long after SIGTERM")
		}
	}
	if code := p.wait(shutdownTimeout / 2); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	t.Logf("stream ended and process exited %v after SIGTERM", time.Since(start).Round(time.Millisecond))
	if !stoppedRe.MatchString(p.out.String()) {
		t.Errorf("no \"stopped\" log line:\n%s", p.out.String())
	}
}
