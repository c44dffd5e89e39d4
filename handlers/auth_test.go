package handlers_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/xroom/xroom/handlers"
	"github.com/xroom/xroom/internal/redistest"
)

var testSecret = []byte("test-secret-0123456789-abcdefghijklmnop")

func withAuth(o *options) { o.cfg.AuthSecret = testSecret }

func mint(t *testing.T, user string, rooms []string, ttl time.Duration) string {
	t.Helper()
	tok, err := handlers.MintToken(testSecret, user, rooms, ttl, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// signed signs arbitrary claims with method and key.
func signed(t *testing.T, method jwt.SigningMethod, key any, claims jwt.Claims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// noneToken is an unsigned token ("alg": "none") with valid-looking claims.
func noneToken(sub string) string {
	enc := base64.RawURLEncoding.EncodeToString
	head := enc([]byte(`{"alg":"none","typ":"JWT"}`))
	body, _ := json.Marshal(map[string]any{"sub": sub, "exp": time.Now().Add(time.Hour).Unix()})
	return head + "." + enc(body) + "."
}

func TestAuthRefusesBadTokensBeforeTheUpgrade(t *testing.T) {
	ts := startServer(t, withAuth)
	now := time.Now()
	claims := func(sub string, exp time.Time) jwt.MapClaims {
		return jwt.MapClaims{"sub": sub, "exp": exp.Unix(), "iat": now.Unix()}
	}
	hs256 := func(c jwt.Claims) string { return signed(t, jwt.SigningMethodHS256, testSecret, c) }
	cases := []struct {
		name, room, query string
		status            int
		code              string
	}{
		{"missing", "lobby", "", 401, "token_required"},
		{"empty", "lobby", "token=", 401, "token_required"},
		{"malformed", "lobby", "token=not.a.jwt", 401, "token_invalid"},
		{"garbage", "lobby", "token=" + url.QueryEscape("\x00\xff"), 401, "token_invalid"},
		{"expired", "lobby", "token=" + hs256(claims("alice", now.Add(-2*time.Minute))), 401, "token_expired"},
		{"wrong secret", "lobby", "token=" + signed(t, jwt.SigningMethodHS256, []byte("another-secret-0123456789-abcdefghij"), claims("alice", now.Add(time.Hour))), 401, "token_invalid"},
		{"alg none", "lobby", "token=" + noneToken("alice"), 401, "token_invalid"},
		{"HS512", "lobby", "token=" + signed(t, jwt.SigningMethodHS512, testSecret, claims("alice", now.Add(time.Hour))), 401, "token_invalid"},
		{"no exp", "lobby", "token=" + hs256(jwt.MapClaims{"sub": "alice"}), 401, "token_invalid"},
		{"no sub", "lobby", "token=" + hs256(jwt.MapClaims{"exp": now.Add(time.Hour).Unix()}), 401, "token_invalid"},
		{"bad sub", "lobby", "token=" + hs256(claims("a\x07b", now.Add(time.Hour))), 401, "token_invalid"},
		{"not yet valid", "lobby", "token=" + hs256(jwt.MapClaims{"sub": "alice", "exp": now.Add(time.Hour).Unix(), "nbf": now.Add(10 * time.Minute).Unix()}), 401, "token_invalid"},
		{"bad rooms claim", "lobby", "token=" + hs256(jwt.MapClaims{"sub": "alice", "exp": now.Add(time.Hour).Unix(), "rooms": []string{"[a-"}}), 401, "token_invalid"},
		{"rooms not strings", "lobby", "token=" + hs256(jwt.MapClaims{"sub": "alice", "exp": now.Add(time.Hour).Unix(), "rooms": 7}), 401, "token_invalid"},
		{"wrong room", "secret", "token=" + mint(t, "alice", []string{"lobby", "team-*"}, time.Hour), 403, "room_forbidden"},
		{"no rooms at all", "lobby", "token=" + mint(t, "alice", []string{}, time.Hour), 403, "room_forbidden"},
		{"someone else's name", "lobby", "user=bob&token=" + mint(t, "alice", nil, time.Hour), 403, "user_mismatch"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ts.tryDial(tc.room, tc.query, true, nil)
			if err == nil {
				t.Fatal("connected")
			}
			if c == nil || c.resp == nil {
				t.Fatalf("no HTTP answer: %v", err)
			}
			if c.resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (%v)", c.resp.StatusCode, tc.status, err)
			}
			var e apiErr
			msg := err.Error()
			body := msg[strings.Index(msg, "{"):]
			if json.Unmarshal([]byte(body), &e) != nil || e.Error.Code != tc.code || e.Error.Message == "" {
				t.Fatalf("body %s, want code %s", body, tc.code)
			}
			if tok, ok := strings.CutPrefix(tc.query, "token="); ok && len(tok) > 8 && strings.Contains(body, tok) {
				t.Fatal("the error echoes the token")
			}
			if strings.Contains(body, string(testSecret)) {
				t.Fatal("the error echoes the secret")
			}
		})
	}
	// Leeway: a token expired a few seconds ago still passes (clock skew).
	if _, err := ts.tryDial("lobby", "token="+hs256(claims("alice", now.Add(-5*time.Second))), true, nil); err != nil {
		t.Fatalf("token within the leeway: %v", err)
	}
}

func TestAuthUserComesFromTheTokenNeverTheFrame(t *testing.T) {
	ts := startServer(t, withAuth)
	tok := mint(t, "alice", nil, time.Hour)
	c := ts.dial("lobby", "token="+tok, true)
	c.expect("ready")
	c.send(`{"type":"message","message":"hi","client_id":"c1","user":"mallory"}`)
	var got []frame
	for len(got) < 2 {
		got = append(got, c.next())
	}
	for _, f := range got {
		if f.Type == "message" && f.User != "alice" {
			t.Fatalf("message frame user %q, want alice", f.User)
		}
	}
	// The same name in user= is accepted; so is the header form of the token.
	c2, err := ts.tryDial("lobby", "user=alice&since=0&token="+tok, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if f := c2.expect("message"); f.User != "alice" {
		t.Fatalf("replayed user %q", f.User)
	}
	if _, err := ts.tryDial("lobby", "", true, http.Header{"Authorization": {"Bearer " + tok}}); err != nil {
		t.Fatalf("Authorization header: %v", err)
	}
	msgs, err := ts.rdb.XRange(context.Background(), ts.key("lobby"), "-", "+").Result()
	if err != nil || len(msgs) != 1 || msgs[0].Values["user"] != "alice" {
		t.Fatalf("stored %+v %v, want one entry by alice", msgs, err)
	}
}

func TestAuthRoomPatterns(t *testing.T) {
	ts := startServer(t, withAuth)
	tok := mint(t, "alice", []string{"lobby", "team-*"}, time.Hour)
	for _, room := range []string{"lobby", "team-a", "team-"} {
		if _, err := ts.tryDial(room, "token="+tok, true, nil); err != nil {
			t.Errorf("%s: %v", room, err)
		}
	}
	for _, room := range []string{"lobby2", "team", "xteam-a"} {
		if _, err := ts.tryDial(room, "token="+tok, true, nil); err == nil {
			t.Errorf("%s: connected", room)
		}
	}
	// A comma-separated string is the same claim.
	csv := signed(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "bob", "exp": time.Now().Add(time.Hour).Unix(), "rooms": "ops, team-*"})
	if _, err := ts.tryDial("ops", "token="+csv, true, nil); err != nil {
		t.Errorf("ops with a string claim: %v", err)
	}
	if _, err := ts.tryDial("lobby", "token="+csv, true, nil); err == nil {
		t.Error("lobby with a string claim that leaves it out: connected")
	}
}

func TestAuthHTTPReadsNeedAToken(t *testing.T) {
	ts := startServer(t, withAuth, func(o *options) { o.cfg.APIKey = "publish-key-0123" })
	ts.append("lobby", "u", 2)
	ts.append("secret", "u", 1)
	tok := mint(t, "alice", []string{"lobby"}, time.Hour)
	var e apiErr
	for _, path := range []string{"/api/rooms", "/api/rooms/lobby/messages"} {
		if s := do(t, "GET", ts.base+path, "", "", &e); s != 401 || e.Error.Code != "token_required" {
			t.Fatalf("%s without a token: %d %+v", path, s, e)
		}
		if s := do(t, "GET", ts.base+path, "Bearer abc.def.ghi", "", &e); s != 401 || e.Error.Code != "token_invalid" {
			t.Fatalf("%s with a broken token: %d %+v", path, s, e)
		}
	}
	var p page
	if s := do(t, "GET", ts.base+"/api/rooms/lobby/messages", "Bearer "+tok, "", &p); s != 200 || len(p.Messages) != 2 {
		t.Fatalf("history with a bearer token: %d %+v", s, p)
	}
	if s := do(t, "GET", ts.base+"/api/rooms/lobby/messages?token="+tok, "", "", &p); s != 200 || len(p.Messages) != 2 {
		t.Fatalf("history with ?token=: %d %+v", s, p)
	}
	if s := do(t, "GET", ts.base+"/api/rooms/secret/messages", "Bearer "+tok, "", &e); s != 403 || e.Error.Code != "room_forbidden" {
		t.Fatalf("history of a room the token does not open: %d %+v", s, e)
	}
	var rooms struct {
		Rooms []struct{ Room string } `json:"rooms"`
	}
	if s := do(t, "GET", ts.base+"/api/rooms", "Bearer "+tok, "", &rooms); s != 200 || len(rooms.Rooms) != 1 || rooms.Rooms[0].Room != "lobby" {
		t.Fatalf("rooms list: %d %+v, want only lobby", s, rooms)
	}
	// A user token publishes as its user (what a page on SSE does), in its rooms only.
	if s := do(t, "POST", ts.base+"/api/rooms/lobby/messages", "Bearer "+tok, `{"user":"alice","message":"x"}`, nil); s != 201 {
		t.Fatalf("publish with a user token: %d", s)
	}
	e = apiErr{}
	if s := do(t, "POST", ts.base+"/api/rooms/secret/messages", "Bearer "+tok, `{"message":"x"}`, &e); s != 403 || e.Error.Code != "room_forbidden" || strings.Contains(e.Error.Message, tok) {
		t.Fatalf("publish with a user token to a room it does not open: %d %+v", s, e)
	}
	if s := do(t, "POST", ts.base+"/api/rooms/lobby/messages", "Bearer publish-key-0123", `{"user":"bot","message":"x"}`, nil); s != 201 {
		t.Fatalf("publish with the API key: %d", s)
	}
	// Health checks stay open to probes.
	if s := do(t, "GET", ts.base+"/healthz", "", "", nil); s != 200 {
		t.Fatalf("healthz: %d", s)
	}
}

func TestCrossSiteHijackingIsRefusedEvenWithAValidToken(t *testing.T) {
	ts := startServer(t, withAuth, func(o *options) { o.cfg.AllowedOrigins = []string{"https://app.example"} })
	tok := mint(t, "alice", nil, time.Hour)
	host := strings.TrimPrefix(ts.base, "http://")
	cookie := "session=" + tok
	for _, h := range []http.Header{
		{"Origin": {"http://evil.example"}, "Cookie": {cookie}},
		// X-Forwarded-Host is not trusted: anyone can send it.
		{"Origin": {"http://evil.example"}, "X-Forwarded-Host": {"evil.example"}},
		{"Origin": {"null"}},
	} {
		c, err := ts.tryDial("lobby", "token="+tok, true, h)
		if err == nil || c == nil || c.resp == nil || c.resp.StatusCode != 403 || !strings.Contains(err.Error(), "bad_origin") {
			t.Fatalf("%v: %v, want 403 bad_origin", h, err)
		}
	}
	for _, o := range []string{"http://" + host, "https://app.example"} {
		if _, err := ts.tryDial("lobby", "token="+tok, true, http.Header{"Origin": {o}}); err != nil {
			t.Fatalf("origin %s refused: %v", o, err)
		}
	}
}

// captureHandler keeps every log record, rendered as text, attributes included.
type captureHandler struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
	h   slog.Handler
}

