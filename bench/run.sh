#!/usr/bin/env bash
# run.sh measures mxguard against Postfix on this machine, side by side, and
# prints the results as markdown for BENCHMARKS.md.
#
# Usage: bench/run.sh [quick|full]      (from anywhere; full is the default)
#        bench/run.sh report RUN_DIRECTORY
#
#   full    2 runs of every workload on each server (3 of the durable one),
#           alternating; about 6 minutes
#   quick   1 run each with smaller counts; about 70 seconds
#   report  print the markdown report of an earlier run again
#
# What it does:
#   1. builds mxguard, mxload, mxguard-testdns and memwatch into $MXBENCH_DIR/bin;
#   2. installs Debian's postfix if it is missing (bench/postfix-setup.sh) and
#      writes a private instance of it: 127.0.0.1 only, Maildir delivery for
#      bench.test, no delivery anywhere else;
#   3. measures the disk's fsync cost (the spool package's benchmarks), the
#      floor under durable throughput;
#   4. runs four workloads, each on a freshly started server with an empty
#      spool and Maildir, only one server running at a time, mxguard and
#      Postfix runs alternating:
#        a. durable accept: 20 concurrent sessions, 1 KiB messages, 1 and 10
#           recipients, one message per session, timed until every copy is
#           in the Maildir;
#        b. flood: mxload floods from 127.0.1.1-254, each address over its
#           ClientRate (5 per 60s), while a legitimate client on 127.0.0.1
#           (trusted by both) sends one message per session; its p99 is
#           compared with the same client's on the idle server;
#        c. idle cost: connections held open and silent, in the greeting
#           pause and after EHLO; server memory gained per connection;
#        d. large messages: 10 MiB (and 1 MiB, for comparison) over 4
#           sessions; MB/s and the server's peak memory;
#   5. prints a markdown report on stdout (also kept in the run directory,
#      with every raw JSON result and the servers' logs); progress goes to
#      stderr.
#
# Both servers are stopped on exit, however the script ends.
#
# The servers are set up alike: mxguard on 127.0.0.1:2525 with
# trusted_networks = ["127.0.0.1/32"] and an access map whose ClientRate is 5
# (0 for the idle test's source ranges, and a 120 s GreetPause for the
# greeting-pause range); Postfix with mynetworks = 127.0.0.1/32, anvil's
# smtpd_client_connection_rate_limit = 5 per 60 s with only 127.0.0.1 exempt,
# postscreen (greet wait 120 s) for the greeting-pause test and an smtpd with a
# process limit of 1100 for the after-EHLO test. mxguard looks up the reverse
# DNS of each client (cached) on a DNS server run on loopback; Postfix does no
# lookups (smtpd_peername_lookup = no), so that nothing here queries a DNS
# server off this machine.
#
# Environment:
#   MXBENCH_DIR   work directory [/tmp/mxbench]
#   CLIENT        client for workloads a and d: mxload or smtp-source [mxload]
#                 (flood and idle need mxload; smtp-source gives no latencies)
#   FLOOD_C       flood dialers, enough to saturate both cores [32]
#   FLOOD_C_MOD   flood dialers for a flood of about 20,000 connections/s [4]
#                 (mxload has no rate option; a closed loop of few dialers paces it)
#   MX_PORT, DNS_PORT, PF_PORT, PF_PS_PORT, PF_IDLE_PORT   [2525 2553 2526 2527 2528]
set -euo pipefail

MODE=${1:-full}
case $MODE in
quick | full) ;;
report) REPORT_DIR=${2:?usage: $0 report RUN_DIRECTORY} ;;
*)
	echo "usage: $0 [quick|full] | $0 report RUN_DIRECTORY" >&2
	exit 2
	;;
esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
export MXBENCH_DIR=${MXBENCH_DIR:-/tmp/mxbench}
W=$MXBENCH_DIR
BIN=$W/bin
CLIENT=${CLIENT:-mxload}
FLOOD_C=${FLOOD_C:-32}
FLOOD_C_MOD=${FLOOD_C_MOD:-4}
MX_PORT=${MX_PORT:-2525}
DNS_PORT=${DNS_PORT:-2553}
export PF_PORT=${PF_PORT:-2526} PF_PS_PORT=${PF_PS_PORT:-2527} PF_IDLE_PORT=${PF_IDLE_PORT:-2528}
OUT=$W/run-$(date -u +%Y%m%dT%H%M%SZ)
RES=$OUT/results.tsv

