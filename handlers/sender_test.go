package handlers_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/xroom/xroom/handlers"
)

// sendReply is the answer to a send: the stored ID, or an error.
type sendReply struct {
	status    int
	header    http.Header
	ID        string `json:"id"`
	Duplicate bool   `json:"duplicate"`
	Error     struct {
		Code         string `json:"code"`
		Message      string `json:"message"`
		ClientID     string `json:"client_id"`
		RetryAfterMs int64  `json:"retry_after_ms"`
	} `json:"error"`
}

// send POSTs body to room's messages with the headers (and query) given.
func (ts *testServer) send(room, query string, header http.Header, body string) sendReply {
	ts.t.Helper()
	u := ts.base + "/api/rooms/" + room + "/messages"
	if query != "" {
		u += "?" + query
	}
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(body))
	if err != nil {
		ts.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		ts.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	r := sendReply{status: resp.StatusCode, header: resp.Header}
	if err := json.Unmarshal(data, &r); err != nil {
		ts.t.Fatalf("POST %s: %d %q: %v", u, resp.StatusCode, data, err)
	}
	return r
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

// With authentication on, a page sends with its user token (the header,
// or ?token= as on the WebSocket) and the message is stored as the
// token's user, deduplicated by client_id, in the rooms the token opens
// and from allowed origins only. API_KEY still sends as the user it names.
func TestPageSendsWithItsTokenInAuthMode(t *testing.T) {
	const key = "backend-key"
	ts := startServer(t, withAuth, func(o *options) { o.cfg.APIKey = key })
	alice := mint(t, "alice", []string{"team-*"}, time.Hour)
	self := "http://" + strings.TrimPrefix(ts.base, "http://")
	watch := ts.openSSE("team-a", "token="+alice, nil)
	watch.expect("ready")

	r := ts.send("team-a", "", hdr("Authorization", "Bearer "+alice, "Origin", self), `{"message":"hi","client_id":"c-1"}`)
	if r.status != http.StatusCreated || r.ID == "" {
		t.Fatalf("send: %+v", r)
	}
	if f := watch.messages(1)[0]; f.ID != r.ID || f.User != "alice" || f.ClientID != "c-1" {
		t.Fatalf("stored as %+v", f)
	}
	again := ts.send("team-a", "token="+alice, hdr("Origin", self), `{"message":"hi","client_id":"c-1","user":"alice"}`)
	if again.status != http.StatusOK || !again.Duplicate || again.ID != r.ID {
		t.Fatalf("the resend (token in the query): %+v, want 200 duplicate %s", again, r.ID)
	}
	for _, tc := range []struct {
		room, query string
		header      http.Header
		body        string
		status      int
		code        string
	}{
		{"team-a", "", hdr("Authorization", "Bearer "+alice), `{"message":"x","user":"bob"}`, 403, "user_mismatch"},
		{"lobby", "", hdr("Authorization", "Bearer "+alice), `{"message":"x"}`, 403, "room_forbidden"},
		{"team-a", "", hdr("Authorization", "Bearer nope"), `{"message":"x"}`, 401, "token_invalid"},
		{"team-a", "", hdr("Origin", self), `{"message":"x","user":"alice"}`, 401, "token_required"},
		{"team-a", "", hdr("Authorization", "Bearer "+alice, "Origin", "http://evil.example"), `{"message":"x"}`, 403, "bad_origin"},
		{"team-a", "", nil, `{"message":"x","user":"alice"}`, 401, "unauthorized"},
	} {
		if r := ts.send(tc.room, tc.query, tc.header, tc.body); r.status != tc.status || r.Error.Code != tc.code {
			t.Errorf("%s %v %s: %d %+v; want %d %s", tc.room, tc.header, tc.body, r.status, r.Error, tc.status, tc.code)
		}
	}
	backend := ts.send("team-a", "", hdr("Authorization", "Bearer "+key), `{"message":"deployed","user":"ci"}`)
	if backend.status != http.StatusCreated {
		t.Fatalf("backend: %+v", backend)
	}
	if f := watch.messages(1)[0]; f.User != "ci" || f.ID != backend.ID {
		t.Fatalf("backend's message %+v", f)
	}
	if n := ts.rdb.XLen(t.Context(), ts.key("team-a")).Val(); n != 2 {
		t.Fatalf("%d entries, want 2", n)
	}
}

// Without authentication, a browser page of the server's own origin (or
// of one ALLOWED_ORIGINS lists, which also gets CORS) sends as the user
// it names, as the WebSocket lets it; another origin is refused, and
// without an Origin (not a browser) API_KEY is needed, as before.
func TestPageSendsFromItsOriginWithoutAuth(t *testing.T) {
	ts := startServer(t, func(o *options) { o.cfg.AllowedOrigins = []string{"https://app.example"} })
	self := "http://" + strings.TrimPrefix(ts.base, "http://")
	watch := ts.openSSE("lobby", "", nil)
	watch.expect("ready")

	r := ts.send("lobby", "", hdr("Origin", self), `{"user":"zoë","message":"from the page","client_id":"p-1"}`)
	if r.status != http.StatusCreated {
		t.Fatalf("same origin: %+v", r)
	}
	if f := watch.messages(1)[0]; f.User != "zoë" || f.ID != r.ID || f.ClientID != "p-1" {
		t.Fatalf("stored as %+v", f)
	}
	if again := ts.send("lobby", "", hdr("Origin", self), `{"user":"zoë","message":"from the page","client_id":"p-1"}`); !again.Duplicate || again.ID != r.ID {
		t.Fatalf("resend: %+v", again)
	}
	listed := ts.send("lobby", "", hdr("Origin", "https://app.example"), `{"user":"ann","message":"cross"}`)
	if listed.status != http.StatusCreated || listed.header.Get("Access-Control-Allow-Origin") != "https://app.example" {
		t.Fatalf("listed origin: %+v (ACAO %q)", listed, listed.header.Get("Access-Control-Allow-Origin"))
	}
	for _, tc := range []struct {
		header http.Header
		body   string
		status int
		code   string
	}{
		{hdr("Origin", "http://evil.example"), `{"user":"x","message":"x"}`, 403, "bad_origin"},
		{hdr("Origin", self), `{"message":"no user"}`, 400, "bad_user"},
		{nil, `{"user":"x","message":"x"}`, 403, "publish_disabled"},
	} {
		if r := ts.send("lobby", "", tc.header, tc.body); r.status != tc.status || r.Error.Code != tc.code {
			t.Errorf("%v %s: %d %+v; want %d %s", tc.header, tc.body, r.status, r.Error, tc.status, tc.code)
		}
	}
	// A listed origin's preflight is answered; another's is not.
	pre := func(origin string) *http.Response {
		req, _ := http.NewRequest(http.MethodOptions, ts.base+"/api/rooms/lobby/messages", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "content-type")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := pre("https://app.example"); resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Content-Type") || resp.Header.Get("Access-Control-Allow-Methods") != "POST" {
		t.Errorf("preflight of a listed origin: %d %v", resp.StatusCode, resp.Header)
	}
	if resp := pre("http://evil.example"); resp.StatusCode != http.StatusForbidden || resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("preflight of another origin: %d %v", resp.StatusCode, resp.Header)
	}
	keyed := startServer(t, func(o *options) { o.cfg.APIKey = "k" })
	if r := keyed.send("lobby", "", nil, `{"user":"x","message":"x"}`); r.status != http.StatusUnauthorized || r.Error.Code != "unauthorized" {
		t.Errorf("no Origin, no key: %d %+v", r.status, r.Error)
	}
}

