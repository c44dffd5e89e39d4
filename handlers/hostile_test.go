package handlers_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/xroom/xroom/internal/testkit"
	"github.com/xroom/xroom/streams"
)

// rawHTTP sends one request exactly as written (no path cleaning or
// escaping by a client library) and returns the status and body.
func rawHTTP(t *testing.T, ts *testServer, method, target string, header map[string]string, body []byte) (int, []byte) {
	t.Helper()
	resp, b := rawHTTPResponse(t, ts, method, target, header, body)
	return resp.StatusCode, b
}

// rawHTTPResponse is rawHTTP with the whole response (its body read).
func rawHTTPResponse(t *testing.T, ts *testServer, method, target string, header map[string]string, body []byte) (*http.Response, []byte) {
	t.Helper()
	addr := strings.TrimPrefix(ts.base, "http://")
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	var req bytes.Buffer
	fmt.Fprintf(&req, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", method, target, addr)
	for k, v := range header {
		fmt.Fprintf(&req, "%s: %s\r\n", k, v)
	}
	if body != nil {
		fmt.Fprintf(&req, "Content-Length: %d\r\n", len(body))
	}
	req.WriteString("\r\n")
	req.Write(body)
	// The server may answer (413) before reading the whole body; a failed
	// write is fine as long as the answer arrives.
	go func() { _, _ = conn.Write(req.Bytes()) }()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s %.80s: %v", method, target, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// errorCode is the code of a JSON error body, or "" when the body is not one.
func errorCode(body []byte) string {
	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil || e.Error.Message == "" {
		return ""
	}
	return e.Error.Code
}

// TestHostileInput throws the classic bad inputs at the WebSocket and the
// HTTP API and checks every answer, while a bystander in the same room
// keeps receiving a steady stream of messages, all of them, in order.
func TestHostileInput(t *testing.T) {
	const apiKey = "hostile-test-key"
	ts := startServer(t, func(o *options) { o.cfg.APIKey = apiKey })
	bystander := ts.dial("lobby", "user=bystander", true)
	bystander.expect("ready")

	// A steady writer and a reader that records everything the bystander gets.
	var (
		stop    = make(chan struct{})
		wg      sync.WaitGroup
		written []string
		mu      sync.Mutex // guards seen
		seen    []string
		readErr error
	)
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			id, _, err := ts.store.Append(context.Background(), "lobby", streams.Message{User: "steady", Text: fmt.Sprintf("steady %d", i)})
			if err == nil {
				written = append(written, id.String())
			}
		}
	}()
	go func() {
		defer wg.Done()
		for {
			_ = bystander.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
			_, data, err := bystander.conn.ReadMessage()
			if err != nil {
				readErr = err
				return
			}
			if isPresence(data) {
				continue // the attackers come and go
			}
			var f frame
			if json.Unmarshal(data, &f) != nil || f.Type != "message" {
				readErr = fmt.Errorf("bystander got %q", data)
				return
			}
			mu.Lock()
			seen = append(seen, f.ID)
			mu.Unlock()
			if f.Message == "the end" {
				return
			}
		}
	}()

	// After each round of attacks, the bystander still gets a new message.
	stillServed := func(after string) {
		t.Helper()
		id, _, err := ts.store.Append(context.Background(), "lobby", streams.Message{User: "steady", Text: "after " + after})
		if err != nil {
			t.Fatal(err)
		}
		testkit.Eventually(t, 20*time.Second, "the bystander gets the message after "+after, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(seen) > 0 && !idLess(seen[len(seen)-1], id.String())
		})
	}
	t.Run("websocket frames", func(t *testing.T) { hostileFrames(t, ts) })
	stillServed("the frames")
	t.Run("handshakes", func(t *testing.T) { hostileHandshakes(t, ts) })
	stillServed("the handshakes")
	t.Run("http api", func(t *testing.T) { hostileAPI(t, ts, apiKey) })
	stillServed("the API calls")

	close(stop)
	time.Sleep(50 * time.Millisecond) // the writer's last append
	if _, _, err := ts.store.Append(context.Background(), "lobby", streams.Message{User: "steady", Text: "the end"}); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if readErr != nil {
		t.Fatalf("the bystander's connection: %v", readErr)
	}
	// Everything stored in the room (the steady stream and the attackers'
	// valid messages) reached the bystander once, in order.
	msgs, err := ts.rdb.XRange(context.Background(), ts.key("lobby"), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	stored := make([]string, len(msgs))
	for i, m := range msgs {
		stored[i] = m.ID
	}
	if !slices.Equal(seen, stored) {
		t.Fatalf("the bystander got %d messages, the room holds %d", len(seen), len(stored))
	}
	t.Logf("the bystander got all %d messages (%d steady) while the attacks ran", len(seen), len(written))
}

