package main

import (
	"math"
	"math/bits"
	"slices"
	"time"
)

// latencySummary is the exact distribution of a sample: every latency is
// kept, so the percentiles are the sample's own values, not estimates.
type latencySummary struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
	Mean  float64 `json:"mean_ms"`
}

// percentile returns the nearest-rank q-quantile (0 < q <= 1) of sorted:
// the smallest value with at least q of the sample at or below it.
func percentile(sorted []int64, q float64) int64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(q * float64(len(sorted))))
	rank = max(1, min(rank, len(sorted)))
	return sorted[rank-1]
}

// summarize sorts ns (nanoseconds) in place and summarizes it in ms.
func summarize(ns []int64) latencySummary {
	if len(ns) == 0 {
		return latencySummary{}
	}
	slices.Sort(ns)
	var sum float64
	for _, v := range ns {
		sum += float64(v)
	}
	ms := func(v int64) float64 { return float64(v) / float64(time.Millisecond) }
	return latencySummary{
		Count: int64(len(ns)),
		P50:   ms(percentile(ns, 0.50)),
		P90:   ms(percentile(ns, 0.90)),
		P99:   ms(percentile(ns, 0.99)),
		P999:  ms(percentile(ns, 0.999)),
		Max:   ms(ns[len(ns)-1]),
		Mean:  sum / float64(len(ns)) / float64(time.Millisecond),
	}
}

// bitset is a growable set of non-negative integers.
type bitset struct{ words []uint64 }

// set adds i and reports whether it was already there.
func (b *bitset) set(i int64) (had bool) {
	w := int(i >> 6)
	if w >= len(b.words) {
		b.words = slices.Grow(b.words, w+1-len(b.words))[:w+1]
	}
	bit := uint64(1) << (uint(i) & 63)
	had = b.words[w]&bit != 0
	b.words[w] |= bit
	return had
}

func (b *bitset) has(i int64) bool {
	w := int(i >> 6)
	return w < len(b.words) && b.words[w]&(uint64(1)<<(uint(i)&63)) != 0
}

// seqSeen is what one receiver saw of one publisher.
type seqSeen struct {
	seen bitset
	max  int64 // highest sequence seen; -1 before the first
}

// pubSeen is a publisher's number and what a receiver saw of it.
type pubSeen struct {
	pub  int
	seen *seqSeen
}

// tracker checks what one connection receives: every (publisher, sequence)
// once, in each publisher's order, and the latency of each. It belongs to
// the connection's reader goroutine; read it only after that has ended.
type tracker struct {
	// pubs is what it saw of each publisher, in order of first sight: a
	// room has a few publishers of the run's many (8,000 rooms have 8,000),
	// so a slice indexed by publisher number would hold thousands of nils
	// per connection.
	pubs      []pubSeen
	unique    int64    // distinct messages received
	measured  int64    // of those, sent after the warm-up
	dups      int64    // received again
	reorders  int64    // received after a later one of the same publisher
	lat       []int64  // ns, messages sent after the warm-up
	lastRecv  int64    // clock of the last new message
	lastID    streamID // stream order check
	idRegress int64    // message IDs that did not increase
}

// record notes message (pub, seq), sent at sent and received at now; it
// returns whether the message is new. Latencies of messages sent before
// measureFrom are not kept (warm-up).
func (t *tracker) record(pub int, seq, sent, now, measureFrom int64) bool {
	s := t.of(pub)
	if s == nil {
		s = &seqSeen{max: -1}
		t.pubs = append(t.pubs, pubSeen{pub, s})
	}
	if s.seen.set(seq) {
		t.dups++
		return false
	}
	if seq < s.max {
		t.reorders++
	} else {
		s.max = seq
	}
	t.unique++
	t.lastRecv = now
	if sent >= measureFrom {
		t.measured++
		t.lat = append(t.lat, now-sent)
	}
	return true
}

// of is what t saw of publisher pub, nil before its first message.
func (t *tracker) of(pub int) *seqSeen {
	for i := range t.pubs {
		if t.pubs[i].pub == pub {
			return t.pubs[i].seen
		}
	}
	return nil
}

// order checks that stream IDs only increase on the connection.
func (t *tracker) order(id streamID) {
	if !t.lastID.less(id) {
		t.idRegress++
	}
	t.lastID = id
}

// lost counts the messages of publisher pub that were acknowledged (stored)
// but never received.
func (t *tracker) lost(pub int, acked *bitset) int64 {
	s := t.of(pub)
	var n int64
	for w, word := range acked.words {
		var seen uint64
		if s != nil && w < len(s.seen.words) {
			seen = s.seen.words[w]
		}
		n += int64(bits.OnesCount64(word &^ seen))
	}
	return n
}
