// Package postfixtest runs a REAL, throw-away Postfix for tests: an SMTP
// downstream that knows its users, so that a test of mxguard's recipient
// verification (MAIL FROM:<>, RCPT TO, RSET on a kept-open connection)
// meets Postfix's own answers, "250 2.1.5 Ok" for a user it has and
// "550 5.1.1 <x@example.test>: Recipient address rejected: User unknown in
// virtual mailbox table" for one it has not.
//
// # What runs
//
// Start writes a main.cf and a master.cf of its own in a directory of its
// own and runs
//
//	postfix -c <dir>/etc start
//
// which checks the instance (postfix-script check-fatal, check-warn: it
// creates the queue directories), starts its master daemon and returns
// once the master has bound its listener (master -w). Start then waits,
// bounded, until smtpd greets on Addr. When the test ends (or at Stop)
// it runs postfix -c <dir>/etc stop and waits until no process of the
// master's session is left, killing what remains after a bound. A start
// that fails fails the test with postfix's output, the maillog, and what
// postfix check says on a terminal: an error the postfix command finds
// before it knows where to log (a bad parameter in Options.Main) goes to
// its stderr if that is a terminal, and nowhere otherwise.
// The system's own instance (/etc/postfix, /var/spool/postfix) is never
// started, stopped or written; Postfix reads only its postfix-files list
// from /etc/postfix (meta_directory) to check the new instance.
//
// # Why each setting is there
//
//   - config_directory (<dir>/etc), queue_directory, data_directory,
//     maillog_file in a directory of its own from os.MkdirTemp, removed when
//     the test ends: two instances run at once, each with its own queue,
//     locks and log. Not t.TempDir, whose path holds the test's name: a
//     subtest named "a,b" or "$x" would break main.cf (a list, an
//     expansion). The data directory is owned by the postfix user, as
//     Postfix requires. There is no syslog daemon here;
//     maillog_file_prefixes must admit the log's path, Postfix refuses one
//     outside them. Server.Maillog returns it; a failing test shows it.
//     The files written are dated a minute back: Postfix reads a file
//     modified in the last second again and again until it has settled,
//     which cost about 2 s at each start.
//   - master.cf: one smtpd on 127.0.0.1:<free port> (Server.Addr) and only
//     the services delivery needs (pickup, cleanup, qmgr, trivial-rewrite,
//     bounce, error, virtual, anvil, postlogd ...), none of them chrooted
//     (Debian sets its chroot up in an init script that is not run) and no
//     postscreen. The port is picked by the kernel and released before
//     Postfix binds it; if another process takes it in between, Start tries
//     again with another.
//   - inet_interfaces = 127.0.0.1, inet_protocols = ipv4: nothing listens
//     anywhere but loopback; the package's test checks that the instance
//     listens on Addr and on nothing else (not 25, not 587).
//   - virtual_mailbox_domains = Options.Domains, virtual_mailbox_maps =
//     texthash:<dir>/etc/virtual_mailbox (texthash needs no postmap step):
//     Options.Users are the only valid recipients. smtpd rejects every
//     other address of those domains at RCPT
//     (smtpd_reject_unlisted_recipient, on by default) with
//     unknown_virtual_mailbox_reject_code, 550.
//   - mydestination, local_recipient_maps, alias_maps empty: no local(8)
//     delivery and no /etc/aliases. relayhost empty and default_transport,
//     relay_transport = error: nothing ever leaves the instance.
//   - smtpd_relay_restrictions = reject_unauth_destination: another domain
//     gets 554 5.7.1 Relay access denied, from loopback too. mynetworks =
//     127.0.0.0/8 is set so that Postfix does not work it out from the
//     interfaces, but no restriction permits it, and
//     smtpd_client_event_limit_exceptions is empty: a client on loopback is
//     treated as any client on the Internet, with no bypass of the
//     recipient check or of anvil's limits.
//   - virtual_mailbox_base = <dir>/mail, virtual_uid_maps and
//     virtual_gid_maps = static: nobody: virtual(8) delivers each user to
//     the Maildir <dir>/mail/<domain>/<user>/, as nobody.
//   - smtpd_peername_lookup = no: no DNS lookup of the client (the client
//     shows as unknown[127.0.0.1] in the maillog).
//   - smtpd_tls_security_level, smtp_tls_security_level = none, biff = no:
//     no certificate, no comsat.
//   - myhostname: a fixed name for the greeting, with no lookup of the
//     machine's own name.
//   - compatibility_level = 3.6: today's defaults, without the warnings
//     about backwards-compatible ones.
//
// Options.Main adds or overrides main.cf parameters, for a test that
// wants Postfix to answer otherwise (unknown_virtual_mailbox_reject_code =
// 450, say).
//
// Delivery is asynchronous: smtpd answers DATA once the message is queued,
// and virtual(8) writes it a moment later; WaitMessages waits for it.
//
// Postfix must be started as root. Without /usr/sbin/postfix the test
// fails, naming the Debian package to install (postfix) rather than
// quietly testing nothing.
package postfixtest
