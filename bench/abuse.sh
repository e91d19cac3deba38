#!/usr/bin/env bash
# abuse.sh measures how mxguard copes with clients that never stop sending
# (issue 7's attack battery): ABUSERS sessions at once, a third each sending
# an endless header line (after DATA), endless DATA or an endless command
# line, against max_message_size = "1MiB", from 127.0.8.1 onwards (untrusted,
# no connection limits set). It prints a markdown table for BENCHMARKS.md.
#
# Usage: bench/abuse.sh [RUNS [ABUSERS]]      (defaults: 3 runs of 2000)
#
# Per run, on a freshly started mxguard: `mxload -mode abuse` (cut, reply,
# octets sent before the cut, time from passing the limit to the close, the
# server's CPU time from /proc/PID/stat), and from mxguard's log the cut-off
# lines by reason and, for the DATA kinds, the octets the server itself read
# (size=). Each figure is the median over the runs, every run in brackets.
#
# Environment:
#   MXBENCH_DIR  work directory [/tmp/mxbench-abuse]; each run's JSON and log stay there
#   REF          build mxguard from this git revision instead of the working
#                tree (mxload always from the working tree), for a before/after
#   CAP          octets each abuser sends at most [67108864]: ends a run
#                against a server that never cuts them
#   MX_PORT, DNS_PORT   [2535 2563]
set -euo pipefail

