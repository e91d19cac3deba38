// Package deliver takes messages out of mxguard's spool and hands them on:
// into Maildir directories on this host, or to a downstream MTA over SMTP or
// LMTP. It retries temporary failures with exponential back-off and, when a
// recipient fails for good or the message outlives the queue lifetime,
// returns an RFC 3464 delivery status notification to the sender.
//
// The spool is the only record of what is left to do. As soon as an
// attempt has decided every recipient it tried (for a relay: the moment the
// downstream's final reply is read), its outcome goes into the spool before
// anything else happens: the message is removed when no recipient is left,
// otherwise the recipients now done are saved with Spool.Update. QUIT, the
// log lines and bounces come after. A restart resumes where the last run
// stopped.
//
// Relayed mail is therefore delivered at least once, not exactly once. A
// crash after the downstream has accepted a message (its 250 to the final
// dot) and before that record is durable (for a message in the spool's
// log, a done record and one fdatasync of the log; for one in a file of its
// own, one fsync of the spool directory; either shared through a group
// commit) hands the message to the downstream
// again after the restart. Only transactions in flight at the crash can be
// in that window, so a crash repeats at most one transaction per delivery
// worker. SMTP has no way to close the window: a client cannot tell the
// server that it saw the 250, so every SMTP client has one (RFC 1047). For
// the same reason a delivery whose final reply never arrives (connection
// lost or timed out after the final dot) is tried again and may arrive
// twice, as may one whose outcome the spool fails to record (an I/O error,
// logged as such). Nothing accepted is lost in any of these cases. Bounces
// have a window of their own, whatever the Deliverer: a DSN is committed
// before its recipients are marked done, so a crash in between sends it
// twice; a worker is in one window at a time, so the bound per crash
// holds for both together.
//
// Maildir delivery is exactly once: its file names are derived from the
// spool ID and the recipient's index, so a crash between the Maildir rename
// and the spool update is noticed on the next attempt and causes no
// duplicate.
//
// Bounces are ordinary spooled messages with the null sender; they take the
// same path as any other message and are never bounced themselves.
//
// One Queue has one Deliverer, and every message, bounces included, goes
// through it: a Maildir when no relay is configured (recipients outside the
// local domains then fail, as there is nowhere to take them), a Relay when
// one is. With a relay, a bounce to a local sender goes to the relay too:
// the mailboxes live downstream, not in mxguard's data directory.
//
// With a relay, a Prober answers the question the queue would otherwise
// answer days later with a bounce: will the downstream take mail for this
// recipient? It asks at RCPT time, over the same client code as Relay, so
// that an unknown recipient is refused in the session and no bounce goes
// to a forged sender.
package deliver

import (
	"context"
	"io"
	"strconv"

	"github.com/mxguard/mxguard/internal/spool"
)

// A Deliverer hands one message to its destination for some of its
// recipients.
//
// rcpts holds indices into env.Rcpts; the returned slice has one Result per
// element of rcpts, in the same order. body opens a fresh reader over the
// message (CRLF line endings, no dot-stuffing) each time it is called, so an
// implementation may read the body more than once. Deliver must honour ctx:
// when it ends, recipients not yet decided are reported as Deferred.
//
// decided, unless nil, may be called once, with the results Deliver is
// about to return, as soon as every recipient is decided and before
// anything else: for a relay, right after the downstream's final reply is
// read, before QUIT and closing. The Queue records the outcome in the
// spool within that call, which is what keeps the time in which a crash
// makes a delivered message a duplicate as short as a spool fsync (see
// Queue). A Deliverer that does not call it is settled after it returns.
type Deliverer interface {
	Deliver(ctx context.Context, env *spool.Envelope, body func() (io.ReadCloser, error), rcpts []int, decided func([]Result)) []Result
}

// Status is what became of one recipient in one delivery attempt.
type Status int

// The zero Status is Deferred, so that a Result left unset never counts as
// delivered or bounced.
const (
	// Deferred is a temporary failure (a 4xx reply, a broken connection, a
	// local I/O error): the recipient is tried again later.
	Deferred Status = iota
	// Delivered means the destination took responsibility for the message.
	Delivered
	// Failed is a permanent failure (a 5xx reply, an unusable address): the
	// recipient is bounced to the sender.
	Failed
)

func (s Status) String() string {
	switch s {
	case Deferred:
		return "deferred"
	case Delivered:
		return "delivered"
	case Failed:
		return "failed"
	}
	return "Status(" + strconv.Itoa(int(s)) + ")"
}

// Result is the outcome for one recipient.
type Result struct {
	Status Status
	// Reply is the SMTP reply that decided the outcome, on one line
	// ("550 5.1.1 <bob@example.org>: unknown user"). Local outcomes are
	// phrased as replies too, so that the text can go into a DSN's
	// Diagnostic-Code and be parsed back from the spool.
	Reply string
}
