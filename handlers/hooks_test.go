package handlers_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xroom/xroom/handlers"
)

// fakeHook is an application's publish hook, in process: it rewrites
// "rewrite:X" to X in capitals, refuses "bad", fails on "down", makes
// "huge" too long, and may take a random while.
type fakeHook struct {
	jitter time.Duration

	mu          sync.Mutex
	seen        []string
	inFlight    int
	maxInFlight int
}

type refused struct{ code, message string }

func (r *refused) Error() string                   { return r.code + ": " + r.message }
func (r *refused) Refusal() (code, message string) { return r.code, r.message }

func (h *fakeHook) Check(ctx context.Context, room, user, text, clientID string) (string, error) {
	h.mu.Lock()
	h.seen = append(h.seen, room+"/"+user+"/"+text+"/"+clientID)
	h.inFlight++
	h.maxInFlight = max(h.maxInFlight, h.inFlight)
	h.mu.Unlock()
	defer func() { h.mu.Lock(); h.inFlight--; h.mu.Unlock() }()
	if h.jitter > 0 {
		time.Sleep(rand.N(h.jitter))
	}
	switch {
	case strings.HasPrefix(text, "rewrite:"):
		return strings.ToUpper(strings.TrimPrefix(text, "rewrite:")), nil
	case text == "bad":
		return "", fmt.Errorf("the application said: %w", &refused{"moderated", "be nice"})
	case text == "down":
		return "", errors.New("the publish hook failed: no answer")
	case text == "huge":
		return strings.Repeat("x", 5000), nil
	}
	return text, nil
}

func withHook(h handlers.PublishHook) func(*options) {
	return func(o *options) { o.cfg.PublishHook = h; o.cfg.APIKey = "k" }
}

// storedTexts lists the messages Redis holds for room.
func (ts *testServer) storedTexts(room string) []string {
	ts.t.Helper()
	msgs, err := ts.rdb.XRange(context.Background(), ts.key(room), "-", "+").Result()
	if err != nil {
		ts.t.Fatal(err)
	}
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i], _ = m.Values["message"].(string)
	}
	return out
}

// The publish hook decides what is stored: a rewrite is stored (and
// echoed) rewritten; a refusal, a failed hook or a rewrite over the limit
// gets the sender an error frame with the client_id of the message (its
// pending send is answered), nothing is stored, and the connection lives
// on. Replies come in the order of sending.
func TestPublishHookOverWebSocket(t *testing.T) {
	hook := &fakeHook{}
	ts := startServer(t, withHook(hook))
	c := ts.dial("lobby", "user=alice", true)
	c.expect("ready")
	sends := []string{"one", "rewrite:two", "bad", "down", "huge", "three"}
	for i, text := range sends {
		c.send(fmt.Sprintf(`{"type": "message", "message": %q, "client_id": "c%d"}`, text, i))
	}
	var replies []string
	echoed := map[string]string{}
	for len(replies) < len(sends) {
		switch f := c.next(); f.Type {
		case "ack":
			replies = append(replies, f.ClientID+" ack")
		case "error":
			replies = append(replies, f.ClientID+" "+f.Code)
		case "message":
			echoed[f.ClientID] = f.Message
		}
	}
	want := []string{"c0 ack", "c1 ack", "c2 moderated", "c3 hook_unavailable", "c4 too_large", "c5 ack"}
	if !slices.Equal(replies, want) {
		t.Fatalf("replies %v, want %v", replies, want)
	}
	c.send(`{"type": "message", "message": "still here", "client_id": "c6"}`)
	for acked := false; !acked || echoed["c6"] == ""; { // echoes come in stream order
		switch f := c.next(); f.Type {
		case "ack":
			acked = acked || f.ClientID == "c6"
		case "message":
			echoed[f.ClientID] = f.Message
		}
	}
	if got := ts.storedTexts("lobby"); !slices.Equal(got, []string{"one", "TWO", "three", "still here"}) {
		t.Fatalf("stored %v", got)
	}
	if echoed["c1"] != "TWO" {
		t.Errorf("the rewritten message was echoed as %q", echoed["c1"])
	}
	hook.mu.Lock()
	defer hook.mu.Unlock()
	if hook.seen[0] != "lobby/alice/one/c0" {
		t.Errorf("the hook was asked %q", hook.seen[0])
	}
}

