package netedge

import (
	"errors"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// flaky is a listener whose Accept fails with errs first.
type flaky struct {
	net.Listener
	mu   sync.Mutex
	errs []error
}

func (f *flaky) Accept() (net.Conn, error) {
	f.mu.Lock()
	if len(f.errs) > 0 {
		err := f.errs[0]
		f.errs = f.errs[1:]
		f.mu.Unlock()
		return nil, err
	}
	f.mu.Unlock()
	return f.Listener.Accept()
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func TestAcceptRetriesErrorsWithGrowingPauses(t *testing.T) {
	emfile := &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	errs := []error{emfile, emfile, emfile, emfile, syscall.ENFILE, syscall.ECONNABORTED}
	var pauses []time.Duration
	l := Wrap(&flaky{Listener: listen(t), errs: errs}, Options{AcceptError: func(err error, pause time.Duration) {
		pauses = append(pauses, pause)
	}})
	go func() {
		c, err := net.Dial("tcp", l.Addr().String())
		if err == nil {
			defer c.Close()
			time.Sleep(time.Second)
		}
	}()
	c, err := l.Accept()
	if err != nil {
		t.Fatalf("Accept: %v, want the connection after the errors", err)
	}
	c.Close()
	want := []time.Duration{5, 10, 20, 40, 80, 160}
	for i := range want {
		want[i] *= time.Millisecond
	}
	if len(pauses) != len(want) {
		t.Fatalf("pauses %v, want %v", pauses, want)
	}
	for i := range want {
		if pauses[i] != want[i] {
			t.Fatalf("pauses %v, want %v", pauses, want)
		}
	}
}

func TestPausesDoubleUpToASecond(t *testing.T) {
	var p time.Duration
	var got []time.Duration
	for range 12 {
		p = nextPause(p)
		got = append(got, p)
	}
	if got[0] != minAcceptPause || got[5] != 32*minAcceptPause || got[8] != maxAcceptPause || got[11] != maxAcceptPause {
		t.Fatalf("pauses %v: want 5 ms doubling to 1 s", got)
	}
}

// Close ends a pause at once, with the error the HTTP server takes for a
// shutdown (fasthttp looks for "use of closed network connection").
func TestCloseEndsAPause(t *testing.T) {
	errs := make([]error, 100)
	for i := range errs {
		errs[i] = syscall.EMFILE
	}
	paused := make(chan struct{}, 100)
	l := Wrap(&flaky{Listener: listen(t), errs: errs}, Options{AcceptError: func(error, time.Duration) { paused <- struct{}{} }})
	done := make(chan error, 1)
	go func() { _, err := l.Accept(); done <- err }()
	for range 8 { // the pause is now 640 ms
		<-paused
	}
	start := time.Now()
	l.Close()
	err := <-done
	if !errors.Is(err, net.ErrClosed) || !strings.Contains(err.Error(), "use of closed network connection") {
		t.Fatalf("Accept: %v", err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("Accept returned %v after Close", d)
	}
}

// A connection that sends nothing times out at FirstByte and is reported
// once; one that spoke is not reported for a later timeout.
func TestFirstByteDeadline(t *testing.T) {
	var mu sync.Mutex
	var silent []string
	l := Wrap(listen(t), Options{FirstByte: 300 * time.Millisecond, Silent: func(a net.Addr) {
		mu.Lock()
		silent = append(silent, a.String())
		mu.Unlock()
	}})
	quiet, c := pair(t, l)
	start := time.Now()
	buf := make([]byte, 8)
	if _, err := c.Read(buf); !isTimeout(err) {
		t.Fatalf("read: %v, want a timeout", err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("timed out after %v, want about 300 ms", d)
	}
	_, _ = c.Read(buf) // a second timeout is not reported again
	c.Close()

	talker, c := pair(t, l)
	if _, err := talker.Write([]byte("GET")); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(buf); n != 3 || err != nil {
		t.Fatalf("read %d, %v", n, err)
	}
	_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := c.Read(buf); !isTimeout(err) {
		t.Fatalf("read: %v, want a timeout", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(silent) != 1 || silent[0] != quiet.LocalAddr().String() {
		t.Fatalf("reported silent: %v, want only %s", silent, quiet.LocalAddr())
	}
}

// pair dials l and accepts: the client's end and the server's.
func pair(t *testing.T, l net.Listener) (client, server net.Conn) {
	t.Helper()
	client, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	if server, err = l.Accept(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	return client, server
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestOpenCountsEachConnectionOnce(t *testing.T) {
	l := Wrap(listen(t), Options{})
	var conns []net.Conn
	for range 3 {
		_, c := pair(t, l)
		conns = append(conns, c)
	}
	if n := l.Open(); n != 3 {
		t.Fatalf("Open %d, want 3", n)
	}
	conns[0].Close()
	conns[0].Close() // fasthttp closes a hijacked connection again after its handler
	if n := l.Open(); n != 2 {
		t.Fatalf("Open %d after closing one twice, want 2", n)
	}
	if err := conns[1].(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
}
