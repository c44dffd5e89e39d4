package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/xroom/xroom/internal/redistest"
)

// Browser tests drive Debian's chromium through chromedp, against a real
// xroom process and a real redis-server. Nothing here downloads a browser.

const (
	// chromiumPath is where Debian installs the browser (.ci/run installs it).
	chromiumPath = "/usr/bin/chromium"
	// browserWait bounds one wait in a page: normally milliseconds, but the
	// machine is shared and runs -race, and a reconnect may wait out a
	// backoff of up to 15 s (+30% jitter).
	browserWait = 60 * time.Second
	// envArtifacts overrides where screenshots go.
	envArtifacts = "XROOM_ARTIFACTS"
)

// artifactsDir is where the browser tests leave screenshots: $XROOM_ARTIFACTS,
// or test-artifacts/browser, a relative path being taken from the repository
// root (tests run in app/).
func artifactsDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv(envArtifacts)
	if dir == "" {
		dir = filepath.Join("test-artifacts", "browser")
	}
	if !filepath.IsAbs(dir) {
		dir = filepath.Join("..", dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("screenshot folder: %v", err)
	}
	return dir
}

// findChromium returns the browser's path, or skips the test when it is
// missing (fails instead when XROOM_REQUIRE_REAL is set, as in CI).
func findChromium(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err == nil {
		return chromiumPath
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if v, _ := strconv.ParseBool(os.Getenv(redistest.EnvRequireReal)); v {
		t.Fatalf("no chromium at %s or on PATH (and %s=1 forbids skipping); install Debian's chromium", chromiumPath, redistest.EnvRequireReal)
	}
	t.Skipf("no chromium at %s or on PATH", chromiumPath)
	return ""
}

// browser is one headless chromium process; its pages are tabs.
type browser struct {
	t   *testing.T
	ctx context.Context // the browser's chromedp context
}

// startBrowser starts chromium headless with exactly the project's flags
// and a fresh profile (chromedp adds only its DevTools pipe); it stops with
// the test.
func startBrowser(t *testing.T) *browser {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(findChromium(t)),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.UserDataDir(t.TempDir()),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(ctx, 20*time.Second)
		defer ccancel()
		_ = chromedp.Cancel(cctx)
		cancel()
		cancelAlloc()
	})
	// The first Run starts the browser and binds it to ctx (no timeout on it).
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return &browser{t: t, ctx: ctx}
}

// tab is one page of the browser. Each tab has its own browser context (a
// separate profile: own localStorage), as two people on two machines would,
// unless it was opened with sameProfile.
type tab struct {
	t       *testing.T
	name    string
	ctx     context.Context
	cancel  context.CancelFunc
	dialogs atomic.Int32 // alert/confirm/prompt dialogs that opened
	closed  bool

	mu      sync.Mutex
	sockets []string        // URLs of the WebSockets the page opened
	streams []streamRequest // the EventSource requests the page made
	// sent holds the headers Chromium sent, by request ID: the
	// Last-Event-ID of an EventSource's reconnect is added below the page.
	sent map[network.RequestID]network.Headers
}

// streamRequest is one EventSource request: its URL and Last-Event-ID.
type streamRequest struct {
	URL, LastEventID string
	id               network.RequestID
}

// streamRequests returns the EventSource requests the page has made so far.
func (p *tab) streamRequests() []streamRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]streamRequest, len(p.streams))
	for i, r := range p.streams {
		out[i] = streamRequest{URL: r.URL, LastEventID: r.LastEventID}
		if last, ok := p.sent[r.id]["Last-Event-ID"].(string); ok {
			out[i].LastEventID = last
		}
	}
	return out
}

// socketURLs returns the URLs of the WebSockets the page has opened so far.
func (p *tab) socketURLs() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.sockets...)
}

// open opens a new tab (in a new profile) at url.
func (b *browser) open(name, url string) *tab {
	b.t.Helper()
	return b.openIn(name, url, chromedp.WithNewBrowserContext())
}

