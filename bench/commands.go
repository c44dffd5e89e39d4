package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// commandsGrowth is how much more Redis work per message the largest room
// may cost than the smallest and still count as constant: 10% (plus 0.05
// commands for rounding), to allow for a few background commands.
const commandsGrowth = 1.10

// commands runs fanout once per subscriber count in -subs-list, at the same
// fixed rate, and compares the Redis commands per published message (INFO
// commandstats around the publishing, so the joins are not counted): the
// work per message must not grow with the number of subscribers.
func commands(ctx context.Context, o *options, f *scenarioFlags, rdb redisClient) (*result, error) {
	res := &result{Scenario: "commands", Params: map[string]any{"subs_list": f.subsList, "publishers": f.pubs, "rate": rateParam(f.rate), "size": o.size, "duration": o.duration.String()}}
	if rdb == nil {
		return res, fmt.Errorf("commands: needs -redis")
	}
	var counts []int
	for _, s := range strings.Split(f.subsList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return res, fmt.Errorf("commands: bad -subs-list %q", f.subsList)
		}
		counts = append(counts, n)
	}
	step := *o
	step.redisCommands = true
	var first, worst float64
	var measured []string
	for i, n := range counts {
		sf := *f
		sf.subs = n
		sf.wantP99, sf.wantRate = 0, 0
		r, err := fanout(ctx, &step, &sf, rdb)
		r.Label = fmt.Sprintf("%d subs", n)
		r.Subscribers = nil
		res.Steps = append(res.Steps, *r)
		if err != nil {
			return res, fmt.Errorf("%d subscribers: %w", n, err)
		}
		res.Loss += r.Loss
		res.Duplicates += r.Duplicates
		res.Reordered += r.Reordered
		res.IDRegressions += r.IDRegressions
		res.Errors = append(res.Errors, r.Errors...)
		res.Warnings = append(res.Warnings, r.Warnings...)
		res.CPU = r.CPU
		pm := r.Redis.PerMessage
		if i == 0 {
			first = pm
		}
		worst = max(worst, pm)
		measured = append(measured, fmt.Sprintf("%d: %.2f", n, pm))
	}
	res.Checks = append(res.Checks, check{
		What:     "Redis commands per message, by subscribers",
		Target:   fmt.Sprintf("constant (≤ %.2f × the %d-subscriber figure)", commandsGrowth, counts[0]),
		Measured: strings.Join(measured, ", "),
		Pass:     worst <= first*commandsGrowth+0.05,
	})
	return res, nil
}
