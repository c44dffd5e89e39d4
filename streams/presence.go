package streams

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// DefaultPresenceTTL is how long a connection stays present without a
	// heartbeat: a crashed instance's users fade out after it.
	DefaultPresenceTTL = 30 * time.Second
	// DefaultPresenceHeartbeat is how often an instance refreshes its
	// connections; a third of the TTL survives two lost heartbeats.
	DefaultPresenceHeartbeat = 10 * time.Second
	// DefaultPresenceMaxMembers is PresenceOptions.MaxMembers by default.
	DefaultPresenceMaxMembers = 1000
	// EventsMaxLen caps each room's events stream (MAXLEN ~): events are
	// read live or never, so a small tail of them is all Redis keeps.
	EventsMaxLen = 1000
	// refreshChunk is the most members one script call refreshes, so a room
	// with thousands of local connections never blocks Redis for long.
	refreshChunk = 500
	// pipelineCalls is the most script calls one heartbeat pipeline carries.
	pipelineCalls = 64
	// sweepLimit is the most expired members one script call removes; the
	// rest go on the next call.
	sweepLimit = 1000
	// presenceTimeout bounds one heartbeat pipeline or leave.
	presenceTimeout = 5 * time.Second
)

// Event types in the events stream.
const (
	EventJoin   = "join"
	EventLeave  = "leave"
	EventTyping = "typing"
)

// presenceLua is shared by the scripts: the user of a member (the part
// before the LAST ':'), an event (written only while the room has at most
// ARGV[2] users: see PresenceOptions.MaxMembers), and a member gone. Each
// returns how many events it wrote.
const presenceLua = `
local function user(m) return string.match(m, '^(.*):[^:]*$') or m end
local function event(kind, u)
  if redis.call('HLEN', KEYS[2]) > tonumber(ARGV[2]) then return 0 end
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[1], '*', 'type', kind, 'user', u)
  return 1
end
local function gone(m)
  local u = user(m)
  if redis.call('HINCRBY', KEYS[2], u, -1) <= 0 then
    redis.call('HDEL', KEYS[2], u)
    return event('leave', u)
  end
  return 0
end
`

// refreshScript adds or refreshes members (a new member whose user had no
// live connection writes a join), then sweeps expired members (a member
// whose user has no live connection left writes a leave), in one atomic
// step: exactly one instance removes an expired member and writes its leave.
// KEYS: presence, users, events. ARGV: events maxlen, max members, now ms,
// expiry ms, ttl ms, sweep limit, members...
var refreshScript = redis.NewScript(presenceLua + `
local joins, leaves = 0, 0
if #ARGV >= 7 then
  -- One ZMSCORE and one ZADD for all the members, not one ZADD each: a
  -- heartbeat costs Redis a few commands per room, however many are in it.
  local members = {unpack(ARGV, 7)}
  local known = redis.call('ZMSCORE', KEYS[1], unpack(members))
  local args = {}
  for _, m in ipairs(members) do
    args[#args + 1] = ARGV[4]
    args[#args + 1] = m
  end
  redis.call('ZADD', KEYS[1], unpack(args))
  for i, m in ipairs(members) do
    if not known[i] then -- new here: its user's first live connection joins
      local u = user(m)
      if redis.call('HINCRBY', KEYS[2], u, 1) == 1 then
        joins = joins + event('join', u)
      end
    end
  end
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3], 'LIMIT', 0, tonumber(ARGV[6]))
for _, m in ipairs(expired) do
  redis.call('ZREM', KEYS[1], m)
  leaves = leaves + gone(m)
end
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[5]) end
return {joins, leaves}
`)

// leaveScript removes members; a user's last one writes a leave. A member
// already swept is skipped: its sweeper wrote the leave.
// KEYS: presence, users, events. ARGV: events maxlen, max members, members...
var leaveScript = redis.NewScript(presenceLua + `
local leaves = 0
for i = 3, #ARGV do
  if redis.call('ZREM', KEYS[1], ARGV[i]) == 1 then
    leaves = leaves + gone(ARGV[i])
  end
end
return leaves
`)

