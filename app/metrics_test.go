package main

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/xroom/xroom/internal/redistest"
)

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// The wired server serves /metrics (its own, the Redis hooks', Go's and the
// process's) and, with PPROF_ADDR, profiles on a separate listener only.
func TestRunServesMetricsAndPprof(t *testing.T) {
	srv := redistest.Shared(t)
	r := startRun(t, baseEnv(t, map[string]string{"REDIS_URL": srv.URL(), "CHAT_PREFIX": redistest.Prefix(t), "PPROF_ADDR": "127.0.0.1:0"}))
	a := dial(t, r.base, "room.1", "alice")
	a.expect("ready")
	a.sendAcked("counted", "k1")

	wants := []string{
		"xroom_messages_appended_total 1\n", "xroom_messages_delivered_total 1\n", `xroom_connections_open{dialect="xroom"} 1`,
		"xroom_redis_rtt_seconds_count", "xroom_tail_lag_seconds_count 1\n", "go_goroutines", "process_resident_memory_bytes",
	}
	// A frame is counted just after its write returns: scrape until it is.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		status, body := httpGet(t, r.base+"/metrics")
		if status != 200 {
			t.Fatalf("GET /metrics: %d", status)
		}
		var missing []string
		for _, want := range wants {
			if !strings.Contains(body, want) {
				missing = append(missing, want)
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics has no %q", missing)
		}
	}

	// A healthy run has no Redis errors: not even the CLIENT SETINFO that
	// Redis before 7.2 refuses on every new connection (DisableIdentity).
	if _, body := httpGet(t, r.base+"/metrics"); regexp.MustCompile(`xroom_redis_errors_total\{[^}]*\} [1-9]`).MatchString(body) {
		t.Errorf("Redis errors in a healthy run:\n%s", regexp.MustCompile(`(?m)^xroom_redis_errors_total.*$`).FindAllString(body, -1))
	}

	pprofURL := r.out.waitFor(t, regexp.MustCompile(`msg="pprof is serving" url=(http://127\.0\.0\.1:\d+/debug/pprof/)`), r.done)[1]
	if status, body := httpGet(t, pprofURL+"goroutine?debug=1"); status != 200 || !strings.Contains(body, "goroutine profile") {
		t.Fatalf("pprof: %d %.200s", status, body)
	}
	if status, body := httpGet(t, r.base+"/debug/pprof/goroutine?debug=1"); status == 200 && strings.Contains(body, "goroutine profile") {
		t.Fatal("profiles are served on ADDR too")
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
}
