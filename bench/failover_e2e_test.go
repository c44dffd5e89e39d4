package main

import (
	"slices"
	"strconv"
	"testing"

	"github.com/xroom/xroom/internal/redistest"
)

// startSentinelServer runs the xroom binary following the Sentinel's
// "mymaster", with REDIS_ACK_REPLICAS=n, and waits until it is ready.
func startSentinelServer(t *testing.T, sentinel, prefix string, n int) string {
	t.Helper()
	addr, _ := startBinary(t, "REDIS_URL=redis://"+sentinel, "REDIS_SENTINEL_MASTER=mymaster",
		"REDIS_ACK_REPLICAS="+strconv.Itoa(n), "CHAT_PREFIX="+prefix)
	return addr
}

// The failover scenario against real processes: a primary, its replicas
// and a Sentinel; the bench fails the primary over itself and finds the
// new primary, its first ack, and what it kept.
func TestEndToEndFailover(t *testing.T) {
	for _, tc := range []struct {
		fault    string
		replicas int
		n        int // REDIS_ACK_REPLICAS
	}{
		{"kill", 2, 1},     // nothing acked may be lost
		{"graceful", 1, 0}, // losses allowed, never silent
	} {
		t.Run(tc.fault+"/ack_replicas="+strconv.Itoa(tc.n), func(t *testing.T) {
			primary := redistest.Start(t)
			redistest.RequireReal(t, primary)
			var replicas []string
			for range tc.replicas {
				replicas = append(replicas, redistest.StartReplica(t, primary).Addr)
			}
			sentinel := redistest.StartSentinel(t, "mymaster", primary.Addr)
			prefix := redistest.Prefix(t)
			addr := startSentinelServer(t, sentinel, prefix, tc.n)
			res, code, stderr := runBench(t, "failover", "-server", addr, "-sentinel", sentinel, "-prefix", prefix,
				"-fault", tc.fault, "-ack-replicas", strconv.Itoa(tc.n), "-senders=2", "-rate=100", "-before=1s", "-after=500ms",
				"-want-recovery=10s")
			fo := res.Failover
			if fo == nil {
				t.Fatalf("exit %d, no failover figures; errors %v; stderr %s", code, res.Errors, stderr)
			}
			t.Logf("%s: promoted %s after the fault, first new ack %s after it; %d acked, %d lost, gaps %v, %d refused",
				tc.fault, fmtSecs(fo.PromotedAfterFault), fmtSecs(fo.FirstNewAfterPromotion), fo.Acked, fo.Lost, fo.Gaps, fo.Refused)
			if code != exitOK || len(res.Errors) > 0 {
				t.Fatalf("exit %d, errors %v, checks %+v, stderr %s", code, res.Errors, res.Checks, stderr)
			}
			if fo.OldPrimary != primary.Addr || !slices.Contains(replicas, fo.NewPrimary) || fo.Replicas != tc.replicas {
				t.Errorf("primary %s -> %s, %d replicas; want %s -> one of %v, %d", fo.OldPrimary, fo.NewPrimary, fo.Replicas, primary.Addr, replicas, tc.replicas)
			}
			if fo.PromotedAfterFault == nil || fo.SwitchAfterFault == nil || fo.FirstNewAfterPromotion == nil || *fo.FirstNewAfterPromotion < 0 {
				t.Errorf("marks not seen: promoted %v switch %v first new %v", fo.PromotedAfterFault, fo.SwitchAfterFault, fo.FirstNewAfterPromotion)
			}
			if fo.Sent == 0 || int64(fo.Acked) != fo.Sent || fo.Unacked != 0 || fo.Kept+fo.Lost != fo.Acked || fo.Kept == 0 || len(fo.Timeline) == 0 {
				t.Errorf("sent %d acked %d unacked %d kept %d lost %d timeline %d bins", fo.Sent, fo.Acked, fo.Unacked, fo.Kept, fo.Lost, len(fo.Timeline))
			}
			if tc.n > 0 && fo.Lost != 0 {
				t.Errorf("REDIS_ACK_REPLICAS=%d: %d acked messages lost", tc.n, fo.Lost)
			}
			if fo.Lost > 0 && fo.announced() == 0 {
				t.Errorf("%d acked messages lost without a gap", fo.Lost)
			}
		})
	}
}
