package suggest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/reason"
	"github.com/mxguard/mxguard/internal/stats"
)

// start is the first second of the generated logs.
var start = time.Date(2026, 3, 25, 8, 0, 0, 0, time.UTC)

// traffic is a generated stretch of a mail host's day: from start, every
// second one session of a sender that delivers one message, lasting
// duration (busy for the first busySecs of it: then 2 × duration); and
// some refused dial-up clients.
type traffic struct {
	seconds, busySecs int
	duration          time.Duration
	bots              int // refusals from dial-up pools, spread over the stretch
}

// logLine is one line of a generated log, to be sorted by time.
type logLine struct {
	at   time.Time
	text string
}

func sortLines(lines []logLine) string {
	slices.SortStableFunc(lines, func(a, b logLine) int { return a.at.Compare(b.at) })
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l.text)
		b.WriteByte('\n')
	}
	return b.String()
}

// mxLog writes the traffic as mxguard logs it, through slog's own handler
// (text or JSON), with the lines the server writes.
func (tr traffic) mxLog(json bool) string {
	var lines []logLine
	var buf bytes.Buffer
	h := slog.Handler(slog.NewTextHandler(&buf, nil))
	if json {
		h = slog.NewJSONHandler(&buf, nil)
	}
	emit := func(at time.Time, msg string, attrs ...any) {
		r := slog.NewRecord(at, slog.LevelInfo, msg, 0)
		r.Add(attrs...)
		buf.Reset()
		h.Handle(context.Background(), r)
		lines = append(lines, logLine{at, strings.TrimSuffix(buf.String(), "\n")})
	}
	for s := range tr.seconds {
		at := start.Add(time.Duration(s) * time.Second)
		d := tr.duration
		if s < tr.busySecs {
			d *= 2
		}
		n := s % 100
		ip, host := fmt.Sprintf("198.51.100.%d", n), fmt.Sprintf("mail-%c.example.org", 'a'+n%26)
		emit(at.Add(d), "disconnect from "+host+" ["+ip+"]", "session", fmt.Sprintf("s%d", s), "ip", ip,
			"commands", 5, "messages", 1, "rejects", 0, "octets", 1234, "duration", d)
	}
	for i := range tr.bots {
		at := start.Add(time.Duration(i) * time.Duration(tr.seconds) * time.Second / time.Duration(tr.bots)).Add(500 * time.Millisecond)
		ip := fmt.Sprintf("203.0.113.%d", i%200)
		host := fmt.Sprintf("host-203-0-113-%d.dsl.example", i%200)
		switch i % 3 {
		case 0:
			emit(at, "rejecting commands from "+host+" ["+ip+"] due to pre-greeting traffic", "session", "x", "ip", ip, "reason", reason.Pregreet)
		case 1:
			emit(at, "rejecting connection from "+host+" ["+ip+"]: ratecontrol: 6 connections in 1m0s, limit 5",
				"ip", ip, "reason", reason.RateControl, "reply", "421 4.3.2 Connection rate limit exceeded.")
		default:
			// In a session: its line names the client, the refusal's
			// line does not count as naming it.
			ip, host := fmt.Sprintf("192.0.2.%d", i%200), "ppp-"+fmt.Sprint(i)+".dialup.example.net"
			emit(at, "relaying denied for <x@elsewhere.example> from "+host+" ["+ip+"]",
				"session", "y", "ip", ip, "reason", reason.RelayDenied)
			emit(at.Add(time.Second), "disconnect from "+host+" ["+ip+"]", "session", "y", "ip", ip,
				"commands", 3, "messages", 0, "rejects", 1, "octets", 99, "duration", time.Second)
		}
	}
	// Lines about no client, or nothing the figures use.
	emit(start, "mxguard starting", "version", "0.1.0")
	emit(start.Add(time.Second), "accepted", "id", "x", "session", "s1", "ip", "198.51.100.1", "from", "a@example.org", "rcpts", 1, "size", 1234)
	return sortLines(lines)
}

