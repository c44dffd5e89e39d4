package streams

import "github.com/redis/go-redis/v9"

// The Lua side of webhook delivery (hookgroup.go). Each script touches one
// room's keys only (its stream and its dead letters share the slot {ROOM}),
// so it runs on a Redis Cluster too, and atomically: that is what lets the
// group's pending entries act as the room's lease.

// hookNext hands the caller a room's next batch. KEYS[1] is the stream;
// ARGV: group, consumer, claim-after (ms), count, the group's start ID.
//
// A room is delivered by one consumer at a time, in order: new entries
// ('>') are read only when nothing is pending, so pending entries are
// always one batch of one consumer. When they are someone else's and have
// been idle for claim-after (the holder renews them while it lives: see
// hookHold), they are claimed, oldest first, and the consumer they were
// taken from is removed once it holds nothing (so is one whose entries were
// all trimmed away meanwhile: then new entries are read). When they are the caller's
// own (it lost track of them), they are read again. Otherwise the room is
// busy: the reply names the holder and how long its batch has been idle.
//
// Replies: {'none'}, {'new', entries}, {'claimed', entries, from},
// {'mine', entries}, {'busy', holder, idle-ms}.
var hookNext = redis.NewScript(`
local stream, group, me = KEYS[1], ARGV[1], ARGV[2]
local p = redis.pcall('XPENDING', stream, group)
if type(p) == 'table' and p.err then
  if redis.call('EXISTS', stream) == 0 then return {'none'} end
  local made = redis.pcall('XGROUP', 'CREATE', stream, group, ARGV[5])
  if type(made) == 'table' and made.err and not string.find(made.err, 'BUSYGROUP') then
    return redis.error_reply(made.err)
  end
  p = redis.call('XPENDING', stream, group)
end
if p[1] > 0 then
  for _, c in ipairs(p[4]) do
    if c[1] == me then
      local r = redis.call('XREADGROUP', 'GROUP', group, me, 'COUNT', ARGV[4], 'STREAMS', stream, '0')
      return {'mine', r[1][2]}
    end
  end
  local got = redis.call('XAUTOCLAIM', stream, group, me, ARGV[3], '0-0', 'COUNT', ARGV[4])
  local now = redis.call('XPENDING', stream, group)
  local left = {}
  for _, c in ipairs(now[4] or {}) do left[c[1]] = true end
  for _, c in ipairs(p[4]) do
    if not left[c[1]] and c[1] ~= me then redis.call('XGROUP', 'DELCONSUMER', stream, group, c[1]) end
  end
  if #got[2] > 0 then return {'claimed', got[2], p[4][1][1]} end
  if now[1] > 0 then
    local oldest = redis.call('XPENDING', stream, group, '-', '+', 1)
    return {'busy', oldest[1][2], oldest[1][3]}
  end
  -- what was pending had been trimmed away (XAUTOCLAIM dropped it): read on
end
local r = redis.call('XREADGROUP', 'GROUP', group, me, 'COUNT', ARGV[4], 'STREAMS', stream, '>')
if not r then return {'none'} end
return {'new', r[1][2]}
`)

// hookHold renews the caller's claim on its batch, so that nobody takes it
// while it is being delivered (however long the retries take). KEYS[1] is
// the stream; ARGV: group, consumer, then the batch's IDs in order. It
// returns 1, or 0 when the batch is no longer the caller's (claimed by
// another consumer after claim-after, or acknowledged).
var hookHold = redis.NewScript(`
local stream, group, me = KEYS[1], ARGV[1], ARGV[2]
local n = #ARGV - 2
local mine = redis.pcall('XPENDING', stream, group, ARGV[3], ARGV[#ARGV], n, me)
if type(mine) == 'table' and mine.err then return 0 end
if #mine ~= n then return 0 end
local args = {stream, group, me, 0}
for i = 3, #ARGV do args[#args+1] = ARGV[i] end
args[#args+1] = 'JUSTID' -- after the IDs: unpack() mid-list would pass its first value only
redis.call('XCLAIM', unpack(args))
return 1
`)

// hookBury moves the caller's batch to the dead-letter stream and
// acknowledges it, in one step, unless the batch is no longer the
// caller's. KEYS: the stream, the dead-letter stream. ARGV: group,
// consumer, MAXLEN of the dead letters (0: none), status, error, attempts,
// then per entry: id, user, message, client_id. Returns 1, or 0 (not the
// caller's: whoever has it delivers it).
var hookBury = redis.NewScript(`
local stream, dead, group, me = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local ids = {}
for i = 7, #ARGV, 4 do ids[#ids+1] = ARGV[i] end
local mine = redis.pcall('XPENDING', stream, group, ids[1], ids[#ids], #ids, me)
if type(mine) == 'table' and mine.err then return 0 end
if #mine ~= #ids then return 0 end
for i = 7, #ARGV, 4 do
  local fields = {'id', ARGV[i], 'user', ARGV[i+1], 'message', ARGV[i+2], 'client_id', ARGV[i+3],
    'status', ARGV[4], 'error', ARGV[5], 'attempts', ARGV[6]}
  if ARGV[3] ~= '0' then
    redis.call('XADD', dead, 'MAXLEN', '~', ARGV[3], '*', unpack(fields))
  else
    redis.call('XADD', dead, '*', unpack(fields))
  end
end
redis.call('XACK', stream, group, unpack(ids))
return 1
`)

// hookLeave removes the caller from the room's group when it holds
// nothing there (a graceful stop), so consumers of instances long gone do
// not pile up in XINFO CONSUMERS. KEYS[1] is the stream; ARGV: group,
// consumer.
var hookLeave = redis.NewScript(`
local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if type(p) == 'table' and p.err then return 0 end
if #p > 0 then return 0 end
redis.pcall('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
`)
