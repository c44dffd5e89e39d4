#!/usr/bin/env bash
# bench/run.sh: xroom's benchmark suite on this machine, with its same-run
# baseline. Starts its own redis-server (no persistence) and xroom server on
# free loopback ports, runs redis-benchmark XADD, then every target scenario
# with go run ./bench, and prints a markdown table of the results.
#
#   bench/run.sh                 # the whole suite (about 5 minutes)
#   DURATION=5s bench/run.sh     # shorter runs
#   OUT=/tmp/b bench/run.sh      # where results go (default bench/results/DATE)
#
# Exit status: 0 when every scenario met its target, 1 otherwise.
set -uo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
DURATION=${DURATION:-10s}
OUT=${OUT:-$ROOT/bench/results/$(date -u +%Y%m%dT%H%M%SZ)}
CLOSED_PUBS=${CLOSED_PUBS:-10} # publishers of the closed-loop fanout
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

# free_port prints a TCP port nothing listens on, below Linux's ephemeral
# range (32768-60999), where the bench's own outgoing connections would
# otherwise take it first. Starting a server on it is still retried.
free_port() {
	local p
	for _ in $(seq 100); do
		p=$((20000 + RANDOM % 12000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return
		fi
	done
	echo "run.sh: no free port found" >&2
	exit 2
}

REDIS_PORT=
REDIS_PID=
SERVER_ADDR=
SERVER_PID=

cleanup() {
	[ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
	[ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null && wait "$REDIS_PID" 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "$@" | tee -a "$LOG"; }

# --- build --------------------------------------------------------------------
go build -o "$OUT/xroom" ./app || exit 2
go build -o "$OUT/bench" ./bench || exit 2

# --- redis-server -------------------------------------------------------------
start_redis() {
	REDIS_PORT=$(free_port)
	redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
		--maxclients 10000 --logfile "$OUT/redis.log" &
	REDIS_PID=$!
	for _ in $(seq 100); do
		redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0
		kill -0 "$REDIS_PID" 2>/dev/null || break # exited: the port was taken after all
		sleep 0.1
	done
	kill "$REDIS_PID" 2>/dev/null
	wait "$REDIS_PID" 2>/dev/null
	REDIS_PID=
	return 1
}
for attempt in 1 2 3 4 5; do
	start_redis && break
	if [ "$attempt" = 5 ]; then
		echo "run.sh: redis-server did not start; see $OUT/redis.log" >&2
		exit 2
	fi
done

# --- xroom server ---------------------------------------------------------------
start_server() {
	local attempt
	for attempt in 1 2 3 4 5; do
		SERVER_ADDR=127.0.0.1:$(free_port)
		try_server && return 0
	done
	echo "run.sh: xroom did not become ready; see $OUT/server.log" >&2
	exit 2
}

# ready_ok tells whether GET /readyz answers 200 (bash only: no curl needed).
ready_ok() {
	(
		exec 3<>"/dev/tcp/${SERVER_ADDR%:*}/${SERVER_ADDR##*:}" || exit 1
		printf 'GET /readyz HTTP/1.0\r\nHost: %s\r\n\r\n' "$SERVER_ADDR" >&3
		read -r -t 5 status <&3
		[[ $status == *" 200 "* ]]
	) 2>/dev/null
}

try_server() {
	# ---- LIMIT OVERRIDES: keep every limit generous for the benchmark. --------
	# The load comes from one IP at rates no single user sends: rate limits and
	# per-IP connection caps must be off. Add any new limit variable here.
	local limits=(
		RATE_LIMIT=0
		USER_RATE_LIMIT=0
		MAX_CONNS_PER_IP=0
	)
	# ---------------------------------------------------------------------------
	# ENV_FILE=/dev/null: a developer's .env in the checkout must not change
	# the benchmark's server.
	env "${limits[@]}" \
		ENV_FILE=/dev/null \
		REDIS_URL="redis://127.0.0.1:$REDIS_PORT" \
		ADDR="$SERVER_ADDR" \
		HISTORY_MAXLEN=200000 \
		LOG_LEVEL=warn \
		"$OUT/xroom" >>"$OUT/server.log" 2>&1 &
	SERVER_PID=$!
	for _ in $(seq 200); do
		ready_ok && return 0
		kill -0 "$SERVER_PID" 2>/dev/null || break # exited: see server.log
		sleep 0.1
	done
	kill "$SERVER_PID" 2>/dev/null
	wait "$SERVER_PID" 2>/dev/null
	SERVER_PID=
	return 1
}

stop_server() {
	kill "$SERVER_PID" 2>/dev/null
	wait "$SERVER_PID" 2>/dev/null
	SERVER_PID=
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
scenario() { # label, then bench arguments
	local label=$1
	shift
	local file
	file="$OUT/$N-$(echo "$1" | tr -c 'a-z0-9\n' '-').json"
	N=$((N + 1))
	log "### $label"
	log '```'
	"$OUT/bench" "$@" -server "$SERVER_ADDR" -redis "127.0.0.1:$REDIS_PORT" -pid "$SERVER_PID" \
		-label "$label" -out "$file" 2>&1 | tee -a "$LOG"
	local rc=${PIPESTATUS[0]}
	log '```'
	log
	# Interrupted: bash does not always run its INT trap when the foreground
	# program handled the signal itself, so the bench's exit status says so.
	[ "$rc" = 130 ] && exit 130
	[ "$rc" = 0 ] || FAILED=1
}

start_server
scenario "1 room × 100 subs, 1,000 msgs/s" fanout -subs 100 -pubs 10 -rate 1000 \
	-duration "$DURATION" -want-p99 10ms
scenario "1 room × 100 subs, closed loop" fanout -subs 100 -pubs "$CLOSED_PUBS" -rate 0 \
	-duration "$DURATION" -want-p99 45ms -want-rate 350000 -baseline "$XADD_C50"
scenario "1 room × 1,000 subs, 100 msgs/s" fanout -subs 1000 -pubs 10 -rate 100 \
	-duration "$DURATION" -want-p99 50ms
scenario "100 rooms × 10 members, 2,000 msgs/s" rooms -rooms 100 -members 10 -rate 2000 \
	-duration "$DURATION" -want-p99 8ms
scenario "replay of 100,000 entries" replay -entries 100000 -repeat 3 -want-rate 500000 \
	-baseline "$XRANGE_EPS"
# The issue's ingest target: one send in flight per sender (window 1) against
# 50 unpipelined redis-benchmark clients (-c 50), like for like.
scenario "ingest, 50 senders × 50 rooms" ingest -senders 50 -rooms 50 \
	-duration "$DURATION" -baseline "$XADD_C50" -want-ratio 0.8
# Streaming senders (16 sends in flight each, as a bot or bridge matching acks
# by client_id) against pipelined redis-benchmark (-P 16): a ratio, no target.
scenario "ingest, 50 senders × 50 rooms, window 16" ingest -senders 50 -rooms 50 -window 16 \
	-duration "$DURATION" -baseline "$XADD_P16" -want-ratio 0
scenario "Redis commands per message, 10/100/1,000 subs" commands -subs-list 10,100,1000 \
	-pubs 1 -rate 100 -duration "$DURATION"
# Idle RSS is measured on a fresh server: one that has just carried the loads
# above holds freed heap that would hide the connections' own cost.
stop_server
start_server
scenario "10,000 idle connections" idle -conns 10000 -rooms 100 -hold 10s -want-kb 20
stop_server

{
	echo "### Summary"
	echo
	echo "Baselines (same run): redis-benchmark XADD, 50 clients: $XADD_C50 req/s; -P 16: $XADD_P16 req/s; XRANGE COUNT 1000, 1 client: $XRANGE_EPS entries/s."
	echo "Load average after the suite: $(cut -d' ' -f1-3 /proc/loadavg)."
	echo
	"$OUT/bench" table "$OUT"/[0-9]*.json
} | tee -a "$LOG" | tee "$OUT/table.md"
echo
echo "results: $OUT (suite.log, table.md, one JSON per scenario)"
exit "$FAILED"