func hostileFrames(t *testing.T, ts *testServer) {
	huge := bytes.Repeat([]byte("x"), 10<<20)
	cases := []struct {
		name  string
		kind  int // websocket.TextMessage unless set
		data  []byte
		code  string // error frame code; "" with close
		close int    // close code instead of an error frame
	}{
		{name: "malformed JSON", data: []byte(`{"message":`), code: "bad_json"},
		{name: "not an object", data: []byte(`["message","hi"]`), code: "bad_json"},
		{name: "deep nesting within the frame limit", data: bytes.Repeat([]byte("["), 20000), code: "bad_json"},
		{name: "deep nesting in an object", data: []byte(`{"message":` + strings.Repeat("[", 20000) + `}`), code: "bad_json"},
		{name: "100k open brackets", data: bytes.Repeat([]byte("["), 100000), close: websocket.CloseMessageTooBig},
		{name: "10 MB frame", data: huge, close: websocket.CloseMessageTooBig},
		{name: "10 MB message in JSON", data: []byte(`{"message":"` + string(huge) + `"}`), close: websocket.CloseMessageTooBig},
		// RFC 6455 8.1: text that is not UTF-8 fails the connection.
		{name: "invalid UTF-8", data: []byte("{\"message\":\"\xff\xfe\"}"), close: websocket.CloseInvalidFramePayloadData},
		{name: "overlong UTF-8 slash", data: []byte("{\"message\":\"\xc0\xaf\"}"), close: websocket.CloseInvalidFramePayloadData},
		{name: "UTF-16 surrogate half", data: []byte("{\"message\":\"\xed\xa0\x80\"}"), close: websocket.CloseInvalidFramePayloadData},
		{name: "raw NUL in a string", data: []byte("{\"message\":\"a\x00b\"}"), code: "bad_json"},
		{name: "raw control character in a string", data: []byte("{\"message\":\"a\x07b\"}"), code: "bad_json"},
		{name: "number overflow", data: []byte(`{"message":1e999}`), code: "bad_json"},
		{name: "huge integer client_id", data: []byte(`{"message":"x","client_id":123456789012345678901234567890}`), code: "bad_json"},
		{name: "message as an array", data: []byte(`{"message":["hi"]}`), code: "bad_json"},
		{name: "empty frame", data: []byte(``), code: "bad_json"},
		{name: "empty object", data: []byte(`{}`), code: "empty"},
		{name: "message too large", data: []byte(`{"message":"` + strings.Repeat("y", 4097) + `"}`), code: "too_large"},
		{name: "unknown type", data: []byte(`{"type":"admin","message":"x"}`), code: "unknown_type"},
		{name: "client_id with a colon", data: []byte(`{"message":"x","client_id":"a:b"}`), code: "bad_client_id"},
		{name: "client_id path traversal", data: []byte(`{"message":"x","client_id":"../../x"}`), code: "bad_client_id"},
		{name: "client_id with NUL", data: []byte(`{"message":"x","client_id":"a\u0000b"}`), code: "bad_client_id"},
		{name: "binary frame", kind: websocket.BinaryMessage, data: []byte{0, 1, 2}, code: "bad_frame"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := ts.dial("lobby", fmt.Sprintf("user=attacker%d", i), true)
			skipMessages(c, "ready")
			kind := tc.kind
			if kind == 0 {
				kind = websocket.TextMessage
			}
			if err := c.conn.WriteMessage(kind, tc.data); err != nil && tc.close == 0 {
				t.Fatal(err)
			}
			if tc.close != 0 {
				_ = c.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
				_, data, err := c.conn.ReadMessage()
				for err == nil { // presence and live messages may come before the close
					_, data, err = c.conn.ReadMessage()
				}
				var ce *websocket.CloseError
				if !errors.As(err, &ce) || ce.Code != tc.close {
					t.Fatalf("got %q, %v; want close %d", data, err, tc.close)
				}
				return
			}
			if f := skipMessages(c, "error"); f.Code != tc.code {
				t.Fatalf("got %+v, want error %s", f, tc.code)
			}
			// The connection lives on: a good message is stored and acked.
			c.send(fmt.Sprintf(`{"message":"after %d","client_id":"after-%d"}`, i, i))
			if f := skipMessages(c, "ack"); f.ClientID != fmt.Sprintf("after-%d", i) {
				t.Fatalf("got %+v, want the ack", f)
			}
		})
	}
	// Strange but valid content is stored as sent and shown as text.
	t.Run("escaped NUL and control characters", func(t *testing.T) {
		c := ts.dial("lobby", "user=odd", true)
		skipMessages(c, "ready")
		c.send(`{"message":"a\u0000b\u0007<script>\u202e","client_id":"odd-1"}`)
		// The message may come before or after its ack.
		var ack string
		stored := map[string]string{}
		for deadline := time.Now().Add(20 * time.Second); ack == "" || stored[ack] == ""; {
			if time.Now().After(deadline) {
				t.Fatal("no ack and message for odd-1")
			}
			switch f := c.next(); f.Type {
			case "ack":
				ack = f.ID
			case "message":
				stored[f.ID] = f.Message
			default:
				t.Fatalf("got %+v", f)
			}
		}
		if stored[ack] != "a\x00b\x07<script>\u202e" {
			t.Fatalf("stored as %q", stored[ack])
		}
	})
}

