package handlers

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/xroom/xroom/streams"
)

// sameFrame reports whether two decoded client frames hold the same fields.
func sameFrame(a, b clientFrame) bool {
	same := func(x, y *string) bool { return x == nil && y == nil || x != nil && y != nil && *x == *y }
	return same(a.Type, b.Type) && same(a.Message, b.Message) && same(a.ClientID, b.ClientID)
}

// Fuzz targets (seed corpora in testdata/fuzz/; CI runs each briefly):
//
//	go test -run '^$' -fuzz '^FuzzDecodeFrame$' -fuzztime 10s ./handlers

const fuzzMaxBytes = 64

var refusalCodes = map[string]bool{
	codeBadJSON: true, codeBadUTF8: true, codeBadFrame: true, codeEmpty: true,
	codeTooLarge: true, codeUnknownType: true, codeBadClientID: true,
}

// decodeFrame takes any bytes: it accepts a message it can store as is
// (non-empty valid UTF-8 within the limit, a valid or no client_id), or
// refuses with a documented code whose error frame is valid JSON. What it
// accepts survives being encoded and decoded again.
func FuzzDecodeFrame(f *testing.F) {
	for _, s := range []string{
		`{"type":"message","message":"hi","client_id":"c-1"}`, `{"message":"hi"}`, `{"message":""}`,
		`{"type":"typing"}`, `{"message":5}`, `[]`, `null`, `"x"`, `{`, "\xff", `{"message":"\u0000"}`,
		`{"message":"hi","client_id":"a:b"}`, `{"message":"hi","message":"twice"}`, `{"Message":"case"}`,
		`{"message":"\ud800"}`, strings.Repeat("[", 1000), `{"message":"hi"} trailing`, `{"message":"` + strings.Repeat("x", 65) + `"}`,
		" {\t\"message\" :\r\n\"hé\" , \"type\":\"message\"} ", `{}`, `{"message":"a\"b"}`, `{"message":"hi",}`, `{"message":"hi"}}`,
		`{"client_id":"c","client_id":"d","message":"x"}`, `{"type":"read","id":"1-0"}`, `{"message":null}`, "{\"message\":\"a\tb\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// The fast path decides only what encoding/json decides the same.
		if fast, ok := scanFrame(data); ok && utf8.Valid(data) {
			var slow clientFrame
			if err := json.Unmarshal(data, &slow); err != nil || !sameFrame(fast, slow) {
				t.Fatalf("scanFrame(%q) = %+v, encoding/json %+v (%v)", data, fast, slow, err)
			}
		}
		m, bad := decodeFrame(data, fuzzMaxBytes)
		if bad == typingFrame || bad == readFrame {
			return // {"type":"typing"} or "read": passed on, neither stored nor refused
		}
		if bad != nil {
			if !refusalCodes[bad.code] || bad.message == "" {
				t.Fatalf("refusal %+v", bad)
			}
			if bad.clientID != "" && !ValidClientID(bad.clientID) {
				t.Fatalf("the error echoes an invalid client_id %q", bad.clientID)
			}
			frame := encode(errorFrame{Type: "error", Code: bad.code, Message: bad.message, ClientID: bad.clientID})
			if !json.Valid(frame) || !utf8.Valid(frame) {
				t.Fatalf("error frame %q is not valid JSON", frame)
			}
			return
		}
		if m.Text == "" || len(m.Text) > fuzzMaxBytes || !utf8.ValidString(m.Text) {
			t.Fatalf("accepted message %q", m.Text)
		}
		if m.ClientID != "" && !ValidClientID(m.ClientID) {
			t.Fatalf("accepted client_id %q", m.ClientID)
		}
		if m.User != "" {
			t.Fatalf("the frame set the user to %q; it comes from the connection", m.User)
		}
		again := map[string]string{"type": "message", "message": m.Text}
		if m.ClientID != "" {
			again["client_id"] = m.ClientID
		}
		b, _ := json.Marshal(again)
		m2, bad := decodeFrame(b, fuzzMaxBytes)
		if bad != nil || m2 != m {
			t.Fatalf("%q decoded to %+v, re-encoded as %s to %+v (%v)", data, m, b, m2, bad)
		}
	})
}

