package main

import "fmt"

// checkVs adds the targets of -vs FILE: this run no worse than FILE's, the
// same scenario run against another server (the previous commit, say) in
// the same sitting. p99 and the server's CPU per delivery at most
// 1 + -vs-tolerance times FILE's; where the rate is the figure (rateWhat is
// not ""), rate at least 1 - -vs-tolerance times FILE's. rate reads the
// rate of either result.
func (res *result) checkVs(f *scenarioFlags, rateWhat string, rate func(*result) float64) error {
	if f.vs == "" {
		return nil
	}
	other, err := readResult(f.vs)
	if err != nil {
		return fmt.Errorf("-vs: %w", err)
	}
	if other.Scenario != res.Scenario {
		return fmt.Errorf("-vs %s: a %s result, this is %s", f.vs, other.Scenario, res.Scenario)
	}
	name := f.vsName(other, f.vs)
	tol := f.vsTolerance
	if res.Latency != nil && other.Latency != nil {
		got, was := res.Latency.P99, other.Latency.P99
		res.Checks = append(res.Checks, check{
			What: "p99 vs " + name, Target: fmt.Sprintf("≤ %.2f × %.2f ms", 1+tol, was),
			Measured: fmt.Sprintf("%.2f ms", got), Ratio: fmt.Sprintf("%.2f × %s", got/was, name),
			Pass: got <= (1+tol)*was,
		})
	}
	if got, was := serverCPUPerDelivery(res), serverCPUPerDelivery(other); got > 0 && was > 0 {
		// The steadiest of the three: p99 moves by tens of percent between
		// runs of one binary on a shared machine, this by a few.
		res.Checks = append(res.Checks, check{
			What: "server CPU per delivery vs " + name, Target: fmt.Sprintf("≤ %.2f × %.2f µs", 1+tol, was),
			Measured: fmt.Sprintf("%.2f µs", got), Ratio: fmt.Sprintf("%.2f × %s", got/was, name),
			Pass: got <= (1+tol)*was,
		})
	}
	if rateWhat != "" {
		got, was := rate(res), rate(other)
		res.Checks = append(res.Checks, check{
			What: rateWhat + " vs " + name, Target: fmt.Sprintf("≥ %.2f × %s/s", 1-tol, fmtRate(was)),
			Measured: fmtRate(got) + "/s", Ratio: fmt.Sprintf("%.2f × %s", got/was, name),
			Pass: got >= (1-tol)*was,
		})
	}
	return nil
}

// vsName is what the comparisons call the other run: -vs-name, else its
// label, else fallback.
func (f *scenarioFlags) vsName(other *result, fallback string) string {
	switch {
	case f.vsNameFlag != "":
		return f.vsNameFlag
	case other.Label != "":
		return other.Label
	}
	return fallback
}

// serverCPUPerDelivery is the servers' CPU time per delivery, in µs; 0
// when unknown.
func serverCPUPerDelivery(r *result) float64 {
	if r.CPU.Server <= 0 || r.DeliveriesPerSec <= 0 {
		return 0
	}
	return r.CPU.Server * 1e6 / r.DeliveriesPerSec
}

func deliveriesPerSec(r *result) float64 { return r.DeliveriesPerSec }
func messagesPerSec(r *result) float64   { return r.MessagesPerSec }
