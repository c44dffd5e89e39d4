package handlers

// The framing of Server-Sent Events (the HTML standard's text/event-stream):
// each frame is one event, "field: value" lines ending in a blank line.

import (
	"strconv"

	"github.com/gofiber/fiber/v2"

	"github.com/xroom/xroom/streams"
)

// sseWire is the transport of SSE streams: the same gathering and writing
// as a WebSocket's wire (one write system call per pass, a deadline on
// each), with events instead of frames. Frames are JSON, which never holds
// a raw line break, so each takes one data line.
type sseWire struct{ wire }

// entry adds a message as an event whose id is its stream ID, so that an
// EventSource that reconnects sends it back as Last-Event-ID.
func (w *sseWire) entry(e *streams.Entry) error {
	if w.closed {
		return nil
	}
	payload := wsPayload(e.Frame)
	if err := w.fit(len(payload) + 64); err != nil {
		return err
	}
	b := append(*w.buf, "id: "...)
	b = e.ID.AppendTo(b)
	b = append(b, "\nevent: message\ndata: "...)
	b = append(b, payload...)
	*w.buf = append(b, "\n\n"...)
	w.frames++
	return nil
}

// ready adds the ready event with last_id as its id: the stream position
// reached, where a reconnect resumes (it may be newer than the last
// message: entries without one, or nothing after since).
func (w *sseWire) ready(last streams.ID, payload []byte) error {
	if w.closed {
		return nil
	}
	if err := w.fit(len(payload) + 64); err != nil {
		return err
	}
	b := append(*w.buf, "id: "...)
	b = last.AppendTo(b)
	*w.buf = b
	return w.appendEvent(kindReady, payload)
}

// event adds a frame as an event of its type, without an id: an
// EventSource keeps the last id it had.
func (w *sseWire) event(kind string, payload []byte) error {
	if w.closed {
		return nil
	}
	if err := w.fit(len(payload) + len(kind) + 16); err != nil {
		return err
	}
	return w.appendEvent(kind, payload)
}

func (w *sseWire) appendEvent(kind string, payload []byte) error {
	b := *w.buf
	if len(b) > 0 && b[len(b)-1] != '\n' {
		b = append(b, '\n') // after an id line
	}
	b = append(b, "event: "...)
	b = append(b, kind...)
	b = append(b, "\ndata: "...)
	b = append(b, payload...)
	*w.buf = append(b, "\n\n"...)
	return nil
}

// comment adds a comment line, which EventSource ignores: it keeps
// proxies from taking a quiet stream for a dead one.
func (w *sseWire) comment(text string) error {
	if w.closed {
		return nil
	}
	if err := w.fit(len(text) + 4); err != nil {
		return err
	}
	b := append(*w.buf, ": "...)
	b = append(b, text...)
	*w.buf = append(b, "\n\n"...)
	return nil
}

// retry tells EventSource how long to wait before reconnecting.
func (w *sseWire) retry(ms int64) error {
	if err := w.fit(32); err != nil {
		return err
	}
	b := append(*w.buf, "retry: "...)
	b = strconv.AppendInt(b, ms, 10)
	*w.buf = append(b, "\n\n"...)
	return nil
}

// header adds the response's status line and headers, gathered in h.
func (w *sseWire) header(h []byte) error {
	if err := w.fit(len(h)); err != nil {
		return err
	}
	*w.buf = append(*w.buf, h...)
	return nil
}

// end stops the stream: nothing is added after what is gathered.
func (w *sseWire) end() { w.closed = true }

// control is a writer's ping, pong and close on an event stream: a
// keep-alive comment, nothing (a client sends no pings), and the end.
func (w *sseWire) control(op byte, _ []byte) error {
	switch op {
	case opPing:
		return w.comment("keep-alive")
	case opClose:
		w.end()
	}
	return nil
}

// tally counts the events that carried messages; the write metrics are
// the WebSocket's alone (xroom_websocket_writes_total).
func (w *sseWire) tally() (frames, writes, failed int) {
	frames = w.frames
	w.frames, w.writes, w.failed = 0, 0, 0
	return frames, 0, 0
}

// hangsUp: an event stream has nothing after its end; the writer closes
// the connection, which ends the response.
func (w *sseWire) hangsUp() bool { return true }

// wsPayload is the payload of a server text frame (unmasked, as the hub
// encodes entries), without its 2, 4 or 10 header bytes.
func wsPayload(f []byte) []byte {
	switch n := f[1] & 0x7f; {
	case n < 126:
		return f[2:]
	case n == 126:
		return f[4:]
	default:
		return f[10:]
	}
}

// sseResponseHeader is the head of an SSE response: 200, the headers set
// on the request's response (the security headers), the event stream's
// own, and Connection: close, the body running until the connection
// closes (HTTP/1.1 allows it; a stream has no length, and chunking would
// only add bytes).
func sseResponseHeader(c *fiber.Ctx) []byte {
	h := &c.Response().Header
	h.SetContentType("text/event-stream")
	h.Set(fiber.HeaderCacheControl, "no-cache")
	// nginx buffers proxied answers unless told not to.
	h.Set("X-Accel-Buffering", "no")
	b := []byte("HTTP/1.1 200 OK\r\n")
	h.VisitAll(func(k, v []byte) {
		switch string(k) {
		case fiber.HeaderContentLength, fiber.HeaderTransferEncoding, fiber.HeaderConnection:
			return
		}
		b = append(append(append(append(b, k...), ": "...), v...), "\r\n"...)
	})
	return append(b, "Connection: close\r\n\r\n"...)
}
