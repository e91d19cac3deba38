// Package admit decides, for each new connection, whether mxguard talks to
// the client at all, and on what terms: the connection-level defences of
// sendmail 8.13 that the seed relies on (max_daemon_children,
// connection_rate_throttle, TCP wrappers, the access map's Connect:,
// ClientRate:, ClientConn: and GreetPause: entries), in an order that keeps
// the cheap checks first so that a flood is turned away for almost nothing.
//
// Each check is one named step, in the order steps.go gives (cheap checks
// first); adding a check adds a step.
package admit

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mxguard/mxguard/internal/accessmap"
	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/dnsbl"
	"github.com/mxguard/mxguard/internal/limit"
	"github.com/mxguard/mxguard/internal/netmap"
	"github.com/mxguard/mxguard/internal/reason"
	"github.com/mxguard/mxguard/internal/reply"
	"github.com/mxguard/mxguard/internal/reputation"
	"github.com/mxguard/mxguard/internal/resolve"
	"github.com/mxguard/mxguard/internal/tcpwrap"
)

// Policy is everything admission reads from configuration files. It is
// immutable: a reload builds a new Policy and swaps it in, so sessions that
// are running keep the one they started with. Trusted and Denied, in
// particular, must not change once the policy is in use: they are indexed
// once, at its first lookup. A Policy is used through its pointer, never
// copied.
type Policy struct {
	Hostname string
	Limits   config.Limits
	// NoFCrDNSPoints is the standing score cost of a client without a
	// confirmed reverse name.
	NoFCrDNSPoints int
	Trusted        []netip.Prefix // trusted_networks plus the trust file
	Denied         []netip.Prefix // the deny file
	Access         *accessmap.Map // nil: no access map
	Wrappers       *tcpwrap.Table // nil: no hosts.allow/hosts.deny
	DNSBL          config.DNSBL   // the lists' thresholds and action
	// StressDNSBLReject: under stress a listed client is refused at the
	// greeting whatever DNSBL.Action says.
	StressDNSBLReject bool

	index networks
}

// networks are Trusted and Denied by network, so that a lookup costs one
// hash probe per prefix length present however long the lists grow (a
// fleet's operators and console add to them in one click). The index
// lives in the Policy, built at its first use under a sync.Once, rather
// than beside it in the Admitter: a Policy is read concurrently as soon as
// it is swapped in, and outside the Admitter too (the reputation book asks
// IsTrusted at each refusal, a Decision carries its Policy, tests build
// Policies and ask them), so it answers the same way wherever it is used,
// and there is no second pointer to keep in step with the atomic swap.
// New and SetPolicy build it at once (warm), so that the reload pays for
// it, not the first connection after.
type networks struct {
	once            sync.Once
	trusted, denied netmap.Map[struct{}]
}

func (p *Policy) networks() *networks {
	p.index.once.Do(func() {
		for _, q := range p.Trusted {
			p.index.trusted.Set(q, struct{}{})
		}
		for _, q := range p.Denied {
			p.index.denied.Set(q, struct{}{})
		}
	})
	return &p.index
}

// IsTrusted reports whether addr is in a trusted network.
func (p *Policy) IsTrusted(addr netip.Addr) bool {
	_, ok := p.networks().trusted.Lookup(addr.Unmap())
	return ok
}

// IsDenied reports whether addr is in the deny list.
func (p *Policy) IsDenied(addr netip.Addr) bool {
	_, ok := p.networks().denied.Lookup(addr.Unmap())
	return ok
}

// Verifier is the reverse-DNS lookup admission needs (internal/resolve).
type Verifier interface {
	Verify(ctx context.Context, addr netip.Addr) resolve.Result
}

// Admitter makes admission decisions. It is safe for concurrent use.
type Admitter struct {
	policy   atomic.Pointer[Policy]
	limiter  limit.Limiter
	dns      Verifier
	events   Recorder
	rep      Reputation
	lists    Blocklists
	log      *slog.Logger
	children atomic.Int64
	throttle throttle
}

// Recorder is told of each refusal and stall, for the metrics and the
// clients' scores. host is the client's confirmed name, "" when it has
// none or the refusal came before the lookup.
type Recorder interface {
	Refused(why reason.Reason, client netip.Addr, host string)
	ThrottleStall()
}

