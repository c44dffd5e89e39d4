package streams

// Recovery, decided in one place: a joining client's position in, the
// plan of what it is sent out (the gaps to announce, where the replay
// starts and ends, the room's epoch). The rules are docs/protocol.md's
// "Choose the starting point"; the caller only turns the plan into frames.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// Position is a place in a room's history as a client holds it: the last
// entry it has and the epoch of the history that entry belongs to (the
// epoch of its last ready frame).
type Position struct {
	ID    ID
	Epoch string // "": the client gave none
}

// Resume is what a joining client asks for.
type Resume struct {
	// At is the client's position: since= (or Last-Event-ID) and epoch=.
	// At.ID counts only with Since; At.Epoch counts whenever it is given.
	At Position
	// Since: the client gave At.ID. Without it there is nothing to resume:
	// the join shows the newest ResumeLimits.HistoryOnJoin entries.
	Since bool
	// EventID: At.ID came as an SSE Last-Event-ID. That moves on while
	// the epoch in the EventSource's URL stays what it was, past a reset
	// the stream was already told of: a differing epoch is then stale only
	// if the room's stream no longer holds At.ID.
	EventID bool
}

// ResumeLimits bound what a join is sent. Zero turns HistoryOnJoin's
// history and MaxReplay's cap off.
type ResumeLimits struct {
	HistoryOnJoin int // entries shown to a client without since
	MaxReplay     int // entries one replay may send; beyond it only the newest
}

// GapReason says why entries the client asked for are not all sent.
type GapReason int

const (
	// GapTrimmed: entries after the position may have been trimmed or
	// deleted (History.Trimmed).
	GapTrimmed GapReason = iota + 1
	// GapReset: the history the position belongs to is gone (another
	// epoch, or an ID the stream never handed out): the replay starts over
	// from the oldest entry.
	GapReset
	// GapLimited: the replay was capped at MaxReplay; older entries are
	// still in Redis.
	GapLimited
)

// String is the reason as the gap frame names it (docs/protocol.md).
func (r GapReason) String() string {
	switch r {
	case GapTrimmed:
		return "trimmed"
	case GapReset:
		return "reset"
	case GapLimited:
		return "limited"
	}
	return "GapReason(" + strconv.Itoa(int(r)) + ")"
}

// Gap is one gap to announce before the replay.
type Gap struct {
	Reason GapReason
	// Oldest is the oldest retained entry (Zero when the room is empty);
	// for GapLimited, the first entry the replay sends.
	Oldest ID
}

// Start says where a joining connection's feed starts.
type Start int

const (
	// StartAtHead: no since and no history on join: nothing before the
	// live entries, which follow the subscription's head.
	StartAtHead Start = iota
	// StartWithNewest: no since: Plan.Newest, then live.
	StartWithNewest
	// StartAfter: a replay of the entries after Plan.After up to
	// Plan.Until, then live.
	StartAfter
)

// Plan is what a joining connection is sent, decided by PlanResume.
type Plan struct {
	// Epoch is the room's epoch now: the one ready carries.
	Epoch string
	// Gaps are announced first, in this order: a trimmed or reset gap,
	// then a limited one.
	Gaps  []Gap
	Start Start
	// After is where the connection's cursor starts: with StartAfter the
	// replay sends the entries after it; with StartWithNewest it is the
	// newest of Newest (Zero when there are none).
	After ID
	// Until is the end of a StartAfter replay: the room's newest entry at
	// plan time, in Redis, however far behind the room's tail is. Entries
	// after it are live, and come after ready.
	Until ID
	// Newest are, with StartWithNewest, the room's newest HistoryOnJoin
	// entries, oldest first, without Frame. Entries without a message count
	// toward that number.
	Newest []Entry
	// seen is the History the gaps were judged by (nil: the replay starts
	// at the oldest entry, nothing before it can be missing); see Joined.
	seen *History
}

