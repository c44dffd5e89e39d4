package handlers

import (
	"context"

	"github.com/xroom/xroom/streams"
)

// resume starts the replay after f.since. A since newer than anything the
// room's stream ever handed out belongs to another life of the room (its
// keys deleted or flushed without the client passing epoch, a failover
// that lost the newest entries, a made-up ID): waiting for entries after
// it would leave the connection silent, so the history starts over as
// after a reset.
func (f *feed) resume(ctx context.Context) error {
	f.cursor = f.since
	if f.since.IsZero() {
		return f.startReplay(ctx, nil)
	}
	h, err := f.srv.hub.Store().History(ctx, f.room)
	if err != nil {
		return err
	}
	if h.Beyond(f.since) {
		return f.restart(ctx, h.Oldest)
	}
	if h.Trimmed(f.since) {
		if err := f.sendGap("trimmed", h.Oldest); err != nil {
			return err
		}
	}
	return f.startReplay(ctx, &h)
}

// restart replays the room from its oldest retained entry, after a gap of
// reason reset: the history the client knew is gone.
func (f *feed) restart(ctx context.Context, oldest streams.ID) error {
	f.hasSince, f.since, f.cursor = true, streams.Zero, streams.Zero
	if err := f.sendGap("reset", oldest); err != nil {
		return err
	}
	return f.startReplay(ctx, nil)
}

// startReplay runs the replay to the stream's newest entry and caps it
// (replayFrom). What may be missing before the
// cursor is settled then (judged by seen; nil: nothing can be, the replay
// starts at the oldest entry), so the first catch-up read announces only
// what was trimmed after that.
func (f *feed) startReplay(ctx context.Context, seen *streams.History) error {
	if err := f.replayFrom(ctx, seen); err != nil {
		return err
	}
	f.sub.GapChecked(f.cursor, seen)
	return nil
}

// announceGap tells the client, before the entries of the same pass, that
// a failover rolled back entries it was sent, or that a catch-up read
// skipped entries trimmed away while it was behind. The
// compatible dialect is not told (sendGap): its frames all carry a message.
func (f *feed) announceGap() error {
	if last, ok := f.sub.RolledBack(); ok {
		// A failover lost entries this connection was sent: say so before
		// anything newer (the entries that follow come after last).
		f.log.Warn("the room was rolled back under the connection", "last_kept", last.String())
		return f.sendGap("rolled_back", last)
	}
	oldest, ok := f.sub.Gap()
	if !ok {
		return nil
	}
	f.log.Info("connection fell behind the room's retained history", "oldest", oldest.String(), "cursor", f.cursor.String())
	return f.sendGap("trimmed", oldest)
}
