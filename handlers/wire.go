package handlers

import (
	"encoding/binary"
	"net"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/xroom/xroom/streams"
)

// WebSocket opcodes of the frames the server writes (RFC 6455 5.2).
const (
	opText  = 0x1
	opClose = 0x8
	opPing  = 0x9
	opPong  = 0xA
	finBit  = 0x80
)

const (
	// flushAt is how many bytes a writer gathers before one write system
	// call: a pass's frames go out together, and a long replay in chunks
	// that a client's socket buffer takes in one go.
	flushAt = 32 << 10
	// maxPooledBuffer: buffers grown past this by a huge frame are dropped
	// rather than kept in the pool.
	maxPooledBuffer = 256 << 10
)

// appendFrameHeader appends the header of an unmasked, final server frame
// with a payload of n bytes.
func appendFrameHeader(b []byte, op byte, n int) []byte {
	switch {
	case n < 126:
		return append(b, finBit|op, byte(n))
	case n <= 0xffff:
		return append(b, finBit|op, 126, byte(n>>8), byte(n))
	default:
		b = append(b, finBit|op, 127)
		return binary.BigEndian.AppendUint64(b, uint64(n))
	}
}

// textFrame returns payload as a complete WebSocket text frame.
func textFrame(payload []byte) []byte {
	b := make([]byte, 0, len(payload)+10)
	return append(appendFrameHeader(b, opText, len(payload)), payload...)
}

