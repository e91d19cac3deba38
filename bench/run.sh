#!/usr/bin/env bash
# run.sh measures mxguard against Postfix, Exim and OpenSMTPD on this
# machine, side by side, and prints the results as markdown for
# BENCHMARKS.md.
#
# Usage: bench/run.sh [full|quick|smoke]  (from anywhere; full is the default)
#        bench/run.sh report RUN_DIRECTORY
#
#   full    2 runs of every workload on each server (3 of the durable
#           ones), servers in rotating order; 35 minutes on the
#           development machine (2026-11-29), most of it the slow peers;
#           never more than MAX_SECONDS (see below)
#   quick   1 run each with smaller counts; about 12 minutes
#   smoke   1 run each with tiny counts and short floods, to check that every
#           step works (the figures mean little); about 5 minutes
#   report  print the markdown report of an earlier run again
#
# What it does:
#   1. builds mxguard, mxload, mxguard-testdns, memwatch and fsyncfloor into
#      $MXBENCH_DIR/bin;
#   2. writes the peers' private instances: Postfix (installing Debian's
#      postfix if missing; bench/postfix-setup.sh), Exim and OpenSMTPD
#      (unpacked from their Debian packages, never installed, each run in a
#      mount namespace of its own; bench/exim-setup.sh, bench/opensmtpd-setup.sh,
#      bench/peer-lib.sh). Each listens on 127.0.0.1 only, delivers bench.test
#      into Maildirs, relays relay.test to an smtp-sink on 127.0.0.1 (workload
#      a2) and nothing anywhere else;
#   3. measures the disk's fsync floor (bench/fsyncfloor, in the work
#      directory) and, if the spool package has them, its commit benchmarks;
#   4. runs the workloads, each on a freshly started server with an empty
#      queue and Maildir, one server at a time, the servers' order rotating
#      from run to run:
#        a. durable accept: 20 concurrent sessions, 1 KiB messages, 1 and 10
#           recipients, one message per session, timed until every copy is
#           in the Maildir; then, once per server, the fsyncs it made per
#           message, counted with strace (f);
#       a2. durable relay: the same with 50 concurrent sessions, 1 KiB, 1
#           recipient at relay.test, which each server relays to Postfix's
#           smtp-sink on 127.0.0.1 (no disk there; run on the load core;
#           OpenSMTPD, whose listen backlog is 5, is given 10 sessions):
#           accepted msgs/s (each server's own fsyncs before its 250), and
#           the rate at which they reached smtp-sink (waiting for them a
#           bounded time: 20, 30, 60 s after the load); mxguard runs in relay
#           mode ([delivery] relay, its log-structured spool), and its
#           fsyncs per message are its own count (the fsync histogram on
#           its admin listener) over the messages;
#        b. flood at fixed rates (open loop, mxload -rate): FLOOD_RATES
#           connections/s from 127.0.1.1-254, each address over its
#           per-client limit (5 per 60s; a priming flood uses up each
#           address's allowance first), while a legitimate client on
#           127.0.0.1 (trusted by every server) sends one message per
#           session; its p50/p99 against the same client's on the idle
#           server; then a search for the highest rate each server holds;
#        c. idle cost: connections held open and silent, in the greeting
#           pause and after EHLO; server memory gained per connection;
#        d. large messages: 10 MiB (and 1 MiB) over 4 sessions; MB/s and
#           the server's peak memory;
#        p. a perf profile of mxguard under a 10,000/s flood and under the
#           durable load;
#   5. prints a markdown report on stdout (also kept in the run directory,
#      with every raw result and the servers' logs); progress goes to stderr.
#
# Cores: the server under test runs on core SERVER_CPU and everything else
# (the load tools, the legitimate client, this script) on LOAD_CPU, the same
# for every server, set with taskset, which every process a server forks
# inherits; the report gives the share of each server's CPU time that was
# spent on its core (from its cgroup's cpuacct.usage_percpu), which shows
# the pinning held. Each server runs in a cpuacct cgroup of its own: its CPU
# time counts every process it ever had, and on exit every process still in
# those cgroups is killed. taskset binds user space only: the kernel's
# loopback work for a packet is done on the sending core (the handshake of
# each flood connection on the load core, the refusal's delivery to the
# client on the server's).
#
# Environment:
#   MXBENCH_DIR   work directory [/tmp/mxbench]
#   SERVERS       servers to measure, mxguard first [mx pf ex os]
#   SERVER_CPU, LOAD_CPU   [0 1]
#   FLOOD_RATES   fixed flood rates, connections/s [1000 5000 10000 20000]
#   SEARCH        search for the highest rate each server holds [1]
#   PROFILE       perf profiles of mxguard [1]
#   CLIENT        client for workloads a and d: mxload or smtp-source [mxload]
#   MAX_SECONDS   the whole run is stopped after this long [5400]
#   WORKLOADS     the workloads to run, of a a2 f b c d p [all of them]; the
#                 report leaves out the tables of those not run
#   MX_PORT DNS_PORT PF_PORT PF_PS_PORT PF_IDLE_PORT EX_PORT EX_PS_PORT EX_IDLE_PORT
#   OS_PORT OS_IDLE_PORT RELAY_SINK_PORT MX_ADMIN_PORT
#                 [2525 2553 2526 2527 2528 2530 2531 2532 2534 2535 2540 2541]
set -euo pipefail

MODE=${1:-full}
case $MODE in
quick | full | smoke) ;;
report) REPORT_DIR=${2:?usage: $0 report RUN_DIRECTORY} ;;
*)
	echo "usage: $0 [full|quick|smoke] | $0 report RUN_DIRECTORY" >&2
	exit 2
	;;
esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
export MXBENCH_DIR=${MXBENCH_DIR:-/tmp/mxbench}
W=$MXBENCH_DIR
BIN=$W/bin
CLIENT=${CLIENT:-mxload}
SERVERS=${SERVERS:-mx pf ex os}
FLOOD_RATES_GIVEN=${FLOOD_RATES:-}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
FLOOD_RATES=${FLOOD_RATES:-1000 5000 10000 20000}
SEARCH=${SEARCH:-1}
PROFILE=${PROFILE:-1}
MAX_SECONDS=${MAX_SECONDS:-5400}
WORKLOADS=${WORKLOADS:-a a2 f b c d p}
MX_PORT=${MX_PORT:-2525}
export DNS_PORT=${DNS_PORT:-2553}
export PF_PORT=${PF_PORT:-2526} PF_PS_PORT=${PF_PS_PORT:-2527} PF_IDLE_PORT=${PF_IDLE_PORT:-2528}
export EX_PORT=${EX_PORT:-2530} EX_PS_PORT=${EX_PS_PORT:-2531} EX_IDLE_PORT=${EX_IDLE_PORT:-2532}
export OS_PORT=${OS_PORT:-2534} OS_IDLE_PORT=${OS_IDLE_PORT:-2535}
export RELAY_SINK_PORT=${RELAY_SINK_PORT:-2540}
MX_ADMIN_PORT=${MX_ADMIN_PORT:-2541}
OUT=$W/run-$(date -u +%Y%m%dT%H%M%SZ)
RES=$OUT/results.tsv

# Source ranges. The flood range is over its per-client limit on every
# server; the idle ranges are not rate limited (they would be after 5
# connections), and only the first has a greeting pause.
FLOOD_BIND=127.0.1.1-127.0.1.254
IDLE_GREET_BIND=127.0.2.1-127.0.3.254
IDLE_HELO_BIND=127.0.4.1-127.0.5.254

if [ "$MODE" = report ]; then
	# A run from before WORKLOADS and workload a2 ran every other one.
	WORKLOADS="a f b c d p" R_N=- R_WAIT=-
	# shellcheck source=/dev/null
	. "$REPORT_DIR/params" || exit 1
	RES=$REPORT_DIR/results.tsv
	OUT=$REPORT_DIR
elif [ "$MODE" = full ]; then
	RUNS=2 RUNS_A=3 A1_N=3000 A10_N=400 R_N=6000 R_WAIT=60 LEGIT_N=300 FLOOD_SECS=10 FLOOD_WARM=2 PROBE_SECS=5 MAX_PROBES=6
	IDLE_CONNS=10000 PROC_IDLE_CONNS=1000 HOLD=10s D10_N=40 D1_N=100 FLOOR_SECS=2s CENSUS_N=200 PROFILE_SECS=5
elif [ "$MODE" = quick ]; then
	RUNS=1 RUNS_A=1 A1_N=1000 A10_N=100 R_N=3000 R_WAIT=30 LEGIT_N=100 FLOOD_SECS=6 FLOOD_WARM=1 PROBE_SECS=4 MAX_PROBES=4
	IDLE_CONNS=4000 PROC_IDLE_CONNS=200 HOLD=3s D10_N=12 D1_N=30 FLOOR_SECS=1s CENSUS_N=100 PROFILE_SECS=3
else
	RUNS=1 RUNS_A=1 A1_N=60 A10_N=10 R_N=200 R_WAIT=20 LEGIT_N=20 FLOOD_SECS=4 FLOOD_WARM=1 PROBE_SECS=3 MAX_PROBES=2
	IDLE_CONNS=300 PROC_IDLE_CONNS=50 HOLD=1s D10_N=2 D1_N=4 FLOOR_SECS=300ms CENSUS_N=20 PROFILE_SECS=1
	[ -n "$FLOOD_RATES_GIVEN" ] || FLOOD_RATES="1000 5000"
fi
if [ "$MODE" != report ]; then
	RUN_MODE=$MODE
	RUN_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
	# Postfix and Exim need one process per client after EHLO (Exim in the
	# greeting pause too); leave headroom.
	export PF_IDLE_PROCS=$((PROC_IDLE_CONNS + 100)) EX_PROCS=$((PROC_IDLE_CONNS + 100))
	[ "$EX_PROCS" -ge 1100 ] || export EX_PROCS=1100
fi

# want WORKLOAD: whether WORKLOAD is among those to run.
want() { [[ " $WORKLOADS " == *" $1 "* ]]; }
# runs WORKLOAD N prints the run numbers 1 to N when WORKLOAD is to run, none otherwise.
runs() { if want "$1"; then seq "$2"; fi; }

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh" # log, die, wait_listen

label() {
	case $1 in
	mx) echo mxguard ;;
	pf) echo Postfix ;;
	ex) echo Exim ;;
	os) echo OpenSMTPD ;;
	*) echo "$1" ;;
	esac
}

