package main

import (
	"context"
	"fmt"
	"time"
)

// scenarioFlags are the per-scenario knobs.
type scenarioFlags struct {
	subs     int
	pubs     int
	rate     float64
	rooms    int
	members  int
	senders  int
	window   int
	entries  int
	repeat   int
	conns    int
	hold     time.Duration
	subsList string
	// scale
	roomsList   string
	flat        float64
	today       string
	wantVsToday float64
	// -vs FILE: no worse than that run, within vsTolerance
	vs          string
	vsTolerance float64
	vsNameFlag  string // -vs-name

	wantP99 time.Duration
	// wantRedisConns: the servers' Redis connections at most this.
	wantRedisConns int
	// wantReads: XREAD+XRANGE calls per message at most this.
	wantReads float64
	wantRate  float64
	wantKB    float64
	baseline  float64
	wantRatio float64
	// baselineName names what -baseline measured, for the ratio.
	baselineName string

	failover failoverFlags
}

// newLoad starts a load; it counts Redis commands only with -redis-commands
// (or a target that needs them), the servers' Redis connections whenever
// there is -redis.
func newLoad(o *options, f *scenarioFlags, rdb redisClient) *load {
	l := &load{opts: o, run: newRun(o.servers), conns: rdb}
	if o.redisCommands || f.wantReads > 0 {
		l.rdb = rdb
	}
	return l
}

// checkRedis adds the targets on the servers' Redis work that f asks for.
func (res *result) checkRedis(f *scenarioFlags) {
	res.checkRedisConns(f.wantRedisConns)
	if f.wantReads > 0 {
		c := check{What: "XREAD+XRANGE calls per message", Target: fmt.Sprintf("≤ %.2f", f.wantReads), Measured: "not measured (needs -redis)"}
		if res.Redis != nil {
			c.Measured = fmt.Sprintf("%.2f", res.Redis.ReadsPerMessage)
			c.Pass = res.Redis.ReadsPerMessage <= f.wantReads
		}
		res.Checks = append(res.Checks, c)
	}
}

// checkDeliveries adds the checks of a run whose figure is deliveries:
// nothing lost, p99, rate and Redis's share.
func (res *result) checkDeliveries(f *scenarioFlags) {
	res.checkNoLoss()
	res.checkP99(f.wantP99)
	res.checkMin("deliveries/s", res.DeliveriesPerSec, f.wantRate, "/s")
	res.checkRedis(f)
}

// fanout: subs subscribers and pubs publishers in one room. The publishers'
// own copies of the messages are read but not counted.
func fanout(ctx context.Context, o *options, f *scenarioFlags, rdb redisClient) (*result, error) {
	l := newLoad(o, f, rdb)
	room := l.run.roomName(0)
	res := &result{Scenario: "fanout", Params: map[string]any{"subscribers": f.subs, "publishers": f.pubs, "rate": rateParam(f.rate), "size": o.size, "duration": o.duration.String(), "warmup": o.warmup.String()}}
	for range f.subs {
		l.add(room, true)
	}
	for range f.pubs {
		l.addPublisher(l.add(room, false), f.rate/float64(f.pubs))
	}
	if err := l.execute(ctx, res); err != nil {
		return res, err
	}
	res.checkDeliveries(f)
	rateWhat := ""
	if f.rate <= 0 { // closed loop: the rate is the figure
		rateWhat = "deliveries/s"
	}
	if err := res.checkVs(f, rateWhat, deliveriesPerSec); err != nil {
		return res, err
	}
	if f.baseline > 0 && len(res.Checks) > 0 {
		// How much of Redis's bare append rate the server sustains while
		// also delivering each message to every subscriber.
		res.Checks[len(res.Checks)-1].Ratio = fmt.Sprintf("%.2f × XADD -c 50 in msgs/s", res.MessagesPerSec/f.baseline)
	}
	return res, nil
}

// rooms: rooms rooms of members members each; the first member of each room
// publishes rate/rooms messages per second, and every member, the publisher
// included, checks every message of its room.
func rooms(ctx context.Context, o *options, f *scenarioFlags, rdb redisClient) (*result, error) {
	l := newLoad(o, f, rdb)
	res := &result{Scenario: "rooms", Params: map[string]any{"rooms": f.rooms, "members": f.members, "rate": rateParam(f.rate), "size": o.size, "duration": o.duration.String(), "warmup": o.warmup.String()}}
	if f.rooms < 1 || f.members < 1 {
		return res, fmt.Errorf("rooms: -rooms and -members must be at least 1")
	}
	for k := range f.rooms {
		room := l.run.roomName(k)
		for m := range f.members {
			c := l.add(room, true)
			if m == 0 {
				l.addPublisher(c, f.rate/float64(f.rooms))
			}
		}
	}
	if err := l.execute(ctx, res); err != nil {
		return res, err
	}
	res.checkDeliveries(f)
	return res, res.checkVs(f, "", nil)
}

// ingest: senders senders over rooms rooms (sender i in room i mod rooms),
// each in closed loop; the figure is acknowledged sends per second. Each
// sender also checks the messages of its room.
func ingest(ctx context.Context, o *options, f *scenarioFlags, rdb redisClient) (*result, error) {
	l := newLoad(o, f, rdb)
	res := &result{Scenario: "ingest", Params: map[string]any{"senders": f.senders, "rooms": f.rooms, "window": f.window, "size": o.size, "duration": o.duration.String(), "warmup": o.warmup.String()}}
	if f.rooms < 1 || f.senders < 1 || f.window < 1 || f.window > maxWindow {
		return res, fmt.Errorf("ingest: -senders and -rooms must be at least 1, -window from 1 to %d", maxWindow)
	}
	for i := range f.senders {
		l.addPublisher(l.add(l.run.roomName(i%f.rooms), true), 0).window = f.window
	}
	if err := l.execute(ctx, res); err != nil {
		return res, err
	}
	res.checkNoLoss()
	res.checkMin("acked sends/s", res.MessagesPerSec, f.wantRate, "/s")
	res.checkRedis(f)
	if err := res.checkVs(f, "acked sends/s", messagesPerSec); err != nil {
		return res, err
	}
	if f.baseline > 0 {
		c := check{
			What: "acked sends/s vs " + f.baselineName, Target: fmt.Sprintf("≥ %.2f × %s/s", f.wantRatio, fmtRate(f.baseline)),
			Measured: fmtRate(res.MessagesPerSec) + "/s", Ratio: fmt.Sprintf("%.2f × %s", res.MessagesPerSec/f.baseline, f.baselineName),
			Pass: res.MessagesPerSec >= f.wantRatio*f.baseline,
		}
		if f.wantRatio <= 0 { // -want-ratio 0: a like-for-like comparison, not a target
			c.Target = "(ratio only, no target)"
		}
		res.Checks = append(res.Checks, c)
	}
	return res, nil
}

func rateParam(r float64) any {
	if r <= 0 {
		return "closed loop"
	}
	return r
}
