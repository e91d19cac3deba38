package doctor

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/resolve"
)

const (
	// DNSRounds is how many times each address is looked up, each time
	// by a new resolver so that nothing comes from its cache.
	DNSRounds = 3
	// DNSBudget bounds the whole DNS check: a resolver that does not
	// answer costs each lookup 3 × resolve.DefaultTimeout.
	DNSBudget = 10 * time.Second
	// DNSSlow is the median lookup time over which the check warns. Every
	// new client waits for its lookup before the greeting.
	DNSSlow = 100 * time.Millisecond
	// maxHostAddrs bounds the host's own public addresses looked up.
	maxHostAddrs = 4
)

// docAddrs are in the documentation prefixes of RFC 5737 and RFC 3849,
// whose reverse zones a recursive resolver answers itself (RFC 6303, as
// Unbound and BIND do by default): their lookups test the resolver without
// depending on any server on the Internet, and always have an answer (no
// name).
var docAddrs = []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")}

// DNSAddrs are the addresses whose reverse names the DNS check looks up:
// each listen address that names one address, this host's public
// addresses (at most four), 127.0.0.1 when a resolver is configured (the
// system resolver path never asks DNS about loopback clients, which
// /etc/hosts names), and the documentation addresses.
func DNSAddrs(cfg *config.Config) []netip.Addr {
	var out []netip.Addr
	add := func(a netip.Addr) {
		a = a.Unmap().WithZone("")
		if !a.IsValid() || a.IsUnspecified() || cfg.Resolver == "" && a.IsLoopback() || slices.Contains(out, a) {
			return
		}
		out = append(out, a)
	}
	for _, l := range cfg.Listen {
		if host, _, err := net.SplitHostPort(l); err == nil {
			if a, err := netip.ParseAddr(host); err == nil {
				add(a)
			}
		}
	}
	if ifs, err := net.InterfaceAddrs(); err == nil {
		n := 0
		for _, ia := range ifs {
			p, err := netip.ParsePrefix(ia.String())
			if err != nil {
				continue
			}
			if a := p.Addr(); a.IsGlobalUnicast() && !a.IsPrivate() && n < maxHostAddrs {
				add(a)
				n++
			}
		}
	}
	if cfg.Resolver != "" {
		add(netip.MustParseAddr("127.0.0.1"))
	}
	for _, a := range docAddrs {
		add(a)
	}
	return out
}

// DNS times forward-confirmed reverse lookups of addrs through server (a
// configured resolver's host:port; "" for the system's, from
// /etc/resolv.conf), with the resolver mxguard uses for its clients. A
// lookup that gets no answer, or a median over DNSSlow, is a Warn: every
// new client waits for its lookup before the greeting.
func DNS(ctx context.Context, server string, addrs []netip.Addr) []Finding {
	via := server
	if via == "" {
		via = "the system's resolver (/etc/resolv.conf)"
	}
	if len(addrs) == 0 {
		return []Finding{finding(OK, CheckDNS, "nothing to look up through %s", via)}
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, DNSBudget)
	defer cancel()
	var (
		logs     bytes.Buffer
		took     []time.Duration // of the lookups that were answered
		first    []string        // what the first round found, per address
		lookups  int
		noAnswer []string
	)
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
rounds:
	for round := range DNSRounds {
		r, err := resolve.New(resolve.Config{Server: server}, log)
		if err != nil {
			return []Finding{finding(Fail, CheckDNS, "%v", err)}
		}
		for _, a := range addrs {
			if ctx.Err() != nil {
				break rounds // out of time (or interrupted): report what was found
			}
			start := time.Now()
			res := r.Verify(ctx, a)
			d := time.Since(start)
			lookups++
			if res.Status == resolve.TempFail {
				if !slices.Contains(noAnswer, a.String()) {
					noAnswer = append(noAnswer, a.String())
				}
			} else {
				took = append(took, d)
			}
			if round == 0 {
				first = append(first, a.String()+": "+describe(res))
			}
		}
		if len(took) == 0 {
			break // nothing answers: the other rounds would only wait as long again
		}
	}
	if parent.Err() != nil {
		return []Finding{finding(Fail, CheckDNS, "interrupted")}
	}
	var out []Finding
	if s := strings.TrimSpace(logs.String()); s != "" {
		out = append(out, lines(Warn, CheckDNS, s)...)
	}
	found := strings.Join(first, "; ")
	if len(took) == 0 {
		return append(out, finding(Warn, CheckDNS, "no reverse lookup through %s got an answer (%s): every new client waits for its lookup before the greeting, "+
			"up to %v, and host names in the access map and the hosts files match no client", via, found, 3*resolve.DefaultTimeout))
	}
	slices.Sort(took)
	figures := fmt.Sprintf("%d of %d reverse lookups through %s answered, median %s, slowest %s (%s)",
		len(took), lookups, via, ms(percentile(took, 50)), ms(took[len(took)-1]), found)
	switch {
	case len(noAnswer) > 0:
		out = append(out, finding(Warn, CheckDNS, "%s; no answer for %s: a client whose lookup gets none waits up to %v before the greeting, "+
			"and host names in the access map and the hosts files cannot match it", figures, strings.Join(noAnswer, ", "), 3*resolve.DefaultTimeout))
	case percentile(took, 50) > DNSSlow:
		out = append(out, finding(Warn, CheckDNS, "%s; the median is over %s: every new client waits for its lookup before the greeting "+
			"(a caching resolver on this host or next to it helps)", figures, ms(DNSSlow)))
	default:
		out = append(out, finding(OK, CheckDNS, "%s", figures))
	}
	return out
}

// describe says what one lookup found.
func describe(res resolve.Result) string {
	switch res.Status {
	case resolve.OK:
		return res.Name
	case resolve.NoName:
		return "no name"
	case resolve.Mismatch:
		return "name " + res.PTR + " does not resolve back"
	}
	return "no answer"
}
