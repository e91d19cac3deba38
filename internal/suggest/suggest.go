// Package suggest proposes limits from observed traffic, the way the seed's
// admin picked his: "check the average number of sendmail processes on a
// standard day, and triple that number ... never below 30", and a
// hosts.deny of the dial-up networks that filled his logs. Its input is
// days of traffic (stats.Day): the server's own (<data_dir>/stats.json),
// or what mxguard's and sendmail's logs tell (ReadLogs). Suggest applies
// the rules and says which figures each proposal comes from; Render
// prints the proposals as a unified diff of the configuration, the access
// map and hosts.deny, which `patch` applies.
package suggest

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/mxguard/mxguard/internal/reason"
	"github.com/mxguard/mxguard/internal/stats"
	"github.com/mxguard/mxguard/internal/tcpwrap"
)

// Options are the rules' figures. Defaults gives the documented ones;
// `mxguard suggest` lets each be changed by a flag.
type Options struct {
	// Day picks the days the limits come from: "" (the typical day),
	// "all" (every day together), or a date YYYY-MM-DD.
	Day string

	// max_daemon_children = ChildrenFactor × the ChildrenPercentile of
	// the sessions open, at least ChildrenMin.
	ChildrenPercentile float64
	ChildrenFactor     int64
	ChildrenMin        int64

	// connection_rate_throttle = ThrottleFactor × the ThrottlePercentile
	// of the connections accepted a second, at least ThrottleMin.
	ThrottlePercentile float64
	ThrottleFactor     int64
	ThrottleMin        int64

	// client_rate and client_conn = ClientMargin × the ClientPercentile
	// of what the clients that delivered mail did, rounded up, at least
	// MinClientRate and MinClientConn.
	ClientPercentile float64
	ClientMargin     float64
	MinClientRate    int64
	MinClientConn    int64

	// A hosts.deny line is proposed for a network or a reverse-DNS
	// suffix with DenyMinRefusals refusals or more over all the days and
	// no message delivered, the DenyTop with the most of each kind.
	DenyMinRefusals int64
	DenyTop         int
}

// Defaults are the rules as docs/SPEC.md states them.
func Defaults() Options {
	return Options{
		ChildrenPercentile: 0.95, ChildrenFactor: 3, ChildrenMin: 30,
		ThrottlePercentile: 0.99, ThrottleFactor: 3, ThrottleMin: 10,
		ClientPercentile: 0.99, ClientMargin: 2, MinClientRate: 5, MinClientConn: 3,
		DenyMinRefusals: 100, DenyTop: 20,
	}
}

// Current is what is in force, to propose changes against.
type Current struct {
	MaxDaemonChildren      int64
	ConnectionRateThrottle int64
	ClientRate, ClientConn int64
	// ClientRateInAccess and ClientConnInAccess: the access map's
	// default entry ("ClientRate:", "ClientConn:") sets the limit, which
	// the configuration's key then does not.
	ClientRateInAccess, ClientConnInAccess bool
	Window                                 time.Duration // connection_rate_window_size
	Trusted                                []netip.Prefix
	Wrappers                               *tcpwrap.Table // hosts.allow and hosts.deny; nil: none
}

// Where says which file a proposal changes.
type Where int

// The files.
const (
	Config    Where = iota // the TOML file; Key is the dotted key
	AccessMap              // the access map; Key is the entry's left side, "ClientRate:"
	HostsDeny              // hosts.deny; Key is the client pattern, ".dsl.example" or "192.0.2."
)

// Proposal is one line to set.
type Proposal struct {
	Where   Where
	Key     string
	Value   int64 // for Config and AccessMap
	Current int64 // what is in force now (Config, AccessMap)
	Why     string
}

// Same reports whether the proposal keeps what is in force.
func (p Proposal) Same() bool { return p.Where != HostsDeny && p.Value == p.Current }

// Result is what Suggest proposes, and why.
type Result struct {
	From      string     // the days used for the limits, described
	Days      []string   // every date of the input
	Proposals []Proposal // limits first, then hosts.deny lines
	Notes     []string   // what was not proposed and why; doubts
}

// minTypicalSamples: a day with fewer samples of the sessions open (an
// hour's worth) is not a candidate for the typical day, unless no day
// has that many.
const minTypicalSamples = 3600

