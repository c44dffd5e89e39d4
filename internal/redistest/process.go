package redistest

import (
	"bytes"
	"context"
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
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// Starting, watching and stopping redis-server processes.

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
