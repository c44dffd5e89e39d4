package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// result is everything one scenario run reports; -json prints it as is.
type result struct {
	Scenario string         `json:"scenario"`
	Label    string         `json:"label,omitempty"`
	Params   map[string]any `json:"params"`
	Started  time.Time      `json:"started"`
	Seconds  float64        `json:"seconds"` // measured span

	Connections int `json:"connections,omitempty"`

	Published      int64            `json:"published,omitempty"` // sends
	Acked          int64            `json:"acked,omitempty"`
	PublishErrors  int64            `json:"publish_errors,omitempty"`
	ErrorCodes     map[string]int64 `json:"error_codes,omitempty"`
	MessagesPerSec float64          `json:"messages_per_sec,omitempty"` // acked sends per second
	// InFlightMax is the most sends one publisher had awaiting their ack at
	// once (closed loop: at most -window).
	InFlightMax      int64   `json:"in_flight_max,omitempty"`
	Deliveries       int64   `json:"deliveries,omitempty"`
	DeliveriesPerSec float64 `json:"deliveries_per_sec,omitempty"`
	// Latency is from send to receipt by a subscriber, of every delivery of
	// a message sent after the warm-up; AckLatency from send to ack.
	Latency    *latencySummary `json:"latency,omitempty"`
	AckLatency *latencySummary `json:"ack_latency,omitempty"`
	// SendLateness is how late fixed-rate sends left against their schedule.
	SendLateness *latencySummary `json:"send_lateness,omitempty"`

	Loss          int64 `json:"loss"`
	Duplicates    int64 `json:"duplicates"`
	Reordered     int64 `json:"reordered"`
	IDRegressions int64 `json:"id_regressions"`
	Foreign       int64 `json:"foreign,omitempty"` // message frames of other runs or not from the bench
	Gaps          int64 `json:"gaps,omitempty"`

	Subscribers []subResult `json:"subscribers,omitempty"`

	Replay *replayResult  `json:"replay,omitempty"`
	Idle   *idleResult    `json:"idle,omitempty"`
	Redis  *redisCommands `json:"redis,omitempty"`
	// RedisConns is the servers' Redis connections during the run.
	RedisConns *redisConns `json:"redis_conns,omitempty"`
	Steps      []result    `json:"steps,omitempty"` // sub-runs (commands scenario)
	// Failover is the failover scenario's figures.
	Failover *failoverResult `json:"failover,omitempty"`

	// Server is from the server's /metrics: counter deltas over the run,
	// gauges after it (absent when the server has no /metrics).
	Server map[string]float64 `json:"server_metrics,omitempty"`

	CPU      cpuReport `json:"cpu"`
	Warnings []string  `json:"warnings,omitempty"`
	Checks   []check   `json:"checks,omitempty"`
	Errors   []string  `json:"errors,omitempty"`
}

// subResult is one receiving connection's view.
type subResult struct {
	Conn       int     `json:"conn"`
	Room       string  `json:"room"`
	Deliveries int64   `json:"deliveries"`
	Loss       int64   `json:"loss"`
	Duplicates int64   `json:"duplicates"`
	Reordered  int64   `json:"reordered"`
	P50        float64 `json:"p50_ms"`
	P99        float64 `json:"p99_ms"`
	Max        float64 `json:"max_ms"`
}

type cpuReport struct {
	Bench  float64 `json:"bench_cores"`            // this process
	Server float64 `json:"server_cores,omitempty"` // the xroom server (-pid or found by port), or all of them; -1 unknown
	// Servers is each server's share, with several -server.
	Servers []float64 `json:"servers_cores,omitempty"`
	Redis   float64   `json:"redis_cores,omitempty"` // from INFO cpu, with -redis
	Cores   int       `json:"machine_cores"`
	Load    string    `json:"load_average,omitempty"` // /proc/loadavg at the end: the machine is shared
	// Others is the cores the rest of the machine used during the run
	// (/proc/stat less the bench, the server and Redis); -1 unknown.
	Others float64 `json:"others_cores"`
}

// check is one target: what it wants, what was measured, whether it holds.
type check struct {
	What     string `json:"what"`
	Target   string `json:"target"`
	Measured string `json:"measured"`
	Ratio    string `json:"ratio,omitempty"` // to the same-run baseline
	Pass     bool   `json:"pass"`
}

// correct reports whether every message arrived once and in order.
func (r *result) correct() bool {
	return r.Loss == 0 && r.Duplicates == 0 && r.Reordered == 0 && r.IDRegressions == 0 && len(r.Errors) == 0
}

func (r *result) passed() bool {
	for _, c := range r.Checks {
		if !c.Pass {
			return false
		}
	}
	return r.correct()
}

func (r *result) warn(format string, args ...any) {
	r.Warnings = append(r.Warnings, fmt.Sprintf(format, args...))
}

