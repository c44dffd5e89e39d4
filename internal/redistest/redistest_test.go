package redistest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestMain(m *testing.M) { os.Exit(Run(m)) }

func ctx(t *testing.T) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestSharedAnswersPing(t *testing.T) {
	s := Shared(t)
	if s2 := Shared(t); s2 != s {
		t.Fatalf("Shared returned two servers: %p and %p", s, s2)
	}
	if !strings.HasPrefix(s.Addr, "127.0.0.1:") {
		t.Fatalf("Addr = %q, want 127.0.0.1:PORT", s.Addr)
	}
	if s.URL() != "redis://"+s.Addr {
		t.Fatalf("URL = %q", s.URL())
	}
	if got, err := s.Client(t).Ping(ctx(t)).Result(); err != nil || got != "PONG" {
		t.Fatalf("PING = %q, %v", got, err)
	}
	opt, err := redis.ParseURL(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	if opt.Addr != s.Addr {
		t.Fatalf("ParseURL(URL()).Addr = %q, want %q", opt.Addr, s.Addr)
	}
	t.Logf("shared server %s real=%v", s.Addr, s.Real)
}

func TestSharedParallelUse(t *testing.T) {
	for i := range 4 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			s := Shared(t)
			c := s.Client(t)
			key := Prefix(t) + ":k"
			if err := c.Set(ctx(t), key, i, time.Minute).Err(); err != nil {
				t.Fatal(err)
			}
			if got, err := c.Get(ctx(t), key).Int(); err != nil || got != i {
				t.Fatalf("GET = %d, %v", got, err)
			}
		})
	}
}

func TestSharedRefusesProcessControl(t *testing.T) {
	s := Shared(t)
	if !s.shared {
		t.Fatal("shared server not marked shared")
	}
	// mustControl must fail (not skip) on the shared server, whatever it is.
	ft := &fakeTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.mustControl(ft, "Kill")
	}()
	<-done
	if !ft.failed || ft.skipped {
		t.Fatalf("mustControl on shared: failed=%v skipped=%v, want a failure", ft.failed, ft.skipped)
	}
}

