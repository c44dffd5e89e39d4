// Package redistest gives tests a Redis server to talk to.
//
// Project rule: tests use a real redis-server when one is on PATH (one per
// test package, on a free port) and the embedded miniredis otherwise. CI sets
// XROOM_REQUIRE_REAL=1, and then nothing that needs a real server may skip or
// fall back: it fails instead, so a missing install shows up as red, not as
// silently skipped coverage.
//
// Every package that uses Shared wires it up in its TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(redistest.Run(m)) }
//
// All servers listen on 127.0.0.1 only. Child redis-server processes get
// Pdeathsig=SIGKILL, so a test binary that crashes or is killed by
// `go test -timeout` does not leave them behind. The package is Linux-only
// (Pdeathsig), like the project's machines and CI.
package redistest

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// EnvRequireReal is the variable CI sets to "1": with it, tests that need a
// real redis-server (or redis-cli) fail instead of skipping or falling back.
const EnvRequireReal = "XROOM_REQUIRE_REAL"

const (
	startAttempts = 5                      // fresh ports tried when the chosen one was taken
	readyTimeout  = 10 * time.Second       // how long a server may take to answer PING
	stopTimeout   = 15 * time.Second       // SIGTERM grace before SIGKILL
	clusterWait   = 30 * time.Second       // how long a cluster may take to reach cluster_state:ok
	cliTimeout    = 60 * time.Second       // one redis-cli run
	logTailBytes  = 4096                   // how much of a server's log goes into failure messages
	pollEvery     = 20 * time.Millisecond  // readiness polling interval
	probeTimeout  = 250 * time.Millisecond // dial/read timeout of readiness probes
)

// requireReal reports whether XROOM_REQUIRE_REAL asks for real servers only.
func requireReal() bool {
	v, _ := strconv.ParseBool(os.Getenv(EnvRequireReal))
	return v
}

// skipOrFail skips the test, or fails it when XROOM_REQUIRE_REAL=1 (in CI a
// skip would hide a missing redis-server).
func skipOrFail(tb testing.TB, msg string) {
	tb.Helper()
	if requireReal() {
		tb.Fatalf("%s (and %s=1 forbids skipping)", msg, EnvRequireReal)
	}
	tb.Skip(msg)
}

// Server is a Redis server for tests.
type Server struct {
	Addr string // host:port on 127.0.0.1
	Real bool   // a real redis-server process, not miniredis

	shared bool                    // the package's shared server: never stopped by a test
	mini   *miniredis.Miniredis    // set when !Real
	port   int                     // fixed for the server's life, so Restart reuses it
	dir    string                  // working dir: AOF files, nodes.conf, log
	args   []string                // redis-server arguments, reused by Restart
	log    string                  // file receiving the server's stdout and stderr
	mu     sync.Mutex              // guards proc
	proc   *process                // the running (or last) process; nil before the first start
	ownDir bool                    // dir was made by us and is removed by stopShared
	cfg    config                  // options it was started with
	extra  func(port int) []string // extra arguments given a second free port (cluster bus)
}

// process is one run of redis-server.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and been reaped
	err  error         // Wait's result, readable after done is closed
}

type config struct {
	aof  bool
	args []string
}

// Option configures Start.
type Option func(*config)

// WithAOF turns on appendonly with appendfsync always, so every acknowledged
// write is on disk and survives Stop, Kill and Restart.
func WithAOF() Option { return func(c *config) { c.aof = true } }

// WithArgs adds redis-server arguments, such as "--rename-command",
// "CONFIG", "" for a server that refuses CONFIG as managed services do.
func WithArgs(args ...string) Option {
	return func(c *config) { c.args = append(c.args, args...) }
}

// shared is the package's shared server: started on first use by Shared,
// stopped by Run after the tests.
var shared struct {
	once sync.Once
	srv  *Server
	err  error
	// fatal is set when there is no redis-server and XROOM_REQUIRE_REAL=1.
	fatal string
}

