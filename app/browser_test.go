package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/streams"
)

// End-to-end tests of the browser client (static/) in a real chromium,
// against a real xroom process and redis-server. Screenshots go to
// test-artifacts/browser/ (or $XROOM_ARTIFACTS): one of the room view per
// test, and one of every open tab when a test fails.

// Two people chat both ways; a third who comes later sees the history.
func TestBrowserTwoPeopleChatAndALaterOneSeesHistory(t *testing.T) {
	p, _ := browserServer(t, nil)
	b := startBrowser(t)
	const room = "team.chat-1"

	alice := b.join(p.base, "alice", room)
	alice.say("hello from alice")
	alice.waitSettled("hello from alice")

	// bob finds the room in the lobby and joins it from there.
	bob := b.open("bob", p.base+"/")
	roomButton := `#rooms-list button[data-room="` + room + `"]`
	bob.do("join from the lobby",
		chromedp.SetValue(chromedp.CSS("#user"), "bob"),
		chromedp.WaitVisible(chromedp.CSS(roomButton)),
		chromedp.Click(chromedp.CSS(roomButton)),
	)
	bob.waitConnected()
	bob.waitSettled("hello from alice")
	bob.waitFor("the room's address", `location.hash === "#room=`+room+`"`)

	// Shift+Enter breaks the line; Enter sends.
	bob.do("type two lines",
		chromedp.SendKeys(chromedp.CSS("#text"), "hi alice"),
		pressEnter(true),
		chromedp.SendKeys(chromedp.CSS("#text"), "second line"),
		pressEnter(false),
	)
	reply := "hi alice\nsecond line"
	alice.waitSettled(reply)
	bob.waitSettled(reply)

	for _, tb := range []*tab{alice, bob} {
		rows := tb.expectOnce("hello from alice", reply)
		for _, r := range rows {
			if wantOwn := r.User == tb.name; r.Own != wantOwn {
				t.Errorf("%s: row %+v: own=%v, want %v", tb.name, r, r.Own, wantOwn)
			}
		}
		tb.expectInOrder()
	}
	var box string
	bob.mustEval(`document.querySelector("#text").value`, &box)
	if box != "" {
		t.Errorf("the message box still holds %q after sending", box)
	}

	// The lobby lists the room with its last activity.
	alice.do("refresh the rooms", chromedp.Click(chromedp.CSS("#rooms-refresh")))
	alice.waitFor("the room in the lobby", `[...document.querySelectorAll("#rooms-list button")].some((b) =>
		b.dataset.room === `+jsString(room)+` && b.getAttribute("aria-current") === "true" && /just now|min ago/.test(b.textContent))`)

	carol := b.open("carol", p.base+"/#room="+room)
	// A new visitor has no name yet: the form asks for it first.
	carol.waitFor("the name asked for", `document.activeElement === document.querySelector("#user") &&
		!document.querySelector("#user-error").hidden`)
	carol.joinRoom("carol", room)
	carol.waitSettled("hello from alice", reply)
	carol.expectOnce("hello from alice", reply)
	carol.expectInOrder()
	alice.screenshot("room")
}

