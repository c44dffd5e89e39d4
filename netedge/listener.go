// Package netedge is what stands between the network and the HTTP server:
// a listener that lives through running out of descriptors and closes
// connections that never speak, and the split of the process's descriptor
// limit between Redis, HTTP and WebSocket connections.
package netedge

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// minAcceptPause is the first wait after a failed accept: a descriptor
	// freed by a closing connection is often there again within milliseconds.
	minAcceptPause = 5 * time.Millisecond
	// maxAcceptPause caps the doubling waits: whatever is freed is used
	// within a second, and a spinning accept loop would burn a core.
	maxAcceptPause = time.Second
)

// Options say how a Listener treats what it accepts.
type Options struct {
	// FirstByte bounds how long a new connection may stay silent: a read
	// deadline set at accept, which the HTTP server replaces with its own
	// once the request has begun. (fasthttp with ReduceMemoryUsage reads a
	// connection's first byte with no deadline at all.) 0: none.
	FirstByte time.Duration
	// AcceptError is told of each failed accept and of the pause before
	// the next try (it is called for every one: rate-limit its logging).
	AcceptError func(err error, pause time.Duration)
	// Silent is told when a connection's FirstByte deadline passes before
	// it sent a byte; the HTTP server then closes it.
	Silent func(remote net.Addr)
}

// Listener wraps a net.Listener: Accept returns only connections or, once
// the listener is closed, net.ErrClosed. Every other error (EMFILE, ENFILE,
// ENOBUFS, ...) is retried after a pause, so a server out of descriptors
// refuses for a while instead of exiting.
type Listener struct {
	net.Listener
	opts      Options
	open      atomic.Int64
	done      chan struct{}
	closeOnce sync.Once
}

// Wrap returns ln with the behaviour of opts.
func Wrap(ln net.Listener, opts Options) *Listener {
	return &Listener{Listener: ln, opts: opts, done: make(chan struct{})}
}

// Open is how many accepted connections are not closed yet.
func (l *Listener) Open() int64 { return l.open.Load() }

// Accept waits for the next connection; see Listener.
func (l *Listener) Accept() (net.Conn, error) {
	var pause time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			return l.wrap(c), nil
		}
		if errors.Is(err, net.ErrClosed) {
			return nil, err
		}
		pause = nextPause(pause)
		if l.opts.AcceptError != nil {
			l.opts.AcceptError(err, pause)
		}
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-l.done:
			t.Stop()
			return nil, &net.OpError{Op: "accept", Net: l.Addr().Network(), Addr: l.Addr(), Err: net.ErrClosed}
		}
	}
}

// nextPause doubles the pause after a failed accept, within its bounds.
func nextPause(p time.Duration) time.Duration {
	return min(max(2*p, minAcceptPause), maxAcceptPause)
}

// Close stops accepting; it also ends a pause after a failed accept.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

func (l *Listener) wrap(c net.Conn) net.Conn {
	if l.opts.FirstByte > 0 {
		if err := c.SetReadDeadline(time.Now().Add(l.opts.FirstByte)); err != nil {
			_ = c.Close()
			return c // closed: the server's first read fails and it moves on
		}
	}
	l.open.Add(1)
	return &conn{Conn: c, l: l}
}

// conn counts itself out of its listener once, and notices a connection
// that timed out before sending anything.
type conn struct {
	net.Conn
	l      *Listener
	spoke  bool // a read has returned bytes; reads never run concurrently
	closed atomic.Bool
}

func (c *conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.spoke = true
	} else if err != nil && !c.spoke && errors.Is(err, os.ErrDeadlineExceeded) {
		c.spoke = true // told once
		if c.l.opts.Silent != nil {
			c.l.opts.Silent(c.RemoteAddr())
		}
	}
	return n, err
}

func (c *conn) Close() error {
	if !c.closed.Swap(true) {
		c.l.open.Add(-1)
	}
	return c.Conn.Close()
}

// CloseWrite sends a FIN where the connection supports it (TCP): a
// WebSocket that failed still delivers its close frame, and the client's
// unread bytes do not turn the close into a reset.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}