// Run wraps testing.M.Run: use as `func TestMain(m *testing.M) { os.Exit(redistest.Run(m)) }`.
// It stops the package's shared server (if Shared started one) after the
// tests, whether they passed or not, and removes its directory. (A panicking
// test ends the binary before that; Pdeathsig still kills the server.)
func Run(m *testing.M) int {
	code := m.Run()
	if err := stopShared(); err != nil {
		fmt.Fprintf(os.Stderr, "redistest: stopping the shared server: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// Shared returns the package's shared server, starting it on first use: a
// real redis-server on a free port when redis-server is on PATH, else
// miniredis. With XROOM_REQUIRE_REAL=1 and no redis-server on PATH it fails
// the test (tb.Fatal) instead of falling back. Tests must not stop, pause or
// kill it (use Start for that) and should keep to their own keys (Prefix).
func Shared(tb testing.TB) *Server {
	tb.Helper()
	shared.once.Do(func() {
		if _, err := exec.LookPath("redis-server"); err != nil {
			if requireReal() {
				shared.fatal = fmt.Sprintf("redistest: no redis-server on PATH and %s=1 forbids falling back to miniredis", EnvRequireReal)
				return
			}
			mr := miniredis.NewMiniRedis()
			if err := mr.StartAddr("127.0.0.1:0"); err != nil {
				shared.err = fmt.Errorf("starting miniredis: %w", err)
				return
			}
			shared.srv = &Server{Addr: mr.Addr(), mini: mr, shared: true}
			return
		}
		dir, err := os.MkdirTemp("", "redistest-shared-")
		if err != nil {
			shared.err = err
			return
		}
		s := &Server{dir: dir, ownDir: true, shared: true}
		if err := s.startFresh(); err != nil {
			_ = os.RemoveAll(dir)
			shared.err = err
			return
		}
		shared.srv = s
	})
	if shared.fatal != "" {
		tb.Fatal(shared.fatal)
	}
	if shared.err != nil {
		tb.Fatalf("redistest: shared server: %v", shared.err)
	}
	return shared.srv
}

// stopShared stops the shared server if one was started. Called by Run only,
// after every test has finished, so it needs no lock against Shared.
func stopShared() error {
	s := shared.srv
	if s == nil {
		return nil
	}
	if s.mini != nil {
		s.mini.Close()
		return nil
	}
	err := s.stop()
	if s.ownDir {
		if rmErr := os.RemoveAll(s.dir); rmErr != nil && err == nil {
			err = rmErr
		}
	}
	return err
}

// Start starts a dedicated server for one test (stopped in tb.Cleanup), for
// tests that stop, restart, pause or kill it. It is always a real
// redis-server: it skips when none is on PATH, and fails when
// XROOM_REQUIRE_REAL=1.
func Start(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	return startDedicated(tb, cfg, nil)
}

// startDedicated starts a real server in its own tb.TempDir, stopped at cleanup.
func startDedicated(tb testing.TB, cfg config, extra func(port int) []string) *Server {
	tb.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		skipOrFail(tb, "redistest: no redis-server on PATH")
	}
	// TempDir before Cleanup: cleanups run last-in first-out, so the server
	// is stopped before its directory is removed.
	s := &Server{dir: tb.TempDir(), cfg: cfg, extra: extra}
	if err := s.startFresh(); err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.stop(); err != nil {
			tb.Errorf("redistest: stopping %s: %v", s.Addr, err)
		}
	})
	return s
}

// URL returns the server's address as a redis:// URL ("redis://127.0.0.1:PORT").
func (s *Server) URL() string { return "redis://" + s.Addr }

// Client returns a new go-redis client for the server, closed at tb.Cleanup.
// It sets ContextTimeoutEnabled, so a test's context deadline bounds each
// command: go-redis v9 otherwise ignores deadlines for socket reads and waits
// out its own ReadTimeout (3 s) and retries against a paused server.
func (s *Server) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr, ContextTimeoutEnabled: true})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// Stop stops the server gracefully (SIGTERM, as SHUTDOWN would, and waits for
// it to exit; SIGKILL after 15 s). Real only; not on the shared server.
func (s *Server) Stop(tb testing.TB) {
	tb.Helper()
	s.mustControl(tb, "Stop")
	if err := s.stop(); err != nil {
		tb.Fatalf("redistest: Stop %s: %v", s.Addr, err)
	}
}

