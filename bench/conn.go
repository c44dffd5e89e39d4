package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"
)

// Subprotocol is the xroom dialect: the bench needs ready and ack frames.
const subprotocol = "xroom.v1"

const (
	handshakeTimeout = 30 * time.Second // a server busy accepting thousands of connections answers late
	sendTimeout      = 30 * time.Second // a write blocked this long means the server stopped reading
	readBufferSize   = 16 << 10         // holds many frames per read syscall at high delivery rates
	writeBufferSize  = 4 << 10          // client frames are small
)

// clockBase is the origin of the bench's monotonic clock: send times in
// payloads and receive times are both read from it, in one process.
var clockBase = time.Now()

func mono() int64 { return int64(time.Since(clockBase)) }

// run is what every connection of one bench run shares.
type run struct {
	id          string   // RUN in payloads and client IDs
	servers     []string // host:port of each server; connection i goes to servers[i mod len]
	measureFrom atomic.Int64
	foreign     atomic.Int64 // message frames not from this run
	gaps        atomic.Int64
	errs        atomic.Int64 // error frames without a publisher to blame, and frames that are not JSON
	lastErr     atomic.Pointer[string]
}

func newRun(servers []string) *run {
	r := &run{id: newRunID(), servers: servers}
	r.measureFrom.Store(-1)
	return r
}

// serverFor is the server connection num talks to: round robin over the
// servers, so with -server a,b the members of a room are split between
// two instances (its first member on a, its second on b, ...).
func (r *run) serverFor(num int) string { return r.servers[num%len(r.servers)] }

func (r *run) noteErr(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	r.lastErr.Store(&s)
}

// client is one WebSocket connection of the bench.
type client struct {
	run   *run
	num   int
	room  string
	ws    *websocket.Conn
	tr    *tracker     // nil: messages are read and dropped
	pub   *publisher   // nil: never sends
	idle  bool         // small buffers
	got   atomic.Int64 // new messages tracked, for the drain; one counter per connection, no contention
	ready chan struct{}
	done  chan struct{} // closed when the reader has ended
	err   error         // why the reader ended, readable after done

	// replay: when set, the reader checks that messages before ready are
	// exactly sequences 0, 1, 2, ... of publisher 0, and counts them.
	replay      bool
	replayCount int64
	replayBad   int64
	readyAt     int64
}

// wsURL is the endpoint of room with the given query.
func wsURL(server, room string, q url.Values) string {
	u := url.URL{Scheme: "ws", Host: server, Path: "/ws/chat/" + url.PathEscape(room) + "/", RawQuery: q.Encode()}
	return u.String()
}

var dialer = websocket.Dialer{
	Subprotocols:     []string{subprotocol},
	HandshakeTimeout: handshakeTimeout,
	ReadBufferSize:   readBufferSize,
	WriteBufferSize:  writeBufferSize,
	NetDialContext:   (&net.Dialer{Timeout: handshakeTimeout}).DialContext,
}

// idleDialer has small buffers: idle connections receive nearly nothing,
// and ten thousand of them should not make the bench itself heavy.
var idleDialer = func() websocket.Dialer {
	d := dialer
	d.ReadBufferSize, d.WriteBufferSize = 1024, 1024
	return d
}()

// dial opens c's connection and starts its reader.
func (c *client) dial(ctx context.Context, q url.Values) error {
	d := &dialer
	if c.idle {
		d = &idleDialer
	}
	ws, resp, err := d.DialContext(ctx, wsURL(c.run.serverFor(c.num), c.room, q), nil)
	if err != nil {
		if resp != nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			return fmt.Errorf("dial %s: %w (HTTP %d: %s)", c.room, err, resp.StatusCode, body)
		}
		return fmt.Errorf("dial %s: %w", c.room, err)
	}
	if ws.Subprotocol() != subprotocol {
		ws.Close()
		return fmt.Errorf("dial %s: the server did not accept subprotocol %s", c.room, subprotocol)
	}
	c.ws = ws
	c.ready = make(chan struct{})
	c.done = make(chan struct{})
	go c.readLoop()
	return nil
}