func (b *browser) openIn(name, url string, opts ...chromedp.ContextOption) *tab {
	t := b.t
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx, opts...)
	p := &tab{t: t, name: name, ctx: ctx, cancel: cancel}
	t.Cleanup(cancel)
	// Registered after cancel, so it runs before it: the tab is still there.
	t.Cleanup(func() {
		if t.Failed() && !p.closed {
			p.screenshot("failed")
		}
	})
	err := chromedp.Listen(ctx, func(ev any) {
		switch ev := ev.(type) {
		case *page.EventJavascriptDialogOpening:
			p.dialogs.Add(1)
			// Commands may not run inside the listener: dismiss from outside.
			go func() {
				_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{})
			}()
		case *network.EventWebSocketCreated:
			p.mu.Lock()
			p.sockets = append(p.sockets, ev.URL)
			p.mu.Unlock()
		case *network.EventRequestWillBeSent:
			if ev.Type == network.ResourceTypeEventSource {
				last, _ := ev.Request.Headers["Last-Event-ID"].(string)
				p.mu.Lock()
				p.streams = append(p.streams, streamRequest{URL: ev.Request.URL, LastEventID: last, id: ev.RequestID})
				p.mu.Unlock()
			}
		case *network.EventRequestWillBeSentExtraInfo:
			p.mu.Lock()
			if p.sent == nil {
				p.sent = map[network.RequestID]network.Headers{}
			}
			p.sent[ev.RequestID] = ev.Headers
			p.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatalf("%s: opening a tab: %v", name, err)
	}
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatalf("%s: network events: %v", name, err)
	}
	// A laptop-sized page, the same on every machine (phones: see EmulateViewport in the tests).
	p.do("navigate", chromedp.EmulateViewport(1024, 768), chromedp.Navigate(url))
	return p
}

// do runs actions in the tab, failing the test after browserWait.
func (p *tab) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, browserWait)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatalf("%s: %s: %v\n%s", p.name, what, err, p.state())
	}
}

// eval evaluates a JavaScript expression in the tab into out.
func (p *tab) eval(expr string, out any) error {
	ctx, cancel := context.WithTimeout(p.ctx, browserWait)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](expr))
	if err != nil {
		return err
	}
	return json.Unmarshal(raw, out)
}

// mustEval is eval that fails the test.
func (p *tab) mustEval(expr string, out any) {
	p.t.Helper()
	if err := p.eval(expr, out); err != nil {
		p.t.Fatalf("%s: evaluating %s: %v", p.name, expr, err)
	}
}

// waitFor polls a JavaScript predicate until it is true (or browserWait).
func (p *tab) waitFor(what, predicate string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, browserWait+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](predicate,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(browserWait)))
	if err != nil {
		p.t.Fatalf("%s: waiting for %s (%s): %v\n%s", p.name, what, predicate, err, p.state())
	}
}

// screenshot saves the tab's viewport as TEST-TAB-suffix.png in the artifacts folder.
func (p *tab) screenshot(suffix string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		p.t.Logf("%s: no screenshot: %v", p.name, err)
		return
	}
	name := fileSafe.ReplaceAllString(p.t.Name()+"-"+p.name+"-"+suffix, "_") + ".png"
	path := filepath.Join(artifactsDir(p.t), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Logf("%s: writing screenshot: %v", p.name, err)
		return
	}
	abs, _ := filepath.Abs(path)
	p.t.Logf("%s: screenshot %s", p.name, abs)
}

var fileSafe = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// close closes the tab (and its profile), as a person closing it would.
func (p *tab) close() {
	p.t.Helper()
	p.closed = true
	cctx, cancel := context.WithTimeout(p.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Cancel(cctx); err != nil {
		p.t.Logf("%s: closing: %v", p.name, err)
	}
	p.cancel()
}

// setOffline cuts the tab off the network (navigator.onLine turns false and
// the page gets an offline event), or brings it back.
func setOffline(offline bool) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
			return err
		}
		_, err := chromedp.Call(ctx, network.OverrideNetworkState, network.OverrideNetworkStateParams{
			Offline: offline, DownloadThroughput: -1, UploadThroughput: -1,
		})
		return err
	})
}

// ---- the xroom page ---------------------------------------------------

// join opens a page at base in a new profile and joins room as user.
func (b *browser) join(base, user, room string) *tab {
	b.t.Helper()
	p := b.open(user, base+"/")
	p.joinRoom(user, room)
	return p
}

