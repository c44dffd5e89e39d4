package streams_test

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/streams"
)

// An entry the tail never read can be lost in a failover while its sender
// holds the ack. Here a subscriber acknowledges an ID that Redis does not
// have (as if the old primary had stored it and died): the tail read that
// passes it tells that subscriber, before the entries after it.
func TestAckedEntryLostUnreadIsTold(t *testing.T) {
	h := newHubEnv(t, streams.HubOptions{})
	sender, other := h.subscribe("owed"), h.subscribe("owed")
	first, _ := h.add("owed", streams.Message{User: "a", Text: "kept"})
	sender.readUntil(first, 10)
	other.readUntil(first, 10)

	lost := streams.ID{Ms: first.Ms + 10}
	sender.sub.Acked(lost)
	after := xaddAt(t, h.env, "owed", streams.ID{Ms: first.Ms + 20}, "after")

	// The sender is told before it gets the entry after the lost one.
	// The handlers write the rollback before the entries of the same Next.
	last, got := nextRollback(t, sender)
	if last != first {
		t.Fatalf("RolledBack = %v, want the newest entry kept before the lost one, %v", last, first)
	}
	if ids := sender.ids(); len(ids) != 1 {
		t.Fatalf("sender got %v before the rollback was reported, want only %v", ids, first)
	}
	sender.got = append(sender.got, got...)
	if len(got) > 0 {
		sender.cursor = got[len(got)-1].ID
	}
	sender.readUntil(after, 10)
	if ids := sender.ids(); len(ids) != 2 || ids[1] != after {
		t.Fatalf("sender got %v, want %v then %v", ids, first, after)
	}
	// Nobody else acknowledged it: the other subscriber is not told.
	other.readUntil(after, 10)
	if _, ok := other.sub.RolledBack(); ok {
		t.Fatal("a subscriber that did not acknowledge the lost entry was told")
	}
	wantLostAcked(t, h, 1)
}

// Entries acknowledged and then read, before or after the ack came back,
// and entries trimmed away before the tail read them, are not lost.
func TestAckedEntriesFoundOrTrimmedAreNotTold(t *testing.T) {
	h := newHubEnv(t, streams.HubOptions{})
	s := h.subscribe("paid")
	read, _ := h.add("paid", streams.Message{User: "a", Text: "read first"})
	s.readUntil(read, 10)
	s.sub.Acked(read) // the tail read it before the ack came back

	unread := streams.ID{Ms: read.Ms + 10}
	s.sub.Acked(unread) // the ack came back first
	xaddAt(t, h.env, "paid", unread, "unread")
	s.readUntil(unread, 10)

	trimmed := streams.ID{Ms: read.Ms + 20}
	s.sub.Acked(trimmed)
	// XADD with MAXLEN 1 trims everything before it, trimmed's slot included.
	last := streams.ID{Ms: read.Ms + 30}
	if err := h.rdb.XAdd(ctx10(t), &redis.XAddArgs{Stream: h.key("paid"), ID: last.String(), MaxLen: 1, Values: []any{"user", "a", "message", "last"}}).Err(); err != nil {
		t.Fatal(err)
	}
	s.readUntil(last, 10)
	if to, ok := s.sub.RolledBack(); ok {
		t.Fatalf("RolledBack = %v, want nothing: every acknowledged entry was read or trimmed", to)
	}
	wantLostAcked(t, h, 0)
}

// In a quiet room no read would pass a lost entry: the check after a
// primary change finds acknowledged entries newer than the newest there.
func TestAckedEntryLostInQuietRoomIsToldAfterPrimaryChange(t *testing.T) {
	h := newHubEnv(t, streams.HubOptions{})
	s := h.subscribe("quiet")
	first, _ := h.add("quiet", streams.Message{User: "a", Text: "kept"})
	s.readUntil(first, 10)
	s.sub.Acked(streams.ID{Ms: first.Ms + 10})
	h.hub.SuspectAll()
	if last, _ := nextRollback(t, s); last != first {
		t.Fatalf("RolledBack = %v, want %v", last, first)
	}
}

// xaddAt appends an entry with the given ID, as another primary might have.
func xaddAt(t *testing.T, e *env, room string, id streams.ID, text string) streams.ID {
	t.Helper()
	if err := e.rdb.XAdd(ctx10(t), &redis.XAddArgs{Stream: e.key(room), ID: id.String(), Values: []any{"user", "a", "message", text}}).Err(); err != nil {
		t.Fatal(err)
	}
	return id
}

// nextRollback calls Next until RolledBack reports, and returns what it
// reported and what that Next returned.
func nextRollback(t *testing.T, s *subscriber) (streams.ID, []*streams.Entry) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		es, next, err := s.sub.Next(ctx10(t), s.cursor, make([]*streams.Entry, 0, 10))
		if err != nil {
			t.Fatal(err)
		}
		if last, ok := s.sub.RolledBack(); ok {
			return last, es
		}
		s.got, s.cursor = append(s.got, es...), next
		if len(es) == 0 {
			select {
			case <-s.notes:
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	t.Fatal("no rollback reported within 10 s")
	return streams.ID{}, nil
}

// wantLostAcked checks the hub's count of acknowledged entries lost.
func wantLostAcked(t *testing.T, h *hubEnv, want int64) {
	t.Helper()
	if n := h.hub.Stats().LostAcked.Load(); n != want {
		t.Fatalf("LostAcked = %d, want %d", n, want)
	}
}
