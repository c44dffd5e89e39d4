package hooks_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/xroom/xroom/hooks"
	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/internal/testkit"
	"github.com/xroom/xroom/streams"
)

func TestMain(m *testing.M) { os.Exit(redistest.Run(m)) }

const secret = "test-secret"

func ctx10(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// env is a hub on Redis with a key prefix of its own.
type env struct {
	t      *testing.T
	srv    *redistest.Server
	rdb    *redis.Client // the test's own client
	prefix string
	store  *streams.Store
	hub    *streams.Hub
}

func newEnv(t *testing.T, srv *redistest.Server, prefix string, mode streams.TailMode) *env {
	t.Helper()
	if prefix == "" {
		prefix = redistest.Prefix(t)
	}
	e := &env{t: t, srv: srv, rdb: srv.Client(t), prefix: prefix}
	e.store = streams.NewStore(srv.Client(t), streams.Options{Prefix: prefix, MaxLen: 100000})
	blocking := redis.NewClient(&redis.Options{Addr: srv.Addr, PoolSize: 4, MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}}) // as app: see handlers tests
	e.hub = streams.NewHub(e.store, blocking, streams.HubOptions{Logger: testkit.Quiet(), Mode: mode})
	t.Cleanup(func() { _ = e.hub.Close() })
	return e
}

// start starts webhooks to url on the env's hub, closed at cleanup.
func (e *env) start(url string, mod func(*hooks.WebhookOptions)) *hooks.Webhooks {
	e.t.Helper()
	opt := hooks.WebhookOptions{URL: url, Secret: secret, Backoff: 20 * time.Millisecond, ClaimAfter: 2 * time.Second,
		Timeout: 5 * time.Second, Logger: testkit.Quiet(), From: streams.HookFromStart,
		Watch: streams.RoomWatchOptions{PollEvery: 50 * time.Millisecond, ScanEvery: 300 * time.Millisecond}}
	if mod != nil {
		mod(&opt)
	}
	w := hooks.StartWebhooks(e.hub, opt)
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = w.Close(ctx)
	})
	return w
}

func (e *env) key(room string) string { return streams.Keys{Prefix: e.prefix}.Messages(room) }

// append stores a message as the WebSocket and the HTTP API do.
func (e *env) append(room, text string) string {
	e.t.Helper()
	id, _, err := e.store.Append(ctx10(e.t), room, streams.Message{User: "alice", Text: text})
	if err != nil {
		e.t.Fatal(err)
	}
	return id.String()
}

// xadd stores a message as redis-cli would: XADD with the same fields,
// nothing else (no rooms list).
func (e *env) xadd(room, text string) string {
	e.t.Helper()
	id, err := e.rdb.XAdd(ctx10(e.t), &redis.XAddArgs{Stream: e.key(room), Values: []any{"user", "cli", "message", text}}).Result()
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

// streamIDs lists the room's entries.
func (e *env) streamIDs(room string) []string {
	e.t.Helper()
	msgs, err := e.rdb.XRange(ctx10(e.t), e.key(room), "-", "+").Result()
	if err != nil {
		e.t.Fatal(err)
	}
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID
	}
	return ids
}

// pending is the room's XPENDING count for the webhook group.
func (e *env) pending(room string) int64 {
	e.t.Helper()
	p, err := e.rdb.XPending(ctx10(e.t), e.key(room), streams.HookGroupName).Result()
	if err != nil {
		e.t.Fatal(err)
	}
	return p.Count
}

// request is one webhook request as the receiver saw it.
type request struct {
	Delivery string
	Attempt  string
	Messages []hooks.Message
	Status   int // what the receiver answered
}

// receiver is a webhook endpoint: it checks every signature, records every
// request, and answers what answer says (200 when nil).
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	answer func(r *request) int

	mu       sync.Mutex
	requests []request
	badSigs  int
	inFlight map[string]int // per room
	maxRoom  int            // most requests in flight for one room
	maxAll   int            // most requests in flight at once
	all      int
}

func newReceiver(t *testing.T, answer func(r *request) int) *receiver {
	rc := &receiver{t: t, answer: answer, inFlight: map[string]int{}}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var b struct{ Messages []hooks.Message }
	if err := json.Unmarshal(body, &b); err != nil || r.Method != http.MethodPost {
		rc.t.Errorf("webhook request %s %q: %v", r.Method, body, err)
	}
	req := request{Delivery: r.Header.Get(hooks.HeaderDelivery), Attempt: r.Header.Get(hooks.HeaderAttempt), Messages: b.Messages}
	rooms := map[string]bool{}
	for _, m := range b.Messages {
		rooms[m.Room] = true
	}
	rc.mu.Lock()
	if !verify(secret, body, r.Header.Get("X-Xroom-Signature")) {
		rc.badSigs++
	}
	for room := range rooms {
		rc.inFlight[room]++
		rc.maxRoom = max(rc.maxRoom, rc.inFlight[room])
	}
	rc.all++
	rc.maxAll = max(rc.maxAll, rc.all)
	rc.mu.Unlock()

	req.Status = http.StatusOK
	if rc.answer != nil {
		req.Status = rc.answer(&req)
	}

	rc.mu.Lock()
	for room := range rooms {
		rc.inFlight[room]--
	}
	rc.all--
	rc.requests = append(rc.requests, req)
	rc.mu.Unlock()
	w.WriteHeader(req.Status)
}

// delivered lists, per room, the IDs of the messages the receiver took
// (answered 2xx), in the order it first took them.
func (rc *receiver) delivered() map[string][]string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := map[string][]string{}
	seen := map[string]bool{}
	for _, r := range rc.requests {
		if r.Status/100 != 2 {
			continue
		}
		for _, m := range r.Messages {
			if !seen[m.Room+"/"+m.ID] {
				seen[m.Room+"/"+m.ID] = true
				out[m.Room] = append(out[m.Room], m.ID)
			}
		}
	}
	return out
}

// waitDelivered waits until every room's stream was delivered whole.
func (rc *receiver) waitDelivered(e *env, rooms []string, within time.Duration) {
	rc.t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := rc.delivered()
		missing := ""
		for _, room := range rooms {
			if want := e.streamIDs(room); !slices.Equal(got[room], want) {
				missing = fmt.Sprintf("room %s: delivered %d of %d (%v...)", room, len(got[room]), len(want), head(got[room]))
				if len(got[room]) >= len(want) {
					rc.t.Fatalf("room %s: delivered %v, want the stream %v in order", room, got[room], want)
				}
				break
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			rc.t.Fatalf("not everything delivered within %v: %s", within, missing)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func head(ids []string) []string { return ids[:min(len(ids), 3)] }

// verify is what a receiver does with X-Xroom-Signature, as the README
// shows it: its own HMAC-SHA256 of the body, compared in constant time.
func verify(secret string, body []byte, header string) bool {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	return hmac.Equal([]byte(want), []byte(header))
}
