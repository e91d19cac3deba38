package metrics

import (
	"cmp"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/reason"
)

// TestSeries: the buckets come out oldest first, each count in its own
// bucket, only the reasons counted, and the last bucket's elapsed part.
func TestSeries(t *testing.T) {
	c := &clock{t: time.Unix(1_800_000_000, 0)} // a bucket's start
	r := NewRecent(c.now)
	bot := netip.MustParseAddr("192.0.2.7")
	r.Refused(reason.Pregreet, bot)
	r.Admitted()
	c.t = c.t.Add(25 * time.Second) // two buckets on, 5 s into the third
	r.Refused(reason.Pregreet, bot)
	r.Refused(reason.Pregreet, bot)
	r.Refused(reason.DenyList, bot)
	r.Accepted()

	s := r.Series(time.Minute)
	if len(s.Admitted) != 6 || len(s.Accepted) != 6 || s.Step != 10*time.Second {
		t.Fatalf("series of a minute: %d, %d buckets of %v", len(s.Admitted), len(s.Accepted), s.Step)
	}
	if want := c.t.Add(-55 * time.Second); !s.Start.Equal(want) {
		t.Errorf("start %v, want %v", s.Start, want)
	}
	if s.Elapsed != 5*time.Second {
		t.Errorf("elapsed %v, want 5s", s.Elapsed)
	}
	if got := s.Refused[reason.Pregreet]; len(got) != 6 || got[3] != 1 || got[4] != 0 || got[5] != 2 {
		t.Errorf("pregreet %v, want [0 0 0 1 0 2]", got)
	}
	if got := s.Refused[reason.DenyList]; got[5] != 1 {
		t.Errorf("deny_list %v", got)
	}
	if _, ok := s.Refused[reason.RateControl]; ok || len(s.Refused) != 2 {
		t.Errorf("reasons never counted are in the series: %v", s.Refused)
	}
	if s.Admitted[3] != 1 || s.Accepted[5] != 1 {
		t.Errorf("admitted %v, accepted %v", s.Admitted, s.Accepted)
	}
	if h := r.Series(2 * time.Hour); len(h.Admitted) != numBuckets {
		t.Errorf("a series of two hours has %d buckets, want the window's %d", len(h.Admitted), numBuckets)
	}
	// An hour on, the old buckets are not read as new.
	c.t = c.t.Add(time.Hour)
	if s := r.Series(time.Hour); len(s.Refused) != 0 {
		t.Errorf("an hour later: %v", s.Refused)
	}
}

// TestSummaryNamed: the clients are grouped by the suffix of their names,
// with the sum of their counts, how many they are, and the reason of the
// one that drew a refusal last; clients without a name are left out.
func TestSummaryNamed(t *testing.T) {
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	r := NewRecent(c.now)
	names := map[netip.Addr]string{
		netip.MustParseAddr("192.0.2.1"):    "h1.dyn.example.net",
		netip.MustParseAddr("192.0.2.2"):    "H2.Dyn.Example.Net.",
		netip.MustParseAddr("198.51.100.1"): "mail.example.org",
	}
	name := func(a netip.Addr) string { return names[a] }
	for range 3 {
		r.Refused(reason.Pregreet, netip.MustParseAddr("192.0.2.1"))
	}
	c.t = c.t.Add(10 * time.Second)
	r.Refused(reason.NonSMTP, netip.MustParseAddr("192.0.2.2"))
	r.Refused(reason.UnknownUser, netip.MustParseAddr("198.51.100.1"))
	for range 9 {
		r.Refused(reason.RateControl, netip.MustParseAddr("203.0.113.5")) // no name
	}
	s := r.SummaryNamed(time.Minute, 10, name)
	want := []NameOffender{
		{Suffix: ".dyn.example.net", Count: 4, Clients: 2, Reason: reason.NonSMTP},
		{Suffix: ".example.org", Count: 1, Clients: 1, Reason: reason.UnknownUser},
	}
	if len(s.TopNames) != len(want) {
		t.Fatalf("names %+v, want %+v", s.TopNames, want)
	}
	for i, w := range want {
		g := s.TopNames[i]
		if g.Suffix != w.Suffix || g.Count != w.Count || g.Clients != w.Clients || g.Reason != w.Reason {
			t.Errorf("names[%d] = %+v, want %+v", i, g, w)
		}
	}
	if s.TopIPs[0].Count != 9 {
		t.Errorf("top clients: %+v", s.TopIPs)
	}
	if s := r.SummaryNamed(time.Minute, 1, name); len(s.TopNames) != 1 {
		t.Errorf("n = 1: %+v", s.TopNames)
	}
	if s := r.Summary(time.Minute, 10); s.TopNames != nil {
		t.Errorf("Summary named clients: %+v", s.TopNames)
	}
}

