package handlers_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/fasthttp/websocket"
)

// reply is a frame the server must send: its opcode, and its payload
// exactly or a piece of it.
type reply struct {
	op       byte
	payload  string
	contains string
}

func pongOf(p string) reply            { return reply{op: opPong, payload: p} }
func textWith(piece string) reply      { return reply{op: opText, contains: piece} }
func errorFrameWith(code string) reply { return textWith(`"code":"` + code + `"`) }

// conformance limits: MAX_MESSAGE_BYTES 100 makes a frame limit of 1624.
const (
	confMaxMessage = 100
	confFrameLimit = confMaxMessage*6 + 1024
)

// conformanceCase is one exchange in the style of the Autobahn testsuite:
// frames the client sends, the frames the server answers, then its one
// close frame with close (0: the connection stays open, and the test
// closes it with 1000, which must be echoed), and the end of the TCP
// connection.
type conformanceCase struct {
	name    string
	send    [][]byte
	replies []reply
	close   int
	echo    bool // the close frame holds the code alone (an echo, or empty for 1005)
}

func frames(fs ...[]byte) [][]byte { return fs }

func conformanceCases() []conformanceCase {
	text := func(s string) []byte { return clientFrame(fin|opText, []byte(s)) }
	msg := func(m string) string { return `{"message":"` + m + `"}` }
	ping125 := strings.Repeat("p", 125)
	var allBytes []byte
	for i := range 125 {
		allBytes = append(allBytes, byte(i*2))
	}
	cases := []conformanceCase{
		// Framing.
		{name: "text message is stored and delivered", send: frames(text(msg("hi"))), replies: []reply{textWith(`"message":"hi"`)}},
		{name: "empty text frame is bad JSON", send: frames(text("")), replies: []reply{errorFrameWith("bad_json")}},
		{name: "binary frame is refused, connection lives", send: frames(clientFrame(fin|opBinary, []byte{0, 1, 2})), replies: []reply{errorFrameWith("bad_frame")}},
		{name: "RSV1 on text", send: frames(clientFrame(fin|rsv1|opText, []byte(msg("x")))), close: 1002},
		{name: "RSV2 on text", send: frames(clientFrame(fin|rsv2|opText, []byte(msg("x")))), close: 1002},
		{name: "RSV3 on text", send: frames(clientFrame(fin|rsv3|opText, []byte(msg("x")))), close: 1002},
		{name: "RSV bits on ping", send: frames(clientFrame(fin|rsv1|rsv2|rsv3|opPing, []byte("x"))), close: 1002},
		{name: "unmasked text", send: frames(buildFrame(fin|opText, false, 15, []byte(msg("x")))), close: 1002},
		{name: "unmasked ping", send: frames(buildFrame(fin|opPing, false, 1, []byte("x"))), close: 1002},
		{name: "unmasked close", send: frames(buildFrame(fin|opClose, false, 2, closePayload(1000, ""))), close: 1002},

		// Pings.
		{name: "empty ping", send: frames(clientFrame(fin|opPing, nil)), replies: []reply{pongOf("")}},
		{name: "ping of 125 bytes", send: frames(clientFrame(fin|opPing, []byte(ping125))), replies: []reply{pongOf(ping125)}},
		{name: "ping of binary bytes", send: frames(clientFrame(fin|opPing, allBytes)), replies: []reply{pongOf(string(allBytes))}},
		{name: "ping of 126 bytes", send: frames(clientFrame(fin|opPing, []byte(ping125+"p"))), close: 1002},
		{name: "fragmented ping", send: frames(clientFrame(opPing, []byte("a")), clientFrame(fin|opCont, []byte("b"))), close: 1002},
		{name: "unsolicited pong is ignored", send: frames(clientFrame(fin|opPong, []byte("unasked")))},
		{name: "pong of 126 bytes", send: frames(clientFrame(fin|opPong, []byte(ping125+"p"))), close: 1002},

		// Fragmentation.
		{name: "message in three fragments", send: frames(clientFrame(opText, []byte(`{"mess`)), clientFrame(opCont, []byte(`age":"frag`)), clientFrame(fin|opCont, []byte(`ments"}`))),
			replies: []reply{textWith(`"message":"fragments"`)}},
		{name: "empty fragments", send: frames(clientFrame(opText, nil), clientFrame(opCont, []byte(msg("e"))), clientFrame(fin|opCont, nil)),
			replies: []reply{textWith(`"message":"e"`)}},
		{name: "ping between fragments", send: frames(clientFrame(opText, []byte(`{"message":`)), clientFrame(fin|opPing, []byte("mid")), clientFrame(fin|opCont, []byte(`"between"}`))),
			replies: []reply{pongOf("mid"), textWith(`"message":"between"`)}},
		{name: "pong between fragments", send: frames(clientFrame(opText, []byte(`{"message":`)), clientFrame(fin|opPong, nil), clientFrame(fin|opCont, []byte(`"p"}`))),
			replies: []reply{textWith(`"message":"p"`)}},
		{name: "continuation without a message", send: frames(clientFrame(opCont, []byte("x"))), close: 1002},
		{name: "final continuation without a message", send: frames(clientFrame(fin|opCont, []byte(msg("x")))), close: 1002},
		{name: "text frame inside a fragmented message", send: frames(clientFrame(opText, []byte(`{"message":`)), text(msg("x"))), close: 1002},
		{name: "binary frame inside a fragmented message", send: frames(clientFrame(opText, []byte(`{"message":`)), clientFrame(fin|opBinary, []byte("x"))), close: 1002},
		// (typing: a complete message that is never answered)
		{name: "continuation after a complete message", send: frames(text(`{"type":"typing"}`), clientFrame(fin|opCont, []byte("x"))), close: 1002},

		// UTF-8.
		{name: "two-byte character split across fragments", send: frames(clientFrame(opText, []byte(`{"message":"caf`+"\xc3")), clientFrame(fin|opCont, []byte("\xa9"+`"}`))),
			replies: []reply{textWith(`"message":"café"`)}},
		{name: "four-byte character split over three fragments", send: frames(clientFrame(opText, []byte(`{"message":"`+"\xf0\x9f")), clientFrame(opCont, []byte("\x98")), clientFrame(fin|opCont, []byte("\x80"+`"}`))),
			replies: []reply{textWith(`"message":"😀"`)}},
		{name: "invalid UTF-8 in a whole frame", send: frames(text(msg("\xff\xfe"))), close: 1007},
		{name: "overlong encoding", send: frames(text(msg("\xc0\xaf"))), close: 1007},
		{name: "UTF-16 surrogate", send: frames(text(msg("\xed\xa0\x80"))), close: 1007},
		{name: "code point over U+10FFFF", send: frames(text(msg("\xf4\x90\x80\x80"))), close: 1007},
		{name: "invalid UTF-8 in the second fragment", send: frames(clientFrame(opText, []byte(`{"message":"ok`)), clientFrame(fin|opCont, []byte("\xff"+`"}`))), close: 1007},
		// Fail fast: the message is never finished, the first fragment fails it.
		{name: "invalid UTF-8 in an unfinished message", send: frames(clientFrame(opText, []byte(`{"message":"`+"\xff"))), close: 1007},
		{name: "impossible prefix at a fragment's end", send: frames(clientFrame(opText, []byte(`{"message":"`+"\xf4\x90"))), close: 1007},
		{name: "truncated character at the end", send: frames(text(`{"message":"x"}` + "\xe2\x82")), close: 1007},
		{name: "truncated character in the last fragment", send: frames(clientFrame(opText, []byte(msg("x"))), clientFrame(fin|opCont, []byte("\xe2\x82"))), close: 1007},
		{name: "valid UTF-8 that is not JSON", send: frames(text("héllo ☃")), replies: []reply{errorFrameWith("bad_json")}},

		// Close handling.
		{name: "empty close", send: frames(clientFrame(fin|opClose, nil)), close: 1005, echo: true},
		{name: "close with a 1-byte payload", send: frames(clientFrame(fin|opClose, []byte{0x03})), close: 1002},
		{name: "close with a UTF-8 reason", send: frames(clientFrame(fin|opClose, closePayload(1000, "bye ✓"))), close: 1000, echo: true},
		{name: "close with the longest reason", send: frames(clientFrame(fin|opClose, closePayload(4000, strings.Repeat("r", 123)))), close: 4000, echo: true},
		{name: "close of 126 bytes", send: frames(clientFrame(fin|opClose, closePayload(1000, strings.Repeat("r", 124)))), close: 1002},
		{name: "close reason not UTF-8", send: frames(clientFrame(fin|opClose, closePayload(1000, "\xff\xfe"))), close: 1007},
		{name: "fragmented close", send: frames(clientFrame(opClose, closePayload(1000, ""))), close: 1002},

		// Limits.
		{name: "frame over the limit", send: frames(buildFrame(fin|opText, true, confFrameLimit+1, bytes.Repeat([]byte("x"), 100))), close: 1009},
		{name: "fragments over the limit", send: frames(clientFrame(opText, bytes.Repeat([]byte("x"), confFrameLimit-10)), clientFrame(fin|opCont, bytes.Repeat([]byte("x"), 11))), close: 1009},
		{name: "frame at the limit is read", send: frames(text(msg(strings.Repeat("y", confFrameLimit-len(msg("")))))), replies: []reply{errorFrameWith("too_large")}},
		{name: "64-bit length with its top bit set", send: frames(buildFrame(fin|opText, true, 1<<63|5, []byte("hello"))), close: 1002},
		{name: "64-bit length of a terabyte", send: frames(buildFrame(fin|opText, true, 1<<40, []byte("hello"))), close: 1009},
	}
	for _, op := range []byte{3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF} {
		cases = append(cases, conformanceCase{name: fmt.Sprintf("reserved opcode %#x", op), send: frames(clientFrame(fin|op, []byte("x"))), close: 1002})
	}
	for _, code := range []int{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999} {
		cases = append(cases, conformanceCase{name: fmt.Sprintf("close code %d is echoed", code), send: frames(clientFrame(fin|opClose, closePayload(code, ""))), close: code, echo: true})
	}
	for _, code := range []int{0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535} {
		cases = append(cases, conformanceCase{name: fmt.Sprintf("close code %d is refused", code), send: frames(clientFrame(fin|opClose, closePayload(code, ""))), close: 1002})
	}
	return cases
}