// A reload keeps the room and the name, and shows the history once.
func TestBrowserReloadKeepsTheRoom(t *testing.T) {
	p, _ := browserServer(t, nil)
	b := startBrowser(t)
	const room = "reload"

	// Opened with a token in its address (auth lives elsewhere): the page
	// passes it on to every WebSocket it opens.
	alice := b.open("alice", p.base+"/?token=t0k.3n")
	alice.joinRoom("alice", room)
	texts := []string{"one", "two", "three"}
	for _, text := range texts {
		alice.say(text)
	}
	alice.waitSettled(texts...)
	publish(t, p.base, room, "api-bot", "from the API")
	alice.waitSettled("from the API")

	for i := range 2 {
		alice.do("reload", chromedp.Reload())
		alice.waitConnected()
		var where struct {
			Hash, User, Title string
		}
		alice.mustEval(`({Hash: location.hash, User: document.querySelector("#user").value, Title: document.title})`, &where)
		if where.Hash != "#room="+room || where.User != "alice" || !strings.HasPrefix(where.Title, room) {
			t.Fatalf("reload %d: %+v, want the room %s and the name alice", i, where, room)
		}
		alice.waitSettled(append(texts, "from the API")...)
		rows := alice.expectOnce(append(texts, "from the API")...)
		alice.expectInOrder()
		for _, r := range rows {
			if r.Own != (r.User == "alice") {
				t.Errorf("reload %d: %+v", i, r)
			}
		}
	}
	sockets := alice.socketURLs()
	if len(sockets) < 3 {
		t.Errorf("%d WebSockets seen over two reloads: %q", len(sockets), sockets)
	}
	for _, u := range sockets {
		if !strings.Contains(u, "/ws/chat/"+room+"/?") || !strings.Contains(u, "user=alice") || !strings.Contains(u, "token=t0k.3n") {
			t.Errorf("WebSocket %s: want the room, user=alice and token=t0k.3n", u)
		}
	}
	// Still live after the reloads, and nothing doubled.
	alice.say("after reload")
	alice.waitSettled("after reload")
	alice.expectOnce(append(texts, "from the API", "after reload")...)
	alice.screenshot("room")
}

// Older history loads as the person scrolls up, without moving what they
// read; also when the server replays nothing on join (HISTORY_ON_JOIN=0).
func TestBrowserOlderHistoryOnScrollUp(t *testing.T) {
	p, env := browserServer(t, map[string]string{"HISTORY_ON_JOIN": "10"})
	env["HISTORY_ON_JOIN"] = "0"
	none := startProc(t, env)
	b := startBrowser(t)
	const room = "long"
	const total = 130
	want := make([]string, total)
	for i := range want {
		want[i] = fmt.Sprintf("line %03d", i)
		publish(t, p.base, room, "bot", want[i])
	}
	alice := b.join(p.base, "alice", room)
	bob := b.join(none.base, "bob", room)
	for _, tb := range []*tab{alice, bob} {
		tb.waitSettled(want[total-1])
		tb.scrollToStart("line 000", total)
		tb.expectOnce(want...)
		tb.expectInOrder()
		if n := len(tb.rows()); n != total {
			t.Errorf("%s: %d rows, want %d", tb.name, n, total)
		}
	}
	alice.screenshot("room")
}

// scrollToStart scrolls the log to the top until first is shown and the
// page says it is the start of the room; each time, the line that was on
// top stays where it was while older ones come in above it.
func (p *tab) scrollToStart(first string, most int) {
	p.t.Helper()
	for round := 0; ; round++ {
		var done bool
		p.mustEval(`[...document.querySelectorAll("#log .msg-text")].some((e) => e.textContent === `+jsString(first)+`)`, &done)
		if done {
			break
		}
		if round > most {
			p.t.Fatalf("%s: %q never loaded\n%s", p.name, first, p.state())
		}
		var before struct {
			ID  string
			Top float64
			N   int
		}
		p.mustEval(`(() => {
			const log = document.querySelector("#log");
			log.scrollTop = 0;
			const first = log.querySelector(".msg[data-id]");
			return {ID: first.dataset.id, Top: first.getBoundingClientRect().top - log.getBoundingClientRect().top, N: log.querySelectorAll(".msg").length};
		})()`, &before)
		p.waitFor("an older page", fmt.Sprintf(`document.querySelectorAll("#log .msg").length > %d`, before.N))
		var after float64
		p.mustEval(`(() => {
			const log = document.querySelector("#log");
			return log.querySelector(".msg[data-id="+CSS.escape(`+jsString(before.ID)+`)+"]").getBoundingClientRect().top - log.getBoundingClientRect().top;
		})()`, &after)
		if d := after - before.Top; d < -2 || d > 2 {
			p.t.Errorf("%s: round %d: the line on top moved by %.0f px when older ones came", p.name, round, d)
		}
	}
	p.waitFor("the start of the room", `!document.querySelector("#older-note").hidden && document.querySelector("#older").hidden`)
}

