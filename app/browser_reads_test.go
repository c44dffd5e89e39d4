package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/streams"
)

// Browser tests of read positions (unread badges, the "new messages"
// divider, marking read, a read on another device) and of the page while
// in a room (the join form folds away, the message box in view on a phone,
// a read-only name that looks it). Each state gets a screenshot.

// setHidden makes the page believe its tab is hidden or shown (a headless
// tab never is by itself).
func (p *tab) setHidden(hidden bool) {
	p.t.Helper()
	var ok bool
	p.mustEval(fmt.Sprintf(`(() => {
		Object.defineProperty(document, "hidden", {configurable: true, get: () => %v});
		document.dispatchEvent(new Event("visibilitychange"));
		return true;
	})()`, hidden), &ok)
}

// badge is what the lobby's button of room shows as its unread count ("" for none).
func badge(room string) string {
	return `((document.querySelector('#rooms-list button[data-room="` + room + `"] .room-badge') || {}).textContent || "").replace(" unread", "")`
}

// waitPosition waits until user's read position in room, in Redis, is id.
func waitPosition(t *testing.T, rdb *redis.Client, prefix, room, user, id string) {
	t.Helper()
	key := streams.Keys{Prefix: prefix}.Reads(room)
	deadline := time.Now().Add(browserWait)
	for {
		got := rdb.HGet(context.Background(), key, user).Val()
		if got == id {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's read position in %s is %q, want %s", user, room, got, id)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestBrowserUnreadBadgesDividerAndReadOnAnotherDevice(t *testing.T) {
	p, env := browserServer(t, map[string]string{"UNREAD_CAP": "5"})
	rdb := redistest.Shared(t).Client(t)
	prefix := env["CHAT_PREFIX"]
	b := startBrowser(t)

	// alice reads news as it comes: what she sees is marked read in Redis.
	laptop := b.join(p.base, "alice", "news")
	var ids []string
	for i := 1; i <= 3; i++ {
		ids = append(ids, publish(t, p.base, "news", "bob", fmt.Sprintf("n%d", i)))
	}
	laptop.waitSettled("n1", "n2", "n3")
	waitPosition(t, rdb, prefix, "news", "alice", ids[2])

	// Away in the lobby, she sees how much came since, per room; past the
	// cap the badge says so; a room she never was in has none.
	laptop.do("leave", chromedp.Click(chromedp.CSS("#leave-btn")))
	for i := 4; i <= 7; i++ {
		ids = append(ids, publish(t, p.base, "news", "bob", fmt.Sprintf("n%d", i)))
	}
	publish(t, p.base, "busy", "alice", "hello busy") // she wrote there: it is hers to count
	for i := 1; i <= 6; i++ {
		publish(t, p.base, "busy", "bob", fmt.Sprintf("b%d", i))
	}
	publish(t, p.base, "quiet", "bob", "nobody reads me")
	laptop.do("refresh the lobby", chromedp.Click(chromedp.CSS("#rooms-refresh")))
	laptop.waitFor("the badges", badge("news")+` === "4" && `+badge("busy")+` === "5+" && `+
		`document.querySelector('#rooms-list button[data-room="quiet"]') && `+badge("quiet")+` === ""`)
	laptop.screenshot("lobby-badges")

	// Back in news: the divider sits between what she read and what came
	// since, and what is in view is marked read.
	laptop.do("open news from the lobby", chromedp.Click(chromedp.CSS(`#rooms-list button[data-room="news"]`)))
	laptop.waitConnected()
	laptop.waitSettled("n7")
	laptop.waitFor("the divider above n4", `(() => {
		const d = document.querySelector("#log .divider");
		return d && d.textContent === "New messages" &&
			d.previousElementSibling.querySelector(".msg-text").textContent === "n3" &&
			d.nextElementSibling.querySelector(".msg-text").textContent === "n4" &&
			document.querySelectorAll("#log .divider").length === 1;
	})()`)
	laptop.screenshot("divider")
	waitPosition(t, rdb, prefix, "news", "alice", ids[6])

	// Her phone opens news too: nothing is unread there, so no divider.
	phone := b.open("alice-phone", p.base+"/")
	phone.joinRoom("alice", "news")
	phone.waitSettled("n7")

	// Both hidden: new messages are unread on both (the laptop's title and
	// its lobby badge count them); nothing is marked.
	laptop.setHidden(true)
	phone.setHidden(true)
	ids = append(ids, publish(t, p.base, "news", "bob", "n8"), publish(t, p.base, "news", "bob", "n9"))
	laptop.waitSettled("n8", "n9")
	phone.waitSettled("n8", "n9")
	laptop.waitFor("two unread on the laptop", `document.title === "(2) news · xroom" && `+badge("news")+` === "2"`)
	time.Sleep(1500 * time.Millisecond) // more than the marking interval
	if got := rdb.HGet(context.Background(), streams.Keys{Prefix: prefix}.Reads("news"), "alice").Val(); got != ids[6] {
		t.Fatalf("hidden tabs marked %s read", got)
	}
	laptop.screenshot("unread-before-the-phone")

	// She reads them on the phone: the laptop hears of it, and its title,
	// badge and divider clear.
	phone.setHidden(false)
	waitPosition(t, rdb, prefix, "news", "alice", ids[8])
	laptop.waitFor("the laptop cleared", `document.title === "news · xroom" && `+badge("news")+` === "" &&
		!document.querySelector("#log .divider")`)
	laptop.screenshot("cleared-by-the-phone")
}

// inViewJS reports where an element is in the window, and whether the page
// is scrolled.
const inViewJS = `((sel) => {
	const e = document.querySelector(sel);
	const r = e.getBoundingClientRect();
	return {top: r.top, bottom: r.bottom, height: innerHeight, width: innerWidth,
		doc: document.documentElement.scrollWidth, scrollY: window.scrollY,
		visible: e.offsetParent !== null};
})`

type placement struct {
	Top, Bottom   float64
	Height, Width float64
	Doc           float64
	ScrollY       float64
	Visible       bool
}

func (p *tab) placement(sel string) placement {
	p.t.Helper()
	var pl placement
	p.mustEval(inViewJS+`(`+jsString(sel)+`)`, &pl)
	return pl
}

// After joining, the room is the page's focus: the join form folds away
// (Leave is in the room's bar, not beside Join), and on a phone the
// message box is in view without scrolling, however long the room.
func TestBrowserRoomIsThePageFocus(t *testing.T) {
	p, _ := browserServer(t, nil)
	const room = "long"
	for i := 1; i <= 60; i++ {
		publish(t, p.base, room, "bob", fmt.Sprintf("line %02d of a long room", i))
	}
	b := startBrowser(t)
	alice := b.open("alice", p.base+"/")
	alice.do("phone screen", chromedp.EmulateViewport(360, 740, chromedp.EmulateScale(2)), chromedp.Reload())
	alice.do("the form", chromedp.WaitVisible(chromedp.CSS("#join-btn")))
	if pl := alice.placement("#room-bar"); pl.Visible {
		t.Fatal("the room bar shows before joining")
	}
	alice.screenshot("phone-lobby")

	alice.joinRoom("alice", room)
	alice.waitSettled("line 60 of a long room")
	alice.say("hello from the phone")
	alice.waitSettled("hello from the phone")
	for _, sel := range []string{"#join", "#join-btn"} {
		if pl := alice.placement(sel); pl.Visible {
			t.Errorf("%s still shows after joining", sel)
		}
	}
	var leave struct{ InForm, InBar bool }
	alice.mustEval(`({InForm: !!document.querySelector("#join #leave-btn"), InBar: !!document.querySelector("#room-bar #leave-btn")})`, &leave)
	if leave.InForm || !leave.InBar {
		t.Errorf("Leave is in the join form %v, in the room's bar %v", leave.InForm, leave.InBar)
	}
	if pl := alice.placement("#leave-btn"); !pl.Visible || pl.Top < 0 || pl.Bottom > pl.Height {
		t.Errorf("Leave not in view: %+v", pl)
	}
	var name string
	alice.mustEval(`document.querySelector("#room-name").textContent`, &name)
	if name != room {
		t.Errorf("the room's bar names %q, want %q", name, room)
	}
	for _, sel := range []string{"#text", "#send-btn"} {
		pl := alice.placement(sel)
		if !pl.Visible || pl.ScrollY != 0 || pl.Top < 0 || pl.Bottom > pl.Height || pl.Width != 360 || pl.Doc > pl.Width {
			t.Errorf("%s at a 360 px phone: %+v, want in view without scrolling", sel, pl)
		}
	}
	alice.screenshot("phone-room")

	// Leaving unfolds the form again.
	alice.do("leave", chromedp.Click(chromedp.CSS("#leave-btn")))
	alice.waitFor("the form back", `document.querySelector("#join").offsetParent !== null &&
		document.querySelector("#room-bar").offsetParent === null`)
	alice.screenshot("phone-left")

	// On a laptop too, the form folds away and the message box is in view.
	alice.do("laptop screen", chromedp.EmulateViewport(1024, 768))
	alice.joinRoom("alice", room)
	if pl := alice.placement("#join"); pl.Visible {
		t.Error("the join form shows after joining on a laptop")
	}
	if pl := alice.placement("#text"); pl.Top < 0 || pl.Bottom > pl.Height {
		t.Errorf("the message box on a laptop: %+v", pl)
	}
	alice.screenshot("laptop-room")
}

// With a sign-in token, the name field is read-only and looks it: not the
// white box of a field to type in, and a hint says where the name is from.
func TestBrowserReadOnlyNameLooksReadOnly(t *testing.T) {
	p, _ := browserServer(t, map[string]string{"AUTH_SECRET": browserSecret})
	tok := browserToken(t, "alice", "")
	b := startBrowser(t)
	alice := b.open("alice", p.base+"/?token="+tok)
	alice.do("the form", chromedp.WaitVisible(chromedp.CSS("#user")))
	var f struct {
		Value, Hint                string
		ReadOnly, HintShown        bool
		Border, RoomBorder         string
		Background, RoomBackground string
		Described                  string
	}
	alice.mustEval(`(() => {
		const u = getComputedStyle(document.querySelector("#user")), r = getComputedStyle(document.querySelector("#room"));
		const hint = document.querySelector("#user-hint");
		return {Value: document.querySelector("#user").value, ReadOnly: document.querySelector("#user").hasAttribute("readonly"),
			Border: u.borderTopStyle, RoomBorder: r.borderTopStyle, Background: u.backgroundColor, RoomBackground: r.backgroundColor,
			HintShown: hint.offsetParent !== null, Hint: hint.textContent,
			Described: document.querySelector("#user").getAttribute("aria-describedby")};
	})()`, &f)
	if f.Value != "alice" || !f.ReadOnly {
		t.Fatalf("name field %q, readonly %v", f.Value, f.ReadOnly)
	}
	if f.Border == f.RoomBorder || f.Background == f.RoomBackground {
		t.Errorf("the read-only name looks like the editable room field: border %s/%s, background %s/%s", f.Border, f.RoomBorder, f.Background, f.RoomBackground)
	}
	if !f.HintShown || f.Hint == "" || f.Described != "user-hint user-error" {
		t.Errorf("hint shown %v %q, described by %q", f.HintShown, f.Hint, f.Described)
	}
	alice.screenshot("readonly-name")
}
