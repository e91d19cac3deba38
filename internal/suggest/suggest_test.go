package suggest

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/reason"
	"github.com/mxguard/mxguard/internal/stats"
	"github.com/mxguard/mxguard/internal/tcpwrap"
)

// day makes a day whose samples of the sessions open are at for 95 % of
// the day and peak for the rest, as a day of 86,400 samples.
func day(date string, at, peak int64) stats.Day {
	d := stats.Day{Date: date, Window: 60}
	d.Concurrency.AddN(at, 82080)
	d.Concurrency.AddN(peak, 86400-82080)
	d.AcceptRate.AddN(0, 80000)
	d.AcceptRate.AddN(1, 6000)
	d.AcceptRate.AddN(4, 400) // p99 is 1: 86,000 of 86,400 at or below it
	return d
}

func find(res Result, key string) (Proposal, bool) {
	for _, p := range res.Proposals {
		if p.Key == key {
			return p, true
		}
	}
	return Proposal{}, false
}

// TestMaxDaemonChildren: three times the p95 of the sessions open, never
// below 30 (the seed: "an average of 20 ... set count to 60. I would never
// recommend a value below 30").
func TestMaxDaemonChildren(t *testing.T) {
	for _, c := range []struct {
		at, peak, p95, want int64
	}{
		{20, 45, 20, 60},
		{5, 9, 5, 30},
		{0, 0, 0, 30},
		{10, 11, 10, 30},
		{11, 50, 11, 33},
		{120, 900, 120, 360},
		{150, 900, 152, 456}, // above 127 a sample counts as its step of 1/16 up
	} {
		res, err := Suggest([]stats.Day{day("2026-03-25", c.at, c.peak)}, Current{}, Defaults())
		if err != nil {
			t.Fatal(err)
		}
		p, _ := find(res, "limits.max_daemon_children")
		if p.Value != c.want || p.Where != Config {
			t.Errorf("p95 %d: max_daemon_children %d, want %d (%s)", c.at, p.Value, c.want, p.Why)
		}
		if want := fmt.Sprintf("3 × %d (p95 of 86,400 samples", c.p95); !strings.Contains(p.Why, want) || !strings.Contains(p.Why, "never below 30") {
			t.Errorf("the figures behind it: %q, want %q and the floor", p.Why, want)
		}
	}
	o := Defaults()
	o.ChildrenFactor, o.ChildrenMin, o.ChildrenPercentile = 2, 10, 1
	res, _ := Suggest([]stats.Day{day("2026-03-25", 20, 45)}, Current{}, o)
	if p, _ := find(res, "limits.max_daemon_children"); p.Value != 90 {
		t.Errorf("2 × the maximum 45: %d", p.Value)
	}
}

// TestTypicalDay: the limits come from the day with the median p95, not
// the flood's, nor the holiday's.
func TestTypicalDay(t *testing.T) {
	days := []stats.Day{
		day("2026-03-21", 4, 8),     // a Saturday
		day("2026-03-23", 20, 30),   // standard
		day("2026-03-24", 400, 900), // the flood
		day("2026-03-25", 18, 30),   // standard
		day("2026-03-26", 22, 30),   // standard
	}
	short := stats.Day{Date: "2026-03-27"} // an hour's samples short: not a candidate
	short.Concurrency.AddN(1, 3599)
	days = append(days, short)
	res, err := Suggest(days, Current{}, Defaults())
	if err != nil {
		t.Fatal(err)
	}
	p, _ := find(res, "limits.max_daemon_children")
	if p.Value != 60 || !strings.Contains(res.From, "on 2026-03-23, the typical day") ||
		!strings.Contains(res.From, "2026-03-21: 4, 2026-03-23: 20, 2026-03-24: 400, 2026-03-25: 18, 2026-03-26: 22") {
		t.Errorf("max_daemon_children %d %s", p.Value, res.From)
	}
	// Asked for: the flood's day, and every day together.
	o := Defaults()
	o.Day = "2026-03-24"
	res, _ = Suggest(days, Current{}, o)
	if p, _ := find(res, "limits.max_daemon_children"); p.Value != 1200 {
		t.Errorf("the flood's day: %d", p.Value)
	}
	o.Day = "all"
	res, _ = Suggest(days, Current{}, o)
	if p, _ := find(res, "limits.max_daemon_children"); p.Value != 3*400 || !strings.Contains(res.From, "6 days together") {
		t.Errorf("all days: %d, %s", p.Value, res.From) // the flood's 82,080 samples are above the 95th percentile
	}
	for _, bad := range []string{"2026-01-01", "yesterday"} {
		o.Day = bad
		if _, err := Suggest(days, Current{}, o); err == nil {
			t.Errorf("day %q: no error", bad)
		}
	}
	if _, err := Suggest(nil, Current{}, Defaults()); err == nil || !strings.Contains(err.Error(), "no traffic") {
		t.Errorf("no days: %v", err)
	}
}

