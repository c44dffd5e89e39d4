package handlers

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xroom/xroom/streams"
)

// sseStream is one SSE connection in a room: a feed framed as events. As
// with a WebSocket session, the handler's goroutine reads the connection
// (only to see it close: a client sends nothing on an event stream) and a
// writer goroutine runs only while there is something to write. The
// writer reads the room only as fast as the client takes what it writes
// (each write blocks, within WriteWait), so a slow reader costs a batch,
// never a queue, and catches up from Redis through its cursor.
type sseStream struct {
	feed
	conn    net.Conn // fasthttp's hijacked connection: hands over bytes it had buffered
	raw     net.Conn // the TCP connection: closing it ends a blocked read or write
	wire    sseWire  // owned by the writer
	cancel  context.CancelFunc
	expires int64         // when the token runs out (Unix ns); 0: no token
	retry   time.Duration // the retry: it tells EventSource
	// following is set once sub is: the hub may notify before Subscribe returns.
	following atomic.Bool

	mu        sync.Mutex
	writing   bool // a writer goroutine is running
	pending   bool // more may have arrived since the writer last looked
	writers   sync.WaitGroup
	keepAlive *time.Timer
	wants     streamWants
}

// streamWants is what other goroutines ask the writer for. Guarded by mu.
type streamWants struct {
	comment bool // a keep-alive comment is due
	// end asks the writer to end the stream after endFrame (an error
	// frame; nil: none). The first request wins.
	end      bool
	endFrame []byte
}

func (st *sseStream) dialect() int { return dialectSSE }

// notify is the hub's notification: new entries may be in the room.
func (st *sseStream) notify() {
	if st.following.Load() {
		st.kick()
	}
}

// kick makes sure a writer runs to look for work. Safe from any goroutine; never blocks.
func (st *sseStream) kick() {
	st.mu.Lock()
	if st.ctx.Err() != nil { // ended: no writer starts again
		st.mu.Unlock()
		return
	}
	if st.writing {
		st.pending = true
		st.mu.Unlock()
		return
	}
	st.writing = true
	st.writers.Add(1)
	st.mu.Unlock()
	go st.writeLoop()
}

func (st *sseStream) writeLoop() {
	defer st.writers.Done()
	for {
		st.mu.Lock()
		st.pending = false
		w := st.wants
		st.wants.comment = false
		st.mu.Unlock()
		more, err := st.writePass(w)
		if ferr := st.wire.flush(); err == nil { // one write system call per pass
			err = ferr
		}
		st.countFrames(err == nil)
		st.wire.release() // before another writer may start
		if err != nil || st.wire.closed {
			if err != nil {
				st.log.Debug("stream ended", "err", err)
			}
			st.stop()
			st.closeRaw() // the reader sees it and ends the stream
			st.mu.Lock()
			st.writing = false
			st.mu.Unlock()
			return
		}
		st.mu.Lock()
		if !more && !st.pending || st.ctx.Err() != nil {
			st.writing = false
			st.mu.Unlock()
			return
		}
		st.mu.Unlock()
	}
}

// writePass writes what is waiting: the end of the stream if asked for, a
// keep-alive comment, the join (gap, history), then one batch of entries.
func (st *sseStream) writePass(w streamWants) (more bool, err error) {
	if w.end {
		if w.endFrame != nil {
			if err := st.wire.event(kindError, w.endFrame); err != nil {
				return false, err
			}
		}
		st.wire.end()
		return false, nil
	}
	if w.comment {
		if err := st.wire.comment("keep-alive"); err != nil {
			return false, err
		}
	}
	if err := st.joinOnce(); err != nil {
		var we writeError
		if !errors.As(err, &we) { // Redis failed, the socket did not
			st.giveUp("history is unavailable right now; the stream ends, reconnect to try again", err)
		}
		return false, err
	}
	more, err = st.writeEntries(st.wire.entries())
	if err != nil { // re declared here: taking its address makes it escape, and most passes succeed
		var re readError
		switch {
		case errors.As(err, &re) && errors.Is(err, streams.ErrUnavailable):
			st.giveUp("the room is unavailable right now; the stream ends, reconnect to try again", err)
			return false, nil
		case errors.As(err, &re):
			st.log.Warn("reading the room failed; retrying", "err", err)
			time.AfterFunc(retryDelay, st.kick)
			return false, nil
		}
	}
	return more, err
}