// PlanResume decides how a client joining room at r is brought up to date,
// by the rules of docs/protocol.md (in this order): an epoch that is not
// the room's means the history r knew is gone (GapReset, every retained
// entry); no since shows the newest history; since=0 replays everything;
// a since the stream never handed out starts over as after a reset; a
// since before what is retained gets GapTrimmed; and any replay longer
// than MaxReplay is cut to its newest entries (GapLimited).
//
// It creates the room's epoch if the room has none.
func (s *Store) PlanResume(ctx context.Context, room string, r Resume, limits ResumeLimits) (Plan, error) {
	epoch, err := s.Epoch(ctx, room)
	if err != nil {
		return Plan{}, err
	}
	p := Plan{Epoch: epoch}
	if r.At.Epoch != "" && r.At.Epoch != epoch {
		stale, err := s.staleEpoch(ctx, room, r)
		if err != nil {
			return Plan{}, err
		}
		if stale {
			h, err := s.History(ctx, room)
			if err != nil {
				return Plan{}, err
			}
			return s.restart(ctx, room, p, h.Oldest, limits)
		}
	}
	if !r.Since {
		return s.newest(ctx, room, p, limits.HistoryOnJoin)
	}
	p.After = r.At.ID
	if r.At.ID.IsZero() {
		return s.replay(ctx, room, p, nil, limits)
	}
	h, err := s.History(ctx, room)
	if err != nil {
		return Plan{}, err
	}
	if h.Beyond(r.At.ID) {
		// Newer than anything the room's stream handed out: a position in
		// another life of the room (its keys deleted or flushed without the
		// client passing epoch, a failover that lost the newest entries, a
		// made-up ID). Waiting for entries after it would leave the
		// connection silent.
		return s.restart(ctx, room, p, h.Oldest, limits)
	}
	if h.Trimmed(r.At.ID) {
		p.Gaps = append(p.Gaps, Gap{Reason: GapTrimmed, Oldest: h.Oldest})
	}
	return s.replay(ctx, room, p, &h, limits)
}

// staleEpoch decides, when the epoch r gives is not the room's, whether the
// client's history is gone. It is, unless r.At.ID came as an SSE
// Last-Event-ID naming an entry the stream holds (Resume.EventID).
func (s *Store) staleEpoch(ctx context.Context, room string, r Resume) (bool, error) {
	if !r.EventID || !r.Since || r.At.ID.IsZero() {
		return true, nil
	}
	held, err := s.Holds(ctx, room, r.At.ID)
	return !held, err
}

// restart plans a replay of every retained entry after a GapReset: the
// history the client knew is gone.
func (s *Store) restart(ctx context.Context, room string, p Plan, oldest ID, limits ResumeLimits) (Plan, error) {
	p.After = Zero
	p.Gaps = append(p.Gaps, Gap{Reason: GapReset, Oldest: oldest})
	return s.replay(ctx, room, p, nil, limits)
}

// newest plans a join without since: the newest n entries, or none.
func (s *Store) newest(ctx context.Context, room string, p Plan, n int) (Plan, error) {
	if n == 0 {
		p.Start = StartAtHead
		return p, nil
	}
	es, err := s.RevRange(ctx, room, MaxID, n)
	if err != nil {
		return Plan{}, err
	}
	slices.Reverse(es)
	p.Start, p.Newest = StartWithNewest, es
	if len(es) > 0 {
		p.After = es[len(es)-1].ID
	}
	return p, nil
}

// replay plans a replay from p.After to the stream's newest entry, cut to
// MaxReplay entries. seen, when the plan has read the stream's state
// already, saves asking Redis again.
func (s *Store) replay(ctx context.Context, room string, p Plan, seen *History, limits ResumeLimits) (Plan, error) {
	p.Start, p.seen = StartAfter, seen
	if seen != nil {
		p.Until = seen.Last // last-generated-id: if deleted, the replay ends at what remains
	} else {
		last, err := s.Last(ctx, room)
		if err != nil {
			return Plan{}, err
		}
		p.Until = last
	}
	if limits.MaxReplay <= 0 {
		return p, nil
	}
	start, first, limited, err := s.ReplayStart(ctx, room, p.After, limits.MaxReplay)
	if err != nil || !limited {
		return p, err
	}
	p.After = start
	p.Gaps = append(p.Gaps, Gap{Reason: GapLimited, Oldest: first})
	return p, nil
}

// Joined tells the subscription the plan its connection joined by: a new
// epoch drops what the room's buffer holds of the old history, and a
// replay's first catch-up read does not announce again what the plan's
// gaps did (gapChecked), only what was trimmed after the plan looked.
func (s *Subscription) Joined(p Plan) {
	s.sawEpoch(p.Epoch)
	if p.Start == StartAfter {
		s.gapChecked(p.After, p.seen)
	}
}

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
