package handlers

import (
	"net"
	"time"
)

// sseStream is one SSE connection in a room: a feed framed as events. As
// with a WebSocket session, the handler's goroutine reads the connection
// (only to see it close: a client sends nothing on an event stream) and
// its writer (writer.go) writes it, through sse. The writer reads the room
// only as fast as the client takes what it writes (each write blocks,
// within WriteWait), so a slow reader costs a batch, never a queue, and
// catches up from Redis through its cursor.
type sseStream struct {
	writer                // the feed and its one writer
	conn    net.Conn      // fasthttp's hijacked connection: hands over bytes it had buffered
	sse     sseWire       // the writer's transport
	expires int64         // when the token runs out (Unix ns); 0: no token
	retry   time.Duration // the retry: it tells EventSource
}

func (st *sseStream) dialect() int { return dialectSSE }

// startKeepAlive sends a comment every period; the writer sends it.
func (st *sseStream) startKeepAlive(period time.Duration) { st.startBeat(period, st.tick) }

// tick asks for a keep-alive comment, or ends the stream when its token
// has run out (checked here, as a WebSocket's is on its pings).
func (st *sseStream) tick() {
	if st.expires != 0 && time.Now().UnixNano() >= st.expires {
		st.log.Debug("token expired; ending the stream")
		st.end(encode(errorFrame{Type: kindError, Code: errTokenExpired.code, Message: "the token has expired; reconnect with a fresh one"}))
		return
	}
	st.askPing()
}

// end asks the writer to end the stream, after frame (nil: none).
func (st *sseStream) end(frame []byte) { st.closeWith(nil, frame) }

// goAway ends the stream for a shutdown: EventSource reconnects after its
// retry delay, to another instance or this one restarted. A writer held
// up by a client that reads nothing is cut off after closeGrace.
func (st *sseStream) goAway() {
	st.end(nil)
	time.AfterFunc(closeGrace, st.hangUp)
}

// waitClosed reads, and drops, what the client sends until the
// connection ends: the client closed it, or the writer did (hangUp).
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
	st.stopTimers()
	st.stop()
	st.hangUp()
	st.writers.Wait()
}
