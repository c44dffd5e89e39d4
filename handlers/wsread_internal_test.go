package handlers

import (
	"bytes"
	"errors"
	"testing"
	"unicode/utf8"
)

// Text checked as it arrives, in any split into fragments, is accepted
// exactly when the whole message is valid UTF-8.
func TestCheckTextAgreesWithUTF8Valid(t *testing.T) {
	samples := []string{
		"", "plain", "café", "€ and 😀", "\u2028", "\U0010FFFF", "a\x00b",
		"\xff", "\xc3", "caf\xc3", "\xe2\x82", "\xf0\x9f\x98", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
		"ok\xffok", "\x80", "é\x80", "\xf8\x88\x80\x80\x80", "😀\xf0\x9f",
	}
	check := func(pieces ...string) bool {
		fr := &frameReader{op: opText}
		for i, p := range pieces {
			fr.msg = append(fr.msg, p...)
			if fr.checkText(i == len(pieces)-1) != nil {
				return false
			}
		}
		return true
	}
	for _, s := range samples {
		want := utf8.ValidString(s)
		for i := 0; i <= len(s); i++ {
			for j := i; j <= len(s); j++ {
				if got := check(s[:i], s[i:j], s[j:]); got != want {
					t.Errorf("%q split at %d, %d: accepted %v, want %v", s, i, j, got, want)
				}
			}
		}
	}
}

// A fragment that ends in bytes no valid character starts with fails at
// once, without waiting for the message's end.
func TestCheckTextFailsFast(t *testing.T) {
	for _, prefix := range []string{"\xff", "ok\xc0", "\xed\xa0", "\xf4\x90", "\x80"} {
		fr := &frameReader{op: opText, msg: []byte(prefix)}
		if fr.checkText(false) == nil {
			t.Errorf("%q: accepted as the start of a message", prefix)
		}
	}
	for _, prefix := range []string{"\xc3", "\xe2\x82", "\xf0\x9f\x98", "ok\xf4\x8f"} {
		fr := &frameReader{op: opText, msg: []byte(prefix)}
		if fr.checkText(false) != nil {
			t.Errorf("%q: refused, but a valid character can follow", prefix)
		}
	}
}

func TestUnmask(t *testing.T) {
	key := [4]byte{0x12, 0x34, 0x56, 0x78}
	data := bytes.Repeat([]byte("the quick brown fox "), 3)
	for pos := range 4 {
		for n := range len(data) {
			got := bytes.Clone(data[:n])
			unmask(got, key, pos)
			for i := range got {
				if got[i] != data[i]^key[(pos+i)%4] {
					t.Fatalf("pos %d, length %d: byte %d is %#x", pos, n, i, got[i])
				}
			}
		}
	}
}

// Whatever bytes a client sends, the reader never panics, and what it
// returns is a whole message within the limit, valid UTF-8 if text, or an
// error that fails the connection with a code it may send.
func FuzzFrameReader(f *testing.F) {
	mask := func(b0 byte, payload string) []byte {
		key := [4]byte{1, 2, 3, 4}
		out := []byte{b0, 0x80 | byte(len(payload))}
		out = append(out, key[:]...)
		for i := range len(payload) {
			out = append(out, payload[i]^key[i%4])
		}
		return out
	}
	f.Add(mask(0x81, `{"message":"hi"}`))
	f.Add(append(mask(0x01, "caf\xc3"), mask(0x80, "\xa9")...))
	f.Add(append(mask(0x01, "x"), append(mask(0x89, "ping"), mask(0x80, "y")...)...))
	f.Add(mask(0x88, "\x03\xe8bye"))
	f.Add(mask(0x88, "\x03"))
	f.Add([]byte{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4})
	f.Add(mask(0xc1, "rsv"))
	f.Fuzz(func(t *testing.T, data []byte) {
		const limit = 64
		fr := newFrameReader(bytes.NewReader(data), limit, func([]byte) {}, func() {})
		for {
			op, msg, err := fr.next()
			if err != nil {
				var failed *wsFailure
				var closed *peerClose
				switch {
				case errors.As(err, &failed):
					if failed.code != 1002 && failed.code != 1007 && failed.code != 1009 {
						t.Fatalf("failure with close %d", failed.code)
					}
				case errors.As(err, &closed):
					if !validCloseCode(closed.code) && closed.code != 1005 {
						t.Fatalf("echoing close %d", closed.code)
					}
				}
				return
			}
			if len(msg) > limit || op != opText && op != opBinary || op == opText && !utf8.Valid(msg) {
				t.Fatalf("message op %d of %d bytes: %q", op, len(msg), msg)
			}
		}
	})
}
