package streams_test

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/internal/testkit"
	"github.com/xroom/xroom/streams"
)

// newPresence starts a Presence on e's store, closed at the end of the test.
func (e *env) newPresence(ttl, heartbeat time.Duration) *streams.Presence {
	p := streams.NewPresence(e.store, streams.PresenceOptions{TTL: ttl, Heartbeat: heartbeat, Logger: testkit.Quiet()})
	e.t.Cleanup(func() { _ = p.Close(context.Background()) })
	return p
}

// events returns the room's events stream as "type user" lines.
func (e *env) events(room string) []string {
	e.t.Helper()
	msgs, err := e.rdb.XRange(ctx10(e.t), e.store.Keys().Events(room), "-", "+").Result()
	if err != nil {
		e.t.Fatal(err)
	}
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = fmt.Sprint(m.Values["type"], " ", m.Values["user"])
	}
	return out
}

func count(lines []string, line string) int {
	n := 0
	for _, l := range lines {
		if l == line {
			n++
		}
	}
	return n
}

func (e *env) members(p *streams.Presence, room string) []string {
	e.t.Helper()
	users, _, err := p.Members(ctx10(e.t), room)
	if err != nil {
		e.t.Fatal(err)
	}
	return users
}

func mustJoin(t *testing.T, p *streams.Presence, room, user string) string {
	t.Helper()
	m, err := p.Join(ctx10(t), room, user)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestPresenceJoinLeaveOneMemberPerUser(t *testing.T) {
	e := newEnv(t, streams.Options{})
	p := e.newPresence(time.Minute, time.Hour)
	a1 := mustJoin(t, p, "r", "alice")
	a2 := mustJoin(t, p, "r", "alice") // a second tab
	mustJoin(t, p, "r", "b:o:b")       // ':' in a name: parsed by the last one
	if got := e.members(p, "r"); !slices.Equal(got, []string{"alice", "b:o:b"}) {
		t.Fatalf("members %v", got)
	}
	// Readable in redis-cli: USER:CONNID scored by expiry (ms).
	zs, err := e.rdb.ZRangeWithScores(ctx10(t), streams.Keys{Prefix: e.prefix}.Presence("r"), 0, -1).Result()
	if err != nil || len(zs) != 3 {
		t.Fatalf("ZRANGE: %v %v", zs, err)
	}
	for _, z := range zs {
		m := z.Member.(string)
		if !strings.HasPrefix(m, "alice:") && !strings.HasPrefix(m, "b:o:b:") || len(m[strings.LastIndexByte(m, ':')+1:]) != 8 {
			t.Fatalf("member %q", m)
		}
		if exp := time.UnixMilli(int64(z.Score)); exp.Before(time.Now().Add(30*time.Second)) || exp.After(time.Now().Add(2*time.Minute)) {
			t.Fatalf("member %q expires at %v, want about now + 1m", m, exp)
		}
	}
	if ttl := e.rdb.PTTL(ctx10(t), streams.Keys{Prefix: e.prefix}.Presence("r")).Val(); ttl <= 0 || ttl > time.Minute {
		t.Fatalf("presence key PTTL %v, want up to the TTL", ttl)
	}
	if err := p.Leave(ctx10(t), "r", a1); err != nil {
		t.Fatal(err)
	}
	if got := e.members(p, "r"); !slices.Equal(got, []string{"alice", "b:o:b"}) {
		t.Fatalf("after one of two tabs left: members %v", got)
	}
	if err := p.Leave(ctx10(t), "r", a2); err != nil {
		t.Fatal(err)
	}
	if got := e.members(p, "r"); !slices.Equal(got, []string{"b:o:b"}) {
		t.Fatalf("after both tabs left: members %v", got)
	}
	want := []string{"join alice", "join b:o:b", "leave alice"}
	if got := e.events("r"); !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	// Leaving twice writes nothing more.
	if err := p.Leave(ctx10(t), "r", a2); err != nil {
		t.Fatal(err)
	}
	if got := e.events("r"); len(got) != 3 {
		t.Fatalf("events %v after a repeated leave", got)
	}
}

func TestPresenceMembersSkipExpired(t *testing.T) {
	e := newEnv(t, streams.Options{})
	p := e.newPresence(time.Minute, time.Hour)
	mustJoin(t, p, "r", "bob")
	now := time.Now().UnixMilli()
	key := streams.Keys{Prefix: e.prefix}.Presence("r")
	e.rdb.ZAdd(ctx10(t), key, redis.Z{Score: float64(now - 1000), Member: "ghost:old"}, redis.Z{Score: float64(now + 60000), Member: "zed:x1"})
	if got := e.members(p, "r"); !slices.Equal(got, []string{"bob", "zed"}) {
		t.Fatalf("members %v, want bob and zed (ghost expired)", got)
	}
	if got := e.members(p, "empty"); len(got) != 0 {
		t.Fatalf("members of an empty room: %v", got)
	}
}

func TestPresenceCrashedInstanceFadesWithOneLeave(t *testing.T) {
	e := newEnv(t, streams.Options{})
	const ttl, beat = time.Second, 50 * time.Millisecond
	// Two live instances sweep the room all the time, racing each other.
	a, b := e.newPresence(ttl, beat), e.newPresence(ttl, beat)
	mustJoin(t, a, "r", "alice")
	mustJoin(t, b, "r", "bob")
	// A third crashes: its heartbeat stops and nothing is cleaned up.
	c := streams.NewPresence(e.store, streams.PresenceOptions{TTL: ttl, Heartbeat: beat, Logger: testkit.Quiet()})
	mustJoin(t, c, "r", "carol")
	mustJoin(t, c, "r", "carol")
	mustJoin(t, c, "r", "bob") // bob also had a tab there: he stays
	c.Crash()
	// And a member written by hand with a short expiry.
	e.rdb.ZAdd(ctx10(t), streams.Keys{Prefix: e.prefix}.Presence("r"), redis.Z{Score: float64(time.Now().Add(300 * time.Millisecond).UnixMilli()), Member: "ghost:zz"})
	if got := e.members(a, "r"); !slices.Equal(got, []string{"alice", "bob", "carol", "ghost"}) {
		t.Fatalf("members before the crash shows %v", got)
	}
	testkit.Eventually(t, 10*time.Second, "carol and ghost fade out", func() bool {
		got, _, err := a.Members(context.Background(), "r")
		return err == nil && slices.Equal(got, []string{"alice", "bob"})
	})
	testkit.Eventually(t, 10*time.Second, "both leaves written", func() bool {
		ev := e.events("r")
		return count(ev, "leave carol") == 1 && count(ev, "leave ghost") == 1
	})
	// More sweeps by both instances change nothing.
	a.Heartbeat(context.Background())
	b.Heartbeat(context.Background())
	time.Sleep(3 * beat)
	ev := e.events("r")
	if count(ev, "leave carol") != 1 || count(ev, "leave ghost") != 1 || count(ev, "leave bob") != 0 || count(ev, "leave alice") != 0 {
		t.Fatalf("events %v: want exactly one leave each for carol and ghost, none for alice and bob", ev)
	}
	if count(ev, "join carol") != 1 || count(ev, "join bob") != 1 {
		t.Fatalf("events %v: want one join each for carol and bob", ev)
	}
	if n := a.Stats().Leaves.Load() + b.Stats().Leaves.Load(); n != 2 {
		t.Fatalf("the two sweepers wrote %d leaves, want 2", n)
	}
}

func TestPresenceHeartbeatIsOnePipelineNotOneCallPerConnection(t *testing.T) {
	e, hook := countedEnv(t)
	p := e.newPresence(time.Minute, time.Hour) // the test drives the heartbeat
	for i := range 700 {                       // more than one script call's worth
		mustJoin(t, p, "big", "u"+strconv.Itoa(i))
	}
	for i := range 30 {
		mustJoin(t, p, "small", "v"+strconv.Itoa(i))
	}
	scores := func(room string) map[string]float64 {
		zs, err := e.rdb.ZRangeWithScores(ctx10(t), streams.Keys{Prefix: e.prefix}.Presence(room), 0, -1).Result()
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]float64{}
		for _, z := range zs {
			m[z.Member.(string)] = z.Score
		}
		return m
	}
	old := scores("big")
	time.Sleep(5 * time.Millisecond)
	hook.commands.Store(0)
	hook.pipelines.Store(0)
	zadds := func() int {
		if !e.srv.Real {
			return 0 // miniredis keeps no command statistics
		}
		info, err := e.rdb.Info(ctx10(t), "commandstats").Result()
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`cmdstat_zadd:calls=(\d+)`).FindStringSubmatch(info)
		if m == nil {
			return 0
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	before := zadds()
	p.Heartbeat(context.Background())
	if c, pp := hook.commands.Load(), hook.pipelines.Load(); c != 0 || pp != 1 {
		t.Fatalf("one heartbeat of 730 connections in 2 rooms: %d single commands and %d pipelines, want 0 and 1", c, pp)
	}
	// Inside the scripts too: a ZADD per chunk of a room, not per member.
	if n := zadds() - before; e.srv.Real && n > 3 {
		t.Fatalf("one heartbeat of 730 connections in 2 rooms ran %d ZADDs in Redis, want at most 3 (one per script call)", n)
	}
	for m, s := range scores("big") {
		if s <= old[m] {
			t.Fatalf("member %s not refreshed: %v -> %v", m, old[m], s)
		}
	}
	if p.Stats().Heartbeats.Load() != 1 {
		t.Fatalf("Heartbeats = %d", p.Stats().Heartbeats.Load())
	}
}

func TestPresenceHeartbeatSurvivesRedisOutage(t *testing.T) {
	srv := redistest.Start(t)
	prefix := redistest.Prefix(t)
	e := &env{t: t, srv: srv, rdb: srv.Client(t), prefix: prefix, store: streams.NewStore(srv.Client(t), streams.Options{Prefix: prefix})}
	p := e.newPresence(2*time.Second, 100*time.Millisecond)
	mustJoin(t, p, "r", "alice")
	srv.Stop(t)
	if _, err := p.Join(ctx10(t), "r", "bob"); err == nil {
		t.Fatal("Join with Redis down: no error")
	}
	testkit.Eventually(t, 10*time.Second, "a failed heartbeat", func() bool { return p.Stats().Failures.Load() >= 2 })
	srv.Restart(t) // no persistence: Redis lost everything
	// The heartbeat puts both back, with their joins.
	testkit.Eventually(t, 10*time.Second, "presence restored", func() bool {
		got, _, err := p.Members(context.Background(), "r")
		return err == nil && slices.Equal(got, []string{"alice", "bob"})
	})
	if ev := e.events("r"); count(ev, "join alice") != 1 || count(ev, "join bob") != 1 {
		t.Fatalf("events after the restart %v", ev)
	}
}

func TestPresenceScriptsReloadAfterFlush(t *testing.T) {
	e := newEnv(t, streams.Options{})
	redistest.RequireReal(t, e.srv)
	p := e.newPresence(time.Minute, time.Hour)
	mustJoin(t, p, "r", "alice")
	e.srv.CLI(t, "SCRIPT", "FLUSH")
	m := mustJoin(t, p, "r", "bob")
	e.srv.CLI(t, "SCRIPT", "FLUSH")
	p.Heartbeat(context.Background())
	e.srv.CLI(t, "SCRIPT", "FLUSH")
	if err := p.Leave(ctx10(t), "r", m); err != nil {
		t.Fatal(err)
	}
	if got := e.events("r"); !slices.Equal(got, []string{"join alice", "join bob", "leave bob"}) {
		t.Fatalf("events %v", got)
	}
	if p.Stats().Failures.Load() != 0 {
		t.Fatalf("%d failures", p.Stats().Failures.Load())
	}
}

func TestPresenceCloseRemovesLocalMembers(t *testing.T) {
	e := newEnv(t, streams.Options{})
	other := e.newPresence(time.Minute, time.Hour)
	mustJoin(t, other, "r", "bob")
	p := streams.NewPresence(e.store, streams.PresenceOptions{TTL: time.Minute, Heartbeat: 20 * time.Millisecond, Logger: testkit.Quiet()})
	mustJoin(t, p, "r", "alice")
	mustJoin(t, p, "r", "alice")
	mustJoin(t, p, "r", "bob") // bob has a tab elsewhere: no leave for him
	mustJoin(t, p, "s", "carol")
	if err := p.Close(ctx10(t)); err != nil {
		t.Fatal(err)
	}
	if got := e.members(other, "r"); !slices.Equal(got, []string{"bob"}) {
		t.Fatalf("members after Close %v", got)
	}
	if n := e.rdb.Exists(ctx10(t), streams.Keys{Prefix: e.prefix}.Presence("s")).Val(); n != 0 {
		t.Fatal("room s still has a presence set")
	}
	if ev := e.events("r"); !slices.Equal(ev, []string{"join bob", "join alice", "leave alice"}) {
		t.Fatalf("events %v", ev)
	}
	if ev := e.events("s"); !slices.Equal(ev, []string{"join carol", "leave carol"}) {
		t.Fatalf("events %v", ev)
	}
	// The heartbeat is stopped: nothing comes back.
	hb := p.Stats().Heartbeats.Load()
	time.Sleep(100 * time.Millisecond)
	if p.Stats().Heartbeats.Load() != hb || len(e.members(other, "s")) != 0 {
		t.Fatal("the heartbeat still runs after Close")
	}
	if _, err := p.Join(ctx10(t), "r", "late"); err == nil {
		t.Fatal("Join after Close: no error")
	}
}

func TestEventsStreamIsCapped(t *testing.T) {
	e := newEnv(t, streams.Options{})
	p := e.newPresence(time.Minute, time.Hour)
	for i := range 3000 {
		if err := p.Typing(ctx10(t), "r", "u"+strconv.Itoa(i%7)); err != nil {
			t.Fatal(err)
		}
	}
	n := e.rdb.XLen(ctx10(t), e.store.Keys().Events("r")).Val()
	// MAXLEN ~ trims whole nodes: a little over 1000 may remain.
	if n < streams.EventsMaxLen || n > streams.EventsMaxLen+200 {
		t.Fatalf("events stream holds %d entries after 3000 events, want about %d", n, streams.EventsMaxLen)
	}
	if ttl := e.rdb.PTTL(ctx10(t), e.store.Keys().Events("r")).Val(); ttl <= 0 {
		t.Fatalf("events stream PTTL %v, want an expiry", ttl)
	}
}

func TestHubDeliversEventsLiveOnlyAndSkipsWhatASlowSubscriberMissed(t *testing.T) {
	h := newHubEnv(t, streams.HubOptions{Block: 200 * time.Millisecond, EncodeEvent: func(room string, ev *streams.Event) []byte {
		return []byte(room + "|" + ev.Type + "|" + ev.User)
	}})
	key := h.store.Keys().Events("r")
	xadd := func(typ, user string) {
		t.Helper()
		if err := h.rdb.XAdd(ctx10(t), &redis.XAddArgs{Stream: key, Values: []any{"type", typ, "user", user}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	xadd("typing", "early") // before anyone subscribed: never delivered
	s := h.subscribe("r")
	seq := s.sub.EventSeq()
	xadd("typing", "bob")
	xadd("dance", "x") // not an event xroom knows: ignored
	xadd("join", "")   // about nobody: ignored
	xadd("join", "carol")
	dst := make([]*streams.Event, 0, 10)
	var got []string
	for len(got) < 2 {
		s.waitNote()
		var evs []*streams.Event
		evs, seq = s.sub.Events(seq, dst)
		for _, ev := range evs {
			got = append(got, string(ev.Frame))
		}
	}
	if !slices.Equal(got, []string{"r|typing|bob", "r|join|carol"}) {
		t.Fatalf("events %v", got)
	}
	// Events are not messages: the message ring and cursor did not move.
	if es, next, err := s.sub.Next(ctx10(t), streams.Zero, make([]*streams.Entry, 0, 10)); err != nil || len(es) != 0 || !next.IsZero() {
		t.Fatalf("Next after events only: %v %v %v", es, next, err)
	}

	// A subscriber that reads nothing while 600 events pass skips to the
	// newest EventBuffer of them: the buffer never grows.
	slow := s.sub.EventSeq()
	pipe := h.rdb.Pipeline()
	for i := range 600 {
		pipe.XAdd(ctx10(t), &redis.XAddArgs{Stream: key, Values: []any{"type", "typing", "user", "u" + strconv.Itoa(i)}})
	}
	if _, err := pipe.Exec(ctx10(t)); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "600 events read", func() bool { return s.sub.EventSeq() == slow+600 })
	var missed []string
	big := make([]*streams.Event, 0, 100)
	for {
		evs, next := s.sub.Events(slow, big)
		for _, ev := range evs {
			missed = append(missed, ev.User)
		}
		slow = next
		if len(evs) == 0 {
			break
		}
	}
	if len(missed) != streams.EventBuffer || missed[0] != "u"+strconv.Itoa(600-streams.EventBuffer) || missed[len(missed)-1] != "u599" {
		t.Fatalf("a subscriber 600 events behind got %d: %v ... %v", len(missed), missed[:1], missed[len(missed)-1:])
	}
}

// gateHook holds the first pipeline sent after it is armed until released.
type gateHook struct {
	armed    atomic.Bool
	started  chan struct{}
	released chan struct{}
}

func (h *gateHook) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *gateHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *gateHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if h.armed.CompareAndSwap(true, false) {
			close(h.started)
			<-h.released
		}
		return next(ctx, cmds)
	}
}

// A connection that leaves while a heartbeat carrying it is in flight is
// not added back by that heartbeat (no second join, no ghost member).
func TestPresenceLeaveDuringHeartbeatStaysLeft(t *testing.T) {
	srv := redistest.Shared(t)
	rdb := srv.Client(t)
	gate := &gateHook{started: make(chan struct{}), released: make(chan struct{})}
	rdb.AddHook(gate)
	prefix := redistest.Prefix(t)
	e := &env{t: t, srv: srv, rdb: srv.Client(t), prefix: prefix, store: streams.NewStore(rdb, streams.Options{Prefix: prefix})}
	p := e.newPresence(time.Minute, time.Hour)
	m := mustJoin(t, p, "r", "alice")
	gate.armed.Store(true)
	beat := make(chan struct{})
	go func() { p.Heartbeat(context.Background()); close(beat) }()
	<-gate.started // the heartbeat has read alice's member and is about to send
	left := make(chan error, 1)
	go func() { left <- p.Leave(context.Background(), "r", m) }()
	select {
	case err := <-left: // a Leave that does not wait for the heartbeat
		left <- err
	case <-time.After(200 * time.Millisecond):
	}
	close(gate.released)
	<-beat
	if err := <-left; err != nil {
		t.Fatal(err)
	}
	if n := e.rdb.ZCard(ctx10(t), streams.Keys{Prefix: prefix}.Presence("r")).Val(); n != 0 {
		t.Fatalf("%d members after alice left", n)
	}
	if ev := e.events("r"); !slices.Equal(ev, []string{"join alice", "leave alice"}) {
		t.Fatalf("events %v, want one join and one leave", ev)
	}
}

// A room with more users than MaxMembers gets no events (each would go to
// every connection) and a partial member list.
func TestPresenceBigRoomGetsNoEventsAndAPartialList(t *testing.T) {
	e := newEnv(t, streams.Options{})
	p := streams.NewPresence(e.store, streams.PresenceOptions{TTL: time.Minute, Heartbeat: time.Hour, MaxMembers: 3, Logger: testkit.Quiet()})
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	var ms []string
	for _, u := range []string{"a", "b", "c", "d", "e"} {
		ms = append(ms, mustJoin(t, p, "r", u))
	}
	if err := p.Typing(ctx10(t), "r", "a"); err != nil {
		t.Fatal(err)
	}
	users, partial, err := p.Members(ctx10(t), "r")
	if err != nil || !partial || len(users) != 3 {
		t.Fatalf("Members of a room of 5 with MaxMembers 3: %v partial=%v %v", users, partial, err)
	}
	for _, m := range ms[3:] {
		if err := p.Leave(ctx10(t), "r", m); err != nil {
			t.Fatal(err)
		}
	}
	// Back to 3 users: events again.
	if err := p.Typing(ctx10(t), "r", "a"); err != nil {
		t.Fatal(err)
	}
	users, partial, err = p.Members(ctx10(t), "r")
	if err != nil || partial || !slices.Equal(users, []string{"a", "b", "c"}) {
		t.Fatalf("Members of a room of 3: %v partial=%v %v", users, partial, err)
	}
	want := []string{"join a", "join b", "join c", "leave e", "typing a"}
	if got := e.events("r"); !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
}

// A room whose events key was overwritten by hand (SET) keeps delivering
// its messages: the tail drops the events stream, not the room.
func TestHubKeepsMessagesWhenTheEventsKeyIsNotAStream(t *testing.T) {
	h := newHubEnv(t, streams.HubOptions{Block: 200 * time.Millisecond})
	for _, early := range []bool{true, false} {
		room := fmt.Sprintf("wrongtype-%v", early)
		key := h.store.Keys().Events(room)
		if early { // before the tail starts: its first read of the heads sees it
			if err := h.rdb.Set(ctx10(t), key, "oops", 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
		s := h.subscribe(room)
		if !early { // while tailing
			if err := h.rdb.Set(ctx10(t), key, "oops", 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
		var last streams.ID
		for i := range 3 {
			id, _, err := h.store.Append(ctx10(t), room, streams.Message{User: "u", Text: fmt.Sprint("m", i)})
			if err != nil {
				t.Fatal(err)
			}
			last = id
		}
		s.readUntil(last, 10)
		if len(s.got) != 3 {
			t.Fatalf("early=%v: got %d messages, want 3", early, len(s.got))
		}
	}
}