// Suggest applies the rules to days.
func Suggest(days []stats.Day, cur Current, o Options) (Result, error) {
	var res Result
	for _, d := range days {
		res.Days = append(res.Days, d.Date)
	}
	sel, from, err := pick(days, o.Day, o.ChildrenPercentile)
	if err != nil {
		return res, err
	}
	res.From = from
	res.Proposals = append(res.Proposals, children(sel, cur, o, from))
	if p, ok := throttle(sel, cur, o, from); ok {
		res.Proposals = append(res.Proposals, p)
	} else {
		res.Notes = append(res.Notes, "connection_rate_throttle: no connections were counted "+from+": left as it is")
	}
	window := cur.Window
	if window <= 0 {
		window = time.Minute
	}
	if sel.ClientRate.Count() == 0 {
		res.Notes = append(res.Notes, "client_rate, client_conn: no client delivered mail "+from+": left as they are")
	} else {
		res.Proposals = append(res.Proposals, clientLimits(sel, cur, o, from, window)...)
	}
	deny, notes := denyLines(days, cur, o)
	res.Proposals = append(res.Proposals, deny...)
	res.Notes = append(res.Notes, notes...)
	return res, nil
}

// pick returns the day (or days together) the limits come from, and a
// description of it.
func pick(days []stats.Day, which string, q float64) (stats.Day, string, error) {
	var sampled []stats.Day
	for _, d := range days {
		if d.Concurrency.Count() > 0 {
			sampled = append(sampled, d)
		}
	}
	if len(sampled) == 0 {
		return stats.Day{}, "", errors.New("no traffic to go by: no sample of the sessions open on any day")
	}
	switch which {
	case "all":
		var all stats.Day
		for _, d := range sampled {
			all.Merge(d)
		}
		all.Date = sampled[0].Date + " to " + sampled[len(sampled)-1].Date
		return all, fmt.Sprintf("from %s to %s (%d days together)", sampled[0].Date, sampled[len(sampled)-1].Date, len(sampled)), nil
	case "", "typical":
	default:
		if _, err := time.Parse("2006-01-02", which); err != nil {
			return stats.Day{}, "", fmt.Errorf("day %q: give a date YYYY-MM-DD, \"typical\" or \"all\"", which)
		}
		for _, d := range sampled {
			if d.Date == which {
				return d, "on " + d.Date, nil
			}
		}
		return stats.Day{}, "", fmt.Errorf("day %s: no traffic recorded that day (days: %s)", which, dates(sampled))
	}
	// The typical day: of the days with an hour of samples or more, the
	// one whose percentile of sessions open is the median (the lower of
	// two), so that neither a flood nor a holiday sets the limits.
	cands := slices.DeleteFunc(slices.Clone(sampled), func(d stats.Day) bool { return d.Concurrency.Count() < minTypicalSamples })
	if len(cands) == 0 {
		cands = sampled
	}
	slices.SortStableFunc(cands, func(a, b stats.Day) int {
		return cmp.Compare(a.Concurrency.Quantile(q), b.Concurrency.Quantile(q))
	})
	d := cands[(len(cands)-1)/2]
	if len(cands) == 1 {
		return d, "on " + d.Date, nil
	}
	byDate := slices.Clone(cands)
	slices.SortFunc(byDate, func(a, b stats.Day) int { return strings.Compare(a.Date, b.Date) })
	var figs []string
	for _, c := range byDate {
		figs = append(figs, fmt.Sprintf("%s: %d", c.Date, c.Concurrency.Quantile(q)))
	}
	return d, fmt.Sprintf("on %s, the typical day (the median p%s of sessions open of %d days: %s)",
		d.Date, pct(q), len(cands), strings.Join(figs, ", ")), nil
}

func dates(days []stats.Day) string {
	var s []string
	for _, d := range days {
		s = append(s, d.Date)
	}
	return strings.Join(s, ", ")
}

// pct writes a quantile as a percentile: 0.95 is "95", 0.999 "99.9".
func pct(q float64) string {
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.3f", q*100), "0"), ".")
}

