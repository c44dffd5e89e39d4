package main

import (
	"context"
	"flag"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// The failover scenario (issue 10): resilient senders in one room of an
// xroom configured with REDIS_URL=redis://SENTINEL and
// REDIS_SENTINEL_MASTER; the bench fails the primary over (SENTINEL
// FAILOVER, or SIGKILL of the primary) and reports, from outside, how
// long until an ack comes from the new primary, how many sends were
// refused meanwhile, and which acked messages the new primary does not
// have.

// foSwitchWait bounds the wait for +switch-master after the first ack from
// the new primary: the Sentinel's failover-timeout in the suite (10 s) and
// a little more.
const foSwitchWait = 15 * time.Second

// failoverFlags are the failover scenario's own flags.
type failoverFlags struct {
	sentinel    string
	master      string
	fault       string
	ackReplicas int
	before      time.Duration
	after       time.Duration
	recovery    time.Duration // give up waiting for the new primary's first ack after this
	primaryPID  int
	wantRecover time.Duration
}

func (ff *failoverFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&ff.sentinel, "sentinel", "", "failover: the Sentinel the server follows (host:port)")
	fs.StringVar(&ff.master, "master", "mymaster", "failover: the Sentinel's master name (the server's REDIS_SENTINEL_MASTER)")
	fs.StringVar(&ff.fault, "fault", "graceful", "failover: graceful (SENTINEL FAILOVER) or kill (SIGKILL of the primary)")
	fs.IntVar(&ff.ackReplicas, "ack-replicas", 0, "failover: the server's REDIS_ACK_REPLICAS (the bench cannot see it): 1 or more makes any acked message lost a failure")
	fs.DurationVar(&ff.before, "before", 3*time.Second, "failover: sending before the fault")
	fs.DurationVar(&ff.after, "after", 3*time.Second, "failover: sending after the first ack from the new primary")
	fs.DurationVar(&ff.recovery, "recovery-timeout", 90*time.Second, "failover: how long after the fault to wait for an ack from the new primary")
	fs.IntVar(&ff.primaryPID, "primary-pid", 0, "failover, -fault kill: the primary's PID (checked against the process listening on its port; default: that process)")
	fs.DurationVar(&ff.wantRecover, "want-recovery", 0, "failover: target: the first ack of an entry the new primary wrote at most this long after the promotion (a replica answering ROLE master)")
}

