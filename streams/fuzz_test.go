package streams_test

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/internal/testkit"
	"github.com/xroom/xroom/streams"
)

// Fuzz targets (seed corpora in testdata/fuzz/; CI runs each briefly):
//
//	go test -run '^$' -fuzz '^FuzzParseID$' -fuzztime 10s ./streams

var idShape = regexp.MustCompile(`^[0-9]{1,20}(-[0-9]{1,20})?$`)

// ParseID accepts exactly MS or MS-SEQ in plain decimal digits that fit in
// 64 bits; what it accepts formats back to an ID that parses to itself, and
// the canonical form formats to itself.
func FuzzParseID(f *testing.F) {
	for _, s := range []string{
		"0", "0-0", "1732380000000-3", "1732380000000", "18446744073709551615-18446744073709551615",
		"18446744073709551616", "99999999999999999999-0", "-1", "1-", "-", "", "01-1", "1-2-3",
		" 1", "1 ", "+1", "0x10", "1e3", "１", "1-\x00", "$", ">", "*", "(1-0",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := streams.ParseID(s)
		if err != nil {
			if idShape.MatchString(s) && !overflows(s) {
				t.Fatalf("ParseID(%q) refused a well-formed ID: %v", s, err)
			}
			return
		}
		if !idShape.MatchString(s) {
			t.Fatalf("ParseID(%q) accepted %v", s, id)
		}
		str := id.String()
		back, err := streams.ParseID(str)
		if err != nil || back != id {
			t.Fatalf("%q parsed to %v, which formats to %q, which parses to %v (%v)", s, id, str, back, err)
		}
		if canonical(s) && str != s {
			t.Fatalf("canonical %q formats to %q", s, str)
		}
		if !strings.Contains(s, "-") && canonical(s+"-0") && str != s+"-0" {
			t.Fatalf("%q formats to %q, want %s-0", s, str, s)
		}
		if id != streams.MaxID {
			if n := id.Next(); !id.Less(n) || n.Prev() != id {
				t.Fatalf("Next of %v is %v", id, n)
			}
		}
		if !id.IsZero() {
			if p := id.Prev(); !p.Less(id) || p.Next() != id {
				t.Fatalf("Prev of %v is %v", id, p)
			}
		}
	})
}

// canonical: no leading zeros in either part, both present.
func canonical(s string) bool {
	ms, seq, ok := strings.Cut(s, "-")
	noLead := func(p string) bool { return p == "0" || (p != "" && p[0] != '0') }
	return ok && noLead(ms) && noLead(seq)
}

// overflows reports whether a part of a well-shaped ID is over 2^64-1.
func overflows(s string) bool {
	for _, p := range strings.Split(s, "-") {
		p = strings.TrimLeft(p, "0")
		if len(p) > 20 || (len(p) == 20 && p > "18446744073709551615") {
			return true
		}
	}
	return false
}

// Stream entries as redis-cli could write them: any fields, missing ones,
// binary and huge values. Each is XADDed to a real Redis and read back
// through Store.Range and through the Hub's live tail: both give the
// stored bytes exactly, an entry without "message" is passed over (no
// frame) without stopping the ones after it, and the encoder runs once.
func FuzzStoredEntry(f *testing.F) {
	f.Add([]byte("ana"), []byte("hello"), []byte("c-1"), true, true, true, uint16(0))
	f.Add([]byte(""), []byte(""), []byte(""), false, false, false, uint16(0))
	f.Add([]byte("\xff\xfe"), []byte("\x00bin\x00\xc3"), []byte("a:b"), true, true, true, uint16(3))
	f.Add([]byte("ops"), []byte("x"), []byte(""), true, true, false, uint16(65535))
	f.Add([]byte("<script>"), []byte(`{"type":"ready"}`), []byte(strings.Repeat("c", 300)), true, true, true, uint16(100))

	srv := redistest.Shared(f)
	rdb := srv.Client(f)
	prefix := redistest.Prefix(f)
	store := streams.NewStore(rdb, streams.Options{Prefix: prefix})
	hub := streams.NewHub(store, srv.Client(f), streams.HubOptions{
		Buffer: 8, Block: 200 * time.Millisecond, Logger: testkit.Quiet(),
		Encode: func(room string, e *streams.Entry) []byte { return []byte("frame:" + e.Message) },
	})
	f.Cleanup(func() { hub.Close() })
	notified := make(chan struct{}, 1)
	sub, err := hub.Subscribe(context.Background(), "fuzz", func() {
		select {
		case notified <- struct{}{}:
		default:
		}
	})
	if err != nil {
		f.Fatal(err)
	}
	cursor := sub.Head()
	buf := make([]*streams.Entry, 0, 16)

	f.Fuzz(func(t *testing.T, user, message, clientID []byte, hasUser, hasMessage, hasClientID bool, repeat uint16) {
		// Up to ~1 MB: redis-cli can write a field far over MAX_MESSAGE_BYTES.
		if n := int(repeat); n > 0 && len(message) > 0 {
			message = bytes.Repeat(message, min(n, (1<<20)/len(message))+1)
		}
		var values []any
		if hasUser {
			values = append(values, "user", user)
		}
		if hasMessage {
			values = append(values, "message", message)
		}
		if hasClientID {
			values = append(values, "client_id", clientID)
		}
		values = append(values, "other", "x") // XADD needs a field; unknown ones are ignored
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		// MAXLEN keeps Redis small over a long fuzz run; the tail has read
		// every older entry before this one is added.
		raw, err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: store.Keys().Messages("fuzz"), MaxLen: 10, Values: values}).Result()
		if err != nil {
			t.Fatal(err)
		}
		id, err := streams.ParseID(raw)
		if err != nil {
			t.Fatal(err)
		}
		check := func(how string, e *streams.Entry) {
			t.Helper()
			want := func(has bool, v []byte) string {
				if has {
					return string(v)
				}
				return ""
			}
			if e.ID != id || e.User != want(hasUser, user) || e.ClientID != want(hasClientID, clientID) ||
				e.HasMessage != hasMessage || e.Message != want(hasMessage, message) {
				t.Fatalf("%s: entry %v user %q client_id %q has_message %v (%d bytes); stored user %q client_id %q message %v (%d bytes)",
					how, e.ID, e.User, e.ClientID, e.HasMessage, len(e.Message), user, clientID, hasMessage, len(message))
			}
		}
		es, err := store.Range(ctx, "fuzz", id.Prev(), 1)
		if err != nil || len(es) != 1 {
			t.Fatalf("Range: %v %v", es, err)
		}
		check("Range", &es[0])

		// The live tail delivers it next, framed only when it has a message.
		for {
			var got []*streams.Entry
			got, cursor, err = sub.Next(ctx, cursor, buf)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) > 0 {
				if len(got) != 1 {
					t.Fatalf("tail gave %d entries for one XADD", len(got))
				}
				check("tail", got[0])
				if wantFrame := "frame:" + string(message); hasMessage != (got[0].Frame != nil) ||
					(hasMessage && string(got[0].Frame) != wantFrame) {
					t.Fatalf("tail frame %.80q for has_message %v", got[0].Frame, hasMessage)
				}
				return
			}
			select {
			case <-notified:
			case <-ctx.Done():
				t.Fatalf("entry %v never came through the tail", id)
			}
		}
	})
}
