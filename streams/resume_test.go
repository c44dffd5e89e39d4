package streams_test

import (
	"slices"
	"testing"
	"time"

	"github.com/xroom/xroom/streams"
)

func TestReplayStartKeepsTheNewest(t *testing.T) {
	e := newEnv(t, streams.Options{})
	ids := e.addN("r", "u", 10)
	for _, tc := range []struct {
		name        string
		since       streams.ID
		most        int
		limited     bool
		start, from streams.ID
	}{
		{"all fit", streams.Zero, 10, false, streams.Zero, streams.Zero},
		{"from the start, capped", streams.Zero, 3, true, ids[6], ids[7]},
		{"from the middle, capped", ids[2], 3, true, ids[6], ids[7]},
		{"exactly the cap after since", ids[6], 3, false, ids[6], streams.Zero},
		{"one over the cap", ids[5], 3, true, ids[6], ids[7]},
		{"cap of one", ids[0], 1, true, ids[8], ids[9]},
		{"since the newest", ids[9], 1, false, ids[9], streams.Zero},
		{"since past everything", streams.MaxID, 1, false, streams.MaxID, streams.Zero},
	} {
		start, from, limited, err := e.store.ReplayStart(ctx10(t), "r", tc.since, tc.most)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if limited != tc.limited || start != tc.start || from != tc.from {
			t.Errorf("%s: start %s, first %s, limited %v; want %s, %s, %v", tc.name, start, from, limited, tc.start, tc.from, tc.limited)
		}
	}
	// A room that does not exist needs no cap.
	if _, _, limited, err := e.store.ReplayStart(ctx10(t), "none", streams.Zero, 1); err != nil || limited {
		t.Fatalf("empty room: %v %v", limited, err)
	}
}

// planOf plans a join of room and fails the test on error.
func (e *env) planOf(room string, r streams.Resume, limits streams.ResumeLimits) streams.Plan {
	e.t.Helper()
	p, err := e.store.PlanResume(ctx10(e.t), room, r, limits)
	if err != nil {
		e.t.Fatalf("PlanResume(%s, %+v, %+v): %v", room, r, limits, err)
	}
	return p
}

// wantPlan checks what a plan says, but Newest and Epoch.
func wantPlan(t *testing.T, what string, p streams.Plan, start streams.Start, after, until streams.ID, gaps ...streams.Gap) {
	t.Helper()
	if p.Start != start || p.After != after || p.Until != until || !slices.Equal(p.Gaps, gaps) {
		t.Errorf("%s: plan start %d after %v until %v gaps %v; want start %d after %v until %v gaps %v",
			what, p.Start, p.After, p.Until, p.Gaps, start, after, until, gaps)
	}
}

func TestPlanResumeWithoutSince(t *testing.T) {
	e := newEnv(t, streams.Options{})
	ids := e.addN("lobby", "ana", 10)
	p := e.planOf("lobby", streams.Resume{}, streams.ResumeLimits{HistoryOnJoin: 3, MaxReplay: 2})
	wantPlan(t, "fresh join", p, streams.StartWithNewest, ids[9], streams.Zero)
	if got := entryIDs(p.Newest); !slices.Equal(got, ids[7:]) {
		t.Errorf("fresh join: newest %v, want %v oldest first (MaxReplay caps replays only)", got, ids[7:])
	}
	epoch, err := e.store.Epoch(ctx10(t), "lobby")
	if err != nil || p.Epoch == "" || p.Epoch != epoch {
		t.Errorf("plan epoch %q, room's %q %v: want the room's, created by the plan", p.Epoch, epoch, err)
	}

	p = e.planOf("lobby", streams.Resume{}, streams.ResumeLimits{})
	wantPlan(t, "no history on join", p, streams.StartAtHead, streams.Zero, streams.Zero)
	if len(p.Newest) != 0 {
		t.Errorf("no history on join: newest %v", entryIDs(p.Newest))
	}

	p = e.planOf("empty", streams.Resume{}, streams.ResumeLimits{HistoryOnJoin: 3})
	wantPlan(t, "fresh join of an empty room", p, streams.StartWithNewest, streams.Zero, streams.Zero)
	if len(p.Newest) != 0 {
		t.Errorf("fresh join of an empty room: newest %v", entryIDs(p.Newest))
	}
}