# ---------------------------------------------------------------- processes

# Every server runs in a cpuacct cgroup of its own below $CG; this script
# and its load tools in $CG/load.
CG=/sys/fs/cgroup/cpuacct/mxbench-$$
MX_PID= DNS_PID= BG_PID= WATCHDOG_PID= SINK_PID=

# cg_kill NAME: every process in cgroup NAME, TERM then KILL.
cg_kill() {
	local f=$CG/$1/cgroup.procs pids
	[ -e "$f" ] || return 0
	pids=$(cat "$f")
	[ -n "$pids" ] || return 0
	# shellcheck disable=SC2086
	kill -TERM $pids 2>/dev/null || true
	for _ in $(seq 30); do
		[ -n "$(cat "$f")" ] || return 0
		sleep 0.1
	done
	# shellcheck disable=SC2046
	kill -KILL $(cat "$f") 2>/dev/null || true
}

cleanup() {
	[ "$MODE" != report ] || return 0
	set +e
	[ -z "$WATCHDOG_PID" ] || kill "$WATCHDOG_PID" 2>/dev/null
	[ -z "$BG_PID" ] || kill -INT "$BG_PID" 2>/dev/null
	stop_mx
	"$ROOT/bench/postfix-setup.sh" stop >/dev/null 2>&1
	"$ROOT/bench/exim-setup.sh" stop >/dev/null 2>&1
	"$ROOT/bench/opensmtpd-setup.sh" stop >/dev/null 2>&1
	for p in $DNS_PID $SINK_PID; do
		kill -TERM "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	# Whatever a server left behind, and any load tool still running.
	for s in mx pf ex os; do cg_kill "$s"; done
	if [ -d "$CG" ]; then
		for p in $(cat "$CG/load/cgroup.procs" 2>/dev/null); do
			[ "$p" = $$ ] || kill -TERM "$p" 2>/dev/null
		done
		sleep 0.2
		echo $$ >/sys/fs/cgroup/cpuacct/cgroup.procs
		for d in "$CG"/*/; do rmdir "$d" 2>/dev/null; done
		rmdir "$CG" 2>/dev/null
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# port_free fails when something already listens on 127.0.0.1:$1.
port_free() {
	[ -z "$(ss -Hltn "src 127.0.0.1:$1")" ] || die "127.0.0.1:$1 is in use; set the *_PORT variables"
}

# "${IN_CG[@]}" DIR COMMAND... runs COMMAND in cgroup directory DIR: a
# command, not a function, so that COMMAND & leaves COMMAND's own process
# id in $!.
# shellcheck disable=SC2016
IN_CG=(sh -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' sh)

# in_cg NAME COMMAND... runs COMMAND in cgroup NAME on the server's core.
in_cg() {
	local cg=$CG/$1
	shift
	"${IN_CG[@]}" "$cg" taskset -c "$SERVER_CPU" "$@"
}

# start_mx [CONFIG]: mxguard with mxguard.toml, or CONFIG in $W/mxguard.
start_mx() {
	stop_mx
	rm -rf "$W/mxguard/data"
	mkdir -p "$W/mxguard/data"
	"${IN_CG[@]}" "$CG/mx" taskset -c "$SERVER_CPU" "$BIN/mxguard" serve --config "$W/mxguard/${1:-mxguard.toml}" 2>>"$OUT/mxguard.log" &
	MX_PID=$!
	wait_listen "$MX_PORT"
}

stop_mx() {
	[ -n "$MX_PID" ] || return 0
	kill -TERM "$MX_PID" 2>/dev/null || true
	for _ in $(seq 100); do
		kill -0 "$MX_PID" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$MX_PID" 2>/dev/null || true
	wait "$MX_PID" 2>/dev/null || true
	MX_PID=
	cg_kill mx
}

start_pf() {
	in_cg pf "$ROOT/bench/postfix-setup.sh" start >>"$OUT/postfix-setup.log" 2>&1 ||
		die "postfix did not start; see $OUT/postfix-setup.log"
	wait_listen "$PF_PORT"
	wait_listen "$PF_PS_PORT"
	wait_listen "$PF_IDLE_PORT"
}

stop_pf() {
	# Keep the log of the instance that is about to be wiped by the next start.
	cat "$W/postfix/postfix.log" >>"$OUT/postfix.log" 2>/dev/null || true
	"$ROOT/bench/postfix-setup.sh" stop >>"$OUT/postfix-setup.log" 2>&1
	cg_kill pf
}

start_ex() {
	in_cg ex "$ROOT/bench/exim-setup.sh" start >>"$OUT/exim-setup.log" 2>&1 ||
		die "exim did not start; see $OUT/exim-setup.log"
	wait_listen "$EX_PS_PORT"
	wait_listen "$EX_IDLE_PORT"
}

stop_ex() {
	cat "$W/exim/log/mainlog" >>"$OUT/exim.log" 2>/dev/null || true
	cat "$W/exim/log/paniclog" >>"$OUT/exim-panic.log" 2>/dev/null || true
	"$ROOT/bench/exim-setup.sh" stop >>"$OUT/exim-setup.log" 2>&1
	cg_kill ex
}

start_os() {
	in_cg os "$ROOT/bench/opensmtpd-setup.sh" start >>"$OUT/opensmtpd-setup.log" 2>&1 ||
		die "opensmtpd did not start; see $OUT/opensmtpd-setup.log"
	wait_listen "$OS_IDLE_PORT"
}

stop_os() {
	cat "$W/opensmtpd/smtpd.log" >>"$OUT/opensmtpd.log" 2>/dev/null || true
	"$ROOT/bench/opensmtpd-setup.sh" stop >>"$OUT/opensmtpd-setup.log" 2>&1
	cg_kill os
}

start_server() { "start_$1"; }
stop_server() { "stop_$1"; }

port_of() {
	case $1 in
	mx) echo "$MX_PORT" ;;
	pf) echo "$PF_PORT" ;;
	ex) echo "$EX_PORT" ;;
	os) echo "$OS_PORT" ;;
	esac
}

maildir_of() {
	case $1 in
	mx) echo "$W/mxguard/data/mail" ;;
	pf) echo "$W/postfix/mail" ;;
	ex) echo "$W/exim/mail" ;;
	os) echo "$W/opensmtpd/mail" ;;
	esac
}

# procs_of SERVER: the process selection for mxload and memwatch.
procs_of() { echo "cgroup:$CG/$1"; }

# cpu_ns NAME: CPU time (ns) used so far by every process ever in cgroup NAME.
cpu_ns() { cat "$CG/$1/cpuacct.usage"; }

# order prints the servers in the order of run $1: rotated by one each run.
order() {
	local -a s
	read -ra s <<<"$SERVERS"
	local n=${#s[@]} k=$((($1 - 1) % ${#s[@]})) i
	for ((i = 0; i < n; i++)); do printf '%s ' "${s[$(((i + k) % n))]}"; done
	echo
}

# record WORKLOAD VARIANT SERVER RUN METRIC VALUE appends one figure.
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RES"; }

# count_maildir counts delivered files below $1.
count_maildir() { find "$1" -path '*/new/*' -type f 2>/dev/null | wc -l; }

# wait_maildir waits until $1 holds $2 delivered files, for at most $3 s.
wait_maildir() {
	local end=$((SECONDS + $3))
	while [ "$(count_maildir "$1")" -lt "$2" ]; do
		[ $SECONDS -lt $end ] || return 1
		sleep 0.05
	done
}

now() { date +%s.%N; }

# jget FILE FILTER prints one figure of a JSON result, "-" for null.
jget() { jq -r "($2) // \"-\"" "$1"; }

# send_load SERVER FILE N SIZE RCPTS CONC TO: one message per session, then
# wait for every copy in the Maildir. Writes mxload's JSON (or, with
# CLIENT=smtp-source, the same fields as far as smtp-source can tell) to FILE.
# Every client sends QUIT and closes without waiting for the 221, as
# Postfix's smtp client does: Exim holds the 221 for 200 ms unless the
# client closes first.
send_load() {
	local srv=$1 file=$2 n=$3 size=$4 rcpts=$5 conc=$6 to=$7
	local port dir
	port=$(port_of "$srv")
	dir=$(maildir_of "$srv")
	if [ "$CLIENT" = smtp-source ]; then
		local t0 t1 t2 ok=true
		t0=$(now)
		/usr/sbin/smtp-source -s "$conc" -m "$n" -r "$rcpts" -l "$size" -f load@client.test -t "$to" \
			"127.0.0.1:$port" >"$file.out" 2>&1 || ok=false
		t1=$(now)
		wait_maildir "$dir" $((n * rcpts)) 300 || ok=false
		t2=$(now)
		jq -n --argjson n "$n" --argjson size "$size" --argjson t0 "$t0" --argjson t1 "$t1" \
			--argjson t2 "$t2" --argjson ok "$ok" --argjson found "$(count_maildir "$dir")" '{
			client: "smtp-source", messages: $n, accepted: (if $ok then $n else null end),
			seconds: ($t1 - $t0), messages_per_second: ($n / ($t1 - $t0)),
			mb_per_second: ($n * $size / 1e6 / ($t1 - $t0)), octets_per_message: $size,
			session_latency: null,
			delivery: {complete: $ok, found: $found, seconds: ($t2 - $t0)}}' >"$file"
		return
	fi
	"$BIN/mxload" -addr "127.0.0.1:$port" -c "$conc" -n "$n" -size "$size" -rcpts "$rcpts" \
		-msgs-per-conn 1 -quit-nowait -from load@client.test -to "$to" \
		-wait-maildir "$dir" -expect $((n * rcpts)) -wait-timeout 5m -json >"$file" 2>>"$OUT/mxload.log" || true
	[ -s "$file" ] || die "mxload wrote no result to $file; see $OUT/mxload.log"
}

# legit PORT FILE SECONDS: the legitimate client, from 127.0.0.1 (trusted
# by every server), one message per session, one session at a time,
# LEGIT_N sessions or for SECONDS, whichever ends first.
legit() {
	timeout -s INT "$3" "$BIN/mxload" -addr "127.0.0.1:$1" -c 1 -n "$LEGIT_N" -msgs-per-conn 1 -quit-nowait \
		-from legit@client.test -to legit@bench.test -timeout 10s -json >"$2" 2>>"$OUT/mxload.log" || true
	[ -s "$2" ] || die "mxload wrote no result to $2; see $OUT/mxload.log"
}

# ---------------------------------------------------------------- report

# vals W V S M prints every run's figure, in run order.
vals() {
	awk -F'\t' -v w="$1" -v v="$2" -v s="$3" -v m="$4" \
		'$1 == w && $2 == v && $3 == s && $5 == m && $6 != "-" { print $4 "\t" $6 }' "$RES" | sort -n | cut -f2
}
# med W V S M prints the median over the runs ("-" without figures).
med() {
	vals "$@" | sort -g | awk '{ a[NR] = $1 }
		END { if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
# fmtn PRINTF-FORMAT [DIVISOR] formats stdin's numbers, "-" as is.
fmtn() {
	awk -v f="$1" -v d="${2:-1}" '{ for (i = 1; i <= NF; i++) $i = ($i == "-" ? "-" : sprintf(f, $i / d)); print }'
}
# cell W V S M FORMAT [DIVISOR]: the median, and every run in brackets when there are several.
cell() {
	local m all n
	m=$(med "$1" "$2" "$3" "$4" | fmtn "$5" "${6:-1}")
	all=$(vals "$1" "$2" "$3" "$4" | fmtn "$5" "${6:-1}" | paste -sd' ' | sed 's/ /, /g')
	n=$(vals "$1" "$2" "$3" "$4" | wc -l)
	if [ "$n" -gt 1 ]; then echo "$m ($all)"; else echo "$m"; fi
}
# ratio A B prints A/B as "1.23×", "-" when either is missing.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f×\n", a / b }'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "-" && b != "-" && a >= b) }'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "-" && b != "-" && a <= b) }'; }
met() { if "$@"; then echo met; else echo "**missed**"; fi; }
# peers prints the servers other than mxguard that were measured.
peers() { for s in $SERVERS; do [ "$s" = mx ] || printf '%s ' "$s"; done; }
# info SERVER M: the recorded fact M about SERVER ("-": the machine).
info() { awk -F'\t' -v m="$2" -v s="$1" '$1 == "info" && $2 == s && $5 == m { print $6; exit }' "$RES"; }

report() {
	local v s m label p
	echo "## Results: \`bench/run.sh $RUN_MODE\`, $RUN_DATE"
	echo
	echo "Machine: $(info - cores) cores ($(info - cpu)), $(info - ram), kernel $(info - kernel);" \
		"work directory on $(info - disk). Server on core $SERVER_CPU, load tools and" \
		"legitimate client on core $LOAD_CPU (taskset; the share of each server's CPU time spent on its" \
		"core is in the table below). Shared with other work while it ran: $(info - shared)." \
		"Each figure is the median of the runs, every run in brackets; ratios are of the medians, all from this one run."
	echo
	echo "| server | version | share of its CPU time on core $SERVER_CPU | fsync policy |"
	echo "|---|---|---|---|"
	for s in $SERVERS; do
		echo "| $(label "$s") | $(info "$s" version) | $(info "$s" on_core | fmtn %.3f) | $(info "$s" fsync_policy) |"
	done
	echo
	echo "### Disk: fsync floor, measured in this run (\`bench/fsyncfloor\` in the work directory, 1 KiB files)"
	echo
	echo "| measure | figure |"
	echo "|---|---|"
	echo "| create, write, fsync, close a 1 KiB file, one at a time | $(med fsync serial - per_s | fmtn %.0f)/s |"
	echo "| the same from 20 goroutines at once | $(med fsync concurrent20 - per_s | fmtn %.0f)/s |"
	echo "| the same, then rename and fsync the directory, one at a time (one Maildir delivery's durability) | $(med fsync filedir - per_s | fmtn %.0f)/s |"
	if [ "$(med fsync commit - msgs_per_s)" != - ]; then
		echo "| mxguard's spool commit, 1 KiB, 20 sessions (\`go test -bench Commit1KiB ./internal/spool/\`) | $(med fsync commit - msgs_per_s | fmtn %.0f) msgs/s at $(med fsync commit - fsyncs_per_msg | fmtn %.2f) fsyncs/msg |"
	fi
	if want a; then
		echo
		echo "### a. Durable accept: 20 sessions, 1 KiB body (1,144 octets with the header), one message per session, until in the Maildir"
		echo
		echo "Delivered msgs/s: the messages accepted over the time until every copy of them was in the Maildir; failed: sessions" \
			"the server dropped or refused (they count in no rate)." \
			"Server CPU is its cgroup's CPU time over the whole run (until delivered), per message: every process of the server." \
			"fsyncs/msg: fsync, fdatasync and sync_file_range calls the server made per message, counted with" \
			"\`strace -f\` over $CENSUS_N messages (1 recipient) and $((CENSUS_N / 4)) (10 recipients) in a separate pass."
		echo
		echo "| recipients | server | delivered msgs/s | accepted msgs/s (250s) | failed | session p50 ms | session p99 ms | server CPU ms/msg | fsyncs/msg |"
		echo "|---|---|---|---|---|---|---|---|---|"
		for v in 1 10; do
			for s in $SERVERS; do
				echo "| $v | $(label "$s") | $(cell a $v "$s" delivered_msgs_per_s %.0f) | $(cell a $v "$s" accept_msgs_per_s %.0f) | $(cell a $v "$s" failed %.0f) |" \
					"$(cell a $v "$s" session_p50_ms %.1f) | $(cell a $v "$s" session_p99_ms %.1f) | $(cell a $v "$s" cpu_ms_per_msg %.2f) |" \
					"$(med f $v "$s" fsyncs_per_msg | fmtn %.2f) |"
			done
			for p in $(peers); do
				echo "| $v | **mxguard/$(label "$p")** | **$(ratio "$(med a $v mx delivered_msgs_per_s)" "$(med a $v "$p" delivered_msgs_per_s)")** |" \
					"$(ratio "$(med a $v mx accept_msgs_per_s)" "$(med a $v "$p" accept_msgs_per_s)") | |" \
					"$(ratio "$(med a $v mx session_p50_ms)" "$(med a $v "$p" session_p50_ms)") |" \
					"$(ratio "$(med a $v mx session_p99_ms)" "$(med a $v "$p" session_p99_ms)") |" \
					"$(ratio "$(med a $v mx cpu_ms_per_msg)" "$(med a $v "$p" cpu_ms_per_msg)") | |"
			done
		done
	fi
	if want a2; then
		echo
		echo "### a2. Durable relay: 50 sessions, 1 KiB body, one message per session, 1 recipient at relay.test, relayed to smtp-sink on 127.0.0.1"
		echo
		echo "Each server relays relay.test to Postfix's smtp-sink on loopback (no disk; on the load core). Accepted msgs/s: mxload's" \
			"250s over its run, each after the server's own durability step (below); delivered msgs/s: the messages accepted" \
			"over the time from mxload's start until smtp-sink had them all, or, when it had not within ${R_WAIT}s of mxload's end, what it had over that time (\"not all there\"). Server CPU: its cgroup's CPU time until then, per" \
			"message, delivery included. fsyncs/msg (mxguard): its own count, \`mxguard_fsync_duration_seconds_count\` on its admin" \
			"listener once every message had reached the sink, over the messages (done records included). mxguard in local mode" \
			"(Maildir, bench.test) under the same load is the last mxguard row. $R_N messages a run."
		echo
		for s in $SERVERS; do
			echo "- $(label "$s"), when relaying: $(info "$s" relay_fsync_policy)"
		done
		[[ " $SERVERS " != *" os "* ]] ||
			echo "- OpenSMTPD cannot take 50 clients connecting at once: its compiled-in listen backlog of 5 leaves about a third of them unanswered until the client gives up (30 s), and with 20 a few (4 or 5 in 2,000), each holding the run up 30 s; so it is given 10 sessions, which it takes without a loss."
		echo
		echo "| server | accepted msgs/s (250s) | delivered to smtp-sink msgs/s | failed | session p50 ms | session p99 ms | server CPU ms/msg | fsyncs/msg |"
		echo "|---|---|---|---|---|---|---|---|"
		for s in $SERVERS; do
			echo "| $(label "$s") | $(cell a2 1 "$s" accept_msgs_per_s %.0f) | $(cell a2 1 "$s" delivered_msgs_per_s %.0f)$(vals a2 1 "$s" incomplete | paste -sd';' | sed 's/;/; /g; s/^./ (not all there: &/; s/.$/&)/') | $(cell a2 1 "$s" failed %.0f) |" \
				"$(cell a2 1 "$s" session_p50_ms %.1f) | $(cell a2 1 "$s" session_p99_ms %.1f) | $(cell a2 1 "$s" cpu_ms_per_msg %.2f) |" \
				"$(cell a2 1 "$s" fsyncs_per_msg %.3f) |"
		done
		if [[ " $SERVERS " == *" mx "* ]]; then
			echo "| mxguard, local mode (Maildir) | $(cell a2 local mx accept_msgs_per_s %.0f) | $(cell a2 local mx delivered_msgs_per_s %.0f) (into the Maildir) |" \
				"$(cell a2 local mx failed %.0f) | $(cell a2 local mx session_p50_ms %.1f) | $(cell a2 local mx session_p99_ms %.1f) | | |"
	fi
	for p in $(peers); do
		echo "| **mxguard/$(label "$p")** | **$(ratio "$(med a2 1 mx accept_msgs_per_s)" "$(med a2 1 "$p" accept_msgs_per_s)")** |" \
			"$(ratio "$(med a2 1 mx delivered_msgs_per_s)" "$(med a2 1 "$p" delivered_msgs_per_s)") | |" \
			"$(ratio "$(med a2 1 mx session_p50_ms)" "$(med a2 1 "$p" session_p50_ms)") |" \
			"$(ratio "$(med a2 1 mx session_p99_ms)" "$(med a2 1 "$p" session_p99_ms)") |" \
			"$(ratio "$(med a2 1 mx cpu_ms_per_msg)" "$(med a2 1 "$p" cpu_ms_per_msg)") | |"
	done
	fi
	if want b; then
		echo
		echo "### b. Flood at fixed rates (open loop) from 254 addresses over their per-client limit; legitimate client on 127.0.0.1"
		echo
		echo "\`mxload -mode flood -rate R\` starts R connections a second whatever the server answers (at most 2,000 open;" \
			"a start due beyond that is dropped and counted), for ${FLOOD_SECS}s; after ${FLOOD_WARM}s the legitimate client" \
			"sends up to $LEGIT_N one-message sessions, one at a time, for at most $((FLOOD_SECS - FLOOD_WARM - 2))s;" \
			"its p50/p99 (connect to QUIT) against the same client's on the idle server just before." \
			"Before the flood a priming flood uses up every address's allowance (5 connections in 60 s, 1,270 in all; not for" \
			"OpenSMTPD, which refuses these addresses from their first connection), so every connection of the flood is over its limit." \
			"Refusals/s: non-2xx first replies that arrived while connections were being started, over that time." \
			"Server CPU: cores (of its one) the server used under the flood alone, from the legitimate client's end to the flood's;" \
			"refusals per CPU-second: refusals/s over that. Client µs/conn: the load core's CPU per connection started, same window." \
			"Lag: p99 of how late the client started connections (more than a few ms: the load core set the pace)."
		echo
		echo "| rate/s | server | refusals/s | achieved conn/s | dropped | errors/s | first reply p99 ms | lag p99 ms | server CPU | refusals per CPU-second | client µs/conn | legit p50 ms idle → flood | legit p99 ms idle → flood | p99 ratio | legit sessions |"
		echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
		for v in $FLOOD_RATES; do
			for s in $SERVERS; do
				echo "| $v | $(label "$s") | $(cell b "$v" "$s" refusals_per_s %.0f) | $(cell b "$v" "$s" connections_per_s %.0f) |" \
					"$(cell b "$v" "$s" dropped %.0f) | $(cell b "$v" "$s" errors_per_s %.0f) | $(cell b "$v" "$s" first_reply_p99_ms %.1f) |" \
					"$(cell b "$v" "$s" lag_p99_ms %.1f) | $(cell b "$v" "$s" cpu_cores %.2f) | $(cell b "$v" "$s" refusals_per_cpu_s %.0f) |" \
					"$(cell b "$v" "$s" client_us_per_conn %.1f) |" \
					"$(med b "$v" "$s" base_p50_ms | fmtn %.1f) → $(cell b "$v" "$s" flood_p50_ms %.1f) |" \
					"$(med b "$v" "$s" base_p99_ms | fmtn %.1f) → $(cell b "$v" "$s" flood_p99_ms %.1f) |" \
					"$(ratio "$(med b "$v" "$s" flood_p99_ms)" "$(med b "$v" "$s" base_p99_ms)") | $(cell b "$v" "$s" legit_sessions %.0f) |"
			done
		done
		if [ "$SEARCH" = 1 ]; then
			echo
			echo "### b2. The highest rate each server holds"
			echo
			echo "A rate is held when, over ${PROBE_SECS}s on a fresh server (primed as above), at most 1% of the starts are dropped, at most 1% of the" \
				"connections fail, and the p99 from connect to first reply is at most 100 ms. Probes: the fixed rates above, then up" \
				"(×1.5) from the highest held and a bisection between the last held and the first not held, at most $MAX_PROBES probes." \
				"When the client starts late (lag p99 over 20 ms) while the server still answers within 100 ms, the search stops:" \
				"the load core is the limit, and the figure is a floor. The flood uses mxload's epoll engine (30 µs of the load core" \
				"per connection at 10,000/s; Go's dialer, 37 µs, could not keep a 30,000/s schedule)."
			echo
			echo "| server | highest rate held /s | refusals/s there | server CPU there (cores) | refusals per CPU-second | first not held /s | probes (rate: held?) |"
			echo "|---|---|---|---|---|---|---|"
			for s in $SERVERS; do
				echo "| $(label "$s") | $(info "$s" held_rate | fmtn %.0f | sed 's/^-$//')$(info "$s" held_note) | $(info "$s" held_refusals | fmtn %.0f) |" \
					"$(info "$s" held_cpu | fmtn %.2f) | $(info "$s" held_per_cpu | fmtn %.0f) | $(info "$s" failed_rate | fmtn %.0f) | $(info "$s" probes) |"
			done
	fi
	fi
	if want c; then
		echo
		echo "### c. Idle cost: connections held open and silent for $HOLD; server memory gained per connection"
		echo
		echo "Every process of the server (its cgroup), summed: PSS is the fair figure (RSS counts shared pages once per" \
			"process). Greeting pause: mxguard's GreetPause (no banner yet); Postfix's postscreen (\`220-\` sent, greet wait 120s);" \
			"Exim's connect ACL \`delay\` (no banner yet). After EHLO: a session waiting for a command." \
			"Postfix's smtpd and Exim hold one process per client, and OpenSMTPD listens with a backlog of 5 (compiled in;" \
			"it took about 20 new connections a second here), so they are given fewer connections ($PROC_IDLE_CONNS)."
		echo
		echo "| state | server | connections | held at end | bytes/conn (PSS) | bytes/conn (RSS) | seconds to open |"
		echo "|---|---|---|---|---|---|---|"
		for v in greet helo; do
			for s in $SERVERS; do
				if [ "$v" = greet ] && [ "$s" = os ]; then
					echo "| $v | OpenSMTPD | cannot: no way to hold a client before its greeting | | | | |"
					continue
				fi
				echo "| $v | $(label "$s") | $(med c $v "$s" conns | fmtn %.0f) | $(cell c $v "$s" open_at_end %.0f) |" \
					"$(cell c $v "$s" pss_per_conn %.0f) | $(cell c $v "$s" rss_per_conn %.0f) | $(cell c $v "$s" open_seconds %.1f) |"
			done
			for p in $(peers); do
				[ "$v" = greet ] && [ "$p" = os ] && continue
				echo "| $v | **mxguard/$(label "$p")** | | | **$(ratio "$(med c $v mx pss_per_conn)" "$(med c $v "$p" pss_per_conn)")** |" \
					"$(ratio "$(med c $v mx rss_per_conn)" "$(med c $v "$p" rss_per_conn)") | |"
			done
		done
	fi
	if want d; then
		echo
		echo "### d. Large messages: 4 sessions, one message per session, until in the Maildir"
		echo
		echo "Peak memory sampled every 50 ms over every process of the server (RSS and PSS sums)."
		echo
		echo "| size | server | delivered MB/s | accepted MB/s | peak PSS MiB | peak RSS MiB | idle before (RSS MiB) |"
		echo "|---|---|---|---|---|---|---|"
		for v in 1 10; do
			for s in $SERVERS; do
				echo "| $v MiB | $(label "$s") | $(cell d $v "$s" delivered_mb_per_s %.0f) | $(cell d $v "$s" accept_mb_per_s %.0f) |" \
					"$(cell d $v "$s" peak_pss %.1f 1048576) | $(cell d $v "$s" peak_rss %.1f 1048576) | $(cell d $v "$s" baseline_rss %.1f 1048576) |"
			done
			for p in $(peers); do
				echo "| $v MiB | **mxguard/$(label "$p")** | **$(ratio "$(med d $v mx delivered_mb_per_s)" "$(med d $v "$p" delivered_mb_per_s)")** |" \
					"$(ratio "$(med d $v mx accept_mb_per_s)" "$(med d $v "$p" accept_mb_per_s)") |" \
					"$(ratio "$(med d $v mx peak_pss)" "$(med d $v "$p" peak_pss)") | $(ratio "$(med d $v mx peak_rss)" "$(med d $v "$p" peak_rss)") | |"
			done
		done
	fi
	if [ -s "$OUT/perf-flood.txt" ] || [ -s "$OUT/perf-durable.txt" ]; then
		echo
		echo "### p. Where mxguard's CPU goes (\`perf record -g\` on its process, ${PROFILE_SECS}s)"
		for m in flood durable; do
			[ -s "$OUT/perf-$m.txt" ] || continue
			echo
			if [ $m = flood ]; then echo "Under a 10,000/s flood (self time, top symbols):"; else echo "Under the durable load (self time, top symbols):"; fi
			echo
			echo '```'
			cat "$OUT/perf-$m.txt"
			echo '```'
		done
	fi
	echo
	echo "### Targets"
	echo
	local worst best10 b99 f99 held
	echo "| target | measured | |"
	echo "|---|---|---|"
	for v in $(want a && echo 1 10); do
		worst=
		for p in $(peers); do
			m=$(ratio "$(med a $v mx delivered_msgs_per_s)" "$(med a $v "$p" delivered_msgs_per_s)")
			worst="$worst$(label "$p") $m, "
		done
		echo "| a. durable intake ahead of every peer ($v recipient(s), delivered msgs/s) | ${worst%, } |" \
			"$(met all_ahead a "$v" delivered_msgs_per_s) |"
	done
	if want a2; then
			m=$(med a2 1 mx accept_msgs_per_s)
			echo "| a2. relay mode: ≥ 5,000 msgs/s accepted durably (1 KiB, 50 sessions, server on one core), and ≥ local mode under the same load |" \
				"$(echo "$m" | fmtn %.0f)/s at $(med a2 1 mx fsyncs_per_msg | fmtn %.3f) fsyncs/msg; local mode $(med a2 local mx accept_msgs_per_s | fmtn %.0f)/s |" \
				"$(met eval 'ge "$m" 5000 && ge "$m" "$(med a2 local mx accept_msgs_per_s)"') |"
			echo "| a2. durable relay intake ahead of every peer (accepted msgs/s) |" \
				"$(for p in $(peers); do printf '%s %s, ' "$(label "$p")" "$(ratio "$m" "$(med a2 1 "$p" accept_msgs_per_s)")"; done | sed 's/, $//') |" \
				"$(met all_ahead a2 1 accept_msgs_per_s) |"
	fi
	if want b; then
		held=$(info mx held_rate)
		echo "| b. ≥ 30,000 refusals/s on the server's one core | highest rate held $(echo "$held" | fmtn %.0f)/s$(info mx held_note), refusals/s there $(info mx held_refusals | fmtn %.0f), using $(info mx held_cpu | fmtn %.2f) of the core: $(info mx held_per_cpu | fmtn %.0f) refusals per CPU-second | $(met ge "$(info mx held_refusals)" 30000) |"
		b99=$(med b 10000 mx base_p99_ms)
		f99=$(med b 10000 mx flood_p99_ms)
		best10=$(ratio "$f99" "$b99")
		echo "| b. legitimate p99 within 2× unloaded at 10,000/s | $(echo "$f99" | fmtn %.1f) ms vs $(echo "$b99" | fmtn %.1f) ms: $best10 | $(met le "${best10%×}" 2) |"
		echo "| b. more refusals per core than every peer (highest rate held) | $(for p in $(peers); do printf '%s %s, ' "$(label "$p")" "$(ratio "$(info mx held_rate)" "$(info "$p" held_rate)")"; done | sed 's/, $//') | $(met all_ahead_info held_rate) |"
	fi
	if want c; then
		echo "| c. idle cost below every peer (PSS per connection after EHLO) | $(for p in $(peers); do printf '%s %s, ' "$(label "$p")" "$(ratio "$(med c helo mx pss_per_conn)" "$(med c helo "$p" pss_per_conn)")"; done | sed 's/, $//') | $(met all_below c helo pss_per_conn) |"
		# OpenSMTPD has no greeting pause: the peers that have one.
		echo "| c. idle cost below every peer that has a greeting pause (PSS per connection held in it) | $(for p in $(peers); do [ "$p" = os ] || printf '%s %s, ' "$(label "$p")" "$(ratio "$(med c greet mx pss_per_conn)" "$(med c greet "$p" pss_per_conn)")"; done | sed 's/, $//') | $(met all_below_known c greet pss_per_conn) |"
	fi
}

# all_ahead W V M: mxguard's median is above every peer's.
all_ahead() {
	local p
	for p in $(peers); do ge "$(med "$1" "$2" mx "$3")" "$(med "$1" "$2" "$p" "$3")" || return 1; done
}
all_below() {
	local p
	for p in $(peers); do le "$(med "$1" "$2" mx "$3")" "$(med "$1" "$2" "$p" "$3")" || return 1; done
}
# all_below_known: all_below over the peers with a figure.
all_below_known() {
	local p
	for p in $(peers); do
		[ "$(med "$1" "$2" "$p" "$3")" != - ] || continue
		le "$(med "$1" "$2" mx "$3")" "$(med "$1" "$2" "$p" "$3")" || return 1
	done
}
all_ahead_info() {
	local p v
	for p in $(peers); do
		v=$(info "$p" "$1")
		[ "$v" != - ] || continue # the peer held none
		ge "$(info mx "$1")" "$v" || return 1
	done
}

if [ "$MODE" = report ]; then
	report
	exit 0
fi

# ---------------------------------------------------------------- setup

[ "$(id -u)" = 0 ] || die "run as root: the servers bind their own users, namespaces and cgroups"
mkdir -p "$OUT" "$BIN" "$W/mxguard"
: >"$RES"
# What the report needs to be printed again later (run.sh report DIR).
for v in RUN_MODE RUN_DATE WORKLOADS RUNS RUNS_A R_N R_WAIT SERVERS SERVER_CPU LOAD_CPU FLOOD_RATES SEARCH LEGIT_N FLOOD_SECS FLOOD_WARM \
	PROBE_SECS MAX_PROBES HOLD PROC_IDLE_CONNS CENSUS_N PROFILE_SECS CLIENT; do
	printf '%s=%q\n' "$v" "${!v}"
done >"$OUT/params"

# A hard bound on the whole run: TERM to this script (its EXIT trap stops
# every server) and to what it is waiting for.
(
	trap 'kill "$sp" 2>/dev/null; exit 0' TERM
	sleep "$MAX_SECONDS" &
	sp=$!
	wait "$sp"
	log "run.sh: MAX_SECONDS ($MAX_SECONDS) passed; stopping"
	# shellcheck disable=SC2046
	kill -TERM $$ $(cat /proc/$$/task/*/children 2>/dev/null) 2>/dev/null
) &
WATCHDOG_PID=$!