// skipMessages reads past message frames (the room is busy) to the next
// frame of another type, which must be typ; with typ "message" it returns
// the next message.
func skipMessages(c *client, typ string) frame {
	c.t.Helper()
	for {
		f := c.next()
		if f.Type == typ {
			return f
		}
		if f.Type != "message" {
			c.t.Fatalf("got %+v, want a %s frame", f, typ)
		}
	}
}

func hostileHandshakes(t *testing.T, ts *testServer) {
	upgrade := map[string]string{
		"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
		"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
	}
	cases := []struct {
		name, target string
		status       int
		code         string // "" when any JSON error code will do
	}{
		{"encoded slashes", "/ws/chat/..%2f..%2fetc%2fpasswd/", 400, "bad_room"},
		{"encoded dots", "/ws/chat/%2e%2e/", 400, "bad_room"},
		{"encoded slash in a room", "/ws/chat/a%2fb/", 400, "bad_room"},
		{"backslashes", "/ws/chat/..%5c..%5cwin/", 400, "bad_room"},
		{"NUL in a room", "/ws/chat/a%00b/", 400, "bad_room"},
		{"control character in a room", "/ws/chat/a%07b/", 400, "bad_room"},
		{"room with a hash tag", "/ws/chat/%7Bother%7D/", 400, "bad_room"},
		{"room of 10 KB", "/ws/chat/" + strings.Repeat("r", 10000) + "/", 431, ""},
		{"NUL in a user", "/ws/chat/lobby/?user=a%00b", 400, "bad_user"},
		{"newline in a user", "/ws/chat/lobby/?user=a%0d%0aSet-Cookie:x", 400, "bad_user"},
		{"right-to-left override in a user", "/ws/chat/lobby/?user=%e2%80%aeadmin", 400, "bad_user"},
		{"invalid UTF-8 in a user", "/ws/chat/lobby/?user=%c0%af", 400, "bad_user"},
		{"since overflowing 64 bits", "/ws/chat/lobby/?since=18446744073709551616-0", 400, "bad_since"},
		{"since of 1000 digits", "/ws/chat/lobby/?since=" + strings.Repeat("9", 1000), 400, "bad_since"},
		{"negative since", "/ws/chat/lobby/?since=-5", 400, "bad_since"},
		{"since with spaces", "/ws/chat/lobby/?since=%201-0", 400, "bad_since"},
		{"since in hex", "/ws/chat/lobby/?since=0x10", 400, "bad_since"},
		{"epoch of 1 KB", "/ws/chat/lobby/?epoch=" + strings.Repeat("e", 1024), 400, "bad_epoch"},
		{"epoch with NUL", "/ws/chat/lobby/?epoch=a%00b", 400, "bad_epoch"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := rawHTTP(t, ts, "GET", tc.target, upgrade, nil)
			if status != tc.status {
				t.Fatalf("status %d, want %d: %.200s", status, tc.status, body)
			}
			if code := errorCode(body); (tc.code != "" && code != tc.code) || (tc.code == "" && status != 431 && code == "") {
				t.Fatalf("body %.200s, want error code %q", body, tc.code)
			}
		})
	}
	// Traversal that the server resolves as a path never leaves the
	// embedded files: no upgrade, and nothing from the disk.
	for _, target := range []string{"/ws/chat/../../../../etc/passwd", "/ws/chat/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/../../etc/passwd", "/static/..%2f..%2f..%2fetc%2fpasswd"} {
		status, body := rawHTTP(t, ts, "GET", target, upgrade, nil)
		if status == http.StatusSwitchingProtocols || status == http.StatusOK || bytes.Contains(body, []byte("root:")) {
			t.Errorf("GET %s: %d %.200s", target, status, body)
		}
	}
}

