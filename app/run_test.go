package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/internal/testkit"
	"github.com/xroom/xroom/streams"
)

func TestMain(m *testing.M) {
	code := redistest.Run(m)
	removeBinary()
	os.Exit(code)
}

// syncBuffer is the server's output, which the test reads while it runs.
type syncBuffer struct{ testkit.SyncBuffer }

// waitFor waits until re matches the output, and returns the submatches.
func (b *syncBuffer) waitFor(t testing.TB, re *regexp.Regexp, done <-chan error) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if m := re.FindStringSubmatch(b.String()); m != nil {
			return m
		}
		select {
		case err := <-done:
			t.Fatalf("the server ended (%v) before printing %s; output:\n%s", err, re, b.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 10s; output:\n%s", re, b.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var (
	urlRe      = regexp.MustCompile(`msg="xroom is serving" url=(http://\S+)`)
	embeddedRe = regexp.MustCompile(`msg="no REDIS_URL: [^"]*" addr=(127\.0\.0\.1:(\d+))`)
	stoppedRe  = regexp.MustCompile(`msg=stopped`)
)

// baseEnv is what every in-process run gets: no .env from the working
// directory, free ports, quiet logs.
func baseEnv(t testing.TB, extra map[string]string) map[string]string {
	t.Helper()
	empty := filepath.Join(t.TempDir(), "empty.env")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"ENV_FILE": empty, "ADDR": "127.0.0.1:0", "SHUTDOWN_TIMEOUT": "10s"}
	for k, v := range extra {
		env[k] = v
	}
	return withoutRateLimits(env)
}

// running is run() in a goroutine.
type running struct {
	t      testing.TB
	out    *syncBuffer
	cancel context.CancelFunc
	done   chan error
	base   string // http://127.0.0.1:PORT
}

func startRun(t testing.TB, env map[string]string) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{t: t, out: &syncBuffer{}, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- run(ctx, envMap(env), r.out) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
			t.Errorf("run did not return within 30s of cancel")
		}
	})
	r.base = r.out.waitFor(t, urlRe, r.done)[1]
	return r
}

// stop cancels the context and returns run's result.
func (r *running) stop() error {
	r.t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return err
	case <-time.After(20 * time.Second):
		r.t.Fatalf("run did not return within 20s of cancel; output:\n%s", r.out.String())
		return nil
	}
}

// frame is any server frame.
type frame = testkit.Frame

type wsClient struct {
	t    testing.TB
	conn *websocket.Conn
}

// dial opens the room's WebSocket in the xroom dialect.
func dial(t testing.TB, base, room, user string) *wsClient {
	t.Helper()
	conn, _, err := testkit.DialChat(base, room, "user="+user, true, nil)
	if err != nil {
		t.Fatalf("dial %s as %s: %v", room, user, err)
	}
	if p := conn.Subprotocol(); p != "xroom.v1" {
		t.Fatalf("subprotocol %q, want xroom.v1", p)
	}
	t.Cleanup(func() { conn.Close() })
	return &wsClient{t: t, conn: conn}
}

// next reads the next frame, passing over presence frames (these tests are about messages).
func (c *wsClient) next() frame {
	c.t.Helper()
	return testkit.ReadFrame(c.t, c.conn, 10*time.Second, true)
}

func (c *wsClient) expect(typ string) frame {
	c.t.Helper()
	return testkit.ExpectFrame(c.t, c.next(), typ)
}

func (c *wsClient) send(v any) { c.t.Helper(); testkit.Send(c.t, c.conn, v) }

// sendAcked sends a message with a client_id and returns the ack and the
// message frame that came back (in either order).
func (c *wsClient) sendAcked(text, clientID string) (ack, msg frame) {
	c.t.Helper()
	c.send(map[string]string{"type": "message", "message": text, "client_id": clientID})
	for ack.Type == "" || msg.Type == "" {
		f := c.next()
		switch {
		case f.Type == "ack" && ack.Type == "":
			ack = f
		case f.Type == "message" && msg.Type == "":
			msg = f
		default:
			c.t.Fatalf("unexpected frame %+v while waiting for the ack and message of %s", f, clientID)
		}
	}
	if ack.ClientID != clientID || ack.ID == "" || ack.Duplicate {
		c.t.Fatalf("ack %+v for %s", ack, clientID)
	}
	if msg.ID != ack.ID || msg.Message != text || msg.ClientID != clientID {
		c.t.Fatalf("message %+v does not match ack %+v", msg, ack)
	}
	return ack, msg
}

// closeCode reads until the connection ends and returns the close code.
func (c *wsClient) closeCode() int {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		_, _, err := c.conn.ReadMessage()
		if err == nil {
			continue // frames still in flight
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code
		}
		c.t.Fatalf("connection ended without a close frame: %v", err)
		return 0
	}
}

