package streams

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
