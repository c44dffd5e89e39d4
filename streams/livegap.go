package streams

// Gaps found after the join: a catch-up read (a connection behind the
// room's buffer reading on from Redis) that skipped entries trimmed or
// deleted before it could read them. The join's own gap is the plan's
// (resume.go).

import "context"

// catchUpGap is what a subscription knows about gaps in its catch-up
// reads. Like the cursor, it belongs to whoever calls Next (one goroutine
// at a time).
type catchUpGap struct {
	found   bool
	oldest  ID
	checked ID // a catch-up read from here is judged against seen (gapChecked)
	settled bool
	seen    *History
}

// gapChecked tells the subscription that the caller has already dealt
// with what may be missing after at (a join's own gap check), so that one
// gap is not announced twice. seen is the History the caller judged by: a
// catch-up read from at reports a gap only if entries were removed since
// (trimming between the caller's look and the read). A nil seen means
// nothing before at can be missing (a replay from the oldest entry).
func (s *Subscription) gapChecked(at ID, seen *History) {
	s.gap.checked, s.gap.settled, s.gap.seen = at, true, seen
}

// Gap reports, once, whether the last Next skipped entries that were
// trimmed or deleted from Redis before they could be read, and the oldest
// entry retained then. The entries Next returned come after the gap.
func (s *Subscription) Gap() (oldest ID, ok bool) {
	g := &s.gap
	oldest, ok = g.oldest, g.found
	g.found, g.oldest = false, Zero
	return oldest, ok
}

// checkGap decides, for a catch-up read from cursor that returned es,
// whether entries after cursor were lost, by the rule of History.Trimmed. It
// costs one XINFO per catch-up read (a page of up to cap(dst) entries),
// never on reads served from memory.
func (s *Subscription) checkGap(ctx context.Context, cursor ID, es []Entry) error {
	checked := s.gap.settled && s.gap.checked == cursor
	if checked && s.gap.seen == nil {
		return nil
	}
	h, err := s.hub.store.History(ctx, s.room.name)
	if err != nil {
		return err
	}
	if !h.Trimmed(cursor) || checked && h.sameRemovals(s.gap.seen) {
		return nil
	}
	s.gap.found, s.gap.oldest = true, h.Oldest
	if len(es) > 0 && (h.Oldest.IsZero() || es[0].ID.Less(h.Oldest)) {
		s.gap.oldest = es[0].ID // trimmed further since the read: name what comes next
	}
	s.hub.stats.Gaps.Add(1)
	return nil
}
