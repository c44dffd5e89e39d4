package main

import (
	"context"
	"fmt"
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
	counts, err := parseSizes("-subs-list", f.subsList)
	if err != nil {
		return res, fmt.Errorf("commands: %w", err)
	}
	step := *o
	step.redisCommands = true
	var perMessage []float64
	for _, n := range counts {
		sf := *f
		sf.subs = n
		sf.wantP99, sf.wantRate = 0, 0
		r, err := fanout(ctx, &step, &sf, rdb)
		if err := res.addStep(fmt.Sprintf("%d subs", n), r, err); err != nil {
			return res, err
		}
		perMessage = append(perMessage, r.Redis.PerMessage)
	}
	c := growthCheck("Redis commands per message, by subscribers", counts, perMessage, "%.2f", commandsGrowth, 0.05)
	c.Ratio = ""
	res.Checks = append(res.Checks, c)
	return res, nil
}