func TestThrottle(t *testing.T) {
	d := day("2026-03-25", 20, 45)
	res, _ := Suggest([]stats.Day{d}, Current{ConnectionRateThrottle: 5}, Defaults())
	p, _ := find(res, "limits.connection_rate_throttle")
	if p.Value != 10 || p.Current != 5 || !strings.Contains(p.Why, "3 × 1 (p99 of the connections accepted in each of 86,400 seconds") {
		t.Errorf("throttle %d: %s", p.Value, p.Why)
	}
	d.AcceptRate.AddN(7, 1000) // now the busiest 1 %+ at 7
	res, _ = Suggest([]stats.Day{d}, Current{}, Defaults())
	if p, _ := find(res, "limits.connection_rate_throttle"); p.Value != 21 {
		t.Errorf("throttle %d, want 21: %s", p.Value, p.Why)
	}
}

// TestClientLimits: the p99 of what the clients that delivered mail did,
// twice over, rounded up; in the access map when it sets the default.
func TestClientLimits(t *testing.T) {
	d := day("2026-03-25", 20, 45)
	d.ClientRate.AddN(1, 900)
	d.ClientRate.AddN(6, 95) // p99: 990 of 1000 at or below 6
	d.ClientRate.AddN(40, 5)
	d.ClientConn.AddN(1, 980)
	d.ClientConn.AddN(2, 15)
	d.ClientConn.AddN(9, 5)
	res, _ := Suggest([]stats.Day{d}, Current{Window: time.Minute, ClientRate: 5, ClientConn: 3}, Defaults())
	rate, _ := find(res, "limits.client_rate")
	conn, _ := find(res, "limits.client_conn")
	if rate.Value != 12 || conn.Value != 4 {
		t.Errorf("client_rate %d (%s), client_conn %d (%s); want 12, 4", rate.Value, rate.Why, conn.Value, conn.Why)
	}
	if !strings.Contains(rate.Why, "2 × 6 (p99 of the connections in the busiest 1m0s of each client that delivered mail, 1,000 client-hours") {
		t.Errorf("rate: %s", rate.Why)
	}
	// A window in force twice as long as the one counted in.
	res, _ = Suggest([]stats.Day{d}, Current{Window: 2 * time.Minute}, Defaults())
	if rate, _ := find(res, "limits.client_rate"); rate.Value != 24 || !strings.Contains(rate.Why, "× 2m0s / 1m0s") {
		t.Errorf("2m window: %d %s", rate.Value, rate.Why)
	}
	// Floors, and the margin.
	o := Defaults()
	o.ClientMargin = 1.5
	res, _ = Suggest([]stats.Day{d}, Current{Window: time.Minute, ClientRateInAccess: true, ClientConnInAccess: true}, o)
	rate, _ = find(res, "ClientRate:")
	conn, _ = find(res, "ClientConn:")
	if rate.Value != 9 || conn.Value != 3 || rate.Where != AccessMap || conn.Where != AccessMap {
		t.Errorf("1.5 × 6 = %d, 1.5 × 2 = 3 → %d; %v %v", rate.Value, conn.Value, rate.Where, conn.Where)
	}
	// Nobody delivered: nothing proposed, and said.
	res, _ = Suggest([]stats.Day{day("2026-03-25", 20, 45)}, Current{}, Defaults())
	if _, ok := find(res, "limits.client_rate"); ok || !strings.Contains(strings.Join(res.Notes, "\n"), "no client delivered mail") {
		t.Errorf("no deliveries: %+v", res)
	}
}

