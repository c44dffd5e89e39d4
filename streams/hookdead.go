package streams

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// DeadLetter is a message the webhook did not take after every attempt,
// as the room's dead-letter stream (Keys.Dead) keeps it.
type DeadLetter struct {
	ID    ID    // its ID in the dead-letter stream
	Entry Entry // the message, with the ID it has in the room's stream
	Failure
}

// DeadLetters returns up to count of the room's dead letters after the
// given ID (Zero: from the first), oldest first.
func (s *Store) DeadLetters(ctx context.Context, room string, after ID, count int) ([]DeadLetter, error) {
	if after == MaxID {
		return nil, nil
	}
	key := s.keys.Dead(room)
	msgs, err := s.rdb.XRangeN(ctx, key, after.Next().String(), "+", int64(count)).Result()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	out := make([]DeadLetter, 0, len(msgs))
	for _, m := range msgs {
		id, _ := ParseID(m.ID)
		orig, _ := ParseID(field(m.Values, "id"))
		e := toEntry(m)
		e.ID = orig
		status, _ := strconv.Atoi(field(m.Values, "status"))
		attempts, _ := strconv.Atoi(field(m.Values, "attempts"))
		out = append(out, DeadLetter{ID: id, Entry: e, Failure: Failure{Status: status, Error: field(m.Values, "error"), Attempts: attempts}})
	}
	return out, nil
}

// DropDeadLetters removes dead letters by their IDs in the dead-letter
// stream (once they were delivered after all).
func (s *Store) DropDeadLetters(ctx context.Context, room string, ids []ID) error {
	if len(ids) == 0 {
		return nil
	}
	key := s.keys.Dead(room)
	if err := s.rdb.XDel(ctx, key, idStrings(ids)...).Err(); err != nil {
		return fmt.Errorf("XDEL %s: %w", key, err)
	}
	return nil
}

// HookRoomStatus is where a room's webhook delivery stands in Redis.
type HookRoomStatus struct {
	Group         bool             // the room's group exists (the room was seen)
	Pending       int64            // entries read and not yet acknowledged
	OldestPending ID               // the oldest of them; Zero when none
	Holders       map[string]int64 // consumers holding them, and how many
	Lag           int64            // entries no consumer has read yet; -1 when Redis cannot tell
	LastDelivered ID               // the newest entry read by the group
	Dead          int64            // dead letters
}

// Status reads the room's webhook delivery status: its group and its dead
// letters.
func (g *HookGroup) Status(ctx context.Context, room string) (HookRoomStatus, error) {
	st := HookRoomStatus{Lag: -1}
	key := g.store.keys.Messages(room)
	pipe := g.store.rdb.Pipeline()
	groups := pipe.XInfoGroups(ctx, key)
	pending := pipe.XPending(ctx, key, HookGroupName)
	dead := pipe.XLen(ctx, g.store.keys.Dead(room))
	_, _ = pipe.Exec(ctx) // each reply is looked at below
	if err := dead.Err(); err != nil {
		return st, fmt.Errorf("XLEN %s: %w", g.store.keys.Dead(room), err)
	}
	st.Dead = dead.Val()
	if err := groups.Err(); err != nil {
		if noSuchKey(err) {
			return st, nil
		}
		return st, fmt.Errorf("XINFO GROUPS %s: %w", key, err)
	}
	for _, gr := range groups.Val() {
		if gr.Name == HookGroupName {
			st.Group, st.Lag = true, gr.Lag
			st.LastDelivered, _ = ParseID(gr.LastDeliveredID)
		}
	}
	if !st.Group {
		return st, nil
	}
	if err := pending.Err(); err != nil {
		return st, fmt.Errorf("XPENDING %s: %w", key, err)
	}
	p := pending.Val()
	st.Pending, st.Holders = p.Count, p.Consumers
	if p.Count > 0 {
		st.OldestPending, _ = ParseID(p.Lower)
	}
	return st, nil
}

// noSuchKey tells the error Redis gives for a stream that does not exist.
func noSuchKey(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && strings.Contains(strings.ToLower(err.Error()), "no such key")
}
