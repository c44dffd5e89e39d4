package streams_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/internal/testkit"
	"github.com/xroom/xroom/streams"
)

func TestMain(m *testing.M) { os.Exit(redistest.Run(m)) }

// env is a store on the package's shared Redis with a key prefix of its own.
type env struct {
	t      *testing.T
	srv    *redistest.Server
	rdb    *redis.Client // the test's own client, for checks
	prefix string
	store  *streams.Store
}

func newEnv(t *testing.T, opt streams.Options) *env {
	t.Helper()
	srv := redistest.Shared(t)
	e := &env{t: t, srv: srv, rdb: srv.Client(t), prefix: redistest.Prefix(t)}
	opt.Prefix = e.prefix
	e.store = streams.NewStore(srv.Client(t), opt)
	return e
}

func ctx10(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (e *env) key(room string) string { return streams.Keys{Prefix: e.prefix}.Messages(room) }

// add appends m and fails the test on error.
func (e *env) add(room string, m streams.Message) (streams.ID, bool) {
	e.t.Helper()
	id, dup, err := e.store.Append(ctx10(e.t), room, m)
	if err != nil {
		e.t.Fatalf("Append(%s, %+v): %v", room, m, err)
	}
	return id, dup
}

// addN appends n messages "m0".."m(n-1)" by user and returns their IDs.
func (e *env) addN(room, user string, n int) []streams.ID {
	e.t.Helper()
	ids := make([]streams.ID, n)
	for i := range n {
		ids[i], _ = e.add(room, streams.Message{User: user, Text: fmt.Sprintf("m%d", i)})
	}
	return ids
}

func (e *env) xlen(room string) int64 {
	e.t.Helper()
	n, err := e.rdb.XLen(ctx10(e.t), e.key(room)).Result()
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

func entryIDs(es []streams.Entry) []streams.ID {
	out := make([]streams.ID, len(es))
	for i := range es {
		out[i] = es[i].ID
	}
	return out
}

func TestAppendStoresPlainFieldsWithIncreasingIDs(t *testing.T) {
	e := newEnv(t, streams.Options{MaxLen: 1000})
	msgs := []streams.Message{
		{User: "alice", Text: "hello"},
		{User: "bob", Text: "héllo wörld ✓", ClientID: "c-1"},
		{User: "alice", Text: "line1\nline2 \"quoted\""},
		{User: "carol", Text: "x", ClientID: "c.2_Z-9"},
	}
	var ids []streams.ID
	for _, m := range msgs {
		id, dup := e.add("lobby", m)
		if dup {
			t.Fatalf("first append of %+v reported duplicate", m)
		}
		if len(ids) > 0 && !ids[len(ids)-1].Less(id) {
			t.Fatalf("IDs not increasing: %v then %v", ids[len(ids)-1], id)
		}
		ids = append(ids, id)
	}

	got, err := e.rdb.XRange(ctx10(t), e.key("lobby"), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(msgs) {
		t.Fatalf("XRANGE has %d entries, want %d", len(got), len(msgs))
	}
	for i, m := range msgs {
		want := map[string]any{"user": m.User, "message": m.Text}
		if m.ClientID != "" {
			want["client_id"] = m.ClientID
		}
		if got[i].ID != ids[i].String() {
			t.Errorf("entry %d has ID %s, Append returned %s", i, got[i].ID, ids[i])
		}
		if fmt.Sprint(got[i].Values) != fmt.Sprint(want) {
			t.Errorf("entry %d fields = %v, want exactly %v", i, got[i].Values, want)
		}
	}

	// The same, as an operator sees it with redis-cli: fields in this order.
	out := e.srv.CLI(t, "XRANGE", e.key("lobby"), "-", "+")
	var want []string
	for i, m := range msgs[:2] {
		want = append(want, ids[i].String(), "user", m.User, "message", m.Text)
		if m.ClientID != "" {
			want = append(want, "client_id", m.ClientID)
		}
	}
	if lines := strings.Split(out, "\n"); len(lines) < len(want) || strings.Join(lines[:len(want)], "\n") != strings.Join(want, "\n") {
		t.Errorf("redis-cli XRANGE printed\n%s\nwant it to start with\n%s", out, strings.Join(want, "\n"))
	}

	// The room is listed in the rooms set (within a second: Eventually).
	testkit.Eventually(t, 5*time.Second, "the room in the rooms set", func() bool {
		return e.rdb.ZScore(ctx10(t), streams.Keys{Prefix: e.prefix}.Rooms(), "lobby").Err() == nil
	})
	if _, err := e.rdb.ZScore(ctx10(t), streams.Keys{Prefix: e.prefix}.Rooms(), "lobby").Result(); err != nil {
		t.Errorf("room not in %s:rooms: %v", e.prefix, err)
	}
	// Keys carry the room as a Cluster hash tag.
	if k := e.store.Keys().Messages("lobby"); k != e.prefix+":{lobby}:messages" {
		t.Errorf("Keys().Messages = %q", k)
	}
}

func TestAppendMaxLenTrims(t *testing.T) {
	e := newEnv(t, streams.Options{MaxLen: 100})
	const n = 1000
	for i := range n {
		m := streams.Message{User: "u", Text: fmt.Sprint(i)}
		if i%2 == 1 {
			m.ClientID = fmt.Sprintf("c%d", i) // the dedup script's XADD must trim too
		}
		e.add("big", m)
	}
	for i := range n {
		e.add("bigdedup", streams.Message{User: "u", Text: fmt.Sprint(i), ClientID: fmt.Sprintf("c%d", i)})
	}
	for _, room := range []string{"big", "bigdedup"} {
		l := e.xlen(room)
		// MAXLEN ~ trims whole macro nodes (100 entries by default): at least
		// the cap stays, and far fewer than everything.
		if l < 100 || l >= 300 {
			t.Errorf("%s: XLEN = %d after %d appends with MaxLen 100, want 100..299", room, l, n)
		}
		// The newest entry is the last one appended.
		last, err := e.store.Last(ctx10(t), room)
		if err != nil {
			t.Fatal(err)
		}
		es, _ := e.store.RevRange(ctx10(t), room, streams.MaxID, 1)
		if len(es) != 1 || es[0].ID != last || es[0].Message != fmt.Sprint(n-1) {
			t.Errorf("%s: newest entry %+v, want message %d", room, es, n-1)
		}
	}
}

func TestAppendWithoutMaxLenKeepsEverything(t *testing.T) {
	e := newEnv(t, streams.Options{})
	e.addN("r", "u", 150)
	for i := range 150 {
		e.add("r2", streams.Message{User: "u", Text: "x", ClientID: fmt.Sprint("c", i)})
	}
	if l := e.xlen("r"); l != 150 {
		t.Errorf("XLEN = %d, want 150 (no cap)", l)
	}
	if l := e.xlen("r2"); l != 150 {
		t.Errorf("XLEN (client_id path) = %d, want 150 (no cap)", l)
	}
}

func TestAppendDedup(t *testing.T) {
	e := newEnv(t, streams.Options{MaxLen: 1000})
	id1, dup := e.add("lobby", streams.Message{User: "alice", Text: "hi", ClientID: "c1"})
	if dup {
		t.Fatal("first send is a duplicate")
	}
	id2, dup := e.add("lobby", streams.Message{User: "alice", Text: "hi (resent)", ClientID: "c1"})
	if !dup || id2 != id1 {
		t.Fatalf("resend: id %v dup %v, want %v dup true", id2, dup, id1)
	}
	if l := e.xlen("lobby"); l != 1 {
		t.Fatalf("XLEN = %d after a resend, want 1", l)
	}
	// Another user with the same client_id is another message.
	id3, dup := e.add("lobby", streams.Message{User: "bob", Text: "hi", ClientID: "c1"})
	if dup || id3 == id1 || !id1.Less(id3) {
		t.Fatalf("bob's c1: id %v dup %v, want a new ID after %v", id3, dup, id1)
	}
	// The same user and client_id in another room is another message too.
	id4, dup := e.add("other", streams.Message{User: "alice", Text: "hi", ClientID: "c1"})
	if dup || id4.IsZero() {
		t.Fatalf("alice's c1 in another room: id %v dup %v", id4, dup)
	}
	// No client_id: never deduplicated.
	e.add("lobby", streams.Message{User: "alice", Text: "same"})
	e.add("lobby", streams.Message{User: "alice", Text: "same"})
	if l := e.xlen("other"); l != 1 {
		t.Fatalf("XLEN of the other room = %d, want 1", l)
	}
	if l := e.xlen("lobby"); l != 4 {
		t.Fatalf("XLEN = %d, want 4", l)
	}
	// bob's resend is deduplicated against bob's own.
	if id, dup := e.add("lobby", streams.Message{User: "bob", Text: "again", ClientID: "c1"}); !dup || id != id3 {
		t.Fatalf("bob's resend: %v %v, want %v true", id, dup, id3)
	}
	// The stored entry is the first send's.
	es, _ := e.store.Range(ctx10(t), "lobby", streams.Zero, 10)
	if len(es) != 4 || es[0].ID != id1 || es[0].Message != "hi" || es[0].ClientID != "c1" || es[0].User != "alice" {
		t.Fatalf("entries = %+v", es)
	}
	// The dedup record expires after the default window of 10 minutes.
	ttl, err := e.rdb.PTTL(ctx10(t), e.store.Keys().Dedup("lobby", "alice", "c1")).Result()
	if err != nil || ttl <= 9*time.Minute || ttl > 10*time.Minute {
		t.Fatalf("PTTL of the dedup key = %v, %v; want just under 10m", ttl, err)
	}
	if k := e.store.Keys().Dedup("lobby", "alice", "c1"); k != e.prefix+":{lobby}:dedup:alice:c1" {
		t.Errorf("dedup key %q", k)
	}
}

func TestAppendDedupWindowOption(t *testing.T) {
	e := newEnv(t, streams.Options{DedupWindow: 90 * time.Second})
	e.add("r", streams.Message{User: "alice", Text: "hi", ClientID: "c1"})
	ttl, err := e.rdb.PTTL(ctx10(t), e.store.Keys().Dedup("r", "alice", "c1")).Result()
	if err != nil || ttl <= 80*time.Second || ttl > 90*time.Second {
		t.Fatalf("PTTL = %v, %v; want just under 90s", ttl, err)
	}
	// Once the record is gone (the window passed), the same client_id is stored again.
	if err := e.rdb.Del(ctx10(t), e.store.Keys().Dedup("r", "alice", "c1")).Err(); err != nil {
		t.Fatal(err)
	}
	if _, dup := e.add("r", streams.Message{User: "alice", Text: "hi", ClientID: "c1"}); dup {
		t.Fatal("duplicate after the dedup record expired")
	}
	if l := e.xlen("r"); l != 2 {
		t.Fatalf("XLEN = %d, want 2", l)
	}
}

func TestAppendDedupConcurrentSends(t *testing.T) {
	e := newEnv(t, streams.Options{})
	const n = 20
	type res struct {
		id  streams.ID
		dup bool
		err error
	}
	out := make(chan res, n)
	for range n {
		go func() {
			id, dup, err := e.store.Append(context.Background(), "r", streams.Message{User: "alice", Text: "hi", ClientID: "same"})
			out <- res{id, dup, err}
		}()
	}
	var first streams.ID
	fresh := 0
	for range n {
		r := <-out
		if r.err != nil {
			t.Fatal(r.err)
		}
		if first.IsZero() {
			first = r.id
		}
		if r.id != first {
			t.Errorf("concurrent sends of one client_id got different IDs %v and %v", first, r.id)
		}
		if !r.dup {
			fresh++
		}
	}
	if fresh != 1 {
		t.Errorf("%d sends were stored as new, want exactly 1", fresh)
	}
	if l := e.xlen("r"); l != 1 {
		t.Errorf("XLEN = %d, want 1", l)
	}
}

func TestAppendDedupAfterScriptFlush(t *testing.T) {
	e := newEnv(t, streams.Options{MaxLen: 1000})
	redistest.RequireReal(t, e.srv)
	id1, _ := e.add("r", streams.Message{User: "alice", Text: "a", ClientID: "c1"})
	if err := e.rdb.ScriptFlush(ctx10(t)).Err(); err != nil {
		t.Fatal(err)
	}
	// EVALSHA now fails with NOSCRIPT; Append must load the script and go on.
	id2, dup, err := e.store.Append(ctx10(t), "r", streams.Message{User: "alice", Text: "b", ClientID: "c2"})
	if err != nil || dup || !id1.Less(id2) {
		t.Fatalf("after SCRIPT FLUSH: %v %v %v", id2, dup, err)
	}
	if err := e.rdb.ScriptFlush(ctx10(t)).Err(); err != nil {
		t.Fatal(err)
	}
	id3, dup, err := e.store.Append(ctx10(t), "r", streams.Message{User: "alice", Text: "a again", ClientID: "c1"})
	if err != nil || !dup || id3 != id1 {
		t.Fatalf("resend after SCRIPT FLUSH: %v %v %v, want %v duplicate", id3, dup, err, id1)
	}
	if l := e.xlen("r"); l != 2 {
		t.Fatalf("XLEN = %d, want 2", l)
	}
	// The room was still touched on the retried path (written within a second).
	testkit.Eventually(t, 5*time.Second, "the room in the rooms set", func() bool {
		return e.rdb.ZCard(ctx10(t), streams.Keys{Prefix: e.prefix}.Rooms()).Val() == 1
	})
	// Epoch uses a script too.
	if err := e.rdb.ScriptFlush(ctx10(t)).Err(); err != nil {
		t.Fatal(err)
	}
	if ep, err := e.store.Epoch(ctx10(t), "r"); err != nil || ep == "" {
		t.Fatalf("Epoch after SCRIPT FLUSH: %q %v", ep, err)
	}
}

func TestRangeAndRevRange(t *testing.T) {
	e := newEnv(t, streams.Options{})
	ids := e.addN("r", "alice", 10)
	ctx := ctx10(t)
	check := func(what string, got []streams.Entry, err error, want []streams.ID) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if !slices.Equal(entryIDs(got), want) {
			t.Errorf("%s = %v, want %v", what, entryIDs(got), want)
		}
	}
	es, err := e.store.Range(ctx, "r", streams.Zero, 100)
	check("Range(0, 100)", es, err, ids)
	for i, en := range es {
		if en.User != "alice" || en.Message != fmt.Sprintf("m%d", i) || !en.HasMessage || en.ClientID != "" || en.Frame != nil {
			t.Errorf("entry %d = %+v", i, en)
		}
		if en.Time().UnixMilli() != int64(en.ID.Ms) {
			t.Errorf("entry %d Time %v, ID %v", i, en.Time(), en.ID)
		}
	}
	es, err = e.store.Range(ctx, "r", ids[3], 3)
	check("Range(after ids[3], 3)", es, err, ids[4:7]) // exclusive of ids[3]
	es, err = e.store.Range(ctx, "r", ids[3].Prev(), 2)
	check("Range(just before ids[3], 2)", es, err, ids[3:5])
	es, err = e.store.Range(ctx, "r", ids[8], 100)
	check("Range(after ids[8])", es, err, ids[9:])
	es, err = e.store.Range(ctx, "r", ids[9], 100)
	check("Range(after newest)", es, err, nil)
	es, err = e.store.Range(ctx, "r", streams.MaxID, 100)
	check("Range(MaxID)", es, err, nil)
	es, err = e.store.Range(ctx, "nothing", streams.Zero, 100)
	check("Range on a missing stream", es, err, nil)

	es, err = e.store.RevRange(ctx, "r", streams.MaxID, 3)
	check("RevRange(MaxID, 3)", es, err, []streams.ID{ids[9], ids[8], ids[7]})
	es, err = e.store.RevRange(ctx, "r", ids[5], 3)
	check("RevRange(before ids[5], 3)", es, err, []streams.ID{ids[4], ids[3], ids[2]})
	es, err = e.store.RevRange(ctx, "r", ids[1], 10)
	check("RevRange(before ids[1])", es, err, []streams.ID{ids[0]})
	es, err = e.store.RevRange(ctx, "r", ids[0], 10)
	check("RevRange(before oldest)", es, err, nil)
	es, err = e.store.RevRange(ctx, "r", streams.Zero, 10)
	check("RevRange(0)", es, err, nil)
	es, err = e.store.RevRange(ctx, "r", ids[5].Next(), 2)
	check("RevRange(just after ids[5], 2)", es, err, []streams.ID{ids[5], ids[4]})

	// Paging backwards with the last ID of each page visits everything once.
	var all []streams.ID
	cursor := streams.MaxID
	for {
		page, err := e.store.RevRange(ctx, "r", cursor, 4)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		all = append(all, entryIDs(page)...)
		cursor = page[len(page)-1].ID
	}
	for i, j := 0, len(all)-1; i < j; i, j = i+1, j-1 {
		all[i], all[j] = all[j], all[i]
	}
	if !slices.Equal(all, ids) {
		t.Errorf("paging backwards gave %v, want %v", all, ids)
	}

	last, err := e.store.Last(ctx, "r")
	if err != nil || last != ids[9] {
		t.Errorf("Last = %v %v, want %v", last, err, ids[9])
	}
	if last, err := e.store.Last(ctx, "nothing"); err != nil || last != streams.Zero {
		t.Errorf("Last of a missing stream = %v %v, want 0-0", last, err)
	}
}

func TestRangeEntryWithoutMessage(t *testing.T) {
	e := newEnv(t, streams.Options{})
	id1, _ := e.add("r", streams.Message{User: "a", Text: "one"})
	raw, err := e.rdb.XAdd(ctx10(t), &redis.XAddArgs{Stream: e.key("r"), Values: []any{"user", "ops"}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	es, err := e.store.Range(ctx10(t), "r", streams.Zero, 10)
	if err != nil || len(es) != 2 {
		t.Fatalf("Range: %+v %v", es, err)
	}
	if es[0].ID != id1 || !es[0].HasMessage {
		t.Errorf("first entry %+v", es[0])
	}
	if es[1].ID.String() != raw || es[1].HasMessage || es[1].User != "ops" || es[1].Message != "" {
		t.Errorf("entry without message = %+v, want HasMessage false", es[1])
	}
	// An empty message field is still a message field.
	e.rdb.XAdd(ctx10(t), &redis.XAddArgs{Stream: e.key("r"), Values: []any{"user", "ops", "message", ""}})
	es, _ = e.store.Range(ctx10(t), "r", es[1].ID, 10)
	if len(es) != 1 || !es[0].HasMessage {
		t.Errorf("entry with an empty message = %+v", es)
	}
}

// nextMilli waits until the clock shows a later millisecond, so room
// activity scores (ms) differ.
func nextMilli() {
	start := time.Now().UnixMilli()
	for time.Now().UnixMilli() <= start+1 {
		time.Sleep(time.Millisecond)
	}
}

func TestRoomsNewestFirst(t *testing.T) {
	e := newEnv(t, streams.Options{})
	ctx := ctx10(t)
	before := time.Now().Add(-time.Second)
	a1, _ := e.add("a", streams.Message{User: "u", Text: "1"})
	nextMilli()
	b1, _ := e.add("b", streams.Message{User: "u", Text: "1"})
	nextMilli()
	c1, _ := e.add("c", streams.Message{User: "u", Text: "1", ClientID: "x"}) // the script path touches too
	nextMilli()
	a2, _ := e.add("a", streams.Message{User: "u", Text: "2"})
	after := time.Now().Add(time.Second)

	rooms, err := e.store.Rooms(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(roomSummary(rooms))
	want := fmt.Sprint([]string{"a " + a2.String(), "c " + c1.String(), "b " + b1.String()})
	if got != want {
		t.Fatalf("Rooms = %s, want %s", got, want)
	}
	_ = a1
	for i, r := range rooms {
		if r.LastActivity.Before(before) || r.LastActivity.After(after) {
			t.Errorf("room %s LastActivity %v not around now", r.Name, r.LastActivity)
		}
		if i > 0 && r.LastActivity.After(rooms[i-1].LastActivity) {
			t.Errorf("room %s is newer than %s but listed after it", r.Name, rooms[i-1].Name)
		}
	}
	if rooms, err := e.store.Rooms(ctx, 1); err != nil || fmt.Sprint(roomSummary(rooms)) != fmt.Sprint([]string{"a " + a2.String()}) {
		t.Fatalf("Rooms(limit 1) = %v %v", roomSummary(rooms), err)
	}

	// A room whose stream was deleted is gone from the list.
	if err := e.rdb.Del(ctx, e.key("c")).Err(); err != nil {
		t.Fatal(err)
	}
	rooms, err = e.store.Rooms(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(roomSummary(rooms)), fmt.Sprint([]string{"a " + a2.String(), "b " + b1.String()}); got != want {
		t.Fatalf("Rooms after DEL of c = %s, want %s", got, want)
	}

	// Another prefix sees none of these.
	other := streams.NewStore(e.rdb, streams.Options{Prefix: redistest.Prefix(t)})
	if rooms, err := other.Rooms(ctx, 100); err != nil || len(rooms) != 0 {
		t.Fatalf("Rooms under another prefix = %v %v", rooms, err)
	}
}

func TestRoomsLimitSkipsDeletedRooms(t *testing.T) {
	e := newEnv(t, streams.Options{})
	ctx := ctx10(t)
	a, _ := e.add("a", streams.Message{User: "u", Text: "1"})
	nextMilli()
	b, _ := e.add("b", streams.Message{User: "u", Text: "1"})
	nextMilli()
	e.add("c", streams.Message{User: "u", Text: "1"})
	if err := e.rdb.Del(ctx, e.key("c")).Err(); err != nil {
		t.Fatal(err)
	}
	// Two rooms exist: a limit of 2 lists both, although the deleted c
	// is the newest member of the rooms set.
	rooms, err := e.store.Rooms(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(roomSummary(rooms)), fmt.Sprint([]string{"b " + b.String(), "a " + a.String()}); got != want {
		t.Fatalf("Rooms(limit 2) = %s, want %s", got, want)
	}
}

func roomSummary(rs []streams.Room) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Name + " " + r.LastID.String()
	}
	return out
}

var epochRe = regexp.MustCompile(`^[0-9a-z]+-[0-9a-f]{8}$`)

func TestEpoch(t *testing.T) {
	e := newEnv(t, streams.Options{})
	ctx := ctx10(t)
	ep1, err := e.store.Epoch(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	if !epochRe.MatchString(ep1) {
		t.Fatalf("epoch %q does not look like base36ms-hex", ep1)
	}
	for range 3 {
		if ep, err := e.store.Epoch(ctx, "r"); err != nil || ep != ep1 {
			t.Fatalf("Epoch again = %q %v, want %q", ep, err, ep1)
		}
	}
	// Another store on the same keys (another process) agrees.
	same := streams.NewStore(e.srv.Client(t), streams.Options{Prefix: e.prefix})
	if ep, err := same.Epoch(ctx, "r"); err != nil || ep != ep1 {
		t.Fatalf("Epoch from another store = %q %v, want %q", ep, err, ep1)
	}
	if v, err := e.rdb.Get(ctx, streams.Keys{Prefix: e.prefix}.Epoch("r")).Result(); err != nil || v != ep1 {
		t.Fatalf("epoch key holds %q %v", v, err)
	}
	epOther, err := e.store.Epoch(ctx, "other")
	if err != nil || epOther == ep1 {
		t.Fatalf("another room's epoch %q %v, want one of its own", epOther, err)
	}
	// Appending does not change it.
	e.addN("r", "u", 3)
	if ep, _ := e.store.Epoch(ctx, "r"); ep != ep1 {
		t.Fatalf("epoch changed by appends: %q", ep)
	}

	// The history is lost: a new epoch.
	if err := e.rdb.Del(ctx, e.store.Keys().Epoch("r")).Err(); err != nil {
		t.Fatal(err)
	}
	ep2, err := e.store.Epoch(ctx, "r")
	if err != nil || ep2 == ep1 || !epochRe.MatchString(ep2) {
		t.Fatalf("epoch after DEL = %q %v, want a new one (old %q)", ep2, err, ep1)
	}
	if ep, _ := e.store.Epoch(ctx, "r"); ep != ep2 {
		t.Fatalf("new epoch not stable: %q then %q", ep2, ep)
	}

	// Everything under the prefix flushed.
	var keys []string
	iter := e.rdb.Scan(ctx, 0, e.prefix+":*", 100).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil || len(keys) == 0 {
		t.Fatalf("SCAN: %v %v", keys, err)
	}
	if err := e.rdb.Del(ctx, keys...).Err(); err != nil {
		t.Fatal(err)
	}
	ep3, err := e.store.Epoch(ctx, "r")
	if err != nil || ep3 == ep2 || ep3 == ep1 {
		t.Fatalf("epoch after flushing the prefix = %q %v, want a new one (had %q, %q)", ep3, err, ep1, ep2)
	}
}

func TestGap(t *testing.T) {
	e := newEnv(t, streams.Options{})
	redistest.RequireReal(t, e.srv) // max-deleted-entry-id is Redis 7's
	ctx := ctx10(t)
	check := func(t *testing.T, what, room string, since streams.ID, wantGap bool, wantOldest streams.ID) {
		t.Helper()
		gap, oldest, err := e.store.Gap(ctx, room, since)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if gap != wantGap || oldest != wantOldest {
			t.Errorf("%s: Gap(since %v) = %v, oldest %v; want %v, oldest %v", what, since, gap, oldest, wantGap, wantOldest)
		}
	}

	t.Run("intact", func(t *testing.T) {
		// Nothing deleted: no gap from the oldest entry on.
		ids := e.addN("whole", "u", 20)
		check(t, "since oldest", "whole", ids[0], false, ids[0])
		check(t, "since middle", "whole", ids[5], false, ids[0])
		check(t, "since newest", "whole", ids[19], false, ids[0])
		check(t, "since future", "whole", streams.MaxID, false, ids[0])
	})

	// xaddIDs adds entries with the given explicit IDs.
	xaddIDs := func(t *testing.T, room string, ids []streams.ID) {
		t.Helper()
		pipe := e.rdb.Pipeline()
		for i, id := range ids {
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: e.key(room), ID: id.String(), Values: []any{"user", "u", "message", fmt.Sprint(i)}})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("trimmed", func(t *testing.T) {
		// 100 entries with consecutive IDs, trimmed to the newest 10:
		// ids[0..89] are gone. Explicit IDs keep "exactly the last trimmed"
		// decidable: nothing can lie between ids[89] and ids[90].
		ids := make([]streams.ID, 100)
		for i := range ids {
			ids[i] = streams.ID{Ms: 1700000000000, Seq: uint64(i + 1)}
		}
		xaddIDs(t, "trimmed", ids)
		if n, err := e.rdb.XTrimMaxLen(ctx, e.key("trimmed"), 10).Result(); err != nil || n != 90 {
			t.Fatalf("XTRIM MAXLEN 10 removed %d, %v; want 90", n, err)
		}
		check(t, "since an early ID", "trimmed", ids[5], true, ids[90])
		check(t, "since 0", "trimmed", streams.Zero, true, ids[90])
		check(t, "since the last-but-one trimmed", "trimmed", ids[88], true, ids[90])
		check(t, "since exactly the last trimmed", "trimmed", ids[89], false, ids[90])
		check(t, "since the oldest retained", "trimmed", ids[90], false, ids[90])
		check(t, "since a retained one", "trimmed", ids[95], false, ids[90])
		check(t, "since newest", "trimmed", ids[99], false, ids[90])
	})

	t.Run("trimmed, sparse IDs", func(t *testing.T) {
		// IDs 10 ms apart: since ids[5] missed ids[6..89].
		ids := make([]streams.ID, 100)
		for i := range ids {
			ids[i] = streams.ID{Ms: 1700000000000 + uint64(10*i)}
		}
		xaddIDs(t, "sparse", ids)
		if n, err := e.rdb.XTrimMaxLen(ctx, e.key("sparse"), 10).Result(); err != nil || n != 90 {
			t.Fatalf("XTRIM MAXLEN 10 removed %d, %v; want 90", n, err)
		}
		check(t, "since an early ID", "sparse", ids[5], true, ids[90])
		check(t, "since just before the oldest", "sparse", ids[90].Prev(), false, ids[90])
		check(t, "since the oldest retained", "sparse", ids[90], false, ids[90])
	})

	t.Run("trimmed by MaxLen", func(t *testing.T) {
		// The way rooms are really trimmed: XADD MAXLEN ~ from Append.
		capped := streams.NewStore(e.srv.Client(t), streams.Options{Prefix: e.prefix, MaxLen: 100})
		var ids []streams.ID
		for i := range 1000 {
			id, _, err := capped.Append(ctx, "capped", streams.Message{User: "u", Text: fmt.Sprint(i)})
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		first, err := e.rdb.XRangeN(ctx, e.key("capped"), "-", "+", 1).Result()
		if err != nil || len(first) != 1 || first[0].ID == ids[0].String() {
			t.Fatalf("nothing was trimmed: %v %v", first, err)
		}
		oldest, _ := streams.ParseID(first[0].ID)
		check(t, "since the first ID", "capped", ids[0], true, oldest)
		check(t, "since the newest", "capped", ids[999], false, oldest)
	})

	t.Run("deleted", func(t *testing.T) {
		// A deleted entry in the middle is a gap for anyone who had not seen it.
		ids := e.addN("holed", "u", 10)
		if err := e.rdb.XDel(ctx, e.key("holed"), ids[6].String()).Err(); err != nil {
			t.Fatal(err)
		}
		check(t, "since before it", "holed", ids[3], true, ids[0])
		check(t, "since it", "holed", ids[6], false, ids[0])
		check(t, "since after it", "holed", ids[7], false, ids[0])
	})

	t.Run("missing", func(t *testing.T) {
		// No stream at all: nothing was lost.
		check(t, "missing stream", "nothing", streams.ID{Ms: 5, Seq: 1}, false, streams.Zero)
		check(t, "missing stream, since 0", "nothing", streams.Zero, false, streams.Zero)
	})

	t.Run("wrong type", func(t *testing.T) {
		// A key of another type is an error, not a silent "no gap".
		if err := e.rdb.Set(ctx, e.key("wrongtype"), "x", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if _, _, err := e.store.Gap(ctx, "wrongtype", streams.Zero); err == nil {
			t.Error("Gap on a string key: no error")
		}
	})
}

func TestStoreErrorsNameTheKey(t *testing.T) {
	e := newEnv(t, streams.Options{})
	ctx := ctx10(t)
	if err := e.rdb.Set(ctx, e.key("bad"), "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	for what, f := range map[string]func() error{
		"Append": func() error {
			_, _, err := e.store.Append(ctx, "bad", streams.Message{User: "u", Text: "x"})
			return err
		},
		"Append client_id": func() error {
			_, _, err := e.store.Append(ctx, "bad", streams.Message{User: "u", Text: "x", ClientID: "c"})
			return err
		},
		"Range":    func() error { _, err := e.store.Range(ctx, "bad", streams.Zero, 10); return err },
		"RevRange": func() error { _, err := e.store.RevRange(ctx, "bad", streams.MaxID, 10); return err },
	} {
		err := f()
		if err == nil || !strings.Contains(err.Error(), e.key("bad")) || !strings.Contains(err.Error(), "WRONGTYPE") {
			t.Errorf("%s on a string key: %v, want a WRONGTYPE error naming %s", what, err, e.key("bad"))
		}
	}
	if err := e.store.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := e.store.Append(cancelled, "r", streams.Message{User: "u", Text: "x"}); !errors.Is(err, context.Canceled) {
		t.Errorf("Append with a cancelled context: %v", err)
	}
}
