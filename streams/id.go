package streams

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ID is a Redis stream entry ID: milliseconds and a sequence number.
// IDs are compared as numbers, never as strings ("9-0" < "10-0").
type ID struct {
	Ms, Seq uint64
}

// Zero is "0-0", the position before every entry.
var Zero ID

// MaxID is the largest ID, the position after every entry.
var MaxID = ID{math.MaxUint64, math.MaxUint64}

var errBadID = errors.New("a stream ID is MS or MS-SEQ, two unsigned integers")

// ParseID reads "1732380000000-3", "1732380000000" (sequence 0) or "0".
func ParseID(s string) (ID, error) {
	msPart, seqPart, hasSeq := strings.Cut(s, "-")
	ms, err := parseUint(msPart)
	if err != nil {
		return ID{}, fmt.Errorf("stream ID %q: %w", s, errBadID)
	}
	var seq uint64
	if hasSeq {
		if seq, err = parseUint(seqPart); err != nil {
			return ID{}, fmt.Errorf("stream ID %q: %w", s, errBadID)
		}
	}
	return ID{ms, seq}, nil
}

// parseUint accepts only plain decimal digits: no sign, no spaces, no "0x".
func parseUint(s string) (uint64, error) {
	if s == "" || len(s) > 20 {
		return 0, errBadID
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errBadID
		}
	}
	return strconv.ParseUint(s, 10, 64)
}

func (id ID) String() string {
	var b [41]byte
	return string(id.AppendTo(b[:0]))
}

// AppendTo appends the text form of id to b, without allocating.
func (id ID) AppendTo(b []byte) []byte {
	b = strconv.AppendUint(b, id.Ms, 10)
	b = append(b, '-')
	return strconv.AppendUint(b, id.Seq, 10)
}

// Less reports whether id comes before o in a stream.
func (id ID) Less(o ID) bool {
	return id.Ms < o.Ms || (id.Ms == o.Ms && id.Seq < o.Seq)
}

// Compare returns -1, 0 or +1 as id comes before, is, or comes after o.
func (id ID) Compare(o ID) int {
	switch {
	case id.Less(o):
		return -1
	case o.Less(id):
		return 1
	}
	return 0
}

// IsZero reports whether id is "0-0".
func (id ID) IsZero() bool { return id == Zero }

// Next is the smallest ID after id: an inclusive XRANGE start that means "after id".
// (The exclusive "(" syntax needs Redis 6.2; this works everywhere.)
func (id ID) Next() ID {
	switch {
	case id.Seq < math.MaxUint64:
		return ID{id.Ms, id.Seq + 1}
	case id.Ms < math.MaxUint64:
		return ID{id.Ms + 1, 0}
	}
	return id
}

// Prev is the largest ID before id: an inclusive XREVRANGE end that means "before id".
func (id ID) Prev() ID {
	switch {
	case id.Seq > 0:
		return ID{id.Ms, id.Seq - 1}
	case id.Ms > 0:
		return ID{id.Ms - 1, math.MaxUint64}
	}
	return id
}
