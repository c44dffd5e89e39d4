package streams

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// roomsFlushEvery is how often the rooms list is written: one ZADD for
	// every room due since, however many (one per message cost a command
	// per message when rooms are many and each quiet).
	roomsFlushEvery = time.Second
	// roomsFlushTimeout bounds one write of the rooms list.
	roomsFlushTimeout = 5 * time.Second
)

// roomsLookahead bounds the rooms below a list's cut that Rooms looks at
// for ones newer than their score says: a pipeline of that many
// XREVRANGEs is a few ms of Redis work.
const roomsLookahead = 1000

// Room is a room in the rooms list.
type Room struct {
	Name         string
	LastID       ID
	LastActivity time.Time
}

// Rooms lists up to limit rooms, most recently active first. A room whose
// stream was deleted is left out (and left in the set: removing it here
// could race with a new first message in it).
//
// A room's score in the rooms list moves once per roomTouchEvery, so it
// may lag the room's last message by that much: the order comes from each
// room's newest entry, and the rooms just below the cut whose score is
// within roomTouchEvery of it are looked at too, since they may be newer.
func (s *Store) Rooms(ctx context.Context, limit int) ([]Room, error) {
	s.flushRooms(ctx) // this instance's latest rooms first
	rooms := make([]Room, 0, min(limit, 100))
	listed := map[string]bool{}
	var offset int64
	var floor float64
	for len(rooms) < limit {
		zs, err := s.rdb.ZRevRangeWithScores(ctx, s.keys.Rooms(), offset, offset+int64(limit-len(rooms))-1).Result()
		if err != nil {
			return nil, fmt.Errorf("list rooms: %w", err)
		}
		if len(zs) == 0 {
			break
		}
		offset += int64(len(zs))
		floor = zs[len(zs)-1].Score
		if rooms, err = s.appendRooms(ctx, rooms, listed, zs); err != nil {
			return nil, err
		}
	}
	if len(rooms) == limit {
		// The rooms listed at the floor come again: appendRooms skips them.
		zs, err := s.rdb.ZRevRangeByScoreWithScores(ctx, s.keys.Rooms(), &redis.ZRangeBy{
			Max: strconv.FormatFloat(floor, 'f', -1, 64), Min: strconv.FormatFloat(floor-float64(roomTouchEvery.Milliseconds()), 'f', -1, 64),
			Count: int64(limit + roomsLookahead),
		}).Result()
		if err != nil {
			return nil, fmt.Errorf("list rooms: %w", err)
		}
		if rooms, err = s.appendRooms(ctx, rooms, listed, zs); err != nil {
			return nil, err
		}
	}
	slices.SortStableFunc(rooms, func(a, b Room) int { return b.LastActivity.Compare(a.LastActivity) })
	return rooms[:min(len(rooms), limit)], nil
}

// appendRooms adds to rooms those of zs whose stream exists and that
// rooms does not hold yet (the set may change between two reads of it),
// each with its newest entry (one pipeline).
func (s *Store) appendRooms(ctx context.Context, rooms []Room, listed map[string]bool, zs []redis.Z) ([]Room, error) {
	if len(zs) == 0 {
		return rooms, nil
	}
	pipe := s.rdb.Pipeline()
	lasts := make([]*redis.XMessageSliceCmd, len(zs))
	for i, z := range zs {
		lasts[i] = pipe.XRevRangeN(ctx, s.keys.Messages(asString(z.Member)), "+", "-", 1)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("list rooms: %w", err)
	}
	now := time.Now().UnixMilli()
	for i, z := range zs {
		name, msgs := asString(z.Member), lasts[i].Val()
		if len(msgs) == 0 || listed[name] {
			continue // the stream was deleted (the room is gone), or listed already
		}
		listed[name] = true
		id, _ := ParseID(msgs[0].ID)
		// The newest ID says when the last message came, whoever added
		// it, unless it was given by hand (then it says nothing of time).
		at := int64(z.Score)
		if id.Ms > uint64(max(at, 0)) && id.Ms <= uint64(now) {
			at = int64(id.Ms)
		}
		rooms = append(rooms, Room{Name: name, LastID: id, LastActivity: time.UnixMilli(at)})
	}
	return rooms, nil
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
			s.listed.forget(r)
		}
	}
}
