package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/internal/testkit/hooktest"
	"github.com/xroom/xroom/streams"
)

const hookSecret = "a secret of the app and xroom"

// apiPublish sends a message over the HTTP API and returns the status and body.
func apiPublish(t *testing.T, base, key, room, user, text string) (int, string) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"user": user, "message": text})
	req, _ := http.NewRequest(http.MethodPost, base+"/api/rooms/"+room+"/messages", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(out)
}

func getAuthed(t *testing.T, url, key string, v any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v: %s", url, err, body)
	}
}

// Every message of five rooms, sent over the WebSocket, the HTTP API and
// redis-cli, reaches the webhook, in order per room, signed; the status and
// the metrics say so.
func TestHooksEveryMessageReachesTheWebhook(t *testing.T) {
	srv := redistest.Shared(t)
	redistest.RequireReal(t, srv)
	prefix := redistest.Prefix(t)
	app := hooktest.NewReceiver(t, hookSecret, nil)
	r := startRun(t, baseEnv(t, map[string]string{"REDIS_URL": srv.URL(), "CHAT_PREFIX": prefix, "API_KEY": "k",
		"WEBHOOK_URL": app.URL + "/in", "WEBHOOK_SECRET": hookSecret, "WEBHOOK_BATCH": "4"}))
	rooms := []string{"r0", "r1", "r2", "r3", "r4"}
	clients := map[string]*wsClient{}
	for _, room := range rooms {
		clients[room] = dial(t, r.base, room, "alice")
		clients[room].expect("ready")
	}
	for i := range 6 {
		for _, room := range rooms {
			c, cid := clients[room], fmt.Sprintf("c%d", i)
			c.send(map[string]string{"type": "message", "message": fmt.Sprintf("ws %d", i), "client_id": cid})
			for f := c.next(); f.Type != "ack" || f.ClientID != cid; f = c.next() { // others' messages pass by
			}
			if code, body := apiPublish(t, r.base, "k", room, "bot", fmt.Sprintf("api %d", i)); code != 201 {
				t.Fatalf("publish: %d %s", code, body)
			}
			srv.CLI(t, "XADD", streams.Keys{Prefix: prefix}.Messages(room), "*", "user", "cli", "message", fmt.Sprintf("cli %d", i))
		}
	}
	// And a room nobody is in, that only redis-cli ever wrote to.
	srv.CLI(t, "XADD", streams.Keys{Prefix: prefix}.Messages("quiet"), "*", "user", "cli", "message", "anyone there?")
	app.WaitStreams(srv.Client(t), prefix, append(rooms, "quiet"), 20*time.Second)

	var st struct {
		Enabled   bool   `json:"enabled"`
		Rooms     string `json:"rooms_found_by"`
		Sent      int    `json:"sent"`
		Pending   int    `json:"pending"`
		LastError any    `json:"last_error"`
		Room      *struct {
			Group   bool  `json:"group"`
			Pending int64 `json:"pending"`
			Unread  int64 `json:"unread"`
		} `json:"room"`
	}
	getAuthed(t, r.base+"/api/hooks?room=r0", "k", &st)
	if !st.Enabled || st.Rooms != "notify" || st.Sent < 91 || st.LastError != nil || st.Room == nil || !st.Room.Group || st.Room.Pending != 0 || st.Room.Unread != 0 {
		t.Errorf("GET /api/hooks?room=r0 = %+v (room %+v)", st, st.Room)
	}
	resp, err := http.Get(r.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), "xroom_webhook_messages_sent_total 91") || !strings.Contains(string(metrics), "xroom_webhook_oldest_pending_seconds 0") {
		t.Errorf("/metrics lacks the webhook figures:\n%s", grepLines(string(metrics), "xroom_webhook"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// With the embedded Redis (no keyspace notifications) the webhook still
// gets every message, a redis-cli XADD included.
func TestHooksOnTheEmbeddedRedis(t *testing.T) {
	app := hooktest.NewReceiver(t, hookSecret, nil)
	r := startRun(t, baseEnv(t, map[string]string{"EMBEDDED_REDIS_ADDR": "127.0.0.1:0", "API_KEY": "k",
		"WEBHOOK_URL": app.URL, "WEBHOOK_SECRET": hookSecret}))
	addr := r.out.waitFor(t, embeddedRe, r.done)[1]
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = rdb.Close() })
	if code, body := apiPublish(t, r.base, "k", "lobby", "bot", "over the API"); code != 201 {
		t.Fatalf("publish: %d %s", code, body)
	}
	if err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: streams.Keys{Prefix: "chat"}.Messages("cli"), Values: []any{"user", "cli", "message", "from redis-cli"}}).Err(); err != nil {
		t.Fatal(err)
	}
	app.WaitStreams(rdb, "chat", []string{"lobby", "cli"}, 15*time.Second)
	if !strings.Contains(r.out.String(), "no keyspace notifications") {
		t.Errorf("the log does not say how rooms are found:\n%s", r.out.String())
	}
}

