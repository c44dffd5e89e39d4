package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// A bench message's text is
//
//	xb RUN PUB SEQ T ....
//
// RUN names the bench run (so entries of other runs are told apart), PUB the
// publisher, SEQ its sequence number (from 0), and T the send time in
// nanoseconds on the bench process's monotonic clock; dots pad it to the
// requested size. Only ASCII, so JSON never escapes it and the server stores
// it byte for byte.
const payloadMagic = "xb "

// payload is what a message's text carries.
type payload struct {
	Run  string
	Pub  int
	Seq  int64
	Sent int64 // ns since the bench process's clock base
}

// appendPayload appends p's text, padded with '.' to size bytes when it is
// shorter.
func appendPayload(dst []byte, p payload, size int) []byte {
	start := len(dst)
	dst = append(dst, payloadMagic...)
	dst = append(dst, p.Run...)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, int64(p.Pub), 10)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, p.Seq, 10)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, p.Sent, 10)
	dst = append(dst, ' ')
	for len(dst)-start < size {
		dst = append(dst, '.')
	}
	return dst
}

var errNotBench = errors.New("not a bench payload")

// parsePayload reads a text written by appendPayload.
func parsePayload(b []byte) (payload, error) {
	run, pub, seq, sent, err := parsePayloadBytes(b)
	if err != nil {
		return payload{}, err
	}
	return payload{Run: string(run), Pub: pub, Seq: seq, Sent: sent}, nil
}

// parsePayloadBytes is parsePayload without allocating: run aliases b.
func parsePayloadBytes(b []byte) (run []byte, pub int, seq, sent int64, err error) {
	if !bytes.HasPrefix(b, []byte(payloadMagic)) {
		return nil, 0, 0, 0, errNotBench
	}
	b = b[len(payloadMagic):]
	run, b, ok := cutField(b)
	if !ok || len(run) == 0 {
		return nil, 0, 0, 0, errNotBench
	}
	var n [3]int64
	for i := range n {
		var f []byte
		f, b, ok = cutField(b)
		v, okNum := parseUint(f)
		if !ok || !okNum {
			return nil, 0, 0, 0, errNotBench
		}
		n[i] = v
	}
	return run, int(n[0]), n[1], n[2], nil
}

// cutField returns b up to the next space, and what follows that space.
func cutField(b []byte) (field, rest []byte, ok bool) {
	i := bytes.IndexByte(b, ' ')
	if i < 0 {
		return nil, nil, false
	}
	return b[:i], b[i+1:], true
}

// parseUint parses a non-negative decimal that fits in int64, without allocating.
func parseUint(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var v int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int64(c-'0')
	}
	return v, true
}

// appendSendFrame appends the client frame that publishes p with a client_id,
// so the server acknowledges it.
func appendSendFrame(dst []byte, p payload, size int) []byte {
	dst = append(dst, `{"type":"message","message":"`...)
	dst = appendPayload(dst, p, size)
	dst = append(dst, `","client_id":"`...)
	dst = appendClientID(dst, p.Run, p.Pub, p.Seq)
	return append(dst, `"}`...)
}

// appendClientID appends RUN-PUB-SEQ: unique per message, within the
// protocol's client_id alphabet and length.
func appendClientID(dst []byte, run string, pub int, seq int64) []byte {
	dst = append(dst, run...)
	dst = append(dst, '-')
	dst = strconv.AppendInt(dst, int64(pub), 10)
	dst = append(dst, '-')
	return strconv.AppendInt(dst, seq, 10)
}

// parseClientID reads a client_id written by appendClientID for run.
func parseClientID(run string, id string) (pub int, seq int64, ok bool) {
	rest, ok := strings.CutPrefix(id, run+"-")
	if !ok {
		return 0, 0, false
	}
	ps, ss, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, 0, false
	}
	p, ok1 := parseUint([]byte(ps))
	s, ok2 := parseUint([]byte(ss))
	return int(p), s, ok1 && ok2
}

// frameKind is the type of a server frame.
type frameKind int

