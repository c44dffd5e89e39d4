package handlers_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/xroom/xroom/internal/testkit"
)

// closedWithin reads conn until the server closes it, and returns how long
// that took; any bytes before are returned too. It fails after limit.
func closedWithin(t *testing.T, conn net.Conn, limit time.Duration) (time.Duration, string) {
	t.Helper()
	start := time.Now()
	_ = conn.SetReadDeadline(start.Add(limit))
	got, err := io.ReadAll(conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("still open after %v (read %q)", limit, got)
	}
	return time.Since(start), string(got)
}

func dialTCP(t *testing.T, ts *testServer) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(ts.base, "http://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// Silent connections are reaped: one that sends nothing is closed at
// HeaderTimeout, one that never finishes its headers at most one more
// HeaderTimeout later (with 408), and an idle keep-alive connection at
// IdleTimeout. Each is counted and logged, and none is closed early.
func TestSilentConnectionsAreClosed(t *testing.T) {
	const header, idle = 400 * time.Millisecond, 700 * time.Millisecond
	logs := newCapture()
	ts := startServer(t, func(o *options) {
		o.cfg.HeaderTimeout, o.cfg.IdleTimeout = header, idle
		o.cfg.Logger = slog.New(logs)
	})
	const bound = 10 * time.Second // a loaded machine is late, never early

	silent := dialTCP(t, ts)
	if took, got := closedWithin(t, silent, bound); took < header/2 || got != "" {
		t.Errorf("silent connection closed after %v with %q; want about %v and nothing", took, got, header)
	}

	slow := dialTCP(t, ts)
	if _, err := io.WriteString(slow, "GET /healthz HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	if took, got := closedWithin(t, slow, bound); took < header/2 || !strings.HasPrefix(got, "HTTP/1.1 408 ") {
		t.Errorf("unfinished headers: closed after %v with %.40q; want 408 after about %v", took, got, header)
	}

	kept := dialTCP(t, ts)
	br := bufio.NewReader(kept)
	for range 2 { // two requests on one connection, then silence
		if _, err := io.WriteString(kept, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("keep-alive request: %v %v", resp, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
	}
	start := time.Now()
	_ = kept.SetReadDeadline(start.Add(bound))
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("idle keep-alive connection: %v, want it closed", err)
	} else if took := time.Since(start); took < idle/2 {
		t.Errorf("idle keep-alive connection closed after %v, want about %v", took, idle)
	}

	m := ts.scrapeUntil(func(m map[string]float64) bool {
		return m[`xroom_timeouts_total{phase="first_byte"}`] >= 1 && m[`xroom_timeouts_total{phase="request"}`] >= 1
	})
	if m[`xroom_timeouts_total{phase="first_byte"}`] != 1 || m[`xroom_timeouts_total{phase="request"}`] != 1 {
		t.Errorf("timeouts %v first_byte, %v request; want 1 and 1", m[`xroom_timeouts_total{phase="first_byte"}`], m[`xroom_timeouts_total{phase="request"}`])
	}
	for _, want := range []string{"phase=first_byte remote=" + silent.LocalAddr().String(), "phase=request remote=" + slow.LocalAddr().String()} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("no log line with %q in:\n%s", want, logs.String())
		}
	}
}

// A client frame sent along with the handshake (before the 101) is not
// lost: the reader takes the bytes the HTTP server had buffered.
func TestFrameSentWithTheHandshake(t *testing.T) {
	ts := startServer(t)
	conn := dialTCP(t, ts)
	addr := strings.TrimPrefix(ts.base, "http://")
	handshake := "GET /ws/chat/eager/ HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + sampleKey + "\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := conn.Write(append([]byte(handshake), clientFrame(fin|opText, []byte(`{"message":"eager"}`))...)); err != nil {
		t.Fatal(err)
	}
	w := &rawWS{t: t, conn: conn, br: bufio.NewReader(conn)}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(w.br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	f, err := w.read()
	if err != nil || !strings.Contains(string(f.payload), `"message":"eager"`) {
		t.Fatalf("got %v, %v; want the message sent with the handshake", f, err)
	}
}

// MaxConns: beyond it, handshakes get 503 server_full with a JSON body
// before any upgrade, and the connections held are still served.
func TestMaxConnsRefusesWithJSON(t *testing.T) {
	logs := newCapture()
	ts := startServer(t, func(o *options) { o.cfg.Limits.MaxConns = 3; o.cfg.Logger = slog.New(logs) })
	var held []*client
	for i := range 3 {
		c := ts.dial("full", fmt.Sprintf("user=u%d", i), true)
		c.expect("ready")
		held = append(held, c)
	}
	for range 2 {
		c, err := ts.tryDial("full", "user=late", true, nil)
		if err == nil || c == nil || c.resp == nil || c.resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("fourth connection: %v, want 503", err)
		}
		if !strings.Contains(err.Error(), `"code":"server_full"`) || c.resp.Header.Get("Retry-After") == "" {
			t.Fatalf("refusal %v (Retry-After %q), want server_full and Retry-After", err, c.resp.Header.Get("Retry-After"))
		}
	}
	ts.append("full", "ops", 1)
	for _, c := range held {
		if f := c.expect("message"); f.User != "ops" {
			t.Fatalf("got %+v", f)
		}
	}
	m := ts.scrape()
	if got := m[`xroom_websocket_refused_total{reason="server_full"}`]; got != 2 {
		t.Errorf("refused server_full = %v, want 2", got)
	}
	if strings.Count(logs.String(), "reason=server_full") != 1 {
		t.Errorf("want one log line for two refusals within a second (rate-limited):\n%s", logs.String())
	}
	// A place freed is taken again.
	held[0].conn.Close()
	testkit.Eventually(t, 10*time.Second, "a place is free", func() bool { return ts.srv.Connections() < 3 })
	skipMessages(ts.dial("full", "user=next", true), "ready")
}

