package streams_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/streams"
)

func (e *env) markRead(room, user string, id streams.ID, conn string) (streams.ID, bool) {
	e.t.Helper()
	pos, moved, err := e.store.MarkRead(ctx10(e.t), room, user, id, streams.ReadEvent{Conn: conn})
	if err != nil {
		e.t.Fatalf("MarkRead(%s, %s, %s): %v", room, user, id, err)
	}
	return pos, moved
}

func (e *env) readHash(room string) map[string]string {
	e.t.Helper()
	m, err := e.rdb.HGetAll(ctx10(e.t), streams.Keys{Prefix: e.prefix}.Reads(room)).Result()
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

// readEvents lists the room's read events as "user id conn".
func (e *env) readEvents(room string) []string {
	e.t.Helper()
	msgs, err := e.rdb.XRange(ctx10(e.t), streams.Keys{Prefix: e.prefix}.Events(room), "-", "+").Result()
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, m := range msgs {
		if m.Values["type"] == "read" {
			out = append(out, fmt.Sprint(m.Values["user"], " ", m.Values["id"], " ", m.Values["conn"]))
		}
	}
	return out
}

func mustID(t *testing.T, s string) streams.ID {
	t.Helper()
	id, err := streams.ParseID(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// A read position only moves forward, stops at the room's newest entry,
// and each move (and only a move) writes a read event naming the
// connection; the hash is plain enough for redis-cli.
func TestMarkReadOnlyMovesForward(t *testing.T) {
	e := newEnv(t, streams.Options{})
	ids := e.addN("r", "bob", 5)

	if pos, moved := e.markRead("r", "alice", ids[2], "c1"); !moved || pos != ids[2] {
		t.Fatalf("first mark: %s moved=%v, want %s moved", pos, moved, ids[2])
	}
	if pos, moved := e.markRead("r", "alice", ids[1], "c1"); moved || pos != ids[2] {
		t.Fatalf("an older mark: %s moved=%v, want %s unmoved", pos, moved, ids[2])
	}
	if pos, moved := e.markRead("r", "alice", ids[2], "c1"); moved || pos != ids[2] {
		t.Fatalf("the same mark again: %s moved=%v, want unmoved", pos, moved)
	}
	// Past the newest entry: clamped to it, so later messages stay unread.
	if pos, moved := e.markRead("r", "alice", streams.MaxID, "c2"); !moved || pos != ids[4] {
		t.Fatalf("a mark past the end: %s moved=%v, want %s", pos, moved, ids[4])
	}
	if got := e.readHash("r"); len(got) != 1 || got["alice"] != ids[4].String() {
		t.Fatalf("reads hash %v, want alice=%s", got, ids[4])
	}
	want := []string{"alice " + ids[2].String() + " c1", "alice " + ids[4].String() + " c2"}
	if got := e.readEvents("r"); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("read events %q, want %q (one per move)", got, want)
	}
	// The events key expires, as presence's does, when nobody keeps it alive.
	if ttl := e.rdb.PTTL(ctx10(t), streams.Keys{Prefix: e.prefix}.Events("r")).Val(); ttl <= 0 {
		t.Fatalf("events key TTL %v, want one", ttl)
	}
	if pos, ok, err := e.store.ReadPosition(ctx10(t), "r", "alice"); err != nil || !ok || pos != ids[4] {
		t.Fatalf("ReadPosition: %s %v %v", pos, ok, err)
	}
	if _, ok, err := e.store.ReadPosition(ctx10(t), "r", "nobody"); err != nil || ok {
		t.Fatalf("ReadPosition of nobody: %v %v", ok, err)
	}

	// An empty room has nothing to read: nothing is stored.
	if pos, moved := e.markRead("empty", "alice", ids[0], ""); moved || !pos.IsZero() {
		t.Fatalf("empty room: %s moved=%v", pos, moved)
	}
	if got := e.readHash("empty"); len(got) != 0 {
		t.Fatalf("empty room's reads %v", got)
	}
}

// IDs are compared as (ms, seq) numbers, never as strings: "9-0" < "10-0"
// and "10-2" < "10-10".
func TestMarkReadComparesIDsAsNumbers(t *testing.T) {
	e := newEnv(t, streams.Options{})
	for _, id := range []string{"9-0", "10-2", "10-10"} {
		if err := e.rdb.XAdd(ctx10(t), &redis.XAddArgs{Stream: e.key("n"), ID: id, Values: []any{"user", "bob", "message", id}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		mark, want string
		moved      bool
	}{
		{"9-0", "9-0", true},
		{"10-2", "10-2", true},
		{"9-5", "10-2", false}, // as strings "9-5" > "10-2"
		{"10-10", "10-10", true},
		{"10-9", "10-10", false}, // as strings "10-9" > "10-10"
		{"18446744073709551615-18446744073709551615", "10-10", false}, // clamped to the newest: no move
	}
	for _, s := range steps {
		pos, moved := e.markRead("n", "alice", mustID(t, s.mark), "")
		if pos.String() != s.want || moved != s.moved {
			t.Fatalf("mark %s: %s moved=%v, want %s moved=%v", s.mark, pos, moved, s.want, s.moved)
		}
	}
	// A position edited by hand with leading zeros still compares as a number.
	e.rdb.HSet(ctx10(t), streams.Keys{Prefix: e.prefix}.Reads("n"), "carol", "0010-02")
	if pos, moved := e.markRead("n", "carol", mustID(t, "9-0"), ""); moved || pos.String() != "10-2" {
		t.Fatalf("carol: %s moved=%v, want 10-2 unmoved", pos, moved)
	}
}

func TestReadPositionsListsTheHash(t *testing.T) {
	e := newEnv(t, streams.Options{})
	ids := e.addN("r", "bob", 3)
	e.markRead("r", "alice", ids[0], "")
	e.markRead("r", "carol", ids[2], "")
	e.markRead("r", "bob", ids[2], "")
	got, partial, err := e.store.ReadPositions(ctx10(t), "r", 100)
	if err != nil || partial {
		t.Fatal(err, partial)
	}
	want := []streams.ReadPosition{{"bob", ids[2]}, {"carol", ids[2]}, {"alice", ids[0]}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("positions %v, want %v (newest first, then by user)", got, want)
	}
	// A room with more readers than the limit is listed in part.
	got, partial, err = e.store.ReadPositions(ctx10(t), "r", 2)
	if err != nil || !partial || len(got) != 2 {
		t.Fatalf("limit 2: %v partial=%v %v", got, partial, err)
	}
}

func (e *env) unread(user string, unreadCap int) map[string]streams.Unread {
	e.t.Helper()
	list, err := e.store.Unread(ctx10(e.t), user, 100, unreadCap)
	if err != nil {
		e.t.Fatalf("Unread(%s): %v", user, err)
	}
	out := map[string]streams.Unread{}
	for _, u := range list {
		out[u.Room] = u
	}
	return out
}

// Counts are exact below and at the cap, and say "more" above it; the
// user's own messages and entries without a message are not unread; rooms
// come newest activity first.
func TestUnreadExactBelowAndAtTheCap(t *testing.T) {
	e := newEnv(t, streams.Options{})
	const unreadCap = 5
	// alice writes in each room (that puts them in her index), then bob
	// writes n more: alice has read nothing after her own.
	counts := map[string]int{"below": 3, "at": unreadCap, "above": unreadCap + 1, "far": 40, "none": 0}
	order := []string{"far", "none", "below", "at", "above"} // the last written is the newest
	last := map[string]streams.ID{}
	for _, room := range order {
		time.Sleep(2 * time.Millisecond) // the order is by time, in ms
		last[room] = e.addN(room, "alice", 1)[0]
		if n := counts[room]; n > 0 {
			ids := e.addN(room, "bob", n)
			last[room] = ids[n-1]
		}
	}
	// Entries without a message (added by hand) are not counted.
	time.Sleep(2 * time.Millisecond)
	if err := e.rdb.XAdd(ctx10(t), &redis.XAddArgs{Stream: e.key("below"), Values: []any{"user", "ops", "note", "x"}}).Err(); err != nil {
		t.Fatal(err)
	}
	got := e.unread("alice", unreadCap)
	for room, n := range counts {
		u, ok := got[room]
		if !ok {
			t.Fatalf("%s missing from %v", room, got)
		}
		wantN, wantMore := min(n, unreadCap), n > unreadCap
		if u.Count != wantN || u.More != wantMore || !u.LastRead.IsZero() {
			t.Errorf("%s: %+v, want %d more=%v last_read 0-0", room, u, wantN, wantMore)
		}
	}
	if got["above"].LastID != last["above"] {
		t.Errorf("above: last_id %s, want %s", got["above"].LastID, last["above"])
	}
	list, err := e.store.Unread(ctx10(t), "alice", 100, unreadCap)
	if err != nil {
		t.Fatal(err)
	}
	var rooms []string
	for _, u := range list {
		rooms = append(rooms, u.Room)
	}
	if want := "below above at none far"; strings.Join(rooms, " ") != want {
		t.Errorf("order %q, want newest activity first %q", strings.Join(rooms, " "), want)
	}

	// Marking read counts from there; past the newest, nothing is unread.
	ids, err := e.store.Range(ctx10(t), "far", streams.Zero, 100)
	if err != nil {
		t.Fatal(err)
	}
	e.markRead("far", "alice", ids[len(ids)-4].ID, "")
	if u := e.unread("alice", unreadCap)["far"]; u.Count != 3 || u.More || u.LastRead != ids[len(ids)-4].ID {
		t.Errorf("far after marking the 4th newest: %+v, want 3", u)
	}
	e.markRead("far", "alice", streams.MaxID, "")
	if u := e.unread("alice", unreadCap)["far"]; u.Count != 0 || u.More {
		t.Errorf("far after marking all: %+v", u)
	}

	// bob wrote in every room but "none": his index holds those, and alice's
	// messages are unread for him.
	bob := e.unread("bob", unreadCap)
	if _, ok := bob["none"]; ok || len(bob) != 4 || bob["far"].Count != 1 {
		t.Errorf("bob: %+v, want 4 rooms with alice's one message each", bob)
	}
	// A user who has done nothing has no rooms.
	if got := e.unread("nobody", unreadCap); len(got) != 0 {
		t.Errorf("nobody: %+v", got)
	}
}

// A room in the index whose stream is gone is left out, and a reader
// alone (never wrote) is in the index by her read position.
func TestUnreadIndexFromReadsAndWrites(t *testing.T) {
	e := newEnv(t, streams.Options{})
	ids := e.addN("r", "bob", 3)
	e.markRead("r", "carol", ids[0], "")
	if u := e.unread("carol", 10)["r"]; u.Count != 2 || u.LastRead != ids[0] || u.LastID != ids[2] {
		t.Fatalf("carol: %+v", u)
	}
	e.addN("gone", "carol", 1)
	if err := e.rdb.Del(ctx10(t), e.key("gone")).Err(); err != nil {
		t.Fatal(err)
	}
	if got := e.unread("carol", 10); len(got) != 1 {
		t.Fatalf("carol: %+v, want only r (gone is deleted)", got)
	}
	// redis-cli can read the index.
	members := e.rdb.ZRange(ctx10(t), streams.Keys{Prefix: e.prefix}.UserRooms("carol"), 0, -1).Val()
	if sort.Strings(members); strings.Join(members, ",") != "gone,r" {
		t.Fatalf("carol's index %v", members)
	}
}

// A user's own messages are not unread; when they make most of the room,
// the count reads at most unreadScanPages pages and then says "more".
func TestUnreadSkipsOwnMessagesWithinABound(t *testing.T) {
	e := newEnv(t, streams.Options{})
	e.addN("r", "bob", 1)
	e.addN("r", "alice", 3)
	e.addN("r", "bob", 1)
	if u := e.unread("alice", 3)["r"]; u.Count != 2 || u.More {
		t.Fatalf("2 of bob's among alice's 3: %+v, want 2", u)
	}
	// 4 pages of 4 entries are 16: bob's third is out of reach, so the
	// count (3, within the cap) is only known to be at least 2.
	e.addN("r", "alice", 20)
	e.addN("r", "bob", 1)
	if u := e.unread("alice", 3)["r"]; u.Count != 2 || !u.More {
		t.Fatalf("past the bound: %+v, want 2 and more", u)
	}
}

// The cost does not grow with the rooms' history nor with the number of
// rooms in round trips: one pipeline for the index, one for every room's
// count, and no single commands.
func TestUnreadIsTwoRoundTrips(t *testing.T) {
	e, hook := countedEnv(t)
	for i := range 30 {
		e.addN(fmt.Sprintf("room-%d", i), "alice", 1)
		e.addN(fmt.Sprintf("room-%d", i), "bob", 3)
	}
	ctx := context.Background()
	if _, err := e.store.Unread(ctx, "alice", 100, 100); err != nil { // loads the script
		t.Fatal(err)
	}
	hook.commands.Store(0)
	hook.pipelines.Store(0)
	list, err := e.store.Unread(ctx, "alice", 100, 100)
	if err != nil || len(list) != 30 || list[0].Count != 3 {
		t.Fatalf("%d rooms, %v", len(list), err)
	}
	if c, p := hook.commands.Load(), hook.pipelines.Load(); c != 0 || p != 2 {
		t.Fatalf("unread of 30 rooms: %d single commands and %d pipelines, want 0 and 2", c, p)
	}
	// After Redis forgot the script (restart, failover), one more pipeline reloads it.
	if err := e.rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	hook.commands.Store(0)
	hook.pipelines.Store(0)
	if list, err := e.store.Unread(ctx, "alice", 100, 100); err != nil || len(list) != 30 {
		t.Fatalf("after SCRIPT FLUSH: %d rooms, %v", len(list), err)
	}
	if p := hook.pipelines.Load(); p != 3 {
		t.Fatalf("after SCRIPT FLUSH: %d pipelines, want 3", p)
	}
}

// Appends put the room in the writer's index once per refresh, in the
// append's own pipeline, not once per message.
func TestAppendsRecordTheWriterOnce(t *testing.T) {
	e := newEnv(t, streams.Options{})
	e.addN("r", "alice", 3)
	key := streams.Keys{Prefix: e.prefix}.UserRooms("alice")
	first, err := e.rdb.ZScore(ctx10(t), key, "r").Result()
	if err != nil {
		t.Fatalf("alice's index has no r: %v", err)
	}
	time.Sleep(5 * time.Millisecond)
	e.addN("r", "alice", 1)
	if again := e.rdb.ZScore(ctx10(t), key, "r").Val(); again != first {
		t.Fatalf("score moved %v -> %v: written again within the refresh", first, again)
	}
}

// Read events reach the room's subscribers with the position and the
// connection that marked it.
func TestReadEventsReachSubscribers(t *testing.T) {
	e := newEnv(t, streams.Options{})
	ids := e.addN("r", "bob", 2)
	hub := streams.NewHub(e.store, e.srv.Client(t), streams.HubOptions{Block: 100 * time.Millisecond})
	t.Cleanup(func() { _ = hub.Close() })
	kicked := make(chan struct{}, 16)
	sub, err := hub.Subscribe(ctx10(t), "r", func() {
		select {
		case kicked <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	seq := sub.EventSeq()
	e.markRead("r", "alice", ids[1], "conn-1")
	deadline := time.After(10 * time.Second)
	for {
		evs, next := sub.Events(seq, make([]*streams.Event, 0, 8))
		seq = next
		for _, ev := range evs {
			if ev.Type == streams.EventRead {
				if ev.User != "alice" || ev.Position != ids[1] || ev.Conn != "conn-1" {
					t.Fatalf("read event %+v", ev)
				}
				return
			}
		}
		select {
		case <-kicked:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatal("no read event")
		}
	}
}

// In a room with more present users than ReadEvent.MaxMembers the position
// moves but no read event is written, as for presence events.
func TestMarkReadWritesNoEventInAHugeRoom(t *testing.T) {
	e := newEnv(t, streams.Options{})
	ids := e.addN("big", "bob", 2)
	e.rdb.HSet(ctx10(t), streams.Keys{Prefix: e.prefix}.PresenceUsers("big"), "u1", 1, "u2", 1, "u3", 1)
	mark := func(id streams.ID, max int) {
		t.Helper()
		if _, moved, err := e.store.MarkRead(ctx10(t), "big", "alice", id, streams.ReadEvent{Conn: "c", MaxMembers: max}); err != nil || !moved {
			t.Fatalf("mark %s: moved=%v %v", id, moved, err)
		}
	}
	mark(ids[0], 2)
	if got := e.readEvents("big"); len(got) != 0 {
		t.Fatalf("3 present users, at most 2 for events: %q", got)
	}
	mark(ids[1], 3)
	if got := e.readEvents("big"); len(got) != 1 {
		t.Fatalf("3 present users, at most 3: %q, want one event", got)
	}
	if got := e.readHash("big")["alice"]; got != ids[1].String() {
		t.Fatalf("position %s", got)
	}
}