// The server stops and starts again on the same port while two pages are
// open: both come back by themselves, and what was sent meanwhile (through
// the HTTP API of another instance, and typed into a page while offline)
// shows once in each.
func TestBrowserReconnectsAfterServerRestart(t *testing.T) {
	p, env := browserServer(t, nil)
	other := startProc(t, env) // a second instance on the same Redis, for the API during the outage
	b := startBrowser(t)
	const room = "restart"

	alice := b.join(p.base, "alice", room)
	bob := b.join(p.base, "bob", room)
	alice.say("before the outage")
	bob.waitSettled("before the outage")

	stopProc(t, p)
	for _, tb := range []*tab{alice, bob} {
		tb.waitFor("the reconnecting state", `["waiting", "connecting"].includes(document.querySelector("#status").dataset.state)`)
	}
	alice.waitFor("a visible countdown", `/reconnecting/.test(document.querySelector("#status").textContent) &&
		/in \d+ s/.test(document.querySelector("#countdown").textContent)`)

	publish(t, other.base, room, "api-bot", "sent through the API during the outage")
	alice.say("typed while offline")
	alice.waitFor("the offline message pending", `[...document.querySelectorAll("#log .msg.pending")].some((r) =>
		r.querySelector(".msg-text").textContent === "typed while offline")`)
	alice.screenshot("offline")

	restarted := startOnSamePort(t, env, p.base)

	during := []string{"sent through the API during the outage", "typed while offline"}
	for _, tb := range []*tab{alice, bob} {
		tb.waitConnected()
		tb.waitSettled(during...)
	}
	// A message after everything: once it is shown, anything doubled would be too.
	publish(t, restarted.base, room, "api-bot", "after the restart")
	for _, tb := range []*tab{alice, bob} {
		tb.waitSettled("after the restart")
		tb.expectOnce(append([]string{"before the outage"}, append(during, "after the restart")...)...)
		tb.expectInOrder()
	}
	// Stored once in Redis too.
	var page struct {
		Messages []struct {
			Message string `json:"message"`
		} `json:"messages"`
	}
	getJSON(t, restarted.base+"/api/rooms/"+room+"/messages?limit=100", &page)
	n := 0
	for _, m := range page.Messages {
		if m.Message == "typed while offline" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("the offline message is stored %d times", n)
	}
	alice.screenshot("room")
}

// Markup in a message or a name is shown as text and runs nothing.
func TestBrowserShowsHTMLAsText(t *testing.T) {
	p, _ := browserServer(t, nil)
	b := startBrowser(t)
	const room = "xss"
	const evil = `<img src=x onerror=alert(1)>`

	alice := b.join(p.base, "alice", room)
	bob := b.open("bob", p.base+"/")
	bob.joinRoom(`<b onmouseover=alert(2)>bob</b>`, room)

	alice.say(evil)
	publish(t, p.base, room, `<script>alert(3)</script>`, `<svg onload=alert(4)></svg>`)
	bob.say("<i>not italic</i>")
	want := []string{evil, `<svg onload=alert(4)></svg>`, "<i>not italic</i>"}
	// A last message: once it is shown, every earlier one has been rendered
	// and any image in them has had its chance to fail and fire onerror.
	publish(t, p.base, room, "api-bot", "end")
	alice.waitFor("bob in the member list, as typed", membersAre(`[`+jsString(`<b onmouseover=alert(2)>bob</b>`)+`, "alice"]`))
	for _, tb := range []*tab{alice, bob} {
		tb.waitSettled(append(want, "end")...)
		rows := tb.expectOnce(want...)
		users := map[string]bool{}
		for _, r := range rows {
			users[r.User] = true
		}
		for _, u := range []string{"alice", `<b onmouseover=alert(2)>bob</b>`, `<script>alert(3)</script>`} {
			if !users[u] {
				t.Errorf("%s: the name %q is not shown as typed; rows %+v", tb.name, u, rows)
			}
		}
		var found struct{ Elements, Images int }
		tb.mustEval(`({Elements: document.querySelectorAll("#log img, #log svg, #log script, #log b, #log i, #members-list b").length,
			Images: document.images.length})`, &found)
		if found.Elements != 0 || found.Images != 0 {
			t.Errorf("%s: markup became elements: %+v", tb.name, found)
		}
		if n := tb.dialogs.Load(); n != 0 {
			t.Errorf("%s: %d dialogs opened", tb.name, n)
		}
	}
	alice.screenshot("room")
}

