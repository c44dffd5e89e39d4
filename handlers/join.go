package handlers

// A connection's join: what comes before the replay, the replay's end, and
// ready (the gap rules themselves are in gap.go).

import (
	"context"

	"github.com/xroom/xroom/streams"
)

// becomeReady ends the replay: the ready frame, naming the last entry of
// the history, then the presence snapshot.
func (s *session) becomeReady(last streams.ID) error {
	s.ready = true
	snapshot := s.snapshot() // read first, so that ready and snapshot go out together
	s.srv.stats.replay.Observe(float64(s.replayed))
	if err := s.send(readyFrame{Type: "ready", Room: s.room, LastID: last.String(), Epoch: s.epoch}); err != nil {
		return err
	}
	if snapshot != nil {
		return s.writeText(snapshot)
	}
	return nil
}

// join sends what comes before the replay: a gap notice, or the newest
// history when the client gave no since.
func (s *session) join(ctx context.Context) error {
	// On the writer, not the reader: the Redis call's deep stack then
	// lives only as long as this short-lived goroutine, and an idle
	// connection's reader keeps a small one.
	s.joinPresence()
	store := s.srv.hub.Store()
	epoch, err := store.Epoch(ctx, s.room)
	if err != nil {
		return err
	}
	s.sub.Epoch(epoch) // drops entries Redis no longer has, after a reset
	clientEpoch := s.epoch
	s.epoch = epoch
	if clientEpoch != "" && clientEpoch != epoch {
		// The history the client knew is gone: start over from the new one.
		_, oldest, err := store.Gap(ctx, s.room, streams.Zero)
		if err != nil {
			return err
		}
		return s.restart(ctx, oldest) // gap.go
	}
	if s.hasSince {
		return s.resume(ctx) // gap.go
	}
	n := s.srv.cfg.HistoryOnJoin
	if n == 0 {
		s.cursor = s.readyAt
		return nil
	}
	newest, err := store.RevRange(ctx, s.room, streams.MaxID, n)
	if err != nil {
		return err
	}
	for i := len(newest) - 1; i >= 0; i-- {
		e := &newest[i]
		s.srv.hub.Encode(s.room, e)
		if e.Frame != nil {
			if err := s.wire.data(e.Frame); err != nil {
				return err
			}
			s.replayed++
		}
		s.cursor = e.ID
	}
	return nil
}

// replayFrom sets up a replay from s.cursor: up to the stream's newest entry
// in Redis, not only as far as the room's tail has read, so that all the
// client missed comes before ready however far behind the tail is; and no
// more than MAX_REPLAY entries. seen, when the join has already read the
// stream's state, saves asking Redis again.
func (s *session) replayFrom(ctx context.Context, seen *streams.History) error {
	var last streams.ID
	if seen != nil {
		last = seen.Last // last-generated-id: if deleted, the replay ends at what remains
	} else {
		var err error
		if last, err = s.srv.hub.Store().Last(ctx, s.room); err != nil {
			return err
		}
	}
	if s.readyAt.Less(last) {
		s.readyAt = last
	}
	return s.limitReplay(ctx)
}
