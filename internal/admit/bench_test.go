package admit

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/accessmap"
	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/dnsbl"
	"github.com/mxguard/mxguard/internal/dnstest"
	"github.com/mxguard/mxguard/internal/limit"
	"github.com/mxguard/mxguard/internal/reason"
	"github.com/mxguard/mxguard/internal/reputation"
	"github.com/mxguard/mxguard/internal/resolve"
	"github.com/mxguard/mxguard/internal/tcpwrap"
)

// The benchmarks below measure what each admission step costs an ordinary
// client, one that every step lets through: what a connection that is not
// refused pays for each control an operator turns on. Their inputs are of
// a size a busy server has: a deny list of 1,000 networks, an access map
// of 10,000 entries, a hosts.deny of 1,000 domains and a few other
// patterns, a reputation book with and without bans. The deny list and
// the bans are also run at 10 and 100,000 entries, since a fleet's grow:
// their cost should not.

// benchClient is one client and what the rdns step found of it.
type benchClient struct {
	addr netip.Addr
	host string
	dns  resolve.Status
}

// benchClients are n ordinary clients, each in a /24 of its own (so that
// a second tier counts each apart), with a forward-confirmed name.
func benchClients(n int) []benchClient {
	cs := make([]benchClient, n)
	for i := range cs {
		cs[i] = benchClient{
			addr: netip.AddrFrom4([4]byte{198, 18 + byte(i>>8), byte(i), 1}),
			host: fmt.Sprintf("mail%d.example.net", i),
			dns:  resolve.OK,
		}
	}
	return cs
}

// benchDenied is a deny list of n networks, /16 to /32, in 10.0.0.0/8,
// which the clients are not in: each one is scanned.
func benchDenied(n int) []netip.Prefix {
	r := rand.New(rand.NewPCG(uint64(n), 1))
	seen := make(map[netip.Prefix]bool, n)
	out := make([]netip.Prefix, 0, n)
	for len(out) < n {
		a := netip.AddrFrom4([4]byte{10, byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())})
		p := netip.PrefixFrom(a, 16+r.IntN(17)).Masked()
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// benchAccess is an access map of n entries in the proportions of a large
// real one (mostly Connect: entries for addresses and /24s, some networks,
// host names and IPv6, and a few hundred ClientRate:, ClientConn: and
// GreetPause: entries), none of which matches the clients, plus the
// GreetPause: default.
func benchAccess(tb testing.TB, n int) *accessmap.Map {
	tb.Helper()
	r := rand.New(rand.NewPCG(uint64(n), 2))
	v4 := func() netip.Addr {
		if r.IntN(2) == 0 {
			return netip.AddrFrom4([4]byte{10, byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())})
		}
		return netip.AddrFrom4([4]byte{172, 16 + byte(r.IntN(16)), byte(r.Uint32()), byte(r.Uint32())})
	}
	var b strings.Builder
	b.WriteString("GreetPause: 2000\n")
	seen := make(map[string]bool, n)
	for i := 0; len(seen) < n; i++ {
		tag := accessmap.TagConnect
		var key string
		switch k := r.IntN(40); {
		case k < 18:
			key = v4().String()
		case k < 22:
			a := v4().As4()
			key = fmt.Sprintf("%d.%d.%d", a[0], a[1], a[2])
		case k < 24:
			key = netip.PrefixFrom(v4(), 12+r.IntN(17)).Masked().String()
		case k < 32:
			key = fmt.Sprintf("h%d.bench.test", i)
		case k < 36:
			var a [16]byte
			a[0], a[1], a[2], a[3] = 0x20, 0x01, 0x0d, 0xb8
			for j := 4; j < 16; j++ {
				a[j] = byte(r.Uint32())
			}
			key = "IPv6:" + netip.PrefixFrom(netip.AddrFrom16(a), [...]int{48, 64, 128}[r.IntN(3)]).Masked().String()
		default:
			tag = [...]string{accessmap.TagClientRate, accessmap.TagClientConn, accessmap.TagGreetPause}[r.IntN(3)]
			a := v4().As4()
			key = fmt.Sprintf("%d.%d.%d", a[0], a[1], a[2])
		}
		if seen[tag+key] {
			continue
		}
		seen[tag+key] = true
		value := [...]string{"OK", "REJECT", "RELAY", "DISCARD"}[r.IntN(4)]
		if tag != accessmap.TagConnect {
			value = "0"
		}
		fmt.Fprintf(&b, "%s:%s %s\n", tag, key, value)
	}
	m, err := accessmap.Parse(strings.NewReader(b.String()), "access")
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

// benchWrappers is a hosts.deny of 1,000 domains and the other kinds of
// pattern (PARANOID, networks, a wildcard, EXCEPT), none matching the
// clients.
func benchWrappers(tb testing.TB) *tcpwrap.Table {
	tb.Helper()
	var b strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&b, "sendmail: .pool%d.isp%d.example\n", i, i%97)
	}
	b.WriteString("ALL: PARANOID\n" +
		"mxguard: 198.51.100.0/24, 203.0.113., [2001:db8::]/32\n" +
		"mxguard: *.dialup.example.net\n" +
		"ALL EXCEPT sshd: .spam.example EXCEPT ok.spam.example\n")
	t, err := tcpwrap.Parse(nil, strings.NewReader(b.String()), "", "hosts.deny")
	if err != nil {
		tb.Fatal(err)
	}
	return t
}