// maillog writes the same traffic as sendmail logs it, in the seed's
// style: a process per connection, the from= line when the message is
// accepted, the to= line of its delivery when the process ends; the
// dial-up clients refused for talking first, for their rate, or by the
// TCP wrappers, and a dictionary attack.
func (tr traffic) maillog() string {
	var lines []logLine
	emit := func(at time.Time, pid int, msg string) {
		lines = append(lines, logLine{at, at.Format(time.Stamp) + " nifelhei sm-mta[" + fmt.Sprint(pid) + "]: " + msg})
	}
	pid := 1000
	for s := range tr.seconds {
		at := start.Add(time.Duration(s) * time.Second)
		d := tr.duration
		if s < tr.busySecs {
			d *= 2
		}
		pid++
		n := s % 100
		qid := fmt.Sprintf("n2P%08d", s)
		relay := fmt.Sprintf("mail-%c.example.org [198.51.100.%d]", 'a'+n%26, n)
		emit(at, pid, qid+": from=<news@example.org>, size=4321, class=0, nrcpts=1, msgid=<"+qid+"@example.org>, proto=ESMTP, daemon=MTA, relay="+relay)
		// The process's last line comes in the second before it ends.
		emit(at.Add(d-time.Second), pid, qid+": to=<admin@nifelhei.info>, delay=00:00:01, xdelay=00:00:01, mailer=local, pri=34321, dsn=2.0.0, stat=Sent")
	}
	for i := range tr.bots {
		at := start.Add(time.Duration(i) * time.Duration(tr.seconds) * time.Second / time.Duration(tr.bots))
		pid++
		qid := fmt.Sprintf("n2Q%08d", i)
		n := i % 200
		switch i % 4 {
		case 0:
			emit(at, pid, fmt.Sprintf("%s: rejecting commands from host-%d.dsl.example [203.0.113.%d] due to pre-greeting traffic after 0 seconds", qid, n, n))
		case 1:
			emit(at, pid, fmt.Sprintf("ruleset=check_relay, arg1=ppp-%d.dialup.example.net, arg2=192.0.2.%d, relay=ppp-%d.dialup.example.net [192.0.2.%d], reject=421 4.3.2 Connection rate limit exceeded.", n, n, n, n))
		case 2:
			emit(at, pid, fmt.Sprintf("tcpwrappers (host-%d.dsl.example, 203.0.113.%d) rejection", n, n))
		default:
			emit(at, pid, fmt.Sprintf("%s: <root@nifelhei.info>... User unknown", qid)) // no client named: the process's
		}
	}
	// A dictionary attack's process: its client named once, its refusals
	// by process ID.
	pid++
	at := start.Add(time.Hour)
	emit(at, pid, "n2R00000001: from=<a@b.example>, size=0, class=0, nrcpts=0, proto=ESMTP, daemon=MTA, relay=ppp-7.dialup.example.net [192.0.2.7]")
	emit(at, pid, "n2R00000001: <nobody@nifelhei.info>... User unknown")
	emit(at, pid, "n2R00000001: <guess@nifelhei.info>... User unknown")
	// The daemon's own lines, and another program's.
	emit(start, 999, "starting daemon (8.14.3): SMTP+queueing@00:15:00")
	lines = append(lines, logLine{start, start.Format(time.Stamp) + " nifelhei sshd[55]: Accepted publickey for admin from 192.0.2.99"})
	return sortLines(lines)
}

func read(t *testing.T, logs ...string) ([]stats.Day, LogReport) {
	t.Helper()
	var rs []io.Reader
	for _, l := range logs {
		rs = append(rs, strings.NewReader(l))
	}
	days, rep, err := ReadLogs(rs, LogOptions{Window: time.Minute, Location: time.UTC, Now: start.AddDate(0, 1, 0)})
	if err != nil {
		t.Fatal(err)
	}
	return days, rep
}

func hostsDeny(res Result) []string {
	var out []string
	for _, p := range res.Proposals {
		if p.Where == HostsDeny {
			out = append(out, p.Key)
		}
	}
	return out
}