func getJSON(t testing.TB, url string, v any) {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v in %s", url, err, body)
	}
}

type historyPage struct {
	Room     string  `json:"room"`
	Messages []frame `json:"messages"`
	Next     *string `json:"next"`
}

type roomsList struct {
	Rooms []struct {
		Room         string `json:"room"`
		LastID       string `json:"last_id"`
		LastActivity int64  `json:"last_activity"`
	} `json:"rooms"`
}

func TestRunEmbedded(t *testing.T) {
	r := startRun(t, baseEnv(t, map[string]string{"EMBEDDED_REDIS_ADDR": "127.0.0.1:0"}))
	m := r.out.waitFor(t, embeddedRe, r.done)
	redisAddr, redisPort := m[1], m[2]
	if !strings.HasPrefix(r.base, "http://127.0.0.1:") || strings.HasSuffix(r.base, ":0") {
		t.Fatalf("url %q", r.base)
	}
	if !strings.Contains(r.out.String(), "redis-cli -p "+redisPort) {
		t.Errorf("the log does not say how to reach the embedded Redis:\n%s", r.out.String())
	}

	// Health.
	var health map[string]string
	getJSON(t, r.base+"/healthz", &health)
	getJSON(t, r.base+"/readyz", &health)
	if health["status"] != "ready" {
		t.Errorf("/readyz = %v", health)
	}

	c := dial(t, r.base, "lobby", "alice")
	ready := c.expect("ready")
	if ready.Room != "lobby" || ready.LastID != "0-0" || ready.Epoch == "" {
		t.Fatalf("ready %+v", ready)
	}
	ack, msg := c.sendAcked("hello from the test", "c-1")
	if msg.User != "alice" || msg.Room != "lobby" || msg.TS == 0 {
		t.Fatalf("message %+v", msg)
	}

	var page historyPage
	getJSON(t, r.base+"/api/rooms/lobby/messages", &page)
	if page.Room != "lobby" || len(page.Messages) != 1 || page.Next != nil {
		t.Fatalf("history %+v", page)
	}
	if h := page.Messages[0]; h.ID != ack.ID || h.User != "alice" || h.Message != "hello from the test" || h.ClientID != "c-1" || h.TS != msg.TS {
		t.Fatalf("history entry %+v, want the acked message %s", h, ack.ID)
	}
	var rooms roomsList
	getJSON(t, r.base+"/api/rooms", &rooms)
	if len(rooms.Rooms) != 1 || rooms.Rooms[0].Room != "lobby" || rooms.Rooms[0].LastID != ack.ID || rooms.Rooms[0].LastActivity <= 0 {
		t.Fatalf("rooms %+v", rooms)
	}

	// An operator looks at the embedded Redis with redis-cli.
	if _, err := exec.LookPath("redis-cli"); err != nil {
		if v, _ := strconv.ParseBool(os.Getenv(redistest.EnvRequireReal)); v {
			t.Fatalf("no redis-cli on PATH and %s=1", redistest.EnvRequireReal)
		}
		t.Log("no redis-cli: skipping the redis-cli check")
	} else {
		out, err := exec.Command("redis-cli", "-h", "127.0.0.1", "-p", redisPort, "XRANGE", streams.Keys{Prefix: "chat"}.Messages("lobby"), "-", "+").CombinedOutput()
		if err != nil {
			t.Fatalf("redis-cli on %s: %v\n%s", redisAddr, err, out)
		}
		want := strings.Join([]string{ack.ID, "user", "alice", "message", "hello from the test", "client_id", "c-1"}, "\n")
		if got := strings.TrimSpace(string(out)); got != want {
			t.Fatalf("redis-cli XRANGE:\n%s\nwant\n%s", got, want)
		}
	}

	// Shutdown: the client is told the server is going away.
	codes := make(chan int, 1)
	go func() {
		_ = c.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		for {
			_, _, err := c.conn.ReadMessage()
			if err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					codes <- ce.Code
				} else {
					codes <- -1
				}
				return
			}
		}
	}()
	if err := r.stop(); err != nil {
		t.Fatalf("run returned %v after cancel, want nil", err)
	}
	select {
	case code := <-codes:
		if code != websocket.CloseGoingAway {
			t.Fatalf("close code %d, want 1001", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no close frame within 10s")
	}
	if !stoppedRe.MatchString(r.out.String()) {
		t.Errorf("no \"stopped\" log line:\n%s", r.out.String())
	}
	// The listener is closed.
	if _, err := net.DialTimeout("tcp", strings.TrimPrefix(r.base, "http://"), time.Second); err == nil {
		t.Error("the port still accepts connections after run returned")
	}
}

func TestRunLogFormatJSON(t *testing.T) {
	out := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, envMap(baseEnv(t, map[string]string{"EMBEDDED_REDIS_ADDR": "127.0.0.1:0", "LOG_FORMAT": "json"})), out)
	}()
	out.waitFor(t, regexp.MustCompile(`"msg":"xroom is serving","url":"(http://[^"]+)"`), done)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Errorf("LOG_FORMAT=json printed a non-JSON line %q", line)
		}
	}
}

