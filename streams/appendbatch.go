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

// appendDedupMany stores the client_id appends of a batch, in order, in
// one script call (whose own cost is most of a dedup append's Redis CPU).
// KEYS are pairs (stream, dedup key), ARGV is MAXLEN (0: none), the dedup
// window in ms, then user, message and client_id of each append. It
// returns a pair per append: the ID and 0 (stored), the first ID and 1
// (duplicate, stored nothing), or an error message and 2 (that append
// failed; the others are unaffected). Appends are checked one after
// another, so a client_id sent twice in one call is stored once. With
// Redis Cluster every key of one call must be in one slot: see groupKey.
//
// A first send, the common case, costs two commands: XADD, then SET NX
// GET of the dedup key to the new ID. Only a resend finds the key taken;
// it then takes its XADD back (unadd). Checking first (GET, then XADD and
// SET) cost every send a third command to spare resends, which are rare.
var appendDedupMany = redis.NewScript(`
-- unadd takes back the entry id just added to stream, leaving the stream
-- as it was: XDEL alone would count a deletion (entries-added and
-- max-deleted-entry-id), which a resuming client reads as a gap.
local function unadd(stream, id)
  local info = redis.pcall('XINFO', 'STREAM', stream)
  redis.call('XDEL', stream, id)
  if type(info) ~= 'table' or info.err then return end
  local added, maxdel
  for j = 1, #info, 2 do
    if info[j] == 'entries-added' then added = info[j+1]
    elseif info[j] == 'max-deleted-entry-id' then maxdel = info[j+1] end
  end
  -- XSETID cannot set 0-0 back: 0-1 stands for "none" (noDeletion).
  if maxdel == '0-0' then maxdel = '0-1' end
  if added and maxdel then
    redis.pcall('XSETID', stream, id, 'ENTRIESADDED', added - 1, 'MAXDELETEDID', maxdel)
  end
end
local out = {}
local maxlen, px = ARGV[1], ARGV[2]
for i = 1, #KEYS / 2 do
  local stream, dedup, a = KEYS[2*i-1], KEYS[2*i], 3*i
  local id
  if maxlen ~= '0' then
    id = redis.pcall('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'user', ARGV[a], 'message', ARGV[a+1], 'client_id', ARGV[a+2])
  else
    id = redis.pcall('XADD', stream, '*', 'user', ARGV[a], 'message', ARGV[a+1], 'client_id', ARGV[a+2])
  end
  if type(id) == 'table' and id.err then
    out[#out+1] = id.err; out[#out+1] = 2
  else
    local first = redis.pcall('SET', dedup, id, 'NX', 'GET', 'PX', px)
    if type(first) == 'string' then
      unadd(stream, id) -- a resend: the first ID stands
      out[#out+1] = first; out[#out+1] = 1
    elseif type(first) == 'table' and first.err then
      unadd(stream, id) -- cannot be deduplicated: store nothing
      out[#out+1] = first.err; out[#out+1] = 2
    else
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

// touches are a batch's writes to the users' room indexes, queued only for
// the pairs that are due (recently.go), with how to forget a pair whose
// write failed.
type touches []touched

type touched struct {
	cmd    *redis.IntCmd
	forget func()
}

// touch notes the batch's rooms that are due for the rooms list (written
// by flushRooms), and queues, in the batch's pipeline, the users' room
// indexes (touchWriters).
func (s *Store) touch(ctx context.Context, pipe redis.Pipeliner, calls []*appendCall, rooms []string) touches {
	now := time.Now()
	for _, r := range rooms {
		if s.listed.due(r, now) {
			s.roomsDue.add(s, r, now)
		}
	}
	return s.touchWriters(ctx, pipe, calls, now)
}

// settle forgets the keys whose write failed, so that the next append
// makes it again. Call it once the pipeline ran.
func (t touches) settle() {
	for _, x := range t {
		if x.cmd.Err() != nil {
			x.forget()
		}
	}
}
