package streams

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Event is a presence or read event read from a room's events stream. Events are
// short-lived: a subscriber gets those that arrive while it is subscribed,
// never older ones, and one that falls behind skips what it missed.
type Event struct {
	ID   ID
	Type string // EventJoin, EventLeave, EventTyping or EventRead
	User string
	// Position and Conn are set on read events: the user's new read
	// position, and the connection that marked it ("" over HTTP).
	Position ID
	Conn     string
	// Frame is the event encoded for clients by the Hub's EventEncoder,
	// shared by every connection that sends it: never modify it.
	Frame []byte
}

// EventEncoder turns an event into the bytes sent to clients, once per event.
type EventEncoder func(room string, ev *Event) []byte

// eventBuffer is how many recent events each tailed room keeps. Events are
// ephemeral: a connection more than this far behind skips the older ones,
// so a slow connection costs no memory.
const eventBuffer = 256

// eventRing holds a room's recent events, numbered from 1 in the order the
// tail read them; a subscriber's position is the number of the last one it saw.
type eventRing struct {
	key  string
	head ID // the newest ID read from the stream; only the tail uses it

	mu  sync.RWMutex
	buf [eventBuffer]*Event
	seq uint64 // number of the newest event
}

func (r *eventRing) push(evs []*Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ev := range evs {
		r.seq++
		r.buf[r.seq%eventBuffer] = ev
	}
}

// EventSeq is the position of the room's newest event: a subscriber starting
// there gets only events that arrive later.
func (s *Subscription) EventSeq() uint64 {
	ev := &s.room.events
	ev.mu.RLock()
	defer ev.mu.RUnlock()
	return ev.seq
}

// Events appends to dst (up to its capacity) the events after position seq,
// oldest first, and returns them with the new position. Events that already
// left the buffer are skipped.
func (s *Subscription) Events(seq uint64, dst []*Event) ([]*Event, uint64) {
	ev := &s.room.events
	dst = dst[:0]
	ev.mu.RLock()
	defer ev.mu.RUnlock()
	if ev.seq-seq > eventBuffer || seq > ev.seq {
		seq = ev.seq - min(ev.seq, eventBuffer) // behind the buffer (or from an older tail): skip
	}
	for seq < ev.seq && len(dst) < cap(dst) {
		seq++
		dst = append(dst, ev.buf[seq%eventBuffer])
	}
	return dst, seq
}

// takeEvents moves entries read from the room's events stream into its
// event buffer. It reports whether any were events xroom knows.
func (h *Hub) takeEvents(r *tailedRoom, msgs []redis.XMessage) bool {
	var evs []*Event
	for _, m := range msgs {
		id, _ := ParseID(m.ID)
		r.events.head = id
		ev := &Event{ID: id, Type: field(m.Values, "type"), User: field(m.Values, "user")}
		switch ev.Type {
		case EventJoin, EventLeave, EventTyping:
		case EventRead:
			if !readEvent(ev, m.Values) {
				continue // a read event without a position (added by hand): ignored
			}
		default:
			continue // not an event xroom knows: ignored
		}
		if ev.User == "" {
			continue // an event about nobody (added by hand): ignored
		}
		if h.opt.EncodeEvent != nil {
			ev.Frame = h.opt.EncodeEvent(r.name, ev)
		}
		evs = append(evs, ev)
	}
	if len(evs) > 0 {
		r.events.push(evs)
	}
	return len(evs) > 0
}

// heads returns the newest IDs of the room's messages and events streams
// (Zero for a stream that is empty or missing), in one round trip: where a
// new tail starts reading both.
func (s *Store) heads(ctx context.Context, room string) (messages, events ID, err error) {
	pipe := s.rdb.Pipeline()
	m := pipe.XRevRangeN(ctx, s.keys.Messages(room), "+", "-", 1)
	e := pipe.XRevRangeN(ctx, s.keys.Events(room), "+", "-", 1)
	_, _ = pipe.Exec(ctx)
	if err := m.Err(); err != nil && !errors.Is(err, redis.Nil) {
		return Zero, Zero, fmt.Errorf("read the head of %s: %w", room, err)
	}
	if err := e.Err(); err != nil && !errors.Is(err, redis.Nil) && !isWrongType(err) {
		return Zero, Zero, fmt.Errorf("read the events head of %s: %w", room, err)
	}
	last := func(c *redis.XMessageSliceCmd) ID {
		if len(c.Val()) == 0 {
			return Zero
		}
		id, _ := ParseID(c.Val()[0].ID)
		return id
	}
	return last(m), last(e), nil
}

// isWrongType tells that a key holds another type than the command wants,
// e.g. an events key overwritten by hand with SET.
func isWrongType(err error) bool { return redis.HasErrorPrefix(err, "WRONGTYPE") }
