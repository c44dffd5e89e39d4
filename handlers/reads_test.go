package handlers_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/xroom/xroom/internal/testkit"
	"github.com/xroom/xroom/streams"
)

// status sends a request and returns its status and body (for answers
// without JSON, such as 204).
func status(t *testing.T, method, url, auth, body string) (int, string) {
	t.Helper()
	resp, data := request(t, method, url, auth, body, nil)
	return resp.StatusCode, string(data)
}

// request sends a request with the Authorization auth (when not empty)
// and header, and returns the answer and its body.
func request(t *testing.T, method, url, auth, body string, header http.Header) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp, data
}

func (ts *testServer) readPos(room, user string) string {
	ts.t.Helper()
	return ts.rdb.HGet(context.Background(), streams.Keys{Prefix: ts.prefix}.Reads(room), user).Val()
}

// joined dials room as user in the xroom dialect and reads up to ready.
func (ts *testServer) joined(room, user string) *client {
	ts.t.Helper()
	c := ts.dial(room, "user="+url.QueryEscape(user), true)
	for f := c.next(); f.Type != "ready"; f = c.next() {
	}
	return c
}

func readFrame(id string) map[string]string { return map[string]string{"type": "read", "id": id} }

// A mark on one of alice's connections reaches her other connections as a
// read frame, not the one that sent it, not bob, not an old-dialect client;
// an older mark moves nothing and sends nothing; a mark over HTTP reaches
// all of her connections.
func TestReadFramesReachTheUsersOtherConnections(t *testing.T) {
	ts := startServer(t)
	phone := ts.joined("lobby", "alice")
	laptop := ts.joined("lobby", "alice")
	bob := ts.joined("lobby", "bob")
	compat := ts.dial("lobby", "user=alice", false)
	ids := ts.append("lobby", "carol", 4)
	for _, c := range []*client{phone, laptop, bob, compat} {
		c.messages(4)
	}

	phone.send(readFrame(ids[1]))
	if f := laptop.expect("read"); f.ID != ids[1] || f.Room != "lobby" {
		t.Fatalf("laptop got %+v, want read %s", f, ids[1])
	}
	if got := ts.readPos("lobby", "alice"); got != ids[1] {
		t.Fatalf("alice's position %q, want %s", got, ids[1])
	}
	laptop.send(readFrame(ids[0])) // older: nothing moves, nobody hears of it
	laptop.send(readFrame(ids[2]))
	if f := phone.expect("read"); f.ID != ids[2] {
		t.Fatalf("phone got %+v, want read %s (its own mark of %s is not echoed, the older one not sent)", f, ids[2], ids[1])
	}
	code, body := status(t, "POST", ts.base+"/api/rooms/lobby/read?user=alice", "", `{"id":"`+ids[3]+`"}`)
	if code != http.StatusNoContent {
		t.Fatalf("POST read: %d %s", code, body)
	}
	for _, c := range []*client{phone, laptop} {
		if f := c.expect("read"); f.ID != ids[3] {
			t.Fatalf("after the HTTP mark got %+v, want read %s", f, ids[3])
		}
	}
	if got := ts.readPos("lobby", "alice"); got != ids[3] {
		t.Fatalf("alice's position %q, want %s", got, ids[3])
	}
	bob.silent(300 * time.Millisecond)
	compat.silent(100 * time.Millisecond)
}

// A malformed mark gets an error frame and the connection lives on; a mark
// past the room's end is clamped to its newest entry.
func TestReadFrameRefusals(t *testing.T) {
	ts := startServer(t)
	c := ts.joined("lobby", "alice")
	ids := ts.append("lobby", "bob", 2)
	c.messages(2)
	for _, bad := range []string{
		`{"type":"read"}`, `{"type":"read","id":"abc"}`, `{"type":"read","id":5}`,
		`{"type":"read","id":"1-2-3"}`, `{"type":"read","id":"-1"}`, `{"type":"read","id":null}`,
	} {
		c.send(bad)
		if f := c.expect("error"); f.Code != "bad_id" {
			t.Fatalf("%s: %+v, want bad_id", bad, f)
		}
	}
	c.send(readFrame("99999999999999-0"))
	c.send(map[string]string{"type": "message", "message": "still here", "client_id": "c-1"})
	if f := c.expect("ack"); f.ClientID != "c-1" {
		t.Fatalf("after the refusals: %+v", f)
	}
	if got := ts.readPos("lobby", "alice"); got != ids[1] {
		t.Fatalf("a mark past the end stored %q, want the newest %s", got, ids[1])
	}
}

type readsBody struct {
	Room    string `json:"room"`
	Reads   []struct{ User, ID string }
	Partial bool `json:"partial"`
}

