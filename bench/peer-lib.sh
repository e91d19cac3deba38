# peer-lib.sh: what bench/exim-setup.sh and bench/opensmtpd-setup.sh share.
# Sourced, not run.
#
# Debian's exim4, opensmtpd and postfix conflict as packages (each provides
# mail-transport-agent), and other work on this machine needs postfix
# installed. So Exim and OpenSMTPD are never installed: their .deb files are
# fetched with apt-get download and unpacked with dpkg-deb -x under
# $MXBENCH_DIR/peers/pkg/NAME, and each runs in a mount namespace of its
# own (unshare -m), where private copies are bound over the system paths
# the binaries have compiled in: a copy of /etc with their users and
# configuration files added, and for OpenSMTPD /usr/libexec (its helpers),
# its spool, chroot and socket directories. The system's own files are
# never written; the namespace ends with the server's last process.

PEERS=$MXBENCH_DIR/peers

# peer_pkg NAME... unpacks each package NAME (fetched once, kept in
# $PEERS/debs) into $PEERS/pkg/NAME, unless it is there already.
peer_pkg() {
	mkdir -p "$PEERS/debs" "$PEERS/pkg"
	for name in "$@"; do
		[ -e "$PEERS/pkg/$name/.unpacked" ] && continue
		set -- "$PEERS/debs/${name}"_*.deb
		if [ ! -e "$1" ]; then
			echo "peer-lib: fetching $name" >&2
			tries=0
			until (cd "$PEERS/debs" && apt-get download -q "$name" >&2); do
				tries=$((tries + 1))
				[ $tries -lt 3 ] || return 1
				[ $tries -gt 1 ] || apt-get update -q >&2 || true
				sleep 5
			done
			set -- "$PEERS/debs/${name}"_*.deb
		fi
		rm -rf "$PEERS/pkg/$name"
		dpkg-deb -x "$1" "$PEERS/pkg/$name"
		dpkg-deb -f "$1" Version >"$PEERS/pkg/$name/.unpacked"
	done
}

# peer_version NAME prints the Debian version of an unpacked package.
peer_version() { cat "$PEERS/pkg/$1/.unpacked" 2>/dev/null || echo '?'; }

# peer_etc DIR NAME:UID:GID... makes DIR a copy of /etc, for binding over
# /etc inside the namespace, with each NAME added as a system user with a
# group of its own. The binaries read their compiled-in files from there
# (/etc/exim4/exim4.conf, /etc/smtpd.conf, the users they run as).
peer_etc() {
	dir=$1
	shift
	rm -rf "$dir"
	cp -a /etc "$dir"
	for u in "$@"; do
		name=${u%%:*}
		ids=${u#*:}
		grep -q "^$name:" "$dir/passwd" ||
			echo "$name:x:${ids%%:*}:${ids#*:}:bench peer:/nonexistent:/usr/sbin/nologin" >>"$dir/passwd"
		grep -q "^$name:" "$dir/group" || echo "$name:x:${ids#*:}:" >>"$dir/group"
	done
}

# peer_ns BINDS -- COMMAND... runs COMMAND in a new mount namespace after
# binding each SOURCE=TARGET of the space-separated BINDS. unshare and the
# shell exec into COMMAND, so its process id is the caller's $!.
peer_ns() {
	binds=$1
	shift
	[ "$1" = -- ] && shift
	# shellcheck disable=SC2016 # expanded by the inner shell
	exec unshare --mount --propagation private -- sh -c '
		for b in $0; do
			mount --bind "${b%%=*}" "${b#*=}" || exit 1
		done
		exec "$@"' "$binds" "$@"
}

# peer_pids NS prints the process ids of every process in the mount
# namespace NS (as readlink /proc/PID/ns/mnt gives it): the server and all
# it has forked, orphans included, and nothing else.
peer_pids() {
	[ -n "$1" ] || return 0
	for d in /proc/[0-9]*; do
		[ "$(readlink "$d/ns/mnt" 2>/dev/null)" = "$1" ] && echo "${d#/proc/}"
	done
	return 0
}

# peer_ns_of PID prints the mount namespace of process PID.
peer_ns_of() { readlink "/proc/$1/ns/mnt"; }

# peer_start NAME PORT NSFILE LOG BINDS COMMAND... runs COMMAND in the
# background in a namespace with BINDS (peer_ns), its output to LOG, and
# waits up to 5 s until something listens on 127.0.0.1:PORT; then it writes
# the namespace to NSFILE (for peer_stop and peer_pids). If COMMAND ends or
# does not listen in time, it says so naming NAME and LOG, and fails.
peer_start() {
	name=$1 port=$2 nsfile=$3 log=$4 binds=$5
	shift 5
	(peer_ns "$binds" -- "$@" </dev/null >>"$log" 2>&1) &
	pid=$!
	for _ in $(seq 50); do
		if [ -n "$(ss -Hltn "src 127.0.0.1:$port")" ]; then
			peer_ns_of "$pid" >"$nsfile"
			return 0
		fi
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	echo "$name did not start; see $log" >&2
	kill -KILL "$pid" 2>/dev/null || true
	return 1
}

# peer_stop NS stops every process in namespace NS: SIGTERM, then after
# 5 s SIGKILL.
peer_stop() {
	[ -n "$1" ] || return 0
	[ "$1" != "$(peer_ns_of $$)" ] || return 0 # never the caller's own
	all=$(peer_pids "$1")
	[ -n "$all" ] || return 0
	# shellcheck disable=SC2086
	kill -TERM $all 2>/dev/null || true
	for _ in $(seq 50); do
		[ -n "$(peer_pids "$1")" ] || return 0
		sleep 0.1
	done
	# shellcheck disable=SC2046
	kill -KILL $(peer_pids "$1") 2>/dev/null || true
}
