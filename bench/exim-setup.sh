#!/bin/sh
# exim-setup.sh builds a private Exim 4 instance (Debian's exim4-daemon-light)
# for the benchmarks: its own configuration, spool, logs and Maildirs under a
# work directory, listening on 127.0.0.1 only, delivering bench.test into
# Maildirs, relaying relay.test to the smtp-sink on 127.0.0.1:RELAY_SINK_PORT
# and nothing anywhere else. Exim is not installed (it conflicts with
# postfix as a Debian package): see bench/peer-lib.sh.
#
# Usage: bench/exim-setup.sh [config|start|stop|pids]
#   config  fetch and unpack the package if needed, write the instance
#           (idempotent, wipes its spool and Maildirs)
#   start   config, then start the daemon (exim -bdf) in its namespace
#   stop    stop it and wait until every process of it has exited
#   pids    print the process ids of the running instance, one a line
#
# Environment (defaults in brackets):
#   MXBENCH_DIR      work directory [/tmp/mxbench]; the instance is in $MXBENCH_DIR/exim
#   EX_PORT          plain listener [2530]: durable, flood, large
#   EX_PS_PORT       clients from 127.0.2.0/23 wait EX_GREET_WAIT before the
#                    greeting (a connect ACL delay) [2531]: idle in the greeting pause
#   EX_IDLE_PORT     exempt from the rate limit [2532]: idle after EHLO
#   EX_PROCS         smtp_accept_max: connections at once [1100]; Exim forks one
#                    process per connection
#   EX_GREET_WAIT    the greeting pause [120s]
#   EX_CLIENT_RATE   connections per 60s per client [5], as mxguard's ClientRate:
#                    a ratelimit ACL at connect (a smoothed rate, not a count in a window)
#   EX_PER_HOST      smtp_accept_max_per_host [5]: connections at once per client,
#                    except the legitimate and idle clients
#   RELAY_SINK_PORT  where relay.test goes: smtp-sink on 127.0.0.1 [2540] (bench/run.sh's
#                    workload a2)
set -eu

MXBENCH_DIR=${MXBENCH_DIR:-/tmp/mxbench}
EX=$MXBENCH_DIR/exim
EX_PORT=${EX_PORT:-2530}
EX_PS_PORT=${EX_PS_PORT:-2531}
EX_IDLE_PORT=${EX_IDLE_PORT:-2532}
EX_PROCS=${EX_PROCS:-1100}
EX_GREET_WAIT=${EX_GREET_WAIT:-120s}
EX_CLIENT_RATE=${EX_CLIENT_RATE:-5}
EX_PER_HOST=${EX_PER_HOST:-5}
RELAY_SINK_PORT=${RELAY_SINK_PORT:-2540}
# Exim's compiled-in user, who owns the spool and the Maildirs (deliveries
# run as it, so that they need no root: under strace, which the fsync
# census uses, a setuid exec gains nothing); it exists only in the
# namespace's /etc/passwd.
EXIM_UID=64990

. "$(dirname "$0")/peer-lib.sh"
PKG=$PEERS/pkg
EXIM=$PKG/exim4-daemon-light/usr/sbin/exim4

