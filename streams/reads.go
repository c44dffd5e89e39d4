package streams

// Read positions: how far each user has read in each room, kept in Redis in
// the room's hash slot and readable with redis-cli. Unread counts are in
// unread.go.

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/redis/go-redis/v9"
)

// EventRead is the type of a read event in the room's events stream: one of
// the user's connections moved their read position.
const EventRead = "read"

const (
	// readEventTTL is the least lifetime a read event gives the room's
	// events stream (a read event is live or never, like typing): a room
	// nobody is present in keeps no events key for long. The presence
	// heartbeat extends it while anyone is in the room.
	readEventTTL = DefaultPresenceTTL
	// maxUserRooms bounds a user's room index: the rooms touched longest
	// ago drop out beyond it (trimmed when the index is read).
	maxUserRooms = 1000
)

// compareIDsLua compares stream IDs as (ms, seq) pairs of decimal strings of
// any length, never as plain strings ("9-0" < "10-0") nor as Lua numbers
// (doubles lose precision past 2^53).
const compareIDsLua = `
local function parts(id)
  if type(id) ~= 'string' then return nil end
  local ms, seq = string.match(id, '^(%d+)%-(%d+)$')
  if not ms then return nil end
  return (string.gsub(ms, '^0+(%d)', '%1')), (string.gsub(seq, '^0+(%d)', '%1'))
end
local function numless(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local function less(a, b)
  local am, as = parts(a)
  local bm, bs = parts(b)
  if am ~= bm then return numless(am, bm) end
  return numless(as, bs)
end
local function canonical(id)
  local ms, seq = parts(id)
  if not ms then return nil end
  return ms .. '-' .. seq
end
`

// markReadScript moves a user's read position forward, never back, and no
// further than the room's newest entry (a position past it is clamped
// there: later messages are unread). When it moved, it adds a read event to
// the room's events stream, for the user's other connections, unless the
// room has more present users than ARGV[6] (0: no limit). A room with no
// entries has nothing to read: nothing is stored.
// KEYS: reads, messages, events, presence users. ARGV: user, id
// (canonical), connection ("" for none), events MAXLEN, least events TTL in
// ms, most present users for an event.
// Returns {1, position} when it moved, {0, current position or ""} when not.
var markReadScript = redis.NewScript(compareIDsLua + `
local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local cur = canonical(redis.call('HGET', KEYS[1], ARGV[1]))
if #newest == 0 then return {0, cur or ''} end
local want = ARGV[2]
if less(newest[1][1], want) then want = newest[1][1] end
if cur and not less(cur, want) then return {0, cur} end
if not cur and want == '0-0' then return {0, ''} end
redis.call('HSET', KEYS[1], ARGV[1], want)
if ARGV[6] ~= '0' then
  local users = redis.pcall('HLEN', KEYS[4])
  if type(users) == 'number' and users > tonumber(ARGV[6]) then return {1, want} end
end
-- The event is best effort: the position is what counts (a hand-made
-- events key of another type must not fail the mark).
local ev = {'XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'type', 'read', 'user', ARGV[1], 'id', want}
if ARGV[3] ~= '' then
  ev[#ev + 1] = 'conn'
  ev[#ev + 1] = ARGV[3]
end
if type(redis.pcall(unpack(ev))) == 'string' then
  local ttl = redis.pcall('PTTL', KEYS[3])
  if type(ttl) == 'number' and ttl < tonumber(ARGV[5]) then redis.pcall('PEXPIRE', KEYS[3], ARGV[5]) end
end
return {1, want}
`)

// ReadEvent says how a mark is announced to the user's other connections.
type ReadEvent struct {
	// Conn names the connection that marked (Event.Conn), so that it can
	// skip its own event; "" over HTTP.
	Conn string
	// MaxMembers: in a room with more present users than this, no event is
	// written, as for presence events (each goes to every connection in the
	// room, and every reader marks every message: N² wake-ups); 0: no limit.
	MaxMembers int
}

