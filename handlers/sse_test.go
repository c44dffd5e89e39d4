package handlers_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/streams"
)

// curlPath is curl, or the test skips (fails with XROOM_REQUIRE_REAL=1).
func curlPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("curl")
	if err != nil {
		if v, _ := strconv.ParseBool(os.Getenv(redistest.EnvRequireReal)); v {
			t.Fatalf("no curl on PATH (and %s=1 forbids skipping)", redistest.EnvRequireReal)
		}
		t.Skip("no curl on PATH")
	}
	return p
}

// curl -N with Last-Event-ID set to the 5th of 10 messages gets exactly
// the last 5, then ready (whose id is the position reached), then live
// messages; every message event's id is its stream ID and its data the
// WebSocket's frame.
func TestSSECurlWithLastEventIDGetsExactlyWhatWasMissed(t *testing.T) {
	ts := startServer(t)
	stored := ts.append("curl", "ana", 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, curlPath(t), "-sSN", "-H", "Last-Event-ID: "+stored[4], ts.sseURL("curl", ""))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	c := &sseConn{t: t, items: make(chan sseItem, 1024), skipPresence: true}
	go parseSSE(out, c.items)

	got := c.messages(5)
	if !slices.Equal(ids(got), stored[5:]) {
		t.Fatalf("got %v, want %v", ids(got), stored[5:])
	}
	for i, f := range got {
		if f.Message != "m"+strconv.Itoa(5+i) || f.User != "ana" || f.Room != "curl" {
			t.Fatalf("message %d: %+v", i, f)
		}
	}
	ready := c.expect("ready")
	if f := ready.frame(t); f.LastID != stored[9] || f.Epoch == "" || ready.ID != stored[9] {
		t.Fatalf("ready %+v: want last_id and id %s, and an epoch", ready, stored[9])
	}
	live := ts.append("curl", "bob", 1)
	if f := c.messages(1)[0]; f.ID != live[0] || f.User != "bob" {
		t.Fatalf("live message %+v, want %s", f, live[0])
	}
	if c.retry == "" {
		t.Error("no retry: line before the events")
	}
}

