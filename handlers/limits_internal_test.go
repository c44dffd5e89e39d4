package handlers

import (
	"testing"
	"time"
	"unsafe"
)

func TestBucketRefillsFromTimestamps(t *testing.T) {
	const rate, burst = 2.0, 3 // 2 a second, 3 at once
	var b bucket
	now := int64(time.Hour) // any time after the clock started
	for i := range burst {
		l := b.level(now, rate, burst)
		if l < 1 {
			t.Fatalf("send %d refused with %v tokens", i, l)
		}
		b.take(now, l)
	}
	if l := b.level(now, rate, burst); l >= 1 {
		t.Fatalf("%v tokens left after the burst", l)
	}
	if w := wait(b.level(now, rate, burst), rate); w != 500*time.Millisecond {
		t.Fatalf("wait %v, want 500ms", w)
	}
	if l := b.level(now+int64(500*time.Millisecond), rate, burst); l != 1 {
		t.Fatalf("after 0.5 s: %v tokens, want 1", l)
	}
	if l := b.level(now+int64(time.Hour), rate, burst); l != burst {
		t.Fatalf("after an hour: %v tokens, want the burst %d", l, burst)
	}
}

func TestUserBucketsAreForgottenOnceFull(t *testing.T) {
	g := newGuard(Limits{UserRate: 1000, UserBurst: 1})
	for i := range 5000 {
		var conn bucket
		if r := g.allowMessage(&conn, string(rune('a'+i%26))+time.Duration(i).String(), ""); r != nil {
			t.Fatal(r)
		}
		if i%1000 == 999 {
			time.Sleep(5 * time.Millisecond) // 1000/s refills a burst of 1 in 1 ms
		}
	}
	if n := len(g.users); n > 2048 {
		t.Fatalf("%d user buckets kept, want the full ones swept", n)
	}
}

func TestSessionLimitStateIsSmall(t *testing.T) {
	// A per-connection limiter is one bucket inside the session: no timer,
	// no goroutine, no map entry.
	if size := unsafe.Sizeof(bucket{}); size > 16 {
		t.Fatalf("bucket is %d bytes", size)
	}
}

// BenchmarkAllowMessage is the cost the limits add to each message sent:
// both buckets on, the user's under the shared lock.
func BenchmarkAllowMessage(b *testing.B) {
	g := newGuard(Limits{Rate: 1e9, Burst: 1 << 30, UserRate: 1e9, UserBurst: 1 << 30})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var conn bucket
		for pb.Next() {
			if r := g.allowMessage(&conn, "alice", ""); r != nil {
				b.Fatal(r)
			}
		}
	})
}
