# bench/failover.sh: issue 10's part of the suite (failover and
# REDIS_ACK_REPLICAS), sourced by bench/run.sh, which defines (with bench/servers.sh) free_port,
# log, start_server, stop_server, run_bench, scenario, xadd_rps,
# baseline_json and the variables they use. Not a script of its own:
#
#   ONLY=failover bench/run.sh   # only this part (and the baselines)
#   FAILOVER=0 bench/run.sh      # the suite without it
#
# 1. What REDIS_ACK_REPLICAS costs: a primary with one replica
#    (redis-server --replicaof), one xroom on the primary with
#    REDIS_ACK_REPLICAS=0 and =1 in turn (ACK_ROUNDS rounds, the order
#    reversed every other round: 0 1, 1 0, ...), each running ingest at
#    window 1 and 16 (with Redis commands per message: one WAIT per batch)
#    and a 1 room × 100 subscribers fanout at 1,000 msgs/s; beside
#    redis-benchmark XADD on that primary (with its replica), same run.
# 2. Failovers under Sentinel: for each case of FO_CASES
#    (FAULT:REPLICAS:ACK_REPLICAS), a fresh primary, its replicas and one
#    Sentinel (down-after-milliseconds FO_DOWN_AFTER, failover-timeout
#    10000), one xroom with REDIS_URL=redis://SENTINEL
#    REDIS_SENTINEL_MASTER=mymaster, and `bench failover`: resilient
#    senders, then SENTINEL FAILOVER (graceful) or SIGKILL of the primary
#    (kill).
#
# Settings (environment):
#   ACK_ROUNDS=2      rounds of part 1 (0: none)
#   FO_CASES='graceful:1:0 graceful:1:1 kill:2:0 kill:2:1 graceful:2:1 graceful:2:2'
#                     the failovers of part 2 (empty: none)
#   FO_RECOVERY=2s    target: the first ack from the new primary within this
#                     of the promotion (issue 10), where README promises it
#   FO_DOWN_AFTER=1000  the Sentinel's down-after-milliseconds, as in
#                     internal/redistest/sentinel.go

ACK_ROUNDS=${ACK_ROUNDS-2}
FO_CASES=${FO_CASES-graceful:1:0 graceful:1:1 kill:2:0 kill:2:1 graceful:2:1 graceful:2:2}
FO_RECOVERY=${FO_RECOVERY:-2s}
FO_DOWN_AFTER=${FO_DOWN_AFTER:-1000}
FO_XADD_C50=unmeasured FO_XADD_P16=unmeasured # part 1's baselines
FO_PIDS=()                                     # every redis-server and Sentinel started here
FO_PORT= FO_PID=                               # the last one started

# fo_cleanup stops them (SIGTERM, then SIGKILL after 10 s). They are
# disowned, so that bash does not report the primary the bench kills.
fo_cleanup() {
	local p
	for p in "${FO_PIDS[@]}"; do
		kill "$p" 2>/dev/null
	done
	for p in "${FO_PIDS[@]}"; do
		for _ in $(seq 100); do
			kill -0 "$p" 2>/dev/null || break
			sleep 0.1
		done
		kill -0 "$p" 2>/dev/null && kill -9 "$p" 2>/dev/null
	done
	FO_PIDS=()
}
trap 'fo_cleanup; cleanup' EXIT

# fo_redis LOG ARGS...: a redis-server (or, with --sentinel, a Sentinel) on
# a free port, without persistence: FO_PORT, FO_PID. The first argument
# after LOG may be a config file (the Sentinel's).
fo_redis() {
	local logf=$1 attempt
	shift
	for attempt in 1 2 3 4 5; do
		FO_PORT=$(free_port)
		redis-server "$@" --port "$FO_PORT" --bind 127.0.0.1 --logfile "$logf" &
		FO_PID=$!
		for _ in $(seq 100); do
			if redis-cli -p "$FO_PORT" ping >/dev/null 2>&1; then
				FO_PIDS+=("$FO_PID")
				disown "$FO_PID"
				return 0
			fi
			kill -0 "$FO_PID" 2>/dev/null || break
			sleep 0.1
		done
		kill "$FO_PID" 2>/dev/null
		wait "$FO_PID" 2>/dev/null
	done
	echo "run.sh: redis-server $* did not start; see $logf" >&2
	exit 2
}

