package handlers

// The fast path of decodeFrame. Every send is the same small object, and
// encoding/json's reflection was a tenth of the server's CPU per message
// at ingest. scanFrame reads only that shape: one flat object of the keys
// "type", "message" and "client_id" (exact case, each at most once) whose
// values are strings without escapes. For any such frame encoding/json
// gives the same clientFrame; anything else (escapes, other keys, other
// case, repeats, numbers, nesting, trailing bytes) returns ok false and
// goes to encoding/json, which decides it and words its errors
// (FuzzDecodeFrame holds the two to the same result).

// scanFrame reads data (valid UTF-8, checked by the caller) if it has the
// shape above.
func scanFrame(data []byte) (f clientFrame, ok bool) {
	i := skipSpace(data, 0)
	if i == len(data) || data[i] != '{' {
		return f, false
	}
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == '}' {
		return f, skipSpace(data, i+1) == len(data)
	}
	for {
		key, j, ok := scanString(data, i)
		if !ok {
			return f, false
		}
		i = skipSpace(data, j)
		if i == len(data) || data[i] != ':' {
			return f, false
		}
		val, j, ok := scanString(data, skipSpace(data, i+1))
		if !ok {
			return f, false
		}
		var dst **string
		switch string(key) {
		case "type":
			dst = &f.Type
		case "message":
			dst = &f.Message
		case "client_id":
			dst = &f.ClientID
		default:
			return f, false
		}
		if *dst != nil { // a repeated key: encoding/json keeps the last
			return f, false
		}
		s := string(val)
		*dst = &s
		i = skipSpace(data, j)
		if i == len(data) {
			return f, false
		}
		switch data[i] {
		case ',':
			i = skipSpace(data, i+1)
		case '}':
			return f, skipSpace(data, i+1) == len(data)
		default:
			return f, false
		}
	}
}

// scanString reads the JSON string at data[i] when it holds no escape and
// no control character, and returns its contents and the index after it.
func scanString(data []byte, i int) (s []byte, next int, ok bool) {
	if i == len(data) || data[i] != '"' {
		return nil, 0, false
	}
	for j := i + 1; j < len(data); j++ {
		switch c := data[j]; {
		case c == '"':
			return data[i+1 : j], j + 1, true
		case c == '\\' || c < 0x20:
			return nil, 0, false
		}
	}
	return nil, 0, false
}

// skipSpace returns the index of the first byte at or after i that is not
// JSON whitespace.
func skipSpace(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}