mkdir -p "$CG" || die "cannot make a cgroup in /sys/fs/cgroup/cpuacct (cgroup v1 cpuacct is needed for the servers' CPU time)"
for s in mx pf ex os load; do mkdir -p "$CG/$s"; done
echo $$ >"$CG/load/cgroup.procs"
taskset -cp "$LOAD_CPU" $$ >/dev/null || die "taskset -cp $LOAD_CPU failed"
[ "$(nproc --all)" -gt "$SERVER_CPU" ] && [ "$(nproc --all)" -gt "$LOAD_CPU" ] || die "no core $SERVER_CPU or $LOAD_CPU"
[ "$SERVER_CPU" != "$LOAD_CPU" ] || log "warning: SERVER_CPU and LOAD_CPU are the same core"

command -v jq >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q jq >&2 ||
	die "jq is missing and could not be installed"
command -v strace >/dev/null || log "strace missing: no fsync census"
for p in "$MX_PORT" "$DNS_PORT" "$PF_PORT" "$PF_PS_PORT" "$PF_IDLE_PORT" "$EX_PORT" "$EX_PS_PORT" "$EX_IDLE_PORT" \
	"$OS_PORT" "$OS_IDLE_PORT" "$RELAY_SINK_PORT" "$MX_ADMIN_PORT"; do
	port_free "$p"