// The answer's head, and each frame's data: the same JSON as on the
// WebSocket. ?since= resumes too, and Last-Event-ID wins over it.
func TestSSEHeadersFramesAndWhichSinceWins(t *testing.T) {
	ts := startServer(t)
	stored := ts.append("head", "ana", 6)
	c := ts.openSSE("head", "since="+stored[1], http.Header{"Last-Event-ID": {stored[3]}})
	for name, want := range map[string]string{"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Content-Type-Options": "nosniff"} {
		if got := c.resp.Header.Get(name); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
	if c.resp.ContentLength != -1 || len(c.resp.TransferEncoding) != 0 {
		t.Errorf("length %d, transfer encoding %v: want a body until the connection closes", c.resp.ContentLength, c.resp.TransferEncoding)
	}
	if got := ids(c.messages(2)); !slices.Equal(got, stored[4:]) {
		t.Fatalf("Last-Event-ID %s with since=%s gave %v, want %v", stored[3], stored[1], got, stored[4:])
	}
	ready := c.expect("ready")
	retry, err := strconv.Atoi(c.retry)
	if err != nil || retry < 1000 || retry > 3000 {
		t.Errorf("retry %q, want 1000 to 3000 ms", c.retry)
	}

	ws := ts.dial("head", "since="+stored[1], true)
	wsMsgs := ws.messages(4)
	s := ts.openSSE("head", "since="+stored[1], nil)
	for i := 0; i < 4; i++ {
		e := s.expect("message")
		want, _ := json.Marshal(wsMsgs[i])
		var got frame
		_ = json.Unmarshal([]byte(e.Data), &got)
		again, _ := json.Marshal(got)
		if string(again) != string(want) || !strings.HasPrefix(e.Data, `{"type":"message","id":"`+e.ID+`"`) {
			t.Fatalf("event %+v differs from the WebSocket's frame %s", e, want)
		}
	}
	if f := s.expect("ready").frame(t); f.LastID != ready.frame(t).LastID {
		t.Fatalf("ready %+v", f)
	}
}

// A malformed Last-Event-ID (or since) is refused with 400 and a JSON
// body before the stream starts; an empty one is no position.
func TestSSEBadLastEventIDIsRefusedBeforeTheStream(t *testing.T) {
	ts := startServer(t)
	ts.append("bad", "ana", 3)
	for _, tc := range []struct {
		query, lastEventID, code string
	}{
		{"", "nope", "bad_last_event_id"},
		{"", "1-2-3", "bad_last_event_id"},
		{"since=x", "", "bad_since"},
		{"epoch=" + strings.Repeat("e", 65), "", "bad_epoch"},
		{"user=", "", "bad_user"},
	} {
		h := http.Header{}
		if tc.lastEventID != "" {
			h.Set("Last-Event-ID", tc.lastEventID)
		}
		c, status, body := ts.trySSE("bad", tc.query, h)
		if c != nil || status != http.StatusBadRequest || apiErrorCode(t, body) != tc.code {
			t.Errorf("%q, Last-Event-ID %q: %d %s; want 400 %s", tc.query, tc.lastEventID, status, body, tc.code)
		}
	}
	c, status, body := ts.trySSE("bad room!", "", nil)
	if c != nil || status != http.StatusBadRequest || apiErrorCode(t, body) != "bad_room" {
		t.Errorf("bad room: %d %s", status, body)
	}
	// An empty Last-Event-ID is as none: the newest history.
	s := ts.openSSE("bad", "", http.Header{"Last-Event-ID": {""}})
	s.messages(3)
	s.expect("ready")
}

// Resuming from a since that was trimmed away gets a gap of reason
// trimmed, and from a since the stream never handed out (another life of
// the room) a gap of reason reset, then the whole history: as on the
// WebSocket.
func TestSSEGapOnTrimmedOrUnknownSince(t *testing.T) {
	ts := startServer(t)
	stored := ts.append("gaps", "ana", 10)
	ts.redis.CLI(t, "XTRIM", ts.key("gaps"), "MAXLEN", "4")

	c := ts.openSSE("gaps", "", http.Header{"Last-Event-ID": {stored[2]}})
	gap := c.expect("gap")
	if f := gap.frame(t); f.Reason != "trimmed" || f.OldestID != stored[6] || gap.HasID {
		t.Fatalf("gap %+v, want trimmed from %s without an id", gap, stored[6])
	}
	if got := ids(c.messages(4)); !slices.Equal(got, stored[6:]) {
		t.Fatalf("after the gap %v", got)
	}
	c.expect("ready")

	beyond := streams.ID{Ms: 1 << 62}.String()
	r := ts.openSSE("gaps", "", http.Header{"Last-Event-ID": {beyond}})
	if f := r.expect("gap").frame(t); f.Reason != "reset" || f.OldestID != stored[6] {
		t.Fatalf("gap %+v, want reset from %s", f, stored[6])
	}
	if got := ids(r.messages(4)); !slices.Equal(got, stored[6:]) {
		t.Fatalf("after the reset %v", got)
	}
	if f := r.expect("ready").frame(t); f.LastID != stored[9] {
		t.Fatalf("ready %+v", f)
	}
}

// The epoch rides in the URL, which an EventSource keeps on reconnects
// while its Last-Event-ID moves on: a Last-Event-ID the stream holds is
// taken as of the current history whatever the URL's epoch; one it does
// not hold, or a ?since=, with another epoch, starts over (gap reset).
func TestSSEEpochInTheURLAndLastEventID(t *testing.T) {
	ts := startServer(t)
	old := ts.append("epoch", "ana", 3)
	first := ts.openSSE("epoch", "", nil)
	first.messages(3)
	oldEpoch := first.expect("ready").frame(t).Epoch

	// The room's keys are deleted: a new history with a new epoch.
	ts.redis.CLI(t, "DEL", ts.key("epoch"), streams.Keys{Prefix: ts.prefix}.Epoch("epoch"))
	fresh := ts.append("epoch", "bob", 3)

	// A stale Last-Event-ID (from the old history) with the old epoch: reset.
	a := ts.openSSE("epoch", "epoch="+oldEpoch, http.Header{"Last-Event-ID": {old[2]}})
	if f := a.expect("gap").frame(t); f.Reason != "reset" {
		t.Fatalf("gap %+v, want reset", f)
	}
	if got := ids(a.messages(3)); !slices.Equal(got, fresh) {
		t.Fatalf("after the reset %v, want %v", got, fresh)
	}
	newEpoch := a.expect("ready").frame(t).Epoch
	if newEpoch == oldEpoch {
		t.Fatal("the epoch did not change")
	}
	// The same URL reconnecting with a Last-Event-ID of the new history: no reset.
	b := ts.openSSE("epoch", "epoch="+oldEpoch, http.Header{"Last-Event-ID": {fresh[0]}})
	if got := ids(b.messages(2)); !slices.Equal(got, fresh[1:]) {
		t.Fatalf("resumed %v, want %v", got, fresh[1:])
	}
	if f := b.expect("ready").frame(t); f.Epoch != newEpoch {
		t.Fatalf("ready %+v", f)
	}
	// ?since= with the old epoch: reset, as on the WebSocket.
	s := ts.openSSE("epoch", "epoch="+oldEpoch+"&since="+fresh[0], nil)
	if f := s.expect("gap").frame(t); f.Reason != "reset" {
		t.Fatalf("gap %+v, want reset", f)
	}
}

// Presence: a stream is a member of its room, gets the snapshot after
// ready and join events after it.
func TestSSEPresence(t *testing.T) {
	ts := startServer(t)
	c := ts.openSSE("here", "user=alice", nil)
	c.skipPresence = false
	c.expect("ready")
	snap := c.expect("presence")
	if !strings.Contains(snap.Data, `"event":"snapshot"`) || !strings.Contains(snap.Data, `"user":"alice"`) || snap.HasID {
		t.Fatalf("snapshot %+v", snap)
	}
	ws := ts.dial("here", "user=bob", true)
	ws.expect("ready")
	for { // alice's own join may come first
		join := c.expect("presence")
		if strings.Contains(join.Data, `"event":"join"`) && strings.Contains(join.Data, `"user":"bob"`) {
			break
		}
		if !strings.Contains(join.Data, `"user":"alice"`) {
			t.Fatalf("presence %+v, want bob's join", join)
		}
	}
	var members struct {
		Members []struct{ User string } `json:"members"`
	}
	getJSON(t, ts.base+"/api/rooms/here/presence", &members)
	if len(members.Members) != 2 {
		t.Fatalf("members %+v, want alice and bob", members)
	}
}
