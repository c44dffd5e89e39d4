package handlers

import (
	"encoding/binary"
	"io"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/fasthttp/websocket"
)

// Client frames are read here, not by the WebSocket library, which still
// does the handshake. Its reader (fasthttp/websocket, a gorilla fork)
// cannot be made to follow RFC 6455 from outside, because it decides
// inside advanceFrame, before any hook runs: it writes a close frame of
// its own on a protocol error (then ours followed: two), refuses close
// code 1014, takes a close frame with a 1-byte payload for one without a
// code, reports a 64-bit length with its top bit set as a read limit, and
// never checks text for UTF-8. Patching it would mean a fork to keep up;
// another library would mean another handshake under Fiber. What a server
// must read is small: masked frames, fragments, control frames between
// them, and the checks below.

// Opcodes the server reads besides those it writes (wire.go).
const (
	opContinuation = 0x0
	opBinary       = 0x2
	rsvBits        = 0x70 // RSV1-3: no extension is ever negotiated
	maskBit        = 0x80
	// maxControlPayload is RFC 6455's limit on a control frame's payload.
	maxControlPayload = 125
	// directRead is the most a message grows by in one read: a header
	// that announces a large frame costs memory only as its bytes arrive.
	directRead = 16 << 10
)

// wsFailure is a client frame that breaks RFC 6455 or a limit: the
// connection fails with close code, after one close frame that says why.
type wsFailure struct {
	why  failReason
	code int
	text string
}

func (e *wsFailure) Error() string {
	return "websocket: " + e.text + " (close " + strconv.Itoa(e.code) + ")"
}

func protocolError(why failReason, text string) *wsFailure {
	return &wsFailure{why: why, code: websocket.CloseProtocolError, text: text}
}

// peerClose is the client's valid close frame; its code is echoed.
type peerClose struct{ code int }

func (p *peerClose) Error() string {
	return "websocket: closed by the client (" + strconv.Itoa(p.code) + ")"
}

// frameHeader is one frame's first 2 to 14 bytes.
type frameHeader struct {
	fin bool
	op  byte
	n   uint64 // payload length
	key [4]byte
}

// frameReader reads a client's frames from the hijacked connection (which
// hands over any bytes the HTTP server had buffered). It is owned by the
// session's read loop.
type frameReader struct {
	conn  io.Reader
	buf   []byte // buf[r:w] is read and not yet parsed
	r, w  int
	limit int // most bytes in one message, over all its fragments
	// The message being assembled: op is 0 between messages.
	op    byte
	msg   []byte
	valid int // msg[:valid] is checked UTF-8 (text messages)
	// ping gets each ping's payload (only valid during the call); pong is
	// told of each pong.
	ping func(payload []byte)
	pong func()
}

func newFrameReader(conn io.Reader, limit int, ping func([]byte), pong func()) *frameReader {
	return &frameReader{conn: conn, buf: make([]byte, readBuffer), limit: limit, ping: ping, pong: pong}
}

// next returns the next complete message, answering control frames on the
// way. Its error is a *wsFailure, a *peerClose, or the connection's.
func (fr *frameReader) next() (op byte, msg []byte, err error) {
	for {
		h, err := fr.header()
		if err != nil {
			return 0, nil, err
		}
		if h.op >= opClose {
			if err := fr.control(h); err != nil {
				return 0, nil, err
			}
			continue
		}
		switch {
		case h.op == opContinuation && fr.op == 0:
			return 0, nil, protocolError(failStrayContinuation, "continuation frame without a message to continue")
		case h.op != opContinuation && fr.op != 0:
			return 0, nil, protocolError(failDataInFragments, "new data frame inside a fragmented message")
		case h.op != opContinuation:
			fr.op, fr.msg, fr.valid = h.op, nil, 0
		}
		if h.n > uint64(fr.limit-len(fr.msg)) {
			return 0, nil, &wsFailure{why: failTooLarge, code: websocket.CloseMessageTooBig, text: "message over " + strconv.Itoa(fr.limit) + " bytes"}
		}
		if err := fr.payload(h); err != nil {
			return 0, nil, err
		}
		if h.fin {
			op, msg := fr.op, fr.msg
			fr.op, fr.msg = 0, nil
			if msg == nil {
				msg = []byte{}
			}
			return op, msg, nil
		}
	}
}

// header reads and checks a frame header. What the first two bytes break
// fails the connection before the rest is read.
func (fr *frameReader) header() (h frameHeader, err error) {
	if err := fr.fill(2); err != nil {
		return h, err
	}
	b0, b1 := fr.buf[fr.r], fr.buf[fr.r+1]
	h.fin, h.op = b0&finBit != 0, b0&0x0f
	control := h.op >= opClose
	n := int(b1 &^ maskBit)
	switch {
	case b0&rsvBits != 0:
		return h, protocolError(failRSV, "reserved bits set without an extension")
	case h.op > opBinary && h.op < opClose || h.op > opPong:
		return h, protocolError(failOpcode, "reserved opcode "+strconv.Itoa(int(h.op)))
	case b1&maskBit == 0:
		return h, protocolError(failUnmasked, "client frame not masked")
	case control && !h.fin:
		return h, protocolError(failControlFragmented, "fragmented control frame")
	case control && n > maxControlPayload:
		return h, protocolError(failControlTooLong, "control frame over 125 bytes")
	}
	ext := 0
	switch n {
	case 126:
		ext = 2
	case 127:
		ext = 8
	}
	if err := fr.fill(2 + ext + 4); err != nil {
		return h, err
	}
	p := fr.buf[fr.r+2 : fr.r+2+ext+4]
	switch ext {
	case 0:
		h.n = uint64(n)
	case 2:
		h.n = uint64(binary.BigEndian.Uint16(p))
	case 8:
		if h.n = binary.BigEndian.Uint64(p); h.n>>63 != 0 {
			return h, protocolError(failLength, "64-bit payload length with its top bit set")
		}
	}
	copy(h.key[:], p[ext:])
	fr.r += 2 + ext + 4
	return h, nil
}

