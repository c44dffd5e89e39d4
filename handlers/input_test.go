package handlers_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/fasthttp/websocket"
)

func TestBadHandshakesAreRefusedWithJSON(t *testing.T) {
	ts := startServer(t)
	cases := []struct {
		name, room, query string
		header            http.Header
		status            int
		code              string
	}{
		{"room with a space", "bad room", "", nil, 400, "bad_room"},
		{"room too long", strings.Repeat("r", 101), "", nil, 400, "bad_room"},
		{"room with a colon", "a:b", "", nil, 400, "bad_room"},
		{"room with braces", "{lobby}", "", nil, 400, "bad_room"},
		{"since not a number", "lobby", "since=abc", nil, 400, "bad_since"},
		{"since negative", "lobby", "since=-1", nil, 400, "bad_since"},
		{"since empty", "lobby", "since=", nil, 400, "bad_since"},
		{"since with three parts", "lobby", "since=1-2-3", nil, 400, "bad_since"},
		{"user too long", "lobby", "user=" + strings.Repeat("u", 33), nil, 400, "bad_user"},
		{"user empty", "lobby", "user=", nil, 400, "bad_user"},
		{"user with a control character", "lobby", "user=a%01b", nil, 400, "bad_user"},
		{"user invalid UTF-8", "lobby", "user=%ff", nil, 400, "bad_user"},
		{"epoch with a space", "lobby", "epoch=a%20b", nil, 400, "bad_epoch"},
		{"cross-site origin", "lobby", "", http.Header{"Origin": {"http://evil.example"}}, 403, "bad_origin"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ts.tryDial(tc.room, tc.query, true, tc.header)
			if err == nil {
				t.Fatal("the upgrade was accepted")
			}
			if c == nil || c.resp == nil {
				t.Fatalf("no HTTP answer: %v", err)
			}
			if c.resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (%v)", c.resp.StatusCode, tc.status, err)
			}
			if !strings.Contains(err.Error(), `"code":"`+tc.code+`"`) || !strings.Contains(err.Error(), `"message":"`) {
				t.Fatalf("body lacks error code %s: %v", tc.code, err)
			}
		})
	}
	// A plain GET (no upgrade) says so.
	resp, err := http.Get(ts.base + "/ws/chat/lobby/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired {
		t.Fatalf("plain GET: %d, want 426", resp.StatusCode)
	}
}

func TestOriginRules(t *testing.T) {
	ts := startServer(t)
	host := strings.TrimPrefix(ts.base, "http://")
	if _, err := ts.tryDial("lobby", "", true, http.Header{"Origin": {"http://" + host}}); err != nil {
		t.Fatalf("same origin refused: %v", err)
	}
	if _, err := ts.tryDial("lobby", "", true, nil); err != nil {
		t.Fatalf("no Origin (not a browser) refused: %v", err)
	}
	allowed := startServer(t, func(o *options) { o.cfg.AllowedOrigins = []string{"https://app.example"} })
	if _, err := allowed.tryDial("lobby", "", true, http.Header{"Origin": {"https://app.example"}}); err != nil {
		t.Fatalf("allowed origin refused: %v", err)
	}
	if _, err := allowed.tryDial("lobby", "", true, http.Header{"Origin": {"https://other.example"}}); err == nil {
		t.Fatal("an origin not in ALLOWED_ORIGINS was accepted")
	}
}

