// Package policy decides on envelopes: who may send (the access map's
// From:), where to (the relay rules, To:, sendmail's delay_checks with
// Spam: FRIEND, DISCARD), and whether a recipient exists (the recipients
// file and the aliases, or the downstream's own word, asked by a probe).
//
// Its decisions are pure: Mail and Rcpt read immutable inputs and the
// transaction's state and return a Verdict (the reply, the reason from the
// vocabulary, the log line to write, the addresses to deliver to); the
// server adapts a Verdict to the protocol and does the logging. The one
// outside question, asking the downstream about a recipient, goes through
// the Verifier the caller passes in.
//
// The rule that drives most of it: never answer 250 for a recipient the
// server cannot deliver to. An unknown local user is refused at RCPT
// (which is what makes sendmail's BAD_RCPT_THROTTLE a defence against
// dictionary attacks), and nothing is accepted only to be bounced later to
// a sender the client may have forged.
package policy

import (
	"context"
	"net/netip"
	"strings"

	"github.com/mxguard/mxguard/internal/accessmap"
	"github.com/mxguard/mxguard/internal/reason"
	"github.com/mxguard/mxguard/internal/recipients"
	"github.com/mxguard/mxguard/internal/reply"
	"github.com/mxguard/mxguard/internal/smtpd"
)

// Policy is everything the envelope decisions read. It is immutable: a
// reload builds a new one, and a session keeps the one it started with.
type Policy struct {
	LocalDomains []string          // lower case; the first completes a bare "postmaster"
	Access       *accessmap.Map    // nil: no access map
	DelayChecks  bool              // FEATURE(delay_checks)
	Relay        bool              // a relay is configured: mail for other domains has somewhere to go
	Recipients   *recipients.Table // nil: no recipients or aliases file
	CatchAll     bool              // accept any local part of a local domain
	// Verify, when set, asks the downstream about local recipients that
	// Recipients does not know.
	Verify Verifier
	// Mailbox, when set (local delivery), refuses a local part that
	// cannot be a mailbox's name on disk.
	Mailbox func(addr string) error
}

// Verifier asks the downstream whether it takes a recipient.
type Verifier interface {
	Verify(ctx context.Context, addr string) Verification
}

// Verification is a Verifier's answer.
type Verification struct {
	Status Status
	Detail string // the downstream's reply, or why it gave none
}

// Status of a Verification.
type Status int

// Verification statuses.
const (
	Unverified Status = iota // no answer in time, or a temporary one
	Valid                    // the downstream accepts the recipient
	Invalid                  // the downstream refuses it for good
)

// Client is what admission found out about the connection.
type Client struct {
	Addr    netip.Addr
	Host    string // forward-confirmed reverse-DNS name, "" if none
	Trusted bool   // trusted_networks or `mxguard trust`
	Relay   bool   // Connect: RELAY
	Discard bool   // Connect: DISCARD
	// Listed, when set, refuses every recipient: the DNS lists score the
	// client as listed, with dnsbl.action = "reject_rcpt". Lists names
	// them for the log.
	Listed *reply.Reply
	Lists  string
}

// Name is "host [ip]" as sendmail writes a client in its log lines.
func (c *Client) Name() string {
	host := c.Host
	if host == "" {
		host = "unknown"
	}
	return host + " [" + c.Addr.String() + "]"
}

// Tx is one mail transaction's state between MAIL and DATA. The zero Tx
// is the state before MAIL.
type Tx struct {
	// Discard: an access-map DISCARD matched; the message is accepted and
	// dropped.
	Discard bool
	from    string   // the sender, for the log
	fromErr *Verdict // delay_checks: a From: refusal held for RCPT
}

// Verdict is one decision.
type Verdict struct {
	// Reply is the answer; nil means accepted, with the protocol's
	// default reply.
	Reply *reply.Reply
	// Reason, set with every refusal (and DISCARD), is the vocabulary's
	// name for it.
	Reason reason.Reason
	// Log, when not empty, is the message of the one log line the server
	// writes for this decision; Key is the access-map entry that decided.
	Log string
	Key string
	// Deliver, for an accepted recipient, is where the message goes: the
	// recipient itself, or what its alias expands to.
	Deliver []string
}