// The publish hook decides what is stored, over the WebSocket and the
// HTTP API: it rewrites, it refuses (the sender gets the error, Redis has
// nothing), and when it does not answer in time PUBLISH_HOOK_ON_ERROR
// refuses or allows.
func TestHooksPublishHook(t *testing.T) {
	srv := redistest.Shared(t)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m struct{ Room, User, Message, ClientID string }
		_ = json.NewDecoder(r.Body).Decode(&m)
		switch m.Message {
		case "spam":
			w.WriteHeader(http.StatusForbidden)
			_, _ = io.WriteString(w, `{"error": {"code": "moderated", "message": "no spam in `+m.Room+`"}}`)
		case "slow":
			time.Sleep(time.Second)
		default:
			_, _ = io.WriteString(w, `{"message": "`+m.Message+`!"}`)
		}
	}))
	t.Cleanup(hook.Close)
	for _, onError := range []string{"refuse", "allow"} {
		prefix := redistest.Prefix(t)
		r := startRun(t, baseEnv(t, map[string]string{"REDIS_URL": srv.URL(), "CHAT_PREFIX": prefix, "API_KEY": "k",
			"PUBLISH_HOOK_URL": hook.URL, "PUBLISH_HOOK_TIMEOUT": "200ms", "PUBLISH_HOOK_ON_ERROR": onError}))
		c := dial(t, r.base, "lobby", "alice")
		c.expect("ready")
		c.send(map[string]string{"type": "message", "message": "hello", "client_id": "c1"})
		c.send(map[string]string{"type": "message", "message": "spam", "client_id": "c2"})
		c.send(map[string]string{"type": "message", "message": "slow", "client_id": "c3"})
		c.send(map[string]string{"type": "message", "message": "bye", "client_id": "c4"})
		var replies []string
		for len(replies) < 4 {
			switch f := c.next(); f.Type {
			case "ack":
				replies = append(replies, f.ClientID+" ack")
			case "error":
				replies = append(replies, f.ClientID+" "+f.Code+": "+f.Message)
			}
		}
		slow := "c3 ack"
		if onError == "refuse" {
			slow = "c3 hook_unavailable: the message was not stored: it could not be checked right now; try again"
		}
		if want := []string{"c1 ack", "c2 moderated: no spam in lobby", slow, "c4 ack"}; !slices.Equal(replies, want) {
			t.Fatalf("%s: replies %q, want %q", onError, replies, want)
		}
		if code, body := apiPublish(t, r.base, "k", "lobby", "bot", "spam"); code != 403 || !strings.Contains(body, `"code":"moderated"`) {
			t.Fatalf("%s: HTTP spam: %d %s", onError, code, body)
		}
		if code, _ := apiPublish(t, r.base, "k", "lobby", "bot", "api"); code != 201 {
			t.Fatalf("%s: HTTP publish: %d", onError, code)
		}
		msgs, err := srv.Client(t).XRange(context.Background(), streams.Keys{Prefix: prefix}.Messages("lobby"), "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		var stored []string
		for _, m := range msgs {
			stored = append(stored, m.Values["message"].(string))
		}
		want := []string{"hello!", "bye!", "api!"}
		if onError == "allow" {
			want = []string{"hello!", "slow", "bye!", "api!"}
		}
		if !slices.Equal(stored, want) {
			t.Fatalf("%s: Redis holds %q, want %q", onError, stored, want)
		}
	}
}

