package main

import (
	"context"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/internal/testkit/hooktest"
	"github.com/xroom/xroom/streams"
)

// An xroom process is killed (SIGKILL) while its webhook request is in
// flight: another instance delivers the batch it held once that has gone
// unrenewed for WEBHOOK_CLAIM_AFTER, then the rest of the room, in order.
// Until then the room is the dead instance's: the other sends nothing of
// it, so nothing overtakes the held batch.
func TestHooksProcessKilledMidBatch(t *testing.T) {
	srv := redistest.Shared(t)
	redistest.RequireReal(t, srv)
	prefix := redistest.Prefix(t)
	// Long enough that A's renewals (every third of it) are never late
	// under a loaded CI machine; B's quiet is checked for half of it.
	const claimAfter = 3 * time.Second
	hang := make(chan struct{})
	var mu sync.Mutex
	var firstAtA time.Time
	app := hooktest.NewReceiver(t, hookSecret, func(r *hooktest.Request) int {
		if r.Path == "/a" { // instance A's requests never get an answer
			mu.Lock()
			if firstAtA.IsZero() {
				firstAtA = time.Now()
			}
			mu.Unlock()
			<-hang
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	t.Cleanup(func() { close(hang) }) // before the app's Close, which waits for its handlers
	env := func(path string) map[string]string {
		return map[string]string{"REDIS_URL": srv.URL(), "CHAT_PREFIX": prefix, "ADDR": "127.0.0.1:0", "API_KEY": "k",
			"WEBHOOK_URL": app.URL + path, "WEBHOOK_SECRET": hookSecret, "WEBHOOK_CLAIM_AFTER": claimAfter.String()}
	}
	a := startProc(t, env("/a"))
	for _, text := range []string{"one", "two", "three"} {
		if code, body := apiPublish(t, a.base, "k", "lobby", "bot", text); code != 201 {
			t.Fatalf("publish: %d %s", code, body)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for app.RequestsTo("/a") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("A sent no webhook request within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	b := startProc(t, env("/b"))
	for _, text := range []string{"four", "five"} {
		if code, body := apiPublish(t, b.base, "k", "lobby", "bot", text); code != 201 {
			t.Fatalf("publish: %d %s", code, body)
		}
	}
	time.Sleep(claimAfter / 2)
	if n := app.RequestsTo("/b"); n != 0 {
		t.Fatalf("B sent %d requests while A held the room's batch", n)
	}
	if err := a.cmd.Process.Kill(); err != nil { // SIGKILL, mid-request
		t.Fatal(err)
	}
	killed := time.Now()
	a.wait(10 * time.Second)
	app.WaitStreams(srv.Client(t), prefix, []string{"lobby"}, 3*claimAfter+10*time.Second)
	t.Logf("B delivered the room %v after A was killed (claim time %v)", time.Since(killed).Round(time.Millisecond), claimAfter)
	if !strings.Contains(b.out.String(), "took over a webhook batch") {
		t.Errorf("B's log does not say it took the batch over:\n%s", b.out.String())
	}
	p, err := srv.Client(t).XPending(context.Background(), streams.Keys{Prefix: prefix}.Messages("lobby"), streams.HookGroupName).Result()
	if err != nil || p.Count != 0 {
		t.Fatalf("XPENDING after the take-over: %+v, %v", p, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if firstAtA.IsZero() {
		t.Fatal("A's request was never seen")
	}
}

// Bad hook configuration stops the binary before it serves, with a message
// naming the variable.
func TestHooksProcessBadConfig(t *testing.T) {
	for name, value := range map[string]string{
		"WEBHOOK_URL":          "ftp://hooks.example.com/in",
		"PUBLISH_HOOK_TIMEOUT": "-2s",
		"WEBHOOK_FROM":         "yesterday",
	} {
		cmd := exec.Command(xroomBinary(t))
		cmd.Dir = t.TempDir()
		cmd.Env = []string{"PATH=/usr/bin:/bin", "ADDR=127.0.0.1:0", "EMBEDDED_REDIS_ADDR=127.0.0.1:0", name + "=" + value}
		out, err := cmd.CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 1 {
			t.Fatalf("%s=%s: %v\n%s", name, value, err, out)
		}
		if want := "invalid " + name + `="` + value + `"`; !strings.Contains(string(out), want) || strings.Contains(string(out), "xroom is serving") {
			t.Errorf("%s=%s: output does not name it (%s):\n%s", name, value, want, out)
		}
	}
}