func TestPlanResumeFromSince(t *testing.T) {
	e := newEnv(t, streams.Options{})
	ids := e.addN("lobby", "ana", 20)
	epoch, err := e.store.Epoch(ctx10(t), "lobby")
	if err != nil {
		t.Fatal(err)
	}
	since := func(id streams.ID) streams.Resume {
		return streams.Resume{At: streams.Position{ID: id, Epoch: epoch}, Since: true}
	}
	none := streams.ResumeLimits{HistoryOnJoin: 5}
	wantPlan(t, "since inside the history", e.planOf("lobby", since(ids[5]), none), streams.StartAfter, ids[5], ids[19])
	wantPlan(t, "since the newest", e.planOf("lobby", since(ids[19]), none), streams.StartAfter, ids[19], ids[19])
	wantPlan(t, "since=0", e.planOf("lobby", since(streams.Zero), none), streams.StartAfter, streams.Zero, ids[19])
	wantPlan(t, "since without epoch", e.planOf("lobby", streams.Resume{At: streams.Position{ID: ids[5]}, Since: true}, none),
		streams.StartAfter, ids[5], ids[19])
	wantPlan(t, "since beyond the history", e.planOf("lobby", since(streams.MaxID), none), streams.StartAfter, streams.Zero, ids[19],
		streams.Gap{Reason: streams.GapReset, Oldest: ids[0]})
	wantPlan(t, "since in a room without a stream", e.planOf("nothing", since(ids[5]), none), streams.StartAfter, streams.Zero, streams.Zero,
		streams.Gap{Reason: streams.GapReset, Oldest: streams.Zero})

	capped := streams.ResumeLimits{MaxReplay: 4}
	wantPlan(t, "replay over the cap", e.planOf("lobby", since(ids[2]), capped), streams.StartAfter, ids[15], ids[19],
		streams.Gap{Reason: streams.GapLimited, Oldest: ids[16]})
	wantPlan(t, "replay at the cap", e.planOf("lobby", since(ids[15]), capped), streams.StartAfter, ids[15], ids[19])

	// ids[0..9] go: a since before ids[10] may have missed entries.
	if err := e.rdb.XTrimMaxLen(ctx10(t), e.key("lobby"), 10).Err(); err != nil {
		t.Fatal(err)
	}
	trimmed := streams.Gap{Reason: streams.GapTrimmed, Oldest: ids[10]}
	wantPlan(t, "since trimmed", e.planOf("lobby", since(ids[2]), none), streams.StartAfter, ids[2], ids[19], trimmed)
	wantPlan(t, "since the oldest retained", e.planOf("lobby", since(ids[10]), none), streams.StartAfter, ids[10], ids[19])
	wantPlan(t, "since trimmed, replay over the cap", e.planOf("lobby", since(ids[2]), capped), streams.StartAfter, ids[15], ids[19],
		trimmed, streams.Gap{Reason: streams.GapLimited, Oldest: ids[16]})
}

