#!/bin/bash
# relaymode.sh: durable intake of mxguard in local (Maildir) and in relay
# mode, for issue 13's "relay-mode accepted messages/s at least equal to
# local mode". Each run starts a fresh mxguard, has mxload send N messages
# of 1 KiB over CONC concurrent sessions (one message a session, as
# run.sh's workload a), and reports mxload's accepted messages/s and
# latencies, the fsyncs per message (the server's fsync histogram count,
# mxguard_fsync_duration_seconds_count, over N: the spool's or the
# Maildir's, and in relay mode also those of retiring delivered messages),
# and in relay mode the rate at which the messages reached the downstream,
# smtp-sink (counted by its -c). Binaries given as NAME=PATH are run in
# turn within each round, so that a change of load on a shared machine
# hits them alike.
#
#   bench/relaymode.sh [-r ROUNDS] [-n N] [-c CONC] [-p] NAME=MXGUARD ...
#
# -p pins as bench/run.sh does: mxguard to core 0, mxload, smtp-sink and the
# DNS server to core 1 (taskset); without it they share every core.
#
# For example, before and after a change:
#
#   git worktree add /tmp/before <rev> && (cd /tmp/before && go build -o /tmp/mxguard-before ./cmd/mxguard)
#   go build -o /tmp/mxguard-after ./cmd/mxguard
#   bench/relaymode.sh -r 3 before=/tmp/mxguard-before after=/tmp/mxguard-after
#
# Needs smtp-sink (Debian's postfix package), curl and python3. Everything
# listens on loopback ports the kernel picked free; the work directory is
# removed at the end.
set -euo pipefail
ROUNDS=3 N=10000 CONC=50 SRV=() LOAD=()
while getopts r:n:c:p o; do
	case $o in
	r) ROUNDS=$OPTARG ;;
	n) N=$OPTARG ;;
	c) CONC=$OPTARG ;;
	p) SRV=(taskset -c 0) LOAD=(taskset -c 1) ;;
	*) exit 2 ;;
	esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || { echo "usage: $0 [-r ROUNDS] [-n N] [-c CONC] [-p] NAME=MXGUARD ..." >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
W=$(mktemp -d)
chmod 755 "$W" # smtp-sink runs as nobody
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$W"' EXIT
(cd "$ROOT" && go build -o "$W/bin/" ./cmd/mxload ./cmd/mxguard-testdns)

free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
waitport() { for _ in $(seq 200); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
DNS=$(free) MX=$(free) SINK=$(free) ADMIN=$(free)
printf '$ORIGIN bench.test.\n@\t3600\tIN\tA\t127.0.0.1\n' >"$W/zone"
"${LOAD[@]}" "$W/bin/mxguard-testdns" -zone "$W/zone" -listen "127.0.0.1:$DNS" >"$W/dns.log" 2>&1 &
pids+=($!)
"${LOAD[@]}" /usr/sbin/smtp-sink -c -u nobody "inet:127.0.0.1:$SINK" 1024 >"$W/sink.out" 2>"$W/sink.err" &
pids+=($!)
waitport "$DNS" && waitport "$SINK" || { echo "DNS server or smtp-sink did not start" >&2; exit 1; }
echo user@bench.test >"$W/recipients"
sinkmsgs() { tr '\r' '\n' <"$W/sink.out" | sed -n 's/.*mesg=\([0-9]*\).*/\1/p' | tail -1; }

echo "# $(date -u +%FT%TZ) N=$N sessions=$CONC size=1024 msgs-per-conn=1 cores=$(nproc) pinned=${SRV[*]:+server on 0, load on 1}"
for round in $(seq "$ROUNDS"); do
	for arg in "$@"; do
		name=${arg%%=*} bin=${arg#*=}
		for mode in local relay; do
			rm -rf "$W/data"
			{
				echo "hostname = \"mxguard.bench.localhost\""
				echo "listen = [\"127.0.0.1:$MX\"]"
				echo "data_dir = \"$W/data\""
				echo "local_domains = [\"bench.test\"]"
				echo "trusted_networks = [\"127.0.0.1/32\"]"
				echo "resolver = \"127.0.0.1:$DNS\""
				echo "[recipients]"
				echo "file = \"$W/recipients\""
				echo "[admin]"
				echo "listen = \"127.0.0.1:$ADMIN\""
				if [ "$mode" = relay ]; then
					echo "[delivery]"
					echo "relay = \"smtp://127.0.0.1:$SINK\""
				fi
			} >"$W/mxguard.toml"
			"${SRV[@]}" "$bin" serve --config "$W/mxguard.toml" >"$W/mxguard.log" 2>&1 &
			mx=$!
			waitport "$MX" || { echo "mxguard did not start:" >&2; cat "$W/mxguard.log" >&2; exit 1; }
			sunk=$(sinkmsgs)
			sunk=${sunk:-0}
			t0=$(date +%s.%N)
			"${LOAD[@]}" "$W/bin/mxload" -addr "127.0.0.1:$MX" -c "$CONC" -n "$N" -size 1024 -rcpts 1 -msgs-per-conn 1 \
				-from load@client.test -to user@bench.test -json >"$W/r.json" 2>>"$W/mxload.log"
			delivered=
			if [ "$mode" = relay ]; then
				for _ in $(seq 2400); do
					m=$(sinkmsgs)
					[ $((${m:-0} - sunk)) -ge "$N" ] && break
					sleep 0.05
				done
				delivered=$(python3 -c "import time; print('%.0f' % ($N / (time.time() - $t0)))")
			fi
			fsyncs=$(curl -s "http://127.0.0.1:$ADMIN/metrics" | awk '/^mxguard_fsync_duration_seconds_count/ {print $2}')
			kill -TERM "$mx"
			wait "$mx" || true
			python3 - "$W/r.json" "$round" "$name" "$mode" "${fsyncs:-0}" "$N" "$delivered" "$(cut -d' ' -f1 /proc/loadavg)" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
rnd, name, mode, fsyncs, n, delivered, load = sys.argv[2:]
lat = r["message_latency"]
line = (f"round={rnd} mxguard={name} mode={mode} load={load} accepted={r['accepted']}/{r['messages']} "
        f"accepted_msgs_per_s={r['messages_per_second']:.0f} p50_ms={lat['p50_ms']:.1f} p99_ms={lat['p99_ms']:.1f} "
        f"fsyncs_per_msg={float(fsyncs) / int(n):.3f}")
if delivered:
    line += f" delivered_msgs_per_s={delivered}"
print(line)
PY
		done
	done
done
