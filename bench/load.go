package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/redis/go-redis/v9"
)

// options are the flags every scenario shares.
type options struct {
	servers         []string // -server: host:port, or several comma-separated
	redisURL        string
	prefix          string
	duration        time.Duration
	warmup          time.Duration
	drain           time.Duration
	size            int
	connectRate     float64
	connectParallel int
	connectTimeout  time.Duration
	pids            []int // -pid: one per server, or none (found by port)
	cpuWarn         float64
	redisCommands   bool
	redisNames      []string // the server's Redis client names, counted in CLIENT LIST
	label           string
}

// load is one publish-and-check run: rooms of connections, some of which
// publish, some (tracked) of which check every message they get.
type load struct {
	opts    *options
	run     *run
	clients []*client
	pubs    []*publisher
	rdb     *redis.Client // counts commands: nil without -redis-commands
	conns   *redis.Client // counts the servers' connections: nil without -redis
}

// roomName names room k of this run: fresh rooms, so no history of earlier
// runs is replayed into the measurement.
func (r *run) roomName(k int) string { return "bench-" + r.id + "-" + strconv.Itoa(k) }

func (l *load) add(room string, tracked bool) *client {
	c := &client{run: l.run, num: len(l.clients), room: room}
	if tracked {
		c.tr = &tracker{}
	}
	l.clients = append(l.clients, c)
	return c
}

func (l *load) addPublisher(c *client, rate float64) *publisher {
	p := newPublisher(len(l.pubs), c, rate, l.opts.size)
	l.pubs = append(l.pubs, p)
	return p
}

// byRoom is the publishers of each room.
func (l *load) byRoom() map[string][]*publisher {
	m := map[string][]*publisher{}
	for _, p := range l.pubs {
		m[p.c.room] = append(m[p.c.room], p)
	}
	return m
}

// serverPIDs are -pid, or the processes listening on the servers' ports.
func (o *options) serverPIDs() ([]int, error) {
	if len(o.pids) > 0 {
		return o.pids, nil
	}
	pids := make([]int, len(o.servers))
	for i, s := range o.servers {
		pid, err := pidListening(s)
		if err != nil {
			return nil, err
		}
		pids[i] = pid
	}
	return pids, nil
}

// execute opens every connection, publishes for the duration, waits until
// every acknowledged message has reached every tracked connection of its
// room (or the drain time passes without progress), and reports.
func (l *load) execute(ctx context.Context, res *result) error {
	o := l.opts
	res.Connections = len(l.clients)
	var sampler *connSampler
	if l.conns != nil && len(o.redisNames) > 0 {
		// From before the first join: the joins read Redis too.
		sampler = sampleRedisConns(l.conns, o.redisNames)
	}
	stopSampling := func() {
		if sampler == nil {
			return
		}
		var err error
		if res.RedisConns, err = sampler.finish(); err != nil {
			res.Errors = append(res.Errors, err.Error())
		}
		sampler = nil
	}
	defer stopSampling()
	query := func(c *client) url.Values { return url.Values{"user": {"b" + strconv.Itoa(c.num)}} }
	if err := openAll(ctx, l.clients, query, o.connectRate, o.connectParallel, o.connectTimeout); err != nil {
		closeAll(l.clients)
		return err
	}
	defer closeAll(l.clients)

	var before redisSnapshot
	if l.rdb != nil {
		var err error
		if before, err = snapshotRedis(ctx, l.rdb); err != nil {
			return err
		}
	}
	metricsBefore := scrapeServers(o.servers)
	meters := o.startMeters()

	start := mono()
	l.run.measureFrom.Store(start + int64(o.warmup))
	stopAt := start + int64(o.warmup+o.duration)
	var wg sync.WaitGroup
	pubErrs := make(chan error, len(l.pubs))
	for i, p := range l.pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			phase := float64(i) / float64(len(l.pubs))
			if err := p.loop(ctx, start, stopAt, phase, o.drain); err != nil {
				pubErrs <- err
			}
		}()
	}
	wg.Wait()
	close(pubErrs)
	for err := range pubErrs {
		res.Errors = append(res.Errors, err.Error())
	}
	pubEnd := mono()

	// Every tracked connection expects every acked message of its room.
	byRoom := l.byRoom()
	var expected int64
	for _, c := range l.clients {
		if c.tr != nil {
			for _, p := range byRoom[c.room] {
				expected += p.acks.Load()
			}
		}
	}
	delivered := func() (n int64) {
		for _, c := range l.clients {
			n += c.got.Load()
		}
		return n
	}
	last, lastAt := delivered(), time.Now()
	for last < expected && time.Since(lastAt) < o.drain && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
		if n := delivered(); n != last {
			last, lastAt = n, time.Now()
		}
	}
	res.CPU = meters.report()
	stopSampling()
	if l.rdb != nil {
		after, err := snapshotRedis(ctx, l.rdb)
		if err != nil {
			return err
		}
		var acked int64
		for _, p := range l.pubs {
			acked += p.acks.Load()
		}
		res.Redis = diffRedis(before, after, acked)
	}
	res.Server = metricsDelta(metricsBefore, scrapeServers(o.servers))
	closeAll(l.clients)
	l.collect(res, pubEnd)
	return nil
}

