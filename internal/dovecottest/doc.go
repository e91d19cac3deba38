// Package dovecottest runs a REAL, throw-away Dovecot LMTP server for
// tests: a downstream that knows its users, so that a test of mxguard's
// recipient verification (MAIL FROM:<>, RCPT TO, RSET on a kept-open
// connection) meets Dovecot's own answers, "250 2.1.5 OK" for a user it
// has and "550 5.1.1 <x> User doesn't exist: x" for one it has not.
//
// # What runs
//
// Start writes a dovecot.conf of its own and runs
//
//	/usr/sbin/dovecot -F -c <dir>/dovecot.conf
//
// in its own process group, as a child of the test, and waits until both
// of its LMTP listeners greet (bounded by a timeout, never a sleep). When
// the test ends the whole process group is killed (SIGKILL: the instance
// holds nothing worth a graceful shutdown, and Dovecot's own shutdown takes
// about a second) and Stop waits until none of its processes is left.
//
// # Why each setting is there
//
//   - A directory of its own, from os.MkdirTemp and removed when the test
//     ends, holds it all: dovecot.conf, users, the log, state, mail. It is
//     not t.TempDir, whose path holds the test's name: a subtest's "#01"
//     would start a comment in dovecot.conf, and a long name would leave no
//     room in the 108 bytes of a unix socket's path.
//   - base_dir = <dir>/run: the sockets (about 30; the longest is
//     replication-notify-fifo) and master.pid.
//   - state_dir, log_path: in <dir>, so /var/lib/dovecot and syslog are
//     never touched; there is no syslog daemon here anyway. Server.Log
//     returns the log. -c makes Dovecot read no other config file:
//     /etc/dovecot is not read.
//   - instance_name: names the processes (dovecottest/lmtp ...) apart
//     from a system Dovecot.
//   - protocols = lmtp: no imap, pop3 or submission service is started, so
//     nothing binds 143, 993, 110, 995 or 587. listen = 127.0.0.1 keeps
//     any listener that is left on loopback; the package's test checks
//     that the instance listens on Addr and on nothing else.
//   - service lmtp: an inet_listener on 127.0.0.1:<free port> (Server.Addr,
//     for relay = "lmtp://ADDR") and the unix_listener lmtp in base_dir
//     (Server.Socket, for "lmtp+unix://PATH"). The port is picked by the
//     kernel and released before Dovecot binds it; if another process takes
//     it in between, Start tries again with another.
//   - ssl = no: no certificate is read, none is needed on loopback.
//   - default_internal_user = dovecot, default_login_user = dovenull: the
//     unprivileged users Debian's dovecot-core creates for these two roles
//     (Dovecot refuses to start if they do not exist).
//   - passdb and userdb passwd-file: the test's users, one line each, uid
//     and gid of nobody, home <dir>/mail/<user>. The userdb is what LMTP
//     asks at RCPT; the passdb is there because Dovecot's auth process
//     stops at once without one ("No passdbs specified"), and its password
//     "{CRYPT}*" matches nothing (no login service runs anyway).
//   - first_valid_uid = last_valid_uid = nobody's uid: mail is written as
//     nobody and as nobody only; Dovecot refuses to deliver as any other
//     uid, root included.
//   - mail_location = maildir:~/Maildir: each user's mail is a Maildir
//     under its home, created beforehand and owned by nobody. LMTP writes a
//     message before it answers DATA, so Messages sees it at once.
//   - hostname: a fixed name for the greeting and LHLO reply.
//
// Dovecot needs root here: it starts as root and delivers as nobody.
// Without /usr/sbin/dovecot or /usr/lib/dovecot/lmtp the test fails, naming
// the Debian package to install (dovecot-lmtpd, which pulls dovecot-core)
// rather than quietly testing nothing.
package dovecottest