done

log "building into $BIN"
(cd "$ROOT" && go build -o "$BIN/" ./cmd/mxguard ./cmd/mxload ./cmd/mxguard-testdns ./bench/memwatch ./bench/fsyncfloor) ||
	die "build failed"

log "writing the peers' instances (fetching exim4 and opensmtpd if needed)"
for s in $SERVERS; do
	case $s in
	pf) "$ROOT/bench/postfix-setup.sh" config >"$OUT/postfix-setup.log" 2>&1 || die "postfix setup failed; see $OUT/postfix-setup.log" ;;
	ex) "$ROOT/bench/exim-setup.sh" config >"$OUT/exim-setup.log" 2>&1 || die "exim setup failed; see $OUT/exim-setup.log" ;;
	os) "$ROOT/bench/opensmtpd-setup.sh" config >"$OUT/opensmtpd-setup.log" 2>&1 || die "opensmtpd setup failed; see $OUT/opensmtpd-setup.log" ;;
	esac
done

# What the report says about the machine and the servers.
record info - - 1 cores "$(nproc --all)"
record info - - 1 cpu "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
record info - - 1 ram "$(awk '/^MemTotal/ { printf "%.0f GiB RAM", $2 / 1048576 }' /proc/meminfo)"
record info - - 1 kernel "$(uname -r)"
dev=$(df -P "$W" | awk 'NR == 2 { print $1 }')
disk="$dev, $(findmnt -no FSTYPE,OPTIONS -T "$W" 2>/dev/null | tr -s ' ' ' ' || echo '?')"
if [ -e "/sys/fs/ext4/${dev#/dev/}/journal_task" ]; then
	disk="$disk, ext4 journal: $(cat "/sys/fs/ext4/${dev#/dev/}/journal_task")"
fi
record info - - 1 disk "$disk"
record info - - 1 shared "load average $(cut -d' ' -f1-3 /proc/loadavg) at the start"
record info mx - 1 version "$(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo '?'), $(go version | cut -d' ' -f3), GOMAXPROCS 1 on its one core (2 in relay mode, workload a2: cmd/mxguard's minProcs)"
record info pf - 1 version "Postfix $(postconf -dh mail_version 2>/dev/null || echo '?')"
# shellcheck source=bench/peer-lib.sh
(. "$ROOT/bench/peer-lib.sh" && record info ex - 1 version "Exim $(peer_version exim4-daemon-light) (exim4-daemon-light, unpacked)" &&
	record info os - 1 version "OpenSMTPD $(peer_version opensmtpd) (unpacked)")
# As strace shows them (bench/run.sh's fsync census counts them).
record info mx - 1 fsync_policy "before the 250: the Maildir file (written once, linked for each further recipient) and each recipient's new/ directory"
record info pf - 1 fsync_policy "before the 250: the queue file (no directory fsync); after it, each Maildir file (virtual(8); no directory fsync)"
record info ex - 1 fsync_policy "before the 250: the spool's -D and -H files and the spool directory; after it, each Maildir file and the -J journal (no Maildir directory fsync)"
record info os - 1 fsync_policy "none before the 250 (the queue file is renamed into the queue, never fsynced); after it, each Maildir file (mail.maildir; no directory fsync)"
# Relaying (workload a2): what each does before its 250 when the mail goes on
# to another host.
record info mx - 1 relay_fsync_policy "before the 250: the spool's log segment, one fdatasync for every record waiting (group commit); after the downstream's 250, a done record, committed the same way"
record info pf - 1 relay_fsync_policy "before the 250: the queue file (no directory fsync); nothing after the downstream's 250 (the queue file is unlinked)"
record info ex - 1 relay_fsync_policy "before the 250: the spool's -D and -H files and the spool directory; after the downstream's 250, the -J journal"
record info os - 1 relay_fsync_policy "none before the 250 (the queue file is renamed into the queue, never fsynced)"

# A DNS server on loopback for mxguard's reverse lookups (and OpenSMTPD's,
# which cannot be turned off): no names for the 127.0.x.y clients
# (NXDOMAIN), as for most spam sources.
cat >"$W/mxguard/zone" <<'EOF'
$ORIGIN bench.test.
@	3600	IN	A	127.0.0.1
EOF
"$BIN/mxguard-testdns" -zone "$W/mxguard/zone" -listen "127.0.0.1:$DNS_PORT" >"$OUT/dns.log" 2>&1 &
DNS_PID=$!

cat >"$W/mxguard/access" <<EOF
# Every client: 5 connections per connection_rate_window_size (60s).
ClientRate:			5
# The idle test's sources are not rate limited; the first range is held
# in the greeting pause (ms) for longer than the test holds it.
ClientRate:${IDLE_GREET_BIND%%.1-*}.0/23	0
ClientRate:${IDLE_HELO_BIND%%.1-*}.0/23	0
GreetPause:${IDLE_GREET_BIND%%.1-*}.0/23	120000
EOF
# The users every server knows: user, 2user ... 50user as smtp-source and
# mxload name several recipients, and the fixed names the workloads use.
{
	for u in user legit large idle; do echo "$u@bench.test"; done
	for i in $(seq 2 50); do echo "${i}user@bench.test"; done
} >"$W/mxguard/recipients"
# Relay mode (workload a2): relay.test relayed to the smtp-sink; the
# admin listener for the fsync count.
echo user@relay.test >"$W/mxguard/relay-recipients"
# mx_config DOMAIN RECIPIENTS: what both configurations share.
mx_config() {
	cat <<EOF
hostname = "mxguard.bench.localhost"
listen = ["127.0.0.1:$MX_PORT"]
data_dir = "$W/mxguard/data"
local_domains = ["$1"]
trusted_networks = ["127.0.0.1/32"]
resolver = "127.0.0.1:$DNS_PORT"
access_map = "$W/mxguard/access"

[limits]
max_message_size = "25MiB"

[recipients]
file = "$2"
EOF
}
mx_config bench.test "$W/mxguard/recipients" >"$W/mxguard/mxguard.toml"
{
	mx_config relay.test "$W/mxguard/relay-recipients"
	cat <<EOF

[delivery]
relay = "smtp://127.0.0.1:$RELAY_SINK_PORT"

[admin]
listen = "127.0.0.1:$MX_ADMIN_PORT"
EOF
} >"$W/mxguard/mxguard-relay.toml"
for f in mxguard mxguard-relay; do
	"$BIN/mxguard" check --config "$W/mxguard/$f.toml" >&2 || die "mxguard config $f.toml rejected"
done
wait_listen "$DNS_PORT"

# The downstream of workload a2: Postfix's smtp-sink, started here, so on
# the load core and in the load tools' cgroup; it writes nothing to disk.
if want a2; then
	[ -x /usr/sbin/smtp-sink ] || "$ROOT/bench/postfix-setup.sh" config >>"$OUT/postfix-setup.log" 2>&1 ||
		die "smtp-sink is missing and Debian's postfix could not be installed"
	chmod 755 "$OUT" # smtp-sink runs as nobody
	/usr/sbin/smtp-sink -c -u nobody "inet:127.0.0.1:$RELAY_SINK_PORT" 1024 >"$OUT/sink.out" 2>"$OUT/sink.log" &
	SINK_PID=$!
	wait_listen "$RELAY_SINK_PORT"
	"$BIN/mxguard" check --config "$W/mxguard/mxguard-relay.toml" >&2 || die "mxguard's relay config rejected"
fi

# ---------------------------------------------------------------- fsync floor

log "fsync floor (bench/fsyncfloor in $W, $FLOOR_SECS each)"
"$BIN/fsyncfloor" -dir "$W" -duration "$FLOOR_SECS" >"$OUT/fsyncfloor.json" 2>>"$OUT/fsync.txt" ||
	die "fsyncfloor failed; see $OUT/fsync.txt"
record fsync serial - 1 per_s "$(jget "$OUT/fsyncfloor.json" .serial_fsyncs_per_s)"
record fsync concurrent20 - 1 per_s "$(jget "$OUT/fsyncfloor.json" .concurrent_fsyncs_per_s)"
record fsync filedir - 1 per_s "$(jget "$OUT/fsyncfloor.json" .file_and_dir_syncs_per_s)"
# The spool's group commit (relay mode), when the package has the benchmark.
mkdir -p "$W/tmp"
if (cd "$ROOT" && TMPDIR=$W/tmp go test -run '^$' -benchtime "$FLOOR_SECS" -bench 'Commit1KiB$' ./internal/spool/) \
	>>"$OUT/fsync.txt" 2>&1; then
	awk '/^BenchmarkCommit1KiB/ {
		for (i = 4; i <= NF; i++) {
			if ($i == "msgs/s") print "fsync\tcommit\t-\t1\tmsgs_per_s\t" $(i - 1)
			if ($i == "fsyncs/msg") print "fsync\tcommit\t-\t1\tfsyncs_per_msg\t" $(i - 1)
		}
	}' "$OUT/fsync.txt" >>"$RES"
