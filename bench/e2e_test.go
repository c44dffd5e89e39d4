package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/xroom/xroom/internal/redistest"
)

func TestMain(m *testing.M) { os.Exit(redistest.Run(m)) }

// The xroom server binary, built once for these tests.
var serverBinary struct {
	once sync.Once
	path string
	err  error
}

func buildServer(t *testing.T) string {
	t.Helper()
	serverBinary.once.Do(func() {
		gobin, err := exec.LookPath("go")
		if err != nil {
			gobin = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		dir, err := os.MkdirTemp("", "xroom-bench-")
		if err != nil {
			serverBinary.err = err
			return
		}
		serverBinary.path = filepath.Join(dir, "xroom")
		out, err := exec.Command(gobin, "build", "-o", serverBinary.path, "github.com/xroom/xroom/app").CombinedOutput()
		if err != nil {
			serverBinary.err = fmt.Errorf("go build ./app: %v\n%s", err, out)
		}
	})
	if serverBinary.err != nil {
		t.Fatal(serverBinary.err)
	}
	return serverBinary.path
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startServer runs the xroom binary on a free port against redisAddr and
// waits until it is ready; it returns the address and the process ID.
func startServer(t *testing.T, redisAddr, prefix string) (string, int) {
	t.Helper()
	return startBinary(t, "REDIS_URL=redis://"+redisAddr, "CHAT_PREFIX="+prefix)
}

// startBinary runs the xroom binary on a free port with env (and PATH,
// ADDR, LOG_LEVEL=warn, no rate limits) and waits until it is ready; it
// returns the address and the process ID.
func startBinary(t *testing.T, env ...string) (string, int) {
	t.Helper()
	bin := buildServer(t)
	addr := freeAddr(t)
	var out bytes.Buffer
	cmd := exec.Command(bin)
	cmd.Dir = t.TempDir()
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "ADDR=" + addr, "LOG_LEVEL=warn",
		// The load comes from one address at rates no person sends.
		"RATE_LIMIT=0", "USER_RATE_LIMIT=0", "MAX_CONNS_PER_IP=0"}, env...)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("server output:\n%s", out.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr, cmd.Process.Pid
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not ready: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runBench runs the tool as `go run ./bench ARGS -json` would and decodes its result.
func runBench(t *testing.T, args ...string) (result, int, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := mainArgs(append(args, "-json"), &stdout, &stderr)
	var res result
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("bench %v: exit %d, output not JSON: %v\n%s\n%s", args, code, err, stdout.String(), stderr.String())
	}
	return res, code, stderr.String()
}

// Short runs: correct counts and zero loss, never speed.
const quick = "-duration=700ms"

func TestEndToEndFanout(t *testing.T) {
	rs := redistest.Shared(t)
	addr, _ := startServer(t, rs.Addr, redistest.Prefix(t))
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"closed loop", []string{"-rate=0", "-pubs=2"}},
		{"fixed rate", []string{"-rate=200", "-pubs=2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"fanout", "-server", addr, "-subs=5", quick, "-warmup=200ms"}, tc.args...)
			res, code, stderr := runBench(t, args...)
			if code != exitOK || len(res.Errors) > 0 {
				t.Fatalf("exit %d, errors %v, stderr %s", code, res.Errors, stderr)
			}
			if res.Published == 0 || res.Acked != res.Published || res.PublishErrors != 0 {
				t.Fatalf("published %d acked %d refused %d", res.Published, res.Acked, res.PublishErrors)
			}
			if res.Deliveries != 5*res.Acked || res.Loss != 0 || res.Duplicates != 0 || res.Reordered != 0 || res.IDRegressions != 0 {
				t.Fatalf("deliveries %d (want 5 × %d), loss %d dup %d reordered %d regressions %d",
					res.Deliveries, res.Acked, res.Loss, res.Duplicates, res.Reordered, res.IDRegressions)
			}
			if len(res.Subscribers) != 5 || res.Connections != 7 {
				t.Fatalf("%d subscribers, %d connections; want 5, 7", len(res.Subscribers), res.Connections)
			}
			for _, s := range res.Subscribers {
				if s.Deliveries != res.Acked {
					t.Fatalf("subscriber %d got %d of %d", s.Conn, s.Deliveries, res.Acked)
				}
			}
			if res.Latency == nil || res.Latency.Count == 0 || res.Latency.Count >= res.Deliveries {
				t.Fatalf("latency sample %+v: want the deliveries after the warm-up only", res.Latency)
			}
			if res.Latency.P50 > res.Latency.P99 || res.Latency.P99 > res.Latency.Max {
				t.Fatalf("percentiles out of order: %+v", res.Latency)
			}
			// The server's own counters (its /metrics) agree: every acked
			// message appended once and delivered to the 5 subscribers (the
			// publishers' own copies may still be on their way at the scrape).
			if a, d := res.Server["xroom_messages_appended_total"], res.Server["xroom_messages_delivered_total"]; a != float64(res.Acked) || d < float64(5*res.Acked) || d > float64(7*res.Acked) {
				t.Fatalf("server metrics: appended %v delivered %v; want %d and %d to %d (all: %v)", a, d, res.Acked, 5*res.Acked, 7*res.Acked, res.Server)
			}
		})
	}
}

