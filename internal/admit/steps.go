package admit

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/mxguard/mxguard/internal/accessmap"
	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/reason"
	"github.com/mxguard/mxguard/internal/reply"
	"github.com/mxguard/mxguard/internal/resolve"
	"github.com/mxguard/mxguard/internal/tcpwrap"
)

// A step is one check of admission. Steps run in the order of steps; a
// step that decides the connection's fate (a refusal) returns true and no
// later step runs. A step may also only note something on the decision
// (the client's name, a deferral, the greeting pause) and let the next
// one run.
type step struct {
	name string
	// forTrusted: the step runs for trusted clients too. Trusted clients
	// are never limited, so only the steps that count or look them up do.
	forTrusted bool
	run        func(a *Admitter, c *check) (done bool)
}

// check is one connection's way through the steps. It lives in the
// Decision, which the connection keeps anyway: the steps, called through a
// table, would otherwise make it escape to the heap on its own.
type check struct {
	ctx  context.Context
	addr netip.Addr
	d    *Decision
	p    *Policy
	own  string // the client's own counter key, made once for both limits
}

// steps is the order of admission, cheapest first, so that a flood is
// turned away before it costs a DNS lookup or a call to the shared limit
// store:
//
//	max_daemon_children   a counter
//	deny_list             `mxguard deny`'s networks: a few hash probes (netmap)
//	ban                   the bans of the clients' scores: likewise, skipped when none
//	throttle              connection_rate_throttle: stall, never refuse
//	rdns                  the client's confirmed name (cached, bounded)
//	score                 the standing part of the client's score; its tarpit
//	tcpwrappers           hosts.allow / hosts.deny, names and addresses
//	access                the access map's Connect: entry
//	ratecontrol           ClientRate:, per client and per network tier
//	conncontrol           ClientConn:, likewise
//	dnsbl                 the DNS lists' lookups start (answers at the greeting)
//	greet_pause           GreetPause: (not a check: the session's terms)
//
// Trusted clients take only max_daemon_children's count, the deny list
// and the name.
var steps = []step{
	{"max_daemon_children", true, (*Admitter).stepChildren},
	{"deny_list", true, (*Admitter).stepDenyList},
	{"ban", false, (*Admitter).stepBan},
	{"throttle", false, (*Admitter).stepThrottle},
	{"rdns", true, (*Admitter).stepRDNS},
	{"score", false, (*Admitter).stepScore},
	{"tcpwrappers", false, (*Admitter).stepWrappers},
	{"access", false, (*Admitter).stepAccess},
	{"ratecontrol", false, (*Admitter).stepRate},
	{"conncontrol", false, (*Admitter).stepConn},
	{"dnsbl", false, (*Admitter).stepDNSBL},
	{"greet_pause", false, (*Admitter).stepGreetPause},
}

// Admit decides on a connection from addr. It may wait (the global
// connection_rate_throttle stalls connections into later seconds) but never
// longer than ctx allows.
func (a *Admitter) Admit(ctx context.Context, addr netip.Addr) *Decision {
	addr = addr.Unmap()
	p := a.policy.Load()
	d := &Decision{Policy: p, Trusted: p.IsTrusted(addr)}
	d.releases = d.relBuf[:0]
	c := &d.check
	*c = check{ctx: ctx, addr: addr, p: p, d: d}
	for i := range steps {
		s := &steps[i]
		if c.d.Trusted && !s.forTrusted {
			continue
		}
		if s.run(a, c) {
			break
		}
	}
	c.ctx = nil // the connection outlives admission's context
	return d
}

// stepChildren is max_daemon_children: the count of connections open now.
// Every connection holds a slot until Release, trusted ones included (they
// count, but are never refused).
func (a *Admitter) stepChildren(c *check) bool {
	n := a.children.Add(1)
	c.d.child = a
	if max := c.p.Limits.MaxDaemonChildren; max > 0 && n > int64(max) && !c.d.Trusted {
		a.reject(c, reason.MaxDaemonChildren,
			&reply.Reply{Code: 421, Status: "4.3.2", Text: c.p.Hostname + " Too many concurrent connections, try again later"},
			"max_daemon_children ("+strconv.Itoa(max)+") reached")
		return true
	}
	return false
}

// stepDenyList refuses the networks of `mxguard deny`, which the operator
// names on purpose: they win over trust.
func (a *Admitter) stepDenyList(c *check) bool {
	if c.p.IsDenied(c.addr) {
		a.reject(c, reason.DenyList, &replyDenied, "address in the deny list")
		return true
	}
	return false
}

// stepBan refuses a client banned for its score, until the ban ends.
func (a *Admitter) stepBan(c *check) bool {
	if a.rep == nil {
		return false
	}
	ban, ok := a.rep.Banned(c.addr)
	if !ok {
		return false
	}
	a.reject(c, reason.Banned, &reply.Reply{Code: 554, Status: "5.7.1", Text: "Access denied"},
		fmt.Sprintf("banned until %s for %s (%s)", ban.Expires.UTC().Format(time.RFC3339), ban.Reason, ban.Prefix))
	return true
}

// stepScore sets the standing part of the client's score from what it is
// (no confirmed reverse name), which may ban it on the spot, and gives the
// session its tarpit.
func (a *Admitter) stepScore(c *check) bool {
	if a.rep == nil {
		return false
	}
	points := 0
	if c.d.DNS != resolve.OK {
		points += c.p.NoFCrDNSPoints
	}
	if _, ban := a.rep.SetStatic(c.addr, points, ""); ban != nil {
		a.reject(c, reason.Banned, &reply.Reply{Code: 554, Status: "5.7.1", Text: "Access denied"},
			fmt.Sprintf("banned until %s for its score", ban.Expires.UTC().Format(time.RFC3339)))
		return true
	}
	c.d.rep = a.rep
	return false
}

