// Package testkit holds what the tests of several packages share: the
// frame a server sends as tests read it, the unread counts the API
// answers, a WebSocket dialer, a log destination tests read while servers
// write to it, and waiting for a condition. Only tests import it; Redis
// key names come from streams.Keys.
package testkit

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// Frame is any server frame (docs/protocol.md), with every field a test
// looks at; a field a frame does not carry stays zero.
type Frame struct {
	Type      string `json:"type"`
	ID        string `json:"id"`
	Room      string `json:"room"`
	User      string `json:"user"`
	Message   string `json:"message"`
	TS        int64  `json:"ts"`
	ClientID  string `json:"client_id"`
	LastID    string `json:"last_id"`
	Epoch     string `json:"epoch"`
	Reason    string `json:"reason"`
	OldestID  string `json:"oldest_id"`
	Code      string `json:"code"`
	Duplicate bool   `json:"duplicate"`
}

// Unread is the answer of GET /api/users/{user}/unread.
type Unread struct {
	Rooms []struct {
		Room     string `json:"room"`
		Unread   int    `json:"unread"`
		More     bool   `json:"more"`
		LastRead string `json:"last_read"`
		LastID   string `json:"last_id"`
	} `json:"rooms"`
}

// String lists the rooms as room:count, with a + where there are more.
func (u Unread) String() string {
	var b strings.Builder
	for _, r := range u.Rooms {
		fmt.Fprintf(&b, "%s:%d", r.Room, r.Unread)
		if r.More {
			b.WriteString("+")
		}
		b.WriteString(" ")
	}
	return strings.TrimSpace(b.String())
}

// SyncBuffer is an io.Writer a server's goroutines write (a log) while
// the test reads it.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Eventually polls cond until it holds, and fails the test when it does
// not within d.
func Eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Quiet is a logger that writes nothing.
func Quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
