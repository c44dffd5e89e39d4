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
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
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

// startFresh starts a new server on a free port, retrying with other ports
// when the chosen one was taken between choosing and binding.
func (s *Server) startFresh() error {
	var err error
	for attempt := 0; attempt < startAttempts; attempt++ {
		ports, perr := freePorts(1 + btoi(s.extra != nil))
		if perr != nil {
			return perr
		}
		s.port = ports[0]
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
		s.Real = true
		s.log = filepath.Join(s.dir, "redis-server.log")
		s.args = []string{
			"--port", strconv.Itoa(s.port),
			"--bind", "127.0.0.1",
			"--save", "",
			"--dir", s.dir,
			"--protected-mode", "no",
			"--daemonize", "no",
			"--loglevel", "warning",
		}
		if s.cfg.aof {
			s.args = append(s.args, "--appendonly", "yes", "--appendfsync", "always")
		} else {
			s.args = append(s.args, "--appendonly", "no")
		}
		if s.extra != nil {
			s.args = append(s.args, s.extra(ports[1])...)
		}
		s.args = append(s.args, s.cfg.args...)
		var inUse bool
		if inUse, err = s.launch(); err == nil || !inUse {
			return err
		}
	}
	return fmt.Errorf("no free port after %d attempts: %w", startAttempts, err)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// freePorts returns n distinct ports that were free on 127.0.0.1 a moment ago.
// All listeners are held until every port is chosen, so they differ.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// launch runs redis-server with s.args and waits until it answers PING.
// inUse reports a failure because the port was already taken.
func (s *Server) launch() (inUse bool, err error) {
	logf, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return false, err
	}
	defer logf.Close() // the child has its own copy of the descriptor
	logStart, _ := logf.Seek(0, io.SeekEnd)
	fmt.Fprintf(logf, "=== redistest: redis-server %s\n", strings.Join(quoteArgs(s.args), " "))

	p, err := startProcess(s.args, s.dir, logf)
	if err != nil {
		return false, fmt.Errorf("starting redis-server: %w", err)
	}
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()

	if err := s.waitReady(p); err != nil {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		tail := s.logTail(logStart)
		inUse = strings.Contains(tail, "Address already in use")
		return inUse, fmt.Errorf("redis-server on %s did not become ready: %v\n--- log %s ---\n%s", s.Addr, err, s.log, tail)
	}
	return false, nil
}