// TestWebSocketConformance sends hand-built frames over TCP and checks
// every frame the server answers, its one close frame and its code, and
// that the server then closes the connection.
func TestWebSocketConformance(t *testing.T) {
	ts := startServer(t, func(o *options) { o.cfg.MaxMessageBytes = confMaxMessage })
	for i, tc := range conformanceCases() {
		t.Run(tc.name, func(t *testing.T) {
			w := ts.rawDial(t, fmt.Sprintf("conformance-%d", i))
			// Its echo shows the join is over: what the case sends is then
			// answered in order (a message stored during the join would
			// come as history, ahead of a pong).
			w.write(clientFrame(fin|opText, []byte(`{"message":"joined"}`)))
			if f, err := w.read(); err != nil || !strings.Contains(string(f.payload), `"message":"joined"`) {
				t.Fatalf("got %v, %v; want the echo of the first message", f, err)
			}
			w.write(tc.send...)
			for _, want := range tc.replies {
				f, err := w.read()
				if err != nil {
					t.Fatalf("want %+v: %v", want, err)
				}
				if f.op != want.op || want.contains == "" && string(f.payload) != want.payload || !strings.Contains(string(f.payload), want.contains) {
					t.Fatalf("got %v, want %+v", f, want)
				}
			}
			code, echo := tc.close, tc.echo
			if code == 0 { // still open: a normal close is echoed
				w.write(clientFrame(fin|opClose, closePayload(1000, "done")))
				code, echo = 1000, true
			}
			checkClose(t, w.closeAndEnd(), code, echo)
		})
	}
}

