package streams_test

import (
	"testing"
	"time"

	"github.com/xroom/xroom/streams"
)

// behind returns a subscriber of a hub with a 4-entry buffer, whose room
// holds 30 entries that the tail has read: a cursor at one of the first
// ones is behind the buffer and catches up from Redis.
func behind(t *testing.T) (*hubEnv, *subscriber, []streams.ID) {
	h := newHubEnv(t, streams.HubOptions{Buffer: 4, Block: 200 * time.Millisecond})
	s := h.subscribe("lobby")
	ids := h.addN("lobby", "ana", 30)
	s.waitHead(ids[29])
	return h, s, ids
}

// next calls Next once from cursor with a dst of capacity max.
func (s *subscriber) next(cursor streams.ID, max int) []*streams.Entry {
	s.t.Helper()
	es, _, err := s.sub.Next(ctx10(s.t), cursor, make([]*streams.Entry, 0, max))
	if err != nil {
		s.t.Fatalf("Next(%v): %v", cursor, err)
	}
	return es
}

func TestHubCatchUpReportsTrimmedGap(t *testing.T) {
	h, s, ids := behind(t)
	page := s.next(ids[2], 5)
	if len(page) != 5 || page[0].ID != ids[3] {
		t.Fatalf("first page = %d entries from %v, want 5 from %v", len(page), page[0].ID, ids[3])
	}
	if oldest, ok := s.sub.Gap(); ok {
		t.Fatalf("Gap after an untrimmed read = %v, want none", oldest)
	}
	// The subscriber is behind when the room is trimmed: ids[8..19] go.
	if err := h.rdb.XTrimMaxLen(ctx10(t), h.key("lobby"), 10).Err(); err != nil {
		t.Fatal(err)
	}
	page = s.next(ids[7], 100)
	oldest, ok := s.sub.Gap()
	if !ok || oldest != ids[20] {
		t.Fatalf("Gap after reading past trimmed entries = %v %v, want %v true", oldest, ok, ids[20])
	}
	if len(page) == 0 || page[0].ID != ids[20] {
		t.Fatalf("page after the gap starts at %v, want %v", page, ids[20])
	}
	if _, ok := s.sub.Gap(); ok {
		t.Fatal("Gap reported twice for one read")
	}
	if n := h.hub.Stats().Gaps.Load(); n != 1 {
		t.Fatalf("Stats().Gaps = %d, want 1", n)
	}
	// From the buffer: no Redis read, no gap.
	s.next(ids[27], 10)
	if _, ok := s.sub.Gap(); ok {
		t.Fatal("Gap on a read served from memory")
	}
}

func TestHubCatchUpWithoutTrimmingHasNoGap(t *testing.T) {
	h, s, ids := behind(t)
	for cursor := ids[0]; cursor.Less(ids[25]); {
		page := s.next(cursor, 5)
		if _, ok := s.sub.Gap(); ok {
			t.Fatalf("Gap reading from %v of an untrimmed room", cursor)
		}
		cursor = page[len(page)-1].ID
	}
	if h.hub.Stats().CatchUps.Load() == 0 {
		t.Fatal("the reads did not catch up from Redis")
	}
}

func TestHubCatchUpGapCheckedIsNotReportedAgain(t *testing.T) {
	h, s, ids := behind(t)
	if err := h.rdb.XTrimMaxLen(ctx10(t), h.key("lobby"), 10).Err(); err != nil {
		t.Fatal(err)
	}
	seen, err := h.store.History(ctx10(t), "lobby")
	if err != nil {
		t.Fatal(err)
	}
	s.sub.GapChecked(ids[2], &seen) // a join announced it already
	s.next(ids[2], 5)
	if oldest, ok := s.sub.Gap(); ok {
		t.Fatalf("Gap from the checked cursor = %v", oldest)
	}
	s.sub.GapChecked(ids[2], nil) // a replay from the oldest entry
	s.next(ids[2], 5)
	if oldest, ok := s.sub.Gap(); ok {
		t.Fatalf("Gap from a cursor checked without history = %v", oldest)
	}
	s.next(ids[1], 5) // any other cursor is checked
	if oldest, ok := s.sub.Gap(); !ok || oldest != ids[20] {
		t.Fatalf("Gap from another cursor = %v %v, want %v", oldest, ok, ids[20])
	}
}

// Entries trimmed between a join's own check and its first read from Redis
// are announced.
func TestHubCatchUpTrimmedAfterGapCheckIsReported(t *testing.T) {
	h, s, ids := behind(t)
	seen, err := h.store.History(ctx10(t), "lobby")
	if err != nil {
		t.Fatal(err)
	}
	s.sub.GapChecked(ids[2], &seen) // nothing missing then
	if err := h.rdb.XTrimMaxLen(ctx10(t), h.key("lobby"), 10).Err(); err != nil {
		t.Fatal(err)
	}
	page := s.next(ids[2], 5)
	if oldest, ok := s.sub.Gap(); !ok || oldest != ids[20] || page[0].ID != ids[20] {
		t.Fatalf("Gap = %v %v, page from %v; want %v true, page from it", oldest, ok, page[0].ID, ids[20])
	}
}