func TestNameSuffix(t *testing.T) {
	for in, want := range map[string]string{
		"h1-2-3-4.dyn.example.net":               ".dyn.example.net",
		"Mail.Example.ORG.":                      ".example.org",
		"static.12.34.56.78.clients.example.net": ".clients.example.net", // stats.Suffix's rule
		"example.com":                            "",                     // a domain, not a provider's pool
		"localhost":                              "",
		"":                                       "",
	} {
		if got := NameSuffix(in); got != want {
			t.Errorf("NameSuffix(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestGauges: the console's figures of the moment are the collectors'
// own values, the ones /metrics serves.
func TestGauges(t *testing.T) {
	m := New()
	m.ConnAccepted()
	m.ConnAccepted()
	m.SessionStart(netip.MustParseAddr("192.0.2.50"), "")
	m.GreetPause(1)
	m.MessageAccepted(netip.MustParseAddr("192.0.2.50"), "")
	m.Stress(true)
	m.LimiterState(LimiterFallback)
	if g := m.Gauges(); g.Bans != -1 || g.SpoolMessages != 0 {
		t.Errorf("before the spool and bans gauges: %+v", g)
	}
	m.GaugeFunc(SpoolMessages, "h", func() float64 { return 7 })
	m.GaugeFunc(SpoolOldest, "h", func() float64 { return 90.2 })
	m.GaugeFunc(BansNow, "h", func() float64 { return 3 })
	want := Gauges{ConnectionsAccepted: 2, MessagesAccepted: 1, Sessions: 1, GreetPause: 1, Stress: true,
		Limiter: LimiterFallback, SpoolMessages: 7, SpoolOldest: 90 * time.Second, Bans: 3}
	if g := m.Gauges(); g != want {
		t.Errorf("Gauges() = %+v, want %+v", g, want)
	}
	var nilM *Metrics
	if g := nilM.Gauges(); g != (Gauges{Bans: -1}) {
		t.Errorf("nil Metrics: %+v", g)
	}
}

// TestTop: the ranking kept as it goes is the full sort's first n, ties
// broken by address.
func TestTop(t *testing.T) {
	m := map[netip.Prefix]*Offender{}
	var all []Offender
	for i := range 2000 {
		a := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		o := &Offender{Prefix: netip.PrefixFrom(a, 32), Count: int64((i * 7919) % 37), Reason: reason.Pregreet}
		m[o.Prefix] = o
		all = append(all, *o)
	}
	slices.SortFunc(all, func(a, b Offender) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		return a.Prefix.Addr().Compare(b.Prefix.Addr())
	})
	for _, n := range []int{0, 1, 10, 1999, 2000, 3000} {
		got := top(m, n)
		want := all[:min(n, len(all))]
		if !slices.Equal(got, want) {
			t.Errorf("top %d: got %d offenders, first %v; want first %v", n, len(got), got[:min(3, len(got))], want[:min(3, len(want))])
		}
	}
}

// BenchmarkSummaryHour is the hour's summary over a window full for the
// hour (every bucket's tables full, as under a flood from many
// addresses): what the console adds up every ten seconds while open
// (all), and the part of it done under the window's lock, which the
// refusals wait for (locked).
func BenchmarkSummaryHour(b *testing.B) {
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	r := NewRecent(c.now)
	start := c.t
	for i := range 200 * numBuckets {
		c.t = start.Add(time.Duration(i) * time.Hour / time.Duration(200*numBuckets))
		r.Refused(reason.Pregreet, netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
	}
	b.Run("all", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if s := r.Summary(time.Hour, 10); len(s.TopIPs) != 10 {
				b.Fatal(len(s.TopIPs))
			}
		}
	})
	b.Run("locked", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ips, _ := r.collect(time.Hour); len(ips) != topK*numBuckets {
				b.Fatal(len(ips))
			}
		}
	})
}
