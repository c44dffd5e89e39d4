package streams_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/internal/testkit"
	"github.com/xroom/xroom/streams"
)

// hubEnv is a hub on a store with a prefix of its own.
type hubEnv struct {
	*env
	hub      *streams.Hub
	blocking *redis.Client
	tailName string // CLIENT SETNAME of the hub's blocking connections

	mu      sync.Mutex
	encoded map[streams.ID]int // Encoder calls per entry
}

// testFrame is what the test encoder produces for an entry.
func testFrame(room string, e *streams.Entry) []byte {
	return []byte(room + "|" + e.ID.String() + "|" + e.User + "|" + e.Message)
}

// noMaint turns off go-redis's CLIENT MAINT_NOTIFICATIONS handshake, as
// app does: open-source Redis refuses it, and go-redis's fallback then
// writes the shared options from each new connection unguarded (a data
// race between the blocking tail's connections, made concurrently).
var noMaint = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}

func newHubEnv(t *testing.T, opt streams.HubOptions, srv ...*redistest.Server) *hubEnv {
	t.Helper()
	var e *env
	if len(srv) > 0 {
		s := srv[0]
		e = &env{t: t, srv: s, rdb: s.Client(t), prefix: redistest.Prefix(t)}
		e.store = streams.NewStore(s.Client(t), streams.Options{Prefix: e.prefix})
	} else {
		e = newEnv(t, streams.Options{})
	}
	h := &hubEnv{env: e, encoded: map[streams.ID]int{}, tailName: "tail-" + e.prefix}
	h.blocking = redis.NewClient(&redis.Options{Addr: e.srv.Addr, ClientName: h.tailName, PoolSize: 100, MaintNotificationsConfig: noMaint})
	if opt.Encode == nil {
		opt.Encode = func(room string, en *streams.Entry) []byte {
			h.mu.Lock()
			h.encoded[en.ID]++
			h.mu.Unlock()
			return testFrame(room, en)
		}
	}
	if opt.Logger == nil {
		opt.Logger = testkit.Quiet()
	}
	h.hub = streams.NewHub(e.store, h.blocking, opt)
	t.Cleanup(func() { _ = h.hub.Close() })
	return h
}

func (h *hubEnv) encodes(id streams.ID) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.encoded[id]
}

// subscriber is a subscription with a notification channel.
type subscriber struct {
	t      *testing.T
	sub    *streams.Subscription
	notes  chan struct{}
	cursor streams.ID
	got    []*streams.Entry
}

func (h *hubEnv) subscribe(room string) *subscriber {
	h.t.Helper()
	s := &subscriber{t: h.t, notes: make(chan struct{}, 1)}
	sub, err := h.hub.Subscribe(ctx10(h.t), room, func() {
		select {
		case s.notes <- struct{}{}:
		default:
		}
	})
	if err != nil {
		h.t.Fatalf("Subscribe(%s): %v", room, err)
	}
	s.sub = sub
	h.t.Cleanup(sub.Close)
	return s
}

// waitNote waits for a notification, failing after 10 s.
func (s *subscriber) waitNote() {
	s.t.Helper()
	select {
	case <-s.notes:
	case <-time.After(10 * time.Second):
		s.t.Fatal("no notification within 10s")
	}
}

