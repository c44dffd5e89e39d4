# bench/servers.sh: the redis-server and xroom servers of the benchmark
# scripts, sourced by bench/run.sh (the suite) and bench/ab.sh (A/B runs),
# so both start their servers the same way, with the same limit overrides.
#
# The caller sets OUT (where logs go), POOL (the servers' REDIS_POOL_SIZE),
# SERVER_BIN (the xroom binary) and SERVER_ENV (an array: more environment
# for the servers). These functions set REDIS_PORT, REDIS_PID, SERVER_ADDR
# and SERVER_PID.

REDIS_PORT=
REDIS_PID=
SERVER_ADDR=
SERVER_PID=

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
	echo "$(basename "$0"): no free port found" >&2
	exit 2
}

# --- redis-server -------------------------------------------------------------
# try_redis starts a redis-server without persistence on a free port, or
# returns 1 when it did not answer.
try_redis() {
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

# start_redis starts one, trying five ports, or stops the script.
start_redis() {
	local attempt
	for attempt in 1 2 3 4 5; do
		try_redis && return 0
	done
	echo "$(basename "$0"): redis-server did not start; see $OUT/redis.log" >&2
	exit 2
}

stop_redis() {
	kill "$REDIS_PID" 2>/dev/null
	wait "$REDIS_PID" 2>/dev/null
	REDIS_PID= REDIS_PORT=
}

# --- xroom server ---------------------------------------------------------------
start_server() {
	local attempt
	for attempt in 1 2 3 4 5; do
		SERVER_ADDR=127.0.0.1:$(free_port)
		try_server && return 0
	done
	echo "$(basename "$0"): xroom did not become ready; see $OUT/server.log" >&2
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
		REDIS_POOL_SIZE="$POOL" \
		ADDR="$SERVER_ADDR" \
		HISTORY_MAXLEN=200000 \
		LOG_LEVEL=warn \
		"${SERVER_ENV[@]}" \
		"$SERVER_BIN" >>"$OUT/server.log" 2>&1 &
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

# build_rev REV BINARY builds xroom as it was at git revision REV, from git
# (no worktree needed: its own module, built with the same Go).
build_rev() {
	local src
	src=$(mktemp -d "$OUT/src.XXXXXX") || return 1
	git archive "$1" | tar -x -C "$src" && (cd "$src" && go build -o "$2" ./app)
	local rc=$?
	rm -rf "$src"
	return $rc
}
