package stats

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/reason"
)

var day0 = time.Date(2026, 3, 25, 0, 0, 0, 0, time.UTC)

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func findSource(list []Source, key string) (Source, bool) {
	for _, s := range list {
		if s.Key == key {
			return s, true
		}
	}
	return Source{}, false
}

// TestRecorderDay feeds an hour of known traffic and reads it back.
func TestRecorderDay(t *testing.T) {
	r := NewRecorder(time.Minute, day0)
	var accepted int64
	// A sender that connects 3 times within a minute, two sessions at
	// once, and delivers; a bot that connects 5 times and delivers none.
	good, bot := addr("198.51.100.7"), addr("203.0.113.9")
	ms := func(n int) time.Time { return day0.Add(time.Duration(n) * time.Millisecond) }
	for i := range 3 {
		r.Connection(ms(10*i), good)
		accepted++
	}
	r.SessionStart(ms(0), good)
	r.SessionStart(ms(10), good)
	r.Message(ms(11), good, "mail.example.org")
	r.SessionEnd(ms(12), good)
	r.SessionEnd(ms(13), good)
	r.SessionStart(ms(20), good)
	r.SessionEnd(ms(21), good)
	for i := range 5 {
		r.Connection(ms(30+i), bot)
		r.Refused(ms(30+i), reason.RateControl, bot, "p1-2-3-4.dsl.example.net")
		accepted++
	}
	r.Refused(ms(40), reason.Shutdown, bot, "p1-2-3-4.dsl.example.net") // not the client's doing
	// Then one sample a second for the hour: 2 sessions open for the
	// first 600 s, then none; the connections counted at the end.
	for s := range 3600 {
		open, acc := int64(0), int64(0)
		if s < 600 {
			open = 2
		}
		if s == 3599 {
			acc = accepted
		}
		r.Sample(day0.Add(time.Duration(s+1)*time.Second), open, acc)
	}
	days := r.Days()
	if len(days) != 1 {
		t.Fatalf("%d days, want 1", len(days))
	}
	d := days[0]
	if d.Date != "2026-03-25" || d.Window != 60 {
		t.Errorf("date %s window %d", d.Date, d.Window)
	}
	if d.Concurrency.Count() != 3600 || d.Concurrency.Quantile(0.95) != 2 || d.Concurrency.Quantile(0.80) != 0 {
		t.Errorf("concurrency: %d samples, p95 %d, p80 %d", d.Concurrency.Count(), d.Concurrency.Quantile(0.95), d.Concurrency.Quantile(0.80))
	}
	if d.Accepted != 8 || d.AcceptRate.Max() != 8 || d.AcceptRate.Count() != 3600 {
		t.Errorf("accepted %d, rate max %d over %d seconds", d.Accepted, d.AcceptRate.Max(), d.AcceptRate.Count())
	}
	if d.Sessions != 3 || d.Messages != 1 || d.Refused[reason.RateControl] != 5 || d.Refused[reason.Shutdown] != 1 {
		t.Errorf("sessions %d messages %d refused %v", d.Sessions, d.Messages, d.Refused)
	}
	// Only the sender that delivered is in the clients' figures.
	if d.ClientRate.Count() != 1 || d.ClientRate.Max() != 3 || d.ClientConn.Max() != 2 {
		t.Errorf("client rate %v, conn %v; want one client with 3 and 2", d.ClientRate, d.ClientConn)
	}
	n, ok := findSource(d.Networks, "203.0.113.0/24")
	if !ok || n.Refused[reason.RateControl] != 5 || n.Refused[reason.Shutdown] != 0 || n.Delivered != 0 {
		t.Errorf("bot's network: %+v", n)
	}
	if s, ok := findSource(d.Suffixes, "dsl.example.net"); !ok || s.Refusals() != 5 {
		t.Errorf("bot's suffix: %+v (%v)", s, d.Suffixes)
	}
	if n, ok := findSource(d.Networks, "198.51.100.0/24"); !ok || n.Delivered != 1 || n.Refusals() != 0 {
		t.Errorf("sender's network: %+v", n)
	}
	if s, ok := findSource(d.Suffixes, "example.org"); !ok || s.Delivered != 1 {
		t.Errorf("sender's suffix: %+v", s)
	}
}

