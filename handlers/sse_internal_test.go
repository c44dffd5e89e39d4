package handlers

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/streams"
)

// idleConn is a chat connection that only takes a place.
type idleConn struct{}

func (idleConn) goAway()      {}
func (idleConn) dialect() int { return dialectXroom }

// A stream refused after the HTTP server handed the connection over
// (requests racing past the early checks, or Redis failing) still gets an
// HTTP answer with a JSON body, as nothing was written before: the binding
// checks of MAX_CONNS, shutdown, MAX_CONNS_PER_IP, and the subscription.
func TestSSERefusalsAfterTheTakeoverAreHTTPAnswers(t *testing.T) {
	rs := redistest.Shared(t)
	ip := netip.MustParseAddr("192.0.2.7")
	for _, tc := range []struct {
		name   string
		limits Limits
		setup  func(s *Server, hub *streams.Hub)
		status int
		code   string
	}{
		{"full", Limits{MaxConns: 1}, func(s *Server, _ *streams.Hub) { s.register(idleConn{}) }, 503, "server_full"},
		{"stopping", Limits{}, func(s *Server, _ *streams.Hub) { s.stopping = true }, 503, "shutting_down"},
		{"per address", Limits{MaxConnsPerIP: 1}, func(s *Server, _ *streams.Hub) { s.guard.acquireIP(ip) }, 429, "too_many_connections"},
		{"no subscription", Limits{}, func(_ *Server, hub *streams.Hub) { _ = hub.Close() }, 503, "redis_unavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := streams.NewStore(rs.Client(t), streams.Options{Prefix: redistest.Prefix(t)})
			hub := streams.NewHub(store, rs.Client(t), streams.HubOptions{Encode: EncodeMessage, EncodeEvent: EncodeEvent})
			t.Cleanup(func() { _ = hub.Close() })
			quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
			s := New(hub, streams.NewPresence(store, streams.PresenceOptions{Logger: quiet}), Config{Limits: tc.limits, Logger: quiet})
			t.Cleanup(func() { s.closePresence(context.Background()) })
			tc.setup(s, hub)
			st := &sseStream{writer: writer{feed: feed{srv: s, room: "lobby", user: "ana"}}}
			st.attach(&st.sse)
			server, client := net.Pipe()
			done := make(chan struct{})
			go func() {
				defer close(done)
				s.runStream(st, server, ip, []byte("HTTP/1.1 200 OK\r\n\r\n"))
				server.Close()
			}()
			_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(client), nil)
			if err != nil {
				t.Fatal(err)
			}
			var body struct {
				Error struct{ Code string } `json:"error"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != tc.status || body.Error.Code != tc.code ||
				resp.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("%d %+v (%v), want %d %s in JSON", resp.StatusCode, body, err, tc.status, tc.code)
			}
			<-done
			if n := s.Connections(); tc.name != "full" && n != 0 {
				t.Fatalf("%d connections counted after a refusal", n)
			}
		})
	}
}