func TestReadAPI(t *testing.T) {
	ts := startServer(t)
	ids := ts.append("lobby", "bob", 3)
	post := func(query, body string) (int, apiErr) {
		t.Helper()
		var e apiErr
		code := do(t, "POST", ts.base+"/api/rooms/lobby/read"+query, "", body, &e)
		return code, e
	}
	for _, c := range []struct{ query, body, code string }{
		{"?user=alice", `{"id":"abc"}`, "bad_id"},
		{"?user=alice", `{"id":17}`, "bad_id"},
		{"?user=alice", `{}`, "bad_id"},
		{"?user=alice", `{"id":`, "bad_json"},
		{"?user=alice", "{\"id\":\"\xff\"}", "bad_utf8"},
		{"", `{"id":"` + ids[0] + `"}`, "bad_user"},
		{"?user=" + url.QueryEscape("tab\there"), `{"id":"` + ids[0] + `"}`, "bad_user"},
	} {
		if code, e := post(c.query, c.body); code != 400 || e.Error.Code != c.code || e.Error.Message == "" {
			t.Fatalf("POST %s %s: %d %+v, want 400 %s", c.query, c.body, code, e, c.code)
		}
	}
	var e apiErr
	if code := do(t, "POST", ts.base+"/api/rooms/no%20room/read?user=alice", "", `{"id":"1-0"}`, &e); code != 400 || e.Error.Code != "bad_room" {
		t.Fatalf("bad room: %d %+v", code, e)
	}
	mark := func(user, id string) {
		t.Helper()
		if code, body := status(t, "POST", ts.base+"/api/rooms/lobby/read?user="+user, "", `{"id":"`+id+`"}`); code != 204 {
			t.Fatalf("POST read %s %s: %d %s", user, id, code, body)
		}
	}
	mark("alice", ids[2])
	mark("alice", ids[0]) // older: accepted, changes nothing
	mark("carol", ids[1])
	if got := ts.readPos("lobby", "alice"); got != ids[2] {
		t.Fatalf("alice moved back to %q", got)
	}
	var r readsBody
	if code := do(t, "GET", ts.base+"/api/rooms/lobby/read", "", "", &r); code != 200 || r.Room != "lobby" ||
		fmt.Sprint(r.Reads) != fmt.Sprintf("[{alice %s} {carol %s}]", ids[2], ids[1]) || r.Partial {
		t.Fatalf("GET read: %d %+v", code, r)
	}
	if code := do(t, "GET", ts.base+"/api/rooms/lobby/read?limit=1", "", "", &r); code != 200 || len(r.Reads) != 1 || !r.Partial {
		t.Fatalf("GET read?limit=1: %d %+v", code, r)
	}
	if code := do(t, "GET", ts.base+"/api/rooms/lobby/read?user=carol", "", "", &r); code != 200 || fmt.Sprint(r.Reads) != fmt.Sprintf("[{carol %s}]", ids[1]) {
		t.Fatalf("GET read?user=carol: %d %+v", code, r)
	}
	if code := do(t, "GET", ts.base+"/api/rooms/lobby/read?user=dave", "", "", &r); code != 200 || len(r.Reads) != 0 {
		t.Fatalf("GET read?user=dave: %d %+v", code, r)
	}
}

// Counts are exact up to UNREAD_CAP, "more" above it, newest activity first.
func TestUnreadAPI(t *testing.T) {
	ts := startServer(t, func(o *options) { o.cfg.UnreadCap = 3 })
	for _, c := range []struct {
		room string
		n    int
	}{{"above", 4}, {"at", 3}, {"below", 2}} {
		ts.append(c.room, "alice", 1) // alice wrote here: the room is hers to count
		time.Sleep(2 * time.Millisecond)
		ts.append(c.room, "bob", c.n)
	}
	var u testkit.Unread
	if code := do(t, "GET", ts.base+"/api/users/alice/unread", "", "", &u); code != 200 || u.String() != "below:2 at:3 above:3+" {
		t.Fatalf("alice: %d %s, want below:2 at:3 above:3+", code, u)
	}
	last := ts.append("below", "bob", 1)[0]
	mark := `{"id":"` + last + `"}`
	if code, body := status(t, "POST", ts.base+"/api/rooms/below/read?user=alice", "", mark); code != 204 {
		t.Fatal(code, body)
	}
	if code := do(t, "GET", ts.base+"/api/users/alice/unread?limit=1", "", "", &u); code != 200 || u.String() != "below:0" ||
		u.Rooms[0].LastRead != last || u.Rooms[0].LastID != last {
		t.Fatalf("alice after marking below: %d %+v", code, u)
	}
	// Names are path-escaped; a name the server would refuse is a 400.
	ts.append("lobby", "zoë the 🦊", 1)
	if code := do(t, "GET", ts.base+"/api/users/"+url.PathEscape("zoë the 🦊")+"/unread", "", "", &u); code != 200 || u.String() != "lobby:0" {
		t.Fatalf("zoë: %d %s", code, u)
	}
	ts.append("lobby", "100%", 1) // a '%' in the name is unescaped once, not twice
	if code := do(t, "GET", ts.base+"/api/users/"+url.PathEscape("100%")+"/unread", "", "", &u); code != 200 || u.String() != "lobby:1" {
		t.Fatalf("100%%: %d %s, want zoë's message unread", code, u)
	}
	var e apiErr
	if code := do(t, "GET", ts.base+"/api/users/"+strings.Repeat("x", 33)+"/unread", "", "", &e); code != 400 || e.Error.Code != "bad_user" {
		t.Fatalf("a long name: %d %+v", code, e)
	}
	if code := do(t, "GET", ts.base+"/api/users/alice/unread?limit=0", "", "", &e); code != 400 || e.Error.Code != "bad_limit" {
		t.Fatalf("limit=0: %d %+v", code, e)
	}
}

