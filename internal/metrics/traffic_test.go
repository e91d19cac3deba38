package metrics

import (
	"net/netip"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/reason"
)

// TestTrafficFromCounters: the days Traffic keeps hold what the
// Prometheus counters counted, with the clients and their names that
// labels may not hold.
func TestTrafficFromCounters(t *testing.T) {
	m := New()
	good, bot := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("203.0.113.9")
	for range 3 {
		m.ConnAccepted()
	}
	m.SessionStart(good, "mail.example.org")
	m.SessionStart(good, "mail.example.org")
	m.MessageAccepted(good, "mail.example.org")
	m.Refused(reason.RateControl, bot, "p1-2-3-4.dsl.example.net")
	m.Refused(reason.Pregreet, bot, "p1-2-3-4.dsl.example.net")
	m.SampleTraffic(time.Now())
	m.SessionEnd(good)
	m.SessionEnd(good)

	days := m.Traffic.Days()
	if len(days) != 1 {
		t.Fatalf("%d days", len(days))
	}
	d := days[len(days)-1]
	if d.Concurrency.Count() != 1 || d.Concurrency.Max() != 2 || d.Accepted != 3 || d.AcceptRate.Max() != 3 {
		t.Errorf("sampled %d times, max %d sessions; %d accepted, %d in the busiest second; want 1, 2, 3, 3",
			d.Concurrency.Count(), d.Concurrency.Max(), d.Accepted, d.AcceptRate.Max())
	}
	if d.Messages != 1 || d.Sessions != 2 || d.Refused[reason.RateControl] != 1 || d.Refused[reason.Pregreet] != 1 {
		t.Errorf("messages %d sessions %d refused %v", d.Messages, d.Sessions, d.Refused)
	}
	// The sender opened two connections and had both open; the bot's
	// ratecontrol refusal was a connection too, its pregreet one not.
	if d.ClientRate.Max() != 2 || d.ClientConn.Max() != 2 {
		t.Errorf("sender's busiest window %d, most open %d; want 2, 2", d.ClientRate.Max(), d.ClientConn.Max())
	}
	var dsl, net bool
	for _, s := range d.Suffixes {
		dsl = dsl || s.Key == "dsl.example.net" && s.Refusals() == 2
	}
	for _, s := range d.Networks {
		net = net || s.Key == "198.51.100.0/24" && s.Delivered == 1
	}
	if !dsl || !net {
		t.Errorf("suffixes %+v, networks %+v", d.Suffixes, d.Networks)
	}
	var nilM *Metrics
	nilM.SampleTraffic(time.Now())
	nilM.SessionStart(good, "")
	nilM.MessageAccepted(good, "")
}
