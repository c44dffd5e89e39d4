// Command bench is xroom's load generator: it speaks the wire protocol over
// real WebSockets to a running server and reports throughput, exact latency
// percentiles, and whether every message arrived exactly once and in order.
//
//	go run ./bench fanout -server 127.0.0.1:8080 -subs 100 -rate 1000
//
// See bench/README.md for the scenarios and the suite (bench/run.sh).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

type redisClient = *redis.Client

// Exit codes.
const (
	exitOK        = 0
	exitIncorrect = 1   // loss, duplicates, reordering, refused sends, or a missed target
	exitSetup     = 2   // the run could not happen
	exitInterrupt = 130 // SIGINT or SIGTERM (128 + SIGINT), so scripts stop too
)

type scenario struct {
	name  string
	about string
	run   func(context.Context, *options, *scenarioFlags, redisClient) (*result, error)
}

var scenarios = []scenario{
	{"fanout", "N subscribers in one room, P publishers at a fixed total rate or in closed loop", fanout},
	{"rooms", "K rooms × M members, the first member of each publishing, fixed total rate", rooms},
	{"replay", "a history of H entries (seeded straight into Redis) replayed to new clients with since=0", replay},
	{"idle", "N idle connections: the server's RSS per connection", idle},
	{"commands", "fanout at each subscriber count of -subs-list, same rate: Redis commands per message must stay constant", commands},
	{"ingest", "S senders over R rooms in closed loop: acknowledged sends per second", ingest},
	{"scale", "rooms at each room count of -rooms-list, same total rate: Redis connections bounded, Redis work per message constant", scale},
	{"failover", "resilient senders while the Sentinel fails the primary over: time to an ack from the new primary, refused sends, acked messages lost", failover},
}

func usage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: go run ./bench SCENARIO [flags]\n       go run ./bench table RESULT.json...\n       go run ./bench hook -listen ADDR   (a publish hook that answers at once, for PUBLISH_HOOK_URL)\n\nscenarios:\n")
	for _, s := range scenarios {
		fmt.Fprintf(w, "  %-9s %s\n", s.name, s.about)
	}
	fmt.Fprintf(w, "\nflags:\n")
	fs.SetOutput(w)
	fs.PrintDefaults()
}

func main() {
	os.Exit(mainArgs(os.Args[1:], os.Stdout, os.Stderr))
}

