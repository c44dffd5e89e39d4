// Package hooktest plays a webhook endpoint for tests: it checks every
// signature, records every request and answers what the test says. It is
// apart from testkit because it imports hooks (for the message and header
// names), and testkit imports nothing of xroom.
package hooktest

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
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/hooks"
	"github.com/xroom/xroom/streams"
)

// Request is one webhook request as the receiver saw it.
type Request struct {
	Path     string
	Delivery string
	Attempt  string
	Messages []hooks.Message
	Status   int // what the receiver answered
}

// Receiver is a webhook endpoint at URL (any path under it is the same
// endpoint; the path is recorded). A request with a bad signature or a
// body that is not a batch fails the test.
type Receiver struct {
	URL string

	t      testing.TB
	secret string
	answer func(r *Request) int

	mu       sync.Mutex
	answered []Request      // in the order answered
	arrived  map[string]int // requests per path, counted before the answer
	inFlight map[string]int // per room
	all      int            // in flight now
	maxRoom  int            // most requests in flight for one room
	maxAll   int            // most requests in flight at once
}

// NewReceiver starts a receiver checking signatures with secret; answer
// gives each request's status (200 when answer is nil). It closes at
// cleanup, after the requests still being answered.
func NewReceiver(t testing.TB, secret string, answer func(r *Request) int) *Receiver {
	rc := &Receiver{t: t, secret: secret, answer: answer, arrived: map[string]int{}, inFlight: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(srv.Close)
	rc.URL = srv.URL
	return rc
}

func (rc *Receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var b struct{ Messages []hooks.Message }
	if err := json.Unmarshal(body, &b); err != nil || r.Method != http.MethodPost {
		rc.t.Errorf("webhook request %s %q: %v", r.Method, body, err)
	}
	// The header's name spelled as the README does, so that a renamed
	// header fails here.
	if !Verify(rc.secret, body, r.Header.Get("X-Xroom-Signature")) {
		rc.t.Errorf("webhook request with a bad signature: %q", body)
	}
	req := Request{Path: r.URL.Path, Delivery: r.Header.Get(hooks.HeaderDelivery), Attempt: r.Header.Get(hooks.HeaderAttempt), Messages: b.Messages}
	rooms := map[string]bool{}
	for _, m := range b.Messages {
		rooms[m.Room] = true
	}
	rc.mu.Lock()
	rc.arrived[req.Path]++
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
	rc.answered = append(rc.answered, req)
	rc.mu.Unlock()
	w.WriteHeader(req.Status)
}

// Requests lists the requests answered so far, in the order answered.
func (rc *Receiver) Requests() []Request {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.answered)
}

// RequestsTo counts the requests that reached path, answered or not: a
// request that never gets an answer counts too.
func (rc *Receiver) RequestsTo(path string) int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.arrived[path]
}

// InFlight counts the requests being answered now.
func (rc *Receiver) InFlight() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.all
}

// MaxInFlight is the most requests that were in flight at once for one
// room, and overall.
func (rc *Receiver) MaxInFlight() (room, all int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.maxRoom, rc.maxAll
}

// Delivered lists, per room, the IDs of the messages the receiver took
// (answered 2xx), in the order it first took them: a repeat is dropped,
// as a real receiver dedups by stream ID.
func (rc *Receiver) Delivered() map[string][]string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := map[string][]string{}
	seen := map[string]bool{}
	for _, r := range rc.answered {
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

// WaitStreams waits until the receiver took each room's stream (under
// prefix, on rdb) whole and in order; it fails the test at once when a
// room has as many as its stream but not the same, else after within.
func (rc *Receiver) WaitStreams(rdb redis.Cmdable, prefix string, rooms []string, within time.Duration) {
	rc.t.Helper()
	deadline := time.Now().Add(within)
	for {
		got, missing := rc.Delivered(), ""
		for _, room := range rooms {
			want := rc.streamIDs(rdb, streams.Keys{Prefix: prefix}.Messages(room))
			if slices.Equal(got[room], want) {
				continue
			}
			if len(got[room]) >= len(want) {
				rc.t.Fatalf("room %s: delivered %v, want the stream %v in order", room, got[room], want)
			}
			if missing == "" {
				missing = fmt.Sprintf("room %s: delivered %d of %d (%v...)", room, len(got[room]), len(want), got[room][:min(len(got[room]), 3)])
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

func (rc *Receiver) streamIDs(rdb redis.Cmdable, key string) []string {
	rc.t.Helper()
	msgs, err := rdb.XRange(context.Background(), key, "-", "+").Result()
	if err != nil {
		rc.t.Fatal(err)
	}
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID
	}
	return ids
}

// Verify is what a receiver does with X-Xroom-Signature, as the README
// shows it: its own HMAC-SHA256 of the body, compared in constant time.
// It does not call hooks.Sign, so that it checks it.
func Verify(secret string, body []byte, header string) bool {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	return hmac.Equal([]byte(want), []byte(header))
}
