package streams

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// RedisMetrics counts Redis round trips and errors. Install its hooks on
// the clients (Hook for request/response clients, BlockingHook for the
// tail client, whose XREAD BLOCK waits are not round-trip times) and
// register it with a prometheus.Registry.
type RedisMetrics struct {
	rtt    prometheus.Histogram
	errors *prometheus.CounterVec
}

// NewRedisMetrics returns unregistered Redis metrics.
func NewRedisMetrics() *RedisMetrics {
	return &RedisMetrics{
		rtt: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "xroom_redis_rtt_seconds",
			Help:    "Time from sending a Redis command (or pipeline) to its reply, blocking tail reads excluded.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xroom_redis_errors_total",
			Help: "Redis commands that failed (connection, timeout or error reply), by command; a pipeline counts each failed command.",
		}, []string{"op"}),
	}
}

// Describe implements prometheus.Collector.
func (m *RedisMetrics) Describe(ch chan<- *prometheus.Desc) {
	m.rtt.Describe(ch)
	m.errors.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *RedisMetrics) Collect(ch chan<- prometheus.Metric) {
	m.rtt.Collect(ch)
	m.errors.Collect(ch)
}

// Hook is the go-redis hook of a client whose commands answer at once.
func (m *RedisMetrics) Hook() redis.Hook { return redisHook{m: m} }

// BlockingHook is the hook of the tail client: errors only.
func (m *RedisMetrics) BlockingHook() redis.Hook { return redisHook{m: m, blocking: true} }

type redisHook struct {
	m        *RedisMetrics
	blocking bool
}

func (h redisHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

func (h redisHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmd)
		if !h.blocking {
			h.m.rtt.Observe(time.Since(start).Seconds())
		}
		if failed(err) {
			h.m.errors.WithLabelValues(cmd.Name()).Inc()
		}
		return err
	}
}

func (h redisHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmds)
		if !h.blocking {
			h.m.rtt.Observe(time.Since(start).Seconds())
		}
		own := false
		for _, c := range cmds {
			if c.Err() != nil {
				own = true
			}
			if failed(c.Err()) {
				h.m.errors.WithLabelValues(c.Name()).Inc()
			}
		}
		if !own && failed(err) {
			// The pipeline failed as a whole (no connection): go-redis
			// may leave its commands without an error of their own.
			for _, c := range cmds {
				h.m.errors.WithLabelValues(c.Name()).Inc()
			}
		}
		return err
	}
}

// failed tells a Redis failure from an empty reply, a caller that went away,
// or NOSCRIPT: the first EVALSHA after a start, restart or SCRIPT FLUSH,
// answered by sending the script itself (Store.runScript).
func failed(err error) bool {
	return err != nil && !errors.Is(err, redis.Nil) && !errors.Is(err, context.Canceled) && !noScript(err)
}

// lagBuckets span a healthy tail (under a millisecond) to a stalled one.
var lagBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

func newLagHistogram() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "xroom_tail_lag_seconds",
		Help:    "Time from an entry's ID timestamp (when Redis added it) to its tail read by this process.",
		Buckets: lagBuckets,
	})
}

// observeLag records how long after its ID time each entry was read.
func (h *Hub) observeLag(now time.Time, es []*Entry) {
	ms := uint64(now.UnixMilli())
	for _, e := range es {
		lag := 0.0
		if ms > e.ID.Ms {
			lag = float64(ms-e.ID.Ms) / 1000
		}
		h.lag.Observe(lag)
	}
}

// Collectors are the hub's and its store's metrics, read at scrape time
// from counters the hot paths keep with atomic adds.
func (h *Hub) Collectors() []prometheus.Collector {
	counter := func(name, help string, v func() int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(v()) })
	}
	return []prometheus.Collector{
		h.lag,
		counter("xroom_messages_appended_total", "Messages this process stored in Redis (duplicates of a client_id not counted).", h.store.appended.Load),
		counter("xroom_appends_unreplicated_total", "Appends stored but refused as unavailable because WAIT did not confirm REDIS_ACK_REPLICAS replicas in time.", h.store.notReplicated.Load),
		counter("xroom_rollbacks_total", "Rooms whose delivered entries were found gone after a primary change (a failover rolled them back); their connections got gap rolled_back.", h.stats.RollBacks.Load),
		counter("xroom_acked_lost_total", "Acknowledged entries found gone from Redis before the tail read them (a failover with REDIS_ACK_REPLICAS=0); their senders got gap rolled_back.", h.stats.LostAcked.Load),
		counter("xroom_catchups_total", "Reads from Redis by a connection that fell behind its room's in-memory buffer.", h.stats.CatchUps.Load),
		counter("xroom_tail_reads_total", "XREAD commands the tail sent (one may read many rooms).", h.stats.TailReads.Load),
		counter("xroom_tail_errors_total", "Tail reads that failed (retried with backoff).", h.stats.TailErrors.Load),
		counter("xroom_tail_rings_total", "Keyspace notifications heard by the tail (tail mode notify).", h.stats.Rings.Load),
		counter("xroom_tail_reconnects_total", "Times the tail's notification connection was lost (made again at once).", h.stats.Reconnects.Load),
		counter("xroom_tail_stalls_total", "Times a room could not be tailed for longer than the stall bound; its clients were told unavailable.", h.stats.Stalls.Load),
		counter("xroom_entries_skipped_total", "Stream entries without a message field, never shown to clients.", h.stats.Skipped.Load),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "xroom_rooms_tailed", Help: "Rooms this process tails now."},
			func() float64 { return float64(h.Rooms()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "xroom_tail_healthy", Help: "1 while every tailed room can be tailed, 0 while some cannot (see /readyz)."},
			func() float64 {
				if h.Health() != nil {
					return 0
				}
				return 1
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "xroom_tail_mode", Help: "The tail mode in force: 0 not chosen yet, 1 notify, 2 blocking, 3 poll."},
			func() float64 { return float64(h.Mode()) }),
	}
}