func hostileAPI(t *testing.T, ts *testServer, apiKey string) {
	auth := map[string]string{"Authorization": "Bearer " + apiKey, "Content-Type": "application/json"}
	with := func(k, v string) map[string]string {
		h := map[string]string{}
		for a, b := range auth {
			h[a] = b
		}
		if v == "" {
			delete(h, k)
		} else {
			h[k] = v
		}
		return h
	}
	post := "/api/rooms/lobby/messages"
	cases := []struct {
		name, method, target string
		header               map[string]string
		body                 []byte
		status               int
		code                 string
	}{
		{"negative limit", "GET", "/api/rooms?limit=-1", nil, nil, 400, "bad_limit"},
		{"zero limit", "GET", "/api/rooms/lobby/messages?limit=0", nil, nil, 400, "bad_limit"},
		{"huge limit", "GET", "/api/rooms/lobby/messages?limit=99999999999999999999999", nil, nil, 400, "bad_limit"},
		{"limit over the maximum", "GET", "/api/rooms/lobby/messages?limit=501", nil, nil, 400, "bad_limit"},
		{"limit in exponent form", "GET", "/api/rooms?limit=1e3", nil, nil, 400, "bad_limit"},
		{"before overflowing", "GET", "/api/rooms/lobby/messages?before=18446744073709551616", nil, nil, 400, "bad_before"},
		{"after negative", "GET", "/api/rooms/lobby/messages?after=-1", nil, nil, 400, "bad_after"},
		{"before and after", "GET", "/api/rooms/lobby/messages?before=1&after=1", nil, nil, 400, "bad_query"},
		{"room with encoded slashes", "GET", "/api/rooms/..%2f..%2fetc/messages", nil, nil, 400, "bad_room"},
		{"room of encoded dots", "GET", "/api/rooms/%2e%2e/messages", nil, nil, 400, "bad_room"},
		{"room with NUL", "GET", "/api/rooms/a%00b/messages", nil, nil, 400, "bad_room"},
		{"traversal out of the API", "GET", "/api/rooms/../../../etc/passwd", nil, nil, 404, "not_found"},
		{"no key", "POST", post, with("Authorization", ""), []byte(`{"user":"a","message":"x"}`), 401, "unauthorized"},
		{"malformed JSON", "POST", post, auth, []byte(`{"user":"a",`), 400, "bad_json"},
		{"deep nesting", "POST", post, auth, bytes.Repeat([]byte("["), 20000), 400, "bad_json"},
		{"100k open brackets", "POST", post, auth, bytes.Repeat([]byte("["), 100000), 413, ""},
		{"10 MB body", "POST", post, auth, bytes.Repeat([]byte("x"), 10<<20), 413, ""},
		{"invalid UTF-8 in the message", "POST", post, auth, []byte("{\"user\":\"a\",\"message\":\"\xff\"}"), 400, "bad_utf8"},
		{"invalid UTF-8 in the user", "POST", post, auth, []byte("{\"user\":\"\xc0\xaf\",\"message\":\"x\"}"), 400, "bad_utf8"},
		{"NUL in the user", "POST", post, auth, []byte(`{"user":"a\u0000b","message":"x"}`), 400, "bad_user"},
		{"control character in the user", "POST", post, auth, []byte(`{"user":"a\u001bb","message":"x"}`), 400, "bad_user"},
		{"number overflow", "POST", post, auth, []byte(`{"user":"a","message":1e999}`), 400, "bad_json"},
		{"user as a number", "POST", post, auth, []byte(`{"user":12,"message":"x"}`), 400, "bad_json"},
		{"message too large", "POST", post, auth, []byte(`{"user":"a","message":"` + strings.Repeat("z", 4097) + `"}`), 413, "too_large"},
		// The Content-Type is not checked (docs/protocol.md): the body must be JSON whatever it says.
		{"form body", "POST", post, with("Content-Type", "application/x-www-form-urlencoded"), []byte(`user=a&message=x`), 400, "bad_json"},
		{"multipart body", "POST", post, with("Content-Type", "multipart/form-data; boundary=x"), []byte("--x\r\nContent-Disposition: form-data; name=\"user\"\r\n\r\na\r\n--x--"), 400, "bad_json"},
		{"XML body", "POST", post, with("Content-Type", "application/xml"), []byte(`<m user="a">x</m>`), 400, "bad_json"},
		{"room with a hash tag", "POST", "/api/rooms/%7Bx%7D/messages", auth, []byte(`{"user":"a","message":"x"}`), 400, "bad_room"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := rawHTTP(t, ts, tc.method, tc.target, tc.header, tc.body)
			if status != tc.status {
				t.Fatalf("status %d, want %d: %.200s", status, tc.status, body)
			}
			if code := errorCode(body); code == "" || (tc.code != "" && code != tc.code) {
				t.Fatalf("body %.200s, want a JSON error with code %q", body, tc.code)
			}
		})
	}
	// A JSON body is accepted whatever the Content-Type says (curl -d sends
	// application/x-www-form-urlencoded), as docs/protocol.md promises.
	for i, ct := range []string{"application/json; charset=utf-8", "", "application/x-www-form-urlencoded", "text/plain"} {
		status, body := rawHTTP(t, ts, "POST", post, with("Content-Type", ct), []byte(fmt.Sprintf(`{"user":"api","message":"ok %d"}`, i)))
		if status != http.StatusCreated {
			t.Fatalf("Content-Type %q: %d %s", ct, status, body)
		}
	}
}