// TestRecorderWindow counts a client's connections in a sliding window.
func TestRecorderWindow(t *testing.T) {
	r := NewRecorder(time.Minute, day0)
	a := addr("192.0.2.1")
	// Every 20 s for five minutes: three in any minute (a connection
	// exactly a window old is out of it).
	for i := range 15 {
		r.Connection(day0.Add(time.Duration(i)*20*time.Second), a)
	}
	r.Message(day0.Add(5*time.Minute), a, "")
	d := r.Days()[0]
	if d.ClientRate.Max() != 3 {
		t.Errorf("busiest window %d, want 3", d.ClientRate.Max())
	}
	// A burst of more than the kept times counts as that many.
	for range maxTimes + 10 {
		r.Connection(day0.Add(10*time.Minute), a)
	}
	if d := r.Days()[0]; d.ClientRate.Max() != maxTimes {
		t.Errorf("a burst counted as %d, want %d", d.ClientRate.Max(), maxTimes)
	}
}

// TestRecorderHoursAndDays: each hour a client delivered counts once, and
// days roll over and are kept for KeepDays.
func TestRecorderHoursAndDays(t *testing.T) {
	r := NewRecorder(time.Minute, day0)
	a := addr("192.0.2.1")
	for h := range 3 {
		at := day0.Add(time.Duration(h) * time.Hour)
		r.Connection(at, a)
		r.SessionStart(at, a)
		r.Message(at, a, "")
		r.SessionEnd(at.Add(time.Second), a)
	}
	// A session open across the hour is in both hours' tables, and
	// counts in the first, where it delivered.
	b := addr("192.0.2.2")
	r.SessionStart(day0.Add(3*time.Hour-time.Second), b)
	r.Message(day0.Add(3*time.Hour-time.Second), b, "")
	r.SessionEnd(day0.Add(3*time.Hour+time.Second), b)
	d := r.Days()[0]
	if d.ClientRate.Count() != 4 || d.ClientConn.Count() != 4 {
		t.Errorf("client figures of %d and %d client-hours, want 4", d.ClientRate.Count(), d.ClientConn.Count())
	}
	for i := range KeepDays + 3 {
		r.Sample(day0.AddDate(0, 0, i+1), 1, 0)
	}
	days := r.Days()
	if len(days) != KeepDays {
		t.Fatalf("%d days kept, want %d", len(days), KeepDays)
	}
	if days[0].Date != "2026-03-29" || days[len(days)-1].Date != DateOf(day0.AddDate(0, 0, KeepDays+3)) {
		t.Errorf("days from %s to %s", days[0].Date, days[len(days)-1].Date)
	}
	// Times that go back count as the latest.
	r.Sample(day0, 7, 0)
	if last := r.Days()[len(r.Days())-1]; last.Concurrency.Max() != 7 || last.Date != days[len(days)-1].Date {
		t.Errorf("an old time went to %s (max %d)", last.Date, last.Concurrency.Max())
	}
}