const (
	kindOther frameKind = iota
	kindMessage
	kindReady
	kindAck
	kindError
	kindGap
)

// serverFrame is what the bench needs of a server frame. Message frames are
// read on the fast path (see parseServerFrame) and fill Text and ID only.
type serverFrame struct {
	Kind     frameKind
	Text     []byte   // message: the text, aliasing the frame's buffer
	ID       streamID // message: its stream ID
	ClientID string   // ack, error
	Code     string   // error
	Message  string   // error
	Dup      bool     // ack: "duplicate": true
	LastID   string   // ready
	Reason   string   // gap
}

var (
	keyTypeMessage = []byte(`"type":"message"`)
	framePrefix    = []byte(`{"type":"message"`)
	keyMessage     = []byte(`"message":"`)
	keyID          = []byte(`"id":"`)
)

// parseServerFrame reads one server frame. Message frames whose text and ID
// need no JSON unescaping (every bench payload) take a fast path without
// encoding/json, because the load generator reads hundreds of thousands of
// them per second and must not be the bottleneck; anything else is decoded
// properly.
func parseServerFrame(b []byte) (serverFrame, error) {
	var f serverFrame
	// xroom writes "type" first; the Contains is for servers that do not.
	if bytes.HasPrefix(b, framePrefix) || bytes.Contains(b, keyTypeMessage) {
		text, ok1 := plainString(b, keyMessage)
		id, ok2 := plainString(b, keyID)
		if ok1 && ok2 {
			sid, err := parseStreamID(id)
			if err == nil {
				f.Kind, f.Text, f.ID = kindMessage, text, sid
				return f, nil
			}
		}
	}
	var raw struct {
		Type      string `json:"type"`
		ID        string `json:"id"`
		Message   string `json:"message"`
		ClientID  string `json:"client_id"`
		Code      string `json:"code"`
		Duplicate bool   `json:"duplicate"`
		LastID    string `json:"last_id"`
		Reason    string `json:"reason"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return f, fmt.Errorf("bad server frame %.100q: %w", b, err)
	}
	switch raw.Type {
	case "message":
		sid, err := parseStreamID([]byte(raw.ID))
		if err != nil {
			return f, fmt.Errorf("message frame with bad id %q", raw.ID)
		}
		f.Kind, f.Text, f.ID = kindMessage, []byte(raw.Message), sid
	case "ready":
		f.Kind, f.LastID = kindReady, raw.LastID
	case "ack":
		f.Kind, f.ClientID, f.Dup = kindAck, raw.ClientID, raw.Duplicate
	case "error":
		f.Kind, f.Code, f.Message, f.ClientID = kindError, raw.Code, raw.Message, raw.ClientID
	case "gap":
		f.Kind, f.Reason = kindGap, raw.Reason
	}
	return f, nil
}

// plainString finds key (`"name":"`) in b and returns the string value after
// it, when that value has no escapes.
func plainString(b, key []byte) ([]byte, bool) {
	i := bytes.Index(b, key)
	if i < 0 {
		return nil, false
	}
	v := b[i+len(key):]
	j := bytes.IndexByte(v, '"')
	if j < 0 || bytes.IndexByte(v[:j], '\\') >= 0 {
		return nil, false
	}
	return v[:j], true
}

// streamID is a Redis stream ID.
type streamID struct{ Ms, Seq uint64 }

func (a streamID) less(b streamID) bool {
	return a.Ms < b.Ms || (a.Ms == b.Ms && a.Seq < b.Seq)
}

func (a streamID) String() string { return fmt.Sprintf("%d-%d", a.Ms, a.Seq) }

func parseStreamID(b []byte) (streamID, error) {
	i := bytes.IndexByte(b, '-')
	if i < 0 {
		return streamID{}, fmt.Errorf("bad stream id %q", b)
	}
	ms, ok1 := parseUint(b[:i])
	seq, ok2 := parseUint(b[i+1:])
	if !ok1 || !ok2 {
		return streamID{}, fmt.Errorf("bad stream id %q", b)
	}
	return streamID{uint64(ms), uint64(seq)}, nil
}