// Reputation is the clients' scores and bans (internal/reputation).
type Reputation interface {
	Banned(client netip.Addr) (reputation.Ban, bool)
	SetStatic(client netip.Addr, points int, why reason.Reason) (int, *reputation.Ban)
	Delay(client netip.Addr) time.Duration
}

type noRecorder struct{}

func (noRecorder) Refused(reason.Reason, netip.Addr, string) {}
func (noRecorder) ThrottleStall()                            {}

// Deps are what an Admitter calls on. Limiter and Log are required; the
// others may be nil: no DNS (no reverse lookups: every client is UNKNOWN
// to the TCP wrappers and host-name keys never match), nothing counted, no
// scores, no DNS lists.
type Deps struct {
	Limiter    limit.Limiter
	DNS        Verifier
	Events     Recorder
	Reputation Reputation
	Lists      Blocklists
	Log        *slog.Logger
}

// New returns an Admitter under policy p.
func New(p *Policy, deps Deps) *Admitter {
	if deps.Events == nil {
		deps.Events = noRecorder{}
	}
	a := &Admitter{limiter: deps.Limiter, dns: deps.DNS, events: deps.Events, rep: deps.Reputation, lists: deps.Lists, log: deps.Log}
	a.SetPolicy(p)
	return a
}

// SetPolicy swaps in a new policy (SIGHUP, `mxguard trust`), its networks
// indexed first, in the caller's goroutine.
func (a *Admitter) SetPolicy(p *Policy) {
	p.networks()
	a.policy.Store(p)
}

// Policy returns the policy in force.
func (a *Admitter) Policy() *Policy { return a.policy.Load() }

// Children is the number of admitted connections open now.
func (a *Admitter) Children() int64 { return a.children.Load() }

// Decision is the outcome for one connection. Release must be called when
// the connection ends, whatever the outcome.
type Decision struct {
	Reject     *reply.Reply  // non-nil: send this and close
	Reason     reason.Reason // the control that rejected or deferred
	Host       string        // forward-confirmed name, "" if none
	DNS        resolve.Status
	Trusted    bool
	Relay      bool // Connect: RELAY
	Discard    bool // Connect: DISCARD: accept mail, deliver none
	GreetPause time.Duration
	Defer      *reply.Reply // terminate=false: MAIL and RCPT get this
	Policy     *Policy      // the policy this decision was made under

	rep      Reputation     // for the tarpit; nil: none
	lists    *dnsbl.Pending // the DNS lists' answers on their way; nil: not asked
	accessOK bool           // Connect: OK

	child    *Admitter // holds a max_daemon_children slot of this Admitter
	releases []func()  // give back the ClientConn counts (one a tier)
	relBuf   [2]func() // room for two tiers' releases without an allocation
	check    check     // admission's working state
}

// Delay is how long to hold each reply to the client now: its tarpit,
// from its score as it is at the moment of the reply.
func (d *Decision) Delay() time.Duration {
	if d.rep == nil {
		return 0
	}
	return d.rep.Delay(d.check.addr)
}

// Release gives back what the connection held (its max_daemon_children
// slot, its ClientConn count). It is idempotent.
func (d *Decision) Release() {
	if d.child != nil {
		d.child.children.Add(-1)
		d.child = nil
	}
	for _, r := range d.releases {
		r()
	}
	d.releases = nil
}

// Replies and reasons, as SPEC.md fixes them.
func replyRate() *reply.Reply {
	return &reply.Reply{Code: 421, Status: "4.3.2", Text: "Connection rate limit exceeded."}
}

func replyConn() *reply.Reply {
	return &reply.Reply{Code: 421, Status: "4.3.2", Text: "Too many open connections."}
}

var replyDenied = reply.Reply{Code: 550, Status: "5.7.1", Text: "Access denied"}

// number is the client's limit for a numeric tag: the access map's entry,
// else the config default. 0 means no limit.
func (a *Admitter) number(p *Policy, tag, host string, addr netip.Addr, def int) int {
	if p.Access != nil {
		if n, _, ok := p.Access.ClientNumber(tag, host, addr); ok {
			return n
		}
	}
	return def
}

