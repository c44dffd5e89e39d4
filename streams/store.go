// Package streams keeps chat rooms in Redis Streams: key names, appends,
// history pages, and tailing rooms for live fan-out (see Hub). It knows
// nothing of HTTP or WebSockets.
package streams

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Entry is one stream entry as chat sees it.
type Entry struct {
	ID       ID
	User     string
	Message  string
	ClientID string
	// HasMessage is false for an entry without a "message" field (added by
	// something other than xroom): it keeps its place in the stream but is
	// never shown to clients.
	HasMessage bool
	// Frame is the entry encoded for clients by the Hub's encoder, shared by
	// every connection that sends it: never modify it.
	Frame []byte
}

// Time is when the entry was added, from its ID.
func (e *Entry) Time() time.Time { return time.UnixMilli(int64(e.ID.Ms)) }

// Message is what a user sends.
type Message struct {
	User     string
	Text     string
	ClientID string // optional; a repeat within the dedup window is not stored twice
}

// Options configure a Store.
type Options struct {
	Prefix      string        // key prefix, "chat" if empty
	MaxLen      int64         // approximate cap of each room's stream (MAXLEN ~); 0 means no cap
	DedupWindow time.Duration // how long a client_id is remembered; 0 means 10 minutes
	// AckReplicas: an append succeeds only once WAIT confirms this many
	// replicas have it (0: once the primary has it). AckTimeout bounds the
	// WAIT (0 means 1 s); past it the append fails with ErrNotReplicated.
	AckReplicas int
	AckTimeout  time.Duration
}

// Store reads and writes rooms in Redis.
type Store struct {
	rdb    redis.UniversalClient
	keys   Keys
	maxLen int64
	dedup  time.Duration
	// appended counts the messages stored, for metrics.
	appended atomic.Int64
	// notReplicated counts appends refused for want of replicas, for metrics.
	notReplicated atomic.Int64
	batch         coalescer // concurrent appends share pipelines
	ackReplicas   int
	ackTimeout    time.Duration
	writers       recently[userRoom] // pairs recently put in users' room indexes (unread.go)
	listed        recently[string]   // rooms whose score in the rooms list moved lately
	roomsDue      roomsDue           // rooms to write to the rooms list (roomslist.go)
	// tail is the hub that reads back this store's appends (readback.go).
	tail atomic.Pointer[Hub]
}

// NewStore returns a Store on rdb, which may be a single node, Sentinel or Cluster client.
func NewStore(rdb redis.UniversalClient, opt Options) *Store {
	if opt.Prefix == "" {
		opt.Prefix = "chat"
	}
	if opt.DedupWindow <= 0 {
		opt.DedupWindow = 10 * time.Minute
	}
	if opt.AckTimeout <= 0 {
		opt.AckTimeout = defaultAckTimeout
	}
	return &Store{rdb: rdb, keys: Keys{opt.Prefix}, maxLen: opt.MaxLen, dedup: opt.DedupWindow, ackReplicas: opt.AckReplicas, ackTimeout: opt.AckTimeout,
		writers: recently[userRoom]{every: writerRefresh}, listed: recently[string]{every: roomTouchEvery}}
}

// Keys returns the key names the store uses.
func (s *Store) Keys() Keys { return s.keys }

// Client returns the Redis client the store uses.
func (s *Store) Client() redis.UniversalClient { return s.rdb }

// Append stores m in the room and returns its ID. When m.ClientID was
// already stored by the same user within the dedup window, it returns the
// first ID and duplicate=true, and stores nothing. Concurrent appends are
// sent together in one pipeline.
func (s *Store) Append(ctx context.Context, room string, m Message) (id ID, duplicate bool, err error) {
	return s.appendCoalesced(ctx, room, m) // see appender.go
}

