package handlers

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// failReason is why a client's frames failed its WebSocket connection
// (the reason label of xroom_websocket_protocol_errors_total).
type failReason int

const (
	failRSV failReason = iota
	failOpcode
	failUnmasked
	failControlFragmented
	failControlTooLong
	failLength
	failStrayContinuation
	failDataInFragments
	failClosePayload
	failCloseCode
	failCloseUTF8
	failUTF8
	failTooLarge
	failReasons // how many
)

var failNames = [failReasons]string{
	"rsv_bits", "bad_opcode", "unmasked", "fragmented_control", "control_too_long", "bad_length",
	"stray_continuation", "data_in_fragments", "close_payload", "close_code", "close_utf8", "bad_utf8", "too_large",
}

// refusal reasons of WebSocket handshakes (xroom_websocket_refused_total).
type refuseReason int

const (
	refusedPerIP    refuseReason = iota // 429, or 1008 right after the upgrade
	refusedFull                         // 503 server_full, or 1013 right after the upgrade
	refusedStopping                     // 503 shutting_down
	refuseReasons
)

var refuseNames = [refuseReasons]string{"too_many_connections", "server_full", "shutting_down"}

// timeoutKind is which bound a connection ran into (xroom_timeouts_total).
type timeoutKind int

const (
	timeoutFirstByte timeoutKind = iota // sent nothing within HEADER_TIMEOUT
	timeoutRequest                      // 408: headers or body too slow
	timeoutWebSocket                    // no frame or pong within PongWait
	timeoutKinds
)

var timeoutNames = [timeoutKinds]string{"first_byte", "request", "websocket"}

// edgeStats count what the network edge refused, and rate-limit the log
// lines about it: one line a second per kind, saying how many were held
// back, so a flood of bad clients cannot flood the log.
type edgeStats struct {
	protocol     [failReasons]atomic.Int64
	refused      [refuseReasons]atomic.Int64
	timeouts     [timeoutKinds]atomic.Int64
	acceptErrors atomic.Int64

	mu     sync.Mutex
	logged map[string]time.Time
	held   map[string]int
}

// logEvery is how often each kind of edge event may be logged.
const logEvery = time.Second

// logf logs msg at level unless a line of the same kind went out within
// logEvery; held_back counts the events not logged since the last line.
func (e *edgeStats) logf(log *slog.Logger, level slog.Level, kind, msg string, args ...any) {
	now := time.Now()
	e.mu.Lock()
	if e.logged == nil {
		e.logged, e.held = map[string]time.Time{}, map[string]int{}
	}
	if now.Sub(e.logged[kind]) < logEvery {
		e.held[kind]++
		e.mu.Unlock()
		return
	}
	held := e.held[kind]
	e.logged[kind], e.held[kind] = now, 0
	e.mu.Unlock()
	if held > 0 {
		args = append(args, "held_back", held)
	}
	log.Log(context.Background(), level, msg, args...)
}

// labelled is one counter per label value, read from count.
func labelled(name, help, label string, names []string, count func(i int) int64) []prometheus.Collector {
	cs := make([]prometheus.Collector, len(names))
	for i, n := range names {
		cs[i] = prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: name, Help: help, ConstLabels: prometheus.Labels{label: n},
		}, func() float64 { return float64(count(i)) })
	}
	return cs
}

// edgeCollectors are the edge's counters.
func (s *Server) edgeCollectors() []prometheus.Collector {
	e := &s.edge
	var cs []prometheus.Collector
	cs = append(cs, labelled("xroom_websocket_protocol_errors_total", "WebSocket connections failed for breaking RFC 6455 or the frame size limit, by reason.",
		"reason", failNames[:], func(i int) int64 { return e.protocol[i].Load() })...)
	cs = append(cs, labelled("xroom_websocket_refused_total", "WebSocket handshakes refused for capacity, by reason (too_many_connections from one address, server_full at MAX_CONNS, shutting_down).",
		"reason", refuseNames[:], func(i int) int64 { return e.refused[i].Load() })...)
	cs = append(cs, labelled("xroom_timeouts_total", "Connections closed for silence: first_byte (nothing sent within HEADER_TIMEOUT), request (408, headers or body too slow), websocket (no frame or pong within the pong wait).",
		"phase", timeoutNames[:], func(i int) int64 { return e.timeouts[i].Load() })...)
	return append(cs,
		counter("xroom_accept_errors_total", "Failed accepts (out of descriptors, ...); each is retried after a pause, never fatal.", e.acceptErrors.Load),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "xroom_tcp_connections_open", Help: "Client TCP connections open now, HTTP and WebSocket.",
		}, func() float64 { return float64(s.TCPOpen()) }),
		counter("xroom_http_connections_refused_total", "Connections refused with 503 and closed at once because the HTTP share of the descriptor budget was full.",
			func() int64 { return int64(s.httpRefused()) }),
	)
}
