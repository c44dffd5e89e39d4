package handlers

// The feed: what a chat connection is sent, whatever carries it. A
// WebSocket session and an SSE stream each embed one, and differ only in
// how frames are put on the wire (frameSink) and in what else they do.

import (
	"context"

	"github.com/xroom/xroom/streams"
)

// frameSink is where a feed's frames go: the framing of one transport.
type frameSink interface {
	// entry adds a chat entry; e.Frame is the WebSocket text frame the hub
	// encoded once for every connection.
	entry(e *streams.Entry) error
	// ready adds the ready frame; last is its last_id, where a client
	// that reconnects resumes.
	ready(last streams.ID, payload []byte) error
	// event adds any other frame: its type (gap, presence, error) and its
	// JSON.
	event(kind string, payload []byte) error
}

// Frame types of what a feed writes besides entries.
const (
	kindReady    = "ready"
	kindGap      = "gap"
	kindPresence = "presence"
	kindError    = "error"
)

// feed is a connection's position in its room and the resume plan that
// got it there: the join (gap, replay from since, history), ready, live
// entries and presence events. Everything in it is owned by the
// connection's one writer, except what is set before the writer starts.
type feed struct {
	srv    *Server
	log    sessionLog
	room   string
	user   string
	compat bool // no xroom.v1 subprotocol: only frames that carry "message"

	// resume is where the client asks to start (since, epoch), from the
	// handshake's joinRequest; the join plans from it (join.go).
	resume streams.Resume

	sub    *streams.Subscription
	member string // presence member "user:connid" (presence.go)
	// readConn names the connection in the read events it causes, so that
	// it does not get its own back (reads.go); empty on SSE, whose marks
	// come over HTTP with no connection. Set before the start; read-only.
	readConn string
	// ctx ends with the connection: Redis reads made for it stop then too.
	ctx  context.Context
	sink frameSink
	// life is the connection's phase (writer.go): joining, replaying, live,
	// closing. Any goroutine may read it.
	life

	// Owned by the writer.
	epoch   string     // the room's epoch, from the join's plan: ready's
	readyAt streams.ID // entries up to here are history, after it live
	cursor  streams.ID // the newest entry this connection has passed
	evSeq   uint64     // the last presence event this connection has passed
	// replayed counts the entries sent before ready, for metrics.
	replayed int
}

// follow records the room's subscription: the replay ends at what the
// tail has read now, and presence events are passed from here on (before,
// the snapshot covers them).
func (f *feed) follow(sub *streams.Subscription) {
	f.sub = sub
	f.readyAt = sub.Head()
	f.evSeq = sub.EventSeq()
}

// joinOnce runs the join on the writer's first pass, within the Redis
// timeout. After it the connection is replaying.
func (f *feed) joinOnce() error {
	if f.phase() != phaseJoining {
		return nil
	}
	ctx, cancel := context.WithTimeout(f.ctx, f.srv.cfg.RedisTimeout)
	defer cancel()
	if err := f.join(ctx); err != nil {
		return err
	}
	f.advance(phaseReplaying)
	return nil
}

// readError is a failed read of the room (as opposed to a failed write to
// the client). When it wraps streams.ErrUnavailable the room cannot be
// served now; otherwise the writer tries again after retryDelay.
type readError struct{ error }

func (e readError) Unwrap() error { return e.error }

// sendGap writes a gap frame; only the xroom dialect gets it.
func (f *feed) sendGap(reason string, oldest streams.ID) error {
	if f.compat {
		return nil
	}
	return f.sink.event(kindGap, encode(gapFrame{Type: kindGap, Reason: reason, OldestID: oldest.String()}))
}

// writeEntries writes one batch of the room's entries after the cursor,
// ready when the replay ends, and the presence events that came since
// the last pass. buf (batchSize long) holds the batch. more reports that
// another pass is due right away.
func (f *feed) writeEntries(buf []*streams.Entry) (more bool, err error) {
	p := f.phase()
	if p != phaseReplaying && p != phaseLive {
		return false, nil // not joined yet, or asked to close: the close goes next, alone
	}
	ready := p == phaseLive // this pass's view: a close asked for meanwhile does not change it
	// Served from memory unless this connection is behind; the hub bounds
	// the Redis read then.
	entries, next, err := f.sub.Next(f.ctx, f.cursor, buf)
	if err == nil && !ready && len(entries) == 0 && next == f.cursor && f.cursor.Less(f.readyAt) {
		// The buffer has nothing newer, yet the replay is not done: the
		// tail may be behind (Redis says), or the stream was reset (Redis
		// has nothing after the cursor: the history ends here).
		entries, next, err = f.sub.Read(f.ctx, f.cursor, buf)
	}
	if err != nil {
		return false, readError{err}
	}
	if err := f.announceGap(); err != nil {
		return false, err
	}
	for _, e := range entries {
		if !ready && f.readyAt.Less(e.ID) {
			// Past the history: what follows is live, and comes after ready.
			ready = true
			if err := f.goLive(f.readyAt); err != nil {
				return false, err
			}
		}
		if e.Frame == nil {
			continue // an entry without a message
		}
		if err := f.sink.entry(e); err != nil {
			return false, err
		}
		if !ready {
			f.replayed++
		}
	}
	stuck := len(entries) == 0 && next == f.cursor
	f.cursor = next
	// stuck only if the stream was reset under us: take what we have as the history.
	if !ready && (stuck || !f.cursor.Less(f.readyAt)) {
		ready = true
		if err := f.goLive(f.cursor); err != nil {
			return false, err
		}
	}
	if ready {
		if err := f.writeEvents(); err != nil {
			return false, err
		}
	}
	return !ready || len(entries) == cap(buf), nil
}

// goLive ends the replay: the ready frame (becomeReady, join.go), and the
// connection is live.
func (f *feed) goLive(last streams.ID) error {
	f.advance(phaseLive)
	return f.becomeReady(last)
}

// Gaps found after the join are announced in the stream of entries: a
// failover that rolled back entries the connection was sent, or a
// catch-up read that skipped trimmed entries (streams/livegap.go). The
// join's own gaps come from its plan (join.go).
//
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