// fill reads until at least n (at most len(buf)) bytes are buffered.
func (fr *frameReader) fill(n int) error {
	if fr.w-fr.r >= n {
		return nil
	}
	if fr.r > 0 {
		fr.w = copy(fr.buf, fr.buf[fr.r:fr.w])
		fr.r = 0
	}
	for fr.w < n {
		m, err := fr.conn.Read(fr.buf[fr.w:])
		fr.w += m
		if err != nil && fr.w < n {
			return err
		}
	}
	return nil
}

// payload appends a data frame's payload to the message, unmasked. Text
// is checked as it arrives, so invalid UTF-8 fails the connection without
// waiting for the rest of the message.
func (fr *frameReader) payload(h frameHeader) error {
	need := int(h.n) // at most limit: checked by next
	for pos := 0; need > 0; {
		start := len(fr.msg)
		if fr.r == fr.w && need >= len(fr.buf) {
			// A large remainder goes straight into the message, which
			// grows with what arrives, not with what a header announces.
			chunk := min(need, directRead)
			fr.msg = slices.Grow(fr.msg, chunk)
			m, err := fr.conn.Read(fr.msg[start : start+chunk])
			if m == 0 && err != nil {
				return err
			}
			fr.msg = fr.msg[:start+m]
		} else {
			if err := fr.fill(1); err != nil {
				return err
			}
			m := min(need, fr.w-fr.r)
			fr.msg = append(fr.msg, fr.buf[fr.r:fr.r+m]...)
			fr.r += m
		}
		got := fr.msg[start:]
		unmask(got, h.key, pos)
		pos += len(got)
		need -= len(got)
		if err := fr.checkText(false); err != nil {
			return err
		}
	}
	if h.fin {
		return fr.checkText(true)
	}
	return nil
}

// checkText checks the unchecked part of a text message. Unless final, a
// sequence cut by the end of what has arrived waits for the next bytes; a
// prefix no valid sequence can start with fails at once.
func (fr *frameReader) checkText(final bool) error {
	if fr.op != opText {
		return nil
	}
	end := len(fr.msg)
	if !final {
		for i := end - 1; i >= fr.valid && i >= end-utf8.UTFMax+1; i-- {
			if fr.msg[i]&0xC0 != 0x80 { // the last sequence starts here
				if !utf8.FullRune(fr.msg[i:end]) {
					end = i
				}
				break
			}
		}
	}
	if !utf8.Valid(fr.msg[fr.valid:end]) {
		return &wsFailure{why: failUTF8, code: websocket.CloseInvalidFramePayloadData, text: "text message is not valid UTF-8"}
	}
	fr.valid = end
	return nil
}

// control reads a control frame's payload (at most 125 bytes, so it fits
// the buffer) and acts on it.
func (fr *frameReader) control(h frameHeader) error {
	n := int(h.n)
	if err := fr.fill(n); err != nil {
		return err
	}
	p := fr.buf[fr.r : fr.r+n]
	fr.r += n
	unmask(p, h.key, 0)
	switch h.op {
	case opPing:
		fr.ping(p)
	case opPong:
		fr.pong()
	case opClose:
		return closeFrame(p)
	}
	return nil
}

// closeFrame checks the payload of the client's close frame: none, or a
// code (2 bytes) a peer may send and a UTF-8 reason.
func closeFrame(p []byte) error {
	switch {
	case len(p) == 0:
		return &peerClose{code: websocket.CloseNoStatusReceived} // answered with an empty close
	case len(p) == 1:
		return protocolError(failClosePayload, "close frame with a 1-byte payload")
	}
	code := int(binary.BigEndian.Uint16(p))
	if !validCloseCode(code) {
		return protocolError(failCloseCode, "invalid close code "+strconv.Itoa(code))
	}
	if !utf8.Valid(p[2:]) {
		return &wsFailure{why: failCloseUTF8, code: websocket.CloseInvalidFramePayloadData, text: "close reason is not valid UTF-8"}
	}
	return &peerClose{code: code}
}

// validCloseCode tells the codes a peer may send: those RFC 6455 (7.4.1)
// and IANA's registry define for the wire, 1000-1003 and 1007-1014, and
// the ranges for libraries and applications, 3000-4999. 1004 is reserved;
// 1005, 1006 and 1015 must never be sent; the rest is unassigned.
func validCloseCode(code int) bool {
	return code >= 1000 && code <= 1003 || code >= 1007 && code <= 1014 || code >= 3000 && code <= 4999
}

// unmask XORs b with the masking key, b starting pos bytes into the
// payload; eight bytes at a time, for the long frames.
func unmask(b []byte, key [4]byte, pos int) {
	var k [8]byte
	for i := range k {
		k[i] = key[(pos+i)&3]
	}
	k8 := binary.LittleEndian.Uint64(k[:])
	for len(b) >= 8 {
		binary.LittleEndian.PutUint64(b, binary.LittleEndian.Uint64(b)^k8)
		b = b[8:]
	}
	for i := range b {
		b[i] ^= k[i]
	}
}