// TestRecorderRestore: a server started again the same day goes on from
// the file's figures.
func TestRecorderRestore(t *testing.T) {
	first := NewRecorder(time.Minute, day0)
	bot := addr("203.0.113.9")
	for i := range 10 {
		first.Refused(day0.Add(time.Duration(i)*time.Second), reason.Pregreet, bot, "")
		first.Sample(day0.Add(time.Duration(i)*time.Second), 4, int64(i))
	}
	first.Sample(day0.AddDate(0, 0, 1), 1, 10) // and a day later
	saved := first.Days()

	second := NewRecorder(time.Minute, day0.AddDate(0, 0, 1).Add(time.Hour))
	second.Restore(saved)
	second.Refused(day0.AddDate(0, 0, 1).Add(time.Hour), reason.Pregreet, bot, "")
	second.Sample(day0.AddDate(0, 0, 1).Add(time.Hour+time.Second), 2, 3)
	days := second.Days()
	if len(days) != 2 {
		t.Fatalf("%d days, want 2", len(days))
	}
	if n, _ := findSource(days[0].Networks, "203.0.113.0/24"); n.Refusals() != 10 || days[0].Concurrency.Count() != 10 {
		t.Errorf("the first day: %+v, %d samples", n, days[0].Concurrency.Count())
	}
	today := days[1]
	if n, _ := findSource(today.Networks, "203.0.113.0/24"); n.Refusals() != 1 {
		t.Errorf("today's network: %+v", n)
	}
	if today.Concurrency.Count() != 2 || today.Concurrency.Max() != 2 || today.Accepted != 1+3 {
		t.Errorf("today: %d samples, max %d, accepted %d", today.Concurrency.Count(), today.Concurrency.Max(), today.Accepted)
	}
	// Restored before any event: the file's today is picked up by the
	// first event of that day.
	third := NewRecorder(time.Minute, day0)
	third.Restore(saved)
	third.Sample(day0.Add(time.Hour), 9, 0)
	days = third.Days()
	if len(days) != 2 || days[0].Concurrency.Count() != 11 || days[0].Concurrency.Max() != 9 {
		t.Errorf("restored before any event: %d days, first with %d samples", len(days), days[0].Concurrency.Count())
	}
}

// TestSourcesBounded: a flood from more networks than the table holds
// keeps the heaviest, and a network that delivered mail is never pushed
// out.
func TestSourcesBounded(t *testing.T) {
	r := NewRecorder(time.Minute, day0)
	heavy := addr("203.0.113.1")
	sender := addr("198.51.100.1")
	r.Message(day0, sender, "mx.example.org")
	// Refused once, then delivering: no longer one the flood may push out.
	late := addr("198.18.0.1")
	r.Refused(day0, reason.UnknownUser, late, "")
	r.Message(day0, late, "")
	for i := range 20000 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 1})
		r.Refused(day0, reason.Pregreet, a, fmt.Sprintf("h%d.pool%d.isp.example", i, i))
		r.Refused(day0, reason.Pregreet, sender, "mx.example.org")
		if i%10 == 0 {
			r.Refused(day0, reason.RateControl, heavy, "")
		}
	}
	d := r.Days()[0]
	if len(d.Networks) > MaxRefusers+MaxDeliverers || len(d.Suffixes) > MaxRefusers+MaxDeliverers {
		t.Fatalf("%d networks, %d suffixes: over the bound", len(d.Networks), len(d.Suffixes))
	}
	if n, ok := findSource(d.Networks, "203.0.113.0/24"); !ok || n.Refusals() < 2000 {
		t.Errorf("the heavy network: %+v, %v", n, ok)
	}
	if n, ok := findSource(d.Networks, "198.51.100.0/24"); !ok || n.Delivered != 1 || n.Refusals() != 20000 {
		t.Errorf("the sender's network: %+v, %v", n, ok)
	}
	if n, ok := findSource(d.Networks, "198.18.0.0/24"); !ok || n.Delivered != 1 || n.Refusals() != 1 {
		t.Errorf("the network that delivered after a refusal: %+v, %v", n, ok)
	}
	// More delivering networks than the table holds: the rest untracked.
	for i := range MaxDeliverers + 5 {
		r.Message(day0, netip.AddrFrom4([4]byte{172, byte(i >> 8), byte(i), 1}), "")
	}
	if d := r.Days()[0]; d.UntrackedDeliveries != 7 { // 5 over, plus the two the senders took
		t.Errorf("untracked deliveries %d, want 7", d.UntrackedDeliveries)
	}
}

// TestClientsBounded: a flood of clients that deliver nothing leaves
// room for those that do.
func TestClientsBounded(t *testing.T) {
	r := NewRecorder(time.Minute, day0)
	for i := range 3 * MaxClients {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		r.Connection(day0, a)
		if i%1000 == 0 {
			r.Message(day0, a, "")
		}
	}
	if n := len(r.clients); n > MaxClients {
		t.Fatalf("%d clients in the table, over %d", n, MaxClients)
	}
	d := r.Days()[0]
	if d.ClientRate.Count() != int64((3*MaxClients+999)/1000) {
		t.Errorf("%d delivering clients counted, want %d", d.ClientRate.Count(), (3*MaxClients+999)/1000)
	}
}

