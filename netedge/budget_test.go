package netedge

import "testing"

func TestPlan(t *testing.T) {
	cases := []struct {
		name                                 string
		limit                                uint64
		pool, maxTails                       int
		embedded                             bool
		tails, redis, clients, conns, httpCs int
	}{
		// 20000 - 64 reserved - (20 + 2500) Redis = 17416 for clients, an eighth of it for HTTP.
		{"this machine", 20000, 20, 10000, false, 2500, 2520, 17416, 15239, 2177},
		{"the tail pool's own cap", 1 << 20, 20, 10000, false, 10000, 10020, 1038492, 908681, 129811},
		{"embedded Redis counts twice", 20000, 20, 10000, true, 2500, 5040, 14896, 13034, 1862},
		{"Debian's default 1024", 1024, 20, 10000, false, 128, 148, 812, 711, 101},
		{"HTTP keeps its least share", 150, 4, 10000, false, 18, 22, 64, 48, 16},
		{"RLIM_INFINITY", ^uint64(0), 20, 10000, false, 10000, 10020, maxLimit - 64 - 10020, 0, 0},
	}
	for _, tc := range cases {
		b := Plan(tc.limit, tc.pool, tc.maxTails, tc.embedded)
		if tc.name == "RLIM_INFINITY" {
			if b.Limit != maxLimit || b.Clients != tc.clients || b.MaxConns+b.HTTPConns != b.Clients {
				t.Errorf("%s: %+v", tc.name, b)
			}
			continue
		}
		if b.Tails != tc.tails || b.Redis != tc.redis || b.Clients != tc.clients || b.MaxConns != tc.conns || b.HTTPConns != tc.httpCs {
			t.Errorf("%s: got %+v, want tails %d redis %d clients %d conns %d http %d", tc.name, b, tc.tails, tc.redis, tc.clients, tc.conns, tc.httpCs)
		}
		if used := ReservedFiles + b.Redis + b.MaxConns + b.HTTPConns; used != b.Limit {
			t.Errorf("%s: the budget spends %d of %d", tc.name, used, b.Limit)
		}
	}
}

func TestBudgetWithMaxConns(t *testing.T) {
	b := Plan(1024, 20, 10000, false)
	if most := b.MostConns(); most != 812-MinHTTPConns {
		t.Fatalf("MostConns %d", most)
	}
	b = b.WithMaxConns(500)
	if b.MaxConns != 500 || b.HTTPConns != 312 {
		t.Fatalf("%+v: want HTTP to get the rest", b)
	}
	if tight := Plan(100, 50, 10000, false); tight.MostConns() >= 1 {
		t.Fatalf("%+v: a pool of 50 in 100 descriptors leaves no room", tight)
	}
}
