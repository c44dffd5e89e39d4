package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseServers(t *testing.T) {
	servers, pids, err := parseServers(" 127.0.0.1:1, 127.0.0.1:2 ,", "10,20")
	if err != nil || !reflect.DeepEqual(servers, []string{"127.0.0.1:1", "127.0.0.1:2"}) || !reflect.DeepEqual(pids, []int{10, 20}) {
		t.Fatalf("got %v %v %v", servers, pids, err)
	}
	if servers, pids, err = parseServers("h:1", ""); err != nil || len(servers) != 1 || pids != nil {
		t.Fatalf("one server, no -pid: %v %v %v", servers, pids, err)
	}
	for _, bad := range [][2]string{{"", ""}, {" , ", ""}, {"h:1,h:2", "10"}, {"h:1", "x"}, {"h:1", "-3"}} {
		if _, _, err := parseServers(bad[0], bad[1]); err == nil {
			t.Errorf("parseServers(%q, %q) accepted", bad[0], bad[1])
		}
	}
}

// With two servers, connections alternate: a room's two members are on
// different instances, and so are its first members of successive rooms'
// second ones.
func TestServerForSplitsRoomsMembers(t *testing.T) {
	r := newRun([]string{"a", "b"})
	var got []string
	for num := range 6 {
		got = append(got, r.serverFor(num))
	}
	if want := []string{"a", "b", "a", "b", "a", "b"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("servers %v, want %v", got, want)
	}
	if one := newRun([]string{"a"}); one.serverFor(5) != "a" {
		t.Fatal("one server: every connection goes to it")
	}
}

func TestCountClients(t *testing.T) {
	list := strings.Join([]string{
		"id=3 addr=127.0.0.1:50100 laddr=127.0.0.1:6379 fd=8 name=xroom age=9 idle=0 flags=N db=0 sub=0 psub=0 cmd=evalsha user=default",
		"id=4 addr=127.0.0.1:50102 laddr=127.0.0.1:6379 fd=9 name=xroom age=9 idle=0 flags=N db=0 sub=0 psub=0 cmd=xread user=default",
		"id=5 addr=127.0.0.1:50104 laddr=127.0.0.1:6379 fd=10 name=xroom-tail age=9 idle=0 flags=P db=0 sub=0 psub=2 cmd=psubscribe user=default",
		"id=6 addr=127.0.0.1:50106 laddr=127.0.0.1:6379 fd=11 name= age=1 idle=0 flags=N db=0 cmd=client|list user=default",
		"id=7 addr=127.0.0.1:50108 laddr=127.0.0.1:6379 fd=12 name=xroom-other age=1 idle=0 flags=N db=0 cmd=ping user=default",
		"",
	}, "\n")
	got := countClients(list, []string{"xroom", "xroom-tail"})
	if want := map[string]int{"xroom": 2, "xroom-tail": 1}; !reflect.DeepEqual(got, want) {
		t.Fatalf("counts %v, want %v", got, want)
	}
	if got := countClients("", []string{"xroom"}); got["xroom"] != 0 || len(got) != 1 {
		t.Fatalf("empty list: %v", got)
	}

	rc := redisConns{Names: []string{"xroom", "xroom-tail"}, MaxByName: map[string]int{}}
	rc.add(map[string]int{"xroom": 20, "xroom-tail": 1})
	rc.add(map[string]int{"xroom": 5, "xroom-tail": 3})
	if rc.Max != 21 || rc.MaxByName["xroom"] != 20 || rc.MaxByName["xroom-tail"] != 3 || rc.Samples != 2 {
		t.Fatalf("%+v", rc)
	}
	res := &result{RedisConns: &rc}
	res.checkRedisConns(24)
	res.checkRedisConns(20)
	if !res.Checks[0].Pass || res.Checks[1].Pass || res.Checks[1].Measured != "21" {
		t.Fatalf("checks %+v", res.Checks)
	}
	none := &result{}
	if none.checkRedisConns(24); none.Checks[0].Pass {
		t.Fatal("a target on connections that were not counted passed")
	}
}