// benchBook is a reputation book as the default configuration makes it,
// with bans on and bans of n other clients in force.
func benchBook(tb testing.TB, p *Policy, bans int) *reputation.Book {
	tb.Helper()
	book, err := reputation.New(reputation.Config{
		Points:      reputation.Points(-5, -2, -1),
		TarpitBelow: -3, TarpitStep: 500 * time.Millisecond, TarpitMax: 5 * time.Second,
		BanBelow: -20, BanTime: time.Hour, ForgiveAfter: 5 * time.Minute, MaxClients: 100_000,
	}, nil, p.IsTrusted, nil)
	if err != nil {
		tb.Fatal(err)
	}
	for i := range bans {
		a := netip.AddrFrom4([4]byte{10, byte(200 + i>>16), byte(i >> 8), byte(i)})
		book.Add(reputation.Ban{Prefix: netip.PrefixFrom(a, 32), Reason: reason.Pregreet, By: "score",
			Created: time.Now(), Expires: time.Now().Add(time.Hour)})
	}
	return book
}

// benchLimiter is the in-memory limiter on a clock that moves a second
// ahead at each reading, so that each client's earlier connections have
// left its window when it comes round again: it stays under its limit
// however many iterations run. The clock still reads time.Now, as the
// real one does.
func benchLimiter(tb testing.TB) *limit.Memory {
	var tick atomic.Int64
	m := limit.NewMemory(func() time.Time { return time.Now().Add(time.Duration(tick.Add(1)) * time.Second) })
	tb.Cleanup(m.Close)
	return m
}

// benchResolver is the real reverse-DNS resolver, against a loopback DNS
// server that names the clients, its cache warmed with every one.
func benchResolver(tb testing.TB, cs []benchClient) *resolve.Resolver {
	tb.Helper()
	var rrs []string
	for _, c := range cs {
		a := c.addr.As4()
		rrs = append(rrs, fmt.Sprintf("%d.%d.%d.%d.in-addr.arpa. 3600 IN PTR %s.", a[3], a[2], a[1], a[0], c.host),
			fmt.Sprintf("%s. 3600 IN A %s", c.host, c.addr))
	}
	srv := dnstest.Start(tb, rrs...)
	r, err := resolve.New(resolve.Config{Server: srv.Addr}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	for _, c := range cs {
		if res := r.Verify(context.Background(), c.addr); res.Status != resolve.OK || res.Name != c.host {
			tb.Fatalf("%s: %+v", c.addr, res)
		}
	}
	return r
}

// benchSites are three lists, none listing the clients; dnsbl's own
// benchmarks have a listed address.
var benchSites = []string{"zen.spamhaus.org*2", "bl.spamcop.net", "list.dnswl.org=127.0.[0..255].[1..3]*-5"}

// benchLists is a DNSBL checker of the three lists against a loopback DNS
// server, its cache warmed with every client.
func benchLists(tb testing.TB, cs []benchClient) *dnsbl.Checker {
	tb.Helper()
	var rrs []string
	for _, s := range benchSites {
		zone := strings.SplitN(strings.SplitN(s, "=", 2)[0], "*", 2)[0]
		rrs = append(rrs, fmt.Sprintf("%s. 3600 IN SOA ns.%s. hostmaster.%s. 1 3600 600 86400 3600", zone, zone, zone))
	}
	srv := dnstest.Start(tb, rrs...)
	sites, err := dnsbl.ParseSites(benchSites)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := dnsbl.New(dnsbl.Config{Sites: sites, Server: srv.Addr, Timeout: 5 * time.Second}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Close)
	ctx := context.Background()
	for _, cl := range cs {
		if r := c.Start(ctx, cl.addr).Wait(ctx); r.Score != 0 {
			tb.Fatalf("%s: score %d", cl.addr, r.Score)
		}
	}
	if n := srv.Queries(); n != len(cs)*len(benchSites) {
		tb.Fatalf("%d queries to warm the cache, want %d", n, len(cs)*len(benchSites))
	}
	return c
}

func benchPolicy(lim config.Limits) *Policy {
	return &Policy{Hostname: "mx.test", Limits: lim, NoFCrDNSPoints: -1,
		Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}}
}

