package streams

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// roomTouchEvery is how often appends move a room's score in the rooms
	// list again: once per room per period, not once per message (at one
	// message per room per second that ZADD was a sixth of an append's
	// Redis commands). The list orders rooms by it; a room's
	// last_activity comes from its newest entry's ID, exact either way.
	roomTouchEvery = 10 * time.Second
	// roomsFlushEvery is how often the rooms list is written: one ZADD for
	// every room due since, however many (one per message cost a command
	// per message when rooms are many and each quiet).
	roomsFlushEvery = time.Second
	// roomsFlushTimeout bounds one write of the rooms list.
	roomsFlushTimeout = 5 * time.Second
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

// roomsDue are the rooms to write to the rooms list with their times, in
// one ZADD at most roomsFlushEvery after the first of them came.
type roomsDue struct {
	mu    sync.Mutex
	rooms map[string]time.Time
	armed bool
}

// add notes room, and arms the flush when it is the first.
func (d *roomsDue) add(s *Store, room string, at time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.rooms == nil {
		d.rooms = map[string]time.Time{}
	}
	d.rooms[room] = at
	if !d.armed {
		d.armed = true
		time.AfterFunc(roomsFlushEvery, func() {
			ctx, cancel := context.WithTimeout(context.Background(), roomsFlushTimeout)
			defer cancel()
			s.flushRooms(ctx)
		})
	}
}

// take returns the rooms due and forgets them.
func (d *roomsDue) take() map[string]time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	rooms := d.rooms
	d.rooms, d.armed = nil, false
	return rooms
}

// flushRooms writes the rooms due to the rooms list. Advisory: when it
// fails, each room is written again with its next message.
func (s *Store) flushRooms(ctx context.Context) {
	rooms := s.roomsDue.take()
	if len(rooms) == 0 {
		return
	}
	members := make([]redis.Z, 0, len(rooms))
	for r, at := range rooms {
		members = append(members, redis.Z{Score: float64(at.UnixMilli()), Member: r})
	}
	if err := s.rdb.ZAdd(ctx, s.keys.Rooms(), members...).Err(); err != nil {
		for r := range rooms {
			s.touched.forget(r)
		}
	}
}
