package main

import (
	"fmt"
	"strconv"
	"strings"
)

// Scenarios made of sub-runs (commands, scale) share these.

// parseSizes reads a comma-separated list of positive counts (-subs-list,
// -rooms-list).
func parseSizes(flagName, list string) ([]int, error) {
	var sizes []int
	for _, s := range splitList(list) {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bad %s %q", flagName, list)
		}
		sizes = append(sizes, n)
	}
	if len(sizes) == 0 {
		return nil, fmt.Errorf("empty %s", flagName)
	}
	return sizes, nil
}

// addStep labels a sub-run's result and keeps it in res: its correctness,
// errors and warnings count for res; the last step's CPU stands for res,
// but for the other processes' share, the most any step saw.
// It passes on the sub-run's error, if any, labelled.
func (res *result) addStep(label string, r *result, err error) error {
	r.Label = label
	r.Subscribers = nil
	res.Steps = append(res.Steps, *r)
	res.Loss += r.Loss
	res.Duplicates += r.Duplicates
	res.Reordered += r.Reordered
	res.IDRegressions += r.IDRegressions
	res.Errors = append(res.Errors, r.Errors...)
	res.Warnings = append(res.Warnings, r.Warnings...)
	others := max(res.CPU.Others, r.CPU.Others)
	if len(res.Steps) == 1 {
		others = r.CPU.Others
	}
	res.CPU = r.CPU
	res.CPU.Others = others
	if err != nil {
		return fmt.Errorf("%s: %w", label, err)
	}
	return nil
}

// growthCheck is the target that a per-message figure measured at each
// size stays at most growth times the first size's (plus slack, for
// rounding): the work per message must not grow with the size.
func growthCheck(what string, sizes []int, values []float64, format string, growth, slack float64) check {
	measured := make([]string, len(values))
	worst := 0.0
	for i, v := range values {
		measured[i] = fmt.Sprintf("%d: "+format, sizes[i], v)
		worst = max(worst, v)
	}
	c := check{
		What:     what,
		Target:   fmt.Sprintf("constant (≤ %.2f × the figure at %d)", growth, sizes[0]),
		Measured: strings.Join(measured, ", "),
		Pass:     len(values) > 0 && worst <= values[0]*growth+slack,
	}
	if len(values) > 0 && values[0] > 0 {
		c.Ratio = fmt.Sprintf("largest %.2f × the figure at %d", worst/values[0], sizes[0])
	}
	return c
}
