package hooks_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/hooks"
	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/internal/testkit"
	"github.com/xroom/xroom/internal/testkit/hooktest"
	"github.com/xroom/xroom/streams"
)

// Every message of five rooms, stored by xroom or XADDed as redis-cli
// does, reaches the webhook, in order per room, signed; a room has one
// request in flight at a time, and rooms go in parallel up to the bound.
func TestWebhooksDeliverEveryRoomInOrder(t *testing.T) {
	e := newEnv(t, redistest.Shared(t), "", streams.ModeNotify)
	rc := hooktest.NewReceiver(t, secret, func(*hooktest.Request) int { time.Sleep(2 * time.Millisecond); return http.StatusOK })
	reg := prometheus.NewRegistry()
	reg.MustRegister(e.start(rc.URL, func(o *hooks.WebhookOptions) { o.Concurrency, o.Batch = 3, 7 }).Collectors()...)
	rooms := []string{"r0", "r1", "r2", "r3", "r4"}
	for i := range 40 {
		for j, room := range rooms {
			if (i+j)%3 == 0 {
				e.xadd(room, fmt.Sprintf("cli %d", i))
			} else {
				e.append(room, fmt.Sprintf("app %d", i))
			}
		}
	}
	rc.WaitStreams(e.rdb, e.prefix, rooms, 20*time.Second)
	// A bad signature fails the test in the receiver.
	if maxRoom, maxAll := rc.MaxInFlight(); maxRoom != 1 || maxAll > 3 {
		t.Errorf("at most %d requests in flight for one room (want 1), %d at once (want <= 3)", maxRoom, maxAll)
	}
	for _, r := range rc.Requests() {
		if len(r.Messages) > 7 || r.Delivery == "" || r.Attempt != "1" {
			t.Fatalf("request %+v: want at most 7 messages, a delivery ID, attempt 1", r)
		}
		for _, m := range r.Messages {
			if m.User == "" || m.TS == 0 || !strings.Contains(m.Message, " ") || m.Room != r.Messages[0].Room {
				t.Fatalf("message %+v", m)
			}
		}
	}
	if got := metricValue(t, reg, "xroom_webhook_messages_sent_total"); got != 200 {
		t.Errorf("sent_total = %v, want 200", got)
	}
	for _, room := range rooms {
		if n := e.pending(room); n != 0 {
			t.Errorf("room %s: %d entries still pending", room, n)
		}
	}
}

