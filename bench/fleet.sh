#!/usr/bin/env bash
# fleet.sh measures how many admissions one Redis sustains for a fleet of
# three mxguard nodes on this machine (issue 11), and what one Redis core
# could take of the limiter's commands. It prints markdown for
# BENCHMARKS.md.
#
# Usage: bench/fleet.sh [RUNS [SECONDS]]      (defaults: 3 runs of 10 s)
#
# Per run, with a fresh redis-server (no persistence) and three fresh
# mxguard nodes sharing it ([fleet] redis, on_redis_error = "tempfail", so
# that a Redis too slow to answer within the limiter's 100 ms shows as 421
# replies rather than as local counts):
#   1. a one-second flood at each node, so that every node has loaded the
#      scripts and opened its connections; CONFIG RESETSTAT;
#   2. three `mxload -mode flood` at once, one a node, -c $FLOOD_C dialers
#      each, from 4,096 addresses each (127.0.16.0/20, 127.0.32.0/20,
#      127.0.48.0/20), for SECONDS: each connection is admitted (ClientRate
#      100 and ClientConn 10 per 1 s window, far above what one address
#      sends), greeted, QUIT, reset;
#   3. from Redis: its CPU time (INFO cpu), the calls of the commands the
#      nodes sent (INFO commandstats: evalsha, eval, zrem), EVALSHA's time in
#      the server at p50/p99 (INFO latencystats); from /proc, the CPU time
#      of the nodes; from mxload, the replies by code and the time from
#      connect to the first reply (p50, p99) per node.
# Then, per run, the ceiling: redis-benchmark (one thread, 50 connections,
# no pipelining, as the nodes send) runs each of the three commands of an
# admitted connection (the rate script, the lease script, ZREM), with the
# scripts' own SHA1s as the nodes used them, against keys of 1,000,000
# clients; an admission's share is the sum of the three times.
#
# Environment:
#   MXBENCH_DIR   work directory [/tmp/mxbench-fleet]; each run's files stay there
#   TIERS         ipv4_tiers, e.g. "32, 24" [32]
#   FLOOD_C       dialers per mxload [8]
#   BENCH_N       requests per redis-benchmark command [300000]
#   MX_PORT       the nodes listen on MX_PORT, +1, +2 [2541]
#   DNS_PORT, REDIS_PORT   [2564 6391]
set -euo pipefail

