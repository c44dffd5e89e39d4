package main

import (
	"bytes"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestPercentileNearestRank(t *testing.T) {
	// 1..1000 ms in shuffled order: the q-quantile is exactly q*1000 ms.
	ns := make([]int64, 1000)
	for i := range ns {
		ns[i] = int64(i+1) * int64(time.Millisecond)
	}
	rand.Shuffle(len(ns), func(i, j int) { ns[i], ns[j] = ns[j], ns[i] })
	s := summarize(ns)
	want := latencySummary{Count: 1000, P50: 500, P90: 900, P99: 990, P999: 999, Max: 1000, Mean: 500.5}
	if s != want {
		t.Fatalf("summary = %+v, want %+v", s, want)
	}

	for _, tc := range []struct {
		sample []int64
		q      float64
		want   int64
	}{
		{[]int64{7}, 0.5, 7},
		{[]int64{7}, 0.999, 7},
		{[]int64{1, 2}, 0.5, 1},
		{[]int64{1, 2}, 0.51, 2},
		{[]int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 0.9, 9},
		{[]int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 0.99, 10},
		{nil, 0.99, 0},
	} {
		if got := percentile(tc.sample, tc.q); got != tc.want {
			t.Errorf("percentile(%v, %v) = %d, want %d", tc.sample, tc.q, got, tc.want)
		}
	}

	// One slow outlier among 10,000: p99 and p999 are exact, not interpolated.
	ns = make([]int64, 10000)
	for i := range ns {
		ns[i] = 1000
	}
	ns[1234] = 5_000_000_000
	s = summarize(ns)
	if s.P99 != 0.001 || s.P999 != 0.001 || s.Max != 5000 {
		t.Fatalf("outlier summary = %+v", s)
	}
}

func TestTrackerLossDupReorder(t *testing.T) {
	var tr tracker
	recv := func(pub int, seqs ...int64) {
		for _, s := range seqs {
			tr.record(pub, s, 100, 150, 0)
		}
	}
	recv(0, 0, 1, 2, 4, 3, 5) // 3 after 4: one reordered
	recv(0, 2)                // duplicate
	recv(1, 0, 1, 1, 3)       // duplicate 1; 2 missing
	recv(2, 10)               // a publisher seen late, no acks for it: not loss

	var acked0, acked1 bitset
	for s := range int64(7) { // 6 was acked but never received
		acked0.set(s)
	}
	for s := range int64(4) {
		acked1.set(s)
	}
	if tr.unique != 10 || tr.dups != 2 || tr.reorders != 1 {
		t.Fatalf("unique %d dups %d reorders %d, want 10 2 1", tr.unique, tr.dups, tr.reorders)
	}
	if got := tr.lost(0, &acked0); got != 1 {
		t.Errorf("lost(0) = %d, want 1 (seq 6)", got)
	}
	if got := tr.lost(1, &acked1); got != 1 {
		t.Errorf("lost(1) = %d, want 1 (seq 2)", got)
	}
	if got := tr.lost(5, &acked1); got != 4 {
		t.Errorf("lost(never seen publisher) = %d, want 4", got)
	}
	if len(tr.lat) != 10 || tr.lat[0] != 50 {
		t.Errorf("latencies %v, want ten of 50", tr.lat)
	}

	// Warm-up: messages sent before measureFrom count, but keep no latency.
	var w tracker
	w.record(0, 0, 10, 20, 15)
	w.record(0, 1, 16, 20, 15)
	if w.unique != 2 || w.measured != 1 || !slices.Equal(w.lat, []int64{4}) {
		t.Errorf("warm-up: unique %d measured %d lat %v", w.unique, w.measured, w.lat)
	}
}

func TestTrackerStreamOrder(t *testing.T) {
	var tr tracker
	for _, id := range []streamID{{1, 0}, {1, 1}, {2, 0}, {2, 0}, {1, 5}, {3, 0}} {
		tr.order(id)
	}
	if tr.idRegress != 2 {
		t.Fatalf("id regressions = %d, want 2 (a repeat and a step back)", tr.idRegress)
	}
}

func TestBitsetLarge(t *testing.T) {
	var b bitset
	for _, i := range []int64{0, 63, 64, 100_000, 1 << 20} {
		if b.set(i) {
			t.Fatalf("set(%d) reported present", i)
		}
		if !b.set(i) || !b.has(i) {
			t.Fatalf("set(%d) twice not reported present", i)
		}
	}
	if b.has(1) || b.has(1<<21) {
		t.Fatal("has() true for unset bits")
	}
}

func TestPayloadRoundTrip(t *testing.T) {
	p := payload{Run: "a1b2c3d4", Pub: 17, Seq: 123456, Sent: 98765432101234}
	text := appendPayload(nil, p, 64)
	if len(text) != 64 {
		t.Fatalf("len %d, want 64: %q", len(text), text)
	}
	got, err := parsePayload(text)
	if err != nil || got != p {
		t.Fatalf("parsePayload(%q) = %+v, %v; want %+v", text, got, err, p)
	}
	// A size below the fields' length is not truncated.
	if short := appendPayload(nil, p, 8); !strings.HasPrefix(string(short), "xb a1b2c3d4 17 123456 ") {
		t.Fatalf("short payload %q", short)
	}
	for _, bad := range []string{"", "hello", "xb ", "xb run", "xb run 1 2", "xb run 1 x 3 ", "xb run -1 2 3 "} {
		if _, err := parsePayload([]byte(bad)); err == nil {
			t.Errorf("parsePayload(%q) accepted", bad)
		}
	}
}

func TestSendFrameAndClientID(t *testing.T) {
	p := payload{Run: "r1", Pub: 3, Seq: 42, Sent: 7}
	frame := string(appendSendFrame(nil, p, 64))
	if !strings.HasPrefix(frame, `{"type":"message","message":"xb r1 3 42 7 ...`) || !strings.HasSuffix(frame, `","client_id":"r1-3-42"}`) {
		t.Fatalf("frame %s", frame)
	}
	pub, seq, ok := parseClientID("r1", "r1-3-42")
	if !ok || pub != 3 || seq != 42 {
		t.Fatalf("parseClientID = %d %d %v", pub, seq, ok)
	}
	for _, bad := range []string{"r2-3-42", "r1-3", "r1-x-1", "r1", "r13-42"} {
		if _, _, ok := parseClientID("r1", bad); ok {
			t.Errorf("parseClientID(%q) accepted", bad)
		}
	}
}

func TestParseServerFrame(t *testing.T) {
	text := string(appendPayload(nil, payload{Run: "r", Pub: 1, Seq: 2, Sent: 3}, 64))
	msg := `{"type":"message","id":"1732380000000-7","room":"lobby","user":"u","message":"` + text + `","ts":1732380000000,"client_id":"r-1-2"}`
	f, err := parseServerFrame([]byte(msg))
	if err != nil || f.Kind != kindMessage || string(f.Text) != text || f.ID != (streamID{1732380000000, 7}) {
		t.Fatalf("message: %+v %v", f, err)
	}
	// Escapes and another field order go through encoding/json.
	f, err = parseServerFrame([]byte(`{"message":"a\"b","id":"5-0","type":"message"}`))
	if err != nil || f.Kind != kindMessage || string(f.Text) != `a"b` || f.ID != (streamID{5, 0}) {
		t.Fatalf("escaped message: %+v %v", f, err)
	}
	for _, tc := range []struct {
		frame string
		want  serverFrame
	}{
		{`{"type":"ready","room":"x","last_id":"0-0","epoch":"e"}`, serverFrame{Kind: kindReady, LastID: "0-0"}},
		{`{"type":"ack","client_id":"r-1-2","id":"5-0"}`, serverFrame{Kind: kindAck, ClientID: "r-1-2"}},
		{`{"type":"ack","client_id":"r-1-2","id":"5-0","duplicate":true}`, serverFrame{Kind: kindAck, ClientID: "r-1-2", Dup: true}},
		{`{"type":"error","code":"rate_limited","message":"slow down","client_id":"r-1-3"}`, serverFrame{Kind: kindError, Code: "rate_limited", Message: "slow down", ClientID: "r-1-3"}},
		{`{"type":"gap","reason":"trimmed","oldest_id":"9-0"}`, serverFrame{Kind: kindGap, Reason: "trimmed"}},
		{`{"type":"presence"}`, serverFrame{Kind: kindOther}},
	} {
		f, err := parseServerFrame([]byte(tc.frame))
		if err != nil || f.Kind != tc.want.Kind || f.ClientID != tc.want.ClientID || f.Code != tc.want.Code ||
			f.Message != tc.want.Message || f.Dup != tc.want.Dup || f.LastID != tc.want.LastID || f.Reason != tc.want.Reason {
			t.Errorf("%s: got %+v, %v", tc.frame, f, err)
		}
	}
	if _, err := parseServerFrame([]byte(`not json`)); err == nil {
		t.Error("bad frame accepted")
	}
}

func TestCommandStats(t *testing.T) {
	info := "# Commandstats\r\ncmdstat_xadd:calls=10,usec=40,usec_per_call=4.00,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_evalsha:calls=7,usec=1\r\ncmdstat_info:calls=3,usec=9\r\n"
	before := redisSnapshot{calls: parseCommandStats(info)}
	after := redisSnapshot{calls: map[string]int64{"xadd": 20, "evalsha": 17, "info": 9, "xread": 5}}
	rc := diffRedis(before, after, 10)
	if rc.Total != 25 || rc.PerMessage != 2.5 || rc.ByCommand["info"] != 0 || rc.ByCommand["xread"] != 5 {
		t.Fatalf("diff = %+v", rc)
	}
}

func TestServerMetricsParsing(t *testing.T) {
	before, after := map[string]float64{}, map[string]float64{}
	for _, line := range []string{
		`xroom_messages_appended_total 10`,
		`xroom_connections_open{dialect="xroom"} 3`,
		`xroom_redis_errors_total{op="xadd"} 1`,
		`xroom_redis_errors_total{op="get"} 2`,
		`go_goroutines 7`,
	} {
		name, v, ok := cutMetric(line)
		if !ok {
			t.Fatalf("cutMetric(%q) failed", line)
		}
		before[name] += v
	}
	if before["xroom_redis_errors_total"] != 3 || before["xroom_connections_open"] != 3 {
		t.Fatalf("labels not summed: %v", before)
	}
	after["xroom_messages_appended_total"] = 25
	after["xroom_redis_errors_total"] = 3
	after["go_goroutines"] = 9
	d := metricsDelta(before, after)
	if d["xroom_messages_appended_total"] != 15 || d["xroom_redis_errors_total"] != 0 || d["go_goroutines"] != 9 {
		t.Fatalf("delta %v: counters are deltas, gauges the value after", d)
	}
	if _, _, ok := cutMetric("garbage"); ok {
		t.Error("cutMetric accepted a line without a value")
	}
	if metricsDelta(nil, after) != nil {
		t.Error("no /metrics before: want no figures")
	}
}

func TestPublishersSpreadOverTheInterval(t *testing.T) {
	// 4 publishers at 100/s each, phases i/4 as execute gives them: together
	// one send every 2.5 ms, never two at once.
	const pubs, interval = 4, float64(10 * time.Millisecond)
	var due []int64
	for i := range pubs {
		for seq := range int64(50) {
			due = append(due, dueAt(1000, seq, float64(i)/pubs, interval))
		}
	}
	slices.Sort(due)
	for k := 1; k < len(due); k++ {
		if gap := due[k] - due[k-1]; gap != int64(2500*time.Microsecond) {
			t.Fatalf("gap %d between sends %d and %d, want 2.5 ms", gap, k-1, k)
		}
	}
}

// BenchmarkReceive is the bench's per-delivery work: parse the frame and
// the payload, check and record it. It must not allocate, or the load
// generator would become the bottleneck at hundreds of thousands of
// deliveries per second.
func BenchmarkReceive(b *testing.B) {
	text := string(appendPayload(nil, payload{Run: "r1", Pub: 3, Seq: 0, Sent: 5}, 64))
	frame := []byte(`{"type":"message","id":"1732380000000-7","room":"lobby","user":"u","message":"` + text + `","ts":1732380000000,"client_id":"r1-3-0"}`)
	// Room for every latency and sequence up front: what is measured is the
	// per-message work, not the amortized growth of those slices.
	tr := &tracker{lat: make([]int64, 0, b.N)}
	tr.pubs = []pubSeen{{3, &seqSeen{max: -1, seen: bitset{words: make([]uint64, b.N/64+1)}}}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		f, err := parseServerFrame(frame)
		if err != nil {
			b.Fatal(err)
		}
		_, pub, _, sent, err := parsePayloadBytes(f.Text)
		if err != nil {
			b.Fatal(err)
		}
		tr.order(streamID{f.ID.Ms, uint64(i)})
		tr.record(pub, int64(i), sent, 10, 0)
	}
}

func TestTable(t *testing.T) {
	dir := t.TempDir()
	good := result{Scenario: "fanout", Label: "fast", CPU: cpuReport{Others: 0.1, Server: 0.8}, DeliveriesPerSec: 100000}
	good.Latency = &latencySummary{P99: 3}
	good.checkNoLoss()
	good.checkP99(10 * time.Millisecond)
	bad := result{Scenario: "fanout", Label: "lossy", Loss: 2, CPU: cpuReport{Others: -1}}
	bad.Latency = &latencySummary{P99: 30}
	bad.checkNoLoss()
	bad.checkP99(10 * time.Millisecond)
	var out, errOut bytes.Buffer
	code := mainArgs([]string{"table", writeResult(t, dir, "a.json", good), writeResult(t, dir, "b.json", bad)}, &out, &errOut)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("want header, rule and 2 rows:\n%s", out.String())
	}
	if want := "| fast | lost/dup/reordered 0/0/0; p99 ≤ 10 ms | 0/0/0; 3.00 ms | 100k deliveries/s, p99 3.00 ms, server 8.00 µs/delivery |  | pass | 0.10 |"; lines[2] != want {
		t.Errorf("row\n%s\nwant\n%s", lines[2], want)
	}
	if want := "| lossy | lost/dup/reordered 0/0/0; p99 ≤ 10 ms | 2/0/0; 30.00 ms; loss 2 dup 0 reorder 0 |  |  | **FAIL** |  |"; lines[3] != want {
		t.Errorf("row\n%s\nwant\n%s", lines[3], want)
	}
	if code := mainArgs([]string{"table", filepath.Join(dir, "missing.json")}, &out, &errOut); code != exitSetup {
		t.Errorf("missing file: exit %d", code)
	}
}
