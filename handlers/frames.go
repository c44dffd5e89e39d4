package handlers

import (
	"encoding/json"
	"fmt"
	"unicode"
	"unicode/utf8"

	"github.com/xroom/xroom/streams"
)

// messageFrame is a chat entry as clients see it, on the WebSocket and in the HTTP API.
type messageFrame struct {
	Type     string `json:"type,omitempty"`
	ID       string `json:"id"`
	Room     string `json:"room"`
	User     string `json:"user"`
	Message  string `json:"message"`
	TS       int64  `json:"ts"`
	ClientID string `json:"client_id,omitempty"`
}

func newMessageFrame(room string, e *streams.Entry) messageFrame {
	return messageFrame{ID: e.ID.String(), Room: room, User: e.User, Message: e.Message, TS: int64(e.ID.Ms), ClientID: e.ClientID}
}

type readyFrame struct {
	Type   string `json:"type"`
	Room   string `json:"room"`
	LastID string `json:"last_id"`
	Epoch  string `json:"epoch"`
}

type ackFrame struct {
	Type      string `json:"type"`
	ClientID  string `json:"client_id"`
	ID        string `json:"id"`
	Duplicate bool   `json:"duplicate,omitempty"`
}

// encodeAck is encode(ackFrame{...}), byte for byte, without reflection:
// every acknowledged send encodes one.
func encodeAck(clientID string, id streams.ID, duplicate bool) []byte {
	b := make([]byte, 0, 48+len(clientID))
	b = append(b, `{"type":"ack","client_id":`...)
	b = appendJSONString(b, clientID)
	b = append(b, `,"id":"`...)
	b = id.AppendTo(b)
	b = append(b, '"')
	if duplicate {
		b = append(b, `,"duplicate":true`...)
	}
	return append(b, '}')
}

type gapFrame struct {
	Type     string `json:"type"`
	Reason   string `json:"reason"`
	OldestID string `json:"oldest_id"`
}

type errorFrame struct {
	Type     string `json:"type"`
	Code     string `json:"code"`
	Message  string `json:"message"`
	ClientID string `json:"client_id,omitempty"`
	// RetryAfterMs (rate_limited only) is when the refused message can be sent again.
	RetryAfterMs int64 `json:"retry_after_ms,omitempty"`
}

func encode(v any) []byte {
	b, _ := json.Marshal(v) // frame structs hold strings and bools only
	return b
}

// Error codes of refused frames, as docs/protocol.md lists them.
const (
	codeBadJSON     = "bad_json"
	codeBadUTF8     = "bad_utf8"
	codeBadFrame    = "bad_frame"
	codeEmpty       = "empty"
	codeTooLarge    = "too_large"
	codeUnknownType = "unknown_type"
	codeBadClientID = "bad_client_id"
	codeUnavailable = "unavailable"
)

// clientFrame is what a client sends. Pointers tell "absent" from "empty".
type clientFrame struct {
	Type     *string `json:"type"`
	Message  *string `json:"message"`
	ClientID *string `json:"client_id"`
}

// refusal is a client frame refused with an error frame; the connection lives on.
type refusal struct {
	code, message, clientID string
	retryAfterMs            int64 // rate_limited: when a resend can pass
}

func (r *refusal) Error() string { return r.code + ": " + r.message }

// decodeFrame validates one text frame from a client and returns the message it carries.
func decodeFrame(data []byte, maxBytes int) (streams.Message, *refusal) {
	var m streams.Message
	// The frame reader fails a text frame that is not UTF-8 with 1007
	// before it gets here; checked again so that decodeFrame is safe on its
	// own (json.Unmarshal would store U+FFFD in place of the bad bytes).
	if !utf8.Valid(data) {
		return m, &refusal{code: codeBadUTF8, message: "the frame is not valid UTF-8"}
	}
	f, ok := scanFrame(data) // framescan.go
	if !ok {
		if err := json.Unmarshal(data, &f); err != nil {
			return m, &refusal{code: codeBadJSON, message: jsonProblem(err)}
		}
	}
	if f.ClientID != nil {
		m.ClientID = *f.ClientID
	}
	if f.Type != nil && *f.Type == "typing" {
		return m, typingFrame // presence.go
	}
	if f.Type != nil && *f.Type == "read" {
		return m, readFrame // reads.go
	}
	if f.Type != nil && *f.Type != "message" {
		r := &refusal{code: codeUnknownType, message: fmt.Sprintf("unknown frame type %.40q; send {\"type\": \"message\", \"message\": \"...\"}", *f.Type)}
		if ValidClientID(m.ClientID) { // an invalid one is not echoed, as for bad_client_id
			r.clientID = m.ClientID
		}
		return m, r
	}
	if f.ClientID != nil && !ValidClientID(m.ClientID) {
		return m, &refusal{code: codeBadClientID, message: "client_id is 1 to 64 characters from A-Z a-z 0-9 . _ -"}
	}
	if f.Message == nil || *f.Message == "" {
		return m, &refusal{code: codeEmpty, message: "the message is empty", clientID: m.ClientID}
	}
	if len(*f.Message) > maxBytes {
		return m, &refusal{code: codeTooLarge, message: fmt.Sprintf("the message is %d bytes; the limit is %d", len(*f.Message), maxBytes), clientID: m.ClientID}
	}
	m.Text = *f.Message
	return m, nil
}

func jsonProblem(err error) string {
	switch e := err.(type) {
	case *json.UnmarshalTypeError:
		if e.Field == "" {
			return "a frame is a JSON object, such as {\"message\": \"hi\"}"
		}
		return fmt.Sprintf("%s must be a %s, not a JSON %s", e.Field, "string", e.Value)
	case *json.SyntaxError:
		return fmt.Sprintf("malformed JSON at byte %d: %v", e.Offset, e)
	}
	return "malformed JSON: " + err.Error()
}

// nameOf reports whether s is 1 to limit of A-Z a-z 0-9 . _ - (the rule of
// rooms and client_ids; a loop, as it runs on every send).
func nameOf(s string, limit int) bool {
	if len(s) == 0 || len(s) > limit {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// ValidRoom is the room name rule: 1 to 100 of A-Z a-z 0-9 . _ - (as Django Channels' group names).
func ValidRoom(room string) bool { return nameOf(room, 100) }

// ValidClientID: no ':' so that dedup keys read back unambiguously.
func ValidClientID(id string) bool { return nameOf(id, 64) }

// maxUserRunes is the longest display name.
const maxUserRunes = 32

// ValidUser is 1 to 32 printable characters of valid UTF-8.
func ValidUser(user string) bool {
	if user == "" || !utf8.ValidString(user) || utf8.RuneCountInString(user) > maxUserRunes {
		return false
	}
	for _, r := range user {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}