// benchStep runs the step alone on a fresh check for each client in turn,
// as runStep does, with what the rdns step found of the client already on
// the decision, and fails if the step refuses it. after, if set, runs in
// the timed loop too: what the connection pays later for the step (giving
// back its counts, collecting the DNS lists' answers). The Decision is
// made once and cleared for each check, so that its allocation, which
// Admit makes once for all the steps, is not counted to each.
func benchStep(b *testing.B, a *Admitter, name string, cs []benchClient, after func(*Decision)) {
	var s *step
	for i := range steps {
		if steps[i].name == name {
			s = &steps[i]
		}
	}
	if s == nil && name != "" {
		b.Fatalf("no step %s", name)
	}
	p := a.policy.Load()
	ctx := context.Background()
	d := new(Decision)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		cl := &cs[i%len(cs)]
		i++
		*d = Decision{Policy: p, Host: cl.host, DNS: cl.dns}
		d.releases = d.relBuf[:0]
		d.check = check{ctx: ctx, addr: cl.addr, p: p, d: d}
		if s != nil && s.run(a, &d.check) {
			b.Fatalf("step %s refused %s: %s", name, cl.addr, d.Reason)
		}
		if d.Reject != nil || d.Defer != nil {
			b.Fatalf("step %s: %s: %v %v", name, cl.addr, d.Reject, d.Defer)
		}
		if after != nil {
			after(d)
		}
	}
}

func newBenchAdmitter(p *Policy, deps Deps) *Admitter {
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	return New(p, deps)
}

