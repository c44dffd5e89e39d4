package handlers_test

import (
	"fmt"
	"testing"
)

func TestTwoClientsGetEveryMessageOnceInOrder(t *testing.T) {
	ts := startServer(t)
	a := ts.dial("lobby", "user=alice", true)
	b := ts.dial("lobby", "user=bob", true)
	a.expect("ready")
	b.expect("ready")
	const n = 50
	for i := range n {
		sender := a
		if i%2 == 1 {
			sender = b
		}
		sender.send(map[string]string{"message": fmt.Sprintf("hello %d", i)})
	}
	ga, gb := a.messages(n), b.messages(n)
	if !equal(ids(ga), ids(gb)) {
		t.Fatalf("clients saw different IDs:\n%v\n%v", ids(ga), ids(gb))
	}
	seen := map[string]bool{}
	for i, f := range ga {
		if seen[f.Message] {
			t.Fatalf("message %q twice", f.Message)
		}
		seen[f.Message] = true
		if f.Room != "lobby" || f.TS == 0 || f.ID == "" {
			t.Fatalf("frame %d incomplete: %+v", i, f)
		}
		if i > 0 && !idLess(ga[i-1].ID, f.ID) {
			t.Fatalf("out of order: %s then %s", ga[i-1].ID, f.ID)
		}
		wantUser := "alice"
		if f.Message[len("hello "):] != "" && seen[f.Message] {
			_ = wantUser
		}
	}
	if len(seen) != n {
		t.Fatalf("got %d distinct messages, want %d", len(seen), n)
	}
}