# fo_data_node DIR [--replicaof HOST PORT]: a primary or a replica, with
# its own directory (a replica writes the RDB of its sync there) and
# DIR.log. Diskless sync without delay: a new replica is in sync at once.
fo_data_node() {
	local dir=$1
	shift
	mkdir -p "$dir"
	fo_redis "$dir.log" --dir "$dir" --save '' --appendonly no --maxclients 10000 \
		--repl-diskless-sync yes --repl-diskless-sync-delay 0 "$@"
}

# fo_wait_sync PORT: until the replica on PORT has its link up and synced.
fo_wait_sync() {
	local info
	for _ in $(seq 200); do
		info=$(redis-cli -p "$1" info replication 2>/dev/null | tr -d '\r')
		if grep -q '^master_link_status:up' <<<"$info" && grep -q '^master_sync_in_progress:0' <<<"$info"; then
			return 0
		fi
		sleep 0.1
	done
	echo "run.sh: the replica on port $1 did not sync" >&2
	exit 2
}

# fo_ticks PID: the process's CPU time so far, in clock ticks.
fo_ticks() {
	awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0
}

# fo_ack_cost: part 1.
fo_ack_cost() {
	local dir=$OUT/ack-cost primary_port primary_pid replica_pid saved_port=$REDIS_PORT round n order t0 c0
	mkdir -p "$dir"
	fo_data_node "$dir/primary"
	primary_port=$FO_PORT primary_pid=$FO_PID
	fo_data_node "$dir/replica" --replicaof 127.0.0.1 "$primary_port"
	replica_pid=$FO_PID
	fo_wait_sync "$FO_PORT"
	# The same-run baseline on this primary, which replicates every XADD.
	REDIS_PORT=$primary_port
	FO_XADD_C50=$(xadd_rps)
	FO_XADD_P16=$(xadd_rps -P 16)
	redis-cli -p "$REDIS_PORT" del bench:baseline >/dev/null
	log "baseline (issue 10): redis-benchmark XADD on a primary with one replica, 50 clients: $FO_XADD_C50 requests/s; -P 16: $FO_XADD_P16 requests/s"
	log
	baseline_json "$OUT/03-baseline-replicated-c50.json" "redis-benchmark XADD -c 50, primary with one replica" XADD "$FO_XADD_C50" requests/s
	baseline_json "$OUT/04-baseline-replicated-p16.json" "redis-benchmark XADD -c 50 -P 16, primary with one replica" XADD "$FO_XADD_P16" requests/s
	for round in $(seq "$ACK_ROUNDS"); do
		order="0 1"
		[ $((round % 2)) = 0 ] && order="1 0"
		for n in $order; do
			SERVER_ENV=(REDIS_ACK_REPLICAS="$n")
			start_server
			fo_ack_run "$replica_pid" "REDIS_ACK_REPLICAS=$n (round $round): ingest, 50 senders × 50 rooms" ingest -senders 50 -rooms 50 \
				-duration "$DURATION" -baseline "$FO_XADD_C50" -want-ratio 0 -redis-commands
			fo_ack_run "$replica_pid" "REDIS_ACK_REPLICAS=$n (round $round): ingest, 50 senders × 50 rooms, window 16" ingest -senders 50 -rooms 50 -window 16 \
				-duration "$DURATION" -baseline "$FO_XADD_C50" -want-ratio 0 -redis-commands
			fo_ack_run "$replica_pid" "REDIS_ACK_REPLICAS=$n (round $round): 1 room × 100 subs, 1,000 msgs/s" fanout -subs 100 -pubs 10 -rate 1000 \
				-duration "$DURATION"
			stop_server
		done
	done
	SERVER_ENV=()
	REDIS_PORT=$saved_port
	fo_cleanup
}

