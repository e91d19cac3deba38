#!/bin/sh
# postfix-setup.sh builds a private Postfix instance for the mxguard/Postfix
# comparison: its own config, queue and data directories under a work
# directory, listening on 127.0.0.1 only, delivering bench.test into Maildirs,
# relaying relay.test to the smtp-sink on 127.0.0.1:RELAY_SINK_PORT and
# nothing anywhere else. It installs Debian's postfix first when it is missing.
# The system's own instance (/etc/postfix) is read by nothing here and never
# started.
#
# Usage: bench/postfix-setup.sh [start|stop|config]
#   config  write the instance (the default; idempotent, wipes its queue)
#   start   config, then start it
#   stop    stop it
#
# Environment (defaults in brackets):
#   MXBENCH_DIR      work directory [/tmp/mxbench]; the instance is in $MXBENCH_DIR/postfix
#   PF_PORT          plain smtpd, Debian's default limits [2526]: durable, flood, large
#   PF_PS_PORT       postscreen in front of smtpd [2527]: idle clients in the greeting pause
#   PF_IDLE_PORT     smtpd exempt from anvil [2528]: idle clients after HELO
#   PF_IDLE_PROCS    process limit of the idle smtpd services [1100]; Debian's is 100,
#                    and the 101st client would wait unanswered rather than be refused
#   PF_GREET_WAIT    postscreen_greet_wait [120s]: longer than an idle hold, so that
#                    postscreen, not smtpd, holds the idle clients
#   PF_CLIENT_RATE   anvil connections per 60s per client [5], as mxguard's ClientRate
#   RELAY_SINK_PORT  where relay.test goes: smtp-sink on 127.0.0.1 [2540] (bench/run.sh's
#                    workload a2)
set -eu

MXBENCH_DIR=${MXBENCH_DIR:-/tmp/mxbench}
PF=$MXBENCH_DIR/postfix
PF_PORT=${PF_PORT:-2526}
PF_PS_PORT=${PF_PS_PORT:-2527}
PF_IDLE_PORT=${PF_IDLE_PORT:-2528}
PF_IDLE_PROCS=${PF_IDLE_PROCS:-1100}
PF_GREET_WAIT=${PF_GREET_WAIT:-120s}
PF_CLIENT_RATE=${PF_CLIENT_RATE:-5}
RELAY_SINK_PORT=${RELAY_SINK_PORT:-2540}
MAILUSER=nobody

install_postfix() {
	command -v postfix >/dev/null 2>&1 && [ -x /usr/sbin/smtp-source ] && return 0
	echo "postfix-setup: installing Debian's postfix" >&2
	echo "postfix postfix/main_mailer_type select Local only" | debconf-set-selections
	echo "postfix postfix/mailname string localhost" | debconf-set-selections
	# Keep the package's own instance from starting while it installs;
	# a policy-rc.d that is already there is left as it is.
	guard=
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		guard=1
	fi
	tries=0
	until DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix >&2; do
		# Another apt may hold the dpkg lock; wait for it, a bounded time.
		tries=$((tries + 1))
		[ $tries -lt 20 ] || { [ -z "$guard" ] || rm -f /usr/sbin/policy-rc.d; exit 1; }
		[ $tries -gt 1 ] || apt-get update -q >&2 || true
		sleep 15
	done
	[ -z "$guard" ] || rm -f /usr/sbin/policy-rc.d
}

