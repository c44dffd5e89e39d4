package hooks_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xroom/xroom/hooks"
	"github.com/xroom/xroom/internal/testkit"
	"github.com/xroom/xroom/internal/testkit/hooktest"
)

// publishApp is an application's publish hook: it answers by the text.
type publishApp struct {
	mu   sync.Mutex
	seen []map[string]string
	srv  *httptest.Server
}

func newPublishApp(t *testing.T) *publishApp {
	a := &publishApp{}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var m map[string]string
		if err := json.Unmarshal(body, &m); err != nil {
			t.Errorf("publish hook body %q: %v", body, err)
		}
		if !hooktest.Verify(secret, body, r.Header.Get("X-Xroom-Signature")) {
			t.Errorf("publish hook request with a bad signature")
		}
		a.mu.Lock()
		a.seen = append(a.seen, m)
		a.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch text := m["message"]; {
		case strings.HasPrefix(text, "rewrite"):
			_, _ = io.WriteString(w, `{"message": "`+strings.ToUpper(text)+`"}`)
		case text == "swear":
			w.WriteHeader(http.StatusForbidden)
			_, _ = io.WriteString(w, `{"error": {"code": "moderated", "message": "be nice"}}`)
		case text == "odd refusal":
			w.WriteHeader(http.StatusForbidden)
			_, _ = io.WriteString(w, `{"error": {"code": "not a code!"}}`)
		case text == "slow":
			time.Sleep(300 * time.Millisecond)
			_, _ = io.WriteString(w, `{"message": "too late"}`)
		case text == "boom":
			w.WriteHeader(http.StatusBadGateway)
		case text == "garbled":
			_, _ = io.WriteString(w, `not json`)
		case text == "silent":
			w.WriteHeader(http.StatusNoContent)
		default:
			_, _ = io.WriteString(w, `{"message": "`+text+`"}`)
		}
	}))
	t.Cleanup(a.srv.Close)
	return a
}

// The hook stores, rewrites or refuses a message; when it fails (a
// timeout, a 5xx, an answer it cannot read) PUBLISH_HOOK_ON_ERROR decides.
func TestPublishHook(t *testing.T) {
	app := newPublishApp(t)
	for _, onError := range []hooks.OnError{hooks.Refuse, hooks.Allow} {
		reg := prometheus.NewRegistry()
		hook := hooks.NewPublishHook(hooks.PublishOptions{URL: app.srv.URL, Secret: secret, Timeout: 100 * time.Millisecond,
			OnError: onError, Logger: testkit.Quiet()})
		reg.MustRegister(hook.Collectors()...)
		for _, tc := range []struct {
			text, want, code string // code: a refusal's; "failed": the hook failed
		}{
			{text: "hello", want: "hello"},
			{text: "rewrite me", want: "REWRITE ME"},
			{text: "silent", want: "silent"},
			{text: "swear", code: "moderated"},
			{text: "odd refusal", code: "refused"},
			{text: "slow", code: "failed"},
			{text: "boom", code: "failed"},
			{text: "garbled", code: "failed"},
		} {
			got, err := hook.Check(ctx10(t), "lobby", "alice", tc.text, "c-1")
			var refusal *hooks.Refusal
			switch {
			case tc.code == "failed" && onError == hooks.Allow:
				if err != nil || got != tc.text {
					t.Errorf("allow: %q: got %q, %v; want it stored as sent", tc.text, got, err)
				}
			case tc.code == "failed":
				if !errors.Is(err, hooks.ErrHookFailed) || errors.As(err, &refusal) {
					t.Errorf("refuse: %q: got %q, %v; want ErrHookFailed", tc.text, got, err)
				}
			case tc.code != "":
				if !errors.As(err, &refusal) || refusal.Code != tc.code || refusal.Message == "" {
					t.Errorf("%q: got %q, %v; want refused with %s", tc.text, got, err, tc.code)
				}
				if code, msg := refusal.Refusal(); tc.code == "moderated" && (code != "moderated" || msg != "be nice") {
					t.Errorf("Refusal() = %q, %q", code, msg)
				}
			default:
				if err != nil || got != tc.want {
					t.Errorf("%q: got %q, %v; want %q", tc.text, got, err, tc.want)
				}
			}
		}
		failedAs := "failed_refused"
		if onError == hooks.Allow {
			failedAs = "failed_allowed"
		}
		for outcome, want := range map[string]float64{"stored": 2, "rewritten": 1, "refused": 2, failedAs: 3} {
			if got := labelled(t, reg, "xroom_publish_hook_total", outcome); got != want {
				t.Errorf("on error %v: xroom_publish_hook_total{outcome=%q} = %v, want %v", onError, outcome, got, want)
			}
		}
	}
	app.mu.Lock()
	defer app.mu.Unlock()
	if m := app.seen[0]; m["room"] != "lobby" || m["user"] != "alice" || m["message"] != "hello" || m["client_id"] != "c-1" {
		t.Errorf("the hook got %v", m)
	}
}

func TestParseOnError(t *testing.T) {
	if v, err := hooks.ParseOnError("allow"); err != nil || v != hooks.Allow {
		t.Errorf("allow: %v, %v", v, err)
	}
	if v, err := hooks.ParseOnError("refuse"); err != nil || v != hooks.Refuse {
		t.Errorf("refuse: %v, %v", v, err)
	}
	if _, err := hooks.ParseOnError("ignore"); err == nil {
		t.Error("ignore: no error")
	}
}

// labelled is the value of reg's counter name with outcome=label.
func labelled(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == label {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
