package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/streams"
)

// A message the publish hook refuses, with a code of the application's
// own, is shown to its sender as not sent, with that code (its pending
// send is answered); a rewritten one is shown as stored.
func TestBrowserPublishHookRefusal(t *testing.T) {
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m struct{ Message string }
		_ = json.NewDecoder(r.Body).Decode(&m)
		if strings.Contains(m.Message, "spam") {
			w.WriteHeader(http.StatusForbidden)
			_, _ = io.WriteString(w, `{"error": {"code": "moderated", "message": "no spam here"}}`)
			return
		}
		_, _ = io.WriteString(w, `{"message": "`+m.Message+` (checked)"}`)
	}))
	t.Cleanup(hook.Close)
	p, env := browserServer(t, map[string]string{"PUBLISH_HOOK_URL": hook.URL})
	b := startBrowser(t)
	const room = "moderated"
	alice := b.join(p.base, "alice", room)
	bob := b.join(p.base, "bob", room)

	alice.say("buy spam now")
	alice.say("hello")
	for _, tb := range []*tab{alice, bob} {
		tb.waitSettled("hello (checked)")
	}
	alice.waitFor("the refused message marked not sent", `[...document.querySelectorAll("#log .msg.failed")].some((r) =>
		r.querySelector(".msg-text").textContent === "buy spam now" &&
		r.querySelector(".msg-state").textContent.includes("moderated"))`)
	for _, r := range alice.rows() {
		if r.Pending {
			t.Errorf("alice still waits for %+v", r)
		}
	}
	for _, r := range bob.rows() {
		if strings.Contains(r.Text, "spam") {
			t.Errorf("bob sees the refused message: %+v", r)
		}
	}
	n, err := redistest.Shared(t).Client(t).XLen(context.Background(), streams.Keys{Prefix: env["CHAT_PREFIX"]}.Messages(room)).Result()
	if err != nil || n != 1 {
		t.Fatalf("Redis holds %d messages (%v), want only the checked one", n, err)
	}
	alice.screenshot("refused")
}
