// Package admit decides, for each new connection, whether mxguard talks to
// the client at all, and on what terms: the connection-level defences of
// sendmail 8.13 that the seed relies on (max_daemon_children,
// connection_rate_throttle, TCP wrappers, the access map's Connect:,
// ClientRate:, ClientConn: and GreetPause: entries), in an order that keeps
// the cheap checks first so that a flood is turned away for almost nothing.
//
// The order: trusted networks (never limited) → max_daemon_children (a
// counter) → the deny list of `mxguard deny` → connection_rate_throttle
// (stall, never reject) → reverse DNS → hosts.allow/hosts.deny →
// Connect: → ClientRate: → ClientConn: → GreetPause:.
package admit

import (
	"context"
	"fmt"
	"github.com/mxguard/mxguard/internal/reason"
	"github.com/mxguard/mxguard/internal/reply"
	"log/slog"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/mxguard/mxguard/internal/accessmap"
	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/limit"
	"github.com/mxguard/mxguard/internal/metrics"
	"github.com/mxguard/mxguard/internal/resolve"
	"github.com/mxguard/mxguard/internal/tcpwrap"
)

// Policy is everything admission reads from configuration files. It is
// immutable: a reload builds a new Policy and swaps it in, so sessions that
// are running keep the one they started with.
type Policy struct {
	Hostname string
	Limits   config.Limits
	Trusted  []netip.Prefix // trusted_networks plus the trust file
	Denied   []netip.Prefix // the deny file
	Access   *accessmap.Map // nil: no access map
	Wrappers *tcpwrap.Table // nil: no hosts.allow/hosts.deny
}

// IsTrusted reports whether addr is in a trusted network.
func (p *Policy) IsTrusted(addr netip.Addr) bool { return inAny(p.Trusted, addr) }

func inAny(ps []netip.Prefix, addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, p := range ps {
		if p.Contains(addr) {
			return true
		}
	}
	return false
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
	metrics  *metrics.Metrics
	log      *slog.Logger
	children atomic.Int64
	throttle throttle
}

// New returns an Admitter. dns may be nil (no reverse lookups: every client
// is UNKNOWN to the TCP wrappers and host-name keys never match).
func New(p *Policy, l limit.Limiter, dns Verifier, m *metrics.Metrics, logger *slog.Logger) *Admitter {
	a := &Admitter{limiter: l, dns: dns, metrics: m, log: logger}
	a.policy.Store(p)
	return a
}

// SetPolicy swaps in a new policy (SIGHUP, `mxguard trust`).
func (a *Admitter) SetPolicy(p *Policy) { a.policy.Store(p) }

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

	child       *Admitter // holds a max_daemon_children slot of this Admitter
	connRelease func()    // gives back the ClientConn count
}

// Release gives back what the connection held (its max_daemon_children
// slot, its ClientConn count). It is idempotent.
func (d *Decision) Release() {
	if d.child != nil {
		d.child.children.Add(-1)
		d.child = nil
	}
	if d.connRelease != nil {
		d.connRelease()
		d.connRelease = nil
	}
}

// Replies and reasons, as SPEC.md fixes them.
func replyRate() *reply.Reply {
	return &reply.Reply{Code: 421, Status: "4.3.2", Text: "Connection rate limit exceeded."}
}

func replyConn() *reply.Reply {
	return &reply.Reply{Code: 421, Status: "4.3.2", Text: "Too many open connections."}
}

var replyDenied = reply.Reply{Code: 550, Status: "5.7.1", Text: "Access denied"}

