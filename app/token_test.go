package main

import (
	"bytes"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/internal/testkit"
)

const devSecret = "dev-secret-for-tests-0123456789abcdef"

// parseDev checks a printed token against devSecret and returns its claims.
func parseDev(t *testing.T, out string) jwt.MapClaims {
	t.Helper()
	claims := jwt.MapClaims{}
	tok := strings.TrimSpace(out)
	if _, err := jwt.ParseWithClaims(tok, claims, func(*jwt.Token) (any, error) { return []byte(devSecret), nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired()); err != nil {
		t.Fatalf("token %q: %v", tok, err)
	}
	return claims
}

func TestTokenCommand(t *testing.T) {
	env := map[string]string{"ENV_FILE": filepath.Join(t.TempDir(), "none.env"), "AUTH_SECRET": devSecret}
	var out, errOut bytes.Buffer
	if code := tokenCommand([]string{"-sub", "alice", "-rooms", "lobby, team-*", "-ttl", "2h"}, envMap(env), &out, &errOut); code != 1 {
		// ENV_FILE names a missing file: that is an error, as for the server.
		t.Fatalf("missing ENV_FILE: exit %d, %s", code, errOut.String())
	}
	delete(env, "ENV_FILE")
	out.Reset()
	errOut.Reset()
	if code := tokenCommand([]string{"-sub", "alice", "-rooms", "lobby, team-*", "-ttl", "2h"}, envMap(env), &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	claims := parseDev(t, out.String())
	if claims["sub"] != "alice" {
		t.Errorf("sub %v", claims["sub"])
	}
	if rooms, _ := claims["rooms"].([]any); len(rooms) != 2 || rooms[0] != "lobby" || rooms[1] != "team-*" {
		t.Errorf("rooms %v", claims["rooms"])
	}
	exp, _ := claims.GetExpirationTime()
	if d := time.Until(exp.Time); d < 119*time.Minute || d > 121*time.Minute {
		t.Errorf("expires in %v, want 2h", d)
	}

	// Without -rooms: no rooms claim, so every room.
	out.Reset()
	if code := tokenCommand([]string{"-sub", "bob"}, envMap(env), &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if c := parseDev(t, out.String()); c["rooms"] != nil {
		t.Errorf("rooms %v, want none", c["rooms"])
	}

	// AUTH_SECRET from a .env file.
	dotenv := filepath.Join(t.TempDir(), "x.env")
	if err := os.WriteFile(dotenv, []byte("AUTH_SECRET="+devSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if code := tokenCommand([]string{"-sub", "carol"}, envMap(map[string]string{"ENV_FILE": dotenv}), &out, &errOut); code != 0 {
		t.Fatalf(".env: exit %d: %s", code, errOut.String())
	}
	parseDev(t, out.String())

	for _, tc := range []struct {
		args []string
		env  map[string]string
		code int
		says string
	}{
		{[]string{"-rooms", "lobby"}, env, 1, "-sub is required"},
		{[]string{"-sub", "a\tb"}, env, 1, "printable"},
		{[]string{"-sub", "alice", "-ttl", "0s"}, env, 1, "-ttl"},
		{[]string{"-sub", "alice", "-ttl", "9000h"}, env, 1, "-ttl"},
		{[]string{"-sub", "alice", "-rooms", "[x"}, env, 1, "malformed"},
		{[]string{"-sub", "alice", "extra"}, env, 1, "unexpected"},
		{[]string{"-sub", "alice"}, map[string]string{}, 1, "AUTH_SECRET is not set"},
		{[]string{"-sub", "alice"}, map[string]string{"AUTH_SECRET": "short-secret-xyz"}, 1, "AUTH_SECRET"},
		{[]string{"-bogus"}, env, 2, "usage"},
	} {
		out.Reset()
		errOut.Reset()
		tc.env["ENV_FILE"] = filepath.Join(t.TempDir(), "empty.env")
		_ = os.WriteFile(tc.env["ENV_FILE"], nil, 0o600)
		code := tokenCommand(tc.args, envMap(tc.env), &out, &errOut)
		if code != tc.code || !strings.Contains(errOut.String(), tc.says) || out.Len() != 0 {
			t.Errorf("%v: exit %d, stderr %q, stdout %q; want exit %d saying %q", tc.args, code, errOut.String(), out.String(), tc.code, tc.says)
		}
		if strings.Contains(errOut.String(), "short-secret-xyz") {
			t.Errorf("%v: stderr shows the secret", tc.args)
		}
		delete(tc.env, "ENV_FILE")
	}
}

// The binary's subcommand mints a token that the server, started with the
// same AUTH_SECRET, accepts; the server refuses connections without one and
// never logs a token.
func TestRunWithAuthAcceptsMintedTokens(t *testing.T) {
	bin := xroomBinary(t)
	cmd := exec.Command(bin, "token", "-sub", "alice", "-rooms", "lobby")
	cmd.Dir = t.TempDir()
	cmd.Env = []string{"AUTH_SECRET=" + devSecret}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	raw, err := cmd.Output()
	if err != nil {
		t.Fatalf("xroom token: %v: %s", err, stderr.String())
	}
	tok := strings.TrimSpace(string(raw))
	parseDev(t, tok)

	srv := redistest.Shared(t)
	r := startRun(t, baseEnv(t, map[string]string{"REDIS_URL": srv.URL(), "CHAT_PREFIX": redistest.Prefix(t), "AUTH_SECRET": devSecret, "LOG_LEVEL": "debug"}))
	for _, c := range []struct{ room, query string }{{"lobby", ""}, {"lobby", "token=" + tok[:len(tok)-3] + "abc"}, {"other", "token=" + tok}} {
		_, resp, err := testkit.DialChat(r.base, c.room, c.query, true, nil)
		if err == nil || resp == nil || (resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusForbidden) {
			t.Fatalf("%s?%s: %v, want 401 or 403", c.room, c.query, err)
		}
	}
	c := dial(t, r.base, "lobby", "alice&token="+tok)
	c.expect("ready")
	if _, msg := c.sendAcked("signed in", "c1"); msg.User != "alice" {
		t.Fatalf("stored as %q, want alice", msg.User)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	for _, part := range strings.Split(tok, ".") {
		if strings.Contains(r.out.String(), part) {
			t.Fatalf("the server log holds part of the token:\n%s", r.out.String())
		}
	}
	if strings.Contains(r.out.String(), devSecret) {
		t.Fatal("the server log holds the secret")
	}
}

// withoutRateLimits turns the default message rate limits off unless env
// sets them: tests that send as fast as they can are not testing limits
// (handlers' tests do, and TestRunAppliesDefaultRateLimits checks the default).
func withoutRateLimits(env map[string]string) map[string]string {
	out := map[string]string{"RATE_LIMIT": "0", "USER_RATE_LIMIT": "0"}
	for k, v := range env {
		out[k] = v
	}
	return out
}