fi

# ---------------------------------------------------------------- a. durable accept

for run in $(runs a "$RUNS_A"); do
	for srv in $(order "$run"); do
		for rcpts in 1 10; do
			if [ "$rcpts" = 1 ]; then n=$A1_N; else n=$A10_N; fi
			log "a. durable: $(label "$srv") run $run, $rcpts recipient(s), $n messages"
			start_server "$srv"
			f=$OUT/a-$rcpts-$srv-$run.json
			c0=$(cpu_ns "$srv")
			send_load "$srv" "$f" "$n" 1024 "$rcpts" 20 user@bench.test
			c1=$(cpu_ns "$srv")
			stop_server "$srv"
			record a "$rcpts" "$srv" "$run" cpu_ms_per_msg "$(awk -v a="$c0" -v b="$c1" -v n="$n" 'BEGIN { print (b - a) / 1e6 / n }')"
			complete=$(jget "$f" .delivery.complete)
			[ "$complete" = true ] || log "a. $(label "$srv") run $run: delivery incomplete ($(jget "$f" .delivery.found) files, $(jget "$f" .accepted) accepted)"
			record a "$rcpts" "$srv" "$run" accepted "$(jget "$f" .accepted)"
			record a "$rcpts" "$srv" "$run" failed "$(jq -r '.messages - .accepted' "$f")"
			record a "$rcpts" "$srv" "$run" accept_msgs_per_s "$(jget "$f" .messages_per_second)"
			# Over the messages accepted, once every copy of them is there
			# (a session the server dropped is counted in "failed").
			if [ "$(jq -r --argjson r "$rcpts" '.delivery.found - .delivery.before >= .accepted * $r' "$f")" = true ] &&
				[ "$(jget "$f" .accepted)" -gt 0 ]; then
				record a "$rcpts" "$srv" "$run" delivered_msgs_per_s "$(jq -r '.accepted / .delivery.seconds' "$f")"
			fi
			record a "$rcpts" "$srv" "$run" session_p50_ms "$(jget "$f" .session_latency.p50_ms)"
			record a "$rcpts" "$srv" "$run" session_p99_ms "$(jget "$f" .session_latency.p99_ms)"
		done
	done