// BenchmarkStep is each admission step alone, for an ordinary client.
func BenchmarkStep(b *testing.B) {
	cs := benchClients(256)
	release := func(d *Decision) { d.Release() }

	b.Run("fresh_check", func(b *testing.B) { // the floor: no step at all
		a := newBenchAdmitter(benchPolicy(limits()), Deps{Limiter: benchLimiter(b)})
		benchStep(b, a, "", cs, nil)
	})
	b.Run("max_daemon_children", func(b *testing.B) {
		lim := limits()
		lim.MaxDaemonChildren = 1000
		a := newBenchAdmitter(benchPolicy(lim), Deps{Limiter: benchLimiter(b)})
		benchStep(b, a, "max_daemon_children", cs, release)
	})
	for _, n := range []int{0, 10, 1000, 100_000} {
		b.Run(fmt.Sprintf("deny_list/prefixes=%d", n), func(b *testing.B) {
			p := benchPolicy(limits())
			p.Denied = benchDenied(n)
			a := newBenchAdmitter(p, Deps{Limiter: benchLimiter(b)})
			benchStep(b, a, "deny_list", cs, nil)
		})
	}
	b.Run("ban/no_book", func(b *testing.B) {
		a := newBenchAdmitter(benchPolicy(limits()), Deps{Limiter: benchLimiter(b)})
		benchStep(b, a, "ban", cs, nil)
	})
	for _, n := range []int{0, 10, 1000, 100_000} {
		b.Run(fmt.Sprintf("ban/bans=%d", n), func(b *testing.B) {
			p := benchPolicy(limits())
			a := newBenchAdmitter(p, Deps{Limiter: benchLimiter(b), Reputation: benchBook(b, p, n)})
			benchStep(b, a, "ban", cs, nil)
		})
	}
	b.Run("throttle", func(b *testing.B) {
		lim := limits()
		lim.ConnectionRateThrottle = 1 << 30 // on, and never reached: no stall
		a := newBenchAdmitter(benchPolicy(lim), Deps{Limiter: benchLimiter(b)})
		benchStep(b, a, "throttle", cs, nil)
	})
	b.Run("rdns/resolver_cached", func(b *testing.B) {
		a := newBenchAdmitter(benchPolicy(limits()), Deps{Limiter: benchLimiter(b), DNS: benchResolver(b, cs)})
		benchStep(b, a, "rdns", cs, nil)
	})
	b.Run("rdns/names_map", func(b *testing.B) {
		n := names{}
		for _, c := range cs {
			n[c.addr.String()] = c.host
		}
		a := newBenchAdmitter(benchPolicy(limits()), Deps{Limiter: benchLimiter(b), DNS: n})
		benchStep(b, a, "rdns", cs, nil)
	})
	b.Run("score/named", func(b *testing.B) {
		p := benchPolicy(limits())
		a := newBenchAdmitter(p, Deps{Limiter: benchLimiter(b), Reputation: benchBook(b, p, 0)})
		benchStep(b, a, "score", cs, nil)
	})
	b.Run("score/unnamed", func(b *testing.B) { // no_fcrdns_points: a score entry per client
		p := benchPolicy(limits())
		a := newBenchAdmitter(p, Deps{Limiter: benchLimiter(b), Reputation: benchBook(b, p, 0)})
		anon := make([]benchClient, len(cs))
		for i, c := range cs {
			anon[i] = benchClient{addr: c.addr, dns: resolve.NoName}
		}
		benchStep(b, a, "score", anon, nil)
	})
	b.Run("tcpwrappers", func(b *testing.B) {
		p := benchPolicy(limits())
		p.Wrappers = benchWrappers(b)
		a := newBenchAdmitter(p, Deps{Limiter: benchLimiter(b)})
		benchStep(b, a, "tcpwrappers", cs, nil)
	})
	b.Run("access/entries=10000", func(b *testing.B) {
		p := benchPolicy(limits())
		p.Access = benchAccess(b, 10_000)
		a := newBenchAdmitter(p, Deps{Limiter: benchLimiter(b)})
		benchStep(b, a, "access", cs, nil)
	})
	for _, tiers := range [][]int{{32}, {32, 24}} {
		lim := limits()
		lim.ClientRate, lim.ClientConn = 10, 10
		lim.IPv4Tiers = tiers
		b.Run(fmt.Sprintf("ratecontrol/tiers=%d", len(tiers)), func(b *testing.B) {
			p := benchPolicy(lim)
			p.Access = benchAccess(b, 10_000)
			a := newBenchAdmitter(p, Deps{Limiter: benchLimiter(b)})
			benchStep(b, a, "ratecontrol", cs, nil)
		})
		b.Run(fmt.Sprintf("conncontrol/tiers=%d", len(tiers)), func(b *testing.B) {
			p := benchPolicy(lim)
			p.Access = benchAccess(b, 10_000)
			a := newBenchAdmitter(p, Deps{Limiter: benchLimiter(b)})
			benchStep(b, a, "conncontrol", cs, release)
		})
	}
	b.Run("dnsbl/sites=3", func(b *testing.B) {
		p := benchPolicy(limits())
		p.DNSBL = config.Default().DNSBL
		p.DNSBL.Sites = benchSites
		a := newBenchAdmitter(p, Deps{Limiter: benchLimiter(b), Lists: benchLists(b, cs)})
		ctx := context.Background()
		benchStep(b, a, "dnsbl", cs, func(d *Decision) {
			if l, asked := a.Listing(ctx, d, false); !asked || l.Listed || l.Result.Score != 0 {
				b.Fatalf("listing %+v, asked %v", l, asked)
			}
		})
	})
	b.Run("greet_pause/entries=10000", func(b *testing.B) {
		p := benchPolicy(limits())
		p.Access = benchAccess(b, 10_000)
		a := newBenchAdmitter(p, Deps{Limiter: benchLimiter(b)})
		benchStep(b, a, "greet_pause", cs, func(d *Decision) {
			if d.GreetPause != 2*time.Second {
				b.Fatalf("greet pause %v", d.GreetPause)
			}
		})
	})
}

