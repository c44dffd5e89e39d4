package handlers_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// sseEvent is one event of a text/event-stream, as EventSource parses it.
type sseEvent struct {
	ID    string // the id field; "" when the event had none
	HasID bool
	Event string // "message" when the event had no event field
	Data  string
}

// frame decodes the event's data as a frame.
func (e sseEvent) frame(t testing.TB) frame {
	t.Helper()
	var f frame
	if err := json.Unmarshal([]byte(e.Data), &f); err != nil {
		t.Fatalf("event %+v: data is not JSON: %v", e, err)
	}
	return f
}

// sseItem is what the parser found: an event, or a comment or retry line.
type sseItem struct {
	event   *sseEvent
	comment string
	retry   string
	err     error // the stream ended
}

// parseSSE reads a text/event-stream from r as the HTML standard says
// (field: value lines, a blank line dispatching), sending what it finds to
// out until r ends.
func parseSSE(r io.Reader, out chan<- sseItem) {
	br := bufio.NewReaderSize(r, 64<<10)
	var ev sseEvent
	var data []string
	dirty := false
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			out <- sseItem{err: err}
			close(out)
			return
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "":
			if dirty {
				ev.Data = strings.Join(data, "\n")
				if ev.Event == "" {
					ev.Event = "message"
				}
				e := ev
				out <- sseItem{event: &e}
			}
			ev, data, dirty = sseEvent{}, nil, false
		case strings.HasPrefix(line, ":"):
			out <- sseItem{comment: strings.TrimSpace(line[1:])}
		default:
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "id":
				ev.ID, ev.HasID, dirty = value, true, true
			case "event":
				ev.Event, dirty = value, true
			case "data":
				data, dirty = append(data, value), true
			case "retry":
				out <- sseItem{retry: value}
			}
		}
	}
}

// sseConn is an open event stream read by a net/http client.
type sseConn struct {
	t       testing.TB
	resp    *http.Response
	items   chan sseItem
	retry   string
	comment []string
	ended   error
	// skipPresence passes over presence events (most tests are about messages).
	skipPresence bool
}

// sseURL is the stream URL of room with query.
func (ts *testServer) sseURL(room, query string) string {
	u := ts.base + "/sse/chat/" + url.PathEscape(room) + "/"
	if query != "" {
		u += "?" + query
	}
	return u
}

// openSSE opens /sse/chat/{room}/?query with the given headers and fails
// the test unless it answers 200 with an event stream.
func (ts *testServer) openSSE(room, query string, header http.Header) *sseConn {
	ts.t.Helper()
	c, status, body := ts.trySSE(room, query, header)
	if c == nil {
		ts.t.Fatalf("GET %s: %d %s", ts.sseURL(room, query), status, body)
	}
	return c
}

// trySSE opens a stream; on a refusal it returns nil, the status and the body.
func (ts *testServer) trySSE(room, query string, header http.Header) (*sseConn, int, string) {
	ts.t.Helper()
	req, err := http.NewRequest(http.MethodGet, ts.sseURL(room, query), nil)
	if err != nil {
		ts.t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		ts.t.Fatalf("GET %s: %v", req.URL, err)
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return nil, resp.StatusCode, string(body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		ts.t.Fatalf("Content-Type %q", ct)
	}
	c := &sseConn{t: ts.t, resp: resp, items: make(chan sseItem, 1024), skipPresence: true}
	go parseSSE(resp.Body, c.items)
	ts.t.Cleanup(func() { resp.Body.Close() })
	return c, resp.StatusCode, ""
}

// nextWithin returns the next event (comments and retry lines are kept
// aside), failing the test after d or when the stream ends.
func (c *sseConn) nextWithin(d time.Duration) sseEvent {
	c.t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case it, ok := <-c.items:
			switch {
			case !ok || it.err != nil:
				c.ended = it.err
				c.t.Fatalf("the stream ended: %v", it.err)
			case it.retry != "":
				c.retry = it.retry
			case it.event == nil:
				c.comment = append(c.comment, it.comment)
			case c.skipPresence && it.event.Event == "presence":
			default:
				return *it.event
			}
		case <-timer.C:
			c.t.Fatalf("no event within %v", d)
		}
	}
}

func (c *sseConn) next() sseEvent { c.t.Helper(); return c.nextWithin(10 * time.Second) }

// expect reads the next event and checks its type.
func (c *sseConn) expect(event string) sseEvent {
	c.t.Helper()
	e := c.next()
	if e.Event != event {
		c.t.Fatalf("got a %s event (id %q) %.300s, want a %s event", e.Event, e.ID, e.Data, event)
	}
	return e
}

// messages reads n message events, checking each one's id is its frame's.
func (c *sseConn) messages(n int) []frame {
	c.t.Helper()
	out := make([]frame, 0, n)
	for len(out) < n {
		e := c.expect("message")
		f := e.frame(c.t)
		if !e.HasID || e.ID != f.ID || f.Type != "message" {
			c.t.Fatalf("message event %+v: its id must be the stream ID of its frame", e)
		}
		out = append(out, f)
	}
	return out
}

// waitEnd waits up to d for the stream to end and returns the events that
// came before it.
func (c *sseConn) waitEnd(d time.Duration) []sseEvent {
	c.t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	var evs []sseEvent
	for {
		select {
		case it, ok := <-c.items:
			if !ok || it.err != nil {
				return evs
			}
			if it.event != nil {
				evs = append(evs, *it.event)
			}
		case <-timer.C:
			c.t.Fatalf("the stream did not end within %v", d)
		}
	}
}

// apiErrorCode is the code of a JSON error body.
func apiErrorCode(t testing.TB, body string) string {
	t.Helper()
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error.Code == "" {
		t.Fatalf("body %q is not a JSON error", body)
	}
	return e.Error.Code
}

// rawSSE sends an SSE request on a plain TCP connection whose receive
// buffer is rcvBuf bytes, and returns the connection unread.
func rawSSE(t *testing.T, ts *testServer, room, query string, rcvBuf int) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(ts.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	if rcvBuf > 0 {
		_ = conn.(*net.TCPConn).SetReadBuffer(rcvBuf)
	}
	t.Cleanup(func() { conn.Close() })
	path := "/sse/chat/" + room + "/"
	if query != "" {
		path += "?" + query
	}
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n", path); err != nil {
		t.Fatal(err)
	}
	return conn
}

// getJSON GETs url and decodes its JSON answer into out.
func getJSON(t testing.TB, url string, out any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}