// readUntil calls Next with a dst of capacity max until the cursor reaches
// last, waiting for notifications when nothing is there yet.
func (s *subscriber) readUntil(last streams.ID, max int) {
	s.t.Helper()
	dst := make([]*streams.Entry, 0, max)
	deadline := time.Now().Add(10 * time.Second)
	for s.cursor.Less(last) {
		es, next, err := s.sub.Next(ctx10(s.t), s.cursor, dst)
		if err != nil {
			s.t.Fatalf("Next(%v): %v", s.cursor, err)
		}
		if len(es) > max {
			s.t.Fatalf("Next returned %d entries, more than dst's capacity %d", len(es), max)
		}
		if len(es) > 0 && next != es[len(es)-1].ID {
			s.t.Fatalf("Next returned cursor %v, but its last entry is %v", next, es[len(es)-1].ID)
		}
		if next.Less(s.cursor) {
			s.t.Fatalf("Next moved the cursor back from %v to %v", s.cursor, next)
		}
		s.got = append(s.got, es...)
		s.cursor = next
		if len(es) == 0 && s.cursor.Less(last) {
			select {
			case <-s.notes:
			case <-time.After(time.Until(deadline)):
				s.t.Fatalf("stuck at %v, waiting for %v", s.cursor, last)
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("reading up to %v took over 10s; at %v", last, s.cursor)
		}
	}
}

func (s *subscriber) ids() []streams.ID {
	out := make([]streams.ID, len(s.got))
	for i, e := range s.got {
		out[i] = e.ID
	}
	return out
}

// waitHead waits until the room's tail has read up to id.
func (s *subscriber) waitHead(id streams.ID) {
	s.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.sub.Head().Less(id) {
		if time.Now().After(deadline) {
			s.t.Fatalf("tail head %v did not reach %v within 10s", s.sub.Head(), id)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestHubSubscribeNotifiesAndDelivers(t *testing.T) {
	h := newHubEnv(t, streams.HubOptions{Block: 200 * time.Millisecond})
	s := h.subscribe("lobby")
	if head := s.sub.Head(); head != streams.Zero {
		t.Fatalf("Head of an empty room = %v, want 0-0", head)
	}
	if es, next, err := s.sub.Next(ctx10(t), streams.Zero, make([]*streams.Entry, 0, 10)); err != nil || len(es) != 0 || next != streams.Zero {
		t.Fatalf("Next on an empty room = %v %v %v", es, next, err)
	}
	id, _ := h.add("lobby", streams.Message{User: "alice", Text: "hi", ClientID: "c1"})
	s.waitNote()
	s.readUntil(id, 10)
	if len(s.got) != 1 {
		t.Fatalf("got %d entries, want 1", len(s.got))
	}
	e := s.got[0]
	if e.ID != id || e.User != "alice" || e.Message != "hi" || e.ClientID != "c1" || !e.HasMessage {
		t.Fatalf("entry = %+v", e)
	}
	if string(e.Frame) != string(testFrame("lobby", e)) {
		t.Fatalf("Frame = %q, want the encoder's %q", e.Frame, testFrame("lobby", e))
	}
	if s.sub.Head() != id {
		t.Fatalf("Head = %v, want %v", s.sub.Head(), id)
	}
	// Entries of other rooms do not come through.
	other, _ := h.add("elsewhere", streams.Message{User: "bob", Text: "x"})
	id2, _ := h.add("lobby", streams.Message{User: "bob", Text: "second"})
	s.readUntil(id2, 10)
	if got := s.ids(); !slices.Equal(got, []streams.ID{id, id2}) {
		t.Fatalf("got %v, want %v (not %v of another room)", got, []streams.ID{id, id2}, other)
	}
	if h.hub.Stats().TailReads.Load() < 2 {
		t.Errorf("TailReads = %d, want at least 2", h.hub.Stats().TailReads.Load())
	}
	if h.hub.Store() != h.store {
		t.Error("Store() is not the hub's store")
	}
}

func TestHubNextFromBuffer(t *testing.T) {
	h := newHubEnv(t, streams.HubOptions{Block: 200 * time.Millisecond})
	old := h.addN("r", "u", 5) // history before anyone subscribed
	s := h.subscribe("r")
	if s.sub.Head() != old[4] {
		t.Fatalf("Head = %v, want the newest entry %v", s.sub.Head(), old[4])
	}
	live := h.addN("r", "u", 10)
	s.waitHead(live[9])
	catchUps := h.hub.Stats().CatchUps.Load()

	dst := make([]*streams.Entry, 0, 100)
	es, next, err := s.sub.Next(ctx10(t), old[4], dst)
	if err != nil || next != live[9] {
		t.Fatalf("Next(newest old) = cursor %v, %v; want %v", next, err, live[9])
	}
	if got := entryPtrIDs(es); !slices.Equal(got, live) {
		t.Fatalf("Next(newest old) = %v, want %v", got, live)
	}
	for i, e := range es {
		if e.Message != fmt.Sprintf("m%d", i) {
			t.Errorf("entry %d message %q", i, e.Message)
		}
	}
	es, next, err = s.sub.Next(ctx10(t), live[2], make([]*streams.Entry, 0, 3))
	if err != nil || next != live[5] || !slices.Equal(entryPtrIDs(es), live[3:6]) {
		t.Fatalf("Next(live[2], cap 3) = %v, cursor %v, %v; want %v", entryPtrIDs(es), next, err, live[3:6])
	}
	// A cursor that is no entry's ID: the entries after it.
	between := live[6].Next()
	var wantAfter []streams.ID
	for _, id := range live {
		if between.Less(id) {
			wantAfter = append(wantAfter, id)
		}
	}
	es, next, _ = s.sub.Next(ctx10(t), between, make([]*streams.Entry, 0, 100))
	if next != live[9] || !slices.Equal(entryPtrIDs(es), wantAfter) {
		t.Fatalf("Next(%v) = %v, cursor %v; want %v", between, entryPtrIDs(es), next, wantAfter)
	}
	// Capacity 0 still makes progress, one entry at a time.
	es, next, _ = s.sub.Next(ctx10(t), live[0], nil)
	if next != live[1] || !slices.Equal(entryPtrIDs(es), live[1:2]) {
		t.Fatalf("Next(live[0], nil) = %v, cursor %v; want one entry", entryPtrIDs(es), next)
	}
	// At the head: nothing, the cursor stays.
	es, next, _ = s.sub.Next(ctx10(t), live[9], dst)
	if len(es) != 0 || next != live[9] {
		t.Fatalf("Next(head) = %v, %v", entryPtrIDs(es), next)
	}
	if got := h.hub.Stats().CatchUps.Load(); got != catchUps {
		t.Fatalf("reads within the buffer went to Redis: CatchUps %d -> %d", catchUps, got)
	}

	// A cursor before the tail started: read from Redis.
	es, next, err = s.sub.Next(ctx10(t), old[1], make([]*streams.Entry, 0, 100))
	if err != nil {
		t.Fatal(err)
	}
	if h.hub.Stats().CatchUps.Load() != catchUps+1 {
		t.Fatalf("CatchUps = %d, want %d", h.hub.Stats().CatchUps.Load(), catchUps+1)
	}
	want := append(append([]streams.ID{}, old[2:]...), live...)
	if got := entryPtrIDs(es); !slices.Equal(got[:min(len(got), 3)], want[:3]) || next != got[len(got)-1] {
		t.Fatalf("catch-up Next(old[1]) = %v, cursor %v; want it to start %v", got, next, want[:3])
	}
	for _, e := range es {
		if string(e.Frame) != string(testFrame("r", e)) {
			t.Fatalf("caught-up entry %v has Frame %q", e.ID, e.Frame)
		}
	}
	s.cursor = next
	s.got = es
	s.readUntil(live[9], 100)
	if got := s.ids(); !slices.Equal(got, want) {
		t.Fatalf("from old[1]: %v, want %v", got, want)
	}
}

func entryPtrIDs(es []*streams.Entry) []streams.ID {
	out := make([]streams.ID, len(es))
	for i, e := range es {
		out[i] = e.ID
	}
	return out
}

func TestHubCatchUpBehindSmallBuffer(t *testing.T) {
	h := newHubEnv(t, streams.HubOptions{Buffer: 16, Block: 200 * time.Millisecond})
	s := h.subscribe("r")
	ids := h.addN("r", "u", 200)
	s.waitHead(ids[199])
	s.readUntil(ids[199], 7) // from 0-0: 184 entries are no longer in memory
	if got := s.ids(); !slices.Equal(got, ids) {
		t.Fatalf("got %d entries %v..., want all %d in order", len(got), got[:min(5, len(got))], len(ids))
	}
	if n := h.hub.Stats().CatchUps.Load(); n < 184/7 {
		t.Fatalf("CatchUps = %d, want at least %d (184 entries beyond the buffer, 7 a read)", n, 184/7)
	}
	for i, e := range s.got {
		if e.Message != fmt.Sprintf("m%d", i) || string(e.Frame) != string(testFrame("r", e)) {
			t.Fatalf("entry %d = %+v (frame %q)", i, e, e.Frame)
		}
	}
	// The newest 16 are served from memory: no catch-up for them.
	before := h.hub.Stats().CatchUps.Load()
	es, next, err := s.sub.Next(ctx10(t), ids[183], make([]*streams.Entry, 0, 100))
	if err != nil || next != ids[199] || !slices.Equal(entryPtrIDs(es), ids[184:]) {
		t.Fatalf("Next(ids[183]) = %v %v %v", entryPtrIDs(es), next, err)
	}
	if h.hub.Stats().CatchUps.Load() != before {
		t.Fatal("the buffer's own entries were read from Redis")
	}
}

func TestHubCatchUpWhileWriting(t *testing.T) {
	h := newHubEnv(t, streams.HubOptions{Buffer: 16, Block: 200 * time.Millisecond})
	s := h.subscribe("r")
	const n = 500
	ids := make([]streams.ID, n)
	done := make(chan error, 1)
	go func() {
		for i := range n {
			id, _, err := h.store.Append(context.Background(), "r", streams.Message{User: "u", Text: fmt.Sprint(i)})
			if err != nil {
				done <- err
				return
			}
			ids[i] = id
		}
		done <- nil
	}()
	// A slow reader: small reads, so it keeps falling behind the buffer.
	dst := make([]*streams.Entry, 0, 5)
	deadline := time.Now().Add(60 * time.Second)
	var got []*streams.Entry
	writerDone := false
	for !writerDone || s.cursor.Less(ids[n-1]) {
		if !writerDone {
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
				writerDone = true
			default:
			}
		}
		es, next, err := s.sub.Next(ctx10(t), s.cursor, dst)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, es...)
		s.cursor = next
		if len(es) == 0 {
			select {
			case <-s.notes:
			case <-time.After(50 * time.Millisecond):
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not caught up within 60s: at %v of %d", s.cursor, n)
		}
	}
	if !slices.Equal(entryPtrIDs(got), ids) {
		t.Fatalf("got %d entries, want %d, each once and in order", len(got), n)
	}
	if h.hub.Stats().CatchUps.Load() == 0 {
		t.Log("note: the reader never fell behind the buffer")
	}
}

func TestHubEntryWithoutMessage(t *testing.T) {
	h := newHubEnv(t, streams.HubOptions{Block: 200 * time.Millisecond})
	s := h.subscribe("r")
	a, _ := h.add("r", streams.Message{User: "alice", Text: "before"})
	raw, err := h.rdb.XAdd(ctx10(t), &redis.XAddArgs{Stream: h.key("r"), Values: []any{"user", "ops"}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	bare, _ := streams.ParseID(raw)
	c, _ := h.add("r", streams.Message{User: "alice", Text: "after"})
	s.readUntil(c, 10)
	if got := s.ids(); !slices.Equal(got, []streams.ID{a, bare, c}) {
		t.Fatalf("got %v, want %v", got, []streams.ID{a, bare, c})
	}
	e := s.got[1]
	if e.HasMessage || e.Frame != nil || e.User != "ops" || e.Message != "" {
		t.Fatalf("entry without message = %+v, want HasMessage false and no Frame", e)
	}
	if h.encodes(bare) != 0 {
		t.Fatalf("the encoder was called for an entry without message")
	}
	if !s.got[0].HasMessage || s.got[0].Frame == nil || !s.got[2].HasMessage || s.got[2].Frame == nil {
		t.Fatal("the neighbours lost their frames")
	}
	if n := h.hub.Stats().Skipped.Load(); n != 1 {
		t.Fatalf("Skipped = %d, want 1", n)
	}
	// Hub.Encode follows the same rule.
	en := streams.Entry{ID: bare, User: "ops"}
	h.hub.Encode("r", &en)
	if en.Frame != nil {
		t.Fatal("Hub.Encode gave a frame to an entry without message")
	}
	en.HasMessage = true
	h.hub.Encode("r", &en)
	if string(en.Frame) != string(testFrame("r", &en)) {
		t.Fatalf("Hub.Encode = %q", en.Frame)
	}
}

func TestHubEncodesOncePerEntry(t *testing.T) {
	h := newHubEnv(t, streams.HubOptions{Block: 200 * time.Millisecond})
	subs := []*subscriber{h.subscribe("r"), h.subscribe("r"), h.subscribe("r")}
	if n := h.hub.Rooms(); n != 1 {
		t.Fatalf("Rooms = %d with 3 subscribers in one room, want 1", n)
	}
	ids := h.addN("r", "u", 20)
	for _, s := range subs {
		s.readUntil(ids[19], 8)
		if !slices.Equal(s.ids(), ids) {
			t.Fatalf("subscriber got %v, want %v", s.ids(), ids)
		}
	}
	for i, id := range ids {
		if n := h.encodes(id); n != 1 {
			t.Errorf("entry %d encoded %d times, want once", i, n)
		}
		// Every subscriber sends the very same bytes.
		f0 := subs[0].got[i].Frame
		if string(f0) != string(testFrame("r", subs[0].got[i])) {
			t.Errorf("entry %d frame %q", i, f0)
		}
		for _, s := range subs[1:] {
			if f := s.got[i].Frame; len(f) == 0 || &f[0] != &f0[0] {
				t.Errorf("entry %d: subscribers got different frame buffers", i)
			}
		}
	}
	h.mu.Lock()
	total := 0
	for _, n := range h.encoded {
		total += n
	}
	h.mu.Unlock()
	if total != len(ids) {
		t.Errorf("encoder called %d times for %d entries", total, len(ids))
	}
}

func TestHubStopsTailingIdleRooms(t *testing.T) {
	h := newHubEnv(t, streams.HubOptions{Block: 200 * time.Millisecond})
	a := h.subscribe("a")
	b := h.subscribe("b")
	if n := h.hub.Rooms(); n != 2 {
		t.Fatalf("Rooms = %d, want 2", n)
	}
	a.sub.Close()
	a.sub.Close() // twice is harmless
	testkit.Eventually(t, 10*time.Second, "room a dropped", func() bool { return h.hub.Rooms() == 1 })
	b.sub.Close()
	testkit.Eventually(t, 10*time.Second, "room b dropped", func() bool { return h.hub.Rooms() == 0 })
	// The tails' blocking connections are idle again: no XREAD in flight.
	if h.srv.Real {
		testkit.Eventually(t, 10*time.Second, "no XREAD in flight", func() bool { return h.blockedReads() == 0 })
	}

	// Coming back starts a fresh tail from the current end.
	old, _ := h.add("a", streams.Message{User: "u", Text: "while nobody listened"})
	c := h.subscribe("a")
	if c.sub.Head() != old {
		t.Fatalf("new tail starts at %v, want %v", c.sub.Head(), old)
	}
	c.cursor = old
	id, _ := h.add("a", streams.Message{User: "u", Text: "back"})
	c.readUntil(id, 10)
	if !slices.Equal(c.ids(), []streams.ID{id}) {
		t.Fatalf("after resubscribing got %v, want %v", c.ids(), []streams.ID{id})
	}
	if n := h.hub.Rooms(); n != 1 {
		t.Fatalf("Rooms = %d, want 1", n)
	}
}

// blockedReads counts the hub's connections now running XREAD.
func (h *hubEnv) blockedReads() int {
	list, err := h.rdb.ClientList(ctx10(h.t)).Result()
	if err != nil {
		h.t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(list, "\n") {
		if strings.Contains(line, " name="+h.tailName+" ") && strings.Contains(line, " cmd=xread") && strings.Contains(line, " flags=b ") {
			n++
		}
	}
	return n
}

// tailConns counts the hub's blocking connections.
func (h *hubEnv) tailConns() int {
	list, err := h.rdb.ClientList(ctx10(h.t)).Result()
	if err != nil {
		h.t.Fatal(err)
	}
	return strings.Count(list, " name="+h.tailName+" ")
}

func TestHubClose(t *testing.T) {
	srv := redistest.Shared(t)
	redistest.RequireReal(t, srv) // miniredis runs in this process: its goroutines would count
	rdb := srv.Client(t)
	store := streams.NewStore(rdb, streams.Options{Prefix: redistest.Prefix(t)})
	blocking := redis.NewClient(&redis.Options{Addr: srv.Addr, PoolSize: 100, MaintNotificationsConfig: noMaint})
	runtime.GC()
	baseline := runtime.NumGoroutine()

	// A long block: Close must cut the reads in flight short, not wait them out.
	hub := streams.NewHub(store, blocking, streams.HubOptions{Block: 30 * time.Second, Logger: testkit.Quiet()})
	var subs []*streams.Subscription
	for i := range 20 {
		sub, err := hub.Subscribe(ctx10(t), fmt.Sprintf("room%d", i%5), func() {})
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, sub)
	}
	if hub.Rooms() != 5 {
		t.Fatalf("Rooms = %d, want 5", hub.Rooms())
	}
	time.Sleep(100 * time.Millisecond) // let the tails block in XREAD
	closed := make(chan error, 1)
	go func() { closed <- hub.Close() }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return within 10s (tails blocked in XREAD for 30s)")
	}
	if hub.Rooms() != 0 {
		t.Errorf("Rooms = %d after Close", hub.Rooms())
	}
	if _, err := hub.Subscribe(ctx10(t), "room0", func() {}); !errors.Is(err, streams.ErrHubClosed) {
		t.Errorf("Subscribe after Close = %v, want streams.ErrHubClosed", err)
	}
	if err := blocking.Ping(context.Background()).Err(); err != redis.ErrClosed {
		t.Errorf("blocking client after Close: %v, want it closed", err)
	}
	for _, sub := range subs {
		sub.Close() // after Close: harmless
	}
	// Every goroutine the hub started is gone (a little slack for the runtime).
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= baseline+2 {
			break
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%d goroutines after Close, %d before the hub:\n%s", n, baseline, buf)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestHubSubscribeCancelled(t *testing.T) {
	h := newHubEnv(t, streams.HubOptions{Block: 200 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// Either the tail was already ready, or the cancelled context ends the wait;
	// it must not hang and must not leave a subscriber behind.
	sub, err := h.hub.Subscribe(ctx, "r", func() {})
	if err == nil {
		sub.Close()
	} else if err != context.Canceled {
		t.Fatalf("Subscribe with a cancelled context: %v", err)
	}
	testkit.Eventually(t, 10*time.Second, "room dropped", func() bool { return h.hub.Rooms() == 0 })
}

func TestHubSurvivesRedisRestart(t *testing.T) {
	srv := redistest.Start(t, redistest.WithAOF())
	h := newHubEnv(t, streams.HubOptions{Block: 200 * time.Millisecond}, srv)
	s := h.subscribe("r")
	before, _ := h.add("r", streams.Message{User: "u", Text: "before"})
	s.readUntil(before, 10)

	srv.Stop(t)
	testkit.Eventually(t, 10*time.Second, "the tail noticed the outage", func() bool {
		return h.hub.Stats().TailErrors.Load()+h.hub.Stats().Reconnects.Load() > 0
	})
	srv.Restart(t)

	// The first commands after the restart may meet dead pooled connections.
	var after streams.ID
	testkit.Eventually(t, 10*time.Second, "append after restart", func() bool {
		id, _, err := h.store.Append(context.Background(), "r", streams.Message{User: "u", Text: "after"})
		after = id
		return err == nil
	})
	after2, _ := h.add("r", streams.Message{User: "u", Text: "after 2"})
	s.readUntil(after2, 10)
	if got := s.ids(); !slices.Equal(got, []streams.ID{before, after, after2}) {
		t.Fatalf("got %v, want %v", got, []streams.ID{before, after, after2})
	}
	if !bytes.Contains(s.got[1].Frame, []byte("|after")) {
		t.Fatalf("frame %q", s.got[1].Frame)
	}
	if h.hub.Rooms() != 1 {
		t.Fatalf("Rooms = %d, want 1", h.hub.Rooms())
	}
}

func TestHubCloseWhileSubscribeWaitsForRedis(t *testing.T) {
	srv := redistest.Start(t)
	h := newHubEnv(t, streams.HubOptions{Block: 200 * time.Millisecond}, srv)
	srv.Stop(t) // the new tail cannot find its starting point and keeps retrying

	type result struct {
		sub *streams.Subscription
		err error
	}
	res := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		sub, err := h.hub.Subscribe(ctx, "r", func() {})
		res <- result{sub, err}
	}()
	testkit.Eventually(t, 10*time.Second, "the room is being started", func() bool { return h.hub.Rooms() == 1 })
	if err := h.hub.Close(); err != nil {
		t.Logf("Close: %v", err)
	}
	select {
	case r := <-res:
		if r.err == nil {
			t.Fatal("Subscribe succeeded on a closed hub with Redis down")
		}
		// Close must end the wait; running into the caller's own deadline means it did not.
		if errors.Is(r.err, context.DeadlineExceeded) {
			t.Fatalf("Subscribe waited out its 10s deadline although the hub was closed: %v", r.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Subscribe still waiting 20s after Close")
	}
}

func TestHubCatchUpAcrossTrimmedHistory(t *testing.T) {
	h := newHubEnv(t, streams.HubOptions{Buffer: 16, Block: 200 * time.Millisecond})
	s := h.subscribe("r")
	ids := h.addN("r", "u", 50)
	s.waitHead(ids[49])
	// Redis loses everything; the tail's memory still has the newest 16.
	if err := h.rdb.XTrimMaxLen(ctx10(t), h.key("r"), 0).Err(); err != nil {
		t.Fatal(err)
	}
	s.cursor = ids[5]
	s.readUntil(ids[49], 10)
	if got := s.ids(); !slices.Equal(got, ids[34:]) {
		t.Fatalf("after the trim got %v, want the buffered %v", got, ids[34:])
	}
	// Partly trimmed: what Redis still has after the cursor, in order.
	more := h.addN("r", "u", 40) // the buffer now holds more[24:]
	s.waitHead(more[39])
	if err := h.rdb.XTrimMaxLen(ctx10(t), h.key("r"), 30).Err(); err != nil {
		t.Fatal(err)
	}
	s.cursor, s.got = ids[49], nil
	s.readUntil(more[39], 10)
	if got := s.ids(); !slices.Equal(got, more[10:]) {
		t.Fatalf("partly trimmed: got %v, want the retained %v", got, more[10:])
	}
}

func TestHubDropsRoomWhoseSubscriberGaveUpWhileRedisIsDown(t *testing.T) {
	srv := redistest.Start(t)
	h := newHubEnv(t, streams.HubOptions{Block: 200 * time.Millisecond}, srv)
	srv.Stop(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := h.hub.Subscribe(ctx, "r", func() {}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Subscribe with Redis down = %v, want its deadline", err)
	}
	// Nobody wants the room any more: it stops retrying and is forgotten.
	testkit.Eventually(t, 10*time.Second, "room dropped while Redis is down", func() bool { return h.hub.Rooms() == 0 })

	// Once Redis is back, a new subscriber gets a working tail.
	srv.Restart(t)
	s := h.subscribe("r")
	var id streams.ID
	testkit.Eventually(t, 10*time.Second, "append after restart", func() bool {
		var err error
		id, _, err = h.store.Append(context.Background(), "r", streams.Message{User: "u", Text: "back"})
		return err == nil
	})
	s.readUntil(id, 10)
	if !slices.Equal(s.ids(), []streams.ID{id}) {
		t.Fatalf("got %v, want %v", s.ids(), []streams.ID{id})
	}
}
