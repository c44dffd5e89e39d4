package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

	"github.com/fasthttp/websocket"

	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/streams"
)

// The xroom binary, built once for the package's process tests.
var binary struct {
	once sync.Once
	path string
	err  error
}

func xroomBinary(t *testing.T) string {
	t.Helper()
	binary.once.Do(func() {
		dir, err := os.MkdirTemp("", "xroom-bin-")
		if err != nil {
			binary.err = err
			return
		}
		removeBinary = func() { _ = os.RemoveAll(dir) }
		gobin, err := exec.LookPath("go")
		if err != nil {
			gobin = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		binary.path = filepath.Join(dir, "xroom")
		cmd := exec.Command(gobin, "build", "-o", binary.path, ".")
		if out, err := cmd.CombinedOutput(); err != nil {
			binary.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binary.err != nil {
		t.Fatal(binary.err)
	}
	return binary.path
}

// proc is one xroom server process.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	out    *syncBuffer
	errOut *syncBuffer
	base   string
	exited chan struct{}
	err    error // Wait's result, once exited is closed
}

// startProc starts the binary with exactly env (plus PATH and HOME), in an
// empty directory, and waits for its URL.
func startProc(t *testing.T, env map[string]string) *proc {
	t.Helper()
	return startProcLimited(t, env, 0)
}

// startProcLimited is startProc under a descriptor limit of nofile, soft
// and hard (0: the test's own), set by the shell before it execs the binary.
func startProcLimited(t *testing.T, env map[string]string, nofile int) *proc {
	t.Helper()
	bin := xroomBinary(t)
	p := &proc{t: t, out: &syncBuffer{}, errOut: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin)
	if nofile > 0 {
		p.cmd = exec.Command("/bin/sh", "-c", `ulimit -n "$1" && exec "$0"`, bin, strconv.Itoa(nofile))
	}
	p.cmd.Dir = t.TempDir() // no .env here
	p.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range withoutRateLimits(env) {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.errOut
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("process %d stdout:\n%s\nstderr:\n%s", p.cmd.Process.Pid, p.out.String(), p.errOut.String())
		}
	})
	done := make(chan error, 1)
	go func() { <-p.exited; done <- p.err }()
	p.base = p.out.waitFor(t, urlRe, done)[1]
	return p
}

// wait waits up to d for the process to exit and returns its exit code.
func (p *proc) wait(d time.Duration) int {
	p.t.Helper()
	select {
	case <-p.exited:
	case <-time.After(d):
		p.t.Fatalf("process did not exit within %v; stdout:\n%s", d, p.out.String())
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		p.t.Fatalf("wait: %v", p.err)
	}
	return 0
}

func TestProcessesChatThroughOneRedis(t *testing.T) {
	srv := redistest.Shared(t)
	env := map[string]string{"REDIS_URL": srv.URL(), "CHAT_PREFIX": redistest.Prefix(t), "ADDR": "127.0.0.1:0"}
	pa, pb := startProc(t, env), startProc(t, env)
	if pa.base == pb.base {
		t.Fatalf("both processes serve %s", pa.base)
	}
	a := dial(t, pa.base, "lobby", "alice")
	b := dial(t, pb.base, "lobby", "bob")
	a.expect("ready")
	b.expect("ready")

	for i := range 3 {
		ack, _ := a.sendAcked(fmt.Sprintf("from A %d", i), fmt.Sprintf("a%d", i))
		if f := b.expect("message"); f.ID != ack.ID || f.User != "alice" || f.Message != fmt.Sprintf("from A %d", i) {
			t.Fatalf("B's client got %+v, want alice's %s", f, ack.ID)
		}
		ack, _ = b.sendAcked(fmt.Sprintf("from B %d", i), fmt.Sprintf("b%d", i))
		if f := a.expect("message"); f.ID != ack.ID || f.User != "bob" || f.Message != fmt.Sprintf("from B %d", i) {
			t.Fatalf("A's client got %+v, want bob's %s", f, ack.ID)
		}
	}
	// Both processes list the room.
	for _, p := range []*proc{pa, pb} {
		var rooms roomsList
		getJSON(t, p.base+"/api/rooms", &rooms)
		if len(rooms.Rooms) != 1 || rooms.Rooms[0].Room != "lobby" {
			t.Fatalf("%s/api/rooms = %+v", p.base, rooms)
		}
	}
}

func TestProcessSIGTERM(t *testing.T) {
	srv := redistest.Shared(t)
	prefix := redistest.Prefix(t)
	const shutdownTimeout = 10 * time.Second
	p := startProc(t, map[string]string{
		"REDIS_URL": srv.URL(), "CHAT_PREFIX": prefix, "ADDR": "127.0.0.1:0",
		"SHUTDOWN_TIMEOUT": shutdownTimeout.String(),
	})
	c := dial(t, p.base, "busy", "alice")
	c.expect("ready")

	// A stream of messages, sent while the server is being stopped.
	stopSending := make(chan struct{})
	sent := make(chan int, 1)
	go func() {
		i := 0
		defer func() { sent <- i }()
		for ; i < 20000; i++ {
			select {
			case <-stopSending:
				return
			default:
			}
			msg := fmt.Sprintf(`{"type":"message","message":"m%d","client_id":"s-%d"}`, i, i)
			if err := c.conn.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
				return
			}
		}
	}()

	acked := map[string]string{} // client_id -> id
	signalled := false
	var signalledAt time.Time
	closeCode := 0
	_ = c.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	for closeCode == 0 {
		_, data, err := c.conn.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) {
				t.Fatalf("connection ended without a close frame: %v (signalled %v, %d acks)", err, signalled, len(acked))
			}
			closeCode = ce.Code
			break
		}
		var f frame
		if err := json.Unmarshal(data, &f); err != nil {
			t.Fatalf("frame %q: %v", data, err)
		}
		switch f.Type {
		case "ack":
			if prev, ok := acked[f.ClientID]; ok && prev != f.ID {
				t.Fatalf("client_id %s acked as %s and %s", f.ClientID, prev, f.ID)
			}
			acked[f.ClientID] = f.ID
		case "message", "presence":
		default:
			t.Fatalf("unexpected frame %s", data)
		}
		if !signalled && len(acked) >= 30 {
			signalled, signalledAt = true, time.Now()
			if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(stopSending)
	n := <-sent
	if !signalled {
		t.Fatalf("closed (%d) before 30 acks", closeCode)
	}
	if closeCode != websocket.CloseGoingAway {
		t.Fatalf("close code %d, want 1001", closeCode)
	}
	if code := p.wait(shutdownTimeout + 5*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0; stderr:\n%s", code, p.errOut.String())
	}
	t.Logf("sent %d, %d acked, exited %v after SIGTERM", n, len(acked), time.Since(signalledAt).Round(time.Millisecond))
	if !stoppedRe.MatchString(p.out.String()) {
		t.Errorf("no \"stopped\" log line:\n%s", p.out.String())
	}

	// Every acked message is in Redis under its acked ID, and none twice.
	msgs, err := srv.Client(t).XRange(context.Background(), streams.Keys{Prefix: prefix}.Messages("busy"), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	stored := map[string]string{}
	for _, m := range msgs {
		cid, _ := m.Values["client_id"].(string)
		if _, dup := stored[cid]; dup {
			t.Errorf("client_id %s stored twice", cid)
		}
		stored[cid] = m.ID
	}
	for cid, id := range acked {
		if stored[cid] != id {
			t.Errorf("%s was acked as %s but Redis has %q", cid, id, stored[cid])
		}
	}
	if len(stored) < len(acked) {
		t.Errorf("%d acked, only %d stored", len(acked), len(stored))
	}
}

// go-redis's own log lines (here: its pool failing to dial a Redis that is
// gone) come out through slog, in the log's format, not on stderr.
func TestRedisClientLogsThroughSlog(t *testing.T) {
	srv := redistest.Start(t)
	redistest.RequireReal(t, srv)
	p := startProc(t, map[string]string{"REDIS_URL": srv.URL(), "CHAT_PREFIX": redistest.Prefix(t), "ADDR": "127.0.0.1:0"})
	srv.Kill(t)
	c := &peer{room: "gone", user: "a"}
	_ = c.connect(p.base, false) // its Subscribe dials the dead Redis
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(p.out.String(), `msg="redis client"`) {
		if time.Now().After(deadline) {
			t.Fatalf("no go-redis line through slog within 30 s; stdout:\n%s\nstderr:\n%s", p.out.String(), p.errOut.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if strings.Contains(p.errOut.String(), "redis: ") {
		t.Fatalf("go-redis wrote to stderr itself:\n%s", p.errOut.String())
	}
}