# Source ranges. The flood range is over its ClientRate on both servers;
# the idle ranges are not rate limited (they would be after 5 connections),
# and only the first has a greeting pause on mxguard.
FLOOD_BIND=127.0.1.1-127.0.1.254
IDLE_GREET_BIND=127.0.2.1-127.0.3.254
IDLE_HELO_BIND=127.0.4.1-127.0.5.254
# Postfix processes: those that hold idle clients (c), and all of them (d).
PF_IDLE_PROCS_RE='^(smtpd|postscreen)$'
PF_ALL_PROCS_RE='^(master|smtpd|postscreen|cleanup|qmgr|pickup|virtual|trivial-rewrite|anvil|postlogd|proxymap|bounce|error|scache|showq)$'

if [ "$MODE" = report ]; then
	# shellcheck source=/dev/null
	. "$REPORT_DIR/params" || exit 1
	RES=$REPORT_DIR/results.tsv
elif [ "$MODE" = full ]; then
	RUNS=2 RUNS_A=3 A1_N=3000 A10_N=400 LEGIT_N=300 IDLE_CONNS=10000 PF_HELO_CONNS=1000 HOLD=10s
	D10_N=40 D1_N=100 BENCHTIME=1s
else
	RUNS=1 RUNS_A=1 A1_N=1000 A10_N=100 LEGIT_N=100 IDLE_CONNS=4000 PF_HELO_CONNS=200 HOLD=3s
	D10_N=12 D1_N=30 BENCHTIME=200ms
fi
# Postfix needs one smtpd process per client after EHLO; leave headroom.
[ "$MODE" = report ] || export PF_IDLE_PROCS=$((PF_HELO_CONNS + 100))
if [ "$MODE" != report ]; then
	RUN_MODE=$MODE
	RUN_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
fi

log() { printf '%s %s\n' "$(date -u +%T)" "$*" >&2; }
die() {
	log "run.sh: $*"
	exit 1
}

MX_PID= DNS_PID= BG_PID=
cleanup() {
	[ "$MODE" != report ] || return 0
	set +e
	[ -z "$BG_PID" ] || kill -INT "$BG_PID" 2>/dev/null
	stop_mx
	"$ROOT/bench/postfix-setup.sh" stop >/dev/null 2>&1
	if [ -n "$DNS_PID" ]; then
		kill -TERM "$DNS_PID" 2>/dev/null
		wait "$DNS_PID" 2>/dev/null
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_listen waits until something listens on 127.0.0.1:$1.
wait_listen() {
	for _ in $(seq 100); do
		[ -z "$(ss -Hltn "src 127.0.0.1:$1")" ] || return 0
		sleep 0.1
	done
	die "nothing listens on 127.0.0.1:$1"
}

# port_free fails when something already listens on 127.0.0.1:$1.
port_free() {
	[ -z "$(ss -Hltn "src 127.0.0.1:$1")" ] || die "127.0.0.1:$1 is in use; set the *_PORT variables"
}

start_mx() {
	stop_mx
	rm -rf "$W/mxguard/data"
	mkdir -p "$W/mxguard/data"
	"$BIN/mxguard" serve --config "$W/mxguard/mxguard.toml" 2>>"$OUT/mxguard.log" &
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
}

start_pf() {
	"$ROOT/bench/postfix-setup.sh" start >>"$OUT/postfix-setup.log" 2>&1 ||
		die "postfix did not start; see $OUT/postfix-setup.log"
	wait_listen "$PF_PORT"
	wait_listen "$PF_PS_PORT"
	wait_listen "$PF_IDLE_PORT"
}

stop_pf() {
	# Keep the log of the instance that is about to be wiped by the next start.
	cat "$W/postfix/postfix.log" >>"$OUT/postfix.log" 2>/dev/null || true
	"$ROOT/bench/postfix-setup.sh" stop >>"$OUT/postfix-setup.log" 2>&1
}

start_server() { "start_$1"; }
stop_server() { "stop_$1"; }
port_of() { if [ "$1" = mx ]; then echo "$MX_PORT"; else echo "$PF_PORT"; fi; }
maildir_of() { if [ "$1" = mx ]; then echo "$W/mxguard/data/mail"; else echo "$W/postfix/mail"; fi; }

# order prints the servers in the order of run $1: mxguard first in odd runs.
order() { if [ $(($1 % 2)) = 1 ]; then echo "mx pf"; else echo "pf mx"; fi; }

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

# send_load SERVER FILE N SIZE RCPTS CONC TO: one message per session, then
# wait for every copy in the Maildir. Writes mxload's JSON (or, with
# CLIENT=smtp-source, the same fields as far as smtp-source can tell) to FILE.
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
		-msgs-per-conn 1 -from load@client.test -to "$to" \
		-wait-maildir "$dir" -expect $((n * rcpts)) -wait-timeout 5m -json >"$file" 2>>"$OUT/mxload.log" || true
	[ -s "$file" ] || die "mxload wrote no result to $file; see $OUT/mxload.log"
}