// A page's sends are held to the rate limits (the address's bucket
// standing for the connection's, and the user's), with 429 rate_limited,
// Retry-After and the client_id; a backend's are not.
func TestPageSendsAreRateLimited(t *testing.T) {
	ts := startServer(t, func(o *options) {
		o.cfg.Limits = handlers.Limits{Rate: slowRate, Burst: 2}
		o.cfg.APIKey = "k"
	})
	self := hdr("Origin", "http://"+strings.TrimPrefix(ts.base, "http://"))
	for i := range 2 {
		if r := ts.send("lobby", "", self, `{"user":"ann","message":"x","client_id":"r-`+string(rune('a'+i))+`"}`); r.status != http.StatusCreated {
			t.Fatalf("send %d: %+v", i, r)
		}
	}
	r := ts.send("lobby", "", self, `{"user":"bob","message":"x","client_id":"r-c"}`)
	if r.status != http.StatusTooManyRequests || r.Error.Code != "rate_limited" || r.Error.ClientID != "r-c" ||
		r.Error.RetryAfterMs <= 0 || r.header.Get("Retry-After") == "" {
		t.Fatalf("third send: %d %+v (Retry-After %q)", r.status, r.Error, r.header.Get("Retry-After"))
	}
	for range 3 {
		if r := ts.send("lobby", "", hdr("Authorization", "Bearer k"), `{"user":"ci","message":"x"}`); r.status != http.StatusCreated {
			t.Fatalf("backend: %+v", r)
		}
	}
}
