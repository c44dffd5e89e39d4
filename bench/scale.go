package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// scale runs rooms once per room count of -rooms-list (10, 1,000, 8,000 by
// default), each room of -members members, at the same total -rate, with
// Redis work counted, and checks what a tail whose cost must not grow with
// the rooms owes (issue 14):
//   - every message arrives once and in order at every size;
//   - the servers' Redis connections (CLIENT LIST) stay at most
//     -want-redis-conns at every size;
//   - p99 at the largest size is at most -want-p99;
//   - Redis commands and Redis CPU per message at every size are at most
//     1 + -flat times those at the smallest (-flat 0: reported, no target);
//   - with -today FILE (a rooms result, as -out writes it, of the server
//     being compared with, at one of the sizes): Redis commands and CPU per
//     message at that size at most -want-vs-today times FILE's.
func scale(ctx context.Context, o *options, f *scenarioFlags, rdb redisClient) (*result, error) {
	res := &result{Scenario: "scale", Params: map[string]any{"rooms_list": f.roomsList, "members": f.members, "rate": rateParam(f.rate), "size": o.size, "duration": o.duration.String(), "warmup": o.warmup.String()}}
	if rdb == nil {
		return res, fmt.Errorf("scale: needs -redis")
	}
	sizes, err := parseSizes("-rooms-list", f.roomsList)
	if err != nil {
		return res, fmt.Errorf("scale: %w", err)
	}
	var today *result
	if f.today != "" {
		if today, err = readResult(f.today); err != nil {
			return res, fmt.Errorf("scale: -today: %w", err)
		}
		if today.Redis == nil || today.Scenario != "rooms" {
			return res, fmt.Errorf("scale: -today %s: want a rooms result with Redis figures (-redis-commands)", f.today)
		}
	}
	step := *o
	step.redisCommands = true
	var commands, cpu []float64
	var conns []string
	connsOK := true
	for i, n := range sizes {
		sf := *f
		sf.rooms = n
		sf.wantRate, sf.wantRedisConns, sf.vs = 0, 0, ""
		if i < len(sizes)-1 {
			sf.wantP99 = 0 // the target is for the largest size
		}
		r, err := rooms(ctx, &step, &sf, rdb)
		if err := res.addStep(fmt.Sprintf("%d rooms", n), r, err); err != nil {
			return res, err
		}
		commands = append(commands, r.Redis.PerMessage)
		cpu = append(cpu, r.Redis.CPUPerMessage)
		if rc := r.RedisConns; rc != nil {
			conns = append(conns, fmt.Sprintf("%d: %d", n, rc.Max))
			connsOK = connsOK && rc.Max <= f.wantRedisConns
		} else {
			connsOK = false
		}
		for _, c := range r.Checks {
			if c.What == "p99" {
				c.What = fmt.Sprintf("p99 at %d rooms", n)
				res.Checks = append(res.Checks, c)
			}
		}
	}
	res.checkNoLoss()
	if f.wantRedisConns > 0 {
		res.Checks = append(res.Checks, check{What: "Redis connections (CLIENT LIST), every size", Target: fmt.Sprintf("≤ %d", f.wantRedisConns),
			Measured: strings.Join(conns, ", "), Pass: connsOK})
	}
	if f.flat > 0 {
		growth := 1 + f.flat
		res.Checks = append(res.Checks,
			growthCheck("Redis commands per message, by rooms", sizes, commands, "%.2f", growth, 0),
			growthCheck("Redis CPU per message (µs), by rooms", sizes, cpu, "%.1f", growth, 0))
	}
	if today != nil {
		res.Checks = append(res.Checks, vsToday(res, sizes, today, f.vsName(today, "today's"), f.wantVsToday)...)
	}
	return res, nil
}

// vsToday compares the step of res at today's room count with today,
// called name.
func vsToday(res *result, sizes []int, today *result, name string, want float64) []check {
	n, _ := today.Params["rooms"].(float64)
	for i, size := range sizes {
		if float64(size) != n {
			continue
		}
		now := res.Steps[i].Redis
		compare := func(what, format string, got, was float64) check {
			return check{
				What:     fmt.Sprintf("%s at %d rooms vs %s", what, size, name),
				Target:   fmt.Sprintf("≤ %.2f × "+format, want, was),
				Measured: fmt.Sprintf(format, got),
				Ratio:    fmt.Sprintf("%.2f × %s", got/was, name),
				Pass:     got <= want*was,
			}
		}
		return []check{
			compare("Redis commands per message", "%.2f", now.PerMessage, today.Redis.PerMessage),
			compare("Redis CPU per message", "%.1f µs", now.CPUPerMessage, today.Redis.CPUPerMessage),
		}
	}
	return []check{{What: "vs " + name, Target: fmt.Sprintf("a step at %.0f rooms, as -today has", n), Measured: fmt.Sprint(sizes), Pass: false}}
}

// readResult reads a result JSON file (as -out writes it).
func readResult(path string) (*result, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r result
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}
