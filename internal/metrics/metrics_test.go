package metrics

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mxguard/mxguard/internal/reason"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestRecentWindow(t *testing.T) {
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	r := NewRecent(c.now)
	bot := netip.MustParseAddr("192.0.2.7")
	for range 5 {
		r.Refused(reason.RateControl, bot)
	}
	r.Refused(reason.Pregreet, netip.MustParseAddr("192.0.2.8"))
	r.Refused(reason.UnknownUser, netip.MustParseAddr("2001:db8::1"))
	r.Admitted()
	r.Accepted()
	c.t = c.t.Add(30 * time.Second)
	r.Refused(reason.RateControl, bot)

	s := r.Summary(time.Minute, 10)
	if s.Refused[reason.RateControl] != 6 || s.Refused[reason.Pregreet] != 1 || s.Admitted != 1 || s.Accepted != 1 {
		t.Errorf("last minute: %+v", s)
	}
	if len(s.TopIPs) != 3 || s.TopIPs[0].Prefix.String() != "192.0.2.7/32" || s.TopIPs[0].Count != 6 || s.TopIPs[0].Reason != reason.RateControl {
		t.Errorf("top clients: %+v", s.TopIPs)
	}
	if len(s.TopNets) != 2 || s.TopNets[0].Prefix.String() != "192.0.2.0/24" || s.TopNets[0].Count != 7 || s.TopNets[1].Prefix.String() != "2001:db8::/64" {
		t.Errorf("top networks: %+v", s.TopNets)
	}

	// Two minutes on, the last minute is empty; the hour still has it.
	c.t = c.t.Add(2 * time.Minute)
	if s := r.Summary(time.Minute, 10); len(s.Refused) != 0 || len(s.TopIPs) != 0 {
		t.Errorf("a minute later: %+v", s)
	}
	if s := r.Summary(time.Hour, 10); s.Refused[reason.RateControl] != 6 {
		t.Errorf("the hour: %+v", s)
	}
	// An hour and more on, the buckets are reused, not read as new.
	c.t = c.t.Add(time.Hour)
	if s := r.Summary(time.Hour, 10); len(s.Refused) != 0 {
		t.Errorf("an hour later: %+v", s)
	}
}

// TestRecentBounded: a flood from a hundred thousand addresses keeps topK
// entries a bucket, and its one heavy hitter is still on top.
func TestRecentBounded(t *testing.T) {
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	r := NewRecent(c.now)
	heavy := netip.MustParseAddr("198.51.100.9")
	for i := range 100_000 {
		r.Refused(reason.ConnControl, netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
		if i%10 == 0 {
			r.Refused(reason.ConnControl, heavy)
		}
	}
	b := r.cur()
	if len(b.ips.entries) > topK || len(b.ips.index) > topK || len(b.nets.entries) > topK {
		t.Errorf("tables grew to %d/%d/%d entries", len(b.ips.entries), len(b.ips.index), len(b.nets.entries))
	}
	if s := r.Summary(time.Minute, 1); s.TopIPs[0].Prefix.Addr() != heavy || s.TopIPs[0].Count < 10_000 {
		t.Errorf("heavy hitter lost: %+v", s.TopIPs)
	}
}

// TestCounters: the registry exposes each family, reasons as labels from
// the vocabulary, all series present from the start.
func TestCounters(t *testing.T) {
	m := New()
	m.Refused(reason.RateControl, netip.MustParseAddr("192.0.2.1"), "")
	m.Refused(reason.RateControl, netip.MustParseAddr("192.0.2.2"), "")
	m.Command("RCPT", 550, time.Millisecond)
	m.Delivery(TransportMaildir, Delivered)
	m.LimiterState(LimiterFallback)
	if got := testutil.ToFloat64(m.refusedVec.WithLabelValues("connect", "ratecontrol")); got != 2 {
		t.Errorf("ratecontrol refusals = %v", got)
	}
	if got := testutil.ToFloat64(m.refusedVec.WithLabelValues("greet", "pregreet")); got != 0 {
		t.Errorf("pregreet = %v", got)
	}
	if n := testutil.CollectAndCount(m.refusedVec); n != len(reason.All()) {
		t.Errorf("%d refusal series, want one per reason (%d)", n, len(reason.All()))
	}
	if got := testutil.ToFloat64(m.limiter.WithLabelValues("fallback")); got != 1 {
		t.Errorf("limiter fallback = %v", got)
	}
	if got := testutil.ToFloat64(m.limiter.WithLabelValues("local")); got != 0 {
		t.Errorf("limiter local = %v after the fallback", got)
	}
	if n, err := testutil.GatherAndCount(m.Registry, "mxguard_deliveries_total"); err != nil || n != 9 {
		t.Errorf("%d delivery series (%v), want 9", n, err)
	}
	if !strings.HasPrefix(codeLabel(550), "550") || codeLabel(42) != "other" {
		t.Error("codeLabel")
	}
	var nilM *Metrics
	nilM.Refused(reason.RateControl, netip.Addr{}, "") // a nil Metrics counts nothing, and does not panic
	nilM.Command("MAIL", 250, 0)
}

func BenchmarkRefused(b *testing.B) {
	m := New()
	a := netip.MustParseAddr("192.0.2.7")
	b.ReportAllocs()
	for b.Loop() {
		m.Refused(reason.RateControl, a, "p1-2-3-4.dsl.example.net")
	}
}

func BenchmarkRefusedManyClients(b *testing.B) {
	m := New()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		m.Refused(reason.ConnControl, netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), "host.dsl.example.net")
		i++
	}
}

// BenchmarkSessionObserved is what the metrics add to one accepted
// session: its start and end, five commands timed, one message counted.
func BenchmarkSessionObserved(b *testing.B) {
	m := New()
	a := netip.MustParseAddr("198.51.100.7")
	b.ReportAllocs()
	for b.Loop() {
		m.SessionStart(a, "mail.example.org")
		for _, c := range [...]string{"EHLO", "MAIL", "RCPT", "DATA", "QUIT"} {
			m.Command(c, 250, 80*time.Microsecond)
		}
		m.MessageAccepted(a, "mail.example.org")
		m.SessionEnd(a)
	}
}
