package streams_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/streams"
)

// hookGroup is a prepared webhook reader of e's store named consumer.
func (e *env) hookGroup(consumer string, claimAfter time.Duration, from streams.HookStart) *streams.HookGroup {
	e.t.Helper()
	g := e.store.HookGroup(streams.HookGroupOptions{Consumer: consumer, ClaimAfter: claimAfter, Batch: 100, From: from})
	if err := g.Prepare(ctx10(e.t)); err != nil {
		e.t.Fatal(err)
	}
	return g
}

func (e *env) addTagged(room string, n int, tag string) []streams.ID {
	e.t.Helper()
	ids := make([]streams.ID, n)
	for i := range ids {
		ids[i], _ = e.add(room, streams.Message{User: "u", Text: fmt.Sprintf("%s %d", tag, i)})
	}
	return ids
}

func mustNext(t *testing.T, g *streams.HookGroup, room string) streams.HookBatch {
	t.Helper()
	b, err := g.Next(ctx10(t), room)
	if err != nil {
		t.Fatalf("%s: Next(%s): %v", g.Consumer(), room, err)
	}
	return b
}

func wantBusy(t *testing.T, g *streams.HookGroup, room string) *streams.BusyError {
	t.Helper()
	b, err := g.Next(ctx10(t), room)
	var busy *streams.BusyError
	if !errors.As(err, &busy) || !errors.Is(err, streams.ErrRoomBusy) {
		t.Fatalf("%s: Next(%s) = %d entries, %v; want busy", g.Consumer(), room, len(b.Entries), err)
	}
	return busy
}

// One room is read by one consumer at a time: nobody reads new entries
// while a batch is pending, so a room's batches go out in order whichever
// instance sends them.
func TestHookGroupOneBatchAtATime(t *testing.T) {
	e := newEnv(t, streams.Options{})
	a := e.hookGroup("a", 10*time.Second, streams.HookFromStart)
	b := e.hookGroup("b", 10*time.Second, streams.HookFromStart)
	first := e.addTagged("r", 5, "first")

	got := mustNext(t, a, "r")
	if !slices.Equal(got.IDs(), first) || got.ClaimedFrom != "" || got.Pending {
		t.Fatalf("a got %v (claimed from %q), want %v", got.IDs(), got.ClaimedFrom, first)
	}
	e.addTagged("r", 3, "second")
	if busy := wantBusy(t, b, "r"); busy.Holder != "a" || busy.RetryIn <= 9*time.Second || busy.RetryIn > 10100*time.Millisecond {
		t.Fatalf("busy = %+v, want held by a for about the claim time", busy)
	}
	if err := a.Ack(ctx10(t), "r", got.IDs()); err != nil {
		t.Fatal(err)
	}
	next := mustNext(t, b, "r")
	if len(next.Entries) != 3 || next.Entries[0].Message != "second 0" || !first[4].Less(next.Entries[0].ID) {
		t.Fatalf("b got %+v, want the 3 newer entries", next.Entries)
	}
	if err := b.Ack(ctx10(t), "r", next.IDs()); err != nil {
		t.Fatal(err)
	}
	if rest := mustNext(t, a, "r"); len(rest.Entries) != 0 {
		t.Fatalf("after both acks a got %v", rest.IDs())
	}
}

// A batch whose consumer stopped renewing it is claimed after the claim
// time, whole and oldest first; the dead consumer leaves the group, and
// learns it lost the batch if it comes back.
func TestHookGroupClaimsAbandonedBatch(t *testing.T) {
	e := newEnv(t, streams.Options{})
	const claimAfter = 300 * time.Millisecond
	a := e.hookGroup("a", claimAfter, streams.HookFromStart)
	b := e.hookGroup("b", claimAfter, streams.HookFromStart)
	ids := e.addTagged("r", 4, "m")
	mustNext(t, a, "r")
	e.addTagged("r", 2, "later")

	// a renews its batch: b cannot take it however long that lasts.
	for range 4 {
		wantBusy(t, b, "r")
		time.Sleep(claimAfter / 3)
		if held, err := a.Hold(ctx10(t), "r", ids); err != nil || !held {
			t.Fatalf("Hold = %v, %v", held, err)
		}
	}
	// a stops (crashed): after the claim time b takes the same batch.
	busy := wantBusy(t, b, "r")
	time.Sleep(busy.RetryIn)
	got := mustNext(t, b, "r")
	if !slices.Equal(got.IDs(), ids) || got.ClaimedFrom != "a" || !got.Pending {
		t.Fatalf("b got %v claimed from %q, want a's %v", got.IDs(), got.ClaimedFrom, ids)
	}
	consumers, err := e.rdb.XInfoConsumers(ctx10(t), e.key("r"), streams.HookGroupName).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range consumers {
		if c.Name == "a" {
			t.Errorf("a is still in the group after losing its batch: %+v", consumers)
		}
	}
	if held, err := a.Hold(ctx10(t), "r", ids); err != nil || held {
		t.Fatalf("a's Hold after the claim = %v, %v; want false", held, err)
	}
	if buried, err := a.Bury(ctx10(t), "r", got.Entries, streams.Failure{Status: 500}); err != nil || buried {
		t.Fatalf("a's Bury after the claim = %v, %v; want false", buried, err)
	}
}

