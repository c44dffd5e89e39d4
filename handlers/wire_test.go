package handlers

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"strings"
	"testing"

	"github.com/xroom/xroom/streams"
)

// parseFrame splits one unmasked server frame into opcode and payload.
func parseFrame(t testing.TB, f []byte) (byte, []byte) {
	t.Helper()
	if f[0]&finBit == 0 {
		t.Fatalf("frame %x is not final", f[:2])
	}
	n, off := int(f[1]&0x7f), 2
	switch n {
	case 126:
		n, off = int(binary.BigEndian.Uint16(f[2:4])), 4
	case 127:
		n, off = int(binary.BigEndian.Uint64(f[2:10])), 10
	}
	if f[1]&0x80 != 0 || len(f) != off+n {
		t.Fatalf("frame header %x: masked or length %d != %d", f[:off], n, len(f)-off)
	}
	return f[0] & 0x0f, f[off:]
}

// EncodeMessage gives a complete text frame whose payload is exactly what
// encoding/json makes of the message frame, for any content Redis may hold.
func TestEncodeMessageMatchesEncodingJSON(t *testing.T) {
	texts := []string{
		"", "hi", `quote " backslash \ slash /`, "<script>&amp;</script>", "tab\tnl\ncr\rbs\bff\f\x00\x1f\x7f",
		"héllo wörld ✓ 😀", "\u2028\u2029", "bad \xff\xfe utf8 \xe2\x82", strings.Repeat("x", 125),
		strings.Repeat("y", 200), strings.Repeat("é", 40000), strings.Repeat("z", 70000),
	}
	for _, text := range texts {
		for _, clientID := range []string{"", "c-17"} {
			e := &streams.Entry{ID: streams.ID{Ms: 1732380000000, Seq: 7}, User: "ü<" + text[:min(len(text), 5)], Message: text, ClientID: clientID, HasMessage: true}
			f := newMessageFrame("room.1", e)
			f.Type = "message"
			want, _ := json.Marshal(f)
			op, got := parseFrame(t, EncodeMessage("room.1", e))
			if op != opText || !bytes.Equal(got, want) {
				t.Fatalf("text %.40q: payload\n%.200s\nwant\n%.200s", text, got, want)
			}
		}
	}
}

func TestFrameHeaderLengths(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 127, 65535, 65536, 1 << 20} {
		payload := bytes.Repeat([]byte{'a'}, n)
		op, got := parseFrame(t, textFrame(payload))
		if op != opText || len(got) != n {
			t.Fatalf("n=%d: op %d, payload %d", n, op, len(got))
		}
	}
}

// The wire gathers frames and writes them in one call, splitting at flushAt.
func TestWireGathersFramesIntoFewWrites(t *testing.T) {
	var c countingConn
	w := wire{conn: &c}
	frame := textFrame(bytes.Repeat([]byte{'m'}, 200))
	for range 100 {
		if err := w.data(frame); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.control(opPing, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.flush(); err != nil {
		t.Fatal(err)
	}
	w.release()
	total := 100*len(frame) + 2
	if c.buf.Len() != total || c.writes != (total+flushAt-1)/flushAt {
		t.Fatalf("%d bytes in %d writes, want %d in %d", c.buf.Len(), c.writes, total, (total+flushAt-1)/flushAt)
	}
	if w.frames != 100 {
		t.Fatalf("frames = %d, want 100", w.frames)
	}
	// After a close frame nothing more is sent.
	_ = w.control(opClose, []byte{3, 232})
	_ = w.data(frame)
	_ = w.flush()
	if c.buf.Len() != total+4 {
		t.Fatalf("wrote %d bytes after close, want only the 4-byte close frame", c.buf.Len()-total)
	}
}