// runScript runs script in a pipeline together with extra commands, loading
// the script when Redis does not know it (after a restart or failover).
func (s *Store) runScript(ctx context.Context, script *redis.Script, keys []string, args []any, extra func(redis.Pipeliner)) (any, error) {
	for attempt := 0; ; attempt++ {
		pipe := s.rdb.Pipeline()
		var cmd *redis.Cmd
		if attempt == 0 {
			cmd = script.EvalSha(ctx, pipe, keys, args...)
		} else {
			cmd = script.Eval(ctx, pipe, keys, args...)
		}
		if extra != nil {
			extra(pipe)
		}
		_, execErr := pipe.Exec(ctx) // the script's outcome is what counts; extras are advisory
		if attempt == 0 && noScript(cmd.Err()) {
			continue
		}
		return cmd.Val(), cmdErr(cmd.Err(), cmd.Val() == nil, execErr)
	}
}

// cmdErr is the error of one command in a pipeline: its own, or the
// pipeline's when the command got no reply at all.
func cmdErr(own error, noReply bool, pipeline error) error {
	if own != nil {
		return own
	}
	if noReply && pipeline != nil {
		return pipeline
	}
	if noReply {
		return errors.New("no reply from Redis")
	}
	return nil
}

// Range returns up to count entries after the given ID, oldest first.
func (s *Store) Range(ctx context.Context, room string, after ID, count int) ([]Entry, error) {
	if after == MaxID {
		return nil, nil
	}
	msgs, err := s.rdb.XRangeN(ctx, s.keys.Messages(room), after.Next().String(), "+", int64(count)).Result()
	if err != nil {
		return nil, fmt.Errorf("read %s after %s: %w", s.keys.Messages(room), after, err)
	}
	return toEntries(msgs), nil
}

// RevRange returns up to count entries before the given ID, newest first.
// Use MaxID for the newest entries.
func (s *Store) RevRange(ctx context.Context, room string, before ID, count int) ([]Entry, error) {
	if before.IsZero() {
		return nil, nil
	}
	end := "+"
	if before != MaxID {
		end = before.Prev().String()
	}
	msgs, err := s.rdb.XRevRangeN(ctx, s.keys.Messages(room), end, "-", int64(count)).Result()
	if err != nil {
		return nil, fmt.Errorf("read %s before %s: %w", s.keys.Messages(room), before, err)
	}
	return toEntries(msgs), nil
}

// Last returns the ID of the room's newest entry, or Zero when it has none.
func (s *Store) Last(ctx context.Context, room string) (ID, error) {
	e, err := s.RevRange(ctx, room, MaxID, 1)
	if err != nil || len(e) == 0 {
		return Zero, err
	}
	return e[0].ID, nil
}

func toEntries(msgs []redis.XMessage) []Entry {
	out := make([]Entry, len(msgs))
	for i, m := range msgs {
		out[i] = toEntry(m)
	}
	return out
}

func toEntry(m redis.XMessage) Entry {
	id, _ := ParseID(m.ID) // Redis only hands out well-formed IDs
	e := Entry{ID: id}
	e.User = field(m.Values, "user")
	e.ClientID = field(m.Values, "client_id")
	if v, ok := m.Values["message"]; ok {
		e.Message, e.HasMessage = asString(v), true
	}
	return e
}

func field(values map[string]any, name string) string {
	return asString(values[name])
}

func asString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case nil:
		return ""
	case []byte:
		return string(v)
	}
	return fmt.Sprint(v)
}

var getOrSetEpoch = redis.NewScript(`
local e = redis.call('GET', KEYS[1])
if e then return e end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
`)

// Epoch names the current incarnation of the room's history. It is created
// on first use, so when Redis loses the room (FLUSHALL, a restart without
// persistence) the room gets a new epoch and clients can tell.
func (s *Store) Epoch(ctx context.Context, room string) (string, error) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	fresh := strconv.FormatInt(time.Now().UnixMilli(), 36) + "-" + hex.EncodeToString(b[:4])
	res, err := s.runScript(ctx, getOrSetEpoch, []string{s.keys.Epoch(room)}, []any{fresh}, nil)
	if err != nil {
		return "", fmt.Errorf("epoch of %s: %w", room, err)
	}
	return asString(res), nil
}

// Ping checks that Redis answers.
func (s *Store) Ping(ctx context.Context) error {
	return s.rdb.Ping(ctx).Err()
}
