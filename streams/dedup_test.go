package streams_test

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/streams"
)

// commandCalls reads INFO commandstats: calls by command name.
func commandCalls(t *testing.T, rdb *redis.Client) map[string]int {
	t.Helper()
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	calls := map[string]int{}
	for _, m := range regexp.MustCompile(`cmdstat_([a-z|]+):calls=(\d+)`).FindAllStringSubmatch(info, -1) {
		calls[m[1]], _ = strconv.Atoi(m[2])
	}
	return calls
}

// A first send costs Redis the script call, XADD and SET of the dedup key
// (no GET), and the advisory writes (the rooms list, the user's room
// index) once per room and pair, not once per message.
func TestAppendsCostTwoCommandsInTheScriptAndAdvisoryWritesOnce(t *testing.T) {
	rs := redistest.Start(t) // its own server: nobody else's commands counted
	rdb := rs.Client(t)
	store := streams.NewStore(rdb, streams.Options{Prefix: redistest.Prefix(t)})
	ctx := ctx10(t)
	if _, _, err := store.Append(ctx, "warm", streams.Message{User: "u", Text: "w", ClientID: "w"}); err != nil {
		t.Fatal(err) // loads the script
	}
	before := commandCalls(t, rdb)
	const n = 20
	for i := range n {
		if _, dup, err := store.Append(ctx, "lobby", streams.Message{User: "u", Text: "hi", ClientID: fmt.Sprint(i)}); err != nil || dup {
			t.Fatalf("append %d: dup %v, %v", i, dup, err)
		}
	}
	if _, err := store.Rooms(ctx, 10); err != nil { // writes the rooms list now, not in a second
		t.Fatal(err)
	}
	after := commandCalls(t, rdb)
	got := func(cmd string) int { return after[cmd] - before[cmd] }
	if got("xadd") != n || got("set") != n || got("get") != 0 || got("evalsha") != n {
		t.Fatalf("%d first sends ran xadd %d, set %d, get %d, evalsha %d; want %d, %d, 0, %d", n, got("xadd"), got("set"), got("get"), got("evalsha"), n, n, n)
	}
	// One ZADD for the rooms list (lobby is new, written once for all its
	// appends) and one for u's room index.
	if z := got("zadd"); z != 2 {
		t.Fatalf("%d appends to one room by one user ran %d ZADDs, want 2", n, z)
	}
}

// A resend takes its XADD back without a trace: the stream counts one
// entry added and none deleted, so no client resuming from before it is
// told of a gap, and the first ID stands.
func TestResendLeavesNoTraceInTheStream(t *testing.T) {
	e := newEnv(t, streams.Options{})
	ctx := ctx10(t)
	before, _ := e.add("lobby", streams.Message{User: "alice", Text: "before"})
	id1, _ := e.add("lobby", streams.Message{User: "alice", Text: "hi", ClientID: "c1"})
	for range 3 {
		if id, dup := e.add("lobby", streams.Message{User: "alice", Text: "hi", ClientID: "c1"}); !dup || id != id1 {
			t.Fatalf("resend: %v dup %v, want %v true", id, dup, id1)
		}
	}
	if !e.srv.Real {
		return // the embedded server keeps no entries-added
	}
	info, err := e.rdb.XInfoStream(ctx, e.key("lobby")).Result()
	if err != nil {
		t.Fatal(err)
	}
	if info.Length != 2 || info.EntriesAdded != 2 || (info.MaxDeletedEntryID != "0-0" && info.MaxDeletedEntryID != "0-1") {
		t.Fatalf("after 3 resends: length %d, entries-added %d, max-deleted-entry-id %s; want 2, 2, 0-0 (or 0-1, which stands for it)", info.Length, info.EntriesAdded, info.MaxDeletedEntryID)
	}
	h, err := e.store.History(ctx, "lobby")
	if err != nil {
		t.Fatal(err)
	}
	if h.Trimmed(streams.Zero) || h.Trimmed(before) {
		t.Fatal("a resend reads as a gap to a client resuming from before it")
	}
	// The next send follows the first: IDs still grow.
	if id, dup := e.add("lobby", streams.Message{User: "alice", Text: "next", ClientID: "c2"}); dup || !id1.Less(id) {
		t.Fatalf("next send: %v dup %v", id, dup)
	}
}

// A dedup key Redis cannot use (another type, written by hand) fails that
// append and stores nothing: the XADD is taken back.
func TestAppendWithABrokenDedupKeyStoresNothing(t *testing.T) {
	e := newEnv(t, streams.Options{})
	ctx := ctx10(t)
	if err := e.rdb.HSet(ctx, e.store.Keys().Dedup("lobby", "alice", "c1"), "x", "y").Err(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.store.Append(ctx, "lobby", streams.Message{User: "alice", Text: "hi", ClientID: "c1"}); err == nil {
		t.Fatal("append with a hash as its dedup key succeeded")
	}
	if l := e.xlen("lobby"); l != 0 {
		t.Fatalf("XLEN = %d after the failed append, want 0", l)
	}
}

// A connection's join records the room in the user's room index, so that
// a room a user is in has an unread count before they write or read there
// (and the connection's sends need not write the index again).
func TestJoinPutsTheRoomInTheUsersIndex(t *testing.T) {
	e := newEnv(t, streams.Options{})
	ctx := ctx10(t)
	p := e.newPresence(time.Minute, time.Hour)
	e.add("dm", streams.Message{User: "alice", Text: "hi bob"})
	if _, err := p.Join(ctx, "dm", "bob"); err != nil {
		t.Fatal(err)
	}
	us, err := e.store.Unread(ctx, "bob", 10, 100)
	if err != nil || len(us) != 1 || us[0].Room != "dm" || us[0].Count != 1 {
		t.Fatalf("bob's unread after joining dm = %+v, %v; want dm with 1", us, err)
	}
}