func TestRedisWorkPerMessage(t *testing.T) {
	before := redisSnapshot{calls: map[string]int64{"xadd": 10, "xread": 3, "client|list": 2}, cpu: 1.5}
	after := redisSnapshot{calls: map[string]int64{"xadd": 110, "xread": 53, "xrange": 7, "client|list": 40}, cpu: 1.52, at: before.at.Add(time.Second)}
	rc := diffRedis(before, after, 100)
	if rc.Total != 157 || rc.ByCommand["client|list"] != 0 {
		t.Fatalf("%+v: the bench's CLIENT LIST calls are not the server's work", rc)
	}
	if rc.ReadsPerMessage != 0.57 || rc.CPUPerMessage < 199.9 || rc.CPUPerMessage > 200.1 {
		t.Fatalf("reads %v per message (want 0.57), CPU %v µs per message (want 200)", rc.ReadsPerMessage, rc.CPUPerMessage)
	}
	res := &result{Redis: rc}
	res.checkRedis(&scenarioFlags{wantReads: 0.5})
	res.checkRedis(&scenarioFlags{wantReads: 2.2})
	if len(res.Checks) != 2 || res.Checks[0].Pass || !res.Checks[1].Pass {
		t.Fatalf("checks %+v", res.Checks)
	}
}

func TestGrowthCheck(t *testing.T) {
	sizes := []int{10, 1000, 8000}
	if c := growthCheck("cmds", sizes, []float64{5, 5.5, 6}, "%.2f", 1.2, 0); !c.Pass || c.Measured != "10: 5.00, 1000: 5.50, 8000: 6.00" || c.Ratio != "largest 1.20 × the figure at 10" {
		t.Fatalf("%+v", c)
	}
	if c := growthCheck("cmds", sizes, []float64{5, 6.1, 4}, "%.2f", 1.2, 0); c.Pass {
		t.Fatalf("growth of 22%% passed: %+v", c)
	}
	if c := growthCheck("cmds", sizes, []float64{5, 4, 3}, "%.2f", 1.2, 0); !c.Pass {
		t.Fatalf("less work with more rooms failed: %+v", c)
	}
}

// writeResult writes r as -out would, to dir/name.
func writeResult(t *testing.T, dir, name string, r result) string {
	t.Helper()
	path := filepath.Join(dir, name)
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestVsToday(t *testing.T) {
	today := &result{Scenario: "rooms", Label: "aa74194, 1,000 rooms × 2 members", Params: map[string]any{"rooms": float64(1000)}, Redis: &redisCommands{PerMessage: 10, CPUPerMessage: 100}}
	res := &result{Steps: []result{{Redis: &redisCommands{PerMessage: 5, CPUPerMessage: 60}}, {Redis: &redisCommands{PerMessage: 6, CPUPerMessage: 80}}}}
	cs := vsToday(res, []int{10, 1000}, today, "aa74194", 0.7)
	if len(cs) != 2 || !cs[0].Pass || cs[1].Pass || cs[0].Ratio != "0.60 × aa74194" || cs[1].Ratio != "0.80 × aa74194" {
		t.Fatalf("%+v", cs)
	}
	if cs := vsToday(res, []int{10, 100}, today, "aa74194", 0.7); len(cs) != 1 || cs[0].Pass {
		t.Fatalf("no step at today's size: %+v", cs)
	}
}

func TestCheckVs(t *testing.T) {
	before := result{Scenario: "fanout", Label: "aa74194: fanout", Latency: &latencySummary{P99: 2}, DeliveriesPerSec: 600000, CPU: cpuReport{Server: 1.2}}
	path := writeResult(t, t.TempDir(), "before.json", before)
	f := &scenarioFlags{vs: path, vsTolerance: 0.1, vsNameFlag: "aa74194"}
	// 2 µs of server CPU per delivery before, 2.26 now.
	res := &result{Scenario: "fanout", Latency: &latencySummary{P99: 2.1}, DeliveriesPerSec: 530000, CPU: cpuReport{Server: 1.2}}
	if err := res.checkVs(f, "deliveries/s", deliveriesPerSec); err != nil {
		t.Fatal(err)
	}
	if len(res.Checks) != 3 || !res.Checks[0].Pass || res.Checks[1].Pass || res.Checks[2].Pass || res.Checks[0].Ratio != "1.05 × aa74194" || res.Checks[1].Measured != "2.26 µs" {
		t.Fatalf("%+v", res.Checks)
	}
	fixed := &result{Scenario: "fanout", Latency: &latencySummary{P99: 2.3}}
	if err := fixed.checkVs(f, "", nil); err != nil || len(fixed.Checks) != 1 || fixed.Checks[0].Pass {
		t.Fatalf("fixed rate: p99 only, 1.15 × fails: %+v %v", fixed.Checks, err)
	}
	other := &result{Scenario: "ingest"}
	if err := other.checkVs(f, "", nil); err == nil {
		t.Fatal("a fanout result compared with an ingest run")
	}
}
