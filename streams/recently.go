package streams

import (
	"sync"
	"time"
)

const (
	// roomTouchEvery is how often appends move a room's score in the rooms
	// list again: once per room per period, not once per message (at one
	// message per room per second that ZADD was a sixth of an append's
	// Redis commands). The list orders rooms by it; a room's
	// last_activity comes from its newest entry's ID, exact either way.
	roomTouchEvery = 10 * time.Second
	// writerRefresh is how often an appending (user, room) pair is written
	// to the user's room index again: once is what matters (the index
	// only says which rooms to look at), the refresh keeps the score, and
	// so the order rooms drop out beyond maxUserRooms, roughly current.
	writerRefresh = time.Minute
	// maxRecent bounds the keys a recently remembers between refreshes;
	// when full it starts over (a few extra writes, never a missed one).
	maxRecent = 1 << 16
)

// recently remembers which keys had an advisory write lately, so that the
// write is made once per key per period rather than once per message.
// Forgetting costs one repeated write, never a missed one.
type recently[K comparable] struct {
	every time.Duration
	mu    sync.Mutex
	seen  map[K]time.Time
}

// due reports whether k is to be written now, and notes it.
func (r *recently[K]) due(k K, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if at, ok := r.seen[k]; ok && now.Sub(at) < r.every {
		return false
	}
	if r.seen == nil || len(r.seen) >= maxRecent {
		r.seen = make(map[K]time.Time)
	}
	r.seen[k] = now
	return true
}

// forget drops k, so that its next write is made at once.
func (r *recently[K]) forget(k K) {
	r.mu.Lock()
	delete(r.seen, k)
	r.mu.Unlock()
}