// typingScript adds a typing event unless the room is too big for events.
// KEYS: presence, users, events. ARGV: events maxlen, max members, ttl ms, user.
var typingScript = redis.NewScript(presenceLua + `
if event('typing', ARGV[4]) == 0 then return 0 end
redis.call('PEXPIRE', KEYS[3], ARGV[3])
return 1
`)

// PresenceOptions configure Presence.
type PresenceOptions struct {
	TTL       time.Duration // DefaultPresenceTTL if 0
	Heartbeat time.Duration // DefaultPresenceHeartbeat if 0; must be below TTL
	// MaxMembers (DefaultPresenceMaxMembers if 0) bounds what presence costs
	// in a huge room: with more users than this, join, leave and typing
	// events are not written (each would be sent to every connection, so a
	// room of N costs N² writes as it fills), and Members lists only this
	// many connections.
	MaxMembers int
	Logger     *slog.Logger
}

// Presence keeps this instance's connections in the rooms' presence sets.
// One goroutine refreshes all of them every Heartbeat, with one pipeline
// per batch of rooms (never a round trip or a timer per connection), and
// sweeps expired members, so the users of a crashed instance fade out after
// TTL with exactly one leave. Close stops it and removes what is left.
type Presence struct {
	store *Store
	opt   PresenceOptions
	log   *slog.Logger

	mu     sync.Mutex
	rooms  map[string]map[string]struct{} // local members by room
	closed bool
	// beat is held by a heartbeat while it refreshes; Leave waits for the
	// one in flight, which may still carry its member, so that a refresh
	// never adds back a member that already left.
	beat sync.RWMutex

	stop chan struct{}
	done chan struct{}

	stats PresenceStats
}

// PresenceStats counts what Presence did, for metrics and tests.
type PresenceStats struct {
	Heartbeats atomic.Int64 // heartbeat ticks that reached Redis
	Failures   atomic.Int64 // failed Redis calls (the next heartbeat retries)
	Joins      atomic.Int64 // join events this instance wrote
	Leaves     atomic.Int64 // leave events this instance wrote (clean or swept)
}

// NewPresence starts the heartbeat of an instance's connections.
func NewPresence(store *Store, opt PresenceOptions) *Presence {
	if opt.TTL <= 0 {
		opt.TTL = DefaultPresenceTTL
	}
	if opt.Heartbeat <= 0 || opt.Heartbeat >= opt.TTL {
		opt.Heartbeat = min(DefaultPresenceHeartbeat, opt.TTL/3)
	}
	if opt.MaxMembers <= 0 {
		opt.MaxMembers = DefaultPresenceMaxMembers
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	p := &Presence{store: store, opt: opt, log: opt.Logger, rooms: map[string]map[string]struct{}{},
		stop: make(chan struct{}), done: make(chan struct{})}
	go p.loop()
	return p
}

// Stats returns the counters.
func (p *Presence) Stats() *PresenceStats { return &p.stats }

// Options returns the options in effect.
func (p *Presence) Options() PresenceOptions { return p.opt }

// Join makes one connection of user present in room and returns its
// member name, for Leave. The connection is registered locally even when
// Redis fails (the error is returned for logging): the next heartbeat adds it.
func (p *Presence) Join(ctx context.Context, room, user string) (string, error) {
	member := user + ":" + RandomName(8)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return member, errors.New("presence closed")
	}
	local := p.rooms[room]
	if local == nil {
		local = map[string]struct{}{}
		p.rooms[room] = local
	}
	local[member] = struct{}{}
	p.mu.Unlock()
	var t touches
	err := p.exec(ctx, refreshScript, []scriptCall{p.refresh(room, []string{member})}, func(pipe redis.Pipeliner) {
		t = p.store.queueJoined(ctx, pipe, room, user) // in the same round trip
	})
	t.settle()
	if err != nil {
		return member, fmt.Errorf("presence join in %s: %w", room, err)
	}
	return member, nil
}

// Leave removes a connection. When Redis fails, the member expires after
// the TTL and whichever instance sweeps it writes the leave.
func (p *Presence) Leave(ctx context.Context, room, member string) error {
	p.mu.Lock()
	if local := p.rooms[room]; local != nil {
		delete(local, member)
		if len(local) == 0 {
			delete(p.rooms, room)
		}
	}
	p.mu.Unlock()
	p.beat.RLock() // a later heartbeat no longer sees the member
	p.beat.RUnlock()
	if err := p.leave(ctx, room, []string{member}); err != nil {
		return fmt.Errorf("presence leave in %s: %w", room, err)
	}
	return nil
}