// With authentication, a token reads only its own user's counts (for the
// rooms it opens) and marks only its own position.
func TestReadsWithAuthentication(t *testing.T) {
	ts := startServer(t, withAuth)
	ids := ts.append("team-a", "bob", 2)
	ts.append("secret", "bob", 1)
	ts.append("team-a", "alice", 1)
	ts.append("secret", "alice", 1)
	alice := mint(t, "alice", []string{"team-*"}, time.Hour)
	bob := mint(t, "bob", nil, time.Hour)
	var e apiErr
	if code := do(t, "GET", ts.base+"/api/users/alice/unread", "", "", &e); code != 401 || e.Error.Code != "token_required" {
		t.Fatalf("no token: %d %+v", code, e)
	}
	if code := do(t, "GET", ts.base+"/api/users/alice/unread", "Bearer "+bob, "", &e); code != 403 || e.Error.Code != "user_forbidden" {
		t.Fatalf("bob reading alice's counts: %d %+v", code, e)
	}
	var u testkit.Unread
	if code := do(t, "GET", ts.base+"/api/users/alice/unread", "Bearer "+alice, "", &u); code != 200 || u.String() != "team-a:2" {
		t.Fatalf("alice's own (team-* only): %d %s", code, u)
	}
	if code := do(t, "GET", ts.base+"/api/users/alice/unread?token="+alice, "", "", &u); code != 200 || u.String() != "team-a:2" {
		t.Fatalf("alice's own with ?token=: %d %s", code, u)
	}

	// Marking: the token's user, whatever ?user= would say.
	mark := `{"id":"` + ids[0] + `"}`
	if code := do(t, "POST", ts.base+"/api/rooms/team-a/read", "", mark, &e); code != 401 {
		t.Fatalf("mark without a token: %d %+v", code, e)
	}
	if code := do(t, "POST", ts.base+"/api/rooms/team-a/read?user=bob", "Bearer "+alice, mark, &e); code != 403 || e.Error.Code != "user_mismatch" {
		t.Fatalf("alice marking as bob: %d %+v", code, e)
	}
	if code := do(t, "POST", ts.base+"/api/rooms/secret/read", "Bearer "+alice, mark, &e); code != 403 || e.Error.Code != "room_forbidden" {
		t.Fatalf("a room the token does not open: %d %+v", code, e)
	}
	if code, body := status(t, "POST", ts.base+"/api/rooms/team-a/read", "Bearer "+alice, mark); code != 204 {
		t.Fatalf("alice's own mark: %d %s", code, body)
	}
	if got := ts.readPos("team-a", "alice"); got != ids[0] {
		t.Fatalf("alice's position %q", got)
	}
	// Reading positions is reading the room: the token must open it.
	if code := do(t, "GET", ts.base+"/api/rooms/secret/read", "Bearer "+alice, "", &e); code != 403 || e.Error.Code != "room_forbidden" {
		t.Fatalf("positions of a room the token does not open: %d %+v", code, e)
	}
	var r readsBody
	if code := do(t, "GET", ts.base+"/api/rooms/team-a/read", "Bearer "+alice, "", &r); code != 200 || len(r.Reads) != 1 {
		t.Fatalf("positions of team-a: %d %+v", code, r)
	}

	// On the socket the user is the token's too.
	c := ts.dial("team-a", "token="+alice, true)
	for f := c.next(); f.Type != "ready"; f = c.next() {
	}
	c.send(readFrame(ids[1]))
	deadline := time.Now().Add(10 * time.Second)
	for ts.readPos("team-a", "alice") != ids[1] {
		if time.Now().After(deadline) {
			t.Fatalf("the socket's mark did not reach alice's position: %q", ts.readPos("team-a", "alice"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