// Admit decides on a connection from addr. It may wait (the global
// connection_rate_throttle stalls connections into later seconds) but never
// longer than ctx allows.
func (a *Admitter) Admit(ctx context.Context, addr netip.Addr) *Decision {
	addr = addr.Unmap()
	p := a.policy.Load()
	d := &Decision{Policy: p, Trusted: p.IsTrusted(addr)}
	lim := &p.Limits

	n := a.children.Add(1)
	d.child = a
	if max := lim.MaxDaemonChildren; max > 0 && n > int64(max) && !d.Trusted {
		return a.reject(d, addr, reason.MaxDaemonChildren,
			&reply.Reply{Code: 421, Status: "4.3.2", Text: p.Hostname + " Too many concurrent connections, try again later"},
			"max_daemon_children ("+strconv.Itoa(max)+") reached")
	}
	if inAny(p.Denied, addr) {
		return a.reject(d, addr, reason.DenyList, &replyDenied, "address in the deny list")
	}
	if r := lim.ConnectionRateThrottle; r > 0 && !d.Trusted {
		if wait := a.throttle.reserve(time.Now(), r); wait > 0 {
			a.metrics.ThrottleStall()
			if a.throttle.shouldLog(time.Now()) {
				a.log.Info(fmt.Sprintf("deferring connections on daemon mxguard: %d per second", r),
					"reason", reason.Throttle, "ip", addr.String())
			}
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				d.Reject = &reply.Reply{Code: 421, Status: "4.3.2", Text: p.Hostname + " Service shutting down"}
				d.Reason = reason.Shutdown
				return d
			}
		}
	}
	if a.dns != nil {
		res := a.dns.Verify(ctx, addr)
		d.Host, d.DNS = res.Name, res.Status
	}
	if d.Trusted {
		return d // never limited
	}
	if p.Wrappers != nil {
		v := p.Wrappers.Check("mxguard", tcpwrap.Client{Addr: addr, Name: d.Host, Paranoid: d.DNS == resolve.Mismatch})
		if !v.Allowed {
			host := d.Host
			if host == "" {
				host = "unknown"
			}
			return a.reject(d, addr, reason.TCPWrappers, &replyDenied,
				fmt.Sprintf("tcpwrappers (%s, %s) rejection (%s:%d %s)", host, addr, v.File, v.Line, v.Pattern))
		}
	}
	if m := p.Access; m != nil {
		if e, ok := m.LookupClient("Connect", d.Host, addr); ok {
			act, err := accessmap.ParseAction(e.Value)
			if err == nil {
				switch act.Kind {
				case accessmap.Reject, accessmap.Error:
					r := act.Reply()
					return a.reject(d, addr, reason.Access, r, fmt.Sprintf("access Connect:%s %s", e.Key, e.Value))
				case accessmap.Relay:
					d.Relay = true
				case accessmap.Discard:
					d.Discard = true
				}
			}
		}
	}
	key := limitKey(addr)
	if n := a.number(p, "ClientRate", d.Host, addr, lim.ClientRate); n > 0 {
		count, err := a.limiter.Rate(ctx, key, lim.ConnectionRateWindowSize, n)
		if err != nil {
			return a.limiterDown(d, addr, err)
		}
		if count > n {
			if r := a.overLimit(d, addr, reason.RateControl, replyRate(),
				fmt.Sprintf("ratecontrol: %d connections in %v, limit %d", count, lim.ConnectionRateWindowSize, n)); r {
				return d
			}
		}
	}
	if n := a.number(p, "ClientConn", d.Host, addr, lim.ClientConn); n > 0 {
		count, release, err := a.limiter.Acquire(ctx, key)
		if err != nil {
			return a.limiterDown(d, addr, err)
		}
		d.connRelease = release
		if count > n {
			if r := a.overLimit(d, addr, reason.ConnControl, replyConn(),
				fmt.Sprintf("conncontrol: %d open connections, limit %d", count, n)); r {
				return d
			}
		}
	}
	d.GreetPause = lim.GreetPause
	if p.Access != nil {
		if ms, _, ok := p.Access.ClientNumber("GreetPause", d.Host, addr); ok {
			d.GreetPause = time.Duration(ms) * time.Millisecond
		}
	}
	d.GreetPause = min(d.GreetPause, config.MaxGreetPause) // a GreetPause: entry, too
	return d
}

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
func (a *Admitter) overLimit(d *Decision, addr netip.Addr, why reason.Reason, r *reply.Reply, detail string) bool {
	p := d.Policy
	if p.Limits.Terminate {
		a.reject(d, addr, why, r, detail)
		return true
	}
	a.metrics.Refused(why, addr)
	a.log.Info("deferring mail from "+ClientName(d.Host, addr)+": "+detail,
		"ip", addr.String(), "reason", why)
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
func (a *Admitter) limiterDown(d *Decision, addr netip.Addr, err error) *Decision {
	return a.reject(d, addr, reason.Limiter,
		&reply.Reply{Code: 421, Status: "4.3.0", Text: d.Policy.Hostname + " Service temporarily unavailable"},
		"limit store unavailable: "+err.Error())
}

func (a *Admitter) reject(d *Decision, addr netip.Addr, why reason.Reason, r *reply.Reply, detail string) *Decision {
	d.Reject, d.Reason = r, why
	a.metrics.Refused(why, addr)
	// One stable line per rejection: fail2ban and grep key on
	// "rejecting connection from", the IP and the reason.
	a.log.Info("rejecting connection from "+ClientName(d.Host, addr)+": "+detail,
		"ip", addr.String(), "reason", why, "reply", r.String())
	return d
}

// ClientName is "host [ip]" as sendmail writes a client in its log lines,
// "unknown" standing for a host without a confirmed name.
func ClientName(host string, addr netip.Addr) string {
	if host == "" {
		host = "unknown"
	}
	return host + " [" + addr.String() + "]"
}

// limitKey is the counter key for a client: the address for IPv4, the /64
// for IPv6, since one IPv6 host commonly holds a whole /64.
func limitKey(addr netip.Addr) string {
	if addr.Is6() {
		p, _ := addr.Prefix(64)
		return p.String()
	}
	return addr.String()
}
