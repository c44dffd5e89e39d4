package main

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"time"
)

// idleSettle is the least time idle connections sit before RSS is read
// again, so the server's garbage from the joins has been collected.
const idleSettle = 3 * time.Second

type idleResult struct {
	PID         int     `json:"pid"`
	Conns       int     `json:"connections"`
	RSSBeforeKB int64   `json:"rss_before_kb"`
	RSSAfterKB  int64   `json:"rss_after_kb"`
	KBPerConn   float64 `json:"kb_per_connection"`
	OpenSec     float64 `json:"open_seconds"`
	SeriesKB    []int64 `json:"rss_series_kb"` // once a second while idle
}

// idle opens conns connections spread over rooms rooms that never send, and
// reports the server's RSS growth per connection (VmRSS of /proc/PID/status
// before opening and after they have all been ready for a while).
func idle(ctx context.Context, o *options, f *scenarioFlags, _ redisClient) (*result, error) {
	r := newRun(o.servers)
	res := &result{Scenario: "idle", Params: map[string]any{"connections": f.conns, "rooms": f.rooms, "hold": f.hold.String()}}
	if len(o.servers) != 1 {
		return res, fmt.Errorf("idle: measures one server's RSS: give one -server")
	}
	pids, err := o.serverPIDs()
	if err != nil {
		return res, fmt.Errorf("idle: the server's PID (give -pid): %w", err)
	}
	pid := pids[0]
	before, err := rssKB(pid)
	if err != nil {
		return res, err
	}
	clients := make([]*client, f.conns)
	for i := range clients {
		clients[i] = &client{run: r, num: i, room: r.roomName(i % max(1, f.rooms)), idle: true}
	}
	metricsBefore := scrapeServers(o.servers)
	meters := o.startMeters()
	start := time.Now()
	query := func(c *client) url.Values { return url.Values{"user": {"idle" + strconv.Itoa(c.num)}} }
	err = openAll(ctx, clients, query, o.connectRate, o.connectParallel, o.connectTimeout)
	defer closeAll(clients)
	if err != nil {
		return res, err
	}
	opened := time.Since(start)
	// RSS once a second while the connections sit idle: the last sample is
	// the figure, the series shows whether it had settled.
	var series []int64
	hold := time.After(max(idleSettle, f.hold))
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for done := false; !done; {
		select {
		case <-tick.C:
		case <-hold:
			done = true
		case <-ctx.Done():
			return res, ctx.Err()
		}
		kb, err := rssKB(pid)
		if err != nil {
			return res, err
		}
		series = append(series, kb)
	}
	after := series[len(series)-1]
	res.Server = metricsDelta(metricsBefore, scrapeServers(o.servers))
	var dropped int
	for _, c := range clients {
		select {
		case <-c.done:
			dropped++
		default:
		}
	}
	if dropped > 0 {
		res.Errors = append(res.Errors, fmt.Sprintf("%d idle connections were closed while idle", dropped))
	}
	res.Connections = f.conns
	res.Seconds = time.Since(start).Seconds()
	res.Idle = &idleResult{PID: pid, Conns: f.conns, RSSBeforeKB: before, RSSAfterKB: after,
		KBPerConn: float64(after-before) / float64(f.conns), OpenSec: opened.Seconds(), SeriesKB: series}
	res.CPU = meters.report()
	if f.wantKB > 0 {
		res.Checks = append(res.Checks, check{What: "server RSS per idle connection", Target: fmt.Sprintf("≤ %.0f KB", f.wantKB),
			Measured: fmt.Sprintf("%.1f KB", res.Idle.KBPerConn), Pass: res.Idle.KBPerConn <= f.wantKB})
	}
	return res, nil
}