func mainArgs(args []string, stdout, stderr io.Writer) int {
	var o options
	var f scenarioFlags
	var jsonOut bool
	var outFile, cpuProfile, serverList, pidList, redisNames string
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&serverList, "server", "127.0.0.1:8080", "xroom server host:port; several, comma-separated (a,b): connection i goes to the i-th mod their number, so a room's members are split over them")
	fs.StringVar(&o.redisURL, "redis", "", "the server's Redis (redis://host:port or host:port): seeds replay, reads INFO commandstats and cpu")
	fs.StringVar(&o.prefix, "prefix", "chat", "the server's CHAT_PREFIX (replay seeds chat:{room}:messages)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "how long publishers publish after the warm-up")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "publishing before measuring: checked for loss, left out of latencies and rates")
	fs.DurationVar(&o.drain, "drain", 15*time.Second, "after publishing, how long to wait for missing acks and deliveries without progress")
	fs.IntVar(&o.size, "size", 64, "message text size in bytes (padded)")
	fs.Float64Var(&o.connectRate, "connect-rate", 2000, "new connections per second at most (0: unlimited)")
	fs.IntVar(&o.connectParallel, "connect-parallel", 64, "handshakes (until ready) in flight at most")
	fs.DurationVar(&o.connectTimeout, "connect-timeout", 5*time.Minute, "time to open every connection and see it ready")
	fs.StringVar(&pidList, "pid", "", "server PID for CPU and RSS, one per -server, comma-separated (default: the process listening on each server's port)")
	fs.Float64Var(&o.cpuWarn, "cpu-warn", 0.85, "warn when the bench itself uses this many cores or more")
	fs.BoolVar(&o.redisCommands, "redis-commands", false, "report Redis commands and Redis CPU per published message (needs -redis)")
	fs.StringVar(&redisNames, "redis-names", "xroom,xroom-tail", "the client names the server gives its Redis connections: with -redis, CLIENT LIST counts those during the run")
	fs.StringVar(&o.label, "label", "", "name of this run in the output and the table")
	fs.BoolVar(&jsonOut, "json", false, "print the result as JSON instead of text")
	fs.StringVar(&outFile, "out", "", "also write the JSON result to this file")
	fs.StringVar(&cpuProfile, "cpuprofile", "", "write the bench's own CPU profile to this file")

	fs.IntVar(&f.subs, "subs", 100, "fanout: subscribers")
	fs.IntVar(&f.pubs, "pubs", 10, "fanout: publishers (commands: default 1)")
	fs.Float64Var(&f.rate, "rate", -1, "total messages/s over all publishers; 0: closed loop (default: fanout 1000, rooms 2000, commands 100, failover 400)")
	fs.IntVar(&f.rooms, "rooms", 0, "rooms, idle: rooms (default 100); ingest: rooms (default 50)")
	fs.IntVar(&f.members, "members", 10, "rooms: members per room (scale: default 2)")
	fs.IntVar(&f.senders, "senders", 50, "ingest: senders; failover: default 4")
	fs.IntVar(&f.window, "window", 1, "ingest, failover: sends each sender keeps in flight (1: closed loop, the next send waits for the ack; more: a bot or bridge streaming its sends)")
	fs.StringVar(&f.baselineName, "baseline-name", "", "ingest: what -baseline is, for the ratio (default \"XADD -c 50\", whatever the -window: issue 14's targets compare every window with 50 unpipelined clients)")
	fs.IntVar(&f.entries, "entries", 100000, "replay: history entries")
	fs.IntVar(&f.repeat, "repeat", 3, "replay: new clients replaying it, one after another")
	fs.StringVar(&f.subsList, "subs-list", "10,100,1000", "commands: subscriber counts to compare")
	fs.StringVar(&f.roomsList, "rooms-list", "10,1000,8000", "scale: room counts to compare")
	fs.Float64Var(&f.flat, "flat", 0.2, "scale: Redis commands and CPU per message may grow by this fraction from the smallest room count to any other (0: no such target)")
	fs.StringVar(&f.today, "today", "", "scale: a rooms result (JSON from -out, with -redis-commands) of the server to compare with, at one of -rooms-list's counts")
	fs.StringVar(&f.vs, "vs", "", "fanout, rooms, ingest: a result (JSON from -out) of the same scenario against another server, such as the previous commit, in the same sitting: p99 (and, closed loop, the rate) no worse than its, within -vs-tolerance")
	fs.Float64Var(&f.vsTolerance, "vs-tolerance", 0.1, "with -vs: how much worse than its figures still counts as no worse (0.1: p99 up to 1.1 ×, rate down to 0.9 ×)")
	fs.StringVar(&f.vsNameFlag, "vs-name", "", "what -vs and -today call the other run in checks (default: its -label)")
	fs.Float64Var(&f.wantVsToday, "want-vs-today", 0.7, "scale: target Redis commands and CPU per message at -today's room count at most this × -today's")
	fs.IntVar(&f.conns, "conns", 10000, "idle: connections")
	fs.DurationVar(&f.hold, "hold", idleSettle, "idle: how long connections stay idle before RSS is read")
	fs.Float64Var(&f.wantKB, "want-kb", 0, "idle: target server RSS per connection at most this many KB")
	fs.DurationVar(&f.wantP99, "want-p99", 0, "target: p99 latency at most this")
	fs.IntVar(&f.wantRedisConns, "want-redis-conns", 0, "target: the server's Redis connections (CLIENT LIST by -redis-names, the most seen during the run) at most this (needs -redis)")
	fs.Float64Var(&f.wantReads, "want-reads", 0, "target: Redis XREAD+XRANGE calls per published message at most this (needs -redis)")
	fs.Float64Var(&f.wantRate, "want-rate", 0, "target: the scenario's rate (deliveries/s, acked sends/s, entries/s) at least this")
	fs.Float64Var(&f.baseline, "baseline", 0, "same-run baseline for the ratio: ingest and fanout, redis-benchmark XADD -c 50 requests/s; replay, XRANGE entries/s")
	fs.Float64Var(&f.wantRatio, "want-ratio", 0.8, "ingest: target acked sends/s as a fraction of -baseline (0: report the ratio, no target)")
	f.failover.register(fs)

	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
		usage(stdout, fs)
		return exitOK
	}
	name := args[0]
	if name == "hook" {
		return hookServer(args[1:], stdout, stderr)
	}
	if name == "table" {
		if err := printTable(stdout, args[1:]); err != nil {
			fmt.Fprintln(stderr, "bench table:", err)
			return exitSetup
		}
		return exitOK
	}
	var sc *scenario
	for i := range scenarios {
		if scenarios[i].name == name {
			sc = &scenarios[i]
		}
	}
	if sc == nil {
		fmt.Fprintf(stderr, "bench: unknown scenario %q\n\n", name)
		usage(stderr, fs)
		return exitSetup
	}
	if err := fs.Parse(args[1:]); err != nil {
		fmt.Fprintf(stderr, "bench %s: %v\n\n", name, err)
		usage(stderr, fs)
		return exitSetup
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bench %s: unexpected arguments %q\n", name, fs.Args())
		return exitSetup
	}
	var err error
	if o.servers, o.pids, err = parseServers(serverList, pidList); err != nil {
		fmt.Fprintf(stderr, "bench %s: %v\n", name, err)
		return exitSetup
	}
	o.redisNames = splitList(redisNames)
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	defaults(name, &f, set)

	if _, err := raiseFileLimit(); err != nil {
		fmt.Fprintln(stderr, "bench: warning:", err)
	}
	var rdb *redis.Client
	if o.redisURL != "" {
		if rdb, err = openRedis(o.redisURL); err != nil {
			fmt.Fprintln(stderr, "bench:", err)
			return exitSetup
		}
		defer rdb.Close()
	} else if o.redisCommands {
		fmt.Fprintln(stderr, "bench: -redis-commands needs -redis")
		return exitSetup
	}

	if cpuProfile != "" {
		pf, err := os.Create(cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(pf)
		}
		if err != nil {
			fmt.Fprintln(stderr, "bench: -cpuprofile:", err)
			return exitSetup
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	started := time.Now()
	res, err := sc.run(ctx, &o, &f, rdb)
	if res == nil {
		res = &result{Scenario: name}
	}
	res.Label, res.Started = o.label, started
	res.CPU.Load = loadAvg()
	if res.CPU.Others > othersWarn {
		res.warn("other processes used %.2f of the machine's %d cores during the run: figures are pessimistic", res.CPU.Others, res.CPU.Cores)
	}
	if err != nil {
		res.Errors = append(res.Errors, err.Error())
	}
	if outFile != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if werr := os.WriteFile(outFile, append(b, '\n'), 0o644); werr != nil {
			fmt.Fprintln(stderr, "bench:", werr)
		}
	}
	if jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(res)
	} else {
		res.printText(stdout)
	}
	switch {
	case ctx.Err() != nil:
		fmt.Fprintf(stderr, "bench %s: interrupted\n", name)
		return exitInterrupt
	case err != nil:
		fmt.Fprintf(stderr, "bench %s: %v\n", name, err)
		return exitSetup
	case !res.passed():
		return exitIncorrect
	}
	return exitOK
}