// TestHostsDeny: the suffixes and networks with the most refusals and no
// mail delivered, over every day, within the thresholds.
func TestHostsDeny(t *testing.T) {
	d1, d2 := day("2026-03-24", 20, 45), day("2026-03-25", 20, 45)
	src := func(key string, delivered int64, refused map[reason.Reason]int64) stats.Source {
		return stats.Source{Key: key, Delivered: delivered, Refused: refused}
	}
	d1.Suffixes = []stats.Source{
		src("dsl.example.net", 0, map[reason.Reason]int64{reason.Pregreet: 900, reason.RateControl: 300}),
		src("dialup.example.org", 0, map[reason.Reason]int64{reason.Pregreet: 60}),
		src("example.com", 5, map[reason.Reason]int64{reason.UnknownUser: 5000}), // delivers: never
		src("a.pool.example.com", 1, nil),
		src("pool.example.com", 0, map[reason.Reason]int64{reason.DNSBL: 800}), // covers one that delivered
		src("few.example", 0, map[reason.Reason]int64{reason.Pregreet: 99}),
		src("denied.example", 0, map[reason.Reason]int64{reason.TCPWrappers: 700}),  // already in hosts.deny
		src("p1.dsl.example.net", 0, map[reason.Reason]int64{reason.Pregreet: 150}), // under one proposed
	}
	d2.Suffixes = []stats.Source{src("dialup.example.org", 0, map[reason.Reason]int64{reason.Pregreet: 40})} // 100 in all
	d1.Networks = []stats.Source{
		src("203.0.113.0/24", 0, map[reason.Reason]int64{reason.Pregreet: 2000}),
		src("198.51.100.0/24", 1, map[reason.Reason]int64{reason.Pregreet: 9000}),
		src("10.1.2.0/24", 0, map[reason.Reason]int64{reason.Pregreet: 9000}), // trusted
		src("2001:db8:1:2::/64", 0, map[reason.Reason]int64{reason.NonSMTP: 300}),
	}
	d2.Networks = []stats.Source{src("203.0.113.0/24", 0, map[reason.Reason]int64{reason.RateControl: 10})}
	wrappers, err := tcpwrap.Parse(nil, strings.NewReader("sendmail: .denied.example\n"), "", "hosts.deny")
	if err != nil {
		t.Fatal(err)
	}
	cur := Current{Trusted: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, Wrappers: wrappers}
	res, err := Suggest([]stats.Day{d1, d2}, cur, Defaults())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range res.Proposals {
		if p.Where == HostsDeny {
			got = append(got, p.Key)
		}
	}
	want := []string{".dsl.example.net", ".dialup.example.org", "203.0.113.", "[2001:db8:1:2::]/64"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("hosts.deny %q, want %q", got, want)
	}
	p, _ := find(res, ".dsl.example.net")
	if p.Why != "1,200 refusals (pregreet 900, ratecontrol 300) from 2026-03-24 to 2026-03-25, no message delivered" {
		t.Errorf("why: %q", p.Why)
	}
	if !strings.Contains(strings.Join(res.Notes, "\n"), ".pool.example.com not proposed: its part a.pool.example.com delivered mail") {
		t.Errorf("notes: %q", res.Notes)
	}
	o := Defaults()
	o.DenyTop, o.DenyMinRefusals = 1, 1000
	res, _ = Suggest([]stats.Day{d1, d2}, cur, o)
	got = nil
	for _, p := range res.Proposals {
		if p.Where == HostsDeny {
			got = append(got, p.Key)
		}
	}
	if strings.Join(got, " ") != ".dsl.example.net 203.0.113." {
		t.Errorf("top 1 of each over 1000: %q", got)
	}
}
