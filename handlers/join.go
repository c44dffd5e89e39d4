package handlers

// A connection's join: the room's plan for it (streams.Store.PlanResume
// decides the epoch check, the gaps, where the replay starts and ends)
// turned into frames: gap, the newest history or the replay's start, and
// at the replay's end ready.

import (
	"context"

	"github.com/xroom/xroom/streams"
)

// join plans the connection's start from the client's position and sends
// what comes before the replay: the plan's gaps, or the newest history
// when the client gave no since. The replay itself is the writer's passes
// from the cursor up to readyAt (feed.go).
func (f *feed) join(ctx context.Context) error {
	// On the writer, not the reader: the Redis calls' deep stack then
	// lives only as long as this short-lived goroutine, and an idle
	// connection's reader keeps a small one.
	f.joinPresence()
	limits := streams.ResumeLimits{HistoryOnJoin: f.srv.cfg.HistoryOnJoin, MaxReplay: f.srv.guard.limits.MaxReplay}
	plan, err := f.srv.hub.Store().PlanResume(ctx, f.room, f.resume, limits)
	if err != nil {
		return err
	}
	f.sub.Joined(plan) // drops entries Redis no longer has, after a reset
	f.epoch = plan.Epoch
	for _, g := range plan.Gaps {
		if err := f.sendGap(g.Reason.String(), g.Oldest); err != nil {
			return err
		}
	}
	switch plan.Start {
	case streams.StartAtHead:
		f.cursor = f.readyAt
	case streams.StartWithNewest:
		return f.sendNewest(plan.Newest)
	case streams.StartAfter:
		// Up to the stream's newest entry in Redis, not only as far as the
		// room's tail has read, so that all the client missed comes before
		// ready however far behind the tail is.
		f.cursor = plan.After
		if f.readyAt.Less(plan.Until) {
			f.readyAt = plan.Until
		}
	}
	return nil
}

// sendNewest sends the newest history to a client that gave no since.
func (f *feed) sendNewest(newest []streams.Entry) error {
	for i := range newest {
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

// becomeReady ends the replay: the ready frame, naming the last entry of
// the history, then the presence snapshot.
func (f *feed) becomeReady(last streams.ID) error {
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