// TestMxguardLogs: a stretch of traffic where 20 sessions are open at 95 %
// of the seconds (40 in a busy 10 minutes) gives max_daemon_children 60;
// one where 5 are gives 30 (never below 30). In both of slog's forms.
func TestMxguardLogs(t *testing.T) {
	for _, c := range []struct {
		name string
		tr   traffic
		json bool
		p95  int64
		want int64
	}{
		{"text, 20", traffic{seconds: 4 * 3600, busySecs: 600, duration: 20 * time.Second, bots: 297}, false, 20, 60},
		{"json, 20", traffic{seconds: 4 * 3600, busySecs: 600, duration: 20 * time.Second, bots: 297}, true, 20, 60},
		{"text, 5", traffic{seconds: 4 * 3600, busySecs: 600, duration: 5 * time.Second, bots: 297}, false, 5, 30},
	} {
		t.Run(c.name, func(t *testing.T) {
			days, rep := read(t, c.tr.mxLog(c.json))
			if rep.Mxguard != rep.Lines || rep.Lines != int64(c.tr.seconds+c.tr.bots+c.tr.bots/3+2) {
				t.Errorf("report: %s", rep)
			}
			if len(days) != 1 {
				t.Fatalf("%d days", len(days))
			}
			d := days[0]
			if got := d.Concurrency.Quantile(0.95); got != c.p95 {
				t.Errorf("p95 of sessions open %d, want %d", got, c.p95)
			}
			if d.Messages != int64(c.tr.seconds) || d.Refused[reason.Pregreet] != 99 || d.Refused[reason.RelayDenied] != 99 {
				t.Errorf("messages %d, refused %v", d.Messages, d.Refused)
			}
			res, err := Suggest(days, Current{Window: time.Minute}, Defaults())
			if err != nil {
				t.Fatal(err)
			}
			if p, _ := find(res, "limits.max_daemon_children"); p.Value != c.want {
				t.Errorf("max_daemon_children %d, want %d: %s", p.Value, c.want, p.Why)
			}
			// Each sender sends once every 100 s: one connection a window.
			if p, _ := find(res, "limits.client_rate"); p.Value != 5 || !strings.Contains(p.Why, "2 × 1 (p99") {
				t.Errorf("client_rate %d: %s", p.Value, p.Why)
			}
			if got := strings.Join(hostsDeny(res), " "); got != ".dsl.example 203.0.113." {
				t.Errorf("hosts.deny %q", got) // the dial-up pool's 99 relay attempts are under the threshold
			}
			o := Defaults()
			o.DenyMinRefusals = 50
			res, _ = Suggest(days, Current{}, o)
			if got := strings.Join(hostsDeny(res), " "); got != ".dsl.example .dialup.example.net 203.0.113. 192.0.2." {
				t.Errorf("hosts.deny from 50 refusals %q", got)
			}
		})
	}
}

// TestMxguardNames: a client's name is taken only where mxguard writes it
// before anything the client sent; text a client sent naming a host next to
// its address never makes that host's suffix a refuser.
func TestMxguardNames(t *testing.T) {
	var lines []string
	at := start
	line := func(msg string, attrs ...any) {
		var b bytes.Buffer
		r := slog.NewRecord(at, slog.LevelInfo, msg, 0)
		r.Add(attrs...)
		slog.NewTextHandler(&b, nil).Handle(context.Background(), r)
		lines = append(lines, strings.TrimSuffix(b.String(), "\n"))
		at = at.Add(time.Second)
	}
	for range 150 {
		line("relaying denied for <x from a.victim.example [192.0.2.5]> from unknown [192.0.2.5]", "ip", "192.0.2.5", "reason", reason.RelayDenied)
		line("blocked using zen.example (127.0.0.2), score 1: RCPT from unknown [192.0.2.6] from=<a@b> to=<x a.victim.example [192.0.2.6]>",
			"ip", "192.0.2.6", "reason", reason.DNSBLRcpt)
		line("unknown user <x@localhost> from p1.dsl.example [192.0.2.7]", "ip", "192.0.2.7", "reason", reason.UnknownUser)
	}
	line("disconnect from p1.dsl.example [192.0.2.7]", "ip", "192.0.2.7", "messages", 0, "duration", time.Second)
	days, _ := read(t, strings.Join(lines, "\n"))
	res, err := Suggest(days, Current{}, Defaults())
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(hostsDeny(res), " "); got != ".dsl.example 192.0.2." {
		t.Errorf("hosts.deny %q, want the session's name and the network only", got)
	}
}

