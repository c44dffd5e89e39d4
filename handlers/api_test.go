package handlers_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/handlers"
	"github.com/xroom/xroom/internal/wiring"
	"github.com/xroom/xroom/streams"
)

// do sends a JSON request and decodes the JSON answer into out (when not nil).
func do(t *testing.T, method, url, auth, body string, out any) int {
	t.Helper()
	resp, data := request(t, method, url, auth, body, http.Header{"Content-Type": {"application/json"}})
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("%s %s: Content-Type %q: %s", method, url, ct, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, url, err, data)
		}
	}
	return resp.StatusCode
}

type apiErr struct {
	Error struct{ Code, Message string } `json:"error"`
}

type page struct {
	Room     string  `json:"room"`
	Messages []frame `json:"messages"`
	Next     *string `json:"next"`
}

func TestHistoryPages(t *testing.T) {
	ts := startServer(t)
	all := ts.append("lobby", "u", 120)
	url := ts.base + "/api/rooms/lobby/messages"
	var got []string
	next := ""
	for range 3 {
		var p page
		q := "?limit=50"
		if next != "" {
			q += "&before=" + next
		}
		if s := do(t, "GET", url+q, "", "", &p); s != 200 {
			t.Fatalf("status %d", s)
		}
		for _, m := range p.Messages {
			if m.Room != "lobby" || m.User != "u" || m.TS == 0 {
				t.Fatalf("incomplete %+v", m)
			}
			got = append(got, m.ID)
		}
		if p.Next == nil {
			break
		}
		next = *p.Next
	}
	if len(got) != 120 {
		t.Fatalf("paged %d entries, want 120", len(got))
	}
	for i, id := range got {
		if id != all[119-i] {
			t.Fatalf("entry %d = %s, want %s (newest first)", i, id, all[119-i])
		}
	}
	// after: oldest first, exclusive.
	var p page
	do(t, "GET", url+"?after="+all[9]+"&limit=5", "", "", &p)
	if !slices.Equal(ids(p.Messages), all[10:15]) || p.Next == nil || *p.Next != all[14] {
		t.Fatalf("after page = %v next %v, want %v", ids(p.Messages), p.Next, all[10:15])
	}
	do(t, "GET", url+"?after=0&limit=500", "", "", &p)
	if len(p.Messages) != 120 || p.Next != nil {
		t.Fatalf("after=0 gave %d entries, next %v", len(p.Messages), p.Next)
	}
}

func TestHistoryBadQueries(t *testing.T) {
	ts := startServer(t)
	for q, code := range map[string]string{
		"?limit=0":              "bad_limit",
		"?limit=501":            "bad_limit",
		"?limit=-1":             "bad_limit",
		"?limit=abc":            "bad_limit",
		"?limit=99999999999999": "bad_limit",
		"?before=x":             "bad_before",
		"?after=1-2-3":          "bad_after",
		"?before=1&after=2":     "bad_query",
	} {
		var e apiErr
		if s := do(t, "GET", ts.base+"/api/rooms/lobby/messages"+q, "", "", &e); s != 400 || e.Error.Code != code || e.Error.Message == "" {
			t.Errorf("%s: %d %+v, want 400 %s", q, s, e, code)
		}
	}
	var e apiErr
	if s := do(t, "GET", ts.base+"/api/rooms/..%2Fetc/messages", "", "", &e); s != 400 || e.Error.Code != "bad_room" {
		t.Errorf("path traversal room: %d %+v", s, e)
	}
	if s := do(t, "GET", ts.base+"/api/nothing", "", "", &e); s != 404 || e.Error.Code != "not_found" {
		t.Errorf("unknown API path: %d %+v", s, e)
	}
	if s := do(t, "GET", ts.base+"/api/rooms?limit=0", "", "", &e); s != 400 || e.Error.Code != "bad_limit" {
		t.Errorf("rooms limit 0: %d %+v", s, e)
	}
}

func TestRoomsList(t *testing.T) {
	ts := startServer(t)
	ts.append("first", "u", 1)
	time.Sleep(5 * time.Millisecond) // distinct activity times
	last := ts.append("second", "u", 2)
	var out struct {
		Rooms []struct {
			Room         string `json:"room"`
			LastID       string `json:"last_id"`
			LastActivity int64  `json:"last_activity"`
		} `json:"rooms"`
	}
	if s := do(t, "GET", ts.base+"/api/rooms", "", "", &out); s != 200 {
		t.Fatalf("status %d", s)
	}
	if len(out.Rooms) != 2 || out.Rooms[0].Room != "second" || out.Rooms[0].LastID != last[1] || out.Rooms[1].Room != "first" {
		t.Fatalf("rooms = %+v", out.Rooms)
	}
	if d := time.Since(time.UnixMilli(out.Rooms[0].LastActivity)); d < 0 || d > time.Minute {
		t.Fatalf("last_activity %d is not now", out.Rooms[0].LastActivity)
	}
}