func TestEndToEndRedisCommands(t *testing.T) {
	rs := redistest.Shared(t)
	redistest.RequireReal(t, rs) // INFO commandstats
	addr, _ := startServer(t, rs.Addr, redistest.Prefix(t))
	res, code, stderr := runBench(t, "commands", "-server", addr, "-redis", rs.Addr, "-subs-list=2,8", quick, "-rate=50")
	if code != exitOK || len(res.Steps) != 2 {
		t.Fatalf("exit %d, %d steps, errors %v %s", code, len(res.Steps), res.Errors, stderr)
	}
	for _, s := range res.Steps {
		if s.Redis == nil || s.Redis.ByCommand["xadd"] < s.Acked || s.Redis.PerMessage < 1 || s.Redis.ByCommand["info"] != 0 {
			t.Fatalf("%s: redis %+v for %d acked", s.Label, s.Redis, s.Acked)
		}
	}
}

func TestEndToEndReplay(t *testing.T) {
	rs := redistest.Shared(t)
	prefix := redistest.Prefix(t)
	addr, _ := startServer(t, rs.Addr, prefix)
	res, code, stderr := runBench(t, "replay", "-server", addr, "-redis", rs.Addr, "-prefix", prefix, "-entries=3000", "-repeat=2")
	if code != exitOK || len(res.Errors) > 0 {
		t.Fatalf("exit %d, errors %v, stderr %s", code, res.Errors, stderr)
	}
	if res.Deliveries != 6000 || res.Loss != 0 || res.Duplicates != 0 || res.Reordered != 0 || res.IDRegressions != 0 {
		t.Fatalf("deliveries %d (want 6000), loss %d dup %d reordered %d", res.Deliveries, res.Loss, res.Duplicates, res.Reordered)
	}
	if res.Replay == nil || len(res.Replay.PerSec) != 2 || res.Replay.Median <= 0 {
		t.Fatalf("replay %+v", res.Replay)
	}
}

