package metrics

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"

	"github.com/mxguard/mxguard/internal/reason"
	"github.com/mxguard/mxguard/internal/stats"
)

// NameOffender is a reverse-DNS suffix and what its clients drew.
type NameOffender struct {
	Suffix  string        `json:"suffix"`  // as a hosts_access(5) pattern: ".dyn.example.net"
	Count   int64         `json:"count"`   // refusals of its clients
	Clients int           `json:"clients"` // how many of them
	Reason  reason.Reason `json:"reason"`  // the reason one of them drew most recently

	last int64
}

// NameSuffix is the reverse-DNS suffix a client named name is counted in,
// as hosts.deny writes a domain: stats.Suffix (the one rule, which
// suggest's hosts.deny lines follow too) with a leading dot
// (".dyn.example.net" for "h1-2-3-4.dyn.example.net"). "" for no name, or
// one too short to have a provider's suffix.
func NameSuffix(name string) string {
	if s := stats.Suffix(name); s != "" {
		return "." + s
	}
	return ""
}

// topNames groups the clients of ips by the suffix of their names and
// returns the n suffixes with the most refusals.
func topNames(ips map[netip.Prefix]*Offender, n int, name func(netip.Addr) string) []NameOffender {
	byName := map[string]*NameOffender{}
	for p, o := range ips {
		suffix := NameSuffix(name(p.Addr()))
		if suffix == "" {
			continue
		}
		g := byName[suffix]
		if g == nil {
			g = &NameOffender{Suffix: suffix}
			byName[suffix] = g
		}
		g.Count += o.Count
		g.Clients++
		if o.last > g.last || g.Reason == "" || o.last == g.last && o.Reason < g.Reason {
			g.Reason, g.last = o.Reason, o.last
		}
	}
	out := make([]NameOffender, 0, len(byName))
	for _, g := range byName {
		out = append(out, *g)
	}
	slices.SortFunc(out, func(a, b NameOffender) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		return strings.Compare(a.Suffix, b.Suffix)
	})
	if len(out) > n {
		out = out[:n]
	}
	return out
}
