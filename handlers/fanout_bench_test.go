package handlers_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/handlers"
)

// rawSub is a WebSocket subscriber that counts message frames without
// decoding them, so the benchmark measures the server, not the clients.
type rawSub struct {
	conn net.Conn
	br   *bufio.Reader
	h    [10]byte // a frame header being read (a field: no allocation per frame)
}

// dialRaw opens a WebSocket with a hand-written handshake (xroom dialect,
// no history) and returns once the server has sent its ready frame.
func dialRaw(tb testing.TB, base, room string) *rawSub {
	tb.Helper()
	addr := strings.TrimPrefix(base, "http://")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "GET /ws/chat/%s/ HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: %s\r\n\r\n",
		room, addr, handlers.Subprotocol)
	br := bufio.NewReaderSize(conn, 64<<10)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			tb.Fatalf("handshake: %v", err)
		}
		if line == "\r\n" {
			break
		}
	}
	s := &rawSub{conn: conn, br: br}
	_, payload, err := s.frame(nil)
	if err != nil || !strings.Contains(string(payload), `"ready"`) {
		tb.Fatalf("first frame %q, %v; want ready", payload, err)
	}
	return s
}

// frame reads one frame into buf (reused) and returns its opcode and payload.
func (s *rawSub) frame(buf []byte) (byte, []byte, error) {
	h := &s.h
	if _, err := io.ReadFull(s.br, h[:2]); err != nil {
		return 0, nil, err
	}
	n := int(h[1] & 0x7f)
	switch n {
	case 126:
		if _, err := io.ReadFull(s.br, h[2:4]); err != nil {
			return 0, nil, err
		}
		n = int(binary.BigEndian.Uint16(h[2:4]))
	case 127:
		if _, err := io.ReadFull(s.br, h[2:10]); err != nil {
			return 0, nil, err
		}
		n = int(binary.BigEndian.Uint64(h[2:10]))
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	_, err := io.ReadFull(s.br, buf)
	return h[0] & 0x0f, buf, err
}

// count reads until n message frames arrived, adding each to done.
func (s *rawSub) count(n int, done *atomic.Int64) error {
	buf := make([]byte, 4096)
	for got := 0; got < n; {
		op, p, err := s.frame(buf)
		if err != nil {
			return fmt.Errorf("after %d of %d: %w", got, n, err)
		}
		buf = p[:cap(p)]
		if op == 1 && strings.HasPrefix(string(p[:min(len(p), 20)]), `{"type":"message"`) {
			got++
			done.Add(1)
		}
	}
	return nil
}

// BenchmarkFanout measures one room with subs subscribers end to end over
// real sockets and Redis: one op is one message appended and delivered to
// every subscriber. Catch-ups from Redis are counted as catchups/op.
// allocs/delivery is the whole process's allocations
// (server, Redis client, and the benchmark's publisher) per frame delivered.
func BenchmarkFanout(b *testing.B) {
	for _, subs := range []int{10, 100} {
		b.Run(fmt.Sprintf("subs=%d", subs), func(b *testing.B) {
			ts := startServer(b, func(o *options) { o.cfg.HistoryOnJoin = 0 })
			room := "bench"
			clients := make([]*rawSub, subs)
			for i := range clients {
				clients[i] = dialRaw(b, ts.base, room)
			}
			msg := strings.Repeat("x", 64)
			pub := ts.rdb
			b.ReportAllocs()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			errs := make(chan error, subs)
			var delivered atomic.Int64
			for _, c := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_ = c.conn.SetReadDeadline(time.Now().Add(time.Minute))
					if err := c.count(b.N, &delivered); err != nil {
						errs <- err
					}
				}()
			}
			// Publish in pipelines of 100, as many senders would, at most
			// window messages ahead of the average subscriber (a closed
			// loop): the fan-out from the ring is measured, not catch-ups.
			const window = 300
			for i := 0; i < b.N; {
				for int64(i-window)*int64(subs) > delivered.Load() {
					time.Sleep(100 * time.Microsecond)
				}
				p := pub.Pipeline()
				for j := 0; j < 100 && i < b.N; j, i = j+1, i+1 {
					p.XAdd(context.Background(), &redis.XAddArgs{Stream: ts.key(room), Values: []any{"user", "bench", "message", msg}})
				}
				if _, err := p.Exec(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
			runtime.ReadMemStats(&after)
			deliveries := float64(b.N) * float64(subs)
			b.ReportMetric(deliveries/elapsed.Seconds(), "deliveries/s")
			b.ReportMetric(float64(after.Mallocs-before.Mallocs)/deliveries, "allocs/delivery")
			b.ReportMetric(float64(ts.hub.Stats().CatchUps.Load())/float64(b.N), "catchups/op")
		})
	}
}
