package admit

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/dnsbl"
	"github.com/mxguard/mxguard/internal/reason"
	"github.com/mxguard/mxguard/internal/reply"
	"github.com/mxguard/mxguard/internal/resolve"
)

// Blocklists starts the DNS list lookups of a client (internal/dnsbl's
// Checker).
type Blocklists interface {
	Start(ctx context.Context, addr netip.Addr) *dnsbl.Pending
}

// stepDNSBL starts the lookups of the client at the DNS lists, without
// waiting: they run while the greeting is held, and Listing collects them.
// It runs last of the checks, so that a client refused by a limit costs no
// DNS query, and skips clients the access map lets in by name (Connect: OK
// or RELAY), as sendmail's FEATURE(dnsbl) does.
func (a *Admitter) stepDNSBL(c *check) bool {
	if a.lists == nil || len(c.p.DNSBL.Sites) == 0 || c.d.Relay || c.d.accessOK {
		return false
	}
	c.d.lists = a.lists.Start(c.ctx, c.addr)
	return false
}

// ListsAsked reports whether the DNS lists were asked about d's client,
// their answers for Listing to collect.
func (d *Decision) ListsAsked() bool { return d.lists != nil }

// Listing is what the DNS lists said of a client, and what follows.
type Listing struct {
	Result      dnsbl.Result
	Listed      bool         // the score is at or over the threshold
	Allowlisted bool         // the score is at or under allowlist_threshold
	Reject      *reply.Reply // refuse instead of the greeting, and close
	RejectRcpt  *reply.Reply // refuse each RCPT
}

// Listing waits for the lists' answers on d's client, within ctx, and
// decides: refuse it at the greeting (action reject, or any action under
// stress with stress.dnsbl_reject), at each RCPT (reject_rcpt), or only
// lower its score. The refusal at the greeting is logged and counted here;
// the score takes the lists' weights either way. It returns false for a
// client whose lists were never asked.
func (a *Admitter) Listing(ctx context.Context, d *Decision, stressed bool) (Listing, bool) {
	if d.lists == nil {
		return Listing{}, false
	}
	p := d.Policy
	cfg := &p.DNSBL
	l := Listing{Result: d.lists.Wait(ctx)}
	d.lists = nil
	score := l.Result.Score
	l.Listed = score >= cfg.Threshold
	l.Allowlisted = cfg.AllowlistThreshold < 0 && score <= cfg.AllowlistThreshold
	addr := d.check.addr
	if a.rep != nil && score != 0 {
		// The standing part of the score, as stepScore set it, less the
		// lists' weights (an allow list's raise it).
		static := -score
		if d.DNS != resolve.OK {
			static += p.NoFCrDNSPoints
		}
		a.rep.SetStatic(addr, static, reason.DNSBL)
	}
	if l.Allowlisted {
		d.rep = nil // no tarpit
		return l, true
	}
	if !l.Listed {
		return l, true
	}
	text := "Service unavailable; client [" + addr.String() + "] blocked using DNS blocklists"
	switch {
	case stressed && p.StressDNSBLReject:
		l.Reject = &reply.Reply{Code: 521, Status: "5.7.1", Text: text}
	case cfg.Action == config.DNSBLReject:
		l.Reject = &reply.Reply{Code: 554, Status: "5.7.1", Text: text}
	case cfg.Action == config.DNSBLRejectRcpt:
		l.RejectRcpt = &reply.Reply{Code: 550, Status: "5.7.1", Text: text}
	}
	if l.Reject != nil {
		// The reply names no list (some are paid for, by a key in their
		// name); the log line names them for the operator.
		a.reject(&d.check, reason.DNSBL, l.Reject, "listed by "+l.Sites()+", score "+strconv.Itoa(score))
	}
	return l, true
}

// Sites names the lists that list the client, with their answers, for the
// log: "zen.spamhaus.org (127.0.0.2), bl.spamcop.net (127.0.0.2)".
func (l Listing) Sites() string {
	var b strings.Builder
	for _, r := range l.Result.Sites {
		if r.Outcome != dnsbl.Listed {
			continue
		}
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s (%s)", r.Site.Domain, r.Answer)
	}
	return b.String()
}