// The member list shows who is here, from both sides; typing shows; a
// closed page leaves the list.
func TestBrowserPresence(t *testing.T) {
	p, _ := browserServer(t, nil)
	b := startBrowser(t)
	const room = "presence"

	alice := b.join(p.base, "alice", room)
	bob := b.join(p.base, "bob", room)

	both := `["alice", "bob"]`
	for _, tb := range []*tab{alice, bob} {
		tb.waitFor("both members", membersAre(both))
	}
	alice.waitFor("bob's join notice", noticeShown("bob joined"))

	// bob types: alice sees it, bob does not see himself typing.
	bob.do("type", chromedp.SendKeys(chromedp.CSS("#text"), "thinking"))
	alice.waitFor("bob typing", `document.querySelector("#typing").textContent === "bob is typing…"`)
	// His message ends it.
	// The lobby's periodic refresh skips hidden tabs: hide alice's, so only
	// the message itself can put the room in her lobby.
	var hid bool
	alice.mustEval(`(() => { Object.defineProperty(document, "hidden", {configurable: true, get: () => true}); return true; })()`, &hid)
	bob.do("send", pressEnter(false))
	alice.waitSettled("thinking")
	// bob's message started the room: alice's lobby lists it without a refresh.
	alice.waitFor("the room in alice's lobby", `[...document.querySelectorAll("#rooms-list button")].some((b) => b.dataset.room === `+jsString(room)+`)`)
	alice.mustEval(`(() => { Object.defineProperty(document, "hidden", {configurable: true, get: () => false}); return true; })()`, &hid)
	alice.waitFor("typing cleared", `document.querySelector("#typing").textContent === ""`)
	var own string
	bob.mustEval(`document.querySelector("#typing").textContent`, &own)
	if own != "" {
		t.Errorf("bob sees %q about himself", own)
	}
	alice.screenshot("room")

	bob.close()
	alice.waitFor("bob gone from the list", membersAre(`["alice"]`))
	alice.waitFor("bob's leave notice", noticeShown("bob left"))
}

// membersAre is a predicate: the member list holds exactly these users (a JSON array, sorted).
func membersAre(users string) string {
	return `JSON.stringify([...document.querySelectorAll("#members-list li")]
		.map((li) => li.firstChild.textContent).sort()) === JSON.stringify(` + users + `)`
}

// noticeShown is a predicate: a notice line in the log reads text.
func noticeShown(text string) string {
	return `[...document.querySelectorAll("#log .notice")].some((n) => n.textContent === ` + jsString(text) + `)`
}

// While the tab is hidden, the title counts the messages that came; it
// clears when the tab is shown again.
func TestBrowserUnreadCountInTitle(t *testing.T) {
	p, _ := browserServer(t, nil)
	b := startBrowser(t)
	const room = "unread"

	alice := b.join(p.base, "alice", room)
	// A headless tab is never hidden by itself: make the page believe it is.
	setHidden := func(hidden bool) {
		var ok bool
		alice.mustEval(fmt.Sprintf(`(() => {
			Object.defineProperty(document, "hidden", {configurable: true, get: () => %v});
			document.dispatchEvent(new Event("visibilitychange"));
			return true;
		})()`, hidden), &ok)
	}
	setHidden(true)
	publish(t, p.base, room, "bob", "first while away")
	publish(t, p.base, room, "bob", "second while away")
	alice.waitSettled("first while away", "second while away")
	alice.waitFor("the count in the title", `document.title === "(2) unread · xroom"`)
	setHidden(false)
	alice.waitFor("the count cleared", `document.title === "unread · xroom"`)
	alice.screenshot("room")
}