func TestEndToEndRoomsIngestIdle(t *testing.T) {
	rs := redistest.Shared(t)
	addr, pid := startServer(t, rs.Addr, redistest.Prefix(t))

	res, code, _ := runBench(t, "rooms", "-server", addr, "-rooms=3", "-members=3", "-rate=60", quick)
	if code != exitOK || res.Acked == 0 || res.Deliveries != 3*res.Acked || res.Loss != 0 || len(res.Subscribers) != 9 {
		t.Fatalf("rooms: exit %d, acked %d, deliveries %d, loss %d, errors %v", code, res.Acked, res.Deliveries, res.Loss, res.Errors)
	}

	// Senders 0 and 2 share room 0, 1 and 3 room 1: each gets both senders' messages.
	res, code, _ = runBench(t, "ingest", "-server", addr, "-senders=4", "-rooms=2", quick, "-baseline=1000000", "-want-ratio=0.000001")
	if code != exitOK || res.Acked == 0 || res.Deliveries != 2*res.Acked || res.Loss != 0 || res.MessagesPerSec <= 0 {
		t.Fatalf("ingest: exit %d, acked %d, deliveries %d, loss %d, errors %v", code, res.Acked, res.Deliveries, res.Loss, res.Errors)
	}
	if len(res.Checks) == 0 || res.Checks[len(res.Checks)-1].Ratio == "" {
		t.Fatalf("ingest: no ratio to the baseline in %+v", res.Checks)
	}
	if res.InFlightMax != 1 || !strings.Contains(res.Checks[len(res.Checks)-1].Ratio, "XADD -c 50") || strings.Contains(res.Checks[len(res.Checks)-1].Ratio, "-P") {
		t.Fatalf("ingest closed loop: %d sends in flight, ratio %q; want 1, vs XADD -c 50", res.InFlightMax, res.Checks[len(res.Checks)-1].Ratio)
	}

	// With -window 8 each sender streams up to 8 sends before their acks,
	// every one still acked and delivered once; the ratio is still to -c 50.
	res, code, _ = runBench(t, "ingest", "-server", addr, "-senders=4", "-rooms=2", "-window=8", quick, "-baseline=1000000", "-want-ratio=0.000001")
	if code != exitOK || res.Acked == 0 || res.Deliveries != 2*res.Acked || res.Loss != 0 || res.Duplicates != 0 || res.Reordered != 0 {
		t.Fatalf("ingest -window 8: exit %d, acked %d, deliveries %d, loss %d, errors %v", code, res.Acked, res.Deliveries, res.Loss, res.Errors)
	}
	if res.InFlightMax < 2 || res.InFlightMax > 8 || res.Params["window"] != float64(8) {
		t.Fatalf("ingest -window 8: at most %d sends in flight (want 2..8), params %v", res.InFlightMax, res.Params)
	}
	if r := res.Checks[len(res.Checks)-1].Ratio; !strings.Contains(r, "XADD -c 50") || strings.Contains(r, "-P") {
		t.Fatalf("ingest -window 8: ratio %q, want one to XADD -c 50 (issue 14 compares every window with it)", r)
	}

	// The server's PID is found from its port; RSS is read from /proc.
	res, code, _ = runBench(t, "idle", "-server", addr, "-conns=40", "-rooms=4", "-hold=0s")
	if code != exitOK || res.Idle == nil || res.Idle.PID != pid || res.Idle.Conns != 40 || res.Idle.RSSAfterKB <= 0 {
		t.Fatalf("idle: exit %d, %+v, errors %v (server pid %d)", code, res.Idle, res.Errors, pid)
	}
}

func TestSetupErrors(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := mainArgs([]string{"nosuch"}, &out, &errOut); code != exitSetup {
		t.Errorf("unknown scenario: exit %d", code)
	}
	if code := mainArgs([]string{"fanout", "-server", freeAddr(t), "-subs=1", quick}, &out, &errOut); code != exitSetup {
		t.Errorf("no server: exit %d", code)
	}
	if code := mainArgs([]string{"replay", "-server", freeAddr(t)}, &out, &errOut); code != exitSetup {
		t.Errorf("replay without -redis: exit %d", code)
	}
	if code := mainArgs([]string{"fanout", "-bogus"}, &out, &errOut); code != exitSetup {
		t.Errorf("bad flag: exit %d", code)
	}
}

