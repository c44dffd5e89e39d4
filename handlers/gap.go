package handlers

import (
	"context"

	"github.com/xroom/xroom/streams"
)

// resume starts the replay after s.since. A since newer than anything the
// room's stream ever handed out belongs to another life of the room (its
// keys deleted or flushed without the client passing epoch, a failover
// that lost the newest entries, a made-up ID): waiting for entries after
// it would leave the connection silent, so the history starts over as
// after a reset.
func (s *session) resume(ctx context.Context) error {
	s.cursor = s.since
	if s.since.IsZero() {
		return s.startReplay(ctx, nil)
	}
	h, err := s.srv.hub.Store().History(ctx, s.room)
	if err != nil {
		return err
	}
	if h.Beyond(s.since) {
		return s.restart(ctx, h.Oldest)
	}
	if h.Trimmed(s.since) {
		if err := s.send(gapFrame{Type: "gap", Reason: "trimmed", OldestID: h.Oldest.String()}); err != nil {
			return err
		}
	}
	return s.startReplay(ctx, &h)
}

// restart replays the room from its oldest retained entry, after a gap of
// reason reset: the history the client knew is gone.
func (s *session) restart(ctx context.Context, oldest streams.ID) error {
	s.hasSince, s.since, s.cursor = true, streams.Zero, streams.Zero
	if err := s.send(gapFrame{Type: "gap", Reason: "reset", OldestID: oldest.String()}); err != nil {
		return err
	}
	return s.startReplay(ctx, nil)
}

// startReplay runs the replay to the stream's newest entry and caps it
// (replayFrom). What may be missing before the
// cursor is settled then (judged by seen; nil: nothing can be, the replay
// starts at the oldest entry), so the first catch-up read announces only
// what was trimmed after that.
func (s *session) startReplay(ctx context.Context, seen *streams.History) error {
	if err := s.replayFrom(ctx, seen); err != nil {
		return err
	}
	s.sub.GapChecked(s.cursor, seen)
	return nil
}

// announceGap tells the client, before the entries of the same pass, that
// a failover rolled back entries it was sent, or that a catch-up read
// skipped entries trimmed away while it was behind. The
// compatible dialect is not told (send): its frames all carry a message.
func (s *session) announceGap() error {
	if last, ok := s.sub.RolledBack(); ok {
		// A failover lost entries this connection was sent: say so before
		// anything newer (the entries that follow come after last).
		s.log.Warn("the room was rolled back under the connection", "last_kept", last.String())
		return s.send(gapFrame{Type: "gap", Reason: "rolled_back", OldestID: last.String()})
	}
	oldest, ok := s.sub.Gap()
	if !ok {
		return nil
	}
	s.log.Info("connection fell behind the room's retained history", "oldest", oldest.String(), "cursor", s.cursor.String())
	return s.send(gapFrame{Type: "gap", Reason: "trimmed", OldestID: oldest.String()})
}