// joinRoom fills the join form and waits until the room is live.
func (p *tab) joinRoom(user, room string) {
	p.t.Helper()
	p.do("join "+room,
		chromedp.WaitVisible(chromedp.CSS("#join-btn")),
		chromedp.SetValue(chromedp.CSS("#user"), user),
		chromedp.SetValue(chromedp.CSS("#room"), room),
		chromedp.Click(chromedp.CSS("#join-btn")),
	)
	p.waitConnected()
	var hash string
	p.mustEval(`location.hash`, &hash)
	if hash != "#room="+room {
		p.t.Fatalf("%s: after joining %s the address is %q", p.name, room, hash)
	}
}

func (p *tab) waitConnected() {
	p.t.Helper()
	p.waitFor("connected", `document.querySelector("#status").dataset.state === "connected"`)
}

// say types text into the message box and presses Enter.
func (p *tab) say(text string) {
	p.t.Helper()
	p.do("type "+text,
		chromedp.WaitEnabled(chromedp.CSS("#text")),
		chromedp.SendKeys(chromedp.CSS("#text"), text),
		pressEnter(false),
	)
}

// pressEnter presses Enter (with Shift, or not) on the focused element as a
// keyboard does: one keyDown that carries the text "\r", then keyUp. So a
// page that cancels the keydown gets no line break, as with a real key
// (chromedp's KeyEvent sends a separate char event that would add one).
func pressEnter(shift bool) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		var mods int64
		if shift {
			mods = 8
		}
		for _, typ := range []input.DispatchKeyEventType{input.DispatchKeyEventTypeKeyDown, input.DispatchKeyEventTypeKeyUp} {
			params := input.DispatchKeyEventParams{
				Type: typ, Key: "Enter", Code: "Enter", Modifiers: mods,
				WindowsVirtualKeyCode: 13, NativeVirtualKeyCode: 13,
			}
			if typ == input.DispatchKeyEventTypeKeyDown {
				params.Text, params.UnmodifiedText = "\r", "\r"
			}
			if _, err := chromedp.Call(ctx, input.DispatchKeyEvent, params); err != nil {
				return err
			}
		}
		return nil
	})
}

// row is one message line of the log, as the page shows it.
type row struct {
	ID      string `json:"id"`
	User    string `json:"user"`
	Text    string `json:"text"`
	Own     bool   `json:"own"`
	Pending bool   `json:"pending"`
	State   string `json:"state"`
}

const rowsJS = `[...document.querySelectorAll("#log .msg")].map((r) => ({
	id: r.dataset.id || "",
	user: r.querySelector(".msg-user").textContent,
	text: r.querySelector(".msg-text").textContent,
	own: r.classList.contains("own"),
	pending: r.classList.contains("pending") || r.classList.contains("outbox"),
	state: (r.querySelector(".msg-state") || {}).textContent || "",
}))`

func (p *tab) rows() []row {
	p.t.Helper()
	var rows []row
	p.mustEval(rowsJS, &rows)
	return rows
}

// jsString quotes s for JavaScript.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// waitSettled waits until each text is in the log as a stored message (an
// ID, not pending).
func (p *tab) waitSettled(texts ...string) {
	p.t.Helper()
	list, _ := json.Marshal(texts)
	p.waitFor(fmt.Sprintf("messages %q", texts), `(() => {
		const shown = new Set(`+rowsJS+`.filter((r) => r.id && !r.pending).map((r) => r.text));
		return `+string(list)+`.every((t) => shown.has(t));
	})()`)
}

// expectOnce checks that each text is in the log exactly once, stored.
func (p *tab) expectOnce(texts ...string) []row {
	p.t.Helper()
	rows := p.rows()
	for _, text := range texts {
		n := 0
		for _, r := range rows {
			if r.Text == text {
				n++
				if r.ID == "" || r.Pending {
					p.t.Errorf("%s: %q is shown but not settled: %+v", p.name, text, r)
				}
			}
		}
		if n != 1 {
			p.t.Errorf("%s: %q shown %d times, want once; log: %+v", p.name, text, n, rows)
		}
	}
	return rows
}

// expectInOrder checks that the stored rows are in stream order with no ID twice.
func (p *tab) expectInOrder() {
	p.t.Helper()
	rows := p.rows()
	seen := map[string]bool{}
	var prev string
	for _, r := range rows {
		if r.ID == "" {
			continue
		}
		if seen[r.ID] {
			p.t.Errorf("%s: ID %s shown twice; log: %+v", p.name, r.ID, rows)
		}
		seen[r.ID] = true
		if prev != "" && compareIDs(prev, r.ID) >= 0 {
			p.t.Errorf("%s: %s shown after %s; log: %+v", p.name, r.ID, prev, rows)
		}
		prev = r.ID
	}
}