RUNS=${1:-3}
ABUSERS=${2:-2000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
W=${MXBENCH_DIR:-/tmp/mxbench-abuse}
BIN=$W/bin
CAP=${CAP:-67108864}
MX_PORT=${MX_PORT:-2535}
DNS_PORT=${DNS_PORT:-2563}
OUT=$W/run-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$BIN" "$OUT"

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh" # log, die, wait_listen

MX_PID= DNS_PID=
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
cleanup() {
	set +e
	stop "$MX_PID"
	stop "$DNS_PID"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for p in "$MX_PORT" "$DNS_PORT"; do
	[ -z "$(ss -Hltn "src 127.0.0.1:$p")" ] || die "127.0.0.1:$p is in use; set MX_PORT / DNS_PORT"
done
command -v jq >/dev/null || die "jq is missing (apt-get install jq)"

log "building into $BIN"
(cd "$ROOT" && go build -o "$BIN/" ./cmd/mxload ./cmd/mxguard-testdns) || die "build failed"
if [ -n "${REF:-}" ]; then
	src=$W/src-$REF
	rm -rf "$src" && mkdir -p "$src"
	git -C "$ROOT" archive "$REF" | tar -x -C "$src" || die "cannot export $REF"
	(cd "$src" && go build -o "$BIN/mxguard" ./cmd/mxguard) || die "build of $REF failed"
	VERSION=$(git -C "$ROOT" rev-parse --short "$REF")
else
	(cd "$ROOT" && go build -o "$BIN/" ./cmd/mxguard) || die "build failed"
	VERSION="$(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- . ':!BENCHMARKS.md' || echo +changes)"
fi

# No names for the clients (NXDOMAIN at once), as for most abusers.
printf '$ORIGIN bench.test.\n@\t3600\tIN\tA\t127.0.0.1\n' >"$W/zone"
"$BIN/mxguard-testdns" -zone "$W/zone" -listen "127.0.0.1:$DNS_PORT" >"$OUT/dns.log" 2>&1 &
DNS_PID=$!
wait_listen "$DNS_PORT"
cat >"$W/mxguard.toml" <<EOF
hostname = "mxguard.bench.localhost"
listen = ["127.0.0.1:$MX_PORT"]
data_dir = "$W/data"
local_domains = ["bench.test"]
trusted_networks = ["127.0.0.1/32"]
resolver = "127.0.0.1:$DNS_PORT"

[limits]
max_message_size = "1MiB"

[recipients]
catch_all = true
EOF
ulimit -n "$(ulimit -Hn)"

RES=$OUT/results.tsv
: >"$RES"
record() { printf '%s\t%s\t%s\n' "$@" >>"$RES"; } # RUN METRIC VALUE
for run in $(seq "$RUNS"); do
	rm -rf "$W/data"
	"$BIN/mxguard" serve --config "$W/mxguard.toml" 2>"$OUT/mxguard-$run.log" &
	MX_PID=$!
	wait_listen "$MX_PORT"
	log "run $run: $ABUSERS abusers"
	f=$OUT/abuse-$run.json
	"$BIN/mxload" -mode abuse -addr "127.0.0.1:$MX_PORT" -conns "$ABUSERS" -bind 127.0.8.1-127.0.15.254 \
		-to abuse@bench.test -max-size 1048576 -cap "$CAP" -pid "$MX_PID" -json >"$f" 2>>"$OUT/mxload.log" || die "mxload failed; see $OUT/mxload.log"
	stop "$MX_PID"
	MX_PID=
	l=$OUT/mxguard-$run.log
	record "$run" seconds "$(jq .seconds "$f")"
	record "$run" gb "$(jq '.octets / 1e9' "$f")"
	record "$run" cpu "$(jq '.server_cpu_seconds // "-"' "$f")"
	for k in header data command; do
		record "$run" "$k.clients" "$(jq ".kinds.$k.clients" "$f")"
		record "$run" "$k.cut" "$(jq ".kinds.$k.cut" "$f")"
		record "$run" "$k.sent_p50" "$(jq ".kinds.$k.sent_octets.p50 / 1024" "$f")"
		record "$run" "$k.sent_max" "$(jq ".kinds.$k.sent_octets.max / 1024" "$f")"
		record "$run" "$k.tocut_p50" "$(jq ".kinds.$k.limit_to_close.p50_ms" "$f")"
		record "$run" "$k.tocut_p99" "$(jq ".kinds.$k.limit_to_close.p99_ms" "$f")"
		record "$run" "$k.tocut_max" "$(jq ".kinds.$k.limit_to_close.max_ms" "$f")"
	done
	record "$run" log.too_big "$(grep -c 'reason=too_big' "$l" || true)"
	record "$run" log.line_too_long "$(grep -c 'reason=line_too_long' "$l" || true)"
	record "$run" read_max "$(grep -o 'reason=too_big size=[0-9]*' "$l" | awk -F= '$3 > m { m = $3 } END { print m / 1024 }')"
done

# cell METRIC FORMAT: the median over the runs, every run in brackets.
cell() {
	local vals m
	vals=$(awk -F'\t' -v k="$1" '$2 == k && $3 != "-" { print $3 }' "$RES")
	[ -n "$vals" ] || {
		echo "-"
		return
	}
	m=$(echo "$vals" | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }')
	printf "$2" "$m"
	if [ "$RUNS" -gt 1 ]; then
		printf ' (%s)' "$(echo "$vals" | while read -r v; do printf "$2, " "$v"; done | sed 's/, $//')"
	fi
	echo
}

echo "Machine: $(nproc) cores ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), kernel $(uname -r);" \
	"mxguard $VERSION, $(go version | awk '{ print $3 }'); $RUNS runs of $ABUSERS abusers (a third of each kind), max_message_size 1 MiB;" \
	"client and server on the same 2 cores, shared with other work."
echo
echo "| | endless header line | endless DATA | endless command line |"
echo "|---|---|---|---|"
echo "| cut by the server (of clients) | $(cell header.cut %.0f) of $(cell header.clients %.0f) | $(cell data.cut %.0f) of $(cell data.clients %.0f) | $(cell command.cut %.0f) of $(cell command.clients %.0f) |"
echo "| limit | 1 MiB body | 1 MiB body | 4 KiB line |"
echo "| sent before the cut, p50 KiB | $(cell header.sent_p50 %.0f) | $(cell data.sent_p50 %.0f) | $(cell command.sent_p50 %.0f) |"
echo "| sent before the cut, max KiB | $(cell header.sent_max %.0f) | $(cell data.sent_max %.0f) | $(cell command.sent_max %.0f) |"
echo "| limit to close, p50 ms | $(cell header.tocut_p50 %.1f) | $(cell data.tocut_p50 %.1f) | $(cell command.tocut_p50 %.1f) |"
echo "| limit to close, p99 ms | $(cell header.tocut_p99 %.1f) | $(cell data.tocut_p99 %.1f) | $(cell command.tocut_p99 %.1f) |"
echo "| limit to close, max ms | $(cell header.tocut_max %.1f) | $(cell data.tocut_max %.1f) | $(cell command.tocut_max %.1f) |"
echo
echo "| whole run | figure |"
echo "|---|---|"
echo "| wall time, s | $(cell seconds %.2f) |"
echo "| sent by all abusers, GB | $(cell gb %.2f) |"
echo "| server CPU (user+system), s | $(cell cpu %.2f) |"
echo "| log lines reason=too_big | $(cell log.too_big %.0f) |"
echo "| log lines reason=line_too_long | $(cell log.line_too_long %.0f) |"
echo "| most octets the server read of one body (log size=), KiB | $(cell read_max %.0f) |"
log "raw results in $OUT"