write_config() {
	stop_postfix
	rm -rf "$PF"
	mkdir -p "$PF/etc" "$PF/spool" "$PF/data" "$PF/mail"
	chown postfix "$PF/data"
	chown "$MAILUSER" "$PF/mail"
	uid=$(id -u "$MAILUSER")
	gid=$(id -g "$MAILUSER")

	# Each user of bench.test gets its own Maildir, bench.test/<user>/,
	# as mxguard's <data_dir>/mail/bench.test/<user>/. Postfix refuses $1
	# substitution in mailbox maps, so the users are listed: user, 2user
	# ... 50user as smtp-source and mxload name multiple recipients, and
	# the fixed names the workloads use.
	{
		for u in user legit large idle; do
			printf '%s@bench.test\tbench.test/%s/\n' $u $u
		done
		i=2
		while [ $i -le 50 ]; do
			printf '%suser@bench.test\tbench.test/%suser/\n' $i $i
			i=$((i + 1))
		done
	} >"$PF/etc/virtual_mailbox"
	printf 'relay.test\tsmtp:[127.0.0.1]:%s\n' "$RELAY_SINK_PORT" >"$PF/etc/transport"

	cat >"$PF/etc/main.cf" <<-CF
	# Private benchmark instance written by bench/postfix-setup.sh.
	compatibility_level = 3.6
	queue_directory = $PF/spool
	data_directory = $PF/data
	maillog_file = $PF/postfix.log
	maillog_file_prefixes = $MXBENCH_DIR
	myhostname = postfix.bench.localhost
	mydomain = bench.localhost
	myorigin = \$myhostname
	smtpd_banner = \$myhostname ESMTP

	# Loopback only: every listener in master.cf is 127.0.0.1:PORT too.
	inet_interfaces = 127.0.0.1
	inet_protocols = ipv4
	mynetworks = 127.0.0.1/32

	# bench.test goes into Maildirs, relay.test to the smtp-sink on
	# loopback; nothing is relayed or delivered anywhere else.
	mydestination =
	alias_maps =
	alias_database =
	local_recipient_maps =
	virtual_mailbox_domains = bench.test
	virtual_mailbox_base = $PF/mail
	virtual_mailbox_maps = texthash:$PF/etc/virtual_mailbox
	virtual_uid_maps = static:$uid
	virtual_gid_maps = static:$gid
	virtual_mailbox_limit = 0
	relayhost =
	relay_domains = relay.test
	transport_maps = texthash:$PF/etc/transport
	default_transport = error:no outside delivery in the benchmark
	relay_transport = error:no outside delivery in the benchmark
	smtpd_relay_restrictions = permit_mynetworks reject_unauth_destination
	smtpd_tls_security_level = none
	# No DNS from the benchmark: mxguard asks a DNS server on loopback (and
	# caches), Postfix would ask the system resolver for every connection.
	smtpd_peername_lookup = no
	smtp_tls_security_level = none
	biff = no
	message_size_limit = 26214400

	# The same per-client limit as mxguard's access map (ClientRate: 5 in
	# a 60s window). Loopback is in mynetworks, which anvil exempts by
	# default: only the legitimate client 127.0.0.1 is, as mxguard's
	# trusted_networks = ["127.0.0.1/32"].
	anvil_rate_time_unit = 60s
	smtpd_client_connection_rate_limit = $PF_CLIENT_RATE
	smtpd_client_event_limit_exceptions = 127.0.0.1/32
	CF

	# No chroot (Debian sets its chroot up in an init script we do not
	# run), and no services beyond what local Maildir delivery needs.
	cat >"$PF/etc/master.cf" <<-CF
	# service type  private unpriv  chroot  wakeup  maxproc command
	127.0.0.1:$PF_PORT inet n - n - - smtpd
	127.0.0.1:$PF_PS_PORT inet n - n - 1 postscreen
	  -o postscreen_access_list=
	  -o postscreen_greet_wait=$PF_GREET_WAIT
	  -o postscreen_pre_queue_limit=20000
	  -o postscreen_post_queue_limit=20000
	  -o postscreen_client_connection_count_limit=0
	smtpd pass - - n - $PF_IDLE_PROCS smtpd
	127.0.0.1:$PF_IDLE_PORT inet n - n - $PF_IDLE_PROCS smtpd
	  -o smtpd_client_event_limit_exceptions=127.0.0.0/8
	pickup unix n - n 60 1 pickup
	cleanup unix n - n - 0 cleanup
	qmgr unix n - n 300 1 qmgr
	rewrite unix - - n - - trivial-rewrite
	bounce unix - - n - 0 bounce
	defer unix - - n - 0 bounce
	trace unix - - n - 0 bounce
	verify unix - - n - 1 verify
	flush unix n - n 1000? 0 flush
	proxymap unix - - n - - proxymap
	proxywrite unix - - n - 1 proxymap
	showq unix n - n - - showq
	error unix - - n - - error
	retry unix - - n - - error
	discard unix - - n - - discard
	virtual unix - n n - - virtual
	smtp unix - - n - - smtp
	anvil unix - - n - 1 anvil
	scache unix - - n - 1 scache
	postlog unix-dgram n - n - 1 postlogd
	CF
	postfix -c "$PF/etc" check
}

stop_postfix() {
	[ -f "$PF/etc/main.cf" ] || return 0
	postfix -c "$PF/etc" status >/dev/null 2>&1 || return 0
	postfix -c "$PF/etc" stop
	# master exits a moment after it is told to; wait for its pid file.
	for _ in 1 2 3 4 5 6 7 8 9 10; do
		[ -e "$PF/spool/pid/master.pid" ] || return 0
		postfix -c "$PF/etc" status >/dev/null 2>&1 || return 0
		sleep 1
	done
}

case ${1:-config} in
config)
	install_postfix
	write_config
	;;
start)
	install_postfix
	write_config
	postfix -c "$PF/etc" start
	;;
stop)
	stop_postfix
	;;
*)
	echo "usage: $0 [config|start|stop]" >&2
	exit 2
	;;
esac
