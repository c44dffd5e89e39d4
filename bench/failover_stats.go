package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// What a failover run saw, in the bench's clock (mono ns), and what it
// makes of it: analyzeFailover is pure, so that the figures are tested
// without Redis.

// foAck is the first ack of one send: the ID the server named, and when it
// arrived.
type foAck struct {
	ClientID string
	ID       streamID
	At       int64
}

// foStored is one entry of the room's stream on the new primary at the end.
type foStored struct {
	ID       streamID
	ClientID string
}

// foMarks are the moments of the failover. Zero means not seen.
type foMarks struct {
	Fault    int64 // SENTINEL FAILOVER answered OK, or SIGKILL sent
	Promoted int64 // a replica first answered ROLE master
	Switch   int64 // the Sentinel published +switch-master
	Addr     int64 // SENTINEL get-master-addr-by-name first named another node
	// Boundary is the newest entry of the room on the promoted replica
	// when it was seen promoted (MULTI ROLE + XREVRANGE): entries after it
	// were written to the new primary.
	Boundary     streamID
	HaveBoundary bool
}

// foFigures are a failover run's figures. Durations are seconds, nil when
// a moment they start or end at was not seen; negative when the end came
// first (an ack from the new primary before the Sentinel's +switch-master).
type foFigures struct {
	Acked      int `json:"acked"`
	Lost       int `json:"acked_lost"`        // acked, absent from the new primary's stream
	Duplicates int `json:"stored_twice"`      // client_ids stored more than once
	Mismatched int `json:"ack_id_mismatched"` // acked IDs that hold another send
	// Kept is the acked entries the new primary has.
	Kept int `json:"acked_kept"`

	PromotedAfterFault *float64 `json:"promoted_after_fault_s"`
	SwitchAfterFault   *float64 `json:"switch_after_fault_s"`
	AddrAfterFault     *float64 `json:"addr_changed_after_fault_s"`
	// FirstNew*: the first ack of an entry the new primary wrote (after
	// the boundary) and kept, from the promotion, the switch, the fault.
	FirstNewAfterPromotion *float64 `json:"first_new_ack_after_promotion_s"`
	FirstNewAfterSwitch    *float64 `json:"first_new_ack_after_switch_s"`
	FirstNewAfterAddr      *float64 `json:"first_new_ack_after_addr_changed_s"`
	FirstNewAfterFault     *float64 `json:"first_new_ack_after_fault_s"`
	// LongestNoKeptAck is the longest time between two acks of kept
	// entries (any sender's): what the senders saw of the outage,
	// detection included. LongestNoKeptAckFrom is when it began, from the
	// fault.
	LongestNoKeptAck     float64  `json:"longest_without_kept_ack_s"`
	LongestNoKeptAckFrom *float64 `json:"longest_without_kept_ack_from_s"`
	// RefusedMeanwhile is the unavailable errors from the fault to the
	// first new ack.
	RefusedMeanwhile int      `json:"refused_meanwhile"`
	LostIDs          []string `json:"acked_lost_ids,omitempty"` // the first few
	// Timeline counts, per foBin from foBinsBefore bins before the fault,
	// acks of kept entries, acks of lost ones, and refusals.
	Timeline []foBin `json:"timeline,omitempty"`
}

// foBin is one slice of the timeline.
type foBin struct {
	From    float64 `json:"from_s"` // from the fault
	Kept    int     `json:"kept"`
	Lost    int     `json:"lost"`
	Refused int     `json:"refused"`
}

const (
	foBinWidth   = 250 * time.Millisecond
	foBinsBefore = 4
)

// maxListed bounds the lost IDs a result lists.
const maxListed = 10

func secsBetween(from, to int64) *float64 {
	if from == 0 || to == 0 {
		return nil
	}
	s := float64(to-from) / float64(time.Second)
	return &s
}

