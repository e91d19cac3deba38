# lib.sh: what bench/run.sh, bench/abuse.sh and bench/fleet.sh share.
# Sourced, not run (bash).

# log writes a line with the time to stderr.
log() { printf '%s %s\n' "$(date -u +%T)" "$*" >&2; }

# die logs its words after the script's name and ends the script.
die() {
	log "${0##*/}: $*"
	exit 1
}

# wait_listen waits (10 s at most) until something listens on
# 127.0.0.1:$1, or dies.
wait_listen() {
	for _ in $(seq 100); do
		[ -z "$(ss -Hltn "src 127.0.0.1:$1")" ] || return 0
		sleep 0.1
	done
	die "nothing listens on 127.0.0.1:$1"
}