// On a phone-width screen, with the keyboard only: the name field has the
// focus, Tab goes to the room, Enter joins and moves to the message box, and
// nothing is wider than the screen.
func TestBrowserPhoneWidthAndKeyboard(t *testing.T) {
	p, _ := browserServer(t, nil)
	b := startBrowser(t)
	const room = "phone"

	alice := b.open("alice", p.base+"/")
	alice.do("phone screen", chromedp.EmulateViewport(360, 740, chromedp.EmulateScale(2)), chromedp.Reload())
	alice.waitFor("the name focused", `document.activeElement === document.querySelector("#user")`)
	alice.do("keyboard join",
		chromedp.KeyEvent("alice"),
		chromedp.KeyEvent("\t"),
	)
	alice.waitFor("the room focused", `document.activeElement === document.querySelector("#room")`)
	// A name the server would refuse is caught in the form, and said.
	alice.do("bad room name",
		chromedp.Evaluate[chromedp.Void](`document.querySelector("#room").select()`),
		chromedp.KeyEvent("my room!"),
		pressEnter(false),
	)
	alice.waitFor("the room error", `!document.querySelector("#room-error").hidden &&
		document.querySelector("#room").getAttribute("aria-invalid") === "true" &&
		document.activeElement === document.querySelector("#room")`)
	var state string
	alice.mustEval(`document.querySelector("#status").dataset.state + location.hash`, &state)
	if state != "idle" {
		t.Fatalf("a refused room name still went somewhere: %q", state)
	}
	alice.do("room name",
		chromedp.Evaluate[chromedp.Void](`document.querySelector("#room").select()`),
		chromedp.KeyEvent(room),
		pressEnter(false),
	)
	alice.waitFor("the error gone", `document.querySelector("#room-error").hidden`)
	alice.waitConnected()
	alice.waitFor("the message box focused", `document.activeElement === document.querySelector("#text")`)
	alice.do("send", chromedp.KeyEvent("hello from a phone"), pressEnter(false))
	alice.waitSettled("hello from a phone")

	var layout struct{ Doc, View int }
	alice.mustEval(`({Doc: document.documentElement.scrollWidth, View: window.innerWidth})`, &layout)
	if layout.View != 360 || layout.Doc > layout.View {
		t.Errorf("page is %d px wide in a %d px screen", layout.Doc, layout.View)
	}
	// Every control has a name a screen reader can say, and the log is announced.
	var unnamed []string
	alice.mustEval(`[...document.querySelectorAll("input, textarea, button")].filter((e) => !e.hidden &&
		!(e.labels && e.labels.length) && !e.textContent.trim() && !e.getAttribute("aria-label")).map((e) => e.id)`, &unnamed)
	if len(unnamed) > 0 {
		t.Errorf("controls without a label: %v", unnamed)
	}
	var live string
	alice.mustEval(`document.querySelector("#log").getAttribute("role") + " " + document.querySelector("#log").getAttribute("aria-live")`, &live)
	if live != "log polite" {
		t.Errorf("the log is %q, want role=log aria-live=polite", live)
	}
	alice.screenshot("phone")
}