# legit PORT FILE: the legitimate client, from 127.0.0.1 (trusted by both
# servers), one message per session, one session at a time.
legit() {
	"$BIN/mxload" -addr "127.0.0.1:$1" -c 1 -n "$LEGIT_N" -msgs-per-conn 1 \
		-from legit@client.test -to legit@bench.test -json >"$2" 2>>"$OUT/mxload.log" || true
}

# cpu_ticks SERVER prints the CPU time (user+system, clock ticks) the server
# has used so far: mxguard's process; for Postfix every process of it plus
# what master has collected from children that exited (smtpd exits after
# max_use clients).
cpu_ticks() {
	if [ "$1" = mx ]; then
		awk '{ print $14 + $15 }' "/proc/$MX_PID/stat"
		return
	fi
	local t=0 d c
	for d in /proc/[0-9]*; do
		c=$(cat "$d/comm" 2>/dev/null) || continue
		[[ $c =~ $PF_ALL_PROCS_RE ]] || continue
		t=$((t + $(awk '{ print $14 + $15 + $16 + $17 }' "$d/stat" 2>/dev/null || echo 0)))
	done
	echo "$t"
}
TICK=$(getconf CLK_TCK)

# jget FILE FILTER prints one figure of a JSON result, "-" for null.
jget() { jq -r "($2) // \"-\"" "$1"; }

# ---------------------------------------------------------------- report

