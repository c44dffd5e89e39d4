package main

import (
	"math"
	"strings"
	"testing"
	"time"
)

const sec = int64(time.Second)

func id(ms, seq uint64) streamID { return streamID{ms, seq} }

func approx(t *testing.T, what string, got *float64, want float64) {
	t.Helper()
	if got == nil {
		t.Errorf("%s: not seen, want %.3f", what, want)
		return
	}
	if math.Abs(*got-want) > 1e-9 {
		t.Errorf("%s = %.3f, want %.3f", what, *got, want)
	}
}

// A planned failover with REDIS_ACK_REPLICAS=0: the replica is promoted at
// 10 s with entries up to 100-1; the old primary acks 100-2 and 100-3
// until the switch at 11 s; the new primary writes 101-0 on.
func TestAnalyzeFailoverGracefulLoss(t *testing.T) {
	acks := []foAck{
		{"r-0-0", id(99, 0), 9 * sec},
		{"r-0-1", id(100, 1), 9*sec + sec/2},  // replicated before the promotion
		{"r-0-2", id(100, 2), 10*sec + sec/4}, // old primary after the promotion: lost
		{"r-0-3", id(100, 3), 10*sec + sec/2}, // lost too
		{"r-1-0", id(101, 0), 11*sec + sec/10},
		{"r-1-1", id(101, 1), 11*sec + sec/5},
		{"r-0-4", id(101, 2), 12 * sec},
	}
	stream := []foStored{{id(99, 0), "r-0-0"}, {id(100, 1), "r-0-1"}, {id(101, 0), "r-1-0"}, {id(101, 1), "r-1-1"}, {id(101, 2), "r-0-4"}}
	m := foMarks{Fault: 9*sec + 8*sec/10, Promoted: 10 * sec, Addr: 10*sec + 9*sec/10, Switch: 11 * sec, Boundary: id(100, 1), HaveBoundary: true}
	refused := []int64{9 * sec, 10*sec + 8*sec/10, 11*sec + sec/10, 11*sec + sec/2}
	f := analyzeFailover(acks, refused, stream, m)
	if f.Acked != 7 || f.Kept != 5 || f.Lost != 2 || f.Duplicates != 0 || f.Mismatched != 0 {
		t.Fatalf("acked/kept/lost/dup/mismatched = %d/%d/%d/%d/%d, want 7/5/2/0/0", f.Acked, f.Kept, f.Lost, f.Duplicates, f.Mismatched)
	}
	if len(f.LostIDs) != 2 || !strings.HasPrefix(f.LostIDs[0], "100-2 r-0-2") {
		t.Errorf("lost IDs %v", f.LostIDs)
	}
	approx(t, "promoted after fault", f.PromotedAfterFault, 0.2)
	approx(t, "switch after fault", f.SwitchAfterFault, 1.2)
	approx(t, "addr after fault", f.AddrAfterFault, 1.1)
	approx(t, "first new after promotion", f.FirstNewAfterPromotion, 1.1)
	approx(t, "first new after switch", f.FirstNewAfterSwitch, 0.1)
	approx(t, "first new after addr", f.FirstNewAfterAddr, 0.2)
	approx(t, "first new after fault", f.FirstNewAfterFault, 1.3)
	// Kept acks at 9.0, 9.5, 11.1, 11.2, 12.0: the longest gap is 9.5 to 11.1.
	if math.Abs(f.LongestNoKeptAck-1.6) > 1e-9 {
		t.Errorf("longest without a kept ack %.3f, want 1.6", f.LongestNoKeptAck)
	}
	approx(t, "longest from", f.LongestNoKeptAckFrom, -0.3)
	// Refusals at the fault or later, up to the first new ack (11.1): 10.8 and 11.1.
	if f.RefusedMeanwhile != 2 {
		t.Errorf("refused meanwhile %d, want 2", f.RefusedMeanwhile)
	}
}

// Nothing lost, but an entry stored twice, and an ack naming an entry
// that holds another send.
func TestAnalyzeFailoverDuplicatesAndMismatch(t *testing.T) {
	acks := []foAck{{"a", id(1, 0), sec}, {"b", id(2, 0), 2 * sec}}
	stream := []foStored{{id(1, 0), "a"}, {id(2, 0), "c"}, {id(3, 0), "a"}}
	f := analyzeFailover(acks, nil, stream, foMarks{})
	if f.Kept != 1 || f.Lost != 0 || f.Duplicates != 1 || f.Mismatched != 1 {
		t.Errorf("kept/lost/dup/mismatched = %d/%d/%d/%d, want 1/0/1/1", f.Kept, f.Lost, f.Duplicates, f.Mismatched)
	}
	if f.PromotedAfterFault != nil || f.FirstNewAfterSwitch != nil || f.Timeline != nil {
		t.Errorf("no marks, yet %v %v %v", f.PromotedAfterFault, f.FirstNewAfterSwitch, f.Timeline)
	}
}

// Without the promotion seen (no boundary), an entry is new when its ack
// came after +switch-master; an ack can also come before the switch is
// published (xroom asked the Sentinel first): a negative figure, not
// "not seen".
func TestAnalyzeFailoverMarks(t *testing.T) {
	acks := []foAck{{"a", id(1, 0), 5 * sec}, {"b", id(2, 0), 7 * sec}}
	stream := []foStored{{id(1, 0), "a"}, {id(2, 0), "b"}}
	f := analyzeFailover(acks, nil, stream, foMarks{Fault: 4 * sec, Switch: 6 * sec})
	approx(t, "first new after switch", f.FirstNewAfterSwitch, 1)
	if f.FirstNewAfterPromotion != nil {
		t.Errorf("first new after promotion %v, want not seen", *f.FirstNewAfterPromotion)
	}
	f = analyzeFailover(acks, nil, stream, foMarks{Fault: 4 * sec, Promoted: 4*sec + sec/2, Switch: 6 * sec, Boundary: id(0, 5), HaveBoundary: true})
	approx(t, "first new after switch", f.FirstNewAfterSwitch, -1)
	approx(t, "first new after promotion", f.FirstNewAfterPromotion, 0.5)
}

func TestTimeline(t *testing.T) {
	fault := 10 * sec
	bin := int64(foBinWidth)
	kept := []int64{fault - 5*bin, fault - bin, fault + 3*bin + 1}
	lost := []int64{fault + 1}
	refused := []int64{fault + 2*bin, fault + 2*bin + 5}
	got := timeline(fault, kept, lost, refused)
	want := []foBin{
		{From: -1.00}, {From: -0.75}, {From: -0.50}, {From: -0.25, Kept: 1},
		{From: 0, Lost: 1}, {From: 0.25}, {From: 0.50, Refused: 2}, {From: 0.75, Kept: 1},
	}
	if len(got) != len(want) {
		t.Fatalf("timeline %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("bin %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if s := fmtTimeline(got); s != " -1.00..-0.25:none +0.00:0/1/0 +0.25..+0.50:none +0.50:0/0/2" {
		t.Errorf("fmtTimeline = %q", s)
	}
}

func TestParseSwitchMaster(t *testing.T) {
	name, addr, ok := parseSwitchMaster("mymaster 127.0.0.1 6379 127.0.0.1 6380")
	if !ok || name != "mymaster" || addr != "127.0.0.1:6380" {
		t.Errorf("got %q %q %v", name, addr, ok)
	}
	for _, bad := range []string{"", "mymaster 127.0.0.1 6379", "a b c d e f"} {
		if _, _, ok := parseSwitchMaster(bad); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}