// A connection's messages are checked in parallel, yet stored and
// answered in the order they were sent.
func TestPublishHookKeepsSendOrder(t *testing.T) {
	hook := &fakeHook{jitter: 5 * time.Millisecond}
	ts := startServer(t, withHook(hook))
	c := ts.dial("lobby", "user=alice", true)
	c.expect("ready")
	const n = 120
	var want []string
	for i := range n {
		text := fmt.Sprintf("m%03d", i)
		if i%10 == 7 {
			text = "bad"
		} else {
			want = append(want, text)
		}
		c.send(fmt.Sprintf(`{"type": "message", "message": %q, "client_id": "c%d"}`, text, i))
	}
	next := 0
	for next < n {
		switch f := c.next(); f.Type {
		case "ack", "error":
			if f.ClientID != fmt.Sprintf("c%d", next) || (f.Type == "error") != (next%10 == 7) {
				t.Fatalf("reply %d is %+v", next, f)
			}
			next++
		}
	}
	if got := ts.storedTexts("lobby"); !slices.Equal(got, want) {
		t.Fatalf("stored %v, want %v", got, want)
	}
	hook.mu.Lock()
	defer hook.mu.Unlock()
	if hook.maxInFlight < 2 {
		t.Errorf("at most %d checks at once: the hook was asked one message at a time", hook.maxInFlight)
	}
	t.Logf("up to %d checks at once", hook.maxInFlight)
}

// The HTTP API asks the hook too: a refusal is a 403 with the hook's code
// and message, a failed hook a 503, a rewrite is stored rewritten.
func TestPublishHookOverHTTP(t *testing.T) {
	ts := startServer(t, withHook(&fakeHook{}))
	url := ts.base + "/api/rooms/lobby/messages"
	var e apiErr
	if code := do(t, "POST", url, "Bearer k", `{"user": "bot", "message": "bad"}`, &e); code != 403 || e.Error.Code != "moderated" || e.Error.Message != "be nice" {
		t.Fatalf("refused: %d %+v", code, e)
	}
	if code := do(t, "POST", url, "Bearer k", `{"user": "bot", "message": "down"}`, &e); code != 503 || e.Error.Code != "hook_unavailable" {
		t.Fatalf("hook down: %d %+v", code, e)
	}
	if code := do(t, "POST", url, "Bearer k", `{"user": "bot", "message": "huge"}`, &e); code != 413 || e.Error.Code != "too_large" {
		t.Fatalf("too long a rewrite: %d %+v", code, e)
	}
	var ok struct{ ID string }
	if code := do(t, "POST", url, "Bearer k", `{"user": "bot", "message": "rewrite:loud"}`, &ok); code != 201 || ok.ID == "" {
		t.Fatalf("rewrite: %d %+v", code, ok)
	}
	if got := ts.storedTexts("lobby"); !slices.Equal(got, []string{"LOUD"}) {
		t.Fatalf("stored %v", got)
	}
}

type fakeStatus struct{ rooms []string }

func (f *fakeStatus) Status(ctx context.Context, room string) (any, error) {
	f.rooms = append(f.rooms, room)
	return map[string]any{"enabled": true, "pending": 3, "room": room}, nil
}

// GET /api/hooks is behind API_KEY and passes ?room= on.
func TestHooksStatusAPI(t *testing.T) {
	off := startServer(t)
	var e apiErr
	if code := do(t, "GET", off.base+"/api/hooks", "", "", &e); code != 403 || e.Error.Code != "hooks_status_disabled" {
		t.Fatalf("without API_KEY: %d %+v", code, e)
	}
	noHooks := startServer(t, func(o *options) { o.cfg.APIKey = "k" })
	var st map[string]any
	if code := do(t, "GET", noHooks.base+"/api/hooks", "Bearer k", "", &st); code != 200 || st["enabled"] != false {
		t.Fatalf("without webhooks: %d %v", code, st)
	}
	fs := &fakeStatus{}
	ts := startServer(t, func(o *options) { o.cfg.APIKey, o.cfg.Hooks = "k", fs })
	if code := do(t, "GET", ts.base+"/api/hooks", "Bearer nope", "", &e); code != 401 {
		t.Fatalf("bad key: %d", code)
	}
	if code := do(t, "GET", ts.base+"/api/hooks?room=lobby", "Bearer k", "", &st); code != 200 || st["pending"] != 3.0 || st["room"] != "lobby" {
		t.Fatalf("status: %d %v", code, st)
	}
	if code := do(t, "GET", ts.base+"/api/hooks?room=no%20good", "Bearer k", "", &e); code != 400 || e.Error.Code != "bad_room" {
		t.Fatalf("bad room: %d %+v", code, e)
	}
	if len(fs.rooms) != 1 || fs.rooms[0] != "lobby" {
		t.Fatalf("Status asked for %v", fs.rooms)
	}
}