// The receiver fails for a while (500s, then timeouts): the batches are
// retried, with the same delivery ID and a growing attempt count, until it
// takes them; nothing is lost and the order holds.
func TestWebhooksRetryUntilTheReceiverRecovers(t *testing.T) {
	e := newEnv(t, redistest.Shared(t), "", streams.ModeNotify)
	var failing atomic.Bool
	failing.Store(true)
	var calls atomic.Int64
	rc := hooktest.NewReceiver(t, secret, func(r *hooktest.Request) int {
		if !failing.Load() {
			return http.StatusOK
		}
		if calls.Add(1)%2 == 0 {
			time.Sleep(300 * time.Millisecond) // past the timeout
		}
		return http.StatusInternalServerError
	})
	reg := prometheus.NewRegistry()
	w := e.start(rc.URL, func(o *hooks.WebhookOptions) {
		o.Timeout, o.Batch, o.Backoff = 200*time.Millisecond, 5, 50*time.Millisecond
	})
	reg.MustRegister(w.Collectors()...)
	rooms := []string{"a", "b"}
	for i := range 12 {
		e.append("a", fmt.Sprintf("a %d", i))
		e.xadd("b", fmt.Sprintf("b %d", i))
	}
	deadline := time.Now().Add(10 * time.Second)
	for metricValue(t, reg, "xroom_webhook_retries_total") < 6 {
		if time.Now().After(deadline) {
			t.Fatal("no retries within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	st, err := w.Status(ctx10(t), "a")
	if err != nil {
		t.Fatal(err)
	}
	status := st.(hooks.Status)
	if status.Pending == 0 || status.LastError == nil || status.Room == nil || status.Room.Pending == 0 || status.Room.Holders[status.Consumer] == 0 {
		t.Fatalf("status while failing: %+v (room %+v)", status, status.Room)
	}
	if got := metricValue(t, reg, "xroom_webhook_pending_messages"); got == 0 {
		t.Error("pending_messages is 0 while the receiver fails")
	}
	failing.Store(false)
	rc.WaitStreams(e.rdb, e.prefix, rooms, 20*time.Second)

	attempts := map[string][]string{}
	for _, r := range rc.Requests() {
		attempts[r.Delivery] = append(attempts[r.Delivery], r.Attempt)
	}
	retried := 0
	for d, as := range attempts {
		slices.Sort(as) // recorded as answered: a timed-out try may end after the next
		for i, a := range as {
			if a != fmt.Sprint(i+1) {
				t.Fatalf("delivery %s: attempts %v, want 1, 2, 3...", d, as)
			}
		}
		if len(as) > 1 {
			retried++
		}
	}
	if retried == 0 {
		t.Fatal("no batch was sent twice")
	}
	if f := metricValue(t, reg, "xroom_webhook_requests_failed_total"); f < 6 {
		t.Errorf("requests_failed_total = %v", f)
	}
	if d := metricValue(t, reg, "xroom_webhook_messages_dead_total"); d != 0 {
		t.Errorf("%v messages dead-lettered, want none", d)
	}
}

// A batch the receiver always refuses goes to the room's dead letters
// after MaxAttempts, with the status and error, and the room goes on;
// replaying the dead letters later delivers them and empties the stream.
func TestWebhooksPoisonBatchGoesToDeadLetters(t *testing.T) {
	e := newEnv(t, redistest.Shared(t), "", streams.ModeNotify)
	var cured atomic.Bool
	rc := hooktest.NewReceiver(t, secret, func(r *hooktest.Request) int {
		for _, m := range r.Messages {
			if strings.Contains(m.Message, "poison") && !cured.Load() {
				return http.StatusUnprocessableEntity
			}
		}
		return http.StatusNoContent
	})
	reg := prometheus.NewRegistry()
	reg.MustRegister(e.start(rc.URL, func(o *hooks.WebhookOptions) { o.MaxAttempts = 3 }).Collectors()...)
	before := e.append("lobby", "fine 1")
	testkit.Eventually(t, 15*time.Second, "the first message", func() bool { return len(rc.Delivered()["lobby"]) == 1 })
	poison := e.append("lobby", "poison")
	testkit.Eventually(t, 15*time.Second, "the dead letter", func() bool {
		n, _ := e.rdb.XLen(context.Background(), streams.Keys{Prefix: e.prefix}.Dead("lobby")).Result()
		return n == 1
	})
	after := []string{e.append("lobby", "fine 2"), e.xadd("lobby", "fine 3")}
	testkit.Eventually(t, 15*time.Second, "the room to go on", func() bool { return len(rc.Delivered()["lobby"]) == 3 })
	if got := rc.Delivered()["lobby"]; got[0] != before || got[1] != after[0] || got[2] != after[1] {
		t.Fatalf("delivered %v, want %s then %v", got, before, after)
	}
	dead, err := e.store.DeadLetters(ctx10(t), "lobby", streams.Zero, 10)
	if err != nil || len(dead) != 1 {
		t.Fatalf("dead letters %+v, %v", dead, err)
	}
	if d := dead[0]; d.Entry.ID.String() != poison || d.Entry.Message != "poison" || d.Status != 422 || d.Attempts != 3 || !strings.Contains(d.Error, "HTTP 422") {
		t.Fatalf("dead letter %+v", d)
	}
	if got := metricValue(t, reg, "xroom_webhook_messages_dead_total"); got != 1 {
		t.Errorf("dead_total = %v", got)
	}
	if n := e.pending("lobby"); n != 0 {
		t.Errorf("%d pending", n)
	}

	// Replay while the receiver still refuses: nothing is removed.
	sender := hooks.NewSender(rc.URL, secret, 5*time.Second, 1)
	if n, err := hooks.Replay(ctx10(t), e.store, sender, "lobby", 10); err == nil || n != 0 {
		t.Fatalf("replay to a refusing receiver = %d, %v; want an error", n, err)
	}
	if left, _ := e.store.DeadLetters(ctx10(t), "lobby", streams.Zero, 10); len(left) != 1 {
		t.Fatalf("after a failed replay %d dead letters, want 1", len(left))
	}
	cured.Store(true)
	if n, err := hooks.Replay(ctx10(t), e.store, sender, "lobby", 10); err != nil || n != 1 {
		t.Fatalf("replay = %d, %v", n, err)
	}
	if left, _ := e.store.DeadLetters(ctx10(t), "lobby", streams.Zero, 10); len(left) != 0 {
		t.Fatalf("after the replay %d dead letters", len(left))
	}
	if got := rc.Delivered()["lobby"]; len(got) != 4 || got[3] != poison {
		t.Fatalf("after the replay delivered %v, want the poison last", got)
	}
}

// An instance dies holding a batch (its request never answered): another
// delivers the batch once it has sat unrenewed for the claim time, then
// the rest, in order.
func TestWebhooksTakeOverFromADeadInstance(t *testing.T) {
	srv := redistest.Shared(t)
	a := newEnv(t, srv, "", streams.ModeNotify)
	b := newEnv(t, srv, a.prefix, streams.ModeNotify)
	hang := make(chan struct{})
	stuck := hooktest.NewReceiver(t, secret, func(*hooktest.Request) int { <-hang; return http.StatusOK })
	t.Cleanup(func() { close(hang) }) // before the receiver's Close, which waits for it
	rc := hooktest.NewReceiver(t, secret, nil)
	const claimAfter = 2 * time.Second
	wa := a.start(stuck.URL, func(o *hooks.WebhookOptions) { o.ClaimAfter, o.Timeout = claimAfter, time.Minute })
	first := []string{a.append("room", "one"), a.append("room", "two")}
	testkit.Eventually(t, 15*time.Second, "A's request", func() bool { return stuck.InFlight() == 1 })
	readAt := time.Now()

	regB := prometheus.NewRegistry()
	regB.MustRegister(b.start(rc.URL, func(o *hooks.WebhookOptions) { o.ClaimAfter = claimAfter }).Collectors()...)
	b.append("room", "three")
	time.Sleep(claimAfter / 2)
	if got := rc.Delivered()["room"]; len(got) != 0 {
		t.Fatalf("B delivered %v while A was alive and held the room", got)
	}
	// A dies: it stops renewing, its request is cut, it leaves what it holds.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = wa.Close(ctx)
	rc.WaitStreams(b.rdb, b.prefix, []string{"room"}, 10*time.Second)
	took := time.Since(readAt)
	if got := rc.Delivered()["room"]; got[0] != first[0] || got[1] != first[1] {
		t.Fatalf("B delivered %v, want A's batch %v first", got, first)
	}
	if took < claimAfter {
		t.Errorf("B delivered A's batch %v after A read it, before the claim time", took)
	}
	if c := metricValue(t, regB, "xroom_webhook_batches_claimed_total"); c != 1 {
		t.Errorf("batches_claimed_total = %v, want 1", c)
	}
	t.Logf("taken over %v after A read the batch (claim time %v)", took.Round(time.Millisecond), claimAfter)
}

// By default a room's group starts when webhooks were first turned on:
// history from before is not sent (a deployment with years of messages
// does not flood its backend); WEBHOOK_FROM=start sends it too.
func TestWebhooksStartWhenEnabled(t *testing.T) {
	e := newEnv(t, redistest.Shared(t), "", streams.ModeNotify)
	old := e.append("old", "before")
	time.Sleep(5 * time.Millisecond)
	rc := hooktest.NewReceiver(t, secret, nil)
	e.start(rc.URL, func(o *hooks.WebhookOptions) { o.From = streams.HookFromEnabled })
	testkit.Eventually(t, 15*time.Second, "hooks:since", func() bool {
		return e.rdb.Exists(context.Background(), streams.Keys{Prefix: e.prefix}.HooksSince()).Val() == 1
	})
	newer := e.append("old", "after")
	fresh := e.xadd("new", "a new room")
	testkit.Eventually(t, 15*time.Second, "the new messages", func() bool { d := rc.Delivered(); return len(d["old"]) == 1 && len(d["new"]) == 1 })
	if d := rc.Delivered(); d["old"][0] != newer || d["new"][0] != fresh {
		t.Fatalf("delivered %v; want %s (not %s) and %s", d, newer, old, fresh)
	}

	e2 := newEnv(t, redistest.Shared(t), "", streams.ModeNotify)
	all := []string{e2.append("old", "before 1"), e2.xadd("old", "before 2")}
	rc2 := hooktest.NewReceiver(t, secret, nil)
	e2.start(rc2.URL, func(o *hooks.WebhookOptions) { o.From = streams.HookFromStart })
	rc2.WaitStreams(e2.rdb, e2.prefix, []string{"old"}, 10*time.Second)
	if got := rc2.Delivered()["old"]; len(got) != 2 || got[0] != all[0] {
		t.Fatalf("from the start: delivered %v, want %v", got, all)
	}
}

// Without keyspace notifications (a Redis that refuses CONFIG, as managed
// services do) rooms are found by polling: messages from xroom and from
// redis-cli, in a room created before the instance started, still arrive.
func TestWebhooksWithoutKeyspaceNotifications(t *testing.T) {
	srv := redistest.Start(t, redistest.WithArgs("--rename-command", "CONFIG", ""))
	e := newEnv(t, srv, "", streams.ModeAuto)
	e.xadd("early", "written before xroom")
	rc := hooktest.NewReceiver(t, secret, nil)
	e.start(rc.URL, nil)
	e.append("app", "through xroom")
	e.xadd("early", "more from redis-cli")
	e.xadd("cli", "a room only redis-cli knows")
	rc.WaitStreams(e.rdb, e.prefix, []string{"early", "app", "cli"}, 10*time.Second)
}

// metricValue is the value of reg's metric name (a counter or a gauge).
func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			return m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// On a Redis Cluster every command of delivery stays in its room's slot,
// and rooms on every primary are found and delivered.
func TestWebhooksOnCluster(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	cc := c.Client(t)
	prefix := redistest.Prefix(t)
	e := &env{t: t, prefix: prefix, store: streams.NewStore(cc, streams.Options{Prefix: prefix})}
	blocking := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs, PoolSize: 2})
	e.hub = streams.NewHub(e.store, blocking, streams.HubOptions{Logger: testkit.Quiet()})
	t.Cleanup(func() { _ = e.hub.Close() })
	rc := hooktest.NewReceiver(t, secret, func(r *hooktest.Request) int {
		for _, m := range r.Messages {
			if m.Message == "poison" {
				return http.StatusBadRequest
			}
		}
		return http.StatusOK
	})
	e.start(rc.URL, func(o *hooks.WebhookOptions) { o.MaxAttempts = 2 })
	poison, err := cc.XAdd(ctx10(t), &redis.XAddArgs{Stream: e.key("c"), Values: []any{"user", "cli", "message", "poison"}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 15*time.Second, "the dead letter", func() bool { return cc.XLen(context.Background(), streams.Keys{Prefix: prefix}.Dead("c")).Val() == 1 })
	rooms := []string{"a", "b", "c", "d", "e", "f"}
	want := map[string][]string{}
	for i := range 5 {
		for _, room := range rooms {
			var id string
			if i%2 == 0 {
				sid, _, err := e.store.Append(ctx10(t), room, streams.Message{User: "u", Text: fmt.Sprint(i)})
				if err != nil {
					t.Fatal(err)
				}
				id = sid.String()
			} else {
				var err error
				id, err = cc.XAdd(ctx10(t), &redis.XAddArgs{Stream: e.key(room), Values: []any{"user", "cli", "message", fmt.Sprint(i)}}).Result()
				if err != nil {
					t.Fatal(err)
				}
			}
			want[room] = append(want[room], id)
		}
	}
	testkit.Eventually(t, 15*time.Second, "every room delivered", func() bool {
		got := rc.Delivered()
		for _, room := range rooms {
			if !slices.Equal(got[room], want[room]) {
				return false
			}
		}
		return true
	})
	dead, err := e.store.DeadLetters(ctx10(t), "c", streams.Zero, 10)
	if err != nil || len(dead) != 1 || dead[0].Entry.ID.String() != poison || dead[0].Status != 400 {
		t.Fatalf("dead letters of c: %+v, %v", dead, err)
	}
}