// A consumer that lost track of its own batch (it was not acked) gets it
// again at once.
func TestHookGroupOwnBatchAgain(t *testing.T) {
	e := newEnv(t, streams.Options{})
	a := e.hookGroup("a", time.Minute, streams.HookFromStart)
	ids := e.addTagged("r", 3, "m")
	mustNext(t, a, "r")
	again := mustNext(t, a, "r")
	if !slices.Equal(again.IDs(), ids) {
		t.Fatalf("again = %v, want %v", again.IDs(), ids)
	}
}

// By default a room's group starts when webhooks were first turned on
// (recorded in Redis once): older history is not sent, but a room first
// written after that is sent whole, though its group is made after its
// first entry.
func TestHookGroupStartsWhenEnabled(t *testing.T) {
	e := newEnv(t, streams.Options{})
	old := e.addTagged("old", 3, "before")
	time.Sleep(5 * time.Millisecond)
	g := e.hookGroup("a", time.Minute, streams.HookFromEnabled)
	since, err := e.rdb.Get(ctx10(t), streams.Keys{Prefix: e.prefix}.HooksSince()).Int64()
	if err != nil || since <= int64(old[2].Ms) {
		t.Fatalf("hooks:since = %d, %v; want after %s", since, err, old[2])
	}
	newer := e.addTagged("old", 2, "after")
	fresh := e.addTagged("fresh", 2, "new room")

	if got := mustNext(t, g, "old"); !slices.Equal(got.IDs(), newer) {
		t.Fatalf("old room: got %v, want only %v", got.IDs(), newer)
	}
	if got := mustNext(t, g, "fresh"); !slices.Equal(got.IDs(), fresh) {
		t.Fatalf("new room: got %v, want %v", got.IDs(), fresh)
	}
	// Another instance later keeps the first time.
	time.Sleep(5 * time.Millisecond)
	e.hookGroup("b", time.Minute, streams.HookFromEnabled)
	if again, _ := e.rdb.Get(ctx10(t), streams.Keys{Prefix: e.prefix}.HooksSince()).Int64(); again != since {
		t.Fatalf("hooks:since moved from %d to %d", since, again)
	}
	// From the start: the whole history of a room seen for the first time.
	e2 := newEnv(t, streams.Options{})
	all := e2.addTagged("old", 3, "before")
	if got := mustNext(t, e2.hookGroup("a", time.Minute, streams.HookFromStart), "old"); !slices.Equal(got.IDs(), all) {
		t.Fatalf("from the start: got %v, want %v", got.IDs(), all)
	}
}

// A poison batch goes to the dead letters, with why, and is acknowledged:
// the room goes on.
func TestHookGroupBury(t *testing.T) {
	e := newEnv(t, streams.Options{})
	g := e.hookGroup("a", time.Minute, streams.HookFromStart)
	poison := e.addTagged("r", 2, "poison")
	b := mustNext(t, g, "r")
	after := e.addTagged("r", 1, "fine")
	why := streams.Failure{Status: 500, Error: "HTTP 500: boom", Attempts: 3}
	if buried, err := g.Bury(ctx10(t), "r", b.Entries, why); err != nil || !buried {
		t.Fatalf("Bury = %v, %v", buried, err)
	}
	if next := mustNext(t, g, "r"); !slices.Equal(next.IDs(), after) {
		t.Fatalf("after the bury: got %v, want %v", next.IDs(), after)
	}
	dead, err := e.store.DeadLetters(ctx10(t), "r", streams.Zero, 10)
	if err != nil || len(dead) != 2 {
		t.Fatalf("DeadLetters = %+v, %v", dead, err)
	}
	for i, d := range dead {
		if d.Entry.ID != poison[i] || d.Entry.Message != fmt.Sprintf("poison %d", i) || d.Entry.User != "u" || d.Failure != why {
			t.Errorf("dead letter %d = %+v, want %s with %+v", i, d, poison[i], why)
		}
	}
	st, err := g.Status(ctx10(t), "r")
	if err != nil || !st.Group || st.Dead != 2 || st.Pending != 1 || st.OldestPending != after[0] || st.Holders["a"] != 1 {
		t.Fatalf("Status = %+v, %v", st, err)
	}
	if err := e.store.DropDeadLetters(ctx10(t), "r", []streams.ID{dead[0].ID}); err != nil {
		t.Fatal(err)
	}
	if rest, _ := e.store.DeadLetters(ctx10(t), "r", streams.Zero, 10); len(rest) != 1 || rest[0].ID != dead[1].ID {
		t.Fatalf("after dropping one: %+v", rest)
	}
}

