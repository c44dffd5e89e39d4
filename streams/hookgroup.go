package streams

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Webhook delivery's Redis side (the hooks package drives it): progress
// lives in Redis, not in a process. Each room's stream has a consumer group,
// HookGroupName; each xroom instance is a consumer in it; an entry is
// acknowledged (XACK) only once the webhook took it, and a batch whose
// consumer died is claimed by another after ClaimAfter (XAUTOCLAIM). See
// hookscripts.go for how one room stays in order across instances.

// HookGroupName is the consumer group webhook delivery reads every room
// with (XINFO GROUPS chat:{ROOM}:messages shows it).
const HookGroupName = "xroom-hooks"

// HookStart is where a room's group starts when it is first made.
type HookStart int

const (
	// HookFromEnabled: messages stored since webhooks were first turned on
	// for this prefix (Keys.HooksSince), so turning them on for a deployment
	// with years of history does not replay it all.
	HookFromEnabled HookStart = iota
	// HookFromStart: every message still in the room's history.
	HookFromStart
)

// HookGroupOptions configure a HookGroup.
type HookGroupOptions struct {
	Consumer   string        // this instance's name in every room's group
	ClaimAfter time.Duration // how long another consumer's batch may sit idle before it is taken
	Batch      int           // the most entries one batch holds
	From       HookStart
}

// HookGroup reads rooms for the webhook as one consumer of their groups.
type HookGroup struct {
	store *Store
	opt   HookGroupOptions

	mu    sync.Mutex
	start string // the ID new groups start after; "" until Prepare
}

// HookGroup returns the store's webhook reader for opt.Consumer.
func (s *Store) HookGroup(opt HookGroupOptions) *HookGroup {
	orDefault(&opt.Batch, 100)
	orDefault(&opt.ClaimAfter, 30*time.Second)
	return &HookGroup{store: s, opt: opt}
}

// Consumer is this instance's name in the groups.
func (g *HookGroup) Consumer() string { return g.opt.Consumer }

// Prepare finds where new groups start: at the time webhooks were first
// turned on, recorded in Redis now if this is that time (Redis's clock,
// the one stream IDs are made with), or at the start of each room.
func (g *HookGroup) Prepare(ctx context.Context) error {
	rdb, key := g.store.rdb, g.store.keys.HooksSince()
	now, err := rdb.Time(ctx).Result()
	if err != nil {
		return fmt.Errorf("TIME: %w", err)
	}
	if err := rdb.SetNX(ctx, key, now.UnixMilli(), 0).Err(); err != nil {
		return fmt.Errorf("SET %s NX: %w", key, err)
	}
	raw, err := rdb.Get(ctx, key).Result()
	if err != nil {
		return fmt.Errorf("GET %s: %w", key, err)
	}
	ms, err := strconv.ParseUint(raw, 10, 64)
	if err != nil {
		return fmt.Errorf("%s holds %q, not Unix milliseconds", key, raw)
	}
	start := "0"
	if g.opt.From == HookFromEnabled && ms > 0 {
		start = ID{Ms: ms}.Prev().String()
	}
	g.mu.Lock()
	g.start = start
	g.mu.Unlock()
	return nil
}

// startID is the ID new groups start after, as Prepare found it.
func (g *HookGroup) startID() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.start
}

// HookBatch is a room's next entries for the webhook, oldest first. This
// consumer holds them (no other takes them while Hold renews them) until
// Ack or Bury.
type HookBatch struct {
	Room    string
	Entries []Entry // entries without a message field are included: acknowledge them too
	// ClaimedFrom names the consumer the batch was taken from, when it had
	// sat idle for ClaimAfter; "" for new entries.
	ClaimedFrom string
	// Pending: the batch was pending already (claimed, or this consumer's
	// own read again), so newer entries may be waiting behind it.
	Pending bool
}

// IDs lists the batch's entry IDs.
func (b *HookBatch) IDs() []ID {
	ids := make([]ID, len(b.Entries))
	for i := range b.Entries {
		ids[i] = b.Entries[i].ID
	}
	return ids
}

// ErrRoomBusy means another consumer holds the room's batch (see BusyError).
var ErrRoomBusy = errors.New("another instance is delivering the room")

// BusyError is the room's holder and when to look again: when its batch
// will have been idle for ClaimAfter unless the holder renews it.
type BusyError struct {
	Holder  string
	RetryIn time.Duration
}

func (e *BusyError) Error() string {
	return fmt.Sprintf("%v: %s (look again in %s)", ErrRoomBusy, e.Holder, e.RetryIn)
}

func (e *BusyError) Is(target error) bool { return target == ErrRoomBusy }

