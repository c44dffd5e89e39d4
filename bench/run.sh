#!/usr/bin/env bash
# bench/run.sh: xroom's benchmark suite on this machine, with its same-run
# baseline. Starts its own redis-server (no persistence) and xroom server on
# free loopback ports, runs redis-benchmark XADD, then every target scenario
# with go run ./bench, and prints a markdown table of the results.
#
#   bench/run.sh                 # the whole suite (about 10 minutes; 6 with FAILOVER=0)
#   DURATION=5s bench/run.sh     # shorter runs (about 7 minutes)
#   OUT=/tmp/b bench/run.sh      # where results go (default bench/results/DATE)
#   BASE_REV= bench/run.sh       # without the runs of the older server (BASE_REV,
#                                # default aa74194) and the targets against it
#   TAIL_BENCH=0 bench/run.sh    # without the socket-less tail benchmark
#   SUITE=hooks bench/run.sh     # only the publish hook's cost (issue 13): ingest and p99
#                                # with a local hook that answers at once, against none
#   ONLY=failover bench/run.sh   # only issue 10's part (failover and REDIS_ACK_REPLICAS,
#                                # bench/failover.sh) and the baselines: about 4 minutes
#   FAILOVER=0 bench/run.sh      # the suite without that part
#
# Exit status: 0 when every scenario met its target, 1 otherwise.
set -uo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
DURATION=${DURATION:-10s}
OUT=${OUT:-$ROOT/bench/results/$(date -u +%Y%m%dT%H%M%SZ)}
CLOSED_PUBS=${CLOSED_PUBS:-10} # publishers of the closed-loop fanout
# The server the figures are compared with (issue 14: "today's xroom"),
# built from this repository's history; empty: no comparison.
BASE_REV=${BASE_REV-aa74194}
TAIL_BENCH=${TAIL_BENCH:-1}
SUITE=${SUITE:-all} # all, or hooks: only the publish hook's cost
# Issue 10's part (bench/failover.sh): ONLY=failover runs just it.
ONLY=${ONLY:-}
FAILOVER=${FAILOVER:-1}
case "$ONLY" in
'') ;;
failover) BASE_REV= ;; # no older server to build
*)
	echo "run.sh: ONLY=$ONLY: the only part that runs alone is failover" >&2
	exit 2
	;;
esac
# The servers' command pool: xroom's default (10 × GOMAXPROCS), set
# explicitly so the connection bound below is the one they run with.
POOL=${REDIS_POOL_SIZE:-$((10 * $(nproc)))}
mkdir -p "$OUT"
LOG=$OUT/suite.log

for cmd in redis-server redis-benchmark redis-cli go; do
	if ! command -v "$cmd" >/dev/null; then
		echo "run.sh: $cmd not found. On Debian: apt-get install -y redis-server redis-tools (and Go from https://go.dev/dl)" >&2
		exit 2
	fi
done

# Thousands of sockets per process: raise the soft file limit to the hard one.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true

# shellcheck source=bench/servers.sh
. "$ROOT/bench/servers.sh"
SERVER_BIN= # set below: the xroom binary start_server runs
SERVER_ENV=() # extra environment of the servers start_server starts
SERVER2_ADDR=
SERVER2_PID=

