// Package smtpd is mxguard's SMTP protocol core (RFC 5321 with PIPELINING,
// SIZE, 8BITMIME, ENHANCEDSTATUSCODES, SMTPUTF8 and STARTTLS).
//
// It is our own rather than a wrapper around emersion/go-smtp because the
// defences mxguard exists for live inside the protocol loop, where that
// library has no hooks: the 220 banner must be held back for a per-client
// greeting pause while any byte the client sends early is detected (and
// never fed to the parser); every phase needs its own absolute deadline, set
// once when the wait begins, so a client that trickles one byte at a time
// cannot stretch it; commands ending in a bare LF and DATA containing a bare
// CR or LF must be refused, not passed through, so that no byte sequence can
// smuggle a second message; and a connection waiting out its greeting pause
// must cost almost nothing, so buffers are only allocated once it talks.
// chasquid and mox made the same choice; net/textproto's DotReader is the
// model for the DATA reader here.
//
// The package knows nothing of spools, access maps or limits: the caller
// admits the connection, passes what it decided in ConnInfo, and answers
// MAIL, RCPT and DATA through a Handler.
package smtpd