// TestSeedMaillog: the seed's case, from sendmail's own log: processes
// living 20 s a second (the admin's "average of 20 concurrent sendmail
// processes") give 60, and the dial-up pools that filled the log, and
// delivered nothing, their hosts.deny lines, in the seed's daemon name.
func TestSeedMaillog(t *testing.T) {
	// 40 processes for 300 s, and a line of a refused client in 200 other
	// seconds: 3.5 % of the seconds above 20.
	tr := traffic{seconds: 4 * 3600, busySecs: 300, duration: 20 * time.Second, bots: 200}
	days, rep := read(t, tr.maillog())
	if rep.Sendmail != int64(2*tr.seconds+tr.bots+3+1) || rep.Skipped != 1 {
		t.Errorf("report: %s", rep)
	}
	if len(days) != 1 {
		t.Fatalf("%d days", len(days))
	}
	d := days[0]
	if got := d.Concurrency.Quantile(0.95); got != 20 {
		t.Errorf("p95 of sendmail processes %d, want 20 (max %d)", got, d.Concurrency.Max())
	}
	if d.Messages != int64(tr.seconds) || d.Refused[reason.Pregreet] != 50 || d.Refused[reason.RateControl] != 50 ||
		d.Refused[reason.TCPWrappers] != 50 || d.Refused[reason.UnknownUser] != 2 {
		t.Errorf("messages %d, refused %v", d.Messages, d.Refused)
	}
	o := Defaults()
	o.DenyMinRefusals = 50
	res, err := Suggest(days, Current{Window: time.Minute}, o)
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := find(res, "limits.max_daemon_children"); p.Value != 60 {
		t.Errorf("max_daemon_children %d, want 60: %s", p.Value, p.Why)
	}
	if got := strings.Join(hostsDeny(res), " "); got != ".dsl.example .dialup.example.net 203.0.113. 192.0.2." {
		t.Errorf("hosts.deny %q", got)
	}
	var out bytes.Buffer
	f := Files{ConfigPath: "/etc/mxguard/mxguard.toml", ConfigExists: true, DenyPath: "/etc/hosts.deny", DenyExists: true,
		Deny: []byte("sendmail: .adsl.alicedsl.de\n"), DenyConfigured: true}
	if err := Render(&out, res, f, "maillog"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"+sendmail: .dsl.example\n",
		"+sendmail: .dialup.example.net\n",
		"+# mxguard suggest: 100 refusals (pregreet 50, tcpwrappers 50) on 2026-03-25, no message delivered\n+sendmail: 203.0.113.\n",
		"+max_daemon_children = 60\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the diff lacks %q:\n%s", want, out.String())
		}
	}
}

// TestLogsAcrossDays: rotated files read in turn make one day each, and
// a gap of days between them is not sampled as idle seconds.
func TestLogsAcrossDays(t *testing.T) {
	tr := traffic{seconds: 2 * 3600, duration: 3 * time.Second}
	first := tr.mxLog(false)
	later := strings.ReplaceAll(tr.mxLog(false), "2026-03-25T", "2026-03-28T")
	days, _ := read(t, first, later)
	if len(days) != 2 || days[0].Date != "2026-03-25" || days[1].Date != "2026-03-28" {
		t.Fatalf("days %v", days)
	}
	for _, d := range days {
		if n := d.Concurrency.Count(); n < 7200 || n > 7210 {
			t.Errorf("%s: %d samples, want two hours' worth", d.Date, n)
		}
	}
}

// TestReadLogsBounded: an endless line costs a bounded buffer, and is
// skipped.
func TestReadLogsBounded(t *testing.T) {
	long := strings.Repeat("x", 3*maxLine)
	tr := traffic{seconds: 60, duration: time.Second}
	days, rep := read(t, long+"\n"+tr.mxLog(false)+long)
	if rep.Long != 2 || len(days) != 1 || days[0].Messages != 60 {
		t.Errorf("report %s, %d days", rep, len(days))
	}
}

// BenchmarkReadLogs reads an hour of generated logs, one session a
// second and a refused client every 12 s: mxguard's text lines, and
// sendmail's syslog lines. Reported per line.
func BenchmarkReadLogs(b *testing.B) {
	tr := traffic{seconds: 3600, duration: 20 * time.Second, bots: 300}
	for _, c := range []struct {
		name, log string
	}{{"mxguard", tr.mxLog(false)}, {"sendmail", tr.maillog()}} {
		b.Run(c.name, func(b *testing.B) {
			lines := strings.Count(c.log, "\n")
			b.SetBytes(int64(len(c.log)))
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := ReadLogs([]io.Reader{strings.NewReader(c.log)}, LogOptions{Window: time.Minute, Location: time.UTC, Now: start}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*lines), "ns/line")
		})
	}
}