// parseServers reads -server (host:port, or several comma-separated) and
// -pid (none, or one PID per server).
func parseServers(servers, pids string) ([]string, []int, error) {
	list := splitList(servers)
	if len(list) == 0 {
		return nil, nil, fmt.Errorf("-server: no address")
	}
	var ids []int
	for _, p := range splitList(pids) {
		id, err := strconv.Atoi(p)
		if err != nil || id <= 0 {
			return nil, nil, fmt.Errorf("-pid %q: want process IDs", pids)
		}
		ids = append(ids, id)
	}
	if len(ids) > 0 && len(ids) != len(list) {
		return nil, nil, fmt.Errorf("-pid: %d PIDs for %d servers, want one per server", len(ids), len(list))
	}
	return list, ids, nil
}

// splitList reads a comma-separated list, leaving out empty items.
func splitList(s string) []string {
	var list []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			list = append(list, item)
		}
	}
	return list
}

// defaults fills the flags whose default depends on the scenario.
func defaults(name string, f *scenarioFlags, set map[string]bool) {
	if f.rate < 0 {
		switch name {
		case "rooms":
			f.rate = 2000
		default:
			f.rate = 1000
		}
	}
	if name == "commands" && !set["rate"] {
		f.rate = 100
	}
	if name == "commands" && !set["pubs"] {
		f.pubs = 1
	}
	if name == "scale" && !set["members"] {
		f.members = 2
	}
	if name == "failover" && !set["senders"] {
		f.senders = 4
	}
	if name == "failover" && !set["rate"] {
		f.rate = 400
	}
	if f.baselineName == "" {
		f.baselineName = "XADD -c 50"
	}
	if f.rooms == 0 {
		switch name {
		case "ingest":
			f.rooms = 50
		default:
			f.rooms = 100
		}
	}
}
