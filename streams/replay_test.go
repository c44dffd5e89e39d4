package streams_test

import (
	"testing"

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