func TestBadFramesGetErrorsAndTheConnectionLivesOn(t *testing.T) {
	ts := startServer(t)
	c := ts.dial("lobby", "user=tester", true)
	c.expect("ready")
	cases := []struct {
		name   string
		kind   int
		data   string
		code   string
		detail string
	}{
		{"malformed JSON", websocket.TextMessage, `{"message": "hi"`, "bad_json", "malformed JSON"},
		{"not an object", websocket.TextMessage, `["hi"]`, "bad_json", "JSON object"},
		{"a bare string", websocket.TextMessage, `"hi"`, "bad_json", "JSON object"},
		{"message not a string", websocket.TextMessage, `{"message": 5}`, "bad_json", "message must be a string"},
		{"deep nesting", websocket.TextMessage, strings.Repeat("[", 5000) + strings.Repeat("]", 5000), "bad_json", ""},
		{"empty message", websocket.TextMessage, `{"message": ""}`, "empty", ""},
		{"no message", websocket.TextMessage, `{"type": "message"}`, "empty", ""},
		{"oversized", websocket.TextMessage, `{"message": "` + strings.Repeat("x", 4097) + `"}`, "too_large", "limit is 4096"},
		{"oversized in multibyte", websocket.TextMessage, `{"message": "` + strings.Repeat("é", 2049) + `"}`, "too_large", ""},
		{"binary frame", websocket.BinaryMessage, `{"message": "hi"}`, "bad_frame", "binary"},
		{"unknown type", websocket.TextMessage, `{"type": "shout", "message": "hi"}`, "unknown_type", "shout"},
		{"client_id with a colon", websocket.TextMessage, `{"message": "hi", "client_id": "a:b"}`, "bad_client_id", ""},
		{"client_id too long", websocket.TextMessage, `{"message": "hi", "client_id": "` + strings.Repeat("c", 65) + `"}`, "bad_client_id", ""},
		{"client_id not a string", websocket.TextMessage, `{"message": "hi", "client_id": 7}`, "bad_json", "client_id"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := c.conn.WriteMessage(tc.kind, []byte(tc.data)); err != nil {
				t.Fatal(err)
			}
			f := c.expect("error")
			if f.Code != tc.code || !strings.Contains(f.Message, tc.detail) || f.Message == "" {
				t.Fatalf("got %s: %q, want %s containing %q", f.Code, f.Message, tc.code, tc.detail)
			}
		})
	}
	// Exactly 4096 bytes is fine, NUL and control characters are text, and
	// the connection still works after every refusal.
	exact := strings.Repeat("y", 4096)
	c.send(map[string]string{"message": exact})
	if f := c.expect("message"); f.Message != exact {
		t.Fatalf("4096-byte message came back as %d bytes", len(f.Message))
	}
	c.send(map[string]string{"message": "nul \x00 and bell \a"})
	if f := c.expect("message"); f.Message != "nul \x00 and bell \a" {
		t.Fatalf("got %q", f.Message)
	}
	if n := ts.rdb.XLen(t.Context(), ts.key("lobby")).Val(); n != 2 {
		t.Fatalf("%d entries stored, want only the 2 valid ones", n)
	}
}

func TestFrameOverTransportLimitClosesWith1009(t *testing.T) {
	ts := startServer(t)
	other := ts.dial("lobby", "", true)
	other.expect("ready")
	c := ts.dial("lobby", "", true)
	c.expect("ready")
	huge := make([]byte, 10<<20) // 10 MB
	for i := range huge {
		huge[i] = 'z'
	}
	_ = c.conn.WriteMessage(websocket.TextMessage, huge) // the server may close mid-write
	for {
		_, _, err := c.conn.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.CloseMessageTooBig {
			t.Fatalf("got %v, want close 1009", err)
		}
		break
	}
	// Others are still served.
	other.send(`{"message": "still fine"}`)
	if f := other.expect("message"); f.Message != "still fine" {
		t.Fatalf("got %+v", f)
	}
}

func TestErrorFramesCarryTheRefusedClientID(t *testing.T) {
	ts := startServer(t)
	c := ts.dial("lobby", "", true)
	c.expect("ready")
	c.send(`{"type": "message", "message": "", "client_id": "c-9"}`)
	f := c.expect("error")
	raw, _ := json.Marshal(f)
	if f.Code != "empty" || f.ClientID != "c-9" {
		t.Fatalf("got %s", raw)
	}
}
