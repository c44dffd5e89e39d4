#!/usr/bin/env bash
# bench/ab.sh: an alternated A/B of xroom builds in one scenario, for the
# figures a single pair cannot give on a shared machine (its speed moves by
# a third within minutes: alternating the builds, a fresh redis-server and
# xroom per run, and medians over the rounds keep the comparison fair).
#
#   bench/ab.sh ROUNDS "REV_OR_BINARY ..." SCENARIO [ARGS...]
#   bench/ab.sh 4 "15650a3 HEAD" fanout -subs 100 -pubs 10 -rate 0 -duration 5s
#   bench/ab.sh 4 "aa74194 HEAD" rooms -rooms 1000 -members 2 -rate 1000 -duration 5s -redis-commands
#
# A build is a git revision (built from `git archive` into OUT) or the path
# of an xroom binary. Each run is one JSON in OUT (default
# bench/results/ab-DATE); the last lines are each build's medians and, with
# -redis-commands, Redis's CPU per message. The servers start as
# bench/run.sh's do (bench/servers.sh: limits off, REDIS_POOL_SIZE=20);
# AB_ENV adds to their environment (e.g. AB_ENV="TAIL_READ_BACK=false").
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ $# -ge 3 ] || { sed -n '2,16p' "$0"; exit 2; }
ROUNDS=$1; BUILDS=$2; shift 2
for cmd in redis-server redis-cli go python3; do
	command -v "$cmd" >/dev/null || { echo "ab.sh: $cmd not found. On Debian: apt-get install -y redis-server redis-tools python3 (and Go from https://go.dev/dl)" >&2; exit 2; }
done
case $ROUNDS in '' | *[!0-9]*) echo "ab.sh: ROUNDS must be a number, not \"$ROUNDS\"" >&2; exit 2 ;; esac
OUT=${OUT:-$ROOT/bench/results/ab-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT" || exit 2
cd "$ROOT" || exit 2
ulimit -n "$(ulimit -Hn)" 2>/dev/null

# shellcheck source=bench/servers.sh
. "$ROOT/bench/servers.sh"
POOL=20
read -r -a SERVER_ENV <<<"${AB_ENV:-}"
trap 'stop_server; stop_redis' EXIT
trap 'exit 130' INT TERM

# Names, and binaries, of the builds.
NAMES=()
for b in $BUILDS; do
	if [ -x "$b" ] && [ -f "$b" ]; then
		n=$(basename "$b")
		cp "$b" "$OUT/xroom-$n" || exit 2
	else
		n=$(git rev-parse --short --verify --quiet "$b^{commit}") ||
			{ echo "ab.sh: $b is neither an xroom binary nor a git revision" >&2; exit 2; }
		build_rev "$n" "$OUT/xroom-$n" || exit 2
	fi
	NAMES+=("$n")
done
go build -o "$OUT/bench" ./bench || exit 2

# one NAME ROUND SCENARIO...: a fresh redis-server and xroom, one bench run.
one() {
	local name=$1 round=$2
	shift 2
	SERVER_BIN=$OUT/xroom-$name
	start_redis
	start_server
	"$OUT/bench" "$@" -server "$SERVER_ADDR" -redis "127.0.0.1:$REDIS_PORT" -pid "$SERVER_PID" -json \
		>"$OUT/$name-$round.json" 2>"$OUT/bench-$name-$round.log"
	stop_server
	stop_redis
}

SCENARIO=("$@")
for round in $(seq "$ROUNDS"); do
	for n in "${NAMES[@]}"; do
		sleep 2 # let the previous run's sockets and processes go
		echo "$(date -u +%T) round $round: $n" >&2
		one "$n" "$round" "${SCENARIO[@]}"
	done
done

python3 - "$OUT" "$ROUNDS" "${NAMES[@]}" <<'PY'
import json, statistics as st, sys
out, rounds, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
med = {}
for n in names:
    rows = []
    for r in range(1, rounds + 1):
        try:
            d = json.load(open(f"{out}/{n}-{r}.json"))
        except (OSError, ValueError) as e:
            print(f"{n} round {r}: no result ({e})")
            continue
        cpu, sec = d["cpu"], d["seconds"]
        per = max(d["deliveries"], 1)
        red = d.get("redis") or {}
        rows.append({
            "deliveries/s": d["deliveries_per_sec"],
            "acked/s": d["acked"] / sec,
            "p99 ms": d["latency"]["p99_ms"],
            "server µs/delivery": cpu["server_cores"] * sec * 1e6 / per,
            "Redis µs/msg": red.get("cpu_us_per_message", 0),
            "others": cpu["others_cores"],
            "bad": d["loss"] + d["duplicates"] + d["reordered"],
        })
    if not rows:
        continue
    m = {k: st.median(r[k] for r in rows) for k in rows[0]}
    med[n] = m
    print(f"{n}: {len(rows)} runs; medians: " + ", ".join(
        f"{k} {m[k]:.2f}" for k in ("deliveries/s", "acked/s", "p99 ms", "server µs/delivery", "Redis µs/msg")) +
        f"; lost/dup/reordered {sum(r['bad'] for r in rows)}; other processes ≤ {max(r['others'] for r in rows):.2f} cores")
if len(med) >= 2:
    a = names[0]
    for n in names[1:]:
        if n in med and a in med:
            print(f"{n} / {a}: " + ", ".join(
                f"{k} {med[n][k] / med[a][k]:.2f} ×" for k in med[a] if k not in ("others", "bad") and med[a][k]))
PY