func fmtRate(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.0fk", v/1e3)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

func fmtLat(l *latencySummary) string {
	return fmt.Sprintf("p50 %.2f  p90 %.2f  p99 %.2f  p999 %.2f  max %.2f ms  (n=%d)", l.P50, l.P90, l.P99, l.P999, l.Max, l.Count)
}

// printText writes the human-readable summary.
func (r *result) printText(w io.Writer) {
	title := r.Scenario
	if r.Label != "" {
		title += " — " + r.Label
	}
	fmt.Fprintf(w, "== %s\n", title)
	keys := make([]string, 0, len(r.Params))
	for k := range r.Params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var ps []string
	for _, k := range keys {
		ps = append(ps, fmt.Sprintf("%s=%v", k, r.Params[k]))
	}
	fmt.Fprintf(w, "params:      %s\n", strings.Join(ps, " "))
	if r.Connections > 0 {
		fmt.Fprintf(w, "connections: %d\n", r.Connections)
	}
	if r.Published > 0 {
		fmt.Fprintf(w, "published:   %d sent, %d acked, %d refused  (%s acked msgs/s over %.1fs)\n", r.Published, r.Acked, r.PublishErrors, fmtRate(r.MessagesPerSec), r.Seconds)
	}
	if r.Deliveries > 0 {
		fmt.Fprintf(w, "deliveries:  %d  (%s/s)\n", r.Deliveries, fmtRate(r.DeliveriesPerSec))
	}
	if r.Latency != nil && r.Latency.Count > 0 {
		fmt.Fprintf(w, "latency:     %s\n", fmtLat(r.Latency))
	}
	if r.AckLatency != nil && r.AckLatency.Count > 0 {
		fmt.Fprintf(w, "ack latency: %s\n", fmtLat(r.AckLatency))
	}
	if r.SendLateness != nil && r.SendLateness.Count > 0 {
		fmt.Fprintf(w, "send lateness vs schedule: p99 %.2f  max %.2f ms\n", r.SendLateness.P99, r.SendLateness.Max)
	}
	if r.Replay != nil {
		rp := r.Replay
		fmt.Fprintf(w, "replay:      %d entries per client; entries/s per run: %s; median %s, best %s\n",
			rp.Entries, joinRates(rp.PerSec), fmtRate(rp.Median), fmtRate(rp.Best))
	}
	if r.Idle != nil {
		id := r.Idle
		fmt.Fprintf(w, "idle:        server pid %d RSS %d KB -> %d KB with %d connections: %.1f KB per connection (opened in %.1fs; RSS each second while idle: %v KB)\n",
			id.PID, id.RSSBeforeKB, id.RSSAfterKB, id.Conns, id.KBPerConn, id.OpenSec, id.SeriesKB)
	}
	if r.Redis != nil {
		fmt.Fprintf(w, "redis:       %s\n", r.Redis)
	}
	if r.RedisConns != nil {
		fmt.Fprintf(w, "redis conns: %s\n", r.RedisConns)
	}
	for _, s := range r.Steps {
		line := fmt.Sprintf("  %-12s", s.Label)
		if s.Redis != nil {
			line += " " + s.Redis.String()
		}
		if s.RedisConns != nil {
			line += fmt.Sprintf("  redis conns ≤ %d", s.RedisConns.Max)
		}
		if s.Latency != nil {
			line += fmt.Sprintf("  p99 %.2f ms", s.Latency.P99)
		}
		line += fmt.Sprintf("  cpu bench %.2f, server %.2f, redis %.2f, other processes %.2f", s.CPU.Bench, s.CPU.Server, s.CPU.Redis, s.CPU.Others)
		fmt.Fprintln(w, line)
	}
	if r.Failover != nil {
		r.Failover.printText(w)
	}
	if len(r.Server) > 0 {
		fmt.Fprintf(w, "server:      %s\n", fmtMetrics(r.Server))
	}
	fmt.Fprintf(w, "correctness: loss %d  duplicates %d  reordered %d  id regressions %d", r.Loss, r.Duplicates, r.Reordered, r.IDRegressions)
	if r.Foreign > 0 {
		fmt.Fprintf(w, "  (ignored %d frames of other runs)", r.Foreign)
	}
	fmt.Fprintln(w)
	if len(r.Subscribers) > 0 {
		lo, hi := r.Subscribers[0], r.Subscribers[0]
		var bad []string
		for _, s := range r.Subscribers {
			if s.Deliveries < lo.Deliveries {
				lo = s
			}
			if s.P99 > hi.P99 {
				hi = s
			}
			if s.Loss+s.Duplicates+s.Reordered > 0 && len(bad) < 10 {
				bad = append(bad, fmt.Sprintf("conn %d (%s): loss %d dup %d reordered %d", s.Conn, s.Room, s.Loss, s.Duplicates, s.Reordered))
			}
		}
		fmt.Fprintf(w, "per subscriber: %d receivers; fewest deliveries %d (conn %d); worst p99 %.2f ms (conn %d)\n", len(r.Subscribers), lo.Deliveries, lo.Conn, hi.P99, hi.Conn)
		for _, b := range bad {
			fmt.Fprintf(w, "  %s\n", b)
		}
	}
	cpu := fmt.Sprintf("cpu:         bench %.2f cores", r.CPU.Bench)
	if r.CPU.Server > 0 {
		cpu += fmt.Sprintf(", server %.2f", r.CPU.Server)
	}
	if len(r.CPU.Servers) > 1 {
		cpu += fmt.Sprintf(" (%s)", joinFloats(r.CPU.Servers, " + "))
	}
	if r.CPU.Redis > 0 {
		cpu += fmt.Sprintf(", redis %.2f", r.CPU.Redis)
	}
	machine := fmt.Sprintf("machine: %d cores, load average %s", r.CPU.Cores, r.CPU.Load)
	if r.CPU.Others >= 0 {
		machine += fmt.Sprintf(", other processes %.2f cores", r.CPU.Others)
	}
	fmt.Fprintf(w, "%s (%s)\n", cpu, machine)
	for _, c := range r.Checks {
		mark := "PASS"
		if !c.Pass {
			mark = "FAIL"
		}
		ratio := ""
		if c.Ratio != "" {
			ratio = "  (" + c.Ratio + ")"
		}
		fmt.Fprintf(w, "check:       %s %s: want %s, got %s%s\n", mark, c.What, c.Target, c.Measured, ratio)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "ERROR:       %s\n", e)
	}
	for _, wn := range r.Warnings {
		fmt.Fprintf(w, "WARNING:     %s\n", wn)
	}
}

