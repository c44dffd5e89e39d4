package streams_test

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/internal/testkit"
	"github.com/xroom/xroom/streams"
)

// readBackReady appends to room until an append is read back in its own
// pipeline (the room's channel is confirmed on the doorbell), and returns
// the last ID appended.
func (h *hubEnv) readBackReady(s *subscriber, room string) streams.ID {
	h.t.Helper()
	var last streams.ID
	testkit.Eventually(h.t, 10*time.Second, "an append read back", func() bool {
		id, _, err := h.store.Append(ctx10(h.t), room, streams.Message{User: "u", Text: "warm"})
		if err != nil {
			h.t.Fatal(err)
		}
		last = id
		return h.hub.Stats().ReadBacks.Load() > 0
	})
	s.readUntil(last, 100)
	return last
}

// An append to a room this instance tails is delivered by a read in the
// append's own pipeline: once Append returns, the room's tail holds the
// entry, and the keyspace event that follows reads nothing again.
func TestReadBackDeliversAnAppendInItsOwnRoundTrip(t *testing.T) {
	srv := redistest.Shared(t)
	redistest.RequireReal(t, srv) // keyspace notifications
	h := newHubEnv(t, streams.HubOptions{SweepEvery: time.Hour})
	s := h.subscribe("r")
	h.readBackReady(s, "r")
	st := h.hub.Stats()
	testkit.Eventually(t, 5*time.Second, "the warm-up's events heard", func() bool { return st.RingsSkipped.Load() > 0 })
	time.Sleep(50 * time.Millisecond)
	reads, skipped := st.TailReads.Load(), st.RingsSkipped.Load()
	const n = 50
	for i := range n {
		id, _, err := h.store.Append(ctx10(t), "r", streams.Message{User: "u", Text: strconv.Itoa(i)})
		if err != nil {
			t.Fatal(err)
		}
		if head := s.sub.Head(); head.Less(id) {
			t.Fatalf("append %d: Append returned %v, but the tail is at %v: not read back", i, id, head)
		}
	}
	testkit.Eventually(t, 5*time.Second, "every append's event skipped", func() bool { return st.RingsSkipped.Load()-skipped >= n })
	if r := st.TailReads.Load() - reads; r != 0 {
		t.Fatalf("%d tail reads for %d appends read back, want 0", r, n)
	}
}

// Read backs lose nothing and repeat nothing while another instance (a
// store without this hub) appends to the same rooms and the doorbell's
// connection is killed: every entry of each stream reaches the subscriber
// once, in order. The sweep is off: a skipped event that should have read
// a room would leave its last entries undelivered.
func TestReadBackWithAnotherWriterAndKilledDoorbellLosesNothing(t *testing.T) {
	srv := redistest.Start(t)
	h := newHubEnv(t, streams.HubOptions{SweepEvery: time.Hour}, srv)
	other := streams.NewStore(srv.Client(t), streams.Options{Prefix: h.prefix})
	const rooms, per = 10, 200
	subs := h.subscribeAll(rooms)
	var wg sync.WaitGroup
	for _, store := range []*streams.Store{h.store, other, h.store} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range rooms * per {
				if _, _, err := store.Append(context.Background(), "room"+strconv.Itoa(k%rooms), streams.Message{User: "u", Text: strconv.Itoa(k)}); err != nil {
					t.Error(err)
					return
				}
				if k%20 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		}()
	}
	for range 4 {
		time.Sleep(40 * time.Millisecond)
		if err := h.rdb.Do(ctx10(t), "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	for i, s := range subs {
		want, err := h.store.Range(ctx10(t), "room"+strconv.Itoa(i), streams.Zero, 3*per+1)
		if err != nil || len(want) != 3*per {
			t.Fatalf("room%d holds %d entries, %v", i, len(want), err)
		}
		ids := make([]streams.ID, len(want))
		for j := range want {
			ids[j] = want[j].ID
		}
		s.readUntil(ids[len(ids)-1], 1000)
		if !slices.Equal(s.ids(), ids) {
			t.Fatalf("room%d: got %d entries, want the stream's %d in order", i, len(s.ids()), len(ids))
		}
	}
	st := h.hub.Stats()
	if st.ReadBacks.Load() == 0 || st.Reconnects.Load() == 0 {
		t.Fatalf("read backs %d, doorbell reconnects %d: the test proves nothing", st.ReadBacks.Load(), st.Reconnects.Load())
	}
}
