package handlers_test

import (
	"io"
	"io/fs"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/xroom/xroom/static"
)

func TestSecurityHeadersOnPageScriptsAndAPI(t *testing.T) {
	ts := startServer(t, func(o *options) { o.cfg.Static = static.Files })
	host := strings.TrimPrefix(ts.base, "http://")
	for _, path := range []string{"/", "/app.js", "/style.css", "/api/rooms", "/api/rooms/lobby/messages", "/api/nope", "/api/rooms/bad%20room/messages", "/healthz"} {
		resp, err := http.Get(ts.base + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		h := resp.Header
		csp := h.Get("Content-Security-Policy")
		for _, directive := range []string{
			"default-src 'self'", "script-src 'self'", "style-src 'self'", "object-src 'none'",
			"base-uri 'none'", "frame-ancestors 'none'",
			"connect-src 'self' ws://" + host + " wss://" + host,
		} {
			if !strings.Contains(csp, directive) {
				t.Errorf("%s: CSP %q lacks %q", path, csp, directive)
			}
		}
		if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
			t.Errorf("%s: CSP allows inline code: %q", path, csp)
		}
		for name, want := range map[string]string{
			"X-Content-Type-Options": "nosniff",
			"Referrer-Policy":        "no-referrer",
			"X-Frame-Options":        "DENY",
		} {
			if got := h.Get(name); got != want {
				t.Errorf("%s: %s %q, want %q", path, name, got, want)
			}
		}
	}
	// The refusal of a WebSocket handshake carries them too.
	c, err := ts.tryDial("lobby", "since=bad", true, nil)
	if err == nil || c == nil || c.resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("handshake refusal: %v", err)
	}
}

func TestForgedHostCannotInjectIntoThePolicy(t *testing.T) {
	ts := startServer(t)
	req, _ := http.NewRequest("GET", ts.base+"/healthz", nil)
	req.Host = "evil.example;script-src"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	csp := resp.Header.Get("Content-Security-Policy")
	if strings.Contains(csp, "evil") || strings.Count(csp, "script-src") != 1 {
		t.Fatalf("CSP %q", csp)
	}
}

// The page must work under the policy: no inline script, no inline event
// handlers, no style attributes, no javascript: URLs, nothing from elsewhere.
func TestStaticClientNeedsNoInlineCode(t *testing.T) {
	inline := []*regexp.Regexp{
		regexp.MustCompile(`(?is)<script\b[^>]*>\s*[^<\s]`),          // a script with a body
		regexp.MustCompile(`(?i)\son[a-z]+\s*=`),                     // onclick= and friends
		regexp.MustCompile(`(?i)\sstyle\s*=`),                        // style attributes
		regexp.MustCompile(`(?i)<style\b`),                           // style elements
		regexp.MustCompile(`(?i)javascript:`),                        // javascript: URLs
		regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//`), // other origins
	}
	err := fs.WalkDir(static.Files, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(static.Files, path)
		if err != nil {
			return err
		}
		text := string(data)
		switch {
		case strings.HasSuffix(path, ".html"):
			for _, tag := range regexp.MustCompile(`(?i)<script\b[^>]*>`).FindAllString(text, -1) {
				if !strings.Contains(tag, "src=") {
					t.Errorf("%s: inline script %s", path, tag)
				}
			}
			for _, re := range inline {
				if m := re.FindString(text); m != "" {
					t.Errorf("%s: %q needs 'unsafe-inline' or another origin", path, m)
				}
			}
		case strings.HasSuffix(path, ".js") && !strings.HasSuffix(path, ".test.js"):
			for _, bad := range []string{"eval(", "new Function(", `setAttribute("style"`, "setAttribute('style'", ".cssText", ".innerHTML =", ".outerHTML ="} {
				if strings.Contains(text, bad) {
					t.Errorf("%s uses %s, which the policy forbids or which risks script injection", path, bad)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// An accepted WebSocket upgrade carries none of the page headers: they mean
// nothing on a 101, and the server would keep them for the connection's life.
func TestUpgradeResponseCarriesNoPageHeaders(t *testing.T) {
	ts := startServer(t)
	c := ts.dial("lobby", "", true)
	if c.resp.StatusCode != 101 {
		t.Fatalf("status %d", c.resp.StatusCode)
	}
	for _, h := range []string{"Content-Security-Policy", "X-Frame-Options", "Referrer-Policy"} {
		if v := c.resp.Header.Get(h); v != "" {
			t.Errorf("101 carries %s: %q", h, v)
		}
	}
}
