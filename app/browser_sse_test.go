package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/xroom/xroom/internal/redistest"
)

// Browser tests of the page on Server-Sent Events (static/transport.js):
// forced with ?transport=sse, and chosen by itself where WebSockets
// cannot connect.

// transportShown is the transport the page says it uses.
func (p *tab) transportShown() string {
	p.t.Helper()
	var shown string
	p.mustEval(`document.querySelector("#transport").hidden ? "" : document.querySelector("#transport").textContent`, &shown)
	return shown
}

// joinOn opens page (a URL with its query) in a new profile and joins room as user.
func (b *browser) joinOn(page, user, room string) *tab {
	b.t.Helper()
	p := b.open(user, page)
	p.joinRoom(user, room)
	return p
}

// A page on an event stream (?transport=sse) whose server is killed
// (SIGKILL: no goodbye) and started again: EventSource comes back by
// itself with Last-Event-ID, and every message, those sent through
// another instance meanwhile and one typed during the outage (sent with
// POST once back), shows exactly once, in order, on it and on a
// WebSocket page alike.
func TestBrowserEventSourceSurvivesAServerKill(t *testing.T) {
	p, env := browserServer(t, nil)
	other := startProc(t, env) // a second instance on the same Redis, for the API during the outage
	b := startBrowser(t)
	const room = "sse-kill"

	alice := b.joinOn(p.base+"/?transport=sse", "alice", room)
	bob := b.join(p.base, "bob", room)
	if got := alice.transportShown(); got != "SSE" {
		t.Fatalf("alice's page shows transport %q, want SSE", got)
	}
	if got := bob.transportShown(); got != "WebSocket" {
		t.Fatalf("bob's page shows transport %q, want WebSocket", got)
	}
	alice.say("from alice before")
	bob.say("from bob before")
	for _, tb := range []*tab{alice, bob} {
		tb.waitSettled("from alice before", "from bob before")
	}

	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	p.wait(10 * time.Second)
	alice.waitFor("the reconnecting state", `document.querySelector("#status").dataset.state !== "connected"`)
	during := []string{"sent through the API during the outage 1", "sent through the API during the outage 2"}
	for _, text := range during {
		publish(t, other.base, room, "api-bot", text)
	}
	alice.say("typed by alice during the outage")
	alice.waitFor("her message pending", `[...document.querySelectorAll("#log .msg.pending")].some((r) =>
		r.querySelector(".msg-text").textContent === "typed by alice during the outage")`)
	alice.screenshot("outage")

	restarted := startOnSamePort(t, env, p.base)
	during = append(during, "typed by alice during the outage")
	for _, tb := range []*tab{alice, bob} {
		tb.waitConnected()
		tb.waitSettled(during...)
	}
	publish(t, restarted.base, room, "api-bot", "after the restart")
	all := append([]string{"from alice before", "from bob before"}, append(during, "after the restart")...)
	for _, tb := range []*tab{alice, bob} {
		tb.waitSettled("after the restart")
		tb.expectOnce(all...)
		tb.expectInOrder()
	}
	if n := len(alice.socketURLs()); n != 0 {
		t.Errorf("the SSE page opened %d WebSockets", n)
	}
	// The browser's own resume: a request after the first carries the
	// last event's id, which the URL the page opened does not.
	reqs := alice.streamRequests()
	resumed := false
	for _, r := range reqs[1:] {
		resumed = resumed || r.LastEventID != "" && r.URL == reqs[0].URL
	}
	if len(reqs) < 2 || !resumed {
		t.Errorf("EventSource requests %+v: want a reconnect of the same URL with Last-Event-ID", reqs)
	}
	var stored int
	alice.mustEval(`Object.keys(localStorage).filter((k) => k.startsWith("xroom.outbox.")).length`, &stored)
	if stored != 0 {
		t.Errorf("%d unsent messages still kept", stored)
	}
	alice.screenshot("room")
}