RUNS=${1:-3}
SECONDS_RUN=${2:-10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
W=${MXBENCH_DIR:-/tmp/mxbench-fleet}
BIN=$W/bin
TIERS=${TIERS:-32}
FLOOD_C=${FLOOD_C:-8}
BENCH_N=${BENCH_N:-300000}
MX_PORT=${MX_PORT:-2541}
DNS_PORT=${DNS_PORT:-2564}
REDIS_PORT=${REDIS_PORT:-6391}
OUT=$W/run-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$BIN" "$OUT"

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh" # log, die, wait_listen

PIDS=()
stop() {
	local pid=$1
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}
stop_all() {
	for pid in "${PIDS[@]}"; do stop "$pid"; done
	PIDS=()
}
DNS_PID=
cleanup() {
	set +e
	stop_all
	stop "$DNS_PID"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

NODE_PORTS=("$MX_PORT" $((MX_PORT + 1)) $((MX_PORT + 2)))
for p in "${NODE_PORTS[@]}" "$DNS_PORT" "$REDIS_PORT"; do
	[ -z "$(ss -Hltn "src 127.0.0.1:$p")" ] || die "127.0.0.1:$p is in use; set MX_PORT / DNS_PORT / REDIS_PORT"
done
for c in jq redis-server redis-cli redis-benchmark; do
	command -v "$c" >/dev/null || die "$c is missing (apt-get install jq redis-server redis-tools)"
done

log "building into $BIN"
(cd "$ROOT" && go build -o "$BIN/" ./cmd/mxguard ./cmd/mxload ./cmd/mxguard-testdns) || die "build failed"
VERSION="$(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- . ':!BENCHMARKS.md' || echo +changes)"

# No names for the clients (NXDOMAIN at once), as for most flood sources.
printf '$ORIGIN bench.test.\n@\t3600\tIN\tA\t127.0.0.1\n' >"$W/zone"
"$BIN/mxguard-testdns" -zone "$W/zone" -listen "127.0.0.1:$DNS_PORT" >"$OUT/dns.log" 2>&1 &
DNS_PID=$!
wait_listen "$DNS_PORT"
for i in 0 1 2; do
	mkdir -p "$W/node$i"
	cat >"$W/node$i/mxguard.toml" <<EOF
hostname = "mx$((i + 1)).fleet.bench"
listen = ["127.0.0.1:${NODE_PORTS[$i]}"]
data_dir = "$W/node$i/data"
local_domains = ["bench.test"]
resolver = "127.0.0.1:$DNS_PORT"
# The flood comes from loopback addresses, trusted by default.
trusted_networks = ["127.0.0.1/32"]

[limits]
client_rate = 100
client_conn = 10
connection_rate_window_size = "1s"
ipv4_tiers = [$TIERS]

[fleet]
redis = "127.0.0.1:$REDIS_PORT"
on_redis_error = "tempfail"
EOF
	"$BIN/mxguard" check --config "$W/node$i/mxguard.toml" >/dev/null || die "node $i: config rejected"
done
ulimit -n "$(ulimit -Hn)"
R=(redis-cli -h 127.0.0.1 -p "$REDIS_PORT")
BINDS=(127.0.16.1-127.0.31.254 127.0.32.1-127.0.47.254 127.0.48.1-127.0.63.254)

# info SECTION FIELD prints one field of INFO.
info() { "${R[@]}" info "$1" | tr -d '\r' | awk -F: -v f="$2" '$1 == f { print $2 }'; }
# stat_field LINE KEY prints KEY's value in "a=1,b=2".
stat_field() { tr ',' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2 }'; }
# calc EXPR prints the arithmetic expression's value.
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }
redis_cpu() { calc "$(info cpu used_cpu_user) + $(info cpu used_cpu_sys)"; }
calls() { stat_field "$(info commandstats "cmdstat_$1")" calls; }
# proc_cpu PID prints its CPU seconds (user + system).
proc_cpu() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"; }

RES=$OUT/results.tsv
: >"$RES"
record() { printf '%s\t%s\t%s\n' "$@" >>"$RES"; } # RUN METRIC VALUE
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
for run in $(seq "$RUNS"); do
	rm -rf "$W/redis" && mkdir -p "$W/redis"
	redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no --dir "$W/redis" \
		--logfile "$OUT/redis-$run.log" --daemonize no &
	REDIS_PID=$!
	PIDS+=("$REDIS_PID")
	wait_listen "$REDIS_PORT"
	NODE_PIDS=()
	for i in 0 1 2; do
		rm -rf "$W/node$i/data"
		"$BIN/mxguard" serve --config "$W/node$i/mxguard.toml" 2>"$OUT/node$i-$run.log" &
		NODE_PIDS+=($!)
		PIDS+=($!)
	done
	for p in "${NODE_PORTS[@]}"; do wait_listen "$p"; done

	log "run $run: warm-up"
	timeout 3 "${R[@]}" monitor >"$OUT/monitor-$run.txt" 2>/dev/null &
	MON_PID=$!
	sleep 0.2
	WARM=()
	for i in 0 1 2; do
		"$BIN/mxload" -mode flood -addr "127.0.0.1:${NODE_PORTS[$i]}" -c 2 -duration 1s -bind "${BINDS[$i]}" \
			-json >/dev/null 2>>"$OUT/mxload.log" &
		WARM+=($!)
	done
	for pid in "${WARM[@]}"; do wait "$pid" || die "mxload failed; see $OUT/mxload.log"; done
	sleep 1.2
	wait "$MON_PID" 2>/dev/null || true
	"${R[@]}" config resetstat >/dev/null

	log "run $run: three floods of ${SECONDS_RUN}s, $FLOOD_C dialers each"
	cpu0=$(redis_cpu)
	ncpu0=0
	for pid in "${NODE_PIDS[@]}"; do ncpu0=$(calc "$ncpu0 + $(proc_cpu "$pid")"); done
	FLOODS=()
	for i in 0 1 2; do
		"$BIN/mxload" -mode flood -addr "127.0.0.1:${NODE_PORTS[$i]}" -c "$FLOOD_C" -duration "${SECONDS_RUN}s" \
			-bind "${BINDS[$i]}" -json >"$OUT/flood-$run-$i.json" 2>>"$OUT/mxload.log" &
		FLOODS+=($!)
	done
	for pid in "${FLOODS[@]}"; do wait "$pid" || die "mxload failed; see $OUT/mxload.log"; done
	cpu1=$(redis_cpu)
	ncpu1=0
	for pid in "${NODE_PIDS[@]}"; do ncpu1=$(calc "$ncpu1 + $(proc_cpu "$pid")"); done
	evalsha=$(calls evalsha) eval=$(calls eval) zrem=$(calls zrem)
	lat=$(info latencystats latency_percentiles_usec_evalsha)
	record "$run" evalsha_p50_us "$(stat_field "$lat" p50)"
	record "$run" evalsha_p99_us "$(stat_field "$lat" p99)"

	secs=$(jq -s 'map(.seconds) | max' "$OUT"/flood-"$run"-*.json)
	admitted=$(jq -s 'map(.replies["220"] // 0) | add' "$OUT"/flood-"$run"-*.json)
	conns=$(jq -s 'map(.connections) | add' "$OUT"/flood-"$run"-*.json)
	record "$run" seconds "$secs"
	record "$run" connections "$conns"
	record "$run" admitted "$admitted"
	record "$run" other_replies "$(jq -s -c 'map(.replies | del(.["220"])) | add // {}' "$OUT"/flood-"$run"-*.json)"
	record "$run" errors "$(jq -s -c 'map(.errors) | add // {}' "$OUT"/flood-"$run"-*.json)"
	record "$run" admitted_per_s "$(calc "$admitted / $secs")"
	record "$run" first_reply_p50_ms "$(jq -s 'map(.first_reply.p50_ms) | sort | .[1]' "$OUT"/flood-"$run"-*.json)"
	record "$run" first_reply_p99_ms "$(jq -s 'map(.first_reply.p99_ms) | max' "$OUT"/flood-"$run"-*.json)"
	record "$run" redis_cpu_pct "$(calc "100 * ($cpu1 - $cpu0) / $secs")"
	record "$run" redis_cpu_us_per_adm "$(calc "1000000 * ($cpu1 - $cpu0) / $admitted")"
	record "$run" nodes_cpu_pct "$(calc "100 * ($ncpu1 - $ncpu0) / $secs")"
	record "$run" commands_per_adm "$(calc "(${evalsha:-0} + ${eval:-0} + ${zrem:-0}) / $admitted")"

	# The ceiling: the scripts as the nodes sent them (their SHA1s from
	# MONITOR), one command type at a time.
	# (the most frequent: the lease script's keys are the renewals' too)
	sha() { grep -o "\"evalsha\" \"[0-9a-f]*\" \"1\" \"mxguard:$1:" "$OUT/monitor-$run.txt" |
		cut -d'"' -f4 | sort | uniq -c | sort -rn | awk 'NR == 1 { print $2 }'; }
	rate_sha=$(sha rate)
	conn_sha=$(sha conn)
	[ -n "$rate_sha" ] && [ -n "$conn_sha" ] || die "no script SHA1 in $OUT/monitor-$run.txt"
	"${R[@]}" flushall >/dev/null
	bench() { # NAME COMMAND...
		local name=$1
		shift
		redis-benchmark -h 127.0.0.1 -p "$REDIS_PORT" -c 50 -n "$BENCH_N" -r 1000000 --csv "$@" \
			>"$OUT/bench-$run-$name.csv" 2>&1 || die "redis-benchmark failed; see $OUT/bench-$run-$name.csv"
		tail -1 "$OUT/bench-$run-$name.csv" | cut -d, -f2 | tr -d '"'
	}
	record "$run" ceiling_rate "$(bench rate EVALSHA "$rate_sha" 1 mxguard:rate:__rand_int__ '' 1000 101 m:__rand_int__)"
	record "$run" ceiling_acquire "$(bench acquire EVALSHA "$conn_sha" 1 mxguard:conn:__rand_int__ '' 30000 m:__rand_int__)"
	record "$run" ceiling_zrem "$(bench zrem ZREM mxguard:conn:__rand_int__ m:__rand_int__)"
	stop_all
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# median RUNS values; brackets: every run
fig() { # METRIC FORMAT
	local vals
	vals=$(awk -F'\t' -v m="$1" '$2 == m { print $3 }' "$RES")
	local med
	med=$(sort -g <<<"$vals" | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
	printf "$2 [%s]" "$med" "$(printf "$2\n" $vals | paste -sd, | sed 's/,/, /g')"
}
NTIERS=$(tr ',' '\n' <<<"$TIERS" | grep -c .)
ceiling() { # RUN: admissions a second one Redis core takes: 1 / (tiers × (1/rate + 1/acquire + 1/zrem))
	awk -F'\t' -v r="$1" -v n="$NTIERS" '$1 == r && $2 ~ /^ceiling_/ { t += 1 / $3 } END { printf "%.0f", 1 / (n * t) }' "$RES"
}
for run in $(seq "$RUNS"); do record "$run" ceiling_admissions "$(ceiling "$run")"; done

cat <<EOF
bench/fleet.sh $RUNS $SECONDS_RUN (TIERS="$TIERS", FLOOD_C=$FLOOD_C), mxguard $VERSION, Redis $(redis-server --version | cut -d' ' -f3 | cut -d= -f2), $(date -u '+%Y-%m-%d %H:%M UTC'); load average $LOAD_START at the start, $LOAD_END at the end; each figure the median, every run in brackets.

| three nodes, one Redis | |
|---|---|
| admitted connections/s (greeted) | $(fig admitted_per_s %.0f) |
| connect to first reply, p50 (ms; the median node) | $(fig first_reply_p50_ms %.2f) |
| connect to first reply, p99 (ms; the slowest node) | $(fig first_reply_p99_ms %.2f) |
| Redis CPU (% of one core) | $(fig redis_cpu_pct %.1f) |
| Redis CPU per admission (µs) | $(fig redis_cpu_us_per_adm %.1f) |
| the three nodes' CPU (% of one core) | $(fig nodes_cpu_pct %.0f) |
| commands per admission (evalsha, eval, zrem) | $(fig commands_per_adm %.2f) |
| EVALSHA in the server, p50 (µs) | $(fig evalsha_p50_us %.1f) |
| EVALSHA in the server, p99 (µs) | $(fig evalsha_p99_us %.1f) |
| replies other than 220, errors | $(awk -F'\t' '$2 == "other_replies" || $2 == "errors" { printf "%s%s", sep, $3; sep = " " }' "$RES") |

| one Redis core, redis-benchmark -c 50, no pipelining | requests/s |
|---|---|
| rate script (EVALSHA) | $(fig ceiling_rate %.0f) |
| lease script (EVALSHA) | $(fig ceiling_acquire %.0f) |
| ZREM (release) | $(fig ceiling_zrem %.0f) |
| admissions ($NTIERS of each) | $(fig ceiling_admissions %.0f) |

Raw results: $RES
EOF