// analyzeFailover compares what was acked with what the new primary kept.
func analyzeFailover(acks []foAck, refusedAt []int64, stream []foStored, m foMarks) foFigures {
	fig := foFigures{Acked: len(acks)}
	byID := make(map[streamID]string, len(stream))
	seen := make(map[string]bool, len(stream))
	for _, e := range stream {
		byID[e.ID] = e.ClientID
		if seen[e.ClientID] {
			fig.Duplicates++
		}
		seen[e.ClientID] = true
	}
	var keptAt, lostAt []int64
	var firstNew int64
	for _, a := range acks {
		cid, ok := byID[a.ID]
		switch {
		case !ok:
			fig.Lost++
			lostAt = append(lostAt, a.At)
			if len(fig.LostIDs) < maxListed {
				fig.LostIDs = append(fig.LostIDs, a.ID.String()+" "+a.ClientID)
			}
			continue
		case cid != a.ClientID:
			fig.Mismatched++
			continue
		}
		fig.Kept++
		keptAt = append(keptAt, a.At)
		isNew := m.HaveBoundary && m.Boundary.less(a.ID)
		if !m.HaveBoundary { // promotion not seen: the switch is the mark
			isNew = m.Switch != 0 && a.At >= m.Switch
		}
		if isNew && (firstNew == 0 || a.At < firstNew) {
			firstNew = a.At
		}
	}
	slices.Sort(keptAt)
	for i := 1; i < len(keptAt); i++ {
		if d := float64(keptAt[i]-keptAt[i-1]) / float64(time.Second); d > fig.LongestNoKeptAck {
			fig.LongestNoKeptAck, fig.LongestNoKeptAckFrom = d, secsBetween(m.Fault, keptAt[i-1])
		}
	}
	fig.PromotedAfterFault = secsBetween(m.Fault, m.Promoted)
	fig.SwitchAfterFault = secsBetween(m.Fault, m.Switch)
	fig.AddrAfterFault = secsBetween(m.Fault, m.Addr)
	fig.FirstNewAfterPromotion = secsBetween(m.Promoted, firstNew)
	fig.FirstNewAfterSwitch = secsBetween(m.Switch, firstNew)
	fig.FirstNewAfterAddr = secsBetween(m.Addr, firstNew)
	fig.FirstNewAfterFault = secsBetween(m.Fault, firstNew)
	for _, at := range refusedAt {
		if at >= m.Fault && (firstNew == 0 || at <= firstNew) {
			fig.RefusedMeanwhile++
		}
	}
	if m.Fault != 0 {
		fig.Timeline = timeline(m.Fault, keptAt, lostAt, refusedAt)
	}
	return fig
}

// timeline bins the events by foBinWidth from foBinsBefore bins before
// fault to the last event.
func timeline(fault int64, kept, lost, refused []int64) []foBin {
	start := fault - foBinsBefore*int64(foBinWidth)
	var bins []foBin
	add := func(times []int64, count func(*foBin)) {
		for _, at := range times {
			if at < start {
				continue
			}
			i := int((at - start) / int64(foBinWidth))
			for len(bins) <= i {
				bins = append(bins, foBin{From: float64(len(bins)-foBinsBefore) * foBinWidth.Seconds()})
			}
			count(&bins[i])
		}
	}
	add(kept, func(b *foBin) { b.Kept++ })
	add(lost, func(b *foBin) { b.Lost++ })
	add(refused, func(b *foBin) { b.Refused++ })
	return bins
}

// parseSwitchMaster reads a +switch-master message, "NAME OLDIP OLDPORT
// NEWIP NEWPORT", and returns the master's name and its new address.
func parseSwitchMaster(payload string) (name, newAddr string, ok bool) {
	f := strings.Fields(payload)
	if len(f) != 5 {
		return "", "", false
	}
	return f[0], f[3] + ":" + f[4], true
}

// failoverResult is the failover scenario's part of a result.
type failoverResult struct {
	Fault       string `json:"fault"`
	AckReplicas int    `json:"ack_replicas"`
	Replicas    int    `json:"replicas"` // listed by the Sentinel before the fault
	OldPrimary  string `json:"old_primary"`
	NewPrimary  string `json:"new_primary"`
	// Switches is the new primary of each +switch-master seen.
	Switches []string `json:"switches"`
	foFigures
	Sent       int64            `json:"sent"` // distinct sends (client_ids)
	Attempts   int64            `json:"attempts"`
	Refused    int64            `json:"refused"` // unavailable errors over the run
	Unacked    int64            `json:"unacked"` // never acked, even after the drain
	Reconnects int64            `json:"reconnects"`
	Gaps       map[string]int64 `json:"gaps,omitempty"` // by reason
	// LongestSilence is the longest a sender went without receiving any
	// message of the room while sending, in seconds.
	LongestSilence float64 `json:"longest_silence_s"`
}