func children(d stats.Day, cur Current, o Options, from string) Proposal {
	p := d.Concurrency.Quantile(o.ChildrenPercentile)
	v := max(o.ChildrenFactor*p, o.ChildrenMin)
	return Proposal{Where: Config, Key: "limits.max_daemon_children", Value: v, Current: cur.MaxDaemonChildren,
		Why: fmt.Sprintf("%d × %d (p%s of %s samples of the sessions open, one a second, %s), never below %d",
			o.ChildrenFactor, p, pct(o.ChildrenPercentile), count(d.Concurrency.Count()), from, o.ChildrenMin)}
}

func throttle(d stats.Day, cur Current, o Options, from string) (Proposal, bool) {
	if d.AcceptRate.Count() == 0 {
		return Proposal{}, false
	}
	p := d.AcceptRate.Quantile(o.ThrottlePercentile)
	v := max(o.ThrottleFactor*p, o.ThrottleMin)
	return Proposal{Where: Config, Key: "limits.connection_rate_throttle", Value: v, Current: cur.ConnectionRateThrottle,
		Why: fmt.Sprintf("%d × %d (p%s of the connections accepted in each of %s seconds %s; the busiest had %d), never below %d",
			o.ThrottleFactor, p, pct(o.ThrottlePercentile), count(d.AcceptRate.Count()), from, d.AcceptRate.Max(), o.ThrottleMin)}, true
}

func clientLimits(d stats.Day, cur Current, o Options, from string, window time.Duration) []Proposal {
	n := count(d.ClientRate.Count())
	recorded := time.Duration(d.Window) * time.Second
	if recorded <= 0 {
		recorded = window
	}
	rate := d.ClientRate.Quantile(o.ClientPercentile)
	rateV := ceil(float64(rate) * o.ClientMargin * float64(window) / float64(recorded))
	rateWhy := fmt.Sprintf("%s × %d (p%s of the connections in the busiest %v of each client that delivered mail, %s client-hours %s)",
		num(o.ClientMargin), rate, pct(o.ClientPercentile), recorded, n, from)
	if recorded != window {
		rateWhy += fmt.Sprintf(", × %v / %v for the window in force", window, recorded)
	}
	rateWhy += fmt.Sprintf(", at least %d", o.MinClientRate)
	conn := d.ClientConn.Quantile(o.ClientPercentile)
	connV := ceil(float64(conn) * o.ClientMargin)
	connWhy := fmt.Sprintf("%s × %d (p%s of the most sessions open at once of each client that delivered mail, %s client-hours %s), at least %d",
		num(o.ClientMargin), conn, pct(o.ClientPercentile), n, from, o.MinClientConn)
	rateP := Proposal{Where: Config, Key: "limits.client_rate", Value: max(rateV, o.MinClientRate), Current: cur.ClientRate, Why: rateWhy}
	if cur.ClientRateInAccess {
		rateP.Where, rateP.Key = AccessMap, "ClientRate:"
	}
	connP := Proposal{Where: Config, Key: "limits.client_conn", Value: max(connV, o.MinClientConn), Current: cur.ClientConn, Why: connWhy}
	if cur.ClientConnInAccess {
		connP.Where, connP.Key = AccessMap, "ClientConn:"
	}
	return []Proposal{rateP, connP}
}

// ceil rounds up, leaving alone what float arithmetic put a hair above a
// whole number (2 × 2.5 × 60/60).
func ceil(f float64) int64 {
	r := math.Round(f)
	if math.Abs(f-r) < 1e-9 {
		return int64(r)
	}
	return int64(math.Ceil(f))
}

func num(f float64) string {
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.2f", f), "0"), ".")
}

