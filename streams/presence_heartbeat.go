package streams

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// The heartbeat: every Heartbeat, one pass refreshes every connection of
// this instance, a pipeline of scripts per pipelineCalls chunks.

// loop runs the heartbeat until Close.
func (p *Presence) loop() {
	defer close(p.done)
	t := time.NewTicker(p.opt.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.Heartbeat(context.Background())
		}
	}
}

// Heartbeat refreshes every local connection and sweeps expired members in
// the rooms they are in, now. The loop calls it every Heartbeat; a failure
// is logged and retried on the next one.
func (p *Presence) Heartbeat(ctx context.Context) {
	p.beat.Lock()
	defer p.beat.Unlock()
	p.mu.Lock()
	rooms := make(map[string][]string, len(p.rooms))
	for room, local := range p.rooms {
		ms := make([]string, 0, len(local))
		for m := range local {
			ms = append(ms, m)
		}
		rooms[room] = ms
	}
	p.mu.Unlock()
	if len(rooms) == 0 {
		return
	}
	var calls []scriptCall
	var failed error
	flush := func() {
		ctx, cancel := context.WithTimeout(ctx, presenceTimeout)
		defer cancel()
		if err := p.exec(ctx, refreshScript, calls); err != nil && failed == nil {
			failed = err
		}
		calls = calls[:0]
	}
	for room, members := range rooms {
		for chunk := range slices.Chunk(members, refreshChunk) {
			calls = append(calls, p.refresh(room, chunk))
			if len(calls) == pipelineCalls {
				flush()
			}
		}
	}
	if len(calls) > 0 {
		flush()
	}
	if failed != nil {
		p.log.Warn("presence heartbeat failed; retrying on the next one", "err", failed)
		return
	}
	p.stats.Heartbeats.Add(1)
}

// Close stops the heartbeat and removes this instance's remaining
// connections, writing the leaves of users who had no other. Call it after
// the connections are closed (each leaves on its own).
func (p *Presence) Close(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	rooms := p.rooms
	p.rooms = map[string]map[string]struct{}{}
	p.mu.Unlock()
	close(p.stop)
	<-p.done
	var errs []error
	for room, local := range rooms {
		ms := make([]string, 0, len(local))
		for m := range local {
			ms = append(ms, m)
		}
		if err := p.leave(ctx, room, ms); err != nil {
			errs = append(errs, fmt.Errorf("presence leave in %s: %w", room, err))
		}
	}
	return errors.Join(errs...)
}