func fmtSecs(s *float64) string {
	if s == nil {
		return "not seen"
	}
	return fmt.Sprintf("%.3f s", *s)
}

// announced is how many gaps said entries were lost (rolled_back) or the
// resumed history is not the one the client knew (reset).
func (r *failoverResult) announced() int64 {
	return r.Gaps["rolled_back"] + r.Gaps["reset"]
}

func (r *failoverResult) printText(w io.Writer) {
	fmt.Fprintf(w, "failover:    %s, REDIS_ACK_REPLICAS=%d, %d replicas; primary %s -> %s (+switch-master to %v)\n", r.Fault, r.AckReplicas, r.Replicas, r.OldPrimary, r.NewPrimary, r.Switches)
	fmt.Fprintf(w, "timeline:    after the fault: promoted %s, get-master-addr-by-name changed %s, +switch-master %s\n",
		fmtSecs(r.PromotedAfterFault), fmtSecs(r.AddrAfterFault), fmtSecs(r.SwitchAfterFault))
	fmt.Fprintf(w, "recovery:    first ack of an entry the new primary wrote: %s after the promotion (%s after the address changed, %s after +switch-master, %s after the fault)\n",
		fmtSecs(r.FirstNewAfterPromotion), fmtSecs(r.FirstNewAfterAddr), fmtSecs(r.FirstNewAfterSwitch), fmtSecs(r.FirstNewAfterFault))
	fmt.Fprintf(w, "outage:      longest without an ack of a kept entry %.3f s (from %s after the fault); longest a sender received nothing %.3f s\n",
		r.LongestNoKeptAck, fmtSecs(r.LongestNoKeptAckFrom), r.LongestSilence)
	fmt.Fprintf(w, "sends:       %d sent (%d attempts), %d acked, %d refused with unavailable (%d from the fault to the first new ack), %d never acked, %d reconnects\n",
		r.Sent, r.Attempts, r.Acked, r.Refused, r.RefusedMeanwhile, r.Unacked, r.Reconnects)
	fmt.Fprintf(w, "kept:        %d acked kept, %d acked lost, %d stored twice, %d acked IDs holding another send; gaps %v\n",
		r.Kept, r.Lost, r.Duplicates, r.Mismatched, r.Gaps)
	if len(r.LostIDs) > 0 {
		fmt.Fprintf(w, "lost:        %s\n", strings.Join(r.LostIDs, ", "))
	}
	if len(r.Timeline) > 0 {
		fmt.Fprintf(w, "per %v from the fault, acks kept/acks lost/refused (bins of kept acks only left out):%s\n", foBinWidth, fmtTimeline(r.Timeline))
	}
}

// fmtTimeline writes the bins with anything but kept acks, and runs of
// empty bins as one.
func fmtTimeline(bins []foBin) string {
	var b strings.Builder
	for i := 0; i < len(bins); i++ {
		bin := bins[i]
		switch {
		case bin.Kept+bin.Lost+bin.Refused == 0:
			j := i
			for j+1 < len(bins) && bins[j+1].Kept+bins[j+1].Lost+bins[j+1].Refused == 0 {
				j++
			}
			fmt.Fprintf(&b, " %+.2f..%+.2f:none", bin.From, bins[j].From+foBinWidth.Seconds())
			i = j
		case bin.Lost+bin.Refused > 0:
			fmt.Fprintf(&b, " %+.2f:%d/%d/%d", bin.From, bin.Kept, bin.Lost, bin.Refused)
		}
	}
	return b.String()
}

// figures is the failover run's row in the suite's table.
func (r *failoverResult) figures() string {
	f := fmt.Sprintf("promoted %s after the fault, switch %s; first new ack %s after the promotion (%s after the switch); longest without a kept ack %.3f s; %d refused meanwhile; %d acked, %d lost, %d gaps rolled_back/reset",
		fmtSecs(r.PromotedAfterFault), fmtSecs(r.SwitchAfterFault), fmtSecs(r.FirstNewAfterPromotion), fmtSecs(r.FirstNewAfterSwitch),
		r.LongestNoKeptAck, r.RefusedMeanwhile, r.Acked, r.Lost, r.announced())
	if len(r.Switches) > 1 {
		f = fmt.Sprintf("the Sentinel failed over %d times; ", len(r.Switches)) + f
	}
	return f
}