# fo_ack_run REPLICA_PID LABEL ARGS...: one scenario, and what the replica
# (counted among "other processes" by the bench) used meanwhile.
fo_ack_run() {
	local replica=$1 t0 c0
	shift
	t0=$(date +%s.%N) c0=$(fo_ticks "$replica")
	scenario "$@"
	log "replica CPU during that run: $(awk -v c="$(($(fo_ticks "$replica") - c0))" -v hz="$(getconf CLK_TCK)" -v t0="$t0" -v t1="$(date +%s.%N)" \
		'BEGIN {printf "%.2f cores", c / hz / (t1 - t0)}') (counted in \"other processes\")"
	log
}

# fo_case FAULT REPLICAS ACK_REPLICAS: part 2, one failover.
fo_case() {
	local fault=$1 nrep=$2 n=$3 dir=$OUT/$N-failover-$1-$2-$3 primary_port primary_pid sentinel_port i kind=scenario want=()
	local saved_port=$REDIS_PORT
	mkdir -p "$dir"
	fo_data_node "$dir/primary"
	primary_port=$FO_PORT primary_pid=$FO_PID
	for i in $(seq "$nrep"); do
		fo_data_node "$dir/replica$i" --replicaof 127.0.0.1 "$primary_port"
		fo_wait_sync "$FO_PORT"
	done
	# The Sentinel rewrites its file: a fresh one each time (see
	# internal/redistest/sentinel.go for the same settings).
	printf 'dir %s\nsentinel monitor mymaster 127.0.0.1 %s 1\nsentinel down-after-milliseconds mymaster %s\nsentinel failover-timeout mymaster 10000\n' \
		"$dir" "$primary_port" "$FO_DOWN_AFTER" >"$dir/sentinel.conf"
	fo_redis "$dir/sentinel.log" "$dir/sentinel.conf" --sentinel
	sentinel_port=$FO_PORT
	REDIS_PORT=$primary_port # the bench's -redis: the primary's CPU (until it is killed)
	SERVER_ENV=(REDIS_URL="redis://127.0.0.1:$sentinel_port" REDIS_SENTINEL_MASTER=mymaster REDIS_ACK_REPLICAS="$n")
	start_server
	# When every replica must confirm, a planned failover leaves the new
	# primary one replica short until the old primary has rejoined as one
	# (README's unavailability table, for one replica): no recovery target
	# then. With fewer than all, a replica that is not promoted may confirm
	# writes it later drops (README): that run is for information and does
	# not fail the suite.
	if [ "$fault" = kill ] || [ "$n" -lt "$nrep" ]; then
		want=(-want-recovery "$FO_RECOVERY")
	fi
	[ "$fault" = graceful ] && [ "$n" -gt 0 ] && [ "$n" -lt "$nrep" ] && kind=reference
	run_bench "$kind" "failover: $fault, $nrep replica(s), REDIS_ACK_REPLICAS=$n" failover -sentinel "127.0.0.1:$sentinel_port" \
		-fault "$fault" -ack-replicas "$n" -primary-pid "$primary_pid" "${want[@]}"
	stop_server
	SERVER_ENV=()
	REDIS_PORT=$saved_port
	fo_cleanup
}

# failover_suite: both parts.
failover_suite() {
	local c fault nrep n
	log "## Issue 10: failover and REDIS_ACK_REPLICAS"
	log
	[ "$ACK_ROUNDS" -gt 0 ] && fo_ack_cost
	for c in $FO_CASES; do
		IFS=: read -r fault nrep n <<<"$c"
		fo_case "$fault" "$nrep" "$n"
	done
}

# failover_summary: the table of ONLY=failover (the baselines and this part).
failover_summary() {
	{
		echo "### Summary (ONLY=failover)"
		echo
		echo "Baselines (same run): redis-benchmark XADD, 50 clients: $XADD_C50 req/s (no replica); on the primary with one replica: $FO_XADD_C50 req/s, -P 16: $FO_XADD_P16 req/s."
		echo "Load average after the suite: $(cut -d' ' -f1-3 /proc/loadavg)."
		echo
		"$OUT/bench" table "$OUT"/[0-9]*.json
	} | tee -a "$LOG" | tee "$OUT/table.md"
}
