package streams_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/streams"
)

// scriptCounter is a go-redis hook that records, for every script call sent
// in a pipeline, how many rooms its keys name.
type scriptCounter struct {
	mu           sync.Mutex
	calls        int
	roomsPerCall []int
}

func (h *scriptCounter) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *scriptCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *scriptCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.mu.Lock()
		for _, c := range cmds {
			name := c.Name()
			if name != "evalsha" && name != "eval" {
				continue
			}
			rooms := map[string]bool{}
			for _, a := range c.Args() {
				if s, ok := a.(string); ok && strings.HasSuffix(s, "}:messages") {
					rooms[s] = true
				}
			}
			h.calls++
			h.roomsPerCall = append(h.roomsPerCall, len(rooms))
		}
		h.mu.Unlock()
		return next(ctx, cmds)
	}
}

// appendsWhilePaused pauses Redis, starts one append per message (room i of
// rooms[i]), resumes Redis once they have queued, and returns each result.
func appendsWhilePaused(t *testing.T, rs *redistest.Server, store *streams.Store, rooms []string, msgs []streams.Message) ([]streams.ID, []bool, []error) {
	t.Helper()
	ids, dups, errs := make([]streams.ID, len(msgs)), make([]bool, len(msgs)), make([]error, len(msgs))
	ctx := ctx10(t)
	rs.Pause(t)
	var wg sync.WaitGroup
	for i := range msgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids[i], dups[i], errs[i] = store.Append(ctx, rooms[i], msgs[i])
		}()
	}
	time.Sleep(500 * time.Millisecond)
	rs.Resume(t)
	wg.Wait()
	return ids, dups, errs
}

// On a single node, the client_id appends of many rooms that queued
// together go to Redis in one script call, each stored once, duplicates
// (one within the same call) detected.
func TestDedupAppendsOfManyRoomsShareAScriptCall(t *testing.T) {
	rs := redistest.Start(t)
	redistest.RequireReal(t, rs)
	rdb := rs.Client(t)
	var count scriptCounter
	rdb.AddHook(&count)
	store := streams.NewStore(rdb, streams.Options{Prefix: redistest.Prefix(t), MaxLen: 1000})
	if _, _, err := store.Append(ctx10(t), "warm", streams.Message{User: "u", Text: "w", ClientID: "w"}); err != nil {
		t.Fatal(err)
	}
	const n = 40
	var rooms []string
	var msgs []streams.Message
	for i := range n {
		rooms = append(rooms, fmt.Sprintf("r%d", i%8))
		msgs = append(msgs, streams.Message{User: "u", Text: fmt.Sprint(i), ClientID: fmt.Sprintf("c%d", i)})
	}
	rooms = append(rooms, "r0", "r0")
	msgs = append(msgs, streams.Message{User: "u", Text: "again", ClientID: "c0"}, streams.Message{User: "u", Text: "again", ClientID: "c8"})
	ids, dups, errs := appendsWhilePaused(t, rs, store, rooms, msgs)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	for i, orig := range []int{0, 8} { // the two resends
		j := n + i
		if dups[j] == dups[orig] || ids[j] != ids[orig] {
			t.Fatalf("%s twice: (%v %v) and (%v %v), want one stored and one duplicate of it", msgs[j].ClientID, ids[orig], dups[orig], ids[j], dups[j])
		}
	}
	var stored int64
	for r := range 8 {
		stored += rdb.XLen(ctx10(t), store.Keys().Messages(fmt.Sprintf("r%d", r))).Val()
	}
	if stored != n {
		t.Fatalf("%d entries stored, want %d", stored, n)
	}
	count.mu.Lock()
	defer count.mu.Unlock()
	most := 0
	for _, r := range count.roomsPerCall {
		most = max(most, r)
	}
	if most < 2 || count.calls > 20 {
		t.Fatalf("%d appends took %d script calls, rooms per call %v: want calls shared across rooms", n+3, count.calls, count.roomsPerCall)
	}
}