// failover runs the scenario; rdb is not used (the Sentinel names the
// nodes).
func failover(ctx context.Context, o *options, f *scenarioFlags, _ redisClient) (*result, error) {
	ff := &f.failover
	res := &result{Scenario: "failover", Params: map[string]any{"fault": ff.fault, "ack_replicas": ff.ackReplicas, "senders": f.senders,
		"rate": f.rate, "window": f.window, "size": o.size, "before": ff.before.String(), "after": ff.after.String()}}
	if ff.sentinel == "" || (ff.fault != "graceful" && ff.fault != "kill") || f.senders < 1 || f.rate <= 0 || f.window < 1 {
		return res, fmt.Errorf("failover: needs -sentinel, -fault graceful or kill, -senders ≥ 1, -rate > 0, -window ≥ 1")
	}
	sc := redis.NewSentinelClient(&redis.Options{Addr: ff.sentinel, DisableIdentity: true})
	defer sc.Close()
	a, err := sc.GetMasterAddrByName(ctx, ff.master).Result()
	if err != nil || len(a) != 2 {
		return res, fmt.Errorf("failover: SENTINEL get-master-addr-by-name %s: %v %v", ff.master, a, err)
	}
	old := a[0] + ":" + a[1]
	primary := redis.NewClient(&redis.Options{Addr: old, PoolSize: 2, DisableIdentity: true})
	defer primary.Close()
	replicas, err := waitReplicas(ctx, sc, primary, ff.master)
	if err != nil {
		return res, err
	}
	r := newRun(o.servers)
	room := r.roomName(0)
	key := messagesKey(o.prefix, room)
	fo := &failoverResult{Fault: ff.fault, AckReplicas: ff.ackReplicas, Replicas: len(replicas), OldPrimary: old}
	res.Failover = fo

	senders := make([]*foSender, f.senders)
	for i := range senders {
		senders[i] = newFoSender(i, r, room, f.rate/float64(f.senders), f.window, o.size)
	}
	defer func() {
		for _, s := range senders {
			s.close()
		}
	}()
	for _, s := range senders {
		if err := s.connect(ctx); err != nil {
			return res, fmt.Errorf("failover: sender %d: %w", s.num, err)
		}
	}
	ob, err := observe(ctx, sc, ff.master, old, key, replicas)
	if err != nil {
		return res, err
	}
	defer ob.close()
	meters := o.startMeters()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	lctx, cancelLoops := context.WithCancel(ctx)
	defer cancelLoops()
	for _, s := range senders {
		wg.Add(1)
		go func() { defer wg.Done(); s.loop(lctx, stop) }()
	}
	stopped := false
	stopSending := func() {
		if !stopped {
			stopped = true
			close(stop)
		}
	}
	defer func() { stopSending(); cancelLoops(); wg.Wait() }()

	sendStart := mono()
	if !sleepOrDone(ctx, ff.before) {
		return res, ctx.Err()
	}
	if ff.fault == "graceful" {
		err = sentinelFailover(ctx, sc, ff.master)
	} else {
		err = killPrimary(old, ff.primaryPID)
	}
	if err != nil {
		return res, err
	}
	ob.setFault(mono())
	if err := waitNewPrimaryAck(ctx, ob, senders, key, ff.recovery); err != nil {
		res.Errors = append(res.Errors, err.Error())
	} else {
		// xroom may follow the new primary before the Sentinel publishes
		// +switch-master (at the end of the failover, once the other
		// replicas are reconfigured): go on until it is seen too.
		for deadline := time.Now().Add(foSwitchWait); ob.switched() == 0 && time.Now().Before(deadline); {
			if !sleepOrDone(ctx, 50*time.Millisecond) {
				return res, ctx.Err()
			}
		}
		if !sleepOrDone(ctx, ff.after) {
			return res, ctx.Err()
		}
	}
	stopSending()
	sendEnd := mono()
	drained := make(chan struct{})
	go func() { wg.Wait(); close(drained) }()
	select { // every send acked, or given up on
	case <-drained:
	case <-time.After(o.drain):
		cancelLoops()
		<-drained
	case <-ctx.Done():
		return res, ctx.Err()
	}
	res.CPU = meters.report()
	ob.close()
	marks, cur := ob.snapshot()
	fo.NewPrimary, fo.Switches = cur, ob.switchList()
	if len(fo.Switches) > 1 {
		res.warn("the Sentinel failed over %d times (%v): the figures after the first switch include the later ones", len(fo.Switches), fo.Switches)
	}
	stream, err := readStream(ctx, cur, key)
	if err != nil {
		return res, err
	}
	fo.fill(res, senders, stream, marks, sendEnd-sendStart)
	fo.check(res, ff)
	return res, nil
}

// waitNewPrimaryAck waits until the Sentinel names a new primary and the
// newest acked entry is on it, and is one it wrote.
func waitNewPrimaryAck(ctx context.Context, ob *observer, senders []*foSender, key string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for sleepOrDone(ctx, 50*time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("failover: no ack from the new primary within %s of the fault", timeout)
		}
		marks, cur := ob.snapshot()
		if cur == ob.old {
			continue
		}
		var newest streamID
		for _, s := range senders {
			s.mu.Lock()
			for _, a := range s.acks {
				newest = maxID(newest, a.ID)
			}
			s.mu.Unlock()
		}
		if marks.HaveBoundary && !marks.Boundary.less(newest) {
			continue
		}
		stream, err := readRange(ctx, cur, key, newest.String(), newest.String())
		if err == nil && len(stream) == 1 {
			return nil
		}
	}
	return ctx.Err()
}

func maxID(a, b streamID) streamID {
	if a.less(b) {
		return b
	}
	return a
}

// readStream is the room's whole stream on addr.
func readStream(ctx context.Context, addr, key string) ([]foStored, error) {
	return readRange(ctx, addr, key, "-", "+")
}

