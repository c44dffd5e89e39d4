package streams

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// maxScriptEntries bounds the appends of one appendDedupMany call: a script
// holds Redis for its whole run, and 64 short appends take tens of µs.
const maxScriptEntries = 64

// appendDedupMany is appendDedup for several appends at once, in order: one
// script call (whose own cost is most of a dedup append's Redis CPU) for
// every client_id append of a batch. KEYS are pairs (stream, dedup key),
// ARGV is MAXLEN (0: none), the dedup window in ms, then user, message and
// client_id of each append. It returns a pair per append: the ID and 0
// (stored), the first ID and 1 (duplicate, stored nothing), or an error
// message and 2 (that append failed; the others are unaffected). Appends are
// checked one after another, so a client_id sent twice in one call is
// stored once. With Redis Cluster every key of one call must be in one
// slot: see groupKey.
var appendDedupMany = redis.NewScript(`
local out = {}
local maxlen, px = ARGV[1], ARGV[2]
for i = 1, #KEYS / 2 do
  local stream, dedup, a = KEYS[2*i-1], KEYS[2*i], 3*i
  local id = redis.pcall('GET', dedup)
  if type(id) == 'table' and id.err then
    out[#out+1] = id.err; out[#out+1] = 2
  elseif id then
    -- Rewrite the expiry as it is: a write, so a WAIT after this call
    -- also covers the first store of this client_id.
    local ttl = redis.pcall('PTTL', dedup)
    if type(ttl) == 'number' and ttl > 0 then redis.pcall('PEXPIRE', dedup, ttl) end
    out[#out+1] = id; out[#out+1] = 1
  else
    if maxlen ~= '0' then
      id = redis.pcall('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'user', ARGV[a], 'message', ARGV[a+1], 'client_id', ARGV[a+2])
    else
      id = redis.pcall('XADD', stream, '*', 'user', ARGV[a], 'message', ARGV[a+1], 'client_id', ARGV[a+2])
    end
    if type(id) == 'table' and id.err then
      out[#out+1] = id.err; out[#out+1] = 2
    else
      redis.call('SET', dedup, id, 'PX', px)
      out[#out+1] = id; out[#out+1] = 0
    end
  end
end
return out
`)

// scriptGroup is the client_id appends of a batch sent in one
// appendDedupMany call.
type scriptGroup struct {
	calls  []*appendCall
	eval   *redis.Cmd
	resent bool // Redis had forgotten the script: sent again whole, results read then
}

// groupKey says which client_id appends may share one script call. A
// script's keys must all be in one Cluster slot, and a room's keys are (its
// name is their hash tag): with a ClusterClient, or any client this code
// does not know to talk to one node, appends share a call only within a
// room. A single node (or Sentinel's master) takes every room in one call.
func (s *Store) groupKey(room string) string {
	if _, single := s.rdb.(*redis.Client); single {
		return ""
	}
	return room
}

// groupScripts splits the client_id appends of calls into script groups, in
// order, at most maxScriptEntries each.
func (s *Store) groupScripts(calls []*appendCall) []*scriptGroup {
	var groups []*scriptGroup
	open := map[string]*scriptGroup{}
	for _, c := range calls {
		k := s.groupKey(c.room)
		g := open[k]
		if g == nil || len(g.calls) == maxScriptEntries {
			g = &scriptGroup{}
			open[k] = g
			groups = append(groups, g)
		}
		g.calls = append(g.calls, c)
		c.group, c.slot = g, len(g.calls)-1
	}
	return groups
}

// queueScript adds one group's script call to pipe, by SHA or, when
// withSource, whole.
func (s *Store) queueScript(ctx context.Context, pipe redis.Pipeliner, g *scriptGroup, withSource bool) {
	keys := make([]string, 0, 2*len(g.calls))
	args := make([]any, 0, 2+3*len(g.calls))
	args = append(args, s.maxLen, s.dedup.Milliseconds())
	for _, c := range g.calls {
		keys = append(keys, s.keys.Messages(c.room), s.keys.Dedup(c.room, c.m.User, c.m.ClientID))
		args = append(args, c.m.User, c.m.Text, c.m.ClientID)
	}
	if withSource {
		g.eval = appendDedupMany.Eval(ctx, pipe, keys, args...)
	} else {
		g.eval = appendDedupMany.EvalSha(ctx, pipe, keys, args...)
	}
}

// scriptResult reads c's pair of its group's reply: raw ID and whether it
// is a duplicate.
func scriptResult(c *appendCall, execErr error) (raw string, dup bool, err error) {
	res := c.group.eval.Val()
	if err := cmdErr(c.group.eval.Err(), res == nil, execErr); err != nil {
		return "", false, err
	}
	pairs, ok := res.([]any)
	if !ok || len(pairs) != 2*len(c.group.calls) {
		return "", false, fmt.Errorf("unexpected reply %v", res)
	}
	raw, _ = pairs[2*c.slot].(string)
	flag, _ := pairs[2*c.slot+1].(int64)
	switch flag {
	case 0, 1:
		return raw, flag == 1, nil
	default:
		return "", false, errors.New(raw)
	}
}

// touchRooms records the activity of every room of a batch in one ZADD
// (the rooms set is one key).
func (s *Store) touchRooms(ctx context.Context, pipe redis.Pipeliner, rooms []string) {
	if len(rooms) == 0 {
		return
	}
	now := float64(time.Now().UnixMilli())
	members := make([]redis.Z, len(rooms))
	for i, r := range rooms {
		members[i] = redis.Z{Score: now, Member: r}
	}
	pipe.ZAdd(ctx, s.keys.Rooms(), members...)
}