// checkClose checks a close frame's code: the payload is the code alone
// when echo (none for 1005), or the code and a reason of valid UTF-8.
func checkClose(t *testing.T, f serverFrame, code int, echo bool) {
	t.Helper()
	switch {
	case code == websocket.CloseNoStatusReceived:
		if len(f.payload) != 0 {
			t.Fatalf("got %v, want an empty close", f)
		}
	case len(f.payload) < 2 || int(binary.BigEndian.Uint16(f.payload)) != code:
		t.Fatalf("got %v, want close %d", f, code)
	case echo && len(f.payload) != 2:
		t.Fatalf("got %v, want the code %d echoed alone", f, code)
	case !utf8.Valid(f.payload[2:]):
		t.Fatalf("close reason %q is not UTF-8", f.payload[2:])
	}
}

// TestHandshakeConformance: what RFC 6455 (4.2.1, 4.2.2) asks of the
// server's answers to handshakes it cannot take.
func TestHandshakeConformance(t *testing.T) {
	ts := startServer(t)
	upgrade := func(version, key string) map[string]string {
		h := map[string]string{"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": key}
		if version != "" {
			h["Sec-WebSocket-Version"] = version
		}
		return h
	}
	cases := []struct {
		name    string
		header  map[string]string
		status  int
		code    string
		version bool // the answer must carry Sec-WebSocket-Version: 13
	}{
		{"version 8", upgrade("8", sampleKey), 426, "unsupported_version", true},
		{"no version", upgrade("", sampleKey), 426, "unsupported_version", true},
		{"not an upgrade", map[string]string{}, 426, "upgrade_required", true},
		{"no key", upgrade("13", ""), 400, "bad_handshake", false},
		{"key of 8 bytes", upgrade("13", "AAAAAAAAAAA="), 400, "bad_handshake", false},
		{"key not base64", upgrade("13", "not base64 at all!!!!!!="), 400, "bad_handshake", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := rawHTTPResponse(t, ts, "GET", "/ws/chat/lobby/", tc.header, nil)
			if resp.StatusCode != tc.status || errorCode(body) != tc.code {
				t.Fatalf("got %d %s, want %d %s", resp.StatusCode, body, tc.status, tc.code)
			}
			if got := resp.Header.Get("Sec-WebSocket-Version"); tc.version && got != "13" {
				t.Fatalf("Sec-WebSocket-Version %q, want 13", got)
			}
		})
	}
	// The same handshake with version 13 and a proper key upgrades.
	w := ts.rawDial(t, "handshake")
	w.write(clientFrame(fin|opClose, closePayload(1000, "")))
	checkClose(t, w.closeAndEnd(), 1000, true)
}