// A reconnect that finds entries trimmed away shows a notice; one that finds
// the room's history reset starts the log over.
func TestBrowserGapNotices(t *testing.T) {
	p, env := browserServer(t, nil)
	rdb := redistest.Shared(t).Client(t)
	ctx := context.Background()
	b := startBrowser(t)
	const room = "gaps"
	stream := streams.Keys{Prefix: env["CHAT_PREFIX"]}.Messages(room)

	alice := b.join(p.base, "alice", room)
	first := []string{"m1", "m2", "m3"}
	for _, text := range first {
		alice.say(text)
	}
	alice.waitSettled(first...)

	// While the server is down, entries are added and most trimmed away.
	stopProc(t, p)
	for i := range 5 {
		add(t, rdb, stream, fmt.Sprintf("added while down %d", i))
	}
	if err := rdb.XTrimMaxLen(ctx, stream, 2).Err(); err != nil {
		t.Fatal(err)
	}
	p = startOnSamePort(t, env, p.base)
	alice.waitConnected()
	alice.waitFor("the trimmed notice", `[...document.querySelectorAll("#log .notice")].some((n) => /trimmed/.test(n.textContent))`)
	alice.waitSettled("added while down 3", "added while down 4")
	alice.expectOnce(append(first, "added while down 3", "added while down 4")...)
	for _, r := range alice.rows() {
		if r.Text == "added while down 0" {
			t.Errorf("a trimmed entry is shown: %+v", r)
		}
	}
	alice.expectInOrder()

	// The room is deleted and starts anew (as after FLUSHALL): the page
	// drops what it showed and shows the new history.
	stopProc(t, p)
	if err := rdb.Del(ctx, stream, streams.Keys{Prefix: env["CHAT_PREFIX"]}.Epoch(room)).Err(); err != nil {
		t.Fatal(err)
	}
	add(t, rdb, stream, "after the reset")
	p = startOnSamePort(t, env, p.base)
	alice.waitConnected()
	alice.waitFor("the reset notice", `[...document.querySelectorAll("#log .notice")].some((n) => /reset/.test(n.textContent))`)
	alice.waitSettled("after the reset")
	rows := alice.expectOnce("after the reset")
	if len(rows) != 1 {
		t.Errorf("after the reset the log holds %+v, want only the new history", rows)
	}
	// And it is live in the new history.
	alice.say("new era")
	alice.waitSettled("new era")
	alice.expectOnce("after the reset", "new era")
	alice.expectInOrder()
	alice.screenshot("room")
}

// add appends a chat entry straight into Redis, as redis-cli XADD would.
func add(t *testing.T, rdb *redis.Client, stream, text string) {
	t.Helper()
	err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: stream, Values: []string{"user", "ops", "message", text}}).Err()
	if err != nil {
		t.Fatal(err)
	}
}

// The browser goes offline: the page says so at once, keeps what is typed,
// and sends it when the network is back; it is stored and shown once.
func TestBrowserOfflineQueue(t *testing.T) {
	p, _ := browserServer(t, nil)
	b := startBrowser(t)
	const room = "offline"

	alice := b.join(p.base, "alice", room)
	bob := b.join(p.base, "bob", room)

	alice.do("go offline", setOffline(true))
	alice.waitFor("the offline state", `document.querySelector("#status").dataset.state === "offline" &&
		document.querySelector("#status").textContent === "offline"`)
	alice.say("written offline")
	publish(t, p.base, room, "api-bot", "while alice was offline")
	bob.waitSettled("while alice was offline")
	var pending []row
	for _, r := range alice.rows() {
		if r.Pending {
			pending = append(pending, r)
		}
	}
	if len(pending) != 1 || pending[0].Text != "written offline" || !strings.Contains(pending[0].State, "waiting") {
		t.Fatalf("offline, the pending rows are %+v", pending)
	}
	alice.screenshot("offline")

	alice.do("back online", setOffline(false))
	texts := []string{"while alice was offline", "written offline"}
	for _, tb := range []*tab{alice, bob} {
		tb.waitConnected()
		tb.waitSettled(texts...)
	}
	publish(t, p.base, room, "api-bot", "last")
	for _, tb := range []*tab{alice, bob} {
		tb.waitSettled("last")
		tb.expectOnce(append(texts, "last")...)
		tb.expectInOrder()
	}
	alice.screenshot("room")
}

