#!/bin/sh
# opensmtpd-setup.sh builds a private OpenSMTPD instance (Debian's opensmtpd)
# for the benchmarks: its own configuration, queue and Maildirs under a work
# directory, listening on 127.0.0.1 only, delivering bench.test into Maildirs,
# relaying relay.test to the smtp-sink on 127.0.0.1:RELAY_SINK_PORT and
# nothing anywhere else. OpenSMTPD is not installed (it conflicts with postfix
# as a Debian package): see bench/peer-lib.sh.
#
# Usage: bench/opensmtpd-setup.sh [config|start|stop|pids]
#   config  fetch and unpack the package if needed, write the instance
#           (idempotent, wipes its queue and Maildirs)
#   start   config, then start smtpd -d in its namespace
#   stop    stop it and wait until every process of it has exited
#   pids    print the process ids of the running instance, one a line
#
# Environment (defaults in brackets):
#   MXBENCH_DIR   work directory [/tmp/mxbench]; the instance is in $MXBENCH_DIR/opensmtpd
#   OS_PORT       listener with the flood filter [2534]: durable, flood, large
#   OS_IDLE_PORT  listener without it [2535]: idle
#   OS_FLOOD_NET  source addresses refused at connect [127.0.1.0/24]: OpenSMTPD
#                 has no per-client rate limit, so the flood's sources are
#                 refused outright by a builtin connect filter, the nearest it has
#   DNS_PORT      the DNS server on 127.0.0.1 that OpenSMTPD asks for each
#                 client's name (it has no way not to ask) [2553]: bench/run.sh
#                 runs mxguard-testdns there; without one each session waits
#                 for the lookup to time out
#   RELAY_SINK_PORT where relay.test goes: smtp-sink on 127.0.0.1 [2540] (bench/run.sh's
#                 workload a2)
set -eu

MXBENCH_DIR=${MXBENCH_DIR:-/tmp/mxbench}
OS=$MXBENCH_DIR/opensmtpd
OS_PORT=${OS_PORT:-2534}
OS_IDLE_PORT=${OS_IDLE_PORT:-2535}
OS_FLOOD_NET=${OS_FLOOD_NET:-127.0.1.0/24}
DNS_PORT=${DNS_PORT:-2553}
RELAY_SINK_PORT=${RELAY_SINK_PORT:-2540}
# OpenSMTPD's compiled-in users, opensmtpd and opensmtpq (privilege
# separation, queue), and the one that owns the Maildirs (with a home,
# which deliveries chdir to). They exist only in the namespace's
# /etc/passwd.
SMTPD_UID=64991
SMTPQ_UID=64992
MAIL_UID=64993

. "$(dirname "$0")/peer-lib.sh"
PKG=$PEERS/pkg/opensmtpd

write_config() {
	stop_opensmtpd
	peer_pkg opensmtpd
	rm -rf "$OS"
	mkdir -p "$OS/etc" "$OS/spool" "$OS/run" "$OS/varlib/opensmtpd/empty" "$OS/mail"
	peer_etc "$OS/root-etc" "opensmtpd:$SMTPD_UID:$SMTPD_UID" "opensmtpq:$SMTPQ_UID:$SMTPQ_UID"
	echo "_benchmail:x:$MAIL_UID:$MAIL_UID:bench peer:$OS/mail:/usr/sbin/nologin" >>"$OS/root-etc/passwd"
	echo "_benchmail:x:$MAIL_UID:" >>"$OS/root-etc/group"
	# Its resolver (the bundled libasr) asks the loopback DNS server only.
	printf 'nameserver [127.0.0.1]:%s\nlookup file bind\n' "$DNS_PORT" >"$OS/root-etc/resolv.conf"
	chown "$MAIL_UID:$MAIL_UID" "$OS/mail"
	# The users of bench.test, as the other servers know them; and each
	# mapped to the one system user that delivers for all of them.
	{
		for u in user legit large idle; do echo "$u@bench.test"; done
		i=2
		while [ $i -le 50 ]; do
			echo "${i}user@bench.test"
			i=$((i + 1))
		done
	} >"$OS/etc/rcpts"
	sed 's/$/ _benchmail/' "$OS/etc/rcpts" >"$OS/etc/vusers"

	cat >"$OS/root-etc/smtpd.conf" <<-CF
	# Private benchmark instance written by bench/opensmtpd-setup.sh.
	table rcpts file:$OS/etc/rcpts
	table vusers file:$OS/etc/vusers
	table floodnet { $OS_FLOOD_NET }

	# No per-client connection rate limit exists: the flood's sources are
	# refused at connect.
	filter "flood" phase connect match src <floodnet> disconnect "421 4.7.0 too many connections"

	smtp max-message-size 25M
	# Loopback only.
	listen on 127.0.0.1 port $OS_PORT hostname opensmtpd.bench.localhost filter "flood"
	listen on 127.0.0.1 port $OS_IDLE_PORT hostname opensmtpd.bench.localhost

	action "bench" maildir "$OS/mail/bench.test/%{rcpt.user}" virtual <vusers>
	match from any for rcpt-to <rcpts> action "bench"
	# relay.test to the smtp-sink on loopback, from the load client only.
	action "sink" relay host smtp://127.0.0.1:$RELAY_SINK_PORT
	match from src 127.0.0.1 for domain relay.test action "sink"
	CF
	ln -s "$OS/root-etc/smtpd.conf" "$OS/etc/smtpd.conf"
	(peer_ns "$BINDS" -- "$SMTPD" -n -f /etc/smtpd.conf) >/dev/null
}

# The namespace: the copy of /etc, and private directories over the paths
# smtpd has compiled in (its helpers, queue, chroot and control socket).
BINDS="$OS/root-etc=/etc $PKG/usr/libexec=/usr/libexec $OS/spool=/var/spool $OS/varlib=/var/lib $OS/run=/run"
SMTPD=$PKG/usr/sbin/smtpd

start_opensmtpd() {
	write_config
	# Each connection is a descriptor in one process: raise the limit.
	ulimit -n "$(ulimit -Hn)"
	peer_start "opensmtpd-setup: smtpd" "$OS_PORT" "$OS/ns" "$OS/smtpd.log" "$BINDS" "$SMTPD" -d -f /etc/smtpd.conf
}

ns() { cat "$OS/ns" 2>/dev/null || true; }

stop_opensmtpd() {
	peer_stop "$(ns)"
	rm -f "$OS/ns"
}

case ${1:-config} in
config) write_config ;;
start) start_opensmtpd ;;
stop) stop_opensmtpd ;;
pids) peer_pids "$(ns)" ;;
*)
	echo "usage: $0 [config|start|stop|pids]" >&2
	exit 2
	;;
esac