// Accepted reports whether the verdict lets the command through.
func (v *Verdict) Accepted() bool { return v.Reply == nil || !v.Reply.Failed() }

// Replies of the envelope policy. Texts follow sendmail where it has one
// and Postfix otherwise.
var (
	replyRelayDenied = reply.Reply{Code: 550, Status: "5.7.1", Text: "Relaying denied"}
	replyMailbox     = reply.Reply{Code: 550, Status: "5.1.3", Text: "Bad destination mailbox address"}
)

func unknownUser(addr string) *reply.Reply {
	return &reply.Reply{Code: 550, Status: "5.1.1", Text: echo(addr) + "Recipient address rejected: User unknown"}
}

func unverified(addr string) *reply.Reply {
	return &reply.Reply{Code: 450, Status: "4.1.1", Text: echo(addr) + "Recipient address rejected: unverified address: try again later"}
}

// echo names the address at the start of a reply, as Postfix does, when
// it is ASCII: a reply line holds UTF-8 only by the client's leave
// (RFC 6531), and the address is in the client's log anyway.
func echo(addr string) string {
	for i := 0; i < len(addr); i++ {
		if addr[i] >= 0x80 {
			return ""
		}
	}
	return "<" + addr + ">: "
}

// Mail decides on MAIL FROM and starts the transaction in tx.
func (p *Policy) Mail(c *Client, tx *Tx, from smtpd.Path) Verdict {
	*tx = Tx{Discard: c.Discard, from: from.String()}
	if p.Access == nil || from.IsNull() {
		return Verdict{}
	}
	e, ok := p.Access.LookupAddress(accessmap.TagFrom, from.String())
	if !ok {
		return Verdict{}
	}
	act, err := accessmap.ParseAction(e.Value)
	if err != nil {
		return Verdict{}
	}
	switch act.Kind {
	case accessmap.Reject, accessmap.Error:
		v := Verdict{Reply: act.Reply(), Reason: reason.Access, Key: e.String(),
			Log: "rejecting sender <" + from.String() + "> from " + c.Name()}
		if p.DelayChecks {
			// sendmail's delay_checks: refused at RCPT, unless the
			// recipient is a Spam: FRIEND. Logged there, if it applies.
			tx.fromErr = &v
			return Verdict{}
		}
		return v
	case accessmap.Discard:
		tx.Discard = true
	}
	return Verdict{}
}

// Rcpt decides on RCPT TO within the transaction tx. ctx bounds a probe
// of the downstream.
func (p *Policy) Rcpt(ctx context.Context, c *Client, tx *Tx, to smtpd.Path) Verdict {
	addr := p.Address(to)
	if c.Listed != nil {
		// postscreen's "enforce": the envelope is logged, nothing taken.
		return Verdict{Reply: c.Listed, Reason: reason.DNSBLRcpt,
			Log: "blocked using " + c.Lists + ": RCPT from " + c.Name() + " from=<" + tx.from + "> to=<" + addr + ">"}
	}
	domain := addr[strings.LastIndexByte(addr, '@')+1:]
	local := p.IsLocal(domain)

	var toAct *accessmap.Action
	var toKey string
	if m := p.Access; m != nil {
		lookup := m.LookupAddress
		if !local {
			lookup = m.LookupRemoteRecipient // sendmail skips "user@" for other domains
		}
		if e, ok := lookup(accessmap.TagTo, addr); ok {
			if act, err := accessmap.ParseAction(e.Value); err == nil {
				toAct, toKey = &act, e.String()
			}
		}
	}
	if tx.fromErr != nil && !p.friend(addr) {
		return *tx.fromErr
	}
	if routing := hasRouting(to); !local || routing {
		mayRelay := c.Trusted || c.Relay || toAct != nil && toAct.Kind == accessmap.Relay
		switch {
		case !mayRelay,
			routing && !c.Trusted, // routing tricks pass for trusted hosts only
			!local && !p.Relay:    // without a relay, foreign mail has nowhere to go
			r := replyRelayDenied
			return Verdict{Reply: &r, Reason: reason.RelayDenied, Log: "relaying denied for <" + addr + "> from " + c.Name()}
		}
	}
	if local && p.Mailbox != nil {
		if err := p.Mailbox(addr); err != nil {
			r := replyMailbox
			return Verdict{Reply: &r, Reason: reason.BadMailbox, Log: "bad mailbox name <" + addr + "> from " + c.Name()}
		}
	}
	if toAct != nil {
		switch toAct.Kind {
		case accessmap.Reject, accessmap.Error:
			return Verdict{Reply: toAct.RecipientReply(), Reason: reason.Access, Key: toKey,
				Log: "rejecting recipient <" + addr + "> from " + c.Name()}
		case accessmap.Discard:
			tx.Discard = true
		}
	}
	if !local {
		return Verdict{Deliver: []string{addr}}
	}
	return p.known(ctx, c, to, addr)
}