func readRange(ctx context.Context, addr, key, from, to string) ([]foStored, error) {
	cl := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 1, DisableIdentity: true})
	defer cl.Close()
	msgs, err := cl.XRange(ctx, key, from, to).Result()
	if err != nil {
		return nil, fmt.Errorf("failover: XRANGE %s on %s: %w", key, addr, err)
	}
	out := make([]foStored, 0, len(msgs))
	for _, m := range msgs {
		id, err := parseStreamID([]byte(m.ID))
		if err != nil {
			return nil, err
		}
		cid, _ := m.Values["client_id"].(string)
		out = append(out, foStored{ID: id, ClientID: cid})
	}
	return out, nil
}

// fill gathers the senders' records into fo and res.
func (fo *failoverResult) fill(res *result, senders []*foSender, stream []foStored, marks foMarks, span int64) {
	var acks []foAck
	var refused, ackLat []int64
	fo.Gaps = map[string]int64{}
	res.ErrorCodes = map[string]int64{}
	for _, s := range senders {
		s.mu.Lock()
		acks = append(acks, s.acks...)
		refused = append(refused, s.refusedAt...)
		ackLat = append(ackLat, s.ackLat...)
		fo.Sent += s.nextSeq
		fo.Attempts += s.attempts
		fo.Unacked += int64(len(s.pending))
		fo.Reconnects += s.reconnects
		fo.LongestSilence = max(fo.LongestSilence, float64(s.silence)/float64(time.Second))
		for k, v := range s.gaps {
			fo.Gaps[k] += v
		}
		for k, v := range s.codes {
			res.ErrorCodes[k] += v
		}
		s.mu.Unlock()
	}
	fo.Refused = int64(len(refused))
	fo.foFigures = analyzeFailover(acks, refused, stream, marks)
	res.Published, res.Acked, res.PublishErrors = fo.Sent, int64(fo.Acked), fo.Refused
	if span > 0 {
		res.Seconds = float64(span) / float64(time.Second)
		res.MessagesPerSec = float64(fo.Acked) / res.Seconds
	}
	if len(ackLat) > 0 {
		s := summarize(ackLat)
		res.AckLatency = &s
	}
	res.Connections = len(senders)
}

// check adds the failover targets: nothing stored twice, every send acked
// in the end; with REDIS_ACK_REPLICAS ≥ 1 no acked message lost, with 0
// none lost silently; the recovery time when asked.
func (fo *failoverResult) check(res *result, ff *failoverFlags) {
	res.Checks = append(res.Checks,
		check{What: "stored twice / never acked", Target: "0/0", Measured: fmt.Sprintf("%d/%d", fo.Duplicates, fo.Unacked), Pass: fo.Duplicates == 0 && fo.Unacked == 0 && fo.Mismatched == 0})
	if ff.ackReplicas > 0 {
		res.Checks = append(res.Checks, check{What: "acked messages lost", Target: "0", Measured: fmt.Sprint(fo.Lost), Pass: fo.Lost == 0})
	} else {
		res.Checks = append(res.Checks, check{What: "acked messages lost, announced (gap rolled_back or reset)", Target: "none lost silently",
			Measured: fmt.Sprintf("%d lost, %d gaps", fo.Lost, fo.announced()), Pass: fo.Lost == 0 || fo.announced() > 0})
	}
	if ff.wantRecover > 0 { // issue 10: "within 2 s of a promotion"
		what, got := "first new ack after the promotion", fo.FirstNewAfterPromotion
		if fo.PromotedAfterFault == nil { // the promotion was not seen: the switch is the mark
			what, got = "first new ack after +switch-master", fo.FirstNewAfterSwitch
		}
		c := check{What: what, Target: "≤ " + fmtMs(ff.wantRecover), Measured: fmtSecs(got)}
		c.Pass = got != nil && *got <= ff.wantRecover.Seconds()
		res.Checks = append(res.Checks, c)
	}
	if len(res.ErrorCodes) == 0 {
		res.ErrorCodes = nil
	}
	for code, n := range res.ErrorCodes {
		if code != "unavailable" {
			res.Errors = append(res.Errors, fmt.Sprintf("%d sends refused with %s", n, code))
		}
	}
}