// EncodeMessage is the streams.Encoder of message frames: the hub calls it
// once per entry, and every connection copies the result to its socket as
// is. It returns a complete WebSocket text frame (header and JSON payload),
// the same JSON as encoding/json gives for messageFrame.
func EncodeMessage(room string, e *streams.Entry) []byte {
	// Header room: the payload length is known only at the end, so reserve
	// the longest header a message can need and slide it into place.
	const reserve = 4 // 2 bytes + 2 bytes of 16-bit length
	size := reserve + 96 + len(room) + len(e.User) + len(e.Message) + len(e.ClientID)
	b := make([]byte, reserve, size+size/8)
	b = append(b, `{"type":"message","id":"`...)
	b = e.ID.AppendTo(b)
	b = append(b, `","room":`...)
	b = appendJSONString(b, room)
	b = append(b, `,"user":`...)
	b = appendJSONString(b, e.User)
	b = append(b, `,"message":`...)
	b = appendJSONString(b, e.Message)
	b = append(b, `,"ts":`...)
	b = strconv.AppendInt(b, int64(e.ID.Ms), 10)
	if e.ClientID != "" {
		b = append(b, `,"client_id":`...)
		b = appendJSONString(b, e.ClientID)
	}
	b = append(b, '}')
	n := len(b) - reserve
	if n > 0xffff {
		return textFrame(b[reserve:])
	}
	hdr := appendFrameHeader(make([]byte, 0, reserve), opText, n)
	start := reserve - len(hdr)
	copy(b[start:], hdr)
	return b[start:]
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string exactly as encoding/json
// does: HTML-sensitive characters, U+2028 and U+2029 escaped, invalid
// UTF-8 replaced by U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// entryPool holds the slices a writer takes entries from the hub in.
var entryPool = sync.Pool{New: func() any { b := make([]*streams.Entry, 0, batchSize); return &b }}

// bufferPool holds the buffers writers gather frames in. A writer holds one
// only while it runs, so an idle connection holds none.
var bufferPool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// wire is the one path by which bytes reach a client: data frames, pings,
// pongs and close frames are all appended here by the session's single
// writer, and written to the TCP connection in as few system calls as
// possible. Server frames are unmasked, so a frame encoded once by the hub
// is copied as is. The WebSocket library writes nothing after the
// handshake (client frames are read by wsread.go), so the one close frame
// of a connection is the one written here.
type wire struct {
	conn        net.Conn
	wait        time.Duration // bounds one write (Config.WriteWait; 0: writeWait)
	buf         *[]byte
	deadlineSet time.Time // when the write deadline was last pushed forward
	closed      bool      // a close frame was sent: nothing may follow it
	frames      int       // message frames gathered, not yet counted in metrics
	writes      int       // write system calls made, not yet counted in metrics
	failed      int       // writes that failed, not yet counted in metrics
}

// frame appends a complete frame, writing what is gathered when full.
func (w *wire) frame(f []byte) error {
	if w.buf == nil {
		w.buf = bufferPool.Get().(*[]byte)
	}
	if len(*w.buf)+len(f) > flushAt && len(*w.buf) > 0 {
		if err := w.flush(); err != nil {
			return err
		}
	}
	*w.buf = append(*w.buf, f...)
	return nil
}

// fit makes room for n more bytes: a buffer from the pool, and what is
// gathered written first when n more would pass flushAt.
func (w *wire) fit(n int) error {
	if w.buf == nil {
		w.buf = bufferPool.Get().(*[]byte)
	}
	if len(*w.buf)+n > flushAt && len(*w.buf) > 0 {
		return w.flush()
	}
	return nil
}

// data appends a complete text frame that carries a chat entry.
func (w *wire) data(f []byte) error {
	if w.closed {
		return nil
	}
	w.frames++
	return w.frame(f)
}

// text appends payload (a reply: ack, error, ready, gap) as a text frame.
func (w *wire) text(payload []byte) error {
	if w.closed {
		return nil
	}
	if w.buf == nil {
		w.buf = bufferPool.Get().(*[]byte)
	}
	if len(*w.buf)+len(payload)+10 > flushAt && len(*w.buf) > 0 {
		if err := w.flush(); err != nil {
			return err
		}
	}
	*w.buf = append(appendFrameHeader(*w.buf, opText, len(payload)), payload...)
	return nil
}

// control appends a ping, pong or close frame (payload ≤ 125 bytes).
func (w *wire) control(op byte, payload []byte) error {
	if w.closed {
		return nil
	}
	if len(payload) > 125 {
		payload = payload[:125]
	}
	if w.buf == nil {
		w.buf = bufferPool.Get().(*[]byte)
	}
	*w.buf = append(appendFrameHeader(*w.buf, op, len(payload)), payload...)
	if op == opClose {
		w.closed = true
	}
	return nil
}

// flush writes what is gathered in one system call. The deadline bounds
// each write, not a whole pass: a client on a slow link that keeps reading
// is never cut off. Refreshing it costs a timer update, so it is done once
// a second (or a tenth of the wait) at most.
func (w *wire) flush() error {
	if w.buf == nil || len(*w.buf) == 0 {
		return nil
	}
	wait := w.wait
	if wait <= 0 {
		wait = writeWait
	}
	if now := time.Now(); now.Sub(w.deadlineSet) > min(time.Second, wait/10) {
		if err := w.conn.SetWriteDeadline(now.Add(wait)); err != nil {
			w.failed++
			return writeError{err}
		}
		w.deadlineSet = now
	}
	_, err := w.conn.Write(*w.buf)
	w.writes++
	*w.buf = (*w.buf)[:0]
	if err != nil {
		w.failed++
		return writeError{err}
	}
	return nil
}

// release returns the buffer to its pool; the writer calls it after each
// pass, so an idle connection holds none.
func (w *wire) release() {
	if w.buf == nil {
		return
	}
	if cap(*w.buf) <= maxPooledBuffer {
		*w.buf = (*w.buf)[:0]
		bufferPool.Put(w.buf)
	}
	w.buf = nil
}

// entry, ready, event, tally and hangsUp (with control, flush and release)
// make wire the transport of WebSocket sessions: the hub's frame as is,
// and text frames for the rest.
func (w *wire) entry(e *streams.Entry) error             { return w.data(e.Frame) }
func (w *wire) ready(_ streams.ID, payload []byte) error { return w.text(payload) }
func (w *wire) event(_ string, payload []byte) error     { return w.text(payload) }

func (w *wire) tally() (frames, writes, failed int) {
	frames, writes, failed = w.frames, w.writes, w.failed
	w.frames, w.writes, w.failed = 0, 0, 0
	return frames, writes, failed
}

// hangsUp: after its close frame a WebSocket waits for the client's reply.
func (w *wire) hangsUp() bool { return false }

// writeError is a failed write to the socket, as opposed to a failed Redis call.
type writeError struct{ error }

func (e writeError) Unwrap() error { return e.error }