func newCapture() *captureHandler {
	buf := &bytes.Buffer{}
	return &captureHandler{mu: &sync.Mutex{}, buf: buf, h: slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})}
}

func (c *captureHandler) Enabled(context.Context, slog.Level) bool { return true }
func (c *captureHandler) Handle(ctx context.Context, r slog.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.h.Handle(ctx, r)
}
func (c *captureHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return &captureHandler{mu: c.mu, buf: c.buf, h: c.h.WithAttrs(a)}
}
func (c *captureHandler) WithGroup(n string) slog.Handler {
	return &captureHandler{mu: c.mu, buf: c.buf, h: c.h.WithGroup(n)}
}
func (c *captureHandler) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

func TestLogsCarryNoTokens(t *testing.T) {
	logs := newCapture()
	rs := redistest.Start(t)
	ts := startServer(t, withAuth, func(o *options) { o.cfg.Logger = slog.New(logs); o.cfg.APIKey = "publish-key-0123"; o.rs = rs })
	good := mint(t, "alice", []string{"lobby"}, time.Hour)
	expired := signed(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(-time.Hour).Unix()})
	forged := signed(t, jwt.SigningMethodHS256, []byte("forged-secret-0123456789-abcdefghijkl"), jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()})
	for _, tok := range []string{expired, forged, noneToken("alice")} {
		if _, err := ts.tryDial("lobby", "token="+tok, true, nil); err == nil {
			t.Fatal("a bad token connected")
		}
		do(t, "GET", ts.base+"/api/rooms/lobby/messages?token="+tok, "", "", nil)
		do(t, "GET", ts.base+"/api/rooms", "Bearer "+tok, "", nil)
	}
	if _, err := ts.tryDial("secret", "token="+good, true, nil); err == nil {
		t.Fatal("a room outside the token connected")
	}
	c := ts.dial("lobby", "token="+good, true)
	c.expect("ready")
	c.send(`{"type":"message","message":"hello","client_id":"c1"}`)
	c.send(`{"type":"bogus"}`)
	for range 3 {
		c.next()
	}
	do(t, "GET", ts.base+"/api/rooms/lobby/messages?token="+good, "", "", nil)
	do(t, "POST", ts.base+"/api/rooms/lobby/messages", "Bearer wrong-key", `{"user":"x","message":"y"}`, nil)
	c.conn.Close()
	// Redis errors are logged too: make some happen with the token in the URL.
	rs.Stop(t)
	do(t, "GET", ts.base+"/api/rooms/lobby/messages?token="+good, "", "", nil)
	if _, err := ts.tryDial("other", "token="+mint(t, "alice", nil, time.Hour), true, nil); err == nil {
		time.Sleep(100 * time.Millisecond) // the session logs its failure to subscribe
	}
	deadline := time.Now().Add(10 * time.Second)
	for ts.srv.Connections() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	out := logs.String()
	if !strings.Contains(out, "token refused") {
		t.Fatalf("the refusals were not logged at all:\n%s", out)
	}
	for _, secret := range []string{good, expired, forged, noneToken("alice"), string(testSecret), "publish-key-0123", "wrong-key"} {
		// Any long piece of a token (its signature, its claims) counts.
		for _, part := range strings.Split(secret, ".") {
			if len(part) > 10 && strings.Contains(out, part) {
				t.Fatalf("the logs hold a secret (%.12s…):\n%s", part, out)
			}
		}
	}
}

