package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/streams"
)

// countingConn is a net.Conn that keeps what is written and counts writes.
type countingConn struct {
	net.Conn
	buf     bytes.Buffer
	writes  int
	discard bool
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes++
	if !c.discard {
		c.buf.Write(p)
	}
	return len(p), nil
}

func (c *countingConn) SetWriteDeadline(time.Time) error { return nil }

// BenchmarkEncodeMessage is the once-per-entry cost: JSON and frame header.
func BenchmarkEncodeMessage(b *testing.B) {
	e := &streams.Entry{ID: streams.ID{Ms: 1732380000000, Seq: 7}, User: "alice", Message: strings.Repeat("x", 64), ClientID: "c-17", HasMessage: true}
	b.ReportAllocs()
	for b.Loop() {
		_ = EncodeMessage("lobby", e)
	}
}

// BenchmarkFanoutPass is the per-delivery cost of the live path: a
// connection's writer takes the entries after its cursor from the room's
// ring (Subscription.Next) and gathers their frames into one write. One op
// is one frame delivered to one connection; 64-byte messages.
func BenchmarkFanoutPass(b *testing.B) {
	rs := redistest.Shared(b)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer rdb.Close()
	store := streams.NewStore(rdb, streams.Options{Prefix: redistest.Prefix(b)})
	hub := streams.NewHub(store, redis.NewClient(&redis.Options{Addr: rs.Addr}), streams.HubOptions{Encode: EncodeMessage, Buffer: 4096, Block: time.Second})
	defer hub.Close()
	ctx := context.Background()
	sub, err := hub.Subscribe(ctx, "bench", func() {})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close()
	start := sub.Head()
	const entries = 2048
	pipe := rdb.Pipeline()
	for i := range entries {
		pipe.XAdd(ctx, &redis.XAddArgs{Stream: store.Keys().Messages("bench"), Values: []any{"user", "bench", "message", fmt.Sprintf("%064d", i)}})
	}
	cmds, err := pipe.Exec(ctx)
	if err != nil {
		b.Fatal(err)
	}
	last, _ := streams.ParseID(cmds[len(cmds)-1].(*redis.StringCmd).Val())
	for deadline := time.Now().Add(10 * time.Second); sub.Head().Less(last); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatal("the tail did not read the entries")
		}
	}
	for _, batch := range []int{1, 16, batchSize} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			conn := &countingConn{discard: true}
			w := wire{conn: conn}
			buf := make([]*streams.Entry, 0, batch)
			cursor := start
			b.ReportAllocs()
			b.ResetTimer()
			for n := 0; n < b.N; {
				es, next, err := sub.Next(ctx, cursor, buf)
				if err != nil {
					b.Fatal(err)
				}
				if len(es) == 0 {
					cursor = start // round again; the ring holds them all
					continue
				}
				for _, e := range es {
					if err := w.data(e.Frame); err != nil {
						b.Fatal(err)
					}
				}
				if err := w.flush(); err != nil {
					b.Fatal(err)
				}
				w.release()
				n += len(es)
				cursor = next
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/float64(conn.writes), "frames/write")
			if hub.Stats().CatchUps.Load() != 0 {
				b.Fatal("the benchmark read Redis: it measures the ring path only")
			}
		})
	}
}

// BenchmarkEncodeMessageJSON is the encoding/json way, for comparison (it
// was the encoder before the hand-written one, and had no frame header).
func BenchmarkEncodeMessageJSON(b *testing.B) {
	e := &streams.Entry{ID: streams.ID{Ms: 1732380000000, Seq: 7}, User: "alice", Message: strings.Repeat("x", 64), ClientID: "c-17", HasMessage: true}
	b.ReportAllocs()
	for b.Loop() {
		f := newMessageFrame("lobby", e)
		f.Type = "message"
		_, _ = json.Marshal(f)
	}
}