// BenchmarkAdmitOrdinary is the whole admission of an ordinary client,
// given back at the end (Release): with nothing configured (no DNS, no
// scores, no limits: the loop over the steps), with what an empty
// configuration file turns on (reverse DNS, cached; the score book's
// tarpit), and with every step configured, the DNS lists' answers
// collected too (Listing), with no ban in force and with 1,000.
func BenchmarkAdmitOrdinary(b *testing.B) {
	cs := benchClients(256)
	run := func(b *testing.B, a *Admitter, listing bool) {
		ctx := context.Background()
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			cl := cs[i%len(cs)]
			i++
			d := a.Admit(ctx, cl.addr)
			if d.Reject != nil || d.Defer != nil {
				b.Fatalf("%s: %v %v", cl.addr, d.Reject, d.Defer)
			}
			if listing {
				if l, asked := a.Listing(ctx, d, false); !asked || l.Listed {
					b.Fatalf("%s: listing %+v, asked %v", cl.addr, l, asked)
				}
			}
			d.Release()
		}
	}
	b.Run("nothing", func(b *testing.B) {
		a := newBenchAdmitter(benchPolicy(limits()), Deps{Limiter: benchLimiter(b)})
		run(b, a, false)
	})
	b.Run("defaults", func(b *testing.B) {
		p := benchPolicy(limits())
		book, err := reputation.New(reputation.Config{
			Points:      reputation.Points(-5, -2, -1),
			TarpitBelow: -3, TarpitStep: 500 * time.Millisecond, TarpitMax: 5 * time.Second,
			ForgiveAfter: 5 * time.Minute, MaxClients: 100_000,
		}, nil, p.IsTrusted, nil)
		if err != nil {
			b.Fatal(err)
		}
		a := newBenchAdmitter(p, Deps{Limiter: benchLimiter(b), DNS: benchResolver(b, cs), Reputation: book})
		run(b, a, false)
	})
	everything := func(b *testing.B, bans int) *Admitter {
		lim := limits()
		lim.MaxDaemonChildren = 1000
		lim.ConnectionRateThrottle = 1 << 30
		lim.ClientRate, lim.ClientConn = 10, 10
		lim.IPv4Tiers = []int{32, 24}
		p := benchPolicy(lim)
		p.Denied = benchDenied(1000)
		p.Access = benchAccess(b, 10_000)
		p.Wrappers = benchWrappers(b)
		p.DNSBL = config.Default().DNSBL
		p.DNSBL.Sites = benchSites
		return newBenchAdmitter(p, Deps{Limiter: benchLimiter(b), DNS: benchResolver(b, cs),
			Reputation: benchBook(b, p, bans), Lists: benchLists(b, cs)})
	}
	b.Run("everything", func(b *testing.B) { run(b, everything(b, 0), false) })
	b.Run("everything+listing", func(b *testing.B) { run(b, everything(b, 0), true) })
	// A flood's clients banned by their scores: the ban step scans them.
	b.Run("everything+listing+bans=1000", func(b *testing.B) { run(b, everything(b, 1000), true) })
}

// BenchmarkAdmitRefused is the admission of a client over its ClientRate,
// as each connection of a flood after its first few: the rate step's
// count, the refusal, its counter and its log line, formatted by the text
// handler mxguard serve uses (into io.Discard: the write is logbuf's).
func BenchmarkAdmitRefused(b *testing.B) {
	cs := benchClients(256)
	lim := limits()
	lim.ClientRate = 1
	// A clock that stands still: the window never turns, every count stays.
	now := time.Now()
	m := limit.NewMemory(func() time.Time { return now })
	b.Cleanup(m.Close)
	a := newBenchAdmitter(benchPolicy(lim), Deps{
		Limiter: m,
		Log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	ctx := context.Background()
	for _, cl := range cs { // each client's one connection within its rate
		a.Admit(ctx, cl.addr).Release()
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		cl := cs[i%len(cs)]
		i++
		d := a.Admit(ctx, cl.addr)
		if d.Reject == nil || d.Reason != reason.RateControl {
			b.Fatalf("%s: not refused for its rate: %v %v", cl.addr, d.Reject, d.Reason)
		}
		d.Release()
	}
}
