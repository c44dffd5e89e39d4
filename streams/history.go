package streams

// Where a room's stream stands (one XINFO STREAM), and the rules that
// judge a position against it: at a join (resume.go) and on a catch-up
// read (livegap.go).

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// History is where a room's stream stands, from one XINFO STREAM: what
// deciding on a gap needs.
type History struct {
	// Oldest is the oldest retained entry; Zero when the room is empty.
	Oldest ID
	// Last is the newest ID the stream has handed out (last-generated-id),
	// deleted or not; Zero when the stream does not exist. An ID after it
	// was never handed out by this stream: it comes from an earlier life of
	// the room (deleted, flushed, lost in a failover) or from nowhere.
	Last    ID
	hasLast bool
	// neverRemoved: Redis 7 counts every entry added; when that equals the
	// length, nothing was ever trimmed or deleted.
	neverRemoved bool
	maxDeleted   ID // Redis 7 max-deleted-entry-id (XDEL; trimming leaves it)
}

// History reads where the room's stream stands.
func (s *Store) History(ctx context.Context, room string) (History, error) {
	info, err := s.rdb.XInfoStream(ctx, s.keys.Messages(room)).Result()
	if err != nil {
		if strings.Contains(err.Error(), "no such key") || errors.Is(err, redis.Nil) {
			return History{hasLast: true, neverRemoved: true}, nil
		}
		return History{}, fmt.Errorf("stream info of %s: %w", room, err)
	}
	var h History
	if info.FirstEntry.ID != "" {
		h.Oldest, _ = ParseID(info.FirstEntry.ID)
	} else if info.Length > 0 {
		// Servers whose XINFO lacks first-entry (the embedded one).
		first, err := s.Range(ctx, room, Zero, 1)
		if err != nil {
			return History{}, err
		}
		if len(first) > 0 {
			h.Oldest = first[0].ID
		}
	}
	if last, err := ParseID(info.LastGeneratedID); err == nil {
		h.Last, h.hasLast = last, true
	}
	h.neverRemoved = info.EntriesAdded > 0 && info.EntriesAdded == info.Length
	h.maxDeleted, _ = ParseID(info.MaxDeletedEntryID) // Zero when absent
	if h.maxDeleted == noDeletion {
		h.maxDeleted = Zero
	}
	return h, nil
}

// noDeletion is the max-deleted-entry-id a resend's XADD, taken back,
// leaves in a stream that had no deletion (appendDedupMany): XSETID cannot
// set it back to 0-0. No entry xroom adds has this ID.
var noDeletion = ID{0, 1}

// Trimmed reports whether entries after since may have been trimmed or
// deleted. Trimming leaves no trace but the oldest entry: since older than
// it may have missed entries (so a gap is reported even when only since
// itself was trimmed). XDEL is tracked exactly (Redis 7
// max-deleted-entry-id): since older than a deleted entry missed it.
func (h History) Trimmed(since ID) bool {
	gap := !h.Oldest.IsZero() && since.Next().Less(h.Oldest) && !h.neverRemoved
	return gap || since.Less(h.maxDeleted)
}

// sameRemovals reports whether nothing was trimmed or deleted between o
// and h: trimming moves the oldest entry, XDEL after it the max deleted ID.
func (h History) sameRemovals(o *History) bool {
	return h.Oldest == o.Oldest && h.maxDeleted == o.maxDeleted
}

// Beyond reports whether id is newer than any ID the stream has handed
// out: a position in some other history than the room's current one.
func (h History) Beyond(id ID) bool { return h.hasLast && h.Last.Less(id) }

// Holds reports whether the room's stream holds the entry id.
func (s *Store) Holds(ctx context.Context, room string, id ID) (bool, error) {
	key := s.keys.Messages(room)
	msgs, err := s.rdb.XRangeN(ctx, key, id.String(), id.String(), 1).Result()
	if err != nil {
		return false, fmt.Errorf("look for %s in %s: %w", id, key, err)
	}
	return len(msgs) == 1, nil
}
