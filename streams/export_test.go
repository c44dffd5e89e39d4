package streams

import "context"

// Crash stops the heartbeat without removing anything from Redis, as a
// crashed instance would (tests only).
func (p *Presence) Crash() {
	p.mu.Lock()
	p.closed = true
	p.rooms = map[string]map[string]struct{}{}
	p.mu.Unlock()
	close(p.stop)
	<-p.done
}

// EventBuffer is how many events a tailed room keeps (tests only).
const EventBuffer = eventBuffer

// WithNotifyFlags is withNotifyFlags, for tests.
var WithNotifyFlags = withNotifyFlags

// SuspectAll is suspectAll, for tests: as if the primary had changed.
func (h *Hub) SuspectAll() { h.suspectAll() }

// Gap reports, for tests, whether entries after since were trimmed or
// deleted (History.Trimmed, the rule a plan's gaps follow), and the oldest
// retained ID (Zero when the room is empty).
func (s *Store) Gap(ctx context.Context, room string, since ID) (gap bool, oldest ID, err error) {
	h, err := s.History(ctx, room)
	return err == nil && h.Trimmed(since), h.Oldest, err
}

// GapChecked is gapChecked, for tests.
func (s *Subscription) GapChecked(at ID, seen *History) { s.gapChecked(at, seen) }