// compareIDs orders two stream IDs (ms-seq).
func compareIDs(a, b string) int {
	pa, pb := strings.SplitN(a, "-", 2), strings.SplitN(b, "-", 2)
	for i := 0; i < 2; i++ {
		x, _ := strconv.ParseUint(pa[i], 10, 64)
		y, _ := strconv.ParseUint(pb[i], 10, 64)
		if x != y {
			if x < y {
				return -1
			}
			return 1
		}
	}
	return 0
}

// state is a short dump of the page for failure messages.
func (p *tab) state() string {
	var s struct {
		URL     string   `json:"url"`
		Status  string   `json:"status"`
		Members []string `json:"members"`
		Typing  string   `json:"typing"`
		Log     []string `json:"log"`
	}
	err := p.eval(`({
		url: location.href,
		status: document.querySelector("#status").dataset.state + " " + document.querySelector("#status").textContent + document.querySelector("#countdown").textContent,
		members: [...document.querySelectorAll("#members-list li")].map((l) => l.textContent),
		typing: document.querySelector("#typing").textContent,
		log: [...document.querySelectorAll("#log > *")].map((r) => (r.dataset.id || "-") + " " + r.className + " " + r.textContent).slice(-40),
	})`, &s)
	if err != nil {
		return fmt.Sprintf("(page state unavailable: %v)", err)
	}
	return fmt.Sprintf("page %s, status %q, members %q, typing %q, log (last 40):\n  %s",
		s.URL, s.Status, s.Members, s.Typing, strings.Join(s.Log, "\n  "))
}

// ---- the server side --------------------------------------------------

const browserAPIKey = "browser-test-key"

// browserSecret is the AUTH_SECRET of the browser tests that sign in.
const browserSecret = "0123456789abcdef0123456789abcdef-browser"

// browserToken is a token for sub that opens rooms (patterns; "" opens
// every room), signed with browserSecret and good for an hour.
func browserToken(t *testing.T, sub, rooms string) string {
	t.Helper()
	getenv := func(k string) string {
		switch k {
		case "AUTH_SECRET":
			return browserSecret
		case "ENV_FILE":
			return "/dev/null"
		}
		return ""
	}
	tok, err := mintFromEnv(getenv, sub, rooms, time.Hour, 0)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// browserServer starts an xroom process on a real redis-server, with the
// HTTP publish API on; extra overrides its environment.
func browserServer(t *testing.T, extra map[string]string) (*proc, map[string]string) {
	t.Helper()
	srv := redistest.Shared(t)
	redistest.RequireReal(t, srv)
	env := map[string]string{
		"REDIS_URL": srv.URL(), "CHAT_PREFIX": redistest.Prefix(t), "ADDR": "127.0.0.1:0",
		"API_KEY": browserAPIKey, "SHUTDOWN_TIMEOUT": "10s",
	}
	for k, v := range extra {
		env[k] = v
	}
	return startProc(t, env), env
}

// publish stores a message through the HTTP API and returns its ID.
func publish(t *testing.T, base, room, user, text string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"user": user, "message": text})
	req, err := http.NewRequest(http.MethodPost, base+"/api/rooms/"+room+"/messages", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+browserAPIKey)
	req.Header.Set("Content-Type", "application/json")
	client := &http.Client{Timeout: 20 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	defer resp.Body.Close()
	var out struct {
		ID string `json:"id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("publish: status %d, %v", resp.StatusCode, err)
	}
	return out.ID
}

// stopProc stops a server process as an operator would (SIGTERM) and waits for it.
func stopProc(t *testing.T, p *proc) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("server exited with %d", code)
	}
}

// startOnSamePort starts a server process with env on the port of base,
// where an earlier one served (so open pages find it at the same address).
func startOnSamePort(t *testing.T, env map[string]string, base string) *proc {
	t.Helper()
	i := strings.LastIndexByte(base, ':')
	if i < 0 {
		t.Fatalf("no port in %s", base)
	}
	again := make(map[string]string, len(env))
	for k, v := range env {
		again[k] = v
	}
	again["ADDR"] = "127.0.0.1:" + base[i+1:]
	p := startProc(t, again)
	if p.base != base {
		t.Fatalf("restarted at %s, want %s", p.base, base)
	}
	return p
}