func (p *Presence) leave(ctx context.Context, room string, members []string) error {
	var calls []scriptCall
	for chunk := range slices.Chunk(members, refreshChunk) {
		args := make([]any, 0, len(chunk)+2)
		args = append(args, EventsMaxLen, p.opt.MaxMembers)
		for _, m := range chunk {
			args = append(args, m)
		}
		calls = append(calls, scriptCall{keys: p.keys(room), args: args})
	}
	return p.exec(ctx, leaveScript, calls)
}

func (p *Presence) keys(room string) []string {
	k := p.store.keys
	return []string{k.Presence(room), k.PresenceUsers(room), k.Events(room)}
}

// refresh is one refresh script call for members of room.
func (p *Presence) refresh(room string, members []string) scriptCall {
	now := time.Now().UnixMilli()
	args := make([]any, 0, len(members)+6)
	args = append(args, EventsMaxLen, p.opt.MaxMembers, now, now+p.opt.TTL.Milliseconds(), p.opt.TTL.Milliseconds(), sweepLimit)
	for _, m := range members {
		args = append(args, m)
	}
	return scriptCall{keys: p.keys(room), args: args}
}

// exec runs calls of script in one pipeline (scripts.go), counts the
// events they wrote, and returns the first error.
func (p *Presence) exec(ctx context.Context, script *redis.Script, calls []scriptCall, extra ...func(redis.Pipeliner)) error {
	cmds, err := p.store.evalEach(ctx, script, calls, extra...)
	if err == nil {
		err = firstErr(cmds)
	}
	if err != nil {
		p.stats.Failures.Add(1)
		return err
	}
	p.count(cmds)
	return nil
}

// count adds the events a script reported.
func (p *Presence) count(cmds []*redis.Cmd) {
	for _, c := range cmds {
		switch v := c.Val().(type) {
		case int64: // leave
			p.stats.Leaves.Add(v)
		case []any: // refresh: {joins, leaves}
			if len(v) == 2 {
				j, _ := v[0].(int64)
				l, _ := v[1].(int64)
				p.stats.Joins.Add(j)
				p.stats.Leaves.Add(l)
			}
		}
	}
}

// Typing records that user is typing in room (not in a room of more than
// MaxMembers users).
func (p *Presence) Typing(ctx context.Context, room, user string) error {
	args := []any{EventsMaxLen, p.opt.MaxMembers, p.opt.TTL.Milliseconds(), user}
	if _, err := p.store.runScript(ctx, typingScript, p.keys(room), args, nil); err != nil {
		return fmt.Errorf("typing in %s: %w", room, err)
	}
	return nil
}

// Members lists the users present in room (unexpired members, each user
// once), sorted. In a room of more than MaxMembers connections it reads
// only MaxMembers of them, so a join costs the same in a huge room, and
// reports partial.
func (p *Presence) Members(ctx context.Context, room string) (users []string, partial bool, err error) {
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	ms, err := p.store.rdb.ZRangeByScore(ctx, p.store.keys.Presence(room), &redis.ZRangeBy{Min: now, Max: "+inf", Count: int64(p.opt.MaxMembers) + 1}).Result()
	if err != nil {
		return nil, false, fmt.Errorf("presence of %s: %w", room, err)
	}
	if len(ms) > p.opt.MaxMembers {
		ms, partial = ms[:p.opt.MaxMembers], true
	}
	users = make([]string, 0, len(ms))
	for _, m := range ms {
		users = append(users, MemberUser(m))
	}
	slices.Sort(users)
	return slices.Compact(users), partial, nil
}

// MemberUser is the user of a presence member "USER:CONNID" (the user may
// itself contain ':').
func MemberUser(member string) string {
	if i := strings.LastIndexByte(member, ':'); i >= 0 {
		return member[:i]
	}
	return member
}

// RandomName is n random characters from [a-z0-9]: a connection's ID in
// presence members, an anonymous user's suffix.
func RandomName(n int) string {
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return string(b)
}