// `xroom hooks replay ROOM` sends a room's dead letters again and removes
// those the webhook takes; one it refuses stays, and the exit status says so.
func TestHooksReplayCommand(t *testing.T) {
	srv := redistest.Shared(t)
	redistest.RequireReal(t, srv)
	prefix := redistest.Prefix(t)
	var mu sync.Mutex
	refuse := true
	app := hooktest.NewReceiver(t, hookSecret, func(r *hooktest.Request) int {
		mu.Lock()
		defer mu.Unlock()
		for _, m := range r.Messages {
			if m.Message == "poison" && refuse {
				return http.StatusInternalServerError
			}
		}
		return http.StatusOK
	})
	env := baseEnv(t, map[string]string{"REDIS_URL": srv.URL(), "CHAT_PREFIX": prefix, "API_KEY": "k",
		"WEBHOOK_URL": app.URL, "WEBHOOK_SECRET": hookSecret, "WEBHOOK_MAX_ATTEMPTS": "2", "WEBHOOK_BACKOFF": "10ms"})
	r := startRun(t, env)
	for _, text := range []string{"before", "poison"} {
		apiPublish(t, r.base, "k", "lobby", "bot", text)
		time.Sleep(100 * time.Millisecond) // a batch of its own
	}
	rdb := srv.Client(t)
	dead := streams.Keys{Prefix: prefix}.Dead("lobby")
	deadline := time.Now().Add(10 * time.Second)
	for rdb.XLen(context.Background(), dead).Val() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("no dead letter within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	apiPublish(t, r.base, "k", "lobby", "bot", "after")
	deadline = time.Now().Add(10 * time.Second)
	for len(app.Delivered()["lobby"]) != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the room did not go on: took %v", app.Delivered()["lobby"])
		}
		time.Sleep(10 * time.Millisecond)
	}

	replay := func(args ...string) (int, string) {
		cmd := exec.Command(xroomBinary(t), append([]string{"hooks"}, args...)...)
		cmd.Dir = t.TempDir()
		cmd.Env = []string{"PATH=/usr/bin:/bin", "REDIS_URL=" + srv.URL(), "CHAT_PREFIX=" + prefix,
			"WEBHOOK_URL=" + app.URL, "WEBHOOK_SECRET=" + hookSecret}
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		} else if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}
	if code, out := replay("replay"); code != 2 || !strings.Contains(out, "usage: xroom hooks replay ROOM") {
		t.Fatalf("no room: exit %d: %s", code, out)
	}
	if code, out := replay("replay", "lobby"); code != 1 || !strings.Contains(out, "HTTP 500") {
		t.Fatalf("to a refusing webhook: exit %d: %s", code, out)
	}
	if n := rdb.XLen(context.Background(), dead).Val(); n != 1 {
		t.Fatalf("a failed replay left %d dead letters, want 1", n)
	}
	mu.Lock()
	refuse = false
	mu.Unlock()
	if code, out := replay("replay", "lobby"); code != 0 || !strings.Contains(out, "sent 1 dead letters") {
		t.Fatalf("replay: exit %d: %s", code, out)
	}
	if n := rdb.XLen(context.Background(), dead).Val(); n != 0 {
		t.Fatalf("%d dead letters after the replay", n)
	}
	if got := app.Delivered()["lobby"]; len(got) != 3 {
		t.Fatalf("the webhook took %v, want the poison too", got)
	}
}