# vals W V S M prints every run's figure, in run order, space separated.
vals() {
	awk -F'\t' -v w="$1" -v v="$2" -v s="$3" -v m="$4" \
		'$1 == w && $2 == v && $3 == s && $5 == m && $6 != "-" { print $4 "\t" $6 }' "$RES" | sort -n | cut -f2
}
# med W V S M prints the median over the runs ("-" without figures).
med() {
	vals "$@" | sort -g | awk '{ a[NR] = $1 }
		END { if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
# fmt PRINTF-FORMAT [DIVISOR] formats stdin's numbers, "-" as is.
fmtn() {
	awk -v f="$1" -v d="${2:-1}" '{ for (i = 1; i <= NF; i++) $i = ($i == "-" ? "-" : sprintf(f, $i / d)); print }'
}
# cell W V S M FORMAT [DIVISOR]: the median, and every run in brackets when there are several.
cell() {
	local m all
	m=$(med "$1" "$2" "$3" "$4" | fmtn "$5" "${6:-1}")
	all=$(vals "$1" "$2" "$3" "$4" | fmtn "$5" "${6:-1}" | paste -sd' ' | sed 's/ /, /g')
	if [ "$RUNS" -gt 1 ] && [ -n "$all" ]; then echo "$m ($all)"; else echo "$m"; fi
}
# ratio A B prints A/B as "1.23×", "-" when either is missing.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f×\n", a / b }'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "-" && a >= b) }'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "-" && a <= b) }'; }

report() {
	local v s label
	echo "## Results: \`bench/run.sh $RUN_MODE\`, $RUN_DATE"
	echo
	echo "Machine: $(nproc) cores ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo))," \
		"$(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, kernel $(uname -r);" \
		"work directory on $(df -P "$W" | awk 'NR == 2 { print $1 }') ($(findmnt -no FSTYPE -T "$W" 2>/dev/null || echo '?'))," \
		"shared with other work while it ran. $(postconf -d mail_version 2>/dev/null | sed 's/mail_version = /Postfix /'), $(go version | cut -d' ' -f3)," \
		"client \`$CLIENT\` (flood and idle: \`mxload\`). Each figure is the median of $RUNS run(s) ($RUNS_A for a), every run in brackets;" \
		"ratios are mxguard/Postfix of the medians."
	echo
	echo "### Disk fsync floor (\`go test -bench 'Fsync|Commit' ./internal/spool/\`)"
	echo
	echo "| measure | figure |"
	echo "|---|---|"
	echo "| create+write+fsync a 1 KiB file, one at a time | $(med fsync serial - fsyncs_per_s | fmtn %.0f) fsyncs/s |"
	echo "| the same from 20 goroutines at once | $(med fsync concurrent20 - fsyncs_per_s | fmtn %.0f) fsyncs/s |"
	echo "| spool commit, 1 KiB, 20 sessions (group commit) | $(med fsync commit - msgs_per_s | fmtn %.0f) msgs/s at $(med fsync commit - fsyncs_per_msg | fmtn %.2f) fsyncs/msg |"
	echo
	echo "### a. Durable accept: 20 sessions, 1 KiB, one message per session, until in the Maildir"
	echo
	echo "Server CPU is user+system time over the whole run (until delivered), per message: Postfix's summed over all its processes."
	echo
	echo "| recipients | server | delivered msgs/s | accepted msgs/s (250s) | session p50 ms | session p99 ms | server CPU ms/msg |"
	echo "|---|---|---|---|---|---|---|"
	for v in 1 10; do
		for s in mx pf; do
			if [ $s = mx ]; then label=mxguard; else label=Postfix; fi
			echo "| $v | $label | $(cell a $v $s delivered_msgs_per_s %.0f) | $(cell a $v $s accept_msgs_per_s %.0f) |" \
				"$(cell a $v $s session_p50_ms %.1f) | $(cell a $v $s session_p99_ms %.1f) | $(cell a $v $s cpu_ms_per_msg %.2f) |"
		done
		echo "| $v | **mxguard/Postfix** | **$(ratio "$(med a $v mx delivered_msgs_per_s)" "$(med a $v pf delivered_msgs_per_s)")** |" \
			"$(ratio "$(med a $v mx accept_msgs_per_s)" "$(med a $v pf accept_msgs_per_s)") |" \
			"$(ratio "$(med a $v mx session_p50_ms)" "$(med a $v pf session_p50_ms)") |" \
			"$(ratio "$(med a $v mx session_p99_ms)" "$(med a $v pf session_p99_ms)") |" \
			"$(ratio "$(med a $v mx cpu_ms_per_msg)" "$(med a $v pf cpu_ms_per_msg)") |"
	done
	echo
	echo "### b. Flood from 254 addresses over ClientRate 5/60s; legitimate client on 127.0.0.1, $LEGIT_N one-message sessions"
	echo
	echo "The flood runs twice: with $FLOOD_C dialers, which saturate both cores (client and server share them), and with" \
		"$FLOOD_C_MOD, which against mxguard is about 20,000 connections/s. Each dialer reconnects as soon as it has its reply."
	echo
	echo "Server CPU: cores the server used while the legitimate client ran under the flood (of 2; the rest went to the clients)."
	echo
	echo "| dialers | server | rejections/s | connections/s | greeted (within rate) | connect errors | server CPU (cores) | legit p99 ms, no flood | legit p99 ms, flood | p99 flood/no flood |"
	echo "|---|---|---|---|---|---|---|---|---|---|"
	for v in $FLOOD_C $FLOOD_C_MOD; do
		for s in mx pf; do
			if [ $s = mx ]; then label=mxguard; else label=Postfix; fi
			echo "| $v | $label | $(cell b flood$v $s rejections_per_s %.0f) | $(cell b flood$v $s connections_per_s %.0f) |" \
				"$(cell b flood$v $s greeted %.0f) | $(cell b flood$v $s errors %.0f) | $(cell b flood$v $s cpu_share %.2f) |" \
				"$(cell b legit$v $s base_p99_ms %.1f) |" \
				"$(cell b legit$v $s flood_p99_ms %.1f) | $(ratio "$(med b legit$v $s flood_p99_ms)" "$(med b legit$v $s base_p99_ms)") |"
		done
		echo "| $v | **mxguard/Postfix** | **$(ratio "$(med b flood$v mx rejections_per_s)" "$(med b flood$v pf rejections_per_s)")** |" \
			"$(ratio "$(med b flood$v mx connections_per_s)" "$(med b flood$v pf connections_per_s)") | | | |" \
			"$(ratio "$(med b legit$v mx base_p99_ms)" "$(med b legit$v pf base_p99_ms)") |" \
			"$(ratio "$(med b legit$v mx flood_p99_ms)" "$(med b legit$v pf flood_p99_ms)") | |"
	done
	echo
	echo "### c. Idle cost: connections held open and silent for $HOLD; server memory gained per connection"
	echo
	echo "mxguard: its one process (RSS ≈ PSS). Postfix: every smtpd and postscreen process, summed;" \
		"PSS is the fair figure (RSS counts shared pages once per process). Greeting pause: mxguard's" \
		"GreetPause (no banner yet); Postfix's postscreen (\`220-\` sent, greet wait 120s)." \
		"After EHLO: Postfix's smtpd, one process per client (process limit $PF_IDLE_PROCS), so fewer connections."
	echo
	echo "| state | server | connections | held at end | bytes/conn (PSS) | bytes/conn (RSS) | seconds to open |"
	echo "|---|---|---|---|---|---|---|"
	for v in greet helo; do
		for s in mx pf; do
			if [ $s = mx ]; then label=mxguard; else label=Postfix; fi
			echo "| $v | $label | $(med c $v $s conns | fmtn %.0f) | $(cell c $v $s open_at_end %.0f) |" \
				"$(cell c $v $s pss_per_conn %.0f) | $(cell c $v $s rss_per_conn %.0f) | $(cell c $v $s open_seconds %.1f) |"
		done
		echo "| $v | **mxguard/Postfix** | | | **$(ratio "$(med c $v mx pss_per_conn)" "$(med c $v pf pss_per_conn)")** |" \
			"$(ratio "$(med c $v mx rss_per_conn)" "$(med c $v pf rss_per_conn)") | |"
	done
	echo
	echo "### d. Large messages: 4 sessions, one message per session, until in the Maildir"
	echo
	echo "Peak memory sampled every 50 ms: mxguard's process (and its VmHWM), all of Postfix's processes (RSS and PSS sums)."
	echo
	echo "| size | server | delivered MB/s | accepted MB/s | peak PSS MiB | peak RSS MiB | mxguard VmHWM MiB | idle before (RSS MiB) |"
	echo "|---|---|---|---|---|---|---|---|"
	for v in 1 10; do
		for s in mx pf; do
			if [ $s = mx ]; then label=mxguard; else label=Postfix; fi
			echo "| $v MiB | $label | $(cell d $v $s delivered_mb_per_s %.0f) | $(cell d $v $s accept_mb_per_s %.0f) |" \
				"$(cell d $v $s peak_pss %.1f 1048576) | $(cell d $v $s peak_rss %.1f 1048576) |" \
				"$(cell d $v $s vmhwm_bytes %.1f 1048576) | $(cell d $v $s baseline_rss %.1f 1048576) |"
		done
		echo "| $v MiB | **mxguard/Postfix** | **$(ratio "$(med d $v mx delivered_mb_per_s)" "$(med d $v pf delivered_mb_per_s)")** |" \
			"$(ratio "$(med d $v mx accept_mb_per_s)" "$(med d $v pf accept_mb_per_s)") |" \
			"$(ratio "$(med d $v mx peak_pss)" "$(med d $v pf peak_pss)") | $(ratio "$(med d $v mx peak_rss)" "$(med d $v pf peak_rss)") | | |"
	done
	echo
	echo "### Targets"
	echo
	local a1 a10 rej rejm f99 b99 f99m b99m g h p1 p10 grow limit
	a1=$(ratio "$(med a 1 mx delivered_msgs_per_s)" "$(med a 1 pf delivered_msgs_per_s)")
	a10=$(ratio "$(med a 10 mx delivered_msgs_per_s)" "$(med a 10 pf delivered_msgs_per_s)")
	rej=$(med b "flood$FLOOD_C" mx rejections_per_s)
	rejm=$(med b "flood$FLOOD_C_MOD" mx rejections_per_s)
	f99=$(med b "legit$FLOOD_C" mx flood_p99_ms)
	b99=$(med b "legit$FLOOD_C" mx base_p99_ms)
	f99m=$(med b "legit$FLOOD_C_MOD" mx flood_p99_ms)
	b99m=$(med b "legit$FLOOD_C_MOD" mx base_p99_ms)
	g=$(med c greet mx rss_per_conn)
	h=$(med c helo mx rss_per_conn)
	p1=$(med d 1 mx peak_rss)
	p10=$(med d 10 mx peak_rss)
	limit=$(((36 << 20) / 10))
	grow=$(awk -v a="$p1" -v b="$p10" 'BEGIN { if (a == "-" || b == "-") print "-"; else print b - a }')
	met() { if "$@"; then echo met; else echo "**missed**"; fi; }
	echo "| target | measured | |"
	echo "|---|---|---|"
	echo "| a. ≥ 3× Postfix's delivered messages/s | ${a1} (1 rcpt), ${a10} (10 rcpts) | $(met ge "$(awk -v a="${a1%×}" -v b="${a10%×}" 'BEGIN { print (a < b ? a : b) }')" 3) |"
	echo "| b. ≥ 20,000 rejections/s | $(echo "$rej" | fmtn %.0f)/s ($FLOOD_C dialers), $(echo "$rejm" | fmtn %.0f)/s ($FLOOD_C_MOD dialers) | $(met ge "$rej" 20000) |"
	echo "| b. legit p99 ≤ 2× unloaded, during the $FLOOD_C_MOD-dialer flood | $(echo "$f99m" | fmtn %.1f) ms vs $(echo "$b99m" | fmtn %.1f) ms: $(ratio "$f99m" "$b99m") at $(echo "$rejm" | fmtn %.0f) rejections/s | $(met le "$(ratio "$f99m" "$b99m" | sed "s/×//")" 2) |"
	echo "| b. the same, during the saturating $FLOOD_C-dialer flood | $(echo "$f99" | fmtn %.1f) ms vs $(echo "$b99" | fmtn %.1f) ms: $(ratio "$f99" "$b99") at $(echo "$rej" | fmtn %.0f) rejections/s | $(met le "$(ratio "$f99" "$b99" | sed "s/×//")" 2) |"
	echo "| c. ≤ 10 KiB per idle connection | $(echo "$g" | fmtn %.0f) B (greeting pause), $(echo "$h" | fmtn %.0f) B (after EHLO) | $(met le "$(awk -v a="$g" -v b="$h" 'BEGIN { print (a > b ? a : b) }')" 10240) |"
	echo "| d. peak memory independent of message size | peak RSS $(echo "$p1" | fmtn %.1f 1048576) MiB (1 MiB messages), $(echo "$p10" | fmtn %.1f 1048576) MiB (10 MiB): $(echo "$grow" | fmtn %+.1f 1048576) MiB; holding the 4 messages in flight would add ≥ 36 MiB | $(met le "$grow" "$limit") (criterion: < 10% of that) |"
}

if [ "$MODE" = report ]; then
	report
	exit 0
fi

# ---------------------------------------------------------------- setup

mkdir -p "$OUT" "$BIN" "$W/mxguard"
: >"$RES"
# What the report needs to be printed again later (run.sh report DIR).
for v in RUN_MODE RUN_DATE RUNS RUNS_A CLIENT FLOOD_C FLOOD_C_MOD LEGIT_N HOLD PF_IDLE_PROCS; do
	printf '%s=%q\n' "$v" "${!v}"
done >"$OUT/params"
command -v jq >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q jq >&2 ||
	die "jq is missing and could not be installed"
for p in "$MX_PORT" "$DNS_PORT" "$PF_PORT" "$PF_PS_PORT" "$PF_IDLE_PORT"; do port_free "$p"; done

log "building into $BIN"
(cd "$ROOT" && go build -o "$BIN/" ./cmd/mxguard ./cmd/mxload ./cmd/mxguard-testdns ./bench/memwatch) ||
	die "build failed"

log "writing the Postfix instance (installing postfix if missing)"
"$ROOT/bench/postfix-setup.sh" config >"$OUT/postfix-setup.log" 2>&1 ||
	die "postfix setup failed; see $OUT/postfix-setup.log"

# A DNS server on loopback for mxguard's reverse lookups: no names for the
# 127.0.x.y clients (NXDOMAIN), as for most spam sources.
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
# The users both servers know (Postfix's virtual maps list the same):
# user, 2user ... 50user as smtp-source and mxload name several
# recipients, and the fixed names the workloads use.
{
	for u in user legit large idle; do echo "$u@bench.test"; done
	for i in $(seq 2 50); do echo "${i}user@bench.test"; done
} >"$W/mxguard/recipients"
cat >"$W/mxguard/mxguard.toml" <<EOF
hostname = "mxguard.bench.localhost"
listen = ["127.0.0.1:$MX_PORT"]
data_dir = "$W/mxguard/data"
local_domains = ["bench.test"]
trusted_networks = ["127.0.0.1/32"]
resolver = "127.0.0.1:$DNS_PORT"
access_map = "$W/mxguard/access"

[limits]
max_message_size = "25MiB"

[recipients]
file = "$W/mxguard/recipients"
EOF
"$BIN/mxguard" check --config "$W/mxguard/mxguard.toml" >&2 || die "mxguard config rejected"
wait_listen "$DNS_PORT"

# ---------------------------------------------------------------- fsync floor

log "fsync floor (internal/spool benchmarks, -benchtime $BENCHTIME)"
# The spool benchmarks write under TMPDIR; point it at the work directory so
# that they measure the disk the servers write to.
mkdir -p "$W/tmp"
for pattern in 'FsyncFile1KiB$|Commit1KiB$' 'FsyncConcurrent$/goroutines=20$'; do
	(cd "$ROOT" && TMPDIR=$W/tmp go test -run '^$' -benchtime "$BENCHTIME" -bench "$pattern" ./internal/spool/) \
		>>"$OUT/fsync.txt" 2>&1 || die "spool benchmarks failed; see $OUT/fsync.txt"
done
awk '
	/^BenchmarkFsyncFile1KiB/ { print "fsync\tserial\t-\t1\tfsyncs_per_s\t" 1e9 / $3 }
	/^BenchmarkFsyncConcurrent\/goroutines=20/ { print "fsync\tconcurrent20\t-\t1\tfsyncs_per_s\t" 1e9 / $3 }
	/^BenchmarkCommit1KiB/ {
		for (i = 4; i <= NF; i++) {
			if ($i == "msgs/s") print "fsync\tcommit\t-\t1\tmsgs_per_s\t" $(i - 1)
			if ($i == "fsyncs/msg") print "fsync\tcommit\t-\t1\tfsyncs_per_msg\t" $(i - 1)
		}
	}' "$OUT/fsync.txt" >>"$RES"

# ---------------------------------------------------------------- a. durable accept

for run in $(seq "$RUNS_A"); do
	for srv in $(order "$run"); do
		for rcpts in 1 10; do
			if [ "$rcpts" = 1 ]; then n=$A1_N; else n=$A10_N; fi
			log "a. durable: $srv run $run, $rcpts recipient(s), $n messages"
			start_server "$srv"
			f=$OUT/a-$rcpts-$srv-$run.json
			c0=$(cpu_ticks "$srv")
			send_load "$srv" "$f" "$n" 1024 "$rcpts" 20 user@bench.test
			c1=$(cpu_ticks "$srv")
			stop_server "$srv"
			record a "$rcpts" "$srv" "$run" cpu_ms_per_msg "$(awk -v a="$c0" -v b="$c1" -v t="$TICK" -v n="$n" 'BEGIN { print (b - a) * 1000 / t / n }')"
			v=$rcpts
			complete=$(jget "$f" .delivery.complete)
			[ "$complete" = true ] || log "a. $srv run $run: delivery incomplete ($(jget "$f" .delivery.found) files)"
			record a "$v" "$srv" "$run" accepted "$(jget "$f" .accepted)"
			record a "$v" "$srv" "$run" accept_msgs_per_s "$(jget "$f" .messages_per_second)"
			if [ "$complete" = true ]; then
				record a "$v" "$srv" "$run" delivered_msgs_per_s "$(jq -r '.messages / .delivery.seconds' "$f")"
			fi
			record a "$v" "$srv" "$run" session_p50_ms "$(jget "$f" .session_latency.p50_ms)"
			record a "$v" "$srv" "$run" session_p99_ms "$(jget "$f" .session_latency.p99_ms)"
		done
	done
done

# ---------------------------------------------------------------- b. flood

for run in $(seq "$RUNS"); do
	for srv in $(order "$run"); do
		for dialers in $FLOOD_C $FLOOD_C_MOD; do
			log "b. flood: $srv run $run, $dialers dialers from $FLOOD_BIND"
			start_server "$srv"
			port=$(port_of "$srv")
			legit "$port" "$OUT/b-base-$dialers-$srv-$run.json"
			"$BIN/mxload" -mode flood -addr "127.0.0.1:$port" -c "$dialers" -duration 10m \
				-bind "$FLOOD_BIND" -json >"$OUT/b-flood-$dialers-$srv-$run.json" 2>>"$OUT/mxload.log" &
			BG_PID=$!
			sleep 2 # let the flood reach its pace
			c0=$(cpu_ticks "$srv")
			t0=$(now)
			legit "$port" "$OUT/b-legit-$dialers-$srv-$run.json"
			t1=$(now)
			# With SIGINT mxload finishes the connections under way and reports.
			kill -INT "$BG_PID"
			wait "$BG_PID" || true
			BG_PID=
			c1=$(cpu_ticks "$srv")
			stop_server "$srv"
			record b "flood$dialers" "$srv" "$run" cpu_share "$(awk -v a="$c0" -v b="$c1" -v t="$TICK" -v s0="$t0" -v s1="$(now)" 'BEGIN { print (b - a) / t / (s1 - s0) }')"
			fl=$OUT/b-flood-$dialers-$srv-$run.json
			[ -s "$fl" ] || die "no flood result in $fl; see $OUT/mxload.log"
			rej=$(jq -r '[.replies | to_entries[] | select(.key | startswith("2") | not) | .value] | add // 0' "$fl")
			record b "flood$dialers" "$srv" "$run" connections_per_s "$(jget "$fl" .connections_per_second)"
			record b "flood$dialers" "$srv" "$run" rejections_per_s "$(jq -r --argjson r "$rej" '$r / .seconds' "$fl")"
			record b "flood$dialers" "$srv" "$run" greeted "$(jget "$fl" '.replies["220"]')"
			record b "flood$dialers" "$srv" "$run" errors "$(jq -r '[.errors[]] | add // 0' "$fl")"
			record b "flood$dialers" "$srv" "$run" first_reply_p99_ms "$(jget "$fl" .first_reply.p99_ms)"
			record b "flood$dialers" "$srv" "$run" replies "$(jq -c .replies "$fl" | tr -d '"')"
			record b "legit$dialers" "$srv" "$run" base_p99_ms "$(jget "$OUT/b-base-$dialers-$srv-$run.json" .session_latency.p99_ms)"
			record b "legit$dialers" "$srv" "$run" flood_p99_ms "$(jget "$OUT/b-legit-$dialers-$srv-$run.json" .session_latency.p99_ms)"
			record b "legit$dialers" "$srv" "$run" flood_p50_ms "$(jget "$OUT/b-legit-$dialers-$srv-$run.json" .session_latency.p50_ms)"
			record b "legit$dialers" "$srv" "$run" flood_accepted "$(jget "$OUT/b-legit-$dialers-$srv-$run.json" .accepted)"
			record b "legit$dialers" "$srv" "$run" seconds "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')"
		done
	done
done

# ---------------------------------------------------------------- c. idle cost

for run in $(seq "$RUNS"); do
	for srv in $(order "$run"); do
		for state in greet helo; do
			if [ "$srv" = mx ] || [ "$state" = greet ]; then conns=$IDLE_CONNS; else conns=$PF_HELO_CONNS; fi
			log "c. idle: $srv run $run, $conns connections, $state"
			start_server "$srv"
			args=(-mode idle -c 100 -hold "$HOLD" -interval 1s -conns "$conns")
			if [ "$srv" = mx ]; then
				args+=(-addr "127.0.0.1:$MX_PORT" -pid "$MX_PID")
			elif [ "$state" = greet ]; then
				args+=(-addr "127.0.0.1:$PF_PS_PORT" -pids "$PF_IDLE_PROCS_RE")
			else
				args+=(-addr "127.0.0.1:$PF_IDLE_PORT" -pids "$PF_IDLE_PROCS_RE")
			fi
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

for run in $(seq "$RUNS"); do
	for srv in $(order "$run"); do
		for mib in 1 10; do
			if [ "$mib" = 1 ]; then n=$D1_N; else n=$D10_N; fi
			log "d. large: $srv run $run, $n messages of $mib MiB over 4 sessions"
			start_server "$srv"
			if [ "$srv" = mx ]; then procs=$MX_PID; else procs=$PF_ALL_PROCS_RE; fi
			"$BIN/memwatch" -pids "$procs" -interval 50ms >"$OUT/d-$mib-$srv-$run.mem.json" 2>>"$OUT/mxload.log" &
			BG_PID=$!
			f=$OUT/d-$mib-$srv-$run.json
			send_load "$srv" "$f" "$n" $((mib << 20)) 1 4 large@bench.test
			kill -INT "$BG_PID"
			wait "$BG_PID" || true
			BG_PID=
			m=$OUT/d-$mib-$srv-$run.mem.json
			if [ "$srv" = mx ]; then
				record d "$mib" "$srv" "$run" vmhwm_bytes \
					"$(awk '/^VmHWM:/ { print $2 * 1024 }' "/proc/$MX_PID/status")"
			fi
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

# ---------------------------------------------------------------- report

log "done; raw results in $OUT"

report | tee "$OUT/summary.md"