// Next returns the room's next batch, making the room's group the first
// time (without making the stream: a room that does not exist has
// nothing). An empty batch means nothing is waiting; an error wrapping
// ErrRoomBusy that another consumer is delivering the room.
func (g *HookGroup) Next(ctx context.Context, room string) (HookBatch, error) {
	b := HookBatch{Room: room}
	start := g.startID()
	if start == "" {
		return b, errors.New("webhook group: Prepare has not run")
	}
	key := g.store.keys.Messages(room)
	res, err := hookNext.Run(ctx, g.store.rdb, []string{key}, HookGroupName, g.opt.Consumer,
		g.opt.ClaimAfter.Milliseconds(), g.opt.Batch, start).Slice()
	if err != nil {
		return b, fmt.Errorf("read %s for the webhook: %w", key, err)
	}
	switch kind := asString(res[0]); kind {
	case "none":
		return b, nil
	case "new", "mine", "claimed":
		b.Entries, b.Pending = scriptEntries(res[1]), kind != "new"
		if kind == "claimed" && len(res) > 2 {
			b.ClaimedFrom = asString(res[2])
		}
		return b, nil
	case "busy":
		idle, _ := res[2].(int64)
		return b, &BusyError{Holder: asString(res[1]), RetryIn: max(g.opt.ClaimAfter-time.Duration(idle)*time.Millisecond, 0) + 10*time.Millisecond}
	default:
		return b, fmt.Errorf("read %s for the webhook: unexpected reply %v", key, res)
	}
}

// scriptEntries reads entries as a script returns them: {id, {field,
// value, ...}}, the fields nil when the entry was trimmed away since.
func scriptEntries(v any) []Entry {
	raw, _ := v.([]any)
	out := make([]Entry, 0, len(raw))
	for _, r := range raw {
		pair, _ := r.([]any)
		if len(pair) == 0 {
			continue
		}
		m := redis.XMessage{ID: asString(pair[0]), Values: map[string]any{}}
		if len(pair) > 1 {
			fields, _ := pair[1].([]any)
			for i := 0; i+1 < len(fields); i += 2 {
				m.Values[asString(fields[i])] = fields[i+1]
			}
		}
		out = append(out, toEntry(m))
	}
	return out
}

// Ack acknowledges ids: the webhook took them.
func (g *HookGroup) Ack(ctx context.Context, room string, ids []ID) error {
	if len(ids) == 0 {
		return nil
	}
	key := g.store.keys.Messages(room)
	if err := g.store.rdb.XAck(ctx, key, HookGroupName, idStrings(ids)...).Err(); err != nil {
		return fmt.Errorf("XACK %s: %w", key, err)
	}
	return nil
}

// Hold renews this consumer's claim on a batch it is delivering, so that
// it is not taken as abandoned. false: the batch is no longer this
// consumer's (it was idle too long and another took it, or it was acked).
func (g *HookGroup) Hold(ctx context.Context, room string, ids []ID) (bool, error) {
	if len(ids) == 0 {
		return false, nil
	}
	key := g.store.keys.Messages(room)
	args := append([]any{HookGroupName, g.opt.Consumer}, anyStrings(ids)...)
	n, err := hookHold.Run(ctx, g.store.rdb, []string{key}, args...).Int()
	if err != nil {
		return false, fmt.Errorf("renew the webhook batch of %s: %w", key, err)
	}
	return n == 1, nil
}

// Failure is why a batch goes to the dead letters.
type Failure struct {
	Status   int    // the webhook's last HTTP status; 0 when it gave none
	Error    string // the last error
	Attempts int
}

// Bury moves a batch the webhook refused too often to the room's
// dead-letter stream (Keys.Dead) and acknowledges it, so that the room
// goes on. false: the batch is no longer this consumer's, and nothing was
// done.
func (g *HookGroup) Bury(ctx context.Context, room string, entries []Entry, why Failure) (bool, error) {
	if len(entries) == 0 {
		return false, nil
	}
	keys := []string{g.store.keys.Messages(room), g.store.keys.Dead(room)}
	args := []any{HookGroupName, g.opt.Consumer, g.store.maxLen, why.Status, why.Error, why.Attempts}
	for _, e := range entries {
		args = append(args, e.ID.String(), e.User, e.Message, e.ClientID)
	}
	n, err := hookBury.Run(ctx, g.store.rdb, keys, args...).Int()
	if err != nil {
		return false, fmt.Errorf("move the webhook batch of %s to %s: %w", keys[0], keys[1], err)
	}
	return n == 1, nil
}

// LeaveAll removes this consumer from the groups of rooms where it holds
// nothing (a graceful stop), so that consumers of instances long gone do
// not pile up in XINFO CONSUMERS. One pipeline per leaveChunk rooms.
func (g *HookGroup) LeaveAll(ctx context.Context, rooms []string) error {
	for len(rooms) > 0 {
		n := min(len(rooms), leaveChunk)
		pipe := g.store.rdb.Pipeline()
		for _, room := range rooms[:n] {
			hookLeave.Eval(ctx, pipe, []string{g.store.keys.Messages(room)}, HookGroupName, g.opt.Consumer)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("leave the webhook groups: %w", err)
		}
		rooms = rooms[n:]
	}
	return nil
}

// leaveChunk bounds one LeaveAll pipeline.
const leaveChunk = 500

func idStrings(ids []ID) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id.String()
	}
	return out
}

func anyStrings(ids []ID) []any {
	out := make([]any, len(ids))
	for i, id := range ids {
		out[i] = id.String()
	}
	return out
}
