package main

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// The servers' Redis connections, counted from the outside as an operator
// would: CLIENT LIST on the server's Redis, by the client names the server
// gives its connections (app/config.go and app/main.go: "xroom" for the
// command pool, "xroom-tail" for the tail's own connections). Several
// servers on one Redis use the same names: the count is theirs together.

// connSampleEvery is how often CLIENT LIST is read during a run.
const connSampleEvery = 500 * time.Millisecond

// redisConns is what the samples found.
type redisConns struct {
	Names []string `json:"names"`
	// Max is the most connections with those names seen at once; MaxByName
	// the most of each name (not necessarily in the same sample).
	Max       int            `json:"max"`
	MaxByName map[string]int `json:"max_by_name"`
	Samples   int            `json:"samples"`
}

func (rc *redisConns) String() string {
	parts := make([]string, 0, len(rc.Names))
	for _, n := range rc.Names {
		parts = append(parts, fmt.Sprintf("%s %d", n, rc.MaxByName[n]))
	}
	return fmt.Sprintf("at most %d (%s) in %d samples of CLIENT LIST", rc.Max, strings.Join(parts, ", "), rc.Samples)
}

// countClients counts the connections of CLIENT LIST's reply (one line per
// connection: "id=7 addr=127.0.0.1:50112 laddr=... fd=9 name=xroom age=3
// ...") whose name is one of names.
func countClients(list string, names []string) map[string]int {
	want := map[string]bool{}
	counts := map[string]int{}
	for _, n := range names {
		want[n] = true
		counts[n] = 0
	}
	for _, line := range strings.Split(list, "\n") {
		for _, field := range strings.Fields(line) {
			if name, ok := strings.CutPrefix(field, "name="); ok {
				if want[name] {
					counts[name]++
				}
				break
			}
		}
	}
	return counts
}

// connSampler reads CLIENT LIST every connSampleEvery until finish.
type connSampler struct {
	stop chan struct{}
	done chan struct{}
	res  redisConns
	err  error
}

func sampleRedisConns(rdb redisClient, names []string) *connSampler {
	s := &connSampler{stop: make(chan struct{}), done: make(chan struct{}),
		res: redisConns{Names: names, MaxByName: map[string]int{}}}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(connSampleEvery)
		defer tick.Stop()
		for {
			s.sample(rdb)
			select {
			case <-tick.C:
			case <-s.stop:
				s.sample(rdb) // the state at the end, too
				return
			}
		}
	}()
	return s
}

func (s *connSampler) sample(rdb redisClient) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	list, err := rdb.ClientList(ctx).Result()
	if err != nil {
		if s.err == nil {
			s.err = fmt.Errorf("CLIENT LIST: %w", err)
		}
		return
	}
	s.res.add(countClients(list, s.res.Names))
}

// add records one sample's counts.
func (rc *redisConns) add(counts map[string]int) {
	total := 0
	for n, c := range counts {
		total += c
		rc.MaxByName[n] = max(rc.MaxByName[n], c)
	}
	rc.Max = max(rc.Max, total)
	rc.Samples++
}

// finish stops sampling and returns what was seen.
func (s *connSampler) finish() (*redisConns, error) {
	close(s.stop)
	<-s.done
	return &s.res, s.err
}

// checkRedisConns adds the target on the servers' Redis connections.
func (res *result) checkRedisConns(want int) {
	if want <= 0 {
		return
	}
	c := check{What: "Redis connections (CLIENT LIST)", Target: fmt.Sprintf("≤ %d", want), Measured: "not measured (needs -redis)"}
	if rc := res.RedisConns; rc != nil && rc.Samples > 0 {
		c.Measured = fmt.Sprintf("%d", rc.Max)
		c.Pass = rc.Max <= want
	}
	res.Checks = append(res.Checks, c)
}