func TestMintTokenRefusesWhatCannotWork(t *testing.T) {
	now := time.Now()
	if _, err := handlers.MintToken([]byte("short"), "alice", nil, time.Hour, now); err == nil {
		t.Error("a short secret was accepted")
	}
	if _, err := handlers.MintToken(testSecret, "", nil, time.Hour, now); err == nil {
		t.Error("an empty user was accepted")
	}
	if _, err := handlers.MintToken(testSecret, "alice", []string{"[x"}, time.Hour, now); err == nil {
		t.Error("a malformed pattern was accepted")
	}
	if _, err := handlers.MintToken(testSecret, "alice", nil, 0, now); err == nil {
		t.Error("a zero lifetime was accepted")
	}
}

// A connection does not outlive its token: once exp (plus the leeway) has
// passed, a send is refused and an idle connection is dropped at its next
// ping, both with close 1008 "token expired", and nothing more is stored.
func TestConnectionEndsWhenItsTokenExpires(t *testing.T) {
	ts := startServer(t, withAuth, func(o *options) {
		o.cfg.PingPeriod, o.cfg.PongWait = 200*time.Millisecond, 10*time.Second
		o.cfg.HistoryOnJoin = 0
	})
	// Expired 24 s ago: the 30 s leeway leaves it valid for 6 s more.
	soon := func(sub string) string {
		now := time.Now()
		return signed(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": sub, "exp": now.Add(-24 * time.Second).Unix()})
	}
	sender := ts.dial("lobby", "token="+soon("alice"), true)
	sender.expect("ready")
	idle := ts.dial("lobby", "token="+soon("bob"), true)
	idle.expect("ready")
	long := ts.dial("lobby", "token="+mint(t, "carol", nil, time.Hour), true)
	long.expect("ready")

	closeOf := func(c *client) (int, string) {
		_ = c.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		for {
			_, _, err := c.conn.ReadMessage()
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code, ce.Text
			}
			if err != nil {
				t.Fatalf("ended without a close frame: %v", err)
			}
		}
	}
	// The idle one is closed at a ping after expiry.
	if code, text := closeOf(idle); code != websocket.ClosePolicyViolation || text != "token expired" {
		t.Fatalf("idle: close %d %q, want 1008 token expired", code, text)
	}
	// By now alice's token has run out too: her send is not stored.
	sender.send(`{"type":"message","message":"too late","client_id":"late"}`)
	if code, _ := closeOf(sender); code != websocket.ClosePolicyViolation {
		t.Fatalf("sender: close %d, want 1008", code)
	}
	if n := ts.rdb.XLen(context.Background(), ts.key("lobby")).Val(); n != 0 {
		t.Fatalf("%d entries stored after the token expired", n)
	}
	// A connection with a valid token carries on.
	long.send(`{"type":"message","message":"still here","client_id":"c1"}`)
	for f := long.next(); f.Type != "ack"; f = long.next() {
	}
}
