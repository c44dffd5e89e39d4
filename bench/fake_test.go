package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"

	"github.com/fasthttp/websocket"
)

// faultyServer speaks enough of the protocol for fanout (ready, ack, error,
// message frames to everyone in the room) and breaks it on purpose: to the
// first connection it never sends message 3, to the second it sends message
// 4 twice, to the third it sends message 6 before 5; it refuses message 8
// with rate_limited.
type faultyServer struct {
	mu    sync.Mutex
	conns []*faultyConn
	n     int // messages stored
	held  []byte
}

type faultyConn struct {
	mu sync.Mutex
	ws *websocket.Conn
}

func (c *faultyConn) send(b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = c.ws.WriteMessage(websocket.TextMessage, b)
}

func (s *faultyServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	up := websocket.Upgrader{Subprotocols: []string{subprotocol}}
	ws, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := &faultyConn{ws: ws}
	s.mu.Lock()
	s.conns = append(s.conns, c)
	s.mu.Unlock()
	c.send([]byte(`{"type":"ready","room":"r","last_id":"0-0","epoch":"e"}`))
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			return
		}
		var f struct {
			Message  string `json:"message"`
			ClientID string `json:"client_id"`
		}
		if json.Unmarshal(data, &f) != nil {
			continue
		}
		s.mu.Lock()
		s.n++
		n := s.n
		if n == 8 {
			s.mu.Unlock()
			c.send(fmt.Appendf(nil, `{"type":"error","code":"rate_limited","message":"slow down","client_id":%q}`, f.ClientID))
			continue
		}
		msg := fmt.Appendf(nil, `{"type":"message","id":"1-%d","room":"r","user":"u","message":%q,"ts":1,"client_id":%q}`, n, f.Message, f.ClientID)
		for i, to := range s.conns {
			switch {
			case i == 0 && n == 3:
				continue
			case i == 1 && n == 4:
				to.send(msg)
			case i == 2 && n == 5:
				s.held = msg
				continue
			}
			to.send(msg)
			if i == 2 && n == 6 {
				to.send(s.held)
			}
		}
		s.mu.Unlock()
		c.send(fmt.Appendf(nil, `{"type":"ack","client_id":%q,"id":"1-%d"}`, f.ClientID, n))
	}
}

func TestDetectsLossDuplicatesReordering(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: &faultyServer{}}
	go srv.Serve(ln)
	defer srv.Close()

	// Three subscribers connect first (connections 0-2), then one publisher
	// in closed loop; it sends far more than 8 messages in the run.
	res, code, _ := runBench(t, "fanout", "-server", ln.Addr().String(), "-subs=3", "-pubs=1", "-rate=0",
		"-connect-parallel=1", "-duration=1s", "-warmup=0s", "-drain=2s")
	if code != exitIncorrect {
		t.Errorf("exit %d, want %d", code, exitIncorrect)
	}
	if res.Published < 10 {
		t.Fatalf("only %d published", res.Published)
	}
	if res.Loss != 1 || res.Duplicates != 1 || res.Reordered != 1 || res.PublishErrors != 1 || res.ErrorCodes["rate_limited"] != 1 {
		t.Fatalf("loss %d dup %d reordered %d refused %d %v; want 1 1 1 1 rate_limited", res.Loss, res.Duplicates, res.Reordered, res.PublishErrors, res.ErrorCodes)
	}
	// The repeat and the step back both break stream order.
	if res.IDRegressions != 2 {
		t.Errorf("id regressions %d, want 2", res.IDRegressions)
	}
	if res.Acked != res.Published-1 {
		t.Errorf("acked %d of %d", res.Acked, res.Published)
	}
	want := []struct{ loss, dup, reorder int64 }{{1, 0, 0}, {0, 1, 0}, {0, 0, 1}}
	for i, s := range res.Subscribers {
		if s.Loss != want[i].loss || s.Duplicates != want[i].dup || s.Reordered != want[i].reorder {
			t.Errorf("subscriber %d: %+v, want %+v", i, s, want[i])
		}
	}
}
