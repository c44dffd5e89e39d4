package main

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The server's /metrics (Prometheus text format), read around a run when the
// server serves it: what the server itself counted, next to what the bench
// saw. Optional: a server without /metrics just gets no such figures.

// reportedMetrics are the series the bench reports, summed over labels (and
// over the servers, with several -server):
// deltas over the run for counters, the value after the run for gauges.
var reportedMetrics = []string{
	"xroom_messages_appended_total",
	"xroom_messages_delivered_total",
	"xroom_catchups_total",
	"xroom_websocket_write_errors_total",
	"xroom_redis_errors_total",
	"go_goroutines",
	"go_memstats_heap_inuse_bytes",
	"go_memstats_stack_inuse_bytes",
}

// scrapeMetrics reads the server's /metrics, summing each metric over its
// labels; nil when the server has none.
func scrapeMetrics(server string) map[string]float64 {
	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + server + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, value, ok := cutMetric(line)
		if ok {
			m[name] += value
		}
	}
	return m
}

// scrapeServers is scrapeMetrics of every server, summed; nil when any of
// them has no /metrics.
func scrapeServers(servers []string) map[string]float64 {
	sum := map[string]float64{}
	for _, s := range servers {
		m := scrapeMetrics(s)
		if m == nil {
			return nil
		}
		for name, v := range m {
			sum[name] += v
		}
	}
	return sum
}

// cutMetric splits `name{labels} value` or `name value`.
func cutMetric(line string) (string, float64, bool) {
	sp := strings.LastIndexByte(line, ' ')
	if sp < 0 {
		return "", 0, false
	}
	v, err := strconv.ParseFloat(line[sp+1:], 64)
	if err != nil {
		return "", 0, false
	}
	name := line[:sp]
	if i := strings.IndexByte(name, '{'); i >= 0 {
		name = name[:i]
	}
	return name, v, true
}

// metricsDelta is what the bench reports of two scrapes.
func metricsDelta(before, after map[string]float64) map[string]float64 {
	if before == nil || after == nil {
		return nil
	}
	out := map[string]float64{}
	for _, name := range reportedMetrics {
		v, ok := after[name]
		if !ok {
			continue
		}
		if strings.HasSuffix(name, "_total") {
			v -= before[name]
		}
		out[name] = v
	}
	return out
}

func fmtMetrics(m map[string]float64) string {
	var parts []string
	for _, name := range reportedMetrics {
		if v, ok := m[name]; ok {
			parts = append(parts, fmt.Sprintf("%s=%s", strings.TrimPrefix(name, "xroom_"), strconv.FormatFloat(v, 'f', -1, 64)))
		}
	}
	return strings.Join(parts, " ")
}