write_config() {
	stop_exim
	# libidn12 is the one library exim4 needs that this system lacks.
	peer_pkg exim4-daemon-light libidn12
	rm -rf "$EX"
	mkdir -p "$EX/etc" "$EX/spool" "$EX/log" "$EX/mail"
	# The namespace's /etc: Exim's compiled-in user, its configuration in
	# the compiled-in place (with -C, Exim would give up root when it
	# re-executes itself to deliver, and could not deliver as nobody), and
	# a loader cache that finds the unpacked libidn12 (LD_LIBRARY_PATH
	# would not reach the deliveries: Exim purges the environment).
	peer_etc "$EX/root-etc" "Debian-exim:$EXIM_UID:$EXIM_UID"
	mkdir -p "$EX/root-etc/exim4"
	echo "$PKG/libidn12/usr/lib/x86_64-linux-gnu" >>"$EX/root-etc/ld.so.conf"
	ldconfig -X -C "$EX/root-etc/ld.so.cache" -f "$EX/root-etc/ld.so.conf"
	chown "$EXIM_UID:$EXIM_UID" "$EX/spool" "$EX/log"
	chown "$EXIM_UID:$EXIM_UID" "$EX/mail"
	# The users of bench.test, as the other servers know them; the value
	# (the same name) is what names the Maildir, since Exim will not build
	# a path from what the client sent.
	{
		for u in user legit large idle; do echo "$u: $u"; done
		i=2
		while [ $i -le 50 ]; do
			echo "${i}user: ${i}user"
			i=$((i + 1))
		done
	} >"$EX/etc/users"

	cat >"$EX/root-etc/exim4/exim4.conf" <<-CF
	# Private benchmark instance written by bench/exim-setup.sh.
	primary_hostname = exim.bench.localhost
	keep_environment =
	exim_path = $EXIM
	spool_directory = $EX/spool
	log_file_path = $EX/log/%slog
	pid_file_path = $EX/exim.pid

	# Loopback only.
	local_interfaces = <; 127.0.0.1.$EX_PORT ; 127.0.0.1.$EX_PS_PORT ; 127.0.0.1.$EX_IDLE_PORT
	disable_ipv6 = true
	# No DNS and no ident from the benchmark (as Postfix's
	# smtpd_peername_lookup = no).
	host_lookup =
	rfc1413_hosts =
	rfc1413_query_timeout = 0s
	tls_advertise_hosts =

	domainlist local_domains = bench.test
	domainlist relay_to_domains = relay.test
	hostlist trusted = 127.0.0.1
	hostlist idle = 127.0.2.0/23 : 127.0.4.0/23

	# Exim's default of 20 connections at once (and a listen backlog of
	# 20) would refuse most of any load; Postfix's idle smtpd has 1100.
	smtp_accept_max = $EX_PROCS
	smtp_connect_backlog = 4096
	smtp_accept_max_per_host = \${if match_ip{\$sender_host_address}{+trusted : +idle}{0}{$EX_PER_HOST}}
	smtp_accept_queue_per_connection = 0
	message_size_limit = 25M

	acl_smtp_connect = acl_connect
	acl_smtp_rcpt = acl_rcpt

	begin acl

	acl_connect:
	  accept hosts = +trusted
	  accept condition = \${if eq{\$received_port}{$EX_IDLE_PORT}}
	  accept condition = \${if eq{\$received_port}{$EX_PS_PORT}}
	         delay = $EX_GREET_WAIT
	  deny   ratelimit = $EX_CLIENT_RATE / 60s / strict / per_conn / \$sender_host_address
	         message = too many connections from \$sender_host_address
	  accept

	acl_rcpt:
	  accept domains = +local_domains
	         local_parts = lsearch;$EX/etc/users
	  deny   domains = +local_domains
	         message = unknown user
	  accept domains = +relay_to_domains
	         hosts = +trusted
	  deny   message = relay not permitted

	begin routers

	bench_maildir:
	  driver = accept
	  domains = +local_domains
	  local_parts = lsearch;$EX/etc/users
	  transport = maildir

	# relay.test to the smtp-sink on loopback; self = send and
	# allow_localhost, since 127.0.0.1 is one of Exim's own addresses.
	bench_relay:
	  driver = manualroute
	  domains = +relay_to_domains
	  route_list = * 127.0.0.1
	  self = send
	  transport = sink_smtp

	begin transports

	sink_smtp:
	  driver = smtp
	  port = $RELAY_SINK_PORT
	  allow_localhost

	maildir:
	  driver = appendfile
	  directory = $EX/mail/bench.test/\$local_part_data/
	  maildir_format
	  create_directory
	  delivery_date_add
	  envelope_to_add
	  return_path_add
	  user = Debian-exim
	  mode = 0600

	begin retry
	*  *  F,2h,15m
	CF
	ln -s "$EX/root-etc/exim4/exim4.conf" "$EX/etc/exim4.conf"
	run_exim -bV >/dev/null
}

BINDS="$EX/root-etc=/etc"

# run_exim ARGS... runs exim4 in its namespace, in the foreground.
run_exim() { (peer_ns "$BINDS" -- "$EXIM" "$@"); }

start_exim() {
	write_config
	# -bdf: the daemon stays in the foreground, so its process is the one
	# peer_start watches.
	peer_start "exim-setup: the daemon" "$EX_PORT" "$EX/ns" "$EX/log/stdout" "$BINDS" "$EXIM" -bdf
}

ns() { cat "$EX/ns" 2>/dev/null || true; }

stop_exim() {
	peer_stop "$(ns)"
	rm -f "$EX/ns"
}

case ${1:-config} in
config) write_config ;;
start) start_exim ;;
stop) stop_exim ;;
pids) peer_pids "$(ns)" ;;
*)
	echo "usage: $0 [config|start|stop|pids]" >&2
	exit 2
	;;
esac
