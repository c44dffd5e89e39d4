package streams_test

import (
	"testing"

	"github.com/xroom/xroom/streams"
)

func TestStoreHistoryBeyond(t *testing.T) {
	e := newEnv(t, streams.Options{})
	h, err := e.store.History(ctx10(t), "empty")
	if err != nil {
		t.Fatal(err)
	}
	if !h.Beyond(streams.ID{Ms: 1}) || h.Beyond(streams.Zero) {
		t.Fatalf("a room without a stream: Beyond(1-0)=%v Beyond(0-0)=%v, want true false", h.Beyond(streams.ID{Ms: 1}), h.Beyond(streams.Zero))
	}
	ids := e.addN("lobby", "ana", 3)
	if err := e.rdb.XDel(ctx10(t), e.key("lobby"), ids[2].String()).Err(); err != nil {
		t.Fatal(err)
	}
	h, err = e.store.History(ctx10(t), "lobby")
	if err != nil {
		t.Fatal(err)
	}
	if h.Last != ids[2] || h.Oldest != ids[0] {
		t.Fatalf("History = last %v oldest %v, want %v %v (the deleted newest was handed out)", h.Last, h.Oldest, ids[2], ids[0])
	}
	if h.Beyond(ids[2]) || !h.Beyond(ids[2].Next()) || !h.Beyond(streams.MaxID) {
		t.Fatal("Beyond: the last handed-out ID is not beyond, the next one and MaxID are")
	}
}

func TestStoreHoldsOnlyTheEntriesItHas(t *testing.T) {
	e := newEnv(t, streams.Options{})
	ids := e.addN("holds", "ana", 3)
	e.rdb.XDel(ctx10(t), e.key("holds"), ids[1].String())
	for _, tc := range []struct {
		id   streams.ID
		want bool
	}{
		{ids[0], true}, {ids[1], false}, {ids[2], true},
		{ids[2].Next(), false}, {streams.Zero, false},
	} {
		got, err := e.store.Holds(ctx10(t), "holds", tc.id)
		if err != nil || got != tc.want {
			t.Errorf("Holds(%v) = %v, %v; want %v", tc.id, got, err, tc.want)
		}
	}
	if got, err := e.store.Holds(ctx10(t), "nowhere", ids[0]); err != nil || got {
		t.Errorf("Holds in a room without a stream = %v, %v", got, err)
	}
}
