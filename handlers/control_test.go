package handlers_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
)

// The server's writer also answers the client's pings and close frame:
// a ping gets a pong with its payload, a close gets its code echoed.
func TestServerAnswersPingsAndEchoesClose(t *testing.T) {
	ts := startServer(t)
	c := ts.dial("lobby", "", true)
	c.expect("ready")
	pong := make(chan string, 1)
	c.conn.SetPongHandler(func(data string) error { pong <- data; return nil })
	if err := c.conn.WriteControl(websocket.PingMessage, []byte("are you there"), time.Now().Add(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	// Pong handlers run inside reads, which return on data frames: keep
	// messages coming until the pong has been read.
	var got string
	for i := 0; got == "" && i < 50; i++ {
		ts.append("lobby", "u", 1)
		_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, _, err := c.conn.ReadMessage(); err != nil {
			t.Fatal(err)
		}
		select {
		case got = <-pong:
		default:
		}
	}
	if got != "are you there" {
		t.Fatalf("pong %q, want the ping's payload", got)
	}

	if err := c.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4001, "bye"), time.Now().Add(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	closed := make(chan int, 1)
	c.conn.SetCloseHandler(func(code int, _ string) error { closed <- code; return nil })
	for {
		_, _, err := c.conn.ReadMessage()
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			break
		}
		if err != nil {
			t.Fatalf("read after close: %v, want the server's close frame", err)
		}
	}
	if code := <-closed; code != 4001 {
		t.Fatalf("server closed with %d, want its echo of 4001", code)
	}
}

// The server pings on its timer, through the writer, and a client that
// answers stays connected past PongWait.
func TestServerPingsKeepAnsweringClientsConnected(t *testing.T) {
	ts := startServer(t, func(o *options) { o.cfg.PingPeriod, o.cfg.PongWait = 100*time.Millisecond, time.Second })
	c := ts.dial("lobby", "", true)
	c.expect("ready")
	pings := make(chan struct{}, 100)
	c.conn.SetPingHandler(func(data string) error {
		pings <- struct{}{}
		return c.conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(5*time.Second))
	})
	frames := make(chan frame, 10)
	go func() {
		for {
			_ = c.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
			_, data, err := c.conn.ReadMessage()
			if err != nil {
				close(frames)
				return
			}
			if isPresence(data) {
				continue
			}
			var f frame
			_ = json.Unmarshal(data, &f)
			frames <- f
		}
	}()
	time.Sleep(2500 * time.Millisecond) // more than twice PongWait
	if len(pings) < 3 {
		t.Fatalf("%d pings in 2.5 s at a 100 ms period", len(pings))
	}
	ts.append("lobby", "u", 1)
	select {
	case f, ok := <-frames:
		if !ok || f.Type != "message" {
			t.Fatalf("got %+v (open %v), want the message: the connection was dropped", f, ok)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no message")
	}
}
