package testkit

import (
	"encoding/json"
	"net"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
)

// ReadFrame reads the next frame from conn within d, passing over presence
// frames when skipPresence is set, and fails the test when the read fails
// or the frame is not a text frame of JSON with a type.
func ReadFrame(t testing.TB, conn *websocket.Conn, d time.Duration, skipPresence bool) Frame {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(d))
	for {
		kind, data, err := conn.ReadMessage()
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		var f Frame
		if kind != websocket.TextMessage || json.Unmarshal(data, &f) != nil || f.Type == "" {
			t.Fatalf("bad frame (kind %d): %q", kind, data)
		}
		if !skipPresence || f.Type != "presence" {
			return f
		}
	}
}

// ExpectFrame fails the test unless f is a typ frame, and returns it.
func ExpectFrame(t testing.TB, f Frame, typ string) Frame {
	t.Helper()
	if f.Type != typ {
		t.Fatalf("got %+v, want a %s frame", f, typ)
	}
	return f
}

// Silent fails the test when a frame (other than presence, with
// skipPresence) arrives on conn within d, or the connection ends. A
// timed-out read leaves the connection unusable: read no more from it.
func Silent(t testing.TB, conn *websocket.Conn, d time.Duration, skipPresence bool) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(d))
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
				t.Fatalf("connection ended: %v", err)
			}
			return
		}
		var f Frame
		if !skipPresence || json.Unmarshal(data, &f) != nil || f.Type != "presence" {
			t.Fatalf("unexpected frame %s", data)
		}
	}
}

// Send writes v on conn as one text frame: a string or []byte as it is,
// anything else as JSON.
func Send(t testing.TB, conn *websocket.Conn, v any) {
	t.Helper()
	var data []byte
	switch v := v.(type) {
	case string:
		data = []byte(v)
	case []byte:
		data = v
	default:
		data, _ = json.Marshal(v)
	}
	if err := conn.WriteMessage(websocket.TextMessage, data); err != nil {
		t.Fatalf("send: %v", err)
	}
}