// The name rules: what they accept is safe to put in keys, URLs and logs.
func FuzzNames(f *testing.F) {
	for _, s := range []string{
		"lobby", "a.b-c_d", "..", "../etc", "..%2f", "%2e%2e", "a/b", "a:b", "{x}", "", " ", "a b",
		strings.Repeat("r", 101), "ana", "Zoë", "a\x00b", "a\nb", "\u202e", "\xff", "😀", strings.Repeat("é", 33),
	} {
		f.Add(s)
	}
	roomChars := func(s string) bool {
		for i := 0; i < len(s); i++ {
			c := s[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
				return false
			}
		}
		return true
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidRoom(s) {
			if len(s) < 1 || len(s) > 100 || !roomChars(s) {
				t.Fatalf("ValidRoom(%q)", s)
			}
			// The room is the key's Cluster hash tag and nothing else.
			k := streams.Keys{Prefix: "chat"}.Messages(s)
			if strings.Count(k, "{") != 1 || strings.Count(k, "}") != 1 || k != "chat:{"+s+"}:messages" {
				t.Fatalf("room %q makes key %q", s, k)
			}
		} else if s != "" && len(s) <= 100 && roomChars(s) {
			t.Fatalf("ValidRoom refused %q", s)
		}
		if ValidClientID(s) {
			if len(s) < 1 || len(s) > 64 || !roomChars(s) || strings.Contains(s, ":") {
				t.Fatalf("ValidClientID(%q)", s)
			}
		}
		if ValidUser(s) {
			if !utf8.ValidString(s) || utf8.RuneCountInString(s) > maxUserRunes || s == "" {
				t.Fatalf("ValidUser(%q)", s)
			}
			for _, r := range s {
				if unicode.IsControl(r) || r == utf8.RuneError || !unicode.IsPrint(r) {
					t.Fatalf("ValidUser(%q) lets %U through", s, r)
				}
			}
		}
		if validEpoch(s) {
			for i := 0; i < len(s); i++ {
				if s[i] <= ' ' || s[i] > '~' {
					t.Fatalf("validEpoch(%q)", s)
				}
			}
		}
	})
}

// Stream entries as anything could have written them (redis-cli, another
// program: binary, invalid UTF-8, markup, huge IDs) always encode to one
// valid JSON message frame that carries their content: exactly when it is
// valid UTF-8, with U+FFFD for the invalid bytes otherwise.
func FuzzEncodeMessage(f *testing.F) {
	f.Add("lobby", "ana", "hi", "c-1", uint64(1732380000000), uint64(0))
	f.Add("lobby", "", "", "", uint64(0), uint64(0))
	f.Add("x", "\xff\xfe", "a\x00b\"</script>\u2028", "a:b", uint64(18446744073709551615), uint64(18446744073709551615))
	f.Add("r", "<img src=x onerror=alert(1)>", "\\u0000", "", uint64(1), uint64(2))
	f.Fuzz(func(t *testing.T, room, user, message, clientID string, ms, seq uint64) {
		e := &streams.Entry{ID: streams.ID{Ms: ms, Seq: seq}, User: user, Message: message, ClientID: clientID, HasMessage: true}
		op, frame := parseFrame(t, EncodeMessage(room, e)) // a whole WebSocket text frame
		if op != opText {
			t.Fatalf("opcode %d, want a text frame", op)
		}
		if !json.Valid(frame) || !utf8.Valid(frame) {
			t.Fatalf("frame %q is not valid JSON", frame)
		}
		var got struct {
			Type, ID, Room, User, Message string
			ClientID                      *string `json:"client_id"`
			TS                            json.Number
		}
		if err := json.Unmarshal(frame, &got); err != nil {
			t.Fatal(err)
		}
		same := func(got, stored string) bool {
			if utf8.ValidString(stored) {
				return got == stored
			}
			return utf8.ValidString(got) && strings.ContainsRune(got, utf8.RuneError)
		}
		if got.Type != "message" || got.ID != e.ID.String() || !same(got.Room, room) || !same(got.User, user) || !same(got.Message, message) {
			t.Fatalf("entry %+v encoded as %s", e, frame)
		}
		if (clientID == "") != (got.ClientID == nil) || (got.ClientID != nil && !same(*got.ClientID, clientID)) {
			t.Fatalf("client_id %q encoded as %s", clientID, frame)
		}
		if ts, err := got.TS.Int64(); err != nil || (ms <= 1<<53 && ts != int64(ms)) {
			t.Fatalf("ts %s for ms %d", got.TS, ms)
		}
	})
}

// The ack is encoded by hand (encodeAck): it must be what json.Marshal
// makes of ackFrame, for any client_id and ID.
func FuzzEncodeAck(f *testing.F) {
	f.Add("c-1", uint64(1732380000000), uint64(0), false)
	f.Add("", uint64(0), uint64(0), true)
	f.Add("\xff<&>\"\\\u2028\x00é", uint64(18446744073709551615), uint64(18446744073709551615), true)
	f.Fuzz(func(t *testing.T, clientID string, ms, seq uint64, dup bool) {
		id := streams.ID{Ms: ms, Seq: seq}
		want, _ := json.Marshal(ackFrame{Type: "ack", ClientID: clientID, ID: id.String(), Duplicate: dup})
		if got := encodeAck(clientID, id, dup); string(got) != string(want) {
			t.Fatalf("encodeAck(%q, %s, %v) = %s, want %s", clientID, id, dup, got, want)
		}
	})
}