// What was typed offline survives leaving the page: the next visit (same
// browser profile) sends it, and it is stored and shown once.
func TestBrowserUnsentMessageSurvivesLeavingThePage(t *testing.T) {
	p, _ := browserServer(t, nil)
	b := startBrowser(t)
	const room = "kept"

	alice := b.join(p.base, "alice", room)
	bob := b.join(p.base, "bob", room)

	alice.do("go offline", setOffline(true))
	alice.waitFor("the offline state", `document.querySelector("#status").dataset.state === "offline"`)
	alice.say("typed before leaving")
	alice.waitFor("it pending", `document.querySelectorAll("#log .msg.pending").length === 1`)
	alice.do("leave the page", chromedp.Navigate("about:blank"))

	// Later, in the same browser profile, the room again.
	profile := chromedp.FromContext(alice.ctx).BrowserContextID
	again := b.openIn("alice-later", p.base+"/#room="+room, chromedp.WithExistingBrowserContext(profile))
	again.waitConnected()
	for _, tb := range []*tab{again, bob} {
		tb.waitSettled("typed before leaving")
	}
	publish(t, p.base, room, "api-bot", "last")
	for _, tb := range []*tab{again, bob} {
		tb.waitSettled("last")
		tb.expectOnce("typed before leaving", "last")
	}
	var kept int
	again.mustEval(`Object.keys(localStorage).filter((k) => k.startsWith("xroom.outbox.")).length`, &kept)
	if kept != 0 {
		t.Errorf("%d unsent messages still kept after they were stored", kept)
	}
	again.screenshot("room")
}

// In a room bigger than the server lists (PRESENCE_MAX_MEMBERS), the page
// says the list is partial instead of passing it off as everyone.
func TestBrowserPresenceInABigRoom(t *testing.T) {
	p, _ := browserServer(t, map[string]string{"PRESENCE_MAX_MEMBERS": "1"})
	b := startBrowser(t)
	const room = "big"

	b.join(p.base, "alice", room)
	bob := b.join(p.base, "bob", room)
	bob.waitFor("a partial count", `/^\(\d+\+\)$/.test(document.querySelector("#members-count").textContent) &&
		/and more/.test(document.querySelector("#members-list").textContent) &&
		document.querySelector("#members-list .member.self") !== null`)
	bob.screenshot("room")
}

// With AUTH_SECRET set, the page opened with ?token= takes its name from the
// token, sends the token on every request (WebSocket, rooms, older history)
// and works as without authentication: chat, history after a reload, and
// older pages.
func TestBrowserWithAuthToken(t *testing.T) {
	p, _ := browserServer(t, map[string]string{"AUTH_SECRET": browserSecret, "HISTORY_ON_JOIN": "5"})
	const room = "team-auth"
	mint := func(sub string) string { return browserToken(t, sub, "team-*") }
	for i := 1; i <= 12; i++ {
		publish(t, p.base, room, "ops", fmt.Sprintf("earlier %02d", i))
	}
	b := startBrowser(t)
	alice := b.open("alice", p.base+"/?token="+mint("alice")+"#room="+room)
	var name string
	var readOnly bool
	// The address names the room and the token the user: the page joins by
	// itself, and the join form folds away (its fields are still there).
	alice.do("the form", chromedp.WaitReady(chromedp.CSS("#user")))
	alice.mustEval(`document.querySelector("#user").value`, &name)
	alice.mustEval(`document.querySelector("#user").readOnly`, &readOnly)
	if name != "alice" || !readOnly {
		t.Fatalf("name field %q (read-only %v), want the token's alice", name, readOnly)
	}
	alice.waitConnected()
	alice.waitSettled("earlier 12")
	// The lobby and older history come through the API, which needs the token too.
	alice.waitFor("the room in the lobby", `[...document.querySelectorAll("#rooms-list button")].some((b) => b.dataset.room === `+jsString(room)+`)`)
	var clicked bool
	alice.mustEval(`document.querySelector("#log").scrollTop = 0; document.querySelector("#older")?.click(); true`, &clicked)
	alice.waitSettled("earlier 01")

	bob := b.open("bob", p.base+"/?token="+mint("bob")+"#room="+room)
	bob.waitConnected()
	bob.do("type", chromedp.SendKeys(chromedp.CSS("#text"), "signed in"))
	bob.do("send", pressEnter(false))
	alice.waitSettled("signed in")
	for _, r := range alice.rows() {
		if r.Text == "signed in" && r.User != "bob" {
			t.Fatalf("bob's message shows as from %q", r.User)
		}
	}
	alice.screenshot("room")
}