// Restart starts the server again on the SAME port with the same directory
// and options, so AOF data survives and clients configured with its Addr
// reconnect. A server still running is stopped gracefully first. Real only.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	s.mustControl(tb, "Restart")
	if err := s.stop(); err != nil {
		tb.Fatalf("redistest: Restart %s: stopping: %v", s.Addr, err)
	}
	// The port is ours to reuse, but another process may have grabbed it in
	// the meantime; it is not ours to change, so only retry briefly.
	var err error
	for attempt := 0; attempt < startAttempts; attempt++ {
		var inUse bool
		if inUse, err = s.launch(); err == nil || !inUse {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		tb.Fatalf("redistest: Restart %s: %v", s.Addr, err)
	}
}

// Kill kills the server with SIGKILL, as a crash would, and waits until it
// is gone. Real only.
func (s *Server) Kill(tb testing.TB) {
	tb.Helper()
	s.mustControl(tb, "Kill")
	p := s.current()
	if p == nil || p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Pause freezes the server with SIGSTOP: connections stay open but nothing is
// answered, like a hung or partitioned server. Real only.
func (s *Server) Pause(tb testing.TB) {
	tb.Helper()
	s.mustControl(tb, "Pause")
	s.signal(tb, syscall.SIGSTOP)
}

// Resume resumes a paused server with SIGCONT. Real only.
func (s *Server) Resume(tb testing.TB) {
	tb.Helper()
	s.mustControl(tb, "Resume")
	s.signal(tb, syscall.SIGCONT)
}

func (s *Server) signal(tb testing.TB, sig syscall.Signal) {
	tb.Helper()
	p := s.current()
	if p == nil || p.exited() {
		tb.Fatalf("redistest: %v to %s: server is not running", sig, s.Addr)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		tb.Fatalf("redistest: %v to %s: %v", sig, s.Addr, err)
	}
}

// CLI runs `redis-cli -h 127.0.0.1 -p PORT args...` and returns its trimmed
// stdout. It skips when s is not Real or redis-cli is missing (fails instead
// when XROOM_REQUIRE_REAL=1), and fails the test on a non-zero exit, with
// stderr in the message. Note that redis-cli 7 exits 0 on an error reply
// (e.g. "WRONGTYPE ..."): that reply comes back as the output.
func (s *Server) CLI(tb testing.TB, args ...string) string {
	tb.Helper()
	RequireReal(tb, s)
	if _, err := exec.LookPath("redis-cli"); err != nil {
		skipOrFail(tb, "redistest: no redis-cli on PATH")
	}
	out, err := runCLI(append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(s.port)}, args...)...)
	if err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	return out
}

// runCLI runs redis-cli with args, returning trimmed stdout or an error that
// carries the exit status and stderr.
func runCLI(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "redis-cli", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("redis-cli %s: %v\nstderr: %s\nstdout: %s",
			strings.Join(args, " "), err, strings.TrimSpace(stderr.String()), strings.TrimSpace(stdout.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// Prefix returns a key prefix unique to this test ("t" + 10 random [a-z0-9]),
// so tests can share one server without colliding. It is Redis Cluster
// hash-tag free on purpose; wrap it in {} yourself to pin keys to one slot.
func Prefix(tb testing.TB) string {
	tb.Helper()
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 10)
	if _, err := rand.Read(b); err != nil {
		tb.Fatalf("redistest: Prefix: %v", err)
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return "t" + string(b)
}

// RequireReal skips the test unless s is a real redis-server (fails instead
// when XROOM_REQUIRE_REAL=1), for tests of behaviour miniredis lacks.
func RequireReal(tb testing.TB, s *Server) {
	tb.Helper()
	if !s.Real {
		skipOrFail(tb, "redistest: needs a real redis-server, have miniredis")
	}
}

// mustControl guards the process-control methods: real servers only, and
// never the shared one, which the package's other tests are using.
func (s *Server) mustControl(tb testing.TB, what string) {
	tb.Helper()
	if s.shared {
		tb.Fatalf("redistest: %s on the shared server would break other tests; use redistest.Start for a dedicated one", what)
	}
	RequireReal(tb, s)
}
