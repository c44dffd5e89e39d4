package streams

// Unread counts: for each room in a user's room index, how many messages
// came after the user's read position, exact up to a cap, with a bounded
// amount of Redis work per room.

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// DefaultUnreadCap is the count past which unread counts stop being
	// exact (UNREAD_CAP): a badge says "100+", not how many more.
	DefaultUnreadCap = 100
	// unreadScanPages bounds the entries one room's count may read: at
	// most this many pages of cap+1 entries. Only the user's own messages
	// (never unread) make it read more than one page.
	unreadScanPages = 4
)

// unreadScript counts one room's unread messages for a user: the entries
// after the user's read position that carry a message and are not the
// user's own, at most cap+1 of them (past cap the count is only "more"),
// reading at most ARGV[3] entries. Only the count goes back, never the
// entries. KEYS: reads, messages. ARGV: user, cap, most entries to read.
// Returns {read position or "0-0", newest ID or "0-0", count, more}.
var unreadScript = redis.NewScript(compareIDsLua + `
local pos = canonical(redis.call('HGET', KEYS[1], ARGV[1])) or '0-0'
local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if #newest == 0 then return {pos, '0-0', 0, 0} end
local last = newest[1][1]
local cap, most = tonumber(ARGV[2]), tonumber(ARGV[3])
local n, read, start = 0, 0, pos
while true do
  -- From the position itself (inclusive, so that it works before Redis
  -- 6.2's exclusive ranges): the entry at the position is skipped.
  local page = redis.call('XRANGE', KEYS[2], start, '+', 'COUNT', cap + 2)
  for _, e in ipairs(page) do
    if e[1] ~= start then
      read = read + 1
      local f, mine, msg = e[2], false, false
      for i = 1, #f, 2 do
        if f[i] == 'user' then mine = (f[i + 1] == ARGV[1]) elseif f[i] == 'message' then msg = true end
      end
      if msg and not mine then
        n = n + 1
        if n > cap then return {pos, last, cap, 1} end
      end
      if read >= most and e[1] ~= last then return {pos, last, n, 1} end
    end
  end
  if #page < cap + 2 then return {pos, last, n, 0} end
  start = page[#page][1]
end
`)

// Unread is one room's unread count for a user.
type Unread struct {
	Room     string
	Count    int  // messages after LastRead by others, at most the cap
	More     bool // there are more than Count (past the cap, or past the read bound)
	LastRead ID   // the user's read position; Zero when they have none
	LastID   ID   // the room's newest entry
}

// Unread counts user's unread messages in the rooms of their room index
// (rooms they have a read position in or have written to), newest
// activity first: at most limit rooms (the ones touched most recently),
// each exact up to unreadCap (above it Count is unreadCap and More is
// true). The
// user's own messages are never unread, and entries without a message are
// not counted. Rooms with no entries are left out.
//
// The cost is bounded and does not grow with history: two round trips
// (one read of the index, then one pipeline of one script call per room,
// split per node on a Cluster), and per room at most unreadCap+1 entries read
// inside Redis (up to unreadScanPages times that when most are the user's
// own). Only counts come back, never entries.
func (s *Store) Unread(ctx context.Context, user string, limit, unreadCap int) ([]Unread, error) {
	if limit <= 0 {
		return nil, nil
	}
	unreadCap = max(unreadCap, 1)
	key := s.keys.UserRooms(user)
	pipe := s.rdb.Pipeline()
	pipe.ZRemRangeByRank(ctx, key, 0, -maxUserRooms-1) // keeps the index bounded
	list := pipe.ZRevRange(ctx, key, 0, int64(limit-1))
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("rooms of %s: %w", user, err)
	}
	rooms := list.Val()
	if len(rooms) == 0 {
		return []Unread{}, nil
	}
	calls := make([]scriptCall, len(rooms))
	for i, room := range rooms {
		calls[i] = scriptCall{
			keys: []string{s.keys.Reads(room), s.keys.Messages(room)},
			args: []any{user, unreadCap, unreadScanPages * (unreadCap + 1)},
		}
	}
	cmds, err := s.evalEach(ctx, unreadScript, calls)
	if err != nil {
		return nil, fmt.Errorf("unread of %s: %w", user, err)
	}
	out := make([]Unread, 0, len(rooms))
	for i, cmd := range cmds {
		u, ok := unreadOf(rooms[i], cmd.Val())
		if ok && cmd.Err() == nil && !u.LastID.IsZero() {
			out = append(out, u)
		}
	}
	// By the time of the newest entry. IDs of different streams are not
	// ordered within a millisecond: a tie keeps the index's order (the
	// user's most recent first).
	sort.SliceStable(out, func(i, j int) bool { return out[i].LastID.Ms > out[j].LastID.Ms })
	return out, nil
}

// unreadOf reads one room's unreadScript reply.
func unreadOf(room string, v any) (Unread, bool) {
	r, ok := v.([]any)
	if !ok || len(r) != 4 {
		return Unread{}, false
	}
	pos, _ := r[0].(string)
	last, _ := r[1].(string)
	n, _ := r[2].(int64)
	more, _ := r[3].(int64)
	u := Unread{Room: room, Count: int(n), More: more == 1}
	var err1, err2 error
	u.LastRead, err1 = ParseID(pos)
	u.LastID, err2 = ParseID(last)
	return u, err1 == nil && err2 == nil
}

// userRoom is one pair of a user's room index (see Unread).
type userRoom struct{ user, room string }

// queueJoined records, in pipe, room in user's room index when a
// connection of user joins it (once per writerRefresh): a room a user is
// in has an unread count, and the connection's appends need not record it
// (touchWriters finds the pair done), which keeps that ZADD off the
// message path.
func (s *Store) queueJoined(ctx context.Context, pipe redis.Pipeliner, room, user string) touches {
	now := time.Now()
	if user == "" || !s.writers.due(userRoom{user, room}, now) {
		return nil
	}
	return touches{{s.queueUserRooms(ctx, pipe, user, now, room), func() { s.writers.forget(userRoom{user, room}) }}}
}

// touchWriters queues, in the batch's pipeline, the rooms the batch's
// users wrote to in their room indexes (see Unread): a ZADD per user whose
// pair is due, usually none (a session's pair was recorded when it joined:
// queueJoined). Advisory, like the rooms list.
func (s *Store) touchWriters(ctx context.Context, pipe redis.Pipeliner, calls []*appendCall, now time.Time) (t touches) {
	var byUser map[string][]string
	for _, c := range calls {
		if c.err != nil || c.m.User == "" || !s.writers.due(userRoom{c.m.User, c.room}, now) {
			continue
		}
		if byUser == nil {
			byUser = map[string][]string{}
		}
		byUser[c.m.User] = append(byUser[c.m.User], c.room)
	}
	for user, rooms := range byUser {
		t = append(t, touched{s.queueUserRooms(ctx, pipe, user, now, rooms...), func() {
			for _, r := range rooms {
				s.writers.forget(userRoom{user, r})
			}
		}})
	}
	return t
}