// -server a,b splits each room's members over two instances on one Redis:
// every message still reaches both members, the second instance delivers
// to its members, and the Redis work and connections of both are counted.
func TestEndToEndTwoServers(t *testing.T) {
	rs := redistest.Shared(t)
	redistest.RequireReal(t, rs) // INFO commandstats, CLIENT LIST
	prefix := redistest.Prefix(t)
	a, pidA := startServer(t, rs.Addr, prefix)
	b, pidB := startServer(t, rs.Addr, prefix)
	before := scrapeMetrics(b)
	res, code, stderr := runBench(t, "rooms", "-server", a+","+b, "-pid", fmt.Sprintf("%d,%d", pidA, pidB), "-redis", rs.Addr,
		"-rooms=3", "-members=2", "-rate=60", quick, "-want-reads=100", "-want-redis-conns=1000")
	if code != exitOK || res.Acked == 0 || res.Deliveries != 2*res.Acked || res.Loss != 0 || len(res.Errors) > 0 {
		t.Fatalf("exit %d, acked %d, deliveries %d, loss %d, errors %v, stderr %s", code, res.Acked, res.Deliveries, res.Loss, res.Errors, stderr)
	}
	// Connection 0 of each room (its publisher) is on a, connection 1 on b.
	delivered := metricsDelta(before, scrapeMetrics(b))["xroom_messages_delivered_total"]
	if delivered != float64(res.Acked) {
		t.Fatalf("server b delivered %v messages, want one per acked message (%d): members not split", delivered, res.Acked)
	}
	if len(res.CPU.Servers) != 2 || res.Redis == nil || res.Redis.ReadsPerMessage <= 0 || res.Redis.CPUPerMessage <= 0 {
		t.Fatalf("cpu %+v, redis %+v", res.CPU, res.Redis)
	}
	// Each instance holds at least a command connection and its tail's subscriber.
	if rc := res.RedisConns; rc == nil || rc.Samples < 2 || rc.Max < 4 || rc.MaxByName["xroom-tail"] < 2 {
		t.Fatalf("redis conns %+v", res.RedisConns)
	}
}

func TestEndToEndScale(t *testing.T) {
	rs := redistest.Shared(t)
	redistest.RequireReal(t, rs)
	addr, _ := startServer(t, rs.Addr, redistest.Prefix(t))
	today, code, _ := runBench(t, "rooms", "-server", addr, "-redis", rs.Addr, "-redis-commands", "-rooms=4", "-members=2", "-rate=40", quick, "-label", "before")
	if code != exitOK || today.Redis == nil {
		t.Fatalf("rooms: exit %d, %+v", code, today.Errors)
	}
	path := writeResult(t, t.TempDir(), "today.json", today)
	// Tiny runs: the figures are noise, only the plumbing is checked.
	res, code, stderr := runBench(t, "scale", "-server", addr, "-redis", rs.Addr, "-rooms-list=2,4", "-rate=40", quick,
		"-want-redis-conns=1000", "-flat=100", "-today", path, "-want-vs-today=100", "-want-p99=10s")
	if code != exitOK || len(res.Steps) != 2 || res.Loss != 0 {
		t.Fatalf("exit %d, %d steps, loss %d, errors %v, checks %+v, stderr %s", code, len(res.Steps), res.Loss, res.Errors, res.Checks, stderr)
	}
	var whats []string
	for _, c := range res.Checks {
		whats = append(whats, c.What)
	}
	want := []string{"p99 at 4 rooms", "lost/dup/reordered", "Redis connections (CLIENT LIST), every size",
		"Redis commands per message, by rooms", "Redis CPU per message (µs), by rooms",
		"Redis commands per message at 4 rooms vs before", "Redis CPU per message at 4 rooms vs before"}
	if strings.Join(whats, "|") != strings.Join(want, "|") {
		t.Fatalf("checks %q, want %q", whats, want)
	}
	for _, s := range res.Steps {
		if s.Redis == nil || s.RedisConns == nil || s.Params["members"] != float64(2) || s.Deliveries != 2*s.Acked {
			t.Fatalf("step %s: redis %+v conns %+v params %v", s.Label, s.Redis, s.RedisConns, s.Params)
		}
	}
}