// HTTPConns caps connections still in HTTP: silent sockets fill that
// share, the rest are answered 503 and closed at once, and WebSockets
// already open keep being served.
func TestHTTPShareIsCapped(t *testing.T) {
	ts := startServer(t, func(o *options) { o.cfg.HTTPConns, o.cfg.HeaderTimeout = 4, time.Second })
	ws := ts.dial("share", "user=in", true)
	ws.expect("ready")
	var silent []net.Conn
	for range 4 {
		silent = append(silent, dialTCP(t, ts))
	}
	testkit.Eventually(t, 10*time.Second, "four silent connections held", func() bool { return ts.srv.TCPOpen() >= 5 })
	refused := 0
	for range 6 {
		if _, got := closedWithin(t, dialTCP(t, ts), 10*time.Second); strings.HasPrefix(got, "HTTP/1.1 503 ") {
			refused++
		}
	}
	if refused == 0 {
		t.Errorf("no connection refused with 503 beyond the HTTP share")
	}
	ts.append("share", "ops", 1)
	if f := ws.expect("message"); f.User != "ops" {
		t.Fatalf("got %+v", f)
	}
	for _, c := range silent {
		closedWithin(t, c, 10*time.Second)
	}
	// The share is free again: a new WebSocket gets in.
	skipMessages(ts.dial("share", "user=after", true), "ready")
	if m := ts.scrape(); m["xroom_http_connections_refused_total"] < float64(refused) {
		t.Errorf("xroom_http_connections_refused_total %v, want at least %d", m["xroom_http_connections_refused_total"], refused)
	}
}

// Protocol errors are counted by reason and logged with the address, at
// most one line a second; the next line says how many were held back.
func TestProtocolErrorsAreCountedAndLogged(t *testing.T) {
	logs := newCapture()
	ts := startServer(t, func(o *options) { o.cfg.Logger = slog.New(logs) })
	var addrs []string
	for i := range 3 {
		w := ts.rawDial(t, fmt.Sprintf("proto-%d", i))
		addrs = append(addrs, w.conn.LocalAddr().String())
		w.write(clientFrame(fin|opText, []byte("\xff")))
		checkClose(t, w.closeAndEnd(), 1007, false)
	}
	lines := strings.Count(logs.String(), "broke the protocol")
	if lines != 1 || !strings.Contains(logs.String(), "reason=bad_utf8") || !strings.Contains(logs.String(), "remote="+addrs[0]) {
		t.Fatalf("want one line for the first of three errors in a second, with its address:\n%s", logs.String())
	}
	time.Sleep(1100 * time.Millisecond)
	w := ts.rawDial(t, "proto-late")
	w.write(clientFrame(fin|opPing, bytes126()))
	checkClose(t, w.closeAndEnd(), 1002, false)
	if !strings.Contains(logs.String(), "reason=control_too_long") || !strings.Contains(logs.String(), "held_back=2") {
		t.Fatalf("want a second line saying two were held back:\n%s", logs.String())
	}
	m := ts.scrape()
	if m[`xroom_websocket_protocol_errors_total{reason="bad_utf8"}`] != 3 || m[`xroom_websocket_protocol_errors_total{reason="control_too_long"}`] != 1 {
		t.Fatalf("protocol errors: %v bad_utf8, %v control_too_long; want 3 and 1",
			m[`xroom_websocket_protocol_errors_total{reason="bad_utf8"}`], m[`xroom_websocket_protocol_errors_total{reason="control_too_long"}`])
	}
}

func bytes126() []byte { return []byte(strings.Repeat("x", 126)) }