// collect fills res from the publishers and trackers (their readers ended).
func (l *load) collect(res *result, pubEnd int64) {
	measureFrom := l.run.measureFrom.Load()
	var ackLat, lateness []int64
	res.ErrorCodes = map[string]int64{}
	var measuredAcks int64
	for _, p := range l.pubs {
		res.Published += p.sent.Load()
		res.Acked += p.acks.Load()
		res.PublishErrors += p.fails.Load()
		res.InFlightMax = max(res.InFlightMax, p.inFlightMax)
		ackLat = append(ackLat, p.ackLat...)
		lateness = append(lateness, p.lateness...)
		measuredAcks += int64(len(p.ackLat))
		for k, v := range p.errCodes {
			res.ErrorCodes[k] += v
		}
		if p.dupAcks > 0 || p.badAcks > 0 {
			res.Errors = append(res.Errors, fmt.Sprintf("publisher %d: %d repeated acks, %d acks for unknown client IDs", p.num, p.dupAcks, p.badAcks))
		}
	}
	if len(res.ErrorCodes) == 0 {
		res.ErrorCodes = nil
	}
	byRoom := l.byRoom()
	var all []int64
	var measured, lastRecv int64
	for _, c := range l.clients {
		t := c.tr
		if t == nil {
			continue
		}
		var loss int64
		for _, p := range byRoom[c.room] {
			loss += t.lost(p.num, &p.acked)
		}
		sum := summarize(t.lat)
		res.Subscribers = append(res.Subscribers, subResult{
			Conn: c.num, Room: c.room, Deliveries: t.unique, Loss: loss, Duplicates: t.dups, Reordered: t.reorders,
			P50: sum.P50, P99: sum.P99, Max: sum.Max,
		})
		res.Deliveries += t.unique
		res.Loss += loss
		res.Duplicates += t.dups
		res.Reordered += t.reorders
		res.IDRegressions += t.idRegress
		measured += t.measured
		lastRecv = max(lastRecv, t.lastRecv)
		all = append(all, t.lat...)
		t.lat = nil
	}
	// Rates count what was sent after the warm-up, up to the last delivery
	// (or, with no receivers, the last ack).
	end := max(lastRecv, pubEnd)
	span := float64(end-measureFrom) / float64(time.Second)
	res.Seconds = span
	if span > 0 {
		res.DeliveriesPerSec = float64(measured) / span
		res.MessagesPerSec = float64(measuredAcks) / float64(pubEnd-measureFrom) * float64(time.Second)
	}
	if len(all) > 0 {
		s := summarize(all)
		res.Latency = &s
	}
	if len(ackLat) > 0 {
		s := summarize(ackLat)
		res.AckLatency = &s
	}
	if len(lateness) > 0 {
		s := summarize(lateness)
		res.SendLateness = &s
	}
	res.Foreign = l.run.foreign.Load()
	res.Gaps = l.run.gaps.Load()
	if n := l.run.errs.Load(); n > 0 {
		res.Errors = append(res.Errors, fmt.Sprintf("%d error frames or frames that are not JSON", n))
	}
	if res.PublishErrors > 0 {
		res.Errors = append(res.Errors, fmt.Sprintf("%d sends refused: %v", res.PublishErrors, res.ErrorCodes))
	}
	if e := l.run.lastErr.Load(); e != nil && !res.correct() {
		res.Errors = append(res.Errors, "last error: "+*e)
	}
	for _, c := range l.clients {
		if c.err != nil && c.tr != nil && !isNormalClose(c.err) {
			res.Errors = append(res.Errors, fmt.Sprintf("connection %d ended: %v", c.num, c.err))
			break
		}
	}
	l.warnings(res)
}