// overLimit applies sendmail's `terminate': with it the client is
// refused now; without it the session goes on and MAIL/RCPT are deferred.
// It reports whether the decision is final.
func (a *Admitter) overLimit(c *check, why reason.Reason, r *reply.Reply, detail string) bool {
	d := c.d
	if c.p.Limits.Terminate {
		a.reject(c, why, r, detail)
		return true
	}
	a.events.Refused(why, c.addr, c.d.Host)
	a.line("deferring mail from "+ClientName(d.Host, c.addr)+": "+detail,
		slog.String("ip", c.addr.String()), slog.String("reason", string(why)))
	if d.Defer == nil {
		// The first limit exceeded gives the reply, as sendmail's
		// check_relay stops at ratecontrol before it reaches conncontrol.
		d.Defer = &reply.Reply{Code: 452, Status: r.Status, Text: r.Text}
		d.Reason = why
	}
	return false
}

// limiterDown handles a limiter error (the Redis fleet store unreachable
// with on_redis_error = "tempfail").
func (a *Admitter) limiterDown(c *check, err error) {
	a.reject(c, reason.Limiter,
		&reply.Reply{Code: 421, Status: "4.3.0", Text: c.p.Hostname + " Service temporarily unavailable"},
		"limit store unavailable: "+err.Error())
}

func (a *Admitter) reject(c *check, why reason.Reason, r *reply.Reply, detail string) {
	c.d.Reject, c.d.Reason = r, why
	a.events.Refused(why, c.addr, c.d.Host)
	// One stable line per rejection: fail2ban and grep key on
	// "rejecting connection from", the IP and the reason.
	a.line("rejecting connection from "+ClientName(c.d.Host, c.addr)+": "+detail,
		slog.String("ip", c.addr.String()), slog.String("reason", string(why)), slog.String("reply", r.String()))
}

// line logs msg at Info as Logger.Info would, less two costs a flood pays
// once per refused connection for nothing: the caller's program counter
// (runtime.Callers, whose stack walk also grew the connection goroutine's
// stack; no handler of mxguard's reports the source) and boxing each value
// in an any (typed attributes instead).
func (a *Admitter) line(msg string, attrs ...slog.Attr) {
	h := a.log.Handler()
	ctx := context.Background()
	if !h.Enabled(ctx, slog.LevelInfo) {
		return
	}
	r := slog.NewRecord(time.Now(), slog.LevelInfo, msg, 0)
	r.AddAttrs(attrs...)
	h.Handle(ctx, r)
}

// ClientName is "host [ip]" as sendmail writes a client in its log lines,
// "unknown" standing for a host without a confirmed name.
func ClientName(host string, addr netip.Addr) string {
	if host == "" {
		host = "unknown"
	}
	return host + " [" + addr.String() + "]"
}

// tier is one counter a client's connections are counted in: its own
// (the address, or its /64 for IPv6, since one IPv6 host commonly holds a
// whole /64), then each wider network of the configured tiers, whose limit
// is the client's times tier_multiplier for each step out.
type tier struct {
	key     string // the limiter's key: the address, or the network in CIDR
	limit   int
	network bool // a network's counter, named in the reply and the log
}

// label names the tier's network for the reply and the log.
func (t tier) label() string {
	if !t.network {
		return ""
	}
	return " (" + t.key + ")"
}

func (a *Admitter) numTiers(c *check) int {
	if c.addr.Is6() {
		return len(c.p.Limits.IPv6Tiers)
	}
	return len(c.p.Limits.IPv4Tiers)
}

// tier returns the i-th counter of c's client, with the client limit base.
func (a *Admitter) tier(c *check, base, i int) tier {
	lim := &c.p.Limits
	var bits int
	if c.addr.Is6() {
		bits = lim.IPv6Tiers[i]
	} else {
		bits = lim.IPv4Tiers[i]
	}
	limit := base
	for range i {
		limit = min(limit*max(lim.TierMultiplier, 1), base*1_000_000)
	}
	own := i == 0 && (bits == c.addr.BitLen() || c.addr.Is6() && bits == 64)
	if own {
		if c.own == "" {
			if bits == c.addr.BitLen() {
				c.own = c.addr.String()
			} else {
				c.own = prefixKey(c.addr, bits)
			}
		}
		return tier{key: c.own, limit: limit}
	}
	return tier{key: prefixKey(c.addr, bits), limit: limit, network: true}
}

// prefixKey is the network of addr in CIDR notation, made with one
// allocation (netip.Prefix.String makes two): it is made for each tier of
// each connection.
func prefixKey(addr netip.Addr, bits int) string {
	p, _ := addr.Prefix(bits)
	var buf [len("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128")]byte
	return string(p.AppendTo(buf[:0]))
}