func TestPlanResumeStaleEpoch(t *testing.T) {
	e := newEnv(t, streams.Options{})
	ids := e.addN("lobby", "ana", 10)
	reset := streams.Gap{Reason: streams.GapReset, Oldest: ids[0]}
	none := streams.ResumeLimits{HistoryOnJoin: 5}
	old := func(id streams.ID, eventID bool) streams.Resume {
		return streams.Resume{At: streams.Position{ID: id, Epoch: "gone-1"}, Since: true, EventID: eventID}
	}
	p := e.planOf("lobby", old(ids[5], false), none)
	wantPlan(t, "since of another epoch", p, streams.StartAfter, streams.Zero, ids[9], reset)
	if p.Epoch == "gone-1" || p.Epoch == "" {
		t.Errorf("plan epoch %q, want the room's", p.Epoch)
	}
	wantPlan(t, "another epoch without since", e.planOf("lobby", streams.Resume{At: streams.Position{Epoch: "gone-1"}}, none),
		streams.StartAfter, streams.Zero, ids[9], reset)
	wantPlan(t, "another epoch, replay over the cap", e.planOf("lobby", old(ids[5], false), streams.ResumeLimits{MaxReplay: 4}),
		streams.StartAfter, ids[5], ids[9], reset, streams.Gap{Reason: streams.GapLimited, Oldest: ids[6]})
	// An SSE Last-Event-ID moves on while the URL's epoch stays: an entry
	// the stream holds is of the current history.
	wantPlan(t, "Last-Event-ID the stream holds", e.planOf("lobby", old(ids[5], true), none), streams.StartAfter, ids[5], ids[9])
	if err := e.rdb.XDel(ctx10(t), e.key("lobby"), ids[3].String()).Err(); err != nil {
		t.Fatal(err)
	}
	wantPlan(t, "Last-Event-ID the stream no longer holds", e.planOf("lobby", old(ids[3], true), none),
		streams.StartAfter, streams.Zero, ids[9], reset)
	wantPlan(t, "Last-Event-ID=0 of another epoch", e.planOf("lobby", old(streams.Zero, true), none),
		streams.StartAfter, streams.Zero, ids[9], reset)
}

// A replay's first catch-up read, from where the plan starts, does not
// announce the gap the plan did.
func TestJoinedPlanGapIsNotReportedAgain(t *testing.T) {
	h, s, ids := behind(t)
	if err := h.rdb.XTrimMaxLen(ctx10(t), h.key("lobby"), 10).Err(); err != nil {
		t.Fatal(err)
	}
	p, err := h.store.PlanResume(ctx10(t), "lobby", streams.Resume{At: streams.Position{ID: ids[2]}, Since: true}, streams.ResumeLimits{})
	if err != nil {
		t.Fatal(err)
	}
	wantPlan(t, "since trimmed", p, streams.StartAfter, ids[2], ids[29], streams.Gap{Reason: streams.GapTrimmed, Oldest: ids[20]})
	s.sub.Joined(p)
	if page := s.next(p.After, 5); len(page) == 0 || page[0].ID != ids[20] {
		t.Fatalf("first page after the plan: %v, want it from %v", page, ids[20])
	}
	if oldest, ok := s.sub.Gap(); ok {
		t.Fatalf("Gap after the plan announced it = %v", oldest)
	}
}

// A plan of a new epoch drops what the room's buffer holds of the old
// history: a replay from the oldest entry gets only what Redis holds now.
func TestJoinedNewEpochDropsTheOldHistory(t *testing.T) {
	h := newHubEnv(t, streams.HubOptions{Block: 200 * time.Millisecond})
	s := h.subscribe("lobby")
	old := h.addN("lobby", "ana", 3)
	s.waitHead(old[2])
	first, err := h.store.PlanResume(ctx10(t), "lobby", streams.Resume{}, streams.ResumeLimits{})
	if err != nil {
		t.Fatal(err)
	}
	s.sub.Joined(first)
	// Redis loses the room, epoch and all; the room goes on.
	if err := h.rdb.Del(ctx10(t), h.key("lobby"), h.store.Keys().Epoch("lobby")).Err(); err != nil {
		t.Fatal(err)
	}
	fresh := h.addN("lobby", "bo", 2)
	s.waitHead(fresh[1])
	p, err := h.store.PlanResume(ctx10(t), "lobby", streams.Resume{At: streams.Position{Epoch: first.Epoch}}, streams.ResumeLimits{})
	if err != nil {
		t.Fatal(err)
	}
	wantPlan(t, "after the loss", p, streams.StartAfter, streams.Zero, fresh[1], streams.Gap{Reason: streams.GapReset, Oldest: fresh[0]})
	s.sub.Joined(p)
	if got := entryPtrIDs(s.next(p.After, 10)); !slices.Equal(got, fresh) {
		t.Fatalf("replay after a new epoch = %v, want only what Redis holds %v", got, fresh)
	}
}
