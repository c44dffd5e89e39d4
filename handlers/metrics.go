package handlers

import (
	"sync/atomic"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// serverStats are the WebSocket counters, kept with atomic adds on the hot
// paths (one add per write pass, not per frame) and read at scrape time.
type serverStats struct {
	open        [dialectCount]atomic.Int64 // by dialect (dialects)
	opened      [dialectCount]atomic.Int64
	delivered   atomic.Int64 // message frames written
	writes      atomic.Int64 // write system calls to WebSocket connections
	writeErrors atomic.Int64
	replay      prometheus.Histogram
}

// Dialects of chat connections, the label of the connection metrics.
const (
	dialectXroom      = iota // WebSocket with xroom.v1
	dialectCompatible        // WebSocket without it
	dialectSSE               // Server-Sent Events (sse.go)
	dialectCount
)

var dialects = [dialectCount]string{"xroom", "compatible", "sse"}

func (s *session) dialect() int {
	if s.compat {
		return dialectCompatible
	}
	return dialectXroom
}

func newServerStats() *serverStats {
	return &serverStats{replay: prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "xroom_replay_entries",
		Help:    "Entries replayed to a connection at join, before its ready frame.",
		Buckets: []float64{0, 1, 10, 50, 100, 500, 1000, 5000, 10000, 50000, 100000},
	})}
}

// Collectors are the server's metrics (the hub's are its own: see
// streams.Hub.Collectors), for the caller to register.
func (s *Server) Collectors() []prometheus.Collector {
	st := s.stats
	var cs []prometheus.Collector
	for i, d := range dialects {
		cs = append(cs,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "xroom_connections_open", Help: "Chat connections open now, by dialect (xroom and compatible: WebSocket; sse: Server-Sent Events).",
				ConstLabels: prometheus.Labels{"dialect": d},
			}, func() float64 { return float64(st.open[i].Load()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "xroom_connections_total", Help: "Chat connections accepted, by dialect (xroom and compatible: WebSocket; sse: Server-Sent Events).",
				ConstLabels: prometheus.Labels{"dialect": d},
			}, func() float64 { return float64(st.opened[i].Load()) }),
		)
	}
	cs = append(cs,
		counter("xroom_messages_delivered_total", "Messages written to chat connections, WebSocket frames and SSE events (live and replayed).", st.delivered.Load),
		counter("xroom_websocket_writes_total", "Write system calls to WebSocket connections; each carries every frame a write pass gathered.", st.writes.Load),
		counter("xroom_websocket_write_errors_total", "Writes to a WebSocket connection that failed (the connection is then closed).", st.writeErrors.Load),
		st.replay,
	)
	return append(cs, s.edgeCollectors()...)
}

// counter is a counter read from value when scraped.
func counter(name, help string, value func() int64) prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(value()) })
}

// metricsHandler serves g in the Prometheus text format.
func metricsHandler(g prometheus.Gatherer) fiber.Handler {
	return adaptor.HTTPHandler(promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
}

// count adds what the pass wrote to the metrics: its messages to the
// delivered count when it succeeded, and a WebSocket's writes, and its
// failed write unless the connection was ended on purpose.
func (w *writer) count(err error) {
	frames, writes, failed := w.wire.tally()
	st := w.srv.stats
	if writes > 0 {
		st.writes.Add(int64(writes))
	}
	if frames > 0 && err == nil {
		st.delivered.Add(int64(frames))
	}
	if failed > 0 && w.phase() != phaseClosed {
		st.writeErrors.Add(1)
	}
}

// opened and closed keep the connection gauges.
func (s *Server) opened(conn chatConn) {
	d := conn.dialect()
	s.stats.open[d].Add(1)
	s.stats.opened[d].Add(1)
}

func (s *Server) closed(conn chatConn) { s.stats.open[conn.dialect()].Add(-1) }