func TestNilRecorder(t *testing.T) {
	var r *Recorder
	r.Sample(day0, 1, 1)
	r.Connection(day0, addr("192.0.2.1"))
	r.SessionStart(day0, addr("192.0.2.1"))
	r.SessionEnd(day0, addr("192.0.2.1"))
	r.Refused(day0, reason.Pregreet, addr("192.0.2.1"), "")
	r.Message(day0, addr("192.0.2.1"), "")
	r.Restore(nil)
	r.SetWindow(time.Second)
	if r.Days() != nil {
		t.Error("a nil recorder has days")
	}
}

// TestSampleIdle: seconds sampled together count as each sampled alone,
// across a day's end.
func TestSampleIdle(t *testing.T) {
	from := day0.Add(20 * time.Hour)
	one, many := NewRecorder(time.Minute, from), NewRecorder(time.Minute, from)
	one.Sample(from, 4, 9)
	many.Sample(from, 4, 9)
	for s := 1; s <= 30*3600; s++ {
		one.Sample(from.Add(time.Duration(s)*time.Second), 4, 9)
	}
	many.SampleIdle(from.Add(time.Second), from.Add(30*3600*time.Second), 4)
	one.Sample(from.Add(30*3600*time.Second+time.Second), 5, 12)
	many.Sample(from.Add(30*3600*time.Second+time.Second), 5, 12)
	a, b := one.Days(), many.Days()
	if len(a) != 3 || len(b) != 3 {
		t.Fatalf("%d and %d days", len(a), len(b))
	}
	for i := range a {
		if a[i].Concurrency.Count() != b[i].Concurrency.Count() || a[i].AcceptRate.Count() != b[i].AcceptRate.Count() ||
			a[i].Concurrency.Max() != b[i].Concurrency.Max() || a[i].AcceptRate.Max() != b[i].AcceptRate.Max() || a[i].Accepted != b[i].Accepted {
			t.Errorf("%s: one by one %d samples (max %d), %d seconds (max %d), %d accepted; together %d (%d), %d (%d), %d",
				a[i].Date, a[i].Concurrency.Count(), a[i].Concurrency.Max(), a[i].AcceptRate.Count(), a[i].AcceptRate.Max(), a[i].Accepted,
				b[i].Concurrency.Count(), b[i].Concurrency.Max(), b[i].AcceptRate.Count(), b[i].AcceptRate.Max(), b[i].Accepted)
		}
	}
	if a[0].Concurrency.Count() != 4*3600 {
		t.Errorf("the first day: %d samples, want the 4 hours to midnight", a[0].Concurrency.Count())
	}
}

// BenchmarkRecorderRefused is what Traffic adds to a refusal at connect
// (metrics.Refused): the client's connection and the refusal, from one
// client of a pool.
func BenchmarkRecorderRefused(b *testing.B) {
	r := NewRecorder(time.Minute, time.Now())
	a := addr("203.0.113.9")
	b.ReportAllocs()
	for b.Loop() {
		now := time.Now()
		r.Connection(now, a)
		r.Refused(now, reason.RateControl, a, "p203-0-113-9.dsl.example.net")
	}
}

// BenchmarkRecorderRefusedManyClients: likewise from a flood of clients,
// a new one each time (the client table and the networks' are full).
func BenchmarkRecorderRefusedManyClients(b *testing.B) {
	r := NewRecorder(time.Minute, time.Now())
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		now := time.Now()
		r.Connection(now, a)
		r.Refused(now, reason.RateControl, a, "host.dsl.example.net")
		i++
	}
}

func TestSuffixAllocs(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { Suffix("static.12.34.56.78.clients.example.co.uk") }); n != 0 {
		t.Errorf("Suffix allocates %v times", n)
	}
}