// startProcess starts redis-server with Pdeathsig so it dies with us.
// Pdeathsig fires when the *thread* that forked the child exits, not the
// process, so the fork happens on a goroutine locked to its OS thread that
// stays blocked in Wait (holding the thread) for as long as the child lives.
func startProcess(args []string, dir string, logf *os.File) (*process, error) {
	p := &process{done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		cmd := exec.Command("redis-server", args...)
		cmd.Dir = dir
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		p.cmd = cmd
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return p, nil
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitReady polls PING until the server p answers, for at most readyTimeout.
// It also checks INFO's process_id: if another server took the port first,
// PING would succeed against it while ours dies of "Address already in use".
func (s *Server) waitReady(p *process) error {
	c := redis.NewClient(&redis.Options{
		Addr:            s.Addr,
		DialTimeout:     probeTimeout,
		ReadTimeout:     probeTimeout,
		WriteTimeout:    probeTimeout,
		MaxRetries:      -1,
		PoolSize:        1,
		Protocol:        2,
		DisableIdentity: true,
	})
	defer c.Close()
	want := "process_id:" + strconv.Itoa(p.cmd.Process.Pid)
	deadline := time.Now().Add(readyTimeout)
	var last error
	for {
		if p.exited() {
			return fmt.Errorf("redis-server exited: %v", p.err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
		info, err := c.Info(ctx, "server").Result()
		if err == nil {
			err = c.Ping(ctx).Err() // PING fails while loading the AOF
		}
		cancel()
		switch {
		case err != nil:
			last = err
		case !strings.Contains(info, want+"\r\n") && !strings.Contains(info, want+"\n"):
			last = errors.New("another server answers on this port")
		default:
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer to PING within %v: %v", readyTimeout, last)
		}
		time.Sleep(pollEvery)
	}
}

// stop stops the current process gracefully: SIGTERM (plus SIGCONT, in case
// it is paused), then SIGKILL if it has not exited within stopTimeout.
func (s *Server) stop() error {
	p := s.current()
	if p == nil || p.exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	select {
	case <-p.done:
		return nil
	case <-time.After(stopTimeout):
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("did not exit within %v of SIGTERM; killed\n--- log %s ---\n%s", stopTimeout, s.log, s.logTail(0))
	}
}

func (s *Server) current() *process {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc
}

// logTail returns the end of the server's log written since offset from.
func (s *Server) logTail(from int64) string {
	b, err := os.ReadFile(s.log)
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	if from > 0 && from <= int64(len(b)) {
		b = b[from:]
	}
	if len(b) > logTailBytes {
		b = b[len(b)-logTailBytes:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return strings.TrimRight(string(b), "\n")
}

func quoteArgs(args []string) []string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\"'") {
			a = strconv.Quote(a)
		}
		q[i] = a
	}
	return q
}

// Cluster is a real Redis Cluster of n masters (no replicas) on free local ports.
type Cluster struct {
	Addrs []string // host:port of every node, on 127.0.0.1

	nodes []*Server
}

// StartCluster starts n (>=3) `redis-server --cluster-enabled yes` nodes on
// 127.0.0.1 free ports, each with its own temp dir and cluster-config-file,
// joins them with `redis-cli --cluster create ... --cluster-replicas 0
// --cluster-yes`, waits until CLUSTER INFO says cluster_state:ok on every
// node, and stops them all in tb.Cleanup. Skips without
// redis-server/redis-cli (fails with XROOM_REQUIRE_REAL=1).
//
// Each node's cluster bus port is chosen free too (cluster-port) rather than
// the default port+10000, which can be taken or exceed 65535.
func StartCluster(tb testing.TB, n int) *Cluster {
	tb.Helper()
	return startCluster(tb, n, 0, "5000")
}

// startCluster starts masters*(1+replicas) nodes and joins them with
// --cluster-replicas replicas; nodeTimeout is cluster-node-timeout in ms.
func startCluster(tb testing.TB, masters, replicas int, nodeTimeout string) *Cluster {
	tb.Helper()
	if masters < 3 {
		tb.Fatalf("redistest: a cluster needs at least 3 masters, got %d", masters)
	}
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			skipOrFail(tb, "redistest: no "+bin+" on PATH")
		}
	}
	clusterArgs := func(busPort int) []string {
		return []string{
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf",
			"--cluster-port", strconv.Itoa(busPort),
			"--cluster-node-timeout", nodeTimeout,
		}
	}
	c := &Cluster{}
	for range masters * (1 + replicas) {
		s := startDedicated(tb, config{}, clusterArgs)
		c.nodes = append(c.nodes, s)
		c.Addrs = append(c.Addrs, s.Addr)
	}
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	if _, err := runCLI(args...); err != nil {
		tb.Fatalf("redistest: creating the cluster: %v\n%s", err, c.logTails())
	}
	if err := c.waitOK(); err != nil {
		tb.Fatalf("redistest: cluster %v: %v\n%s", c.Addrs, err, c.logTails())
	}
	return c
}

// Client returns a new go-redis cluster client for c, closed at tb.Cleanup,
// with ContextTimeoutEnabled as in Server.Client.
func (c *Cluster) Client(tb testing.TB) *redis.ClusterClient {
	tb.Helper()
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs, ContextTimeoutEnabled: true})
	tb.Cleanup(func() { _ = cc.Close() })
	return cc
}

// waitOK waits until every node reports cluster_state:ok, all 16384 slots
// assigned and every node known, i.e. the nodes agree, not just one of them.
func (c *Cluster) waitOK() error {
	want := []string{
		"cluster_state:ok",
		"cluster_slots_ok:16384",
		"cluster_known_nodes:" + strconv.Itoa(len(c.nodes)),
	}
	deadline := time.Now().Add(clusterWait)
	for _, s := range c.nodes {
		cl := redis.NewClient(&redis.Options{
			Addr: s.Addr, DialTimeout: probeTimeout, ReadTimeout: time.Second,
			MaxRetries: -1, PoolSize: 1, Protocol: 2, DisableIdentity: true,
		})
		var info string
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			var err error
			info, err = cl.ClusterInfo(ctx).Result()
			cancel()
			if err == nil && hasLines(info, want) {
				break
			}
			if time.Now().After(deadline) {
				_ = cl.Close()
				return fmt.Errorf("node %s not ready within %v: err=%v, CLUSTER INFO:\n%s", s.Addr, clusterWait, err, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
		_ = cl.Close()
	}
	return nil
}

func hasLines(info string, want []string) bool {
	have := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		have[strings.TrimSpace(sc.Text())] = true
	}
	for _, w := range want {
		if !have[w] {
			return false
		}
	}
	return true
}

func (c *Cluster) logTails() string {
	var b strings.Builder
	for _, s := range c.nodes {
		fmt.Fprintf(&b, "--- log of %s (%s) ---\n%s\n", s.Addr, s.log, s.logTail(0))
	}
	return b.String()
}