// One append that fails inside a shared script call (its stream key holds
// a string) gets its error; the others of the call are stored and acked.
func TestDedupAppendFailureIsItsOwn(t *testing.T) {
	rs := redistest.Start(t)
	redistest.RequireReal(t, rs)
	rdb := rs.Client(t)
	store := streams.NewStore(rdb, streams.Options{Prefix: redistest.Prefix(t)})
	ctx := ctx10(t)
	if _, _, err := store.Append(ctx, "warm", streams.Message{User: "u", Text: "w", ClientID: "w"}); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(ctx, store.Keys().Messages("bad"), "not a stream", 0).Err(); err != nil {
		t.Fatal(err)
	}
	var rooms []string
	var msgs []streams.Message
	for i := range 20 {
		room := fmt.Sprintf("ok%d", i%4)
		if i == 10 {
			room = "bad"
		}
		rooms = append(rooms, room)
		msgs = append(msgs, streams.Message{User: "u", Text: fmt.Sprint(i), ClientID: fmt.Sprintf("c%d", i)})
	}
	_, _, errs := appendsWhilePaused(t, rs, store, rooms, msgs)
	for i, err := range errs {
		if i == 10 {
			if err == nil || !strings.Contains(err.Error(), "WRONGTYPE") {
				t.Fatalf("append to the string key: %v, want WRONGTYPE", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	// Nothing remembers the failed client_id: a retry elsewhere is stored.
	if n := rdb.Exists(ctx, store.Keys().Dedup("bad", "u", "c10")).Val(); n != 0 {
		t.Fatal("the failed append left a dedup key")
	}
	var stored int64
	for r := range 4 {
		stored += rdb.XLen(ctx, store.Keys().Messages(fmt.Sprintf("ok%d", r))).Val()
	}
	if stored != 19 {
		t.Fatalf("%d entries stored, want 19", stored)
	}
}

// On Redis Cluster, concurrent client_id appends to rooms all over the
// slots share pipelines but never a script call across rooms (that would
// fail with CROSSSLOT): every one is stored once, resends are duplicates.
func TestDedupAppendsOnClusterStayInOneSlot(t *testing.T) {
	cluster := redistest.StartCluster(t, 3)
	cc := cluster.Client(t)
	var count scriptCounter
	cc.AddHook(&count)
	store := streams.NewStore(cc, streams.Options{Prefix: redistest.Prefix(t), MaxLen: 1000})
	ctx := ctx10(t)
	const rooms, per = 30, 20
	var wg sync.WaitGroup
	var failed atomic.Value
	for r := range rooms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			room := fmt.Sprintf("room-%d", r)
			for i := range per {
				m := streams.Message{User: "u", Text: "x", ClientID: fmt.Sprintf("c%d", i)}
				if _, dup, err := store.Append(ctx, room, m); err != nil || dup {
					failed.Store(fmt.Sprintf("%s %d: dup %v, %v", room, i, dup, err))
					return
				}
				if _, dup, err := store.Append(ctx, room, m); err != nil || !dup {
					failed.Store(fmt.Sprintf("%s %d resent: dup %v, %v", room, i, dup, err))
					return
				}
			}
		}()
	}
	wg.Wait()
	if f := failed.Load(); f != nil {
		t.Fatal(f)
	}
	for r := range rooms {
		if n := cc.XLen(ctx, store.Keys().Messages(fmt.Sprintf("room-%d", r))).Val(); n != per {
			t.Fatalf("room-%d holds %d entries, want %d", r, n, per)
		}
	}
	count.mu.Lock()
	defer count.mu.Unlock()
	for _, n := range count.roomsPerCall {
		if n != 1 {
			t.Fatalf("a script call named %d rooms on a cluster: %v", n, count.roomsPerCall)
		}
	}
}

// appendedTotal reads xroom_messages_appended_total from the hub's collectors.
func appendedTotal(t *testing.T, hub *streams.Hub) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(hub.Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "xroom_messages_appended_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("no xroom_messages_appended_total")
	return 0
}

// Appends sent again whole after Redis forgot the script (NOSCRIPT) are
// counted once, like any other.
func TestAppendsResentAfterScriptFlushCountOnce(t *testing.T) {
	e := newEnv(t, streams.Options{})
	redistest.RequireReal(t, e.srv)
	hub := streams.NewHub(e.store, e.srv.Client(t), streams.HubOptions{})
	t.Cleanup(func() { hub.Close() })
	e.add("r", streams.Message{User: "u", Text: "a", ClientID: "c1"})
	for i, cid := range []string{"c2", "c1"} { // c1 again: a duplicate, not counted
		if err := e.rdb.ScriptFlush(ctx10(t)).Err(); err != nil {
			t.Fatal(err)
		}
		e.add("r", streams.Message{User: "u", Text: fmt.Sprint(i), ClientID: cid})
	}
	if n := appendedTotal(t, hub); n != 2 {
		t.Fatalf("xroom_messages_appended_total = %v after 2 stored and 1 duplicate, want 2", n)
	}
}