func joinFloats(v []float64, sep string) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(s, sep)
}

func joinRates(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmtRate(x)
	}
	return strings.Join(s, ", ")
}

// printTable reads result JSON files (from -out) and prints the markdown
// table of the suite: one row per result.
func printTable(w io.Writer, files []string) error {
	fmt.Fprintln(w, "| scenario | target | measured | figures | vs baseline | result | other processes (cores) |")
	fmt.Fprintln(w, "| --- | --- | --- | --- | --- | --- | --- |")
	for _, f := range files {
		r, err := readResult(f)
		if err != nil {
			return err
		}
		var targets, measured, ratios []string
		for _, c := range r.Checks {
			targets = append(targets, c.What+" "+c.Target)
			measured = append(measured, c.Measured)
			if c.Ratio != "" {
				ratios = append(ratios, c.Ratio)
			}
		}
		if !r.correct() {
			measured = append(measured, fmt.Sprintf("loss %d dup %d reorder %d", r.Loss, r.Duplicates, r.Reordered+r.IDRegressions))
		}
		verdict := "pass"
		switch {
		case r.Scenario == "baseline":
			verdict = "baseline"
		case !r.passed():
			verdict = "**FAIL**"
		}
		if len(r.Warnings) > 0 {
			verdict += fmt.Sprintf(" (%d warnings)", len(r.Warnings))
		}
		name := r.Label
		if name == "" {
			name = r.Scenario
		}
		others := ""
		if r.Scenario != "baseline" && r.CPU.Others >= 0 {
			others = fmt.Sprintf("%.2f", r.CPU.Others)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n", name, strings.Join(targets, "; "), strings.Join(measured, "; "), r.figures(), strings.Join(ratios, "; "), verdict, others)
	}
	return nil
}

// figures is a run's main figures for the table, whatever its targets:
// rows of runs to compare with (no targets of their own) need them too.
func (r *result) figures() string {
	if r.Failover != nil {
		return r.Failover.figures()
	}
	var f []string
	if len(r.Steps) > 0 {
		for _, s := range r.Steps {
			step := s.Label + ":"
			if s.Latency != nil {
				step += fmt.Sprintf(" p99 %.2f ms", s.Latency.P99)
			}
			if rc := s.Redis; rc != nil {
				step += fmt.Sprintf(", Redis/msg %.2f commands %.0f µs", rc.PerMessage, rc.CPUPerMessage)
			}
			f = append(f, step)
		}
		return strings.Join(f, "; ")
	}
	switch {
	case r.Scenario == "ingest" && r.MessagesPerSec > 0:
		f = append(f, fmtRate(r.MessagesPerSec)+" acked/s")
		if r.AckLatency != nil {
			f = append(f, fmt.Sprintf("ack p50 %.2f ms", r.AckLatency.P50))
		}
	case (r.Scenario == "fanout" || r.Scenario == "rooms") && r.DeliveriesPerSec > 0:
		f = append(f, fmtRate(r.DeliveriesPerSec)+" deliveries/s")
		if r.Latency != nil {
			f = append(f, fmt.Sprintf("p99 %.2f ms", r.Latency.P99))
		}
		if cpu := serverCPUPerDelivery(r); cpu > 0 && r.Scenario == "fanout" {
			f = append(f, fmt.Sprintf("server %.2f µs/delivery", cpu))
		}
	}
	if rc := r.Redis; rc != nil {
		f = append(f, fmt.Sprintf("Redis/msg %.2f commands %.0f µs %.2f XREAD+XRANGE", rc.PerMessage, rc.CPUPerMessage, rc.ReadsPerMessage))
	}
	if rc := r.RedisConns; rc != nil && rc.Samples > 0 {
		f = append(f, fmt.Sprintf("≤ %d Redis conns", rc.Max))
	}
	return strings.Join(f, ", ")
}
