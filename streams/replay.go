package streams

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// replayBoundary finds, in Redis, the newest ARGV[2]+1 entries after ARGV[1]
// and returns the IDs of the two oldest of them, or false when there are not
// that many: only two IDs cross the network, however long the replay.
var replayBoundary = redis.NewScript(`
local r = redis.call('XREVRANGE', KEYS[1], '+', ARGV[1], 'COUNT', tonumber(ARGV[2]) + 1)
if #r <= tonumber(ARGV[2]) then return false end
return {r[#r][1], r[#r - 1][1]}
`)

// ReplayStart bounds a replay of the entries after since to the newest most
// of them. When more than most entries follow since, limited is true, start
// is the ID to replay after and first is the oldest entry that replay sends.
func (s *Store) ReplayStart(ctx context.Context, room string, since ID, most int) (start, first ID, limited bool, err error) {
	key := s.keys.Messages(room)
	n, err := s.rdb.XLen(ctx, key).Result()
	if err != nil {
		return since, Zero, false, fmt.Errorf("length of %s: %w", key, err)
	}
	if n <= int64(most) || since == MaxID {
		return since, Zero, false, nil
	}
	res, err := replayBoundary.Run(ctx, s.rdb, []string{key}, since.Next().String(), strconv.Itoa(most)).StringSlice()
	if errors.Is(err, redis.Nil) {
		return since, Zero, false, nil
	}
	if err != nil {
		return since, Zero, false, fmt.Errorf("replay bound of %s: %w", key, err)
	}
	if len(res) != 2 {
		return since, Zero, false, fmt.Errorf("replay bound of %s: unexpected reply %q", key, res)
	}
	if start, err = ParseID(res[0]); err == nil {
		first, err = ParseID(res[1])
	}
	if err != nil {
		return since, Zero, false, fmt.Errorf("replay bound of %s: %w", key, err)
	}
	return start, first, true, nil
}