// othersWarn is the CPU (in cores) that processes other than the bench, the
// server and Redis may use during a run before the figures count as
// disturbed (the machine is shared).
const othersWarn = 0.25

// warnings flags runs whose figures the bench itself may have limited.
func (l *load) warnings(res *result) {
	o := l.opts
	if res.CPU.Bench >= o.cpuWarn {
		res.warn("the bench used %.2f cores (of %d): it may be the bottleneck, figures are a lower bound", res.CPU.Bench, res.CPU.Cores)
	}
	var want float64
	for _, p := range l.pubs {
		want += p.rate
	}
	if want > 0 {
		got := float64(res.Published) / o.duration.Seconds() / (1 + o.warmup.Seconds()/o.duration.Seconds())
		if got < 0.97*want {
			res.warn("publishers sent %.0f msgs/s, below the fixed rate %.0f: the bench or the server could not keep up", got, want)
		}
		if res.SendLateness != nil && res.SendLateness.P99 > 5 {
			res.warn("fixed-rate sends left late against their schedule by up to %.1f ms (p99 %.1f ms): the bench did not get a CPU in time (load average %s); latencies include such stalls of the whole machine",
				res.SendLateness.Max, res.SendLateness.P99, loadAvg())
		}
	}
}

// isNormalClose tells the bench's own closing of a connection from a failure.
func isNormalClose(err error) bool {
	return errors.Is(err, net.ErrClosed) || websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway)
}

// checkLatency and checkRate add the usual targets.
func (res *result) checkP99(want time.Duration) {
	if want <= 0 || res.Latency == nil {
		if want > 0 {
			res.Checks = append(res.Checks, check{What: "p99", Target: "≤ " + fmtMs(want), Measured: "no deliveries", Pass: false})
		}
		return
	}
	res.Checks = append(res.Checks, check{
		What: "p99", Target: "≤ " + fmtMs(want), Measured: fmt.Sprintf("%.2f ms", res.Latency.P99),
		Pass: res.Latency.P99 <= float64(want)/float64(time.Millisecond),
	})
}

func (res *result) checkMin(what string, got, want float64, unit string) {
	if want <= 0 {
		return
	}
	res.Checks = append(res.Checks, check{What: what, Target: "≥ " + fmtRate(want) + unit, Measured: fmtRate(got) + unit, Pass: got >= want})
}

func (res *result) checkNoLoss() {
	res.Checks = append(res.Checks, check{
		What: "lost/dup/reordered", Target: "0/0/0",
		Measured: fmt.Sprintf("%d/%d/%d", res.Loss, res.Duplicates, res.Reordered+res.IDRegressions),
		Pass:     res.correct(),
	})
}

func fmtMs(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', -1, 64) + " ms"
}
