package handlers

// A connection's join: what comes before the replay, the replay's end, and
// ready (the gap rules themselves are in gap.go).

import (
	"context"

	"github.com/xroom/xroom/streams"
)

// becomeReady ends the replay: the ready frame, naming the last entry of
// the history, then the presence snapshot.
func (f *feed) becomeReady(last streams.ID) error {
	f.ready = true
	snapshot := f.snapshot() // read first, so that ready and snapshot go out together
	f.srv.stats.replay.Observe(float64(f.replayed))
	if !f.compat {
		if err := f.sink.ready(last, encode(readyFrame{Type: kindReady, Room: f.room, LastID: last.String(), Epoch: f.epoch})); err != nil {
			return err
		}
	}
	if snapshot != nil {
		return f.sink.event(kindPresence, snapshot)
	}
	return nil
}

// join sends what comes before the replay: a gap notice, or the newest
// history when the client gave no since.
func (f *feed) join(ctx context.Context) error {
	// On the writer, not the reader: the Redis call's deep stack then
	// lives only as long as this short-lived goroutine, and an idle
	// connection's reader keeps a small one.
	f.joinPresence()
	store := f.srv.hub.Store()
	epoch, err := store.Epoch(ctx, f.room)
	if err != nil {
		return err
	}
	f.sub.Epoch(epoch) // drops entries Redis no longer has, after a reset
	clientEpoch := f.epoch
	f.epoch = epoch
	if clientEpoch != "" && clientEpoch != epoch {
		stale, err := f.staleEpoch(ctx)
		if err != nil {
			return err
		}
		if stale {
			// The history the client knew is gone: start over from the new one.
			_, oldest, err := store.Gap(ctx, f.room, streams.Zero)
			if err != nil {
				return err
			}
			return f.restart(ctx, oldest) // gap.go
		}
	}
	if f.hasSince {
		return f.resume(ctx) // gap.go
	}
	n := f.srv.cfg.HistoryOnJoin
	if n == 0 {
		f.cursor = f.readyAt
		return nil
	}
	newest, err := store.RevRange(ctx, f.room, streams.MaxID, n)
	if err != nil {
		return err
	}
	for i := len(newest) - 1; i >= 0; i-- {
		e := &newest[i]
		f.srv.hub.Encode(f.room, e)
		if e.Frame != nil {
			if err := f.sink.entry(e); err != nil {
				return err
			}
			f.replayed++
		}
		f.cursor = e.ID
	}
	return nil
}

// staleEpoch decides, when the epoch the client gave is not the room's,
// whether the client's history is gone. It is, unless since came as an
// SSE Last-Event-ID naming an entry the stream holds: an EventSource
// reconnects to the URL it was opened with, whose epoch stays what it was
// while its Last-Event-ID moves on, past a reset it was already told of.
func (f *feed) staleEpoch(ctx context.Context) (bool, error) {
	if !f.sinceIsEventID || !f.hasSince || f.since.IsZero() {
		return true, nil
	}
	held, err := f.srv.hub.Store().Holds(ctx, f.room, f.since)
	return !held, err
}

// replayFrom sets up a replay from f.cursor: up to the stream's newest entry
// in Redis, not only as far as the room's tail has read, so that all the
// client missed comes before ready however far behind the tail is; and no
// more than MAX_REPLAY entries. seen, when the join has already read the
// stream's state, saves asking Redis again.
func (f *feed) replayFrom(ctx context.Context, seen *streams.History) error {
	var last streams.ID
	if seen != nil {
		last = seen.Last // last-generated-id: if deleted, the replay ends at what remains
	} else {
		var err error
		if last, err = f.srv.hub.Store().Last(ctx, f.room); err != nil {
			return err
		}
	}
	if f.readyAt.Less(last) {
		f.readyAt = last
	}
	return f.limitReplay(ctx)
}