func TestRunWithRedisURL(t *testing.T) {
	srv := redistest.Shared(t)
	prefix := redistest.Prefix(t)
	r := startRun(t, baseEnv(t, map[string]string{"REDIS_URL": srv.URL(), "CHAT_PREFIX": prefix, "HISTORY_MAXLEN": "1000"}))
	if strings.Contains(r.out.String(), "no REDIS_URL") {
		t.Fatal("started an embedded Redis although REDIS_URL is set")
	}
	a := dial(t, r.base, "room.1", "alice")
	b := dial(t, r.base, "room.1", "bob")
	a.expect("ready")
	b.expect("ready")
	ack, _ := a.sendAcked("over real redis", "k1")
	if f := b.expect("message"); f.ID != ack.ID || f.User != "alice" {
		t.Fatalf("bob got %+v", f)
	}
	// The entry is in the real server under the prefix.
	rdb := srv.Client(t)
	msgs, err := rdb.XRange(context.Background(), streams.Keys{Prefix: prefix}.Messages("room.1"), "-", "+").Result()
	if err != nil || len(msgs) != 1 || msgs[0].ID != ack.ID || msgs[0].Values["message"] != "over real redis" {
		t.Fatalf("XRANGE = %v %v", msgs, err)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
}

func TestRunBadConfig(t *testing.T) {
	srv := redistest.Shared(t)
	for _, tc := range []struct{ name, value string }{
		{"HISTORY_MAXLEN", "abc"},
		{"LOG_LEVEL", "loud"},
		{"REDIS_URL", "http://x"},
		{"WEBHOOK_URL", "ftp://hooks.example.com/in"},
		{"PUBLISH_HOOK_URL", "hooks.example.com/check"},
		{"PUBLISH_HOOK_TIMEOUT", "-1s"},
		{"WEBHOOK_CLAIM_AFTER", "-30s"},
		{"PUBLISH_HOOK_ON_ERROR", "maybe"},
	} {
		env := baseEnv(t, map[string]string{"REDIS_URL": srv.URL(), "CHAT_PREFIX": redistest.Prefix(t)})
		env[tc.name] = tc.value
		out := &syncBuffer{}
		done := make(chan error, 1)
		go func() { done <- run(context.Background(), envMap(env), out) }()
		select {
		case err := <-done:
			if want := tc.name + `="` + tc.value + `"`; err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s=%s: run returned %v, want an error naming %s", tc.name, tc.value, err, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s=%s: run did not return", tc.name, tc.value)
		}
		if urlRe.MatchString(out.String()) {
			t.Errorf("%s=%s: the server started serving", tc.name, tc.value)
		}
	}
}

func TestRunAddrInUse(t *testing.T) {
	srv := redistest.Shared(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	env := baseEnv(t, map[string]string{"REDIS_URL": srv.URL(), "CHAT_PREFIX": redistest.Prefix(t), "ADDR": addr})
	done := make(chan error, 1)
	go func() { done <- run(context.Background(), envMap(env), &syncBuffer{}) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "ADDR="+addr) || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("run with ADDR in use returned %v, want an error naming ADDR=%s", err, addr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return with its address in use")
	}
}

func TestDisplayAddr(t *testing.T) {
	for in, want := range map[string]string{
		"[::]:8080":      "localhost:8080",
		"0.0.0.0:8080":   "localhost:8080",
		"127.0.0.1:9000": "127.0.0.1:9000",
		"[::1]:9000":     "[::1]:9000",
	} {
		a, err := net.ResolveTCPAddr("tcp", in)
		if err != nil {
			t.Fatal(err)
		}
		if got := displayAddr(a); got != want {
			t.Errorf("displayAddr(%s) = %s, want %s", in, got, want)
		}
	}
}

// removeBinary is set by the process tests when they built one.
var removeBinary = func() {}

func TestEmbeddedRedisFallsBackOnlyWhenThePortIsTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	mr, err := startEmbedded(ln.Addr().String())
	if err != nil {
		t.Fatalf("taken port: %v", err)
	}
	defer mr.Close()
	if mr.Addr() == ln.Addr().String() {
		t.Fatal("started on the taken port")
	}
	if _, err := startEmbedded("not an address"); err == nil || !strings.Contains(err.Error(), "EMBEDDED_REDIS_ADDR") {
		t.Fatalf("bad address: %v, want an error naming EMBEDDED_REDIS_ADDR", err)
	}
}
