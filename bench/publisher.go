package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// sentRing remembers send times by sequence for ack latencies; a publisher
// never has anywhere near this many sends unacknowledged.
const sentRing = 1 << 16

// publisher sends messages on one connection, each with a client_id so the
// server acknowledges it once stored: in closed loop (the next send waits for
// the previous ack) or at a fixed rate (sends on a schedule, acks counted as
// they come).
type publisher struct {
	num  int
	c    *client
	rate float64 // messages per second; 0: closed loop
	// window: closed loop, sends in flight at once (1: each waits for the
	// previous ack), as a bot streaming sends and matching acks by client_id.
	window int
	size   int

	sent     atomic.Int64
	acks     atomic.Int64
	fails    atomic.Int64
	signal   chan struct{} // an ack or error arrived
	sentAt   [sentRing]atomic.Int64
	lateness []int64 // fixed rate: how late each send was, ns (writer only)
	// inFlightMax: the most sends awaiting an ack at once, counted at each
	// send (writer only).
	inFlightMax int64

	// Read by the connection's reader only, until it ends.
	acked    bitset
	ackLat   []int64
	dupAcks  int64
	badAcks  int64
	mu       sync.Mutex
	errCodes map[string]int64
}

func newPublisher(num int, c *client, rate float64, size int) *publisher {
	p := &publisher{num: num, c: c, rate: rate, size: size, window: 1, signal: make(chan struct{}, 1), errCodes: map[string]int64{}}
	c.pub = p
	return p
}

func (p *publisher) notify() {
	select {
	case p.signal <- struct{}{}:
	default:
	}
}

// ack handles an ack frame (reader goroutine).
func (p *publisher) ack(clientID string, now int64) {
	pub, seq, ok := parseClientID(p.c.run.id, clientID)
	if !ok || pub != p.num {
		p.badAcks++
		p.c.run.noteErr("publisher %d: ack for unknown client_id %q", p.num, clientID)
		return
	}
	if p.acked.set(seq) {
		p.dupAcks++
		return
	}
	if sent := p.sentAt[seq%sentRing].Load(); sent >= p.c.run.measureFrom.Load() {
		p.ackLat = append(p.ackLat, now-sent)
	}
	p.acks.Add(1)
	p.notify()
}

// fail handles an error frame that names one of p's sends (reader goroutine).
func (p *publisher) fail(clientID, code, message string) {
	p.mu.Lock()
	p.errCodes[code]++
	p.mu.Unlock()
	p.c.run.noteErr("publisher %d: %s for %s: %s", p.num, code, clientID, message)
	p.fails.Add(1)
	p.notify()
}

// outstanding is how many sends await an ack or error.
func (p *publisher) outstanding() int64 {
	return p.sent.Load() - p.acks.Load() - p.fails.Load()
}

// loop publishes from start until the clock reaches stopAt (mono), then
// waits up to drain for the last acks. At a fixed rate, the schedule is
// shifted by phase (a fraction of the interval), so that publishers spread
// over the interval add up to a steady stream, not to bursts of one message
// each at the same instant.
func (p *publisher) loop(ctx context.Context, start, stopAt int64, phase float64, drain time.Duration) error {
	buf := make([]byte, 0, p.size+128)
	send := func(seq, sent int64) error {
		p.sentAt[seq%sentRing].Store(sent)
		buf = appendSendFrame(buf[:0], payload{Run: p.c.run.id, Pub: p.num, Seq: seq, Sent: sent}, p.size)
		if err := p.c.write(buf); err != nil {
			return fmt.Errorf("publisher %d: send %d: %w", p.num, seq, err)
		}
		p.sent.Add(1)
		p.inFlightMax = max(p.inFlightMax, p.outstanding())
		return nil
	}
	if p.rate <= 0 {
		for seq := int64(0); mono() < stopAt; seq++ {
			if err := p.waitBelow(ctx, int64(p.window), sendTimeout); err != nil {
				return err
			}
			if err := send(seq, mono()); err != nil {
				return err
			}
		}
		return p.waitAcks(ctx, sendTimeout)
	}
	interval := float64(time.Second) / p.rate
	timer := time.NewTimer(0)
	defer timer.Stop()
	for seq := int64(0); ; seq++ {
		due := dueAt(start, seq, phase, interval)
		if due >= stopAt {
			break
		}
		if d := due - mono(); d > 0 {
			timer.Reset(time.Duration(d))
			select {
			case <-timer.C:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		now := mono()
		p.lateness = append(p.lateness, now-due)
		if err := send(seq, now); err != nil {
			return err
		}
	}
	return p.waitAcks(ctx, drain)
}

// dueAt is when send seq of a fixed-rate schedule is due: interval ns apart,
// shifted by phase intervals.
func dueAt(start, seq int64, phase, interval float64) int64 {
	return start + int64((float64(seq)+phase)*interval)
}

// waitAcks waits until every send has its ack or error.
func (p *publisher) waitAcks(ctx context.Context, timeout time.Duration) error {
	return p.waitBelow(ctx, 1, timeout)
}

// waitBelow waits until fewer than n sends await their ack or error.
func (p *publisher) waitBelow(ctx context.Context, n int64, timeout time.Duration) error {
	if p.outstanding() < n {
		return nil
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	for p.outstanding() >= n {
		select {
		case <-p.signal:
		case <-p.c.done:
			return fmt.Errorf("publisher %d: connection ended: %v", p.num, p.c.err)
		case <-t.C:
			return fmt.Errorf("publisher %d: %d sends unacknowledged after %v", p.num, p.outstanding(), timeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// maxWindow bounds -window well below sentRing, which must hold every send
// still awaiting its ack.
const maxWindow = 4096
