package streams_test

import (
	"math"
	"strings"
	"testing"

	"github.com/xroom/xroom/streams"
)

const maxU = uint64(math.MaxUint64)

func TestParseIDAccepts(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want streams.ID
	}{
		{"0", streams.ID{}},
		{"5", streams.ID{Ms: 5}},
		{"1-2", streams.ID{Ms: 1, Seq: 2}},
		{"0-0", streams.ID{}},
		{"1732380000000-3", streams.ID{Ms: 1732380000000, Seq: 3}},
		{"1732380000000", streams.ID{Ms: 1732380000000}},
		{"18446744073709551615", streams.ID{Ms: maxU}},
		{"18446744073709551615-18446744073709551615", streams.ID{Ms: maxU, Seq: maxU}},
		{"0-18446744073709551615", streams.ID{Seq: maxU}},
	} {
		got, err := streams.ParseID(tc.in)
		if err != nil {
			t.Errorf("ParseID(%q): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseID(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
	if got, _ := streams.ParseID("18446744073709551615-18446744073709551615"); got != streams.MaxID {
		t.Errorf("max parts do not give MaxID: %+v", got)
	}
}

func TestParseIDRejects(t *testing.T) {
	for _, in := range []string{
		"", "-", "-1", "1-", "-1-2", "a", "1a", "1-a", "1-2-3", " 1", "1 ", "1- 2", "+1", "1-+2",
		"0x1", "1e3", "1.5", "١", // Arabic-Indic digit one
		"123456789012345678901",                      // 21 digits
		"000000000000000000001",                      // 21 digits, even with a small value
		"1-123456789012345678901",                    // 21-digit sequence
		"18446744073709551616",                       // max uint64 + 1
		"1-18446744073709551616",                     // sequence overflow
		"99999999999999999999-0",                     // 20 digits but over uint64
		"18446744073709551615-18446744073709551615-", // trailing dash
	} {
		id, err := streams.ParseID(in)
		if err == nil {
			t.Errorf("ParseID(%q) = %+v, want an error", in, id)
			continue
		}
		if id != (streams.ID{}) {
			t.Errorf("ParseID(%q) returned %+v with its error, want the zero ID", in, id)
		}
		// The error quotes the input and explains the format.
		if !strings.Contains(err.Error(), `stream ID "`) || !strings.Contains(err.Error(), "MS or MS-SEQ") {
			t.Errorf("ParseID(%q) error %q does not name the input and the format", in, err)
		}
	}
}

func TestIDStringRoundTrip(t *testing.T) {
	for _, id := range []streams.ID{
		{}, {Ms: 1}, {Ms: 1, Seq: 2}, {Ms: 1732380000000, Seq: 17}, {Ms: maxU, Seq: 0}, {Ms: 0, Seq: maxU}, streams.MaxID,
	} {
		s := id.String()
		back, err := streams.ParseID(s)
		if err != nil || back != id {
			t.Errorf("%+v -> %q -> %+v, %v", id, s, back, err)
		}
		prefix := []byte("x:")
		b := id.AppendTo(prefix)
		if string(b) != "x:"+s {
			t.Errorf("AppendTo = %q, want %q", b, "x:"+s)
		}
	}
	if s := (streams.ID{Ms: 1732380000000, Seq: 3}).String(); s != "1732380000000-3" {
		t.Errorf("String = %q", s)
	}
	if s := streams.Zero.String(); s != "0-0" {
		t.Errorf("Zero.String = %q, want 0-0", s)
	}
	if s := streams.MaxID.String(); s != "18446744073709551615-18446744073709551615" {
		t.Errorf("MaxID.String = %q", s)
	}
	// A short ID parses to its normalised form.
	if id, _ := streams.ParseID("5"); id.String() != "5-0" {
		t.Errorf(`ParseID("5").String() = %q, want 5-0`, id.String())
	}
}

func TestIDAppendToDoesNotAllocate(t *testing.T) {
	buf := make([]byte, 0, 64)
	id := streams.ID{Ms: 1732380000000, Seq: 42}
	if n := testing.AllocsPerRun(100, func() { _ = id.AppendTo(buf[:0]) }); n != 0 {
		t.Errorf("AppendTo allocates %v times per call", n)
	}
}

func TestIDLessIsNumeric(t *testing.T) {
	mustParse := func(s string) streams.ID {
		id, err := streams.ParseID(s)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	for _, tc := range []struct {
		a, b string
		less bool
	}{
		{"9-0", "10-0", true}, // as strings "9-0" > "10-0"
		{"10-0", "9-0", false},
		{"1-9", "1-10", true},
		{"1-10", "1-9", false},
		{"1-18446744073709551615", "2-0", true},
		{"2-0", "1-18446744073709551615", false},
		{"5-5", "5-5", false},
		{"0-0", "0-1", true},
		{"0-1", "0-0", false},
		{"18446744073709551615-18446744073709551614", "18446744073709551615-18446744073709551615", true},
	} {
		if got := mustParse(tc.a).Less(mustParse(tc.b)); got != tc.less {
			t.Errorf("%s.Less(%s) = %v, want %v", tc.a, tc.b, got, tc.less)
		}
	}
	if !streams.Zero.IsZero() || (streams.ID{Seq: 1}).IsZero() || (streams.ID{Ms: 1}).IsZero() {
		t.Error("IsZero is wrong")
	}
}

func TestIDNextPrev(t *testing.T) {
	for _, tc := range []struct {
		id, next, prev streams.ID
	}{
		{streams.ID{Ms: 5, Seq: 3}, streams.ID{Ms: 5, Seq: 4}, streams.ID{Ms: 5, Seq: 2}},
		{streams.ID{}, streams.ID{Seq: 1}, streams.ID{}}, // nothing before 0-0
		{streams.ID{Ms: 5, Seq: maxU}, streams.ID{Ms: 6}, streams.ID{Ms: 5, Seq: maxU - 1}},
		{streams.ID{Ms: 5}, streams.ID{Ms: 5, Seq: 1}, streams.ID{Ms: 4, Seq: maxU}},
		{streams.ID{Seq: maxU}, streams.ID{Ms: 1}, streams.ID{Seq: maxU - 1}},
		{streams.ID{Ms: maxU}, streams.ID{Ms: maxU, Seq: 1}, streams.ID{Ms: maxU - 1, Seq: maxU}},
		{streams.MaxID, streams.MaxID, streams.ID{Ms: maxU, Seq: maxU - 1}}, // nothing after MaxID
	} {
		if got := tc.id.Next(); got != tc.next {
			t.Errorf("%v.Next() = %v, want %v", tc.id, got, tc.next)
		}
		if got := tc.id.Prev(); got != tc.prev {
			t.Errorf("%v.Prev() = %v, want %v", tc.id, got, tc.prev)
		}
		// Next and Prev undo each other except at the ends.
		if tc.id != streams.MaxID {
			if back := tc.id.Next().Prev(); back != tc.id {
				t.Errorf("%v.Next().Prev() = %v", tc.id, back)
			}
			if !tc.id.Less(tc.id.Next()) {
				t.Errorf("%v.Next() is not after it", tc.id)
			}
		}
		if tc.id != streams.Zero {
			if back := tc.id.Prev().Next(); back != tc.id {
				t.Errorf("%v.Prev().Next() = %v", tc.id, back)
			}
			if !tc.id.Prev().Less(tc.id) {
				t.Errorf("%v.Prev() is not before it", tc.id)
			}
		}
	}
}