// stepThrottle is connection_rate_throttle: the connection waits for its
// second. It refuses only when the server stops meanwhile.
func (a *Admitter) stepThrottle(c *check) bool {
	r := c.p.Limits.ConnectionRateThrottle
	if r <= 0 {
		return false
	}
	wait := a.throttle.reserve(time.Now(), r)
	if wait <= 0 {
		return false
	}
	a.events.ThrottleStall()
	if a.throttle.shouldLog(time.Now()) {
		a.log.Info(fmt.Sprintf("deferring connections on daemon mxguard: %d per second", r),
			"reason", reason.Throttle, "ip", c.addr.String())
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return false
	case <-c.ctx.Done():
		c.d.Reject = &reply.Reply{Code: 421, Status: "4.3.2", Text: c.p.Hostname + " Service shutting down"}
		c.d.Reason = reason.Shutdown
		return true
	}
}

// stepRDNS finds the client's forward-confirmed name, which the later
// steps match host-name entries against.
func (a *Admitter) stepRDNS(c *check) bool {
	if a.dns != nil {
		res := a.dns.Verify(c.ctx, c.addr)
		c.d.Host, c.d.DNS = res.Name, res.Status
	}
	return false
}

// stepWrappers applies hosts.allow and hosts.deny (hosts_access(5)).
func (a *Admitter) stepWrappers(c *check) bool {
	t := c.p.Wrappers
	if t == nil {
		return false
	}
	v := t.Check("mxguard", tcpwrap.Client{Addr: c.addr, Name: c.d.Host, Paranoid: c.d.DNS == resolve.Mismatch})
	if v.Allowed {
		return false
	}
	host := c.d.Host
	if host == "" {
		host = "unknown"
	}
	a.reject(c, reason.TCPWrappers, &replyDenied,
		fmt.Sprintf("tcpwrappers (%s, %s) rejection (%s:%d %s)", host, c.addr, v.File, v.Line, v.Pattern))
	return true
}

// stepAccess applies the access map's Connect: entry: REJECT and ERROR
// refuse, RELAY lets the client relay, DISCARD drops its mail.
func (a *Admitter) stepAccess(c *check) bool {
	m := c.p.Access
	if m == nil {
		return false
	}
	e, ok := m.LookupClient(accessmap.TagConnect, c.d.Host, c.addr)
	if !ok {
		return false
	}
	act, err := accessmap.ParseAction(e.Value)
	if err != nil {
		return false
	}
	switch act.Kind {
	case accessmap.Reject, accessmap.Error:
		a.reject(c, reason.Access, act.Reply(), fmt.Sprintf("access Connect:%s %s", e.Key, e.Value))
		return true
	case accessmap.OK:
		c.d.accessOK = true
	case accessmap.Relay:
		c.d.Relay = true
	case accessmap.Discard:
		c.d.Discard = true
	}
	return false
}

// stepRate is ClientRate: connections in the window, from the client
// itself and from each network tier it is in.
func (a *Admitter) stepRate(c *check) bool {
	lim := &c.p.Limits
	base := a.number(c.p, accessmap.TagClientRate, c.d.Host, c.addr, lim.ClientRate)
	if base <= 0 {
		return false
	}
	for i := range a.numTiers(c) {
		t := a.tier(c, base, i)
		count, err := a.limiter.Rate(c.ctx, t.key, lim.ConnectionRateWindowSize, t.limit)
		if err != nil {
			a.limiterDown(c, err)
			return true
		}
		if count > t.limit {
			return a.overLimit(c, reason.RateControl, replyRate(),
				fmt.Sprintf("ratecontrol%s: %d connections in %v, limit %d", t.label(), count, lim.ConnectionRateWindowSize, t.limit))
		}
	}
	return false
}

// stepConn is ClientConn: connections open now, from the client itself and
// from each network tier it is in. The counts are held until Release.
func (a *Admitter) stepConn(c *check) bool {
	base := a.number(c.p, accessmap.TagClientConn, c.d.Host, c.addr, c.p.Limits.ClientConn)
	if base <= 0 {
		return false
	}
	for i := range a.numTiers(c) {
		t := a.tier(c, base, i)
		count, release, err := a.limiter.Acquire(c.ctx, t.key)
		if err != nil {
			a.limiterDown(c, err)
			return true
		}
		c.d.releases = append(c.d.releases, release)
		if count > t.limit {
			return a.overLimit(c, reason.ConnControl, replyConn(),
				fmt.Sprintf("conncontrol%s: %d open connections, limit %d", t.label(), count, t.limit))
		}
	}
	return false
}

// stepGreetPause sets how long the greeting waits: greet_pause, or the
// client's GreetPause: entry, never more than RFC 5321's five minutes.
func (a *Admitter) stepGreetPause(c *check) bool {
	c.d.GreetPause = c.p.Limits.GreetPause
	if c.p.Access != nil {
		if ms, _, ok := c.p.Access.ClientNumber(accessmap.TagGreetPause, c.d.Host, c.addr); ok {
			c.d.GreetPause = time.Duration(ms) * time.Millisecond
		}
	}
	c.d.GreetPause = min(c.d.GreetPause, config.MaxGreetPause)
	return false
}