// noWebSockets is a reverse proxy that passes HTTP on to target and
// refuses WebSocket upgrades, as some corporate proxies do.
func noWebSockets(t *testing.T, target string) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(u)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "WebSockets are not allowed through this proxy", http.StatusForbidden)
			return
		}
		proxy.ServeHTTP(w, r) // streams text/event-stream as it comes
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

// Behind a proxy that refuses WebSockets, the page falls back to SSE by
// itself, says so discreetly, and chats as usual: its messages (sent with
// POST, from its own origin) reach a WebSocket page once, and the other's
// reach it.
func TestBrowserFallsBackToSSEWhenWebSocketsAreRefused(t *testing.T) {
	p, _ := browserServer(t, nil)
	via := noWebSockets(t, p.base)
	b := startBrowser(t)
	const room = "behind-proxy"

	carol := b.joinOn(via+"/", "carol", room)
	dave := b.join(p.base, "dave", room)
	if got := carol.transportShown(); got != "SSE" {
		t.Fatalf("carol's page shows %q, want SSE", got)
	}
	carol.waitFor("the fallback notice", noticeShown("WebSockets cannot connect from here: using Server-Sent Events instead."))
	if n := len(carol.socketURLs()); n < 2 {
		t.Errorf("the page fell back after %d WebSocket attempts, want at least 2", n)
	}
	carol.say("hello through the proxy")
	dave.say("hello from a WebSocket")
	for i := 0; i < 3; i++ {
		carol.say(fmt.Sprintf("quick %d", i))
	}
	texts := []string{"hello through the proxy", "hello from a WebSocket", "quick 0", "quick 1", "quick 2"}
	for _, tb := range []*tab{carol, dave} {
		tb.waitSettled(texts...)
		tb.expectOnce(texts...)
		tb.expectInOrder()
	}
	for _, r := range dave.rows() {
		if r.Text == "hello through the proxy" && r.User != "carol" {
			t.Fatalf("carol's message shows as from %q", r.User)
		}
	}
	carol.waitFor("presence of both", membersAre(`["carol","dave"]`))
	carol.screenshot("room")
}

// With AUTH_SECRET set, a page on SSE sends with its token: its messages
// are stored as the token's user.
func TestBrowserSSEWithAuthToken(t *testing.T) {
	p, _ := browserServer(t, map[string]string{"AUTH_SECRET": browserSecret})
	tok := browserToken(t, "erin", "")
	b := startBrowser(t)
	const room = "sse-auth"
	erin := b.open("erin", p.base+"/?transport=sse&token="+tok+"#room="+room)
	erin.waitConnected() // the page joins the room in its address by itself, as the token's user
	erin.say("signed and streamed")
	erin.waitSettled("signed and streamed")
	var page struct {
		Messages []struct{ User, Message string } `json:"messages"`
	}
	getJSON(t, p.base+"/api/rooms/"+room+"/messages?token="+tok, &page)
	if len(page.Messages) != 1 || page.Messages[0].User != "erin" {
		t.Fatalf("stored %+v, want erin's message", page.Messages)
	}
	if got := erin.transportShown(); got != "SSE" {
		t.Fatalf("transport %q", got)
	}
	erin.screenshot("room")
}

// A page on an event stream marks read too (over HTTP: the stream only
// carries what the server sends): the messages in view move its read
// position in Redis, and a mark from the same user's other device clears
// what it counted.
func TestBrowserSSEPageMarksRead(t *testing.T) {
	p, env := browserServer(t, nil)
	rdb := redistest.Shared(t).Client(t)
	b := startBrowser(t)
	const room = "sse-reads"
	alice := b.joinOn(p.base+"/?transport=sse", "alice", room)
	var last string
	for i := range 3 {
		last = publish(t, p.base, room, "bob", fmt.Sprintf("news %d", i))
	}
	alice.waitSettled("news 0", "news 1", "news 2")
	waitPosition(t, rdb, env["CHAT_PREFIX"], room, "alice", last)
	alice.screenshot("marked")
}