// fakeTB records Fatal/Skip instead of acting on the real test; both end
// the calling goroutine, as testing does.
type fakeTB struct {
	testing.TB
	failed, skipped bool
	msg             string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failed, f.msg = true, fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (f *fakeTB) Fatal(args ...any) {
	f.failed, f.msg = true, fmt.Sprint(args...)
	runtime.Goexit()
}
func (f *fakeTB) Skip(args ...any) {
	f.skipped, f.msg = true, fmt.Sprint(args...)
	runtime.Goexit()
}

func TestSkipOrFail(t *testing.T) {
	for _, tc := range []struct {
		env        string
		wantFailed bool
	}{{"", false}, {"0", false}, {"1", true}} {
		t.Run("env="+tc.env, func(t *testing.T) {
			t.Setenv(EnvRequireReal, tc.env)
			ft := &fakeTB{TB: t}
			done := make(chan struct{})
			go func() {
				defer close(done)
				skipOrFail(ft, "no thing")
			}()
			<-done
			if ft.failed != tc.wantFailed || ft.skipped == tc.wantFailed {
				t.Fatalf("failed=%v skipped=%v, want failed=%v", ft.failed, ft.skipped, tc.wantFailed)
			}
		})
	}
}

func TestPrefixUnique(t *testing.T) {
	re := regexp.MustCompile(`^t[a-z0-9]+$`)
	seen := map[string]bool{}
	for range 1000 {
		p := Prefix(t)
		if !re.MatchString(p) {
			t.Fatalf("Prefix = %q, want t[a-z0-9]+", p)
		}
		if seen[p] {
			t.Fatalf("Prefix repeated %q", p)
		}
		seen[p] = true
	}
}

func TestStopRestartKeepsAOFData(t *testing.T) {
	s := Start(t, WithAOF())
	if !s.Real {
		t.Fatal("Start returned a non-real server")
	}
	c := s.Client(t)
	if err := c.Set(ctx(t), "k", "v1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	addr := s.Addr
	s.Stop(t)
	if err := c.Ping(ctx(t)).Err(); err == nil {
		t.Fatal("PING succeeded after Stop")
	}
	s.Restart(t)
	if s.Addr != addr {
		t.Fatalf("Restart moved the server from %s to %s", addr, s.Addr)
	}
	// The same client reconnects: same port.
	if got, err := c.Get(ctx(t), "k").Result(); err != nil || got != "v1" {
		t.Fatalf("GET after Restart = %q, %v", got, err)
	}
}

func TestWithoutAOFRestartLosesData(t *testing.T) {
	s := Start(t)
	c := s.Client(t)
	if err := c.Set(ctx(t), "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s.Restart(t) // stops it first
	if err := c.Get(ctx(t), "k").Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("GET after Restart without AOF: err = %v, want redis.Nil (no persistence)", err)
	}
}

func TestKillThenRestart(t *testing.T) {
	s := Start(t, WithAOF())
	c := s.Client(t)
	if err := c.Set(ctx(t), "k", "before-kill", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s.Kill(t)
	if err := c.Ping(ctx(t)).Err(); err == nil {
		t.Fatal("PING succeeded after Kill")
	}
	s.Kill(t) // a second Kill is harmless
	s.Restart(t)
	// appendfsync always: an acknowledged write survives SIGKILL.
	if got, err := c.Get(ctx(t), "k").Result(); err != nil || got != "before-kill" {
		t.Fatalf("GET after Kill+Restart = %q, %v", got, err)
	}
}

func TestPauseResume(t *testing.T) {
	s := Start(t)
	c := s.Client(t)
	if err := c.Ping(ctx(t)).Err(); err != nil {
		t.Fatal(err)
	}
	s.Pause(t)
	short, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	start := time.Now()
	err := c.Set(short, "k", "v", 0).Err()
	cancel()
	if err == nil {
		t.Fatal("SET succeeded on a paused server")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("SET on a paused server took %v, want about 200ms", d)
	}
	// A client bounded by ReadTimeout rather than the context fails too.
	rt := redis.NewClient(&redis.Options{Addr: s.Addr, ReadTimeout: 200 * time.Millisecond, MaxRetries: -1})
	defer rt.Close()
	start = time.Now()
	if err := rt.Ping(context.Background()).Err(); err == nil {
		t.Fatal("PING with a 200ms ReadTimeout succeeded on a paused server")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("PING with ReadTimeout on a paused server took %v", d)
	}
	s.Resume(t)
	if err := c.Set(ctx(t), "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET after Resume: %v", err)
	}
	if err := rt.Ping(ctx(t)).Err(); err != nil {
		t.Fatalf("PING after Resume: %v", err)
	}
}

func TestStopWhilePaused(t *testing.T) {
	s := Start(t)
	s.Pause(t)
	start := time.Now()
	s.Stop(t) // must not wait for the 15 s SIGKILL fallback
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Stop of a paused server took %v", d)
	}
}

func TestCLI(t *testing.T) {
	s := Start(t)
	if err := s.Client(t).Set(ctx(t), "greeting", "hello world", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if got := s.CLI(t, "GET", "greeting"); got != "hello world" {
		t.Fatalf("CLI GET = %q", got)
	}
	if got := s.CLI(t, "XADD", "st", "1-1", "f", "v"); got != "1-1" {
		t.Fatalf("CLI XADD = %q", got)
	}
}

func TestCLIOnShared(t *testing.T) {
	s := Shared(t)
	RequireReal(t, s)
	key := Prefix(t) + ":k"
	if err := s.Client(t).Set(ctx(t), key, "42", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if got := s.CLI(t, "GET", key); got != "42" {
		t.Fatalf("CLI GET = %q", got)
	}
}

func TestCLIFailsOnNonZeroExit(t *testing.T) {
	s := Start(t)
	s.Stop(t)
	ft := &fakeTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.CLI(ft, "PING")
	}()
	<-done
	if !ft.failed || !strings.Contains(ft.msg, "stderr") {
		t.Fatalf("CLI against a stopped server: failed=%v msg=%q", ft.failed, ft.msg)
	}
}

func TestStartCluster(t *testing.T) {
	cl := StartCluster(t, 3)
	if len(cl.Addrs) != 3 {
		t.Fatalf("Addrs = %v", cl.Addrs)
	}
	cc := cl.Client(t)
	// Enough keys to land on every master.
	owners := map[string]bool{}
	for i := range 30 {
		key := fmt.Sprintf("%s:%d", Prefix(t), i)
		if err := cc.Set(ctx(t), key, i, 0).Err(); err != nil {
			t.Fatalf("SET %s: %v", key, err)
		}
		if got, err := cc.Get(ctx(t), key).Int(); err != nil || got != i {
			t.Fatalf("GET %s = %d, %v", key, got, err)
		}
		node, err := cc.MasterForKey(ctx(t), key)
		if err != nil {
			t.Fatal(err)
		}
		owners[node.Options().Addr] = true
	}
	if len(owners) != 3 {
		t.Fatalf("keys landed on %d nodes %v, want all 3", len(owners), owners)
	}
	// Every node is in the cluster and says so.
	for _, n := range cl.nodes {
		if got := n.CLI(t, "CLUSTER", "INFO"); !strings.Contains(got, "cluster_state:ok") {
			t.Fatalf("%s CLUSTER INFO:\n%s", n.Addr, got)
		}
	}
}
