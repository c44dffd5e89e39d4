package handlers

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// A connection's log lines carry its room, user and address, and levels
// below the logger's are dropped.
func TestSessionLogAddsTheConnectionsAttributes(t *testing.T) {
	var out bytes.Buffer
	l := sessionLog{base: slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelInfo})), room: "lobby", user: "ana", remote: "127.0.0.1:5"}
	l.Debug("hidden")
	l.Warn("append failed", "err", "boom")
	got := out.String()
	if strings.Contains(got, "hidden") {
		t.Errorf("a debug line at info level: %q", got)
	}
	for _, want := range []string{"level=WARN", `msg="append failed"`, "room=lobby", "user=ana", "remote=127.0.0.1:5", "err=boom"} {
		if !strings.Contains(got, want) {
			t.Errorf("log line %q lacks %s", got, want)
		}
	}
	sessionLog{}.Warn("no logger: nothing happens")
}