done

# ---------------------------------------------------------------- a2. durable relay

# sunk prints how many messages smtp-sink has received so far (its -c
# counters, each rewritten after a carriage return).
sunk() { tr '\r' '\n' <"$OUT/sink.out" | awk -F'mesg=' 'NF > 1 { n = $2 + 0 } END { print n + 0 }'; }

# relay_sessions SERVER: 50, but 10 for OpenSMTPD, whose compiled-in listen
# backlog of 5 leaves some clients connecting at once unanswered until
# mxload gives up on them (30 s): its rate would be of those timeouts. It
# lost 36 of 200 sessions with 50 clients, 4 and 5 of 2,000 with 20 (rates
# of 64/s), none with 10 (529 and 669/s).
relay_sessions() { if [ "$1" = os ]; then echo 10; else echo 50; fi; }

for run in $(runs a2 "$RUNS_A"); do
	for srv in $(order "$run"); do
		if [ "$srv" = mx ]; then
			# mxguard in local mode under the same load, for the target
			# "relay at least as fast as local".
			log "a2. durable relay: mxguard in local mode run $run, $R_N messages to bench.test"
			start_mx
			f=$OUT/a2-local-mx-$run.json
			send_load mx "$f" "$R_N" 1024 1 50 user@bench.test
			stop_mx
			record a2 local mx "$run" accept_msgs_per_s "$(jget "$f" .messages_per_second)"
			record a2 local mx "$run" failed "$(jq -r '.messages - .accepted' "$f")"
			record a2 local mx "$run" session_p50_ms "$(jget "$f" .session_latency.p50_ms)"
			record a2 local mx "$run" session_p99_ms "$(jget "$f" .session_latency.p99_ms)"
			[ "$(jget "$f" .delivery.complete)" != true ] ||
				record a2 local mx "$run" delivered_msgs_per_s "$(jq -r '.accepted / .delivery.seconds' "$f")"
		fi
		log "a2. durable relay: $(label "$srv") run $run, $R_N messages to relay.test"
		if [ "$srv" = mx ]; then start_mx mxguard-relay.toml; else start_server "$srv"; fi
		f=$OUT/a2-$srv-$run.json
		s0=$(sunk) c0=$(cpu_ns "$srv") t0=$(now)
		"$BIN/mxload" -addr "127.0.0.1:$(port_of "$srv")" -c "$(relay_sessions "$srv")" -n "$R_N" -size 1024 -rcpts 1 -msgs-per-conn 1 \
			-quit-nowait -from load@client.test -to user@relay.test -json >"$f" 2>>"$OUT/mxload.log" || true
		[ -s "$f" ] || die "mxload wrote no result to $f; see $OUT/mxload.log"
		acc=$(jget "$f" .accepted)
		# Bounded: OpenSMTPD relays to one host over one connection at a
		# time, 100 messages each, and measured 15/s.
		end=$((SECONDS + R_WAIT))
		while [ $(($(sunk) - s0)) -lt "$acc" ] && [ $SECONDS -lt $end ]; do sleep 0.05; done
		t1=$(now) got=$(($(sunk) - s0)) c1=$(cpu_ns "$srv")
		if [ "$srv" = mx ]; then
			fs=$(curl -s "http://127.0.0.1:$MX_ADMIN_PORT/metrics" | awk '/^mxguard_fsync_duration_seconds_count/ { print $2 }')
			record a2 1 mx "$run" fsyncs_per_msg "$(awk -v f="${fs:--}" -v n="$acc" 'BEGIN { if (f == "-" || n == 0) print "-"; else print f / n }')"
		fi
		stop_server "$srv"
		record a2 1 "$srv" "$run" cpu_ms_per_msg "$(awk -v a="$c0" -v b="$c1" -v n="$acc" 'BEGIN { print (n > 0 ? (b - a) / 1e6 / n : "-") }')"
		record a2 1 "$srv" "$run" accepted "$acc"
		record a2 1 "$srv" "$run" failed "$(jq -r '.messages - .accepted' "$f")"
		record a2 1 "$srv" "$run" accept_msgs_per_s "$(jget "$f" .messages_per_second)"
		record a2 1 "$srv" "$run" session_p50_ms "$(jget "$f" .session_latency.p50_ms)"
		record a2 1 "$srv" "$run" session_p99_ms "$(jget "$f" .session_latency.p99_ms)"
		# The rate of what reached the sink, also when not all of it did
		# within R_WAIT after mxload's end (said so in the report).
		record a2 1 "$srv" "$run" delivered_msgs_per_s "$(awk -v n="$got" -v a="$t0" -v b="$t1" 'BEGIN { print n / (b - a) }')"
		if [ "$got" -lt "$acc" ]; then
			record a2 1 "$srv" "$run" incomplete "$got of $acc in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", b - a }') s"
			log "a2. $(label "$srv") run $run: smtp-sink has $got of $acc accepted messages ${R_WAIT}s after the load"
		fi
	done
done

# ---------------------------------------------------------------- f. fsync census

