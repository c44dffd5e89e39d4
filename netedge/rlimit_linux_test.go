package netedge

import (
	"errors"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/xroom/xroom/internal/testkit"
)

func TestRaiseFileLimit(t *testing.T) {
	soft, hard, err := RaiseFileLimit()
	if err != nil {
		t.Fatal(err)
	}
	if soft != hard || soft == 0 {
		t.Fatalf("soft %d, hard %d: want the soft limit raised to the hard one", soft, hard)
	}
}

// Out of descriptors for real: with every descriptor under a lowered
// soft limit taken, accepts fail with EMFILE and are retried, and the
// waiting clients are accepted once descriptors are free again. (The
// test binary is its own process, and the limit is restored after.)
func TestAcceptLivesThroughEMFILE(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var failures atomic.Int64
	l := Wrap(ln, Options{AcceptError: func(err error, _ time.Duration) {
		if !errors.Is(err, syscall.EMFILE) {
			t.Errorf("accept error %v, want EMFILE", err)
		}
		failures.Add(1)
	}})
	const clients = 8 // waiting in the listen backlog
	for range clients {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	highest := 0
	for _, fd := range fds {
		n, _ := strconv.Atoi(fd.Name())
		highest = max(highest, n)
	}
	low := syscall.Rlimit{Cur: uint64(highest + 16), Max: old.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	defer syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old)
	var filler []*os.File // every descriptor left under the limit
	for {
		f, err := os.Open(os.DevNull)
		if err != nil {
			break
		}
		filler = append(filler, f)
	}

	accepted := make(chan net.Conn, clients)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	testkit.Eventually(t, 10*time.Second, "a failed accept", func() bool { return failures.Load() > 0 })
	for _, f := range filler {
		f.Close()
	}
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old)
	for i := range clients {
		select {
		case c := <-accepted:
			c.Close()
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d accepted after descriptors were freed", i, clients)
		}
	}
	t.Logf("%d accepts failed with EMFILE and were retried", failures.Load())
}