// count writes n with thousands separators.
func count(n int64) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// denyLines proposes hosts.deny lines from every day: the networks and
// the suffixes whose clients drew the most refusals and delivered nothing.
func denyLines(days []stats.Day, cur Current, o Options) ([]Proposal, []string) {
	var all stats.Day
	for _, d := range days {
		all.Merge(d)
	}
	if len(days) == 0 {
		return nil, nil
	}
	span := "on " + days[0].Date
	if len(days) > 1 {
		span = "from " + days[0].Date + " to " + days[len(days)-1].Date
	}
	var notes []string
	if all.UntrackedDeliveries > 0 {
		notes = append(notes, fmt.Sprintf("hosts.deny: %s messages came from networks or suffixes the day's tables had no room for (%d kept a day); a proposed line could cover one of them",
			count(all.UntrackedDeliveries), stats.MaxDeliverers))
	}
	var deliveringSuffixes []string
	for _, s := range all.Suffixes {
		if s.Delivered > 0 {
			deliveringSuffixes = append(deliveringSuffixes, s.Key)
		}
	}
	var out []Proposal
	take := func(list []stats.Source, pattern func(string) (string, bool), what string) {
		slices.SortFunc(list, func(a, b stats.Source) int {
			if c := cmp.Compare(b.Refusals(), a.Refusals()); c != 0 {
				return c
			}
			return strings.Compare(a.Key, b.Key)
		})
		var chosen []string
		for _, s := range list {
			if len(chosen) >= o.DenyTop || s.Refusals() < o.DenyMinRefusals {
				break
			}
			if s.Delivered > 0 || slices.ContainsFunc(chosen, func(c string) bool { return strings.HasSuffix(s.Key, "."+c) }) {
				continue // delivered mail; or a part of a suffix already proposed
			}
			pat, ok := pattern(s.Key)
			if !ok {
				continue
			}
			if v := cur.Wrappers.Check(tcpwrap.Daemon, probe(s.Key, what)); !v.Allowed {
				continue // hosts.deny refuses it already
			} else if v.File != "" {
				notes = append(notes, fmt.Sprintf("hosts.deny: %s %s drew %s refusals, but %s:%d allows it (%s): not proposed",
					what, s.Key, count(s.Refusals()), v.File, v.Line, v.Pattern))
				continue
			}
			out = append(out, Proposal{Where: HostsDeny, Key: pat,
				Why: fmt.Sprintf("%s refusals (%s) %s, no message delivered", count(s.Refusals()), reasonsText(s.Refused), span)})
			chosen = append(chosen, s.Key)
		}
	}
	take(all.Suffixes, func(key string) (string, bool) {
		for _, d := range deliveringSuffixes {
			if strings.HasSuffix(d, "."+key) {
				notes = append(notes, fmt.Sprintf("hosts.deny: .%s not proposed: its part %s delivered mail", key, d))
				return "", false
			}
		}
		return "." + key, true
	}, "suffix")
	take(all.Networks, func(key string) (string, bool) {
		p, err := netip.ParsePrefix(key)
		if err != nil {
			return "", false
		}
		for _, t := range cur.Trusted {
			if t.Overlaps(p) {
				return "", false // never refuse a trusted network
			}
		}
		return networkPattern(p), true
	}, "network")
	return out, notes
}

// networkPattern is a network as hosts_access(5) writes it: "192.0.2."
// for a /24, "[2001:db8:1:2::]/64" for IPv6.
func networkPattern(p netip.Prefix) string {
	if p.Addr().Is4() && p.Bits() == 24 {
		a := p.Addr().As4()
		return fmt.Sprintf("%d.%d.%d.", a[0], a[1], a[2])
	}
	return "[" + p.Addr().String() + "]/" + fmt.Sprint(p.Bits())
}

// probe is a client of the network or with the suffix, to ask the TCP
// wrappers in force about it: with an address and a name, so that only
// a rule for the network or the suffix (or for everyone) matches it, not
// UNKNOWN or KNOWN.
func probe(key, what string) tcpwrap.Client {
	if what == "suffix" {
		return tcpwrap.Client{Name: "host." + key, Addr: netip.MustParseAddr("192.0.2.1")}
	}
	p, _ := netip.ParsePrefix(key)
	return tcpwrap.Client{Addr: p.Addr(), Name: "host.invalid"}
}

// reasonsText lists a source's refusals by reason, most first.
func reasonsText(m map[reason.Reason]int64) string {
	type rc struct {
		r reason.Reason
		n int64
	}
	var l []rc
	for r, n := range m {
		l = append(l, rc{r, n})
	}
	slices.SortFunc(l, func(a, b rc) int {
		if c := cmp.Compare(b.n, a.n); c != 0 {
			return c
		}
		return cmp.Compare(a.r, b.r)
	})
	var parts []string
	for _, x := range l {
		parts = append(parts, fmt.Sprintf("%s %s", x.r, count(x.n)))
	}
	return strings.Join(parts, ", ")
}