# strace every process of the server (its cgroup's threads, and -f for
# what they fork) for fsync-like calls while it takes a small load. A
# message to all ten users first makes their Maildirs, which is not the
# cost of a message.
census() {
	local srv=$1 rcpts=$2 n=$3 f tids port dir
	f=$OUT/f-$rcpts-$srv
	port=$(port_of "$srv")
	dir=$(maildir_of "$srv")
	start_server "$srv"
	"$BIN/mxload" -addr "127.0.0.1:$port" -c 1 -n 1 -rcpts 10 -quit-nowait -from load@client.test -to user@bench.test \
		-wait-maildir "$dir" -expect 10 -wait-timeout 1m >/dev/null 2>>"$OUT/mxload.log" || true
	tids=$(for p in $(cat "$CG/$srv/cgroup.procs"); do ls "/proc/$p/task" 2>/dev/null; done | sort -un | sed 's/^/-p /')
	# shellcheck disable=SC2086
	strace -f -c -e trace=fsync,fdatasync,sync_file_range,syncfs,msync -o "$f.strace" $tids 2>>"$OUT/strace.log" &
	local st=$!
	sleep 1 # attached
	# Four sessions at a time: the count is the point, and OpenSMTPD's
	# listen backlog of 5 drops some of 20 clients connecting at once.
	"$BIN/mxload" -addr "127.0.0.1:$port" -c 4 -n "$n" -rcpts "$rcpts" -msgs-per-conn 1 -quit-nowait \
		-from load@client.test -to user@bench.test -wait-maildir "$dir" -expect $((n * rcpts + 10)) -wait-timeout 2m \
		-json >"$f.json" 2>>"$OUT/mxload.log" || true
	kill -INT "$st" 2>/dev/null
	wait "$st" 2>/dev/null || true
	stop_server "$srv"
	if [ "$(jget "$f.json" .delivery.complete)" = true ]; then
		record f "$rcpts" "$srv" 1 fsyncs_per_msg "$(awk -v n="$n" '
			$NF ~ /^(fsync|fdatasync|sync_file_range|syncfs|msync)$/ { calls += $4 }
			END { print calls / n }' "$f.strace")"
	else
		log "f. $(label "$srv"): census delivery incomplete; no figure"
	fi
}
if want f && command -v strace >/dev/null; then
	for srv in $SERVERS; do
		log "f. fsync census: $(label "$srv")"
		census "$srv" 1 "$CENSUS_N"
		census "$srv" 10 $((CENSUS_N / 4))
	done
fi

# ---------------------------------------------------------------- b. flood

# flood_step SERVER RATE SECONDS FILE [LEGIT]: a fresh server, primed, a
# flood at RATE for SECONDS into FILE; with LEGIT (a file prefix) the
# legitimate client runs on the idle server and then, after FLOOD_WARM,
# under the flood, for at most SECONDS - FLOOD_WARM - 2. Sets FS_CORES and
# FS_LOAD, the cores the server and the load tools used under the flood
# alone: from the end of the legitimate client (or of the warm-up) to just
# before the end of the flood, at least 1.7 s.
FS_CORES= FS_LOAD=
flood_step() {
	local srv=$1 rate=$2 secs=$3 fl=$4 lg=${5:-} port c0 c1 l0 l1 t0 t1 start
	start_server "$srv"
	port=$(port_of "$srv")
	[ -z "$lg" ] || legit "$port" "$lg-base.json" $((secs - FLOOD_WARM - 2))
	prime "$srv" "$port" "${fl%.json}"
	"$BIN/mxload" -mode flood -engine epoll -addr "127.0.0.1:$port" -rate "$rate" -max-outstanding 2000 -timeout 5s \
		-duration "${secs}s" -bind "$FLOOD_BIND" -json >"$fl" 2>>"$OUT/mxload.log" &
	BG_PID=$!
	start=$(now)
	sleep "$FLOOD_WARM"
	[ -z "$lg" ] || legit "$port" "$lg-flood.json" $((secs - FLOOD_WARM - 2))
	c0=$(cpu_ns "$srv") l0=$(cpu_ns load) t0=$(now)
	# A legitimate session the server left hanging can outlast the flood
	# (its replies wait up to 10 s): then there is no window of the flood
	# alone, and no figure.
	local left
	left=$(awk -v s="$start" -v d="$secs" -v n="$t0" 'BEGIN { print s + d - 0.3 - n }')
	if awk -v l="$left" 'BEGIN { exit !(l >= 0.5) }'; then
		sleep "$left"
		c1=$(cpu_ns "$srv") l1=$(cpu_ns load) t1=$(now)
	fi
	wait "$BG_PID" || true
	BG_PID=
	stop_server "$srv"
	[ -s "$fl" ] || die "no flood result in $fl; see $OUT/mxload.log"
	FS_CORES=- FS_LOAD=-
	if awk -v l="$left" 'BEGIN { exit !(l >= 0.5) }'; then
		FS_CORES=$(awk -v a="$c0" -v b="$c1" -v t0="$t0" -v t1="$t1" 'BEGIN { print (b - a) / 1e9 / (t1 - t0) }')
		FS_LOAD=$(awk -v a="$l0" -v b="$l1" -v t0="$t0" -v t1="$t1" 'BEGIN { print (b - a) / 1e9 / (t1 - t0) }')
	fi
}

# prime SERVER PORT PREFIX uses up every flood address's allowance (5
# connections in 60 s) before the measured flood, so that it measures
# refusals from its first connection, whatever its rate: closed-loop
# floods of 2 s until 5 × 254 connections have been greeted (at most 6).
# OpenSMTPD refuses the flood's addresses from the first connection.
prime() {
	local srv=$1 port=$2 pre=$3 greeted=0 i
	[ "$srv" != os ] || return 0
	for i in 1 2 3 4 5 6; do
		"$BIN/mxload" -mode flood -addr "127.0.0.1:$port" -c 16 -timeout 5s -duration 2s -bind "$FLOOD_BIND" \
			-json >"$pre-prime$i.json" 2>>"$OUT/mxload.log" || true
		greeted=$((greeted + $(jq -r '.replies["220"] // 0' "$pre-prime$i.json")))
		[ "$greeted" -lt 1270 ] || return 0
	done
	log "priming $(label "$srv"): only $greeted of 1270 greeted"
}

# record_flood SERVER RATE RUN FILE CPU LOADCPU: the flood's figures.
record_flood() {
	local s=$1 v=$2 run=$3 fl=$4
	record b "$v" "$s" "$run" refusals_per_s "$(jget "$fl" .refusals_per_second)"
	record b "$v" "$s" "$run" connections_per_s "$(jget "$fl" .connections_per_second)"
	record b "$v" "$s" "$run" dropped "$(jget "$fl" .dropped)"
	record b "$v" "$s" "$run" errors_per_s "$(jget "$fl" .errors_per_second)"
	record b "$v" "$s" "$run" errors "$(jq -c .errors "$fl" | tr -d '"')"
	record b "$v" "$s" "$run" greeted "$(jget "$fl" '.replies["220"]')"
	record b "$v" "$s" "$run" replies "$(jq -c .replies "$fl" | tr -d '"')"
	record b "$v" "$s" "$run" first_reply_p99_ms "$(jget "$fl" .first_reply.p99_ms)"
	record b "$v" "$s" "$run" lag_p99_ms "$(jget "$fl" .start_lag.p99_ms)"
	record b "$v" "$s" "$run" cpu_cores "$5"
	record b "$v" "$s" "$run" load_cores "$6"
	record b "$v" "$s" "$run" refusals_per_cpu_s "$(awk -v r="$(jget "$fl" .refusals_per_second)" -v c="$5" 'BEGIN { if (c != "-" && c > 0.01) print r / c; else print "-" }')"
	record b "$v" "$s" "$run" client_us_per_conn "$(awk -v n="$(jget "$fl" .connections_per_second)" -v c="$6" 'BEGIN { if (c != "-" && n > 0) print c * 1e6 / n; else print "-" }')"
}