cleanup() {
	[ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
	[ -n "$SERVER2_PID" ] && kill "$SERVER2_PID" 2>/dev/null && wait "$SERVER2_PID" 2>/dev/null
	[ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null && wait "$REDIS_PID" 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "$@" | tee -a "$LOG"; }

# --- build --------------------------------------------------------------------
go build -o "$OUT/xroom" ./app || exit 2
go build -o "$OUT/bench" ./bench || exit 2
SERVER_BIN=$OUT/xroom
if [ -n "$BASE_REV" ] && [ "$SUITE" = all ]; then
	# The older server, from git.
	BASE_NAME=$(git rev-parse --short "$BASE_REV") || exit 2
	build_rev "$BASE_REV" "$OUT/xroom-base" || exit 2
fi

# --- redis-server and xroom (bench/servers.sh) ------------------------------
start_redis

# start_second_server starts another instance of the same server on the
# same Redis: SERVER2_ADDR, SERVER2_PID.
start_second_server() {
	local addr=$SERVER_ADDR pid=$SERVER_PID
	start_server
	SERVER2_ADDR=$SERVER_ADDR SERVER2_PID=$SERVER_PID
	SERVER_ADDR=$addr SERVER_PID=$pid
}

stop_second_server() {
	kill "$SERVER2_PID" 2>/dev/null
	wait "$SERVER2_PID" 2>/dev/null
	SERVER2_PID= SERVER2_ADDR=
}

# --- machine --------------------------------------------------------------------
{
	echo "## xroom benchmark suite, $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo
	echo '```'
	echo "uname -a:     $(uname -a)"
	echo "nproc:        $(nproc)"
	echo "cpu:          $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
	echo "memory:       $(grep MemTotal /proc/meminfo | awk '{printf "%.1f GiB", $2/1048576}')"
	echo "redis-server: $(redis-server --version)"
	echo "go:           $(go version)"
	echo "xroom:        ${XROOM_REV:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')}"
	echo "compared with: ${BASE_NAME:-(none: BASE_REV is empty)}"
	echo "command pool: REDIS_POOL_SIZE=$POOL"
	echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) (before the suite)"
	echo '```'
	echo
} | tee -a "$LOG"

# --- same-run baseline: redis-benchmark XADD ----------------------------------
MSG64=$(printf '%064d' 0)
xadd_rps() { # extra redis-benchmark flags...
	redis-benchmark -p "$REDIS_PORT" -n 200000 -c 50 "$@" --csv \
		XADD bench:baseline MAXLEN '~' 100000 '*' user u message "$MSG64" |
		awk -F'","' 'NR==2 {print $2}'
}
XADD_C50=$(xadd_rps)
XADD_P16=$(xadd_rps -P 16)
# What one client reading history gets from Redis alone: XRANGE pages of 1000
# of those entries (the stream now holds about 100,000), in entries/s.
XRANGE_RPS=$(redis-benchmark -p "$REDIS_PORT" -n 2000 -c 1 --csv XRANGE bench:baseline - + COUNT 1000 |
	awk -F'","' 'NR==2 {print $2}')
XRANGE_EPS=$(awk -v r="$XRANGE_RPS" 'BEGIN {printf "%.0f", r * 1000}')
redis-cli -p "$REDIS_PORT" del bench:baseline >/dev/null
log "baseline: redis-benchmark XADD (64-byte message, MAXLEN ~ 100000), 50 clients: $XADD_C50 requests/s; pipelined -P 16: $XADD_P16 requests/s"
log "baseline: redis-benchmark XRANGE COUNT 1000, 1 client: $XRANGE_RPS requests/s = $XRANGE_EPS entries/s"
log

baseline_json() { # file label what value unit
	printf '{"scenario":"baseline","label":"%s","loss":0,"duplicates":0,"reordered":0,"id_regressions":0,"cpu":{"bench_cores":0,"machine_cores":0},"checks":[{"what":"%s","target":"(baseline)","measured":"%.0f %s","ratio":"1.00","pass":true}]}\n' "$2" "$3" "$4" "$5" >"$1"
}
baseline_json "$OUT/00-baseline-c50.json" "redis-benchmark XADD -c 50" XADD "$XADD_C50" requests/s
baseline_json "$OUT/01-baseline-p16.json" "redis-benchmark XADD -c 50 -P 16" XADD "$XADD_P16" requests/s
baseline_json "$OUT/02-baseline-xrange.json" "redis-benchmark XRANGE COUNT 1000 -c 1" XRANGE "$XRANGE_EPS" entries/s

# --- scenarios ------------------------------------------------------------------
FAILED=0
N=10
SERVERS= # -server and -pid of the next run: default, the one server
PIDS=
LAST_JSON=
# run_bench KIND LABEL ARGS...: one bench run, logged, its JSON in LAST_JSON.
# KIND target: its failure fails the suite; reference (a run of the older
# server, to compare with): it does not.
run_bench() {
	local kind=$1 label=$2
	shift 2
	LAST_JSON="$OUT/$N-$(echo "$1" | tr -c 'a-z0-9\n' '-').json"
	N=$((N + 1))
	log "### $label"
	log '```'
	"$OUT/bench" "$@" -server "${SERVERS:-$SERVER_ADDR}" -redis "127.0.0.1:$REDIS_PORT" -pid "${PIDS:-$SERVER_PID}" \
		-label "$label" -out "$LAST_JSON" 2>&1 | tee -a "$LOG"
	local rc=${PIPESTATUS[0]}
	log '```'
	log
	# Interrupted: bash does not always run its INT trap when the foreground
	# program handled the signal itself, so the bench's exit status says so.
	[ "$rc" = 130 ] && exit 130
	[ "$rc" = 0 ] || [ "$kind" = reference ] || FAILED=1
}
scenario() { run_bench target "$@"; }
reference() { run_bench reference "$@"; }

# ---- issue 10: failover and REDIS_ACK_REPLICAS (bench/failover.sh) ------------
source "$ROOT/bench/failover.sh"
if [ "$ONLY" = failover ]; then
	failover_suite
	failover_summary
	echo
	echo "results: $OUT (suite.log, table.md, one JSON per scenario)"
	exit "$FAILED"
fi
# -------------------------------------------------------------------------------

# The presence heartbeat refreshes every room's members (a few Redis
# commands per room, every PRESENCE_HEARTBEAT): a cost per room and second,
# not per message. The runs that compare Redis work per message across room
# counts keep it out of their window (the default runs show it).
QUIET_PRESENCE=(PRESENCE_TTL=30m PRESENCE_HEARTBEAT=10m)

# The publish hook's cost (issue 13): the same runs without a publish hook
# and with one that answers at once (`bench hook`, a process of its own on
# loopback), in one sitting: ingest at window 1 and 16 (acked sends/s, ack
# p99) and delivery p99 at a fixed rate. The runs with the hook are compared
# with those without (-vs): ratios to read, not targets.
HOOK_PID=
hook_cost() {
	local port
	port=$(free_port)
	"$OUT/bench" hook -listen "127.0.0.1:$port" >>"$OUT/hook.log" 2>&1 &
	HOOK_PID=$!
	for _ in $(seq 50); do
		(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
		sleep 0.1
	done
	local w1 w16 fixed
	for hook in none local; do
		local name="no publish hook" vs1=() vs16=() vsf=()
		if [ "$hook" = local ]; then
			name="publish hook answering at once"
			SERVER_ENV=(PUBLISH_HOOK_URL="http://127.0.0.1:$port/")
			vs1=(-vs "$w1" -vs-name "no hook" -vs-tolerance 1)
			vs16=(-vs "$w16" -vs-name "no hook" -vs-tolerance 1)
			vsf=(-vs "$fixed" -vs-name "no hook" -vs-tolerance 1)
		fi
		start_server
		reference "ingest, 50 senders × 50 rooms, $name" ingest -senders 50 -rooms 50 \
			-duration "$DURATION" -baseline "$XADD_C50" -want-ratio 0 "${vs1[@]}"
		w1=$LAST_JSON
		reference "ingest, 50 senders × 50 rooms, window 16, $name" ingest -senders 50 -rooms 50 -window 16 \
			-duration "$DURATION" -baseline "$XADD_C50" -want-ratio 0 "${vs16[@]}"
		w16=$LAST_JSON
		reference "100 rooms × 10 members, 2,000 msgs/s, $name" rooms -rooms 100 -members 10 -rate 2000 \
			-duration "$DURATION" "${vsf[@]}"
		fixed=$LAST_JSON
		stop_server
		SERVER_ENV=()
	done
	kill "$HOOK_PID" 2>/dev/null
	wait "$HOOK_PID" 2>/dev/null
	HOOK_PID=
	log "publish hook: $(tail -n 1 "$OUT/hook.log")"
	log
}
trap '[ -n "$HOOK_PID" ] && kill "$HOOK_PID" 2>/dev/null; fo_cleanup; cleanup' EXIT

if [ "$SUITE" = hooks ]; then
	hook_cost
	{
		echo "### Summary"
		echo
		echo "Baseline (same run): redis-benchmark XADD, 50 clients: $XADD_C50 req/s; -P 16: $XADD_P16 req/s."
		echo "Load average after the runs: $(cut -d' ' -f1-3 /proc/loadavg)."
		echo
		"$OUT/bench" table "$OUT"/[0-9]*.json
	} | tee -a "$LOG" | tee "$OUT/table.md"
	echo
	echo "results: $OUT (suite.log, table.md, one JSON per run)"
	exit 0
fi

# The single-room figures and today's Redis work at 1,000 rooms, from the
# older server first (the new one turns on keyspace notifications in Redis,
# which would cost the older one's appends too).
VS_TOLERANCE=${VS_TOLERANCE:-0.2} # p99 moves by tens of percent between runs of one binary here
VS_FANOUT=() VS_CLOSED=() VS_SUBS=() TODAY=()
if [ -n "$BASE_REV" ]; then
	SERVER_BIN=$OUT/xroom-base
	start_server
	reference "$BASE_NAME: 1 room × 100 subs, 1,000 msgs/s" fanout -subs 100 -pubs 10 -rate 1000 -duration "$DURATION"
	VS_FANOUT=(-vs "$LAST_JSON" -vs-tolerance "$VS_TOLERANCE" -vs-name "$BASE_NAME")
	reference "$BASE_NAME: 1 room × 100 subs, closed loop" fanout -subs 100 -pubs "$CLOSED_PUBS" -rate 0 -duration "$DURATION"
	VS_CLOSED=(-vs "$LAST_JSON" -vs-tolerance "$VS_TOLERANCE" -vs-name "$BASE_NAME")
	reference "$BASE_NAME: 1 room × 1,000 subs, 100 msgs/s" fanout -subs 1000 -pubs 10 -rate 100 -duration "$DURATION"
	VS_SUBS=(-vs "$LAST_JSON" -vs-tolerance "$VS_TOLERANCE" -vs-name "$BASE_NAME")
	stop_server
	SERVER_ENV=("${QUIET_PRESENCE[@]}")
	start_server
	reference "$BASE_NAME: 1,000 rooms × 2 members, 1,000 msgs/s, presence heartbeat out of the window" rooms \
		-rooms 1000 -members 2 -rate 1000 -duration "$DURATION" -redis-commands
	TODAY=(-today "$LAST_JSON" -want-vs-today 0.7 -vs-name "$BASE_NAME")
	stop_server
	SERVER_ENV=()
	SERVER_BIN=$OUT/xroom
fi

start_server
scenario "1 room × 100 subs, 1,000 msgs/s" fanout -subs 100 -pubs 10 -rate 1000 \
	-duration "$DURATION" -want-p99 10ms "${VS_FANOUT[@]}"
scenario "1 room × 100 subs, closed loop" fanout -subs 100 -pubs "$CLOSED_PUBS" -rate 0 \
	-duration "$DURATION" -want-p99 45ms -want-rate 350000 -baseline "$XADD_C50" "${VS_CLOSED[@]}"
scenario "1 room × 1,000 subs, 100 msgs/s" fanout -subs 1000 -pubs 10 -rate 100 \
	-duration "$DURATION" -want-p99 50ms "${VS_SUBS[@]}"
scenario "100 rooms × 10 members, 2,000 msgs/s" rooms -rooms 100 -members 10 -rate 2000 \
	-duration "$DURATION" -want-p99 2.5ms
scenario "replay of 100,000 entries" replay -entries 100000 -repeat 3 -want-rate 500000 \
	-baseline "$XRANGE_EPS"
# Issue 14's ingest targets: acked sends/s against 50 unpipelined
# redis-benchmark clients (-c 50), at one send in flight per sender (window
# 1) and at 16 (a bot or bridge streaming sends, matching acks by
# client_id; a connection's appends are pipelined in send order).
scenario "ingest, 50 senders × 50 rooms" ingest -senders 50 -rooms 50 \
	-duration "$DURATION" -baseline "$XADD_C50" -want-ratio 0.3
scenario "ingest, 50 senders × 50 rooms, window 16" ingest -senders 50 -rooms 50 -window 16 \
	-duration "$DURATION" -baseline "$XADD_C50" -want-ratio 0.5
# For information: the same against pipelined redis-benchmark (-P 16).
W16=$(grep -o '"messages_per_sec": [0-9.]*' "$LAST_JSON" | awk '{print $2}')
log "window 16 vs redis-benchmark -P 16 (ratio only): $(awk -v a="${W16:-0}" -v b="$XADD_P16" 'BEGIN {printf "%.0f / %.0f = %.3f", a, b, a / b}')"
log
scenario "Redis commands per message, 10/100/1,000 subs" commands -subs-list 10,100,1000 \
	-pubs 1 -rate 100 -duration "$DURATION"
# A room's two members on two instances of one Redis: each instance tails
# every room; together they should read each message about once each.
start_second_server
SERVERS="$SERVER_ADDR,$SERVER2_ADDR" PIDS="$SERVER_PID,$SERVER2_PID"
scenario "1,000 rooms × 2 members over two instances, 1,000 msgs/s" rooms -rooms 1000 -members 2 -rate 1000 \
	-duration "$DURATION" -redis-commands -want-reads 2.2
SERVERS= PIDS=
stop_second_server
# Many small rooms on one instance: Redis connections bounded (the command
# pool + 4) at every size, p99 at 8,000 rooms (16,000 sockets), as
# configured by default (the presence heartbeat included).
scenario "10 / 1,000 / 8,000 rooms × 2 members, 1,000 msgs/s" scale -rooms-list 10,1000,8000 -members 2 -rate 1000 \
	-duration "$DURATION" -want-redis-conns $((POOL + 4)) -want-p99 3ms -flat 0
# The same with the presence heartbeat out of the window: Redis work per
# message by room count, and against the older server at 1,000 rooms.
stop_server
SERVER_ENV=("${QUIET_PRESENCE[@]}")
start_server
scenario "10 / 1,000 / 8,000 rooms × 2 members, 1,000 msgs/s, presence heartbeat out of the window" scale \
	-rooms-list 10,1000,8000 -members 2 -rate 1000 -duration "$DURATION" -want-redis-conns $((POOL + 4)) -flat 0.2 "${TODAY[@]}"
stop_server
SERVER_ENV=()
# Idle RSS is measured on a fresh server: one that has just carried the loads
# above holds freed heap that would hide the connections' own cost.
start_server
scenario "10,000 idle connections" idle -conns 10000 -rooms 100 -hold 10s -want-kb 20
stop_server

hook_cost

# The tail without sockets: 100, 10,000 and 50,000 tailed rooms in process
# (on a redis-server of its own). Timings are figures, not targets; it fails
# when the hub holds more than the command pool + 4 Redis connections.
if [ "$TAIL_BENCH" = 1 ]; then
	log "### tail without sockets: go test -run '^\$' -bench Tail ./streams"
	log '```'
	go test -run '^$' -bench Tail ./streams 2>&1 | tee -a "$LOG" "$OUT/tail-bench.txt"
	rc=${PIPESTATUS[0]}
	log '```'
	log
	[ "$rc" = 0 ] || FAILED=1
fi

# ---- issue 10: failover and REDIS_ACK_REPLICAS (bench/failover.sh) ------------
[ "$FAILOVER" = 1 ] && failover_suite
# -------------------------------------------------------------------------------

{
	echo "### Summary"
	echo
	echo "Baselines (same run): redis-benchmark XADD, 50 clients: $XADD_C50 req/s; -P 16: $XADD_P16 req/s; XRANGE COUNT 1000, 1 client: $XRANGE_EPS entries/s."
	[ -n "$BASE_REV" ] && echo "The rows named $BASE_NAME: are the older server ($BASE_REV) in this run, for the comparisons (no targets of their own)."
	echo "Command pool: REDIS_POOL_SIZE=$POOL, so at most $((POOL + 4)) Redis connections per instance."
	echo "Load average after the suite: $(cut -d' ' -f1-3 /proc/loadavg)."
	echo
	"$OUT/bench" table "$OUT"/[0-9]*.json
} | tee -a "$LOG" | tee "$OUT/table.md"
echo
echo "results: $OUT (suite.log, table.md, one JSON per scenario)"
exit "$FAILED"