func TestPublish(t *testing.T) {
	closed := startServer(t)
	var e apiErr
	if s := do(t, "POST", closed.base+"/api/rooms/lobby/messages", "Bearer x", `{"user":"bot","message":"hi"}`, &e); s != 403 || e.Error.Code != "publish_disabled" {
		t.Fatalf("without API_KEY: %d %+v", s, e)
	}

	const key = "s3cret-key"
	ts := startServer(t, func(o *options) { o.cfg.APIKey = key })
	c := ts.dial("lobby", "", true)
	c.expect("ready")
	url := ts.base + "/api/rooms/lobby/messages"
	for _, auth := range []string{"", "Bearer wrong", "Basic " + key, key, "Bearer " + key + "x"} {
		if s := do(t, "POST", url, auth, `{"user":"bot","message":"hi"}`, &e); s != 401 || e.Error.Code != "unauthorized" {
			t.Fatalf("auth %q: %d %+v", auth, s, e)
		}
		if strings.Contains(e.Error.Message, key) {
			t.Fatal("the error echoes the key")
		}
	}
	var ok struct {
		ID        string `json:"id"`
		Duplicate bool   `json:"duplicate"`
	}
	if s := do(t, "POST", url, "Bearer "+key, `{"user":"bot","message":"from the backend","client_id":"srv-1"}`, &ok); s != 201 || ok.ID == "" {
		t.Fatalf("publish: %d %+v", s, ok)
	}
	if f := c.expect("message"); f.ID != ok.ID || f.User != "bot" || f.Message != "from the backend" {
		t.Fatalf("live frame %+v, want the published %s", f, ok.ID)
	}
	first := ok.ID
	if s := do(t, "POST", url, "Bearer "+key, `{"user":"bot","message":"from the backend","client_id":"srv-1"}`, &ok); s != 200 || ok.ID != first || !ok.Duplicate {
		t.Fatalf("repeat: %d %+v, want 200 with %s", s, ok, first)
	}
	for body, code := range map[string]string{
		`{"user":"bot"`:               "bad_json",
		`{"user":"bot","message":""}`: "empty",
		`{"message":"no user"}`:       "bad_user",
		`{"user":"` + strings.Repeat("b", 33) + `","message":"x"}`:     "bad_user",
		`{"user":"bot","message":"` + strings.Repeat("x", 4097) + `"}`: "too_large",
		`{"user":"bot","message":"x","client_id":"a b"}`:               "bad_client_id",
		`{"user":"bot","message":7}`:                                   "bad_json",
	} {
		if s := do(t, "POST", url, "Bearer "+key, body, &e); s < 400 || s > 413 || e.Error.Code != code {
			t.Errorf("%.60s: %d %+v, want %s", body, s, e, code)
		}
	}
	if n := ts.rdb.XLen(context.Background(), ts.key("lobby")).Val(); n != 1 {
		t.Fatalf("%d entries stored, want 1", n)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	ts := startServer(t)
	if s := do(t, "GET", ts.base+"/healthz", "", "", nil); s != 200 {
		t.Fatalf("healthz %d", s)
	}
	if s := do(t, "GET", ts.base+"/readyz", "", "", nil); s != 200 {
		t.Fatalf("readyz %d", s)
	}

	// A server whose Redis is gone: alive, not ready, and sends fail cleanly.
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 200 * time.Millisecond, ContextTimeoutEnabled: true})
	defer dead.Close()
	deadTail := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer deadTail.Close()
	x := wiring.Build(dead, deadTail, wiring.Options{Store: streams.Options{Prefix: "dead"}, Server: handlers.Config{APIKey: "k"}, Logger: quietLogger()})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go x.Serve(ln)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		x.Stop(ctx)
	}()
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 503, "/api/rooms": 503} {
		resp, err := http.Get("http://" + ln.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			t.Errorf("%s: %d %s, want %d", path, resp.StatusCode, body, want)
		}
		if want == 503 && (!strings.Contains(string(body), `"redis_unavailable"`) || strings.Contains(string(body), "127.0.0.1:1")) {
			t.Errorf("%s: body %s should name the problem without internals", path, body)
		}
	}
}

func TestShutdownClosesWith1001AndRefusesNewConnections(t *testing.T) {
	ts := startServer(t)
	c := ts.dial("lobby", "", true)
	c.expect("ready")
	c.send(`{"type":"message","message":"before","client_id":"b1"}`)
	c.next()
	c.next()
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- ts.srv.Shutdown(ctx)
	}()
	_, data, err := c.conn.ReadMessage()
	for err == nil && isPresence(data) {
		_, data, err = c.conn.ReadMessage()
	}
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway {
		t.Fatalf("got %v, want close 1001", err)
	}
	_ = c.conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, ""))
	if err := <-done; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if ts.srv.Connections() != 0 {
		t.Fatalf("%d sessions left", ts.srv.Connections())
	}
	if _, err := ts.tryDial("lobby", "", true, nil); err == nil {
		t.Fatal("a new connection was accepted during shutdown")
	}
	if n := ts.rdb.XLen(context.Background(), ts.key("lobby")).Val(); n != 1 {
		t.Fatalf("%d entries, want the acked one", n)
	}
}

func TestStaticClientIsServed(t *testing.T) {
	ts := startServer(t, func(o *options) { o.cfg.Static = staticFS() })
	for path, want := range map[string]string{"/": "text/html", "/app.js": "javascript", "/style.css": "text/css"} {
		resp, err := http.Get(ts.base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), want) {
			t.Errorf("%s: %d %s", path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
}