// readLoop reads every frame until the connection ends.
func (c *client) readLoop() {
	defer close(c.done)
	buf := make([]byte, 0, 1024)
	isReady := false
	for {
		_, r, err := c.ws.NextReader()
		if err != nil {
			c.err = err
			if !isReady {
				close(c.ready)
			}
			return
		}
		buf, err = readAll(r, buf[:0])
		if err != nil {
			c.err = err
			if !isReady {
				close(c.ready)
			}
			return
		}
		now := mono()
		f, err := parseServerFrame(buf)
		if err != nil { // not JSON: a broken server, reported as an error
			c.run.errs.Add(1)
			c.run.noteErr("%v", err)
			continue
		}
		switch f.Kind {
		case kindMessage:
			c.message(f, now, isReady)
		case kindReady:
			if !isReady {
				isReady = true
				c.readyAt = now
				close(c.ready)
			}
		case kindAck:
			if c.pub != nil {
				c.pub.ack(f.ClientID, now)
			}
		case kindError:
			if c.pub != nil && f.ClientID != "" {
				c.pub.fail(f.ClientID, f.Code, f.Message)
			} else {
				c.run.errs.Add(1)
				c.run.noteErr("error frame on %s: %s: %s", c.room, f.Code, f.Message)
			}
		case kindGap:
			c.run.gaps.Add(1)
		}
		// Other frame types (a later version's) are ignored, as the
		// protocol asks of clients.
	}
}

func (c *client) message(f serverFrame, now int64, live bool) {
	run, pub, seq, sent, err := parsePayloadBytes(f.Text)
	if err != nil || string(run) != c.run.id {
		c.run.foreign.Add(1)
		return
	}
	if c.replay && !live {
		if pub != 0 || seq != c.replayCount {
			c.replayBad++
		}
		c.replayCount++
	}
	if c.tr == nil {
		return
	}
	c.tr.order(f.ID)
	if c.tr.record(pub, seq, sent, now, c.run.measureFrom.Load()) {
		c.got.Add(1)
	}
}

// readAll reads r to its end into buf.
func readAll(r io.Reader, buf []byte) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// write sends one text frame.
func (c *client) write(b []byte) error {
	_ = c.ws.SetWriteDeadline(time.Now().Add(sendTimeout))
	return c.ws.WriteMessage(websocket.TextMessage, b)
}

// close ends the connection politely and waits for the reader.
func (c *client) close() {
	if c.ws == nil {
		return
	}
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	select {
	case <-c.done:
	case <-time.After(2 * time.Second):
	}
	c.ws.Close()
	<-c.done
}

// openAll dials every client at no more than rate new connections per
// second (0: no limit), with at most parallel handshakes at a time, and
// waits until each one has had its ready frame.
func openAll(ctx context.Context, clients []*client, query func(*client) url.Values, rate float64, parallel int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	sem := make(chan struct{}, max(1, parallel))
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	start := time.Now()
	for i, c := range clients {
		if rate > 0 {
			due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
				}
			}
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed {
			<-sem
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			err := c.dial(ctx, query(c))
			if err == nil {
				select {
				case <-c.ready:
					if c.err != nil {
						err = fmt.Errorf("connection %d ended before ready: %w", c.num, c.err)
					}
				case <-ctx.Done():
					err = fmt.Errorf("connection %d: no ready frame: %w", c.num, ctx.Err())
				}
			}
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("opening %d connections: %w", len(clients), err)
	}
	return nil
}

// closeAll closes every opened client, in parallel.
func closeAll(clients []*client) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 256)
	for _, c := range clients {
		if c.ws == nil {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			c.close()
			<-sem
		}()
	}
	wg.Wait()
}