// A room with no stream has nothing, and reading it makes no key; a
// stream deleted and written again gets its group back.
func TestHookGroupMissingAndRecreatedRoom(t *testing.T) {
	e := newEnv(t, streams.Options{})
	g := e.hookGroup("a", time.Minute, streams.HookFromStart)
	if b := mustNext(t, g, "nothing"); len(b.Entries) != 0 {
		t.Fatalf("got %v from a missing room", b.IDs())
	}
	if n, _ := e.rdb.Exists(ctx10(t), e.key("nothing")).Result(); n != 0 {
		t.Fatal("reading a missing room made its stream")
	}
	if st, err := g.Status(ctx10(t), "nothing"); err != nil || st.Group {
		t.Fatalf("Status of a missing room = %+v, %v", st, err)
	}
	first := e.addTagged("r", 1, "m")
	if b := mustNext(t, g, "r"); !slices.Equal(b.IDs(), first) {
		t.Fatalf("got %v", b.IDs())
	}
	e.rdb.Del(ctx10(t), e.key("r"))
	again := e.addTagged("r", 2, "again")
	if b := mustNext(t, g, "r"); !slices.Equal(b.IDs(), again) {
		t.Fatalf("after DEL: got %v, want %v", b.IDs(), again)
	}
	if err := g.Ack(ctx10(t), "r", again); err != nil {
		t.Fatal(err)
	}
	if err := g.LeaveAll(ctx10(t), []string{"r", "nothing"}); err != nil {
		t.Fatal(err)
	}
	if cs, _ := e.rdb.XInfoConsumers(ctx10(t), e.key("r"), streams.HookGroupName).Result(); len(cs) != 0 {
		t.Fatalf("consumers after LeaveAll: %+v", cs)
	}
}

// The embedded Redis (miniredis, `go run ./app` without REDIS_URL) runs
// the same scripts.
func TestHookGroupOnMiniredis(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	e := &env{t: t, rdb: rdb, prefix: "mini", store: streams.NewStore(rdb, streams.Options{Prefix: "mini"})}
	a := e.hookGroup("a", time.Minute, streams.HookFromStart)
	b := e.hookGroup("b", time.Minute, streams.HookFromStart)
	ids := e.addTagged("r", 3, "m")
	got := mustNext(t, a, "r")
	if !slices.Equal(got.IDs(), ids) {
		t.Fatalf("got %v, want %v", got.IDs(), ids)
	}
	wantBusy(t, b, "r")
	if held, err := a.Hold(ctx10(t), "r", ids); err != nil || !held {
		t.Fatalf("Hold = %v, %v", held, err)
	}
	if buried, err := a.Bury(ctx10(t), "r", got.Entries, streams.Failure{Status: 400, Attempts: 1}); err != nil || !buried {
		t.Fatalf("Bury = %v, %v", buried, err)
	}
	more := e.addTagged("r", 1, "more")
	if got := mustNext(t, b, "r"); !slices.Equal(got.IDs(), more) {
		t.Fatalf("b got %v, want %v", got.IDs(), more)
	}
	if dead, err := e.store.DeadLetters(ctx10(t), "r", streams.Zero, 10); err != nil || len(dead) != 3 {
		t.Fatalf("dead letters %+v, %v", dead, err)
	}
}

// A dead consumer's batch that was trimmed away meanwhile is dropped when
// claimed, and the room goes on with its new entries at once.
func TestHookGroupClaimOfATrimmedBatch(t *testing.T) {
	e := newEnv(t, streams.Options{})
	const claimAfter = 200 * time.Millisecond
	a := e.hookGroup("a", claimAfter, streams.HookFromStart)
	b := e.hookGroup("b", claimAfter, streams.HookFromStart)
	e.addTagged("r", 2, "old")
	mustNext(t, a, "r")
	if err := e.rdb.XTrimMaxLen(ctx10(t), e.key("r"), 0).Err(); err != nil {
		t.Fatal(err)
	}
	fresh := e.addTagged("r", 2, "new")
	time.Sleep(claimAfter + 50*time.Millisecond)
	got := mustNext(t, b, "r")
	if !slices.Equal(got.IDs(), fresh) || got.Pending {
		t.Fatalf("b got %v (pending %v), want the new entries %v", got.IDs(), got.Pending, fresh)
	}
}