// known decides whether the local recipient addr exists.
func (p *Policy) known(ctx context.Context, c *Client, to smtpd.Path, addr string) Verdict {
	at := strings.LastIndexByte(addr, '@')
	localPart, domain := addr[:at], addr[at+1:]
	if p.Recipients != nil {
		switch m, targets := p.Recipients.Lookup(to.Local, domain); m {
		case recipients.Listed, recipients.CatchAll:
			return Verdict{Deliver: []string{addr}}
		case recipients.Alias:
			out := make([]string, len(targets))
			for i, t := range targets {
				out[i] = smtpd.Path{Local: t.Local, Domain: t.Domain}.Mailbox()
			}
			return Verdict{Deliver: out}
		}
	}
	if strings.EqualFold(localPart, "postmaster") {
		// RFC 5321 4.5.1: every domain we receive for has a postmaster.
		return Verdict{Deliver: []string{addr}}
	}
	if p.Verify != nil {
		switch v := p.Verify.Verify(ctx, addr); v.Status {
		case Valid:
			return Verdict{Deliver: []string{addr}}
		case Invalid:
			return Verdict{Reply: unknownUser(addr), Reason: reason.UnknownUser,
				Log: "unknown user <" + addr + "> from " + c.Name() + ": the downstream said " + v.Detail}
		default:
			return Verdict{Reply: unverified(addr), Reason: reason.Unverified,
				Log: "recipient <" + addr + "> from " + c.Name() + " not verified: " + v.Detail}
		}
	}
	if p.CatchAll {
		return Verdict{Deliver: []string{addr}}
	}
	return Verdict{Reply: unknownUser(addr), Reason: reason.UnknownUser, Log: "unknown user <" + addr + "> from " + c.Name()}
}

// Address is the form in which a recipient is stored and relayed: the
// local part as the client sent it (quoted where SMTP needs it), the
// domain in lower case, and the bare "postmaster" of RFC 5321 4.5.1 given
// the first local domain.
func (p *Policy) Address(to smtpd.Path) string {
	if to.Domain == "" && len(p.LocalDomains) > 0 {
		return "postmaster@" + p.LocalDomains[0]
	}
	return smtpd.Path{Local: to.Local, Domain: strings.ToLower(to.Domain), Quoted: to.Quoted}.Mailbox()
}

// IsLocal reports whether domain (lower case) is one we receive mail for.
func (p *Policy) IsLocal(domain string) bool {
	for _, d := range p.LocalDomains {
		if d == domain {
			return true
		}
	}
	return false
}

// friend reports a Spam: FRIEND entry for the recipient (sendmail's
// delay_checks `friend': the recipient wants mail the checks would refuse).
func (p *Policy) friend(rcpt string) bool {
	if p.Access == nil {
		return false
	}
	e, ok := p.Access.LookupAddress(accessmap.TagSpam, rcpt)
	if !ok {
		return false
	}
	act, err := accessmap.ParseAction(e.Value)
	return err == nil && act.Kind == accessmap.Friend
}

// hasRouting catches the old ways of making a local address relay: the
// percent hack (user%other@local), bang paths (other!user@local) and an
// '@' hidden in a quoted local part ("user@other"@local).
func hasRouting(p smtpd.Path) bool {
	return strings.ContainsAny(p.Local, "%!@")
}