// MarkRead moves user's read position in room forward to id: the newest
// entry the user has seen. It never moves back (an older id changes
// nothing), and an id past the room's newest entry is taken as that entry.
// It returns the position now stored and whether it moved. When it moved,
// the user's other connections in the room get a read event (see
// ReadEvent). It also records the room in the user's room index (see
// Unread).
func (s *Store) MarkRead(ctx context.Context, room, user string, id ID, ev ReadEvent) (pos ID, moved bool, err error) {
	keys := []string{s.keys.Reads(room), s.keys.Messages(room), s.keys.Events(room), s.keys.PresenceUsers(room)}
	args := []any{user, id.String(), ev.Conn, EventsMaxLen, readEventTTL.Milliseconds(), max(ev.MaxMembers, 0)}
	res, err := s.runScript(ctx, markReadScript, keys, args, func(pipe redis.Pipeliner) {
		s.queueUserRooms(ctx, pipe, user, time.Now(), room) // advisory: another slot on a Cluster
	})
	if err != nil {
		return Zero, false, fmt.Errorf("mark %s read in %s: %w", user, room, err)
	}
	pair, ok := res.([]any)
	if !ok || len(pair) != 2 {
		return Zero, false, fmt.Errorf("mark %s read in %s: unexpected reply %v", user, room, res)
	}
	flag, _ := pair[0].(int64)
	raw, _ := pair[1].(string)
	if raw == "" {
		return Zero, false, nil // no position: nothing to read yet
	}
	if pos, err = ParseID(raw); err != nil {
		return Zero, false, fmt.Errorf("mark %s read in %s: %w", user, room, err)
	}
	return pos, flag == 1, nil
}

// queueUserRooms records rooms in user's room index, scored now.
func (s *Store) queueUserRooms(ctx context.Context, pipe redis.Pipeliner, user string, now time.Time, rooms ...string) *redis.IntCmd {
	members := make([]redis.Z, len(rooms))
	for i, r := range rooms {
		members[i] = redis.Z{Score: float64(now.UnixMilli()), Member: r}
	}
	return pipe.ZAdd(ctx, s.keys.UserRooms(user), members...)
}

// ReadPosition is one user's read position in a room.
type ReadPosition struct {
	User string
	ID   ID
}

// ReadPosition returns user's read position in room, and false when the
// user has none.
func (s *Store) ReadPosition(ctx context.Context, room, user string) (ID, bool, error) {
	raw, err := s.rdb.HGet(ctx, s.keys.Reads(room), user).Result()
	if errors.Is(err, redis.Nil) {
		return Zero, false, nil
	}
	if err != nil {
		return Zero, false, fmt.Errorf("read position of %s in %s: %w", user, room, err)
	}
	id, err := ParseID(raw)
	if err != nil {
		return Zero, false, nil // not a position (edited by hand): none
	}
	return id, true, nil
}

// ReadPositions lists the read positions in room, newest first (then by
// user). A room with more than limit users is listed in part (partial
// true): the hash is then scanned for limit fields, not read whole, so a
// huge room costs what a small one does.
func (s *Store) ReadPositions(ctx context.Context, room string, limit int) (out []ReadPosition, partial bool, err error) {
	key := s.keys.Reads(room)
	n, err := s.rdb.HLen(ctx, key).Result()
	if err != nil {
		return nil, false, fmt.Errorf("read positions of %s: %w", room, err)
	}
	fields := map[string]string{}
	if n <= int64(limit) {
		if fields, err = s.rdb.HGetAll(ctx, key).Result(); err != nil {
			return nil, false, fmt.Errorf("read positions of %s: %w", room, err)
		}
	} else {
		partial = true
		for cursor := uint64(0); len(fields) < limit; {
			var kv []string
			kv, cursor, err = s.rdb.HScan(ctx, key, cursor, "", int64(limit)).Result()
			if err != nil {
				return nil, false, fmt.Errorf("read positions of %s: %w", room, err)
			}
			for i := 0; i+1 < len(kv) && len(fields) < limit; i += 2 {
				fields[kv[i]] = kv[i+1]
			}
			if cursor == 0 {
				break
			}
		}
	}
	out = make([]ReadPosition, 0, len(fields))
	for user, raw := range fields {
		if id, err := ParseID(raw); err == nil {
			out = append(out, ReadPosition{User: user, ID: id})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].ID != out[j].ID {
			return out[j].ID.Less(out[i].ID)
		}
		return out[i].User < out[j].User
	})
	return out, partial, nil
}

// readEvent fills a read event's position and connection from its stream
// fields; false when it names no valid position (added by hand).
func readEvent(ev *Event, values map[string]any) bool {
	id, err := ParseID(field(values, "id"))
	if err != nil {
		return false
	}
	ev.Position, ev.Conn = id, field(values, "conn")
	return true
}