// giveUp ends the stream with an unavailable error: EventSource reconnects
// after its retry delay, with Last-Event-ID. Only the writer calls it.
func (st *sseStream) giveUp(message string, err error) {
	st.log.Warn("cannot serve the room", "err", err)
	_ = st.wire.event(kindError, encode(errorFrame{Type: kindError, Code: codeUnavailable, Message: message}))
	st.wire.end()
}

// countFrames adds the messages the last pass wrote to the delivered count.
func (st *sseStream) countFrames(ok bool) {
	st.wire.writes = 0 // xroom_websocket_writes_total counts WebSocket writes only
	if n := st.wire.frames; n > 0 {
		st.wire.frames = 0
		if ok {
			st.srv.stats.delivered.Add(int64(n))
		}
	}
}

// startKeepAlive sends a comment every period, from a timer rather than a
// goroutine of its own; the writer sends it.
func (st *sseStream) startKeepAlive(period time.Duration) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.keepAlive = time.AfterFunc(period, func() { st.tick(period) })
}

// tick asks for a keep-alive comment, or ends the stream when its token
// has run out (checked here, as a WebSocket's is on its pings).
func (st *sseStream) tick(period time.Duration) {
	if st.expires != 0 && time.Now().UnixNano() >= st.expires {
		st.log.Debug("token expired; ending the stream")
		st.end(encode(errorFrame{Type: kindError, Code: errTokenExpired.code, Message: "the token has expired; reconnect with a fresh one"}))
		return
	}
	st.mu.Lock()
	if st.ctx.Err() == nil {
		st.wants.comment = true
		st.keepAlive.Reset(period)
	}
	st.mu.Unlock()
	st.kick()
}

// end asks the writer to end the stream, after frame (nil: none).
func (st *sseStream) end(frame []byte) {
	st.mu.Lock()
	if !st.wants.end {
		st.wants.end, st.wants.endFrame = true, frame
	}
	st.mu.Unlock()
	st.kick()
}

// goAway ends the stream for a shutdown: EventSource reconnects after its
// retry delay, to another instance or this one restarted. A writer held
// up by a client that reads nothing is cut off after closeGrace.
func (st *sseStream) goAway() {
	st.end(nil)
	time.AfterFunc(closeGrace, st.closeRaw)
}

// stop marks the stream ended: no writer starts again, and Redis reads
// made for it are cancelled. Taken under mu so that kick cannot start a
// writer after close waits.
func (st *sseStream) stop() {
	st.mu.Lock()
	st.cancel()
	st.mu.Unlock()
}

// closeRaw closes the TCP connection, which ends a blocked read or write
// at once. (fasthttp's hijacked connection ignores Close: it closes the
// socket itself after the handler returns.)
func (st *sseStream) closeRaw() { _ = st.raw.Close() }

// waitClosed reads, and drops, what the client sends until the
// connection ends: the client closed it, or the writer did (closeRaw).
func (st *sseStream) waitClosed() {
	var buf [128]byte
	for {
		if _, err := st.conn.Read(buf[:]); err != nil {
			st.log.Debug("stream closed", "err", err)
			return
		}
	}
}

// close ends the stream and waits until no writer uses the connection.
func (st *sseStream) close() {
	st.mu.Lock()
	if st.keepAlive != nil {
		st.keepAlive.Stop()
	}
	st.mu.Unlock()
	st.stop()
	st.closeRaw()
	st.writers.Wait()
}