# held FILE: whether the server held the flood's rate (see the report).
held() {
	jq -e '(.dropped <= 0.01 * (.connections + .dropped)) and
		(([.errors[]] | add // 0) <= 0.01 * .connections) and (.first_reply.p99_ms <= 100)' "$1" >/dev/null
}
# client_bound FILE: the client fell behind its schedule while the server
# was answering promptly: the load core, not the server, set the pace. (A
# server that falls behind makes the client lag too, with its thousands of
# connections outstanding; that is the server's failure.)
client_bound() { jq -e '.start_lag.p99_ms > 20 and .first_reply.p99_ms <= 100' "$1" >/dev/null; }

for run in $(runs b "$RUNS"); do
	for srv in $(order "$run"); do
		for rate in $FLOOD_RATES; do
			log "b. flood: $(label "$srv") run $run, $rate/s from $FLOOD_BIND"
			pre=$OUT/b-$rate-$srv-$run
			flood_step "$srv" "$rate" "$FLOOD_SECS" "$pre-flood.json" "$pre-legit"
			record_flood "$srv" "$rate" "$run" "$pre-flood.json" "$FS_CORES" "$FS_LOAD"
			if [ "$(jget "$pre-legit-base.json" .session_latency.count)" -gt 0 ]; then
				record b "$rate" "$srv" "$run" base_p50_ms "$(jget "$pre-legit-base.json" .session_latency.p50_ms)"
				record b "$rate" "$srv" "$run" base_p99_ms "$(jget "$pre-legit-base.json" .session_latency.p99_ms)"
			fi
			if [ "$(jget "$pre-legit-flood.json" .session_latency.count)" -gt 0 ]; then
				record b "$rate" "$srv" "$run" flood_p50_ms "$(jget "$pre-legit-flood.json" .session_latency.p50_ms)"
				record b "$rate" "$srv" "$run" flood_p99_ms "$(jget "$pre-legit-flood.json" .session_latency.p99_ms)"
			fi
			record b "$rate" "$srv" "$run" legit_sessions "$(jget "$pre-legit-flood.json" .session_latency.count)"
		done
	done
done

# The highest rate held: from the fixed rates of run 1 (the highest held,
# and the lowest not held above it; a lower rate that failed, as noise on
# a shared machine can make one, is not taken for the ceiling), up by half
# again from the highest held, then bisection. A probe the client could not
# keep to its schedule ends the search: it measured the load core.
if [ "$SEARCH" = 1 ] && want b; then
	for srv in $SERVERS; do
		lo=0 hi=0 note= probes=
		for rate in $FLOOD_RATES; do
			if held "$OUT/b-$rate-$srv-1-flood.json"; then
				[ "$rate" -le "$lo" ] || lo=$rate
				probes="$probes$rate: y, "
			else
				probes="$probes$rate: n, "
			fi
		done
		for rate in $FLOOD_RATES; do
			if [ "$rate" -gt "$lo" ] && ! held "$OUT/b-$rate-$srv-1-flood.json" && { [ "$hi" = 0 ] || [ "$rate" -lt "$hi" ]; }; then
				hi=$rate
				client_bound "$OUT/b-$rate-$srv-1-flood.json" && note=" (client-bound at $rate/s: the load core fell behind its schedule)"
			fi
		done
		for ((i = 0; i < MAX_PROBES; i++)); do
			[ -z "$note" ] || break
			if [ "$hi" = 0 ]; then
				rate=$((lo * 3 / 2))
			elif [ "$lo" = 0 ]; then
				rate=$((hi / 2))
			else
				rate=$(((lo + hi) / 2))
				# Close enough: within 5%.
				[ $((hi - lo)) -gt $((lo / 20)) ] || break
			fi
			[ "$rate" -ge 100 ] || break
			log "b2. search: $(label "$srv") at $rate/s"
			fl=$OUT/b2-$rate-$srv.json
			flood_step "$srv" "$rate" "$PROBE_SECS" "$fl"
			record b2 "$rate" "$srv" 1 cpu_cores "$FS_CORES"
			if held "$fl"; then
				lo=$rate
				probes="$probes$rate: y, "
			else
				hi=$rate
				probes="$probes$rate: n, "
			fi
			if client_bound "$fl"; then
				note=" (client-bound at $rate/s: the load core fell behind its schedule)"
			fi
		done
		if [ "$lo" = 0 ]; then
			record info "$srv" - 1 held_rate -
			note="none (not even the lowest probe)"
		else
			record info "$srv" - 1 held_rate "$lo"
		fi
		record info "$srv" - 1 held_note "$note"
		record info "$srv" - 1 failed_rate "${hi/#0/-}"
		record info "$srv" - 1 probes "${probes%, }"
		if [ "$lo" != 0 ]; then
			if [ -e "$OUT/b2-$lo-$srv.json" ]; then
				fl=$OUT/b2-$lo-$srv.json
				cores=$(awk -F'\t' -v r="$lo" -v s="$srv" '$1 == "b2" && $2 == r && $3 == s && $5 == "cpu_cores" { print $6 }' "$RES")
			else
				fl=$OUT/b-$lo-$srv-1-flood.json
				cores=$(awk -F'\t' -v r="$lo" -v s="$srv" '$1 == "b" && $2 == r && $3 == s && $4 == 1 && $5 == "cpu_cores" { print $6 }' "$RES")
			fi
			record info "$srv" - 1 held_refusals "$(jget "$fl" .refusals_per_second)"
			record info "$srv" - 1 held_cpu "$cores"
			record info "$srv" - 1 held_per_cpu "$(awk -v r="$(jget "$fl" .refusals_per_second)" -v c="$cores" 'BEGIN { if (c != "-" && c > 0.01) print r / c; else print "-" }')"
		fi
	done
fi

# ---------------------------------------------------------------- c. idle cost

for run in $(runs c "$RUNS"); do
	for srv in $(order "$run"); do
		for state in greet helo; do
			[ "$srv" != os ] || [ "$state" != greet ] || continue # OpenSMTPD cannot hold a client before its greeting
			# A process per client (Postfix's smtpd, Exim), or a listen
			# backlog of 5 (OpenSMTPD, which takes about 20 new
			# connections a second from 100 dialers): fewer connections.
			case $srv-$state in
			pf-helo | ex-* | os-*) conns=$PROC_IDLE_CONNS ;;
			*) conns=$IDLE_CONNS ;;
			esac
			log "c. idle: $(label "$srv") run $run, $conns connections, $state"
			start_server "$srv"
			args=(-mode idle -c 100 -hold "$HOLD" -interval 1s -conns "$conns" -pids "$(procs_of "$srv")")
			case $srv-$state in
			mx-*) args+=(-addr "127.0.0.1:$MX_PORT") ;;
			pf-greet) args+=(-addr "127.0.0.1:$PF_PS_PORT") ;;
			pf-helo) args+=(-addr "127.0.0.1:$PF_IDLE_PORT") ;;
			ex-greet) args+=(-addr "127.0.0.1:$EX_PS_PORT") ;;
			ex-helo) args+=(-addr "127.0.0.1:$EX_IDLE_PORT") ;;
			os-helo) args+=(-addr "127.0.0.1:$OS_IDLE_PORT") ;;
			esac
			if [ "$state" = greet ]; then
				args+=(-bind "$IDLE_GREET_BIND")
			else
				args+=(-bind "$IDLE_HELO_BIND" -ehlo-first)
			fi
			f=$OUT/c-$state-$srv-$run.json
			"$BIN/mxload" "${args[@]}" -json >"$f" 2>>"$OUT/mxload.log" || true
			stop_server "$srv"
			[ -s "$f" ] || die "no idle result in $f; see $OUT/mxload.log"
			record c "$state" "$srv" "$run" conns "$conns"
			record c "$state" "$srv" "$run" open_at_end "$(jget "$f" .open_at_end)"
			record c "$state" "$srv" "$run" rss_per_conn "$(jget "$f" .rss_bytes_per_conn)"
			record c "$state" "$srv" "$run" pss_per_conn "$(jget "$f" .pss_bytes_per_conn)"
			record c "$state" "$srv" "$run" open_seconds "$(jget "$f" .open_seconds)"
		done
	done
done

# ---------------------------------------------------------------- d. large messages

for run in $(runs d "$RUNS"); do
	for srv in $(order "$run"); do
		for mib in 1 10; do
			if [ "$mib" = 1 ]; then n=$D1_N; else n=$D10_N; fi
			log "d. large: $(label "$srv") run $run, $n messages of $mib MiB over 4 sessions"
			start_server "$srv"
			"$BIN/memwatch" -pids "$(procs_of "$srv")" -interval 50ms >"$OUT/d-$mib-$srv-$run.mem.json" 2>>"$OUT/mxload.log" &
			BG_PID=$!
			f=$OUT/d-$mib-$srv-$run.json
			send_load "$srv" "$f" "$n" $((mib << 20)) 1 4 large@bench.test
			kill -INT "$BG_PID" 2>/dev/null || true # memwatch may have ended by itself (its JSON is written)
			wait "$BG_PID" || true
			BG_PID=
			m=$OUT/d-$mib-$srv-$run.mem.json
			stop_server "$srv"
			record d "$mib" "$srv" "$run" accept_mb_per_s "$(jget "$f" .mb_per_second)"
			if [ "$(jget "$f" .delivery.complete)" = true ]; then
				record d "$mib" "$srv" "$run" delivered_mb_per_s \
					"$(jq -r '.messages * .octets_per_message / 1e6 / .delivery.seconds' "$f")"
			fi
			record d "$mib" "$srv" "$run" baseline_rss "$(jget "$m" .baseline.rss_bytes)"
			record d "$mib" "$srv" "$run" baseline_pss "$(jget "$m" .baseline.pss_bytes)"
			record d "$mib" "$srv" "$run" peak_rss "$(jget "$m" .peak_rss_bytes)"
			record d "$mib" "$srv" "$run" peak_pss "$(jget "$m" .peak_pss_bytes)"
			record d "$mib" "$srv" "$run" peak_procs "$(jget "$m" .peak_processes)"
		done
	done
done

# ---------------------------------------------------------------- p. profile

# perf_summary DATA OUT: the top symbols by self time, and the split
# between the kernel and mxguard's own code.
perf_summary() {
	{
		perf report -i "$1" --stdio --no-children --sort dso 2>/dev/null | awk '/^ +[0-9]/ && n++ < 6'
		echo
		perf report -i "$1" --stdio --no-children --sort sym 2>/dev/null | awk '/^ +[0-9]/ && n++ < 25'
	} >"$2" || true
}
if [ "$PROFILE" = 1 ] && want p && [[ " $SERVERS " == *" mx "* ]] && command -v perf >/dev/null; then
	log "p. profile: mxguard under a 10,000/s flood"
	start_server mx
	"$BIN/mxload" -mode flood -engine epoll -addr "127.0.0.1:$MX_PORT" -rate 10000 -max-outstanding 2000 -timeout 5s \
		-duration "$((PROFILE_SECS + 2))s" -bind "$FLOOD_BIND" -json >"$OUT/p-flood.json" 2>>"$OUT/mxload.log" &
	BG_PID=$!
	sleep 1
	perf record -F 999 -g -p "$MX_PID" -o "$OUT/perf-flood.data" -- sleep "$PROFILE_SECS" >>"$OUT/perf.log" 2>&1 || true
	wait "$BG_PID" || true
	BG_PID=
	stop_server mx
	perf_summary "$OUT/perf-flood.data" "$OUT/perf-flood.txt"

	log "p. profile: mxguard under the durable load"
	start_server mx
	timeout -s INT $((PROFILE_SECS + 2)) "$BIN/mxload" -addr "127.0.0.1:$MX_PORT" -c 20 -n 10000000 -msgs-per-conn 1 \
		-quit-nowait -from load@client.test -to user@bench.test -json >"$OUT/p-durable.json" 2>>"$OUT/mxload.log" &
	BG_PID=$!
	sleep 1
	perf record -F 999 -g -p "$MX_PID" -o "$OUT/perf-durable.data" -- sleep "$PROFILE_SECS" >>"$OUT/perf.log" 2>&1 || true
	wait "$BG_PID" || true
	BG_PID=
	stop_server mx
	perf_summary "$OUT/perf-durable.data" "$OUT/perf-durable.txt"
fi

# ---------------------------------------------------------------- report

# How well the pinning held: the share of each server's CPU time spent on
# its core, and of the load tools' on theirs.
for s in $SERVERS load; do
	if [ "$s" = load ]; then c=$LOAD_CPU; else c=$SERVER_CPU; fi
	record info "$s" - 1 on_core "$(awk -v c="$c" '{ for (i = 1; i <= NF; i++) t += $i; print (t > 0 ? $(c + 1) / t : 0) }' "$CG/$s/cpuacct.usage_percpu")"
done

log "done; raw results in $OUT"

report | tee "$OUT/summary.md"
# The servers' logs hold a line per refusal: hundreds of MB a run.
gzip -f "$OUT"/*.log 2>/dev/null || true
