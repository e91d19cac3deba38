package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/reason"
	"github.com/mxguard/mxguard/internal/testcert"
)

// The fail2ban filter shipped in contrib/ and the reasons it counts as a
// failure in each of its modes (the filter's comments say why). Every
// reason of internal/reason is in exactly one of the three lists, so that
// a new reason cannot be added without deciding whether it bans.
const f2bFilter = "contrib/fail2ban/filter.d/mxguard.conf"

var (
	f2bNormal = []reason.Reason{
		reason.DenyList, reason.TCPWrappers, reason.Access, reason.RateControl, reason.ConnControl,
		reason.Pregreet, reason.TooManyErrors, reason.NonSMTP, reason.Pipelining, reason.BareLF, reason.BareCR, reason.NUL,
		reason.LineTooLong, reason.StartTLSInjection, reason.SessionBytes, reason.SessionTime,
		reason.RelayDenied, reason.UnknownUser, reason.BadMailbox, reason.TooManyBadRcpts,
		reason.Banned, reason.DNSBL, reason.DNSBLRcpt,
	}
	// Counted in mode=aggressive besides f2bNormal.
	f2bAggressive = []reason.Reason{
		reason.TLS, reason.TooBig, reason.NonASCII,
		reason.TimeoutHelo, reason.TimeoutMail, reason.TimeoutRcpt, reason.TimeoutDataInit,
		reason.TimeoutDataBlock, reason.TimeoutDataFinal, reason.TimeoutRset, reason.TimeoutQuit,
		reason.TimeoutMisc, reason.TimeoutStartTLS,
	}
	f2bNever = []reason.Reason{
		reason.MaxDaemonChildren, reason.Throttle, reason.Limiter, reason.Shutdown,
		reason.TooManyRcpts, reason.BadRcptThrottle, reason.Unverified, reason.Discard,
		reason.Storage, reason.QueueLifetime, reason.Control, reason.ProxyProtocol,
	}
)

// f2bCounts reports whether the filter in mode counts r.
func f2bCounts(mode string, r reason.Reason) bool {
	return slices.Contains(f2bNormal, r) || mode == "aggressive" && slices.Contains(f2bAggressive, r)
}

// TestFail2banReasons: every reason is classified once, and the filter's
// lists of counted reasons are the ones above.
func TestFail2banReasons(t *testing.T) {
	seen := map[reason.Reason]string{}
	for name, list := range map[string][]reason.Reason{"normal": f2bNormal, "aggressive": f2bAggressive, "never": f2bNever} {
		for _, r := range list {
			if prev, ok := seen[r]; ok {
				t.Errorf("reason %s is in both %s and %s", r, prev, name)
			}
			seen[r] = name
		}
	}
	for _, i := range reason.All() {
		if _, ok := seen[i.Reason]; !ok {
			t.Errorf("reason %s (%s) is not classified for fail2ban: add it to f2bNormal, f2bAggressive or f2bNever and to %s", i.Reason, i.Doc, f2bFilter)
		}
		delete(seen, i.Reason)
	}
	for r := range seen {
		t.Errorf("%s is classified for fail2ban but is no reason of internal/reason", r)
	}

	conf := readFile(t, filepath.Join(repoRoot(t), f2bFilter))
	list := func(key string) []string {
		m := regexp.MustCompile(`(?m)^` + key + ` = (.*)$`).FindStringSubmatch(conf)
		if m == nil {
			t.Fatalf("%s has no %s", f2bFilter, key)
		}
		return strings.Split(m[1], "|")
	}
	names := func(rs []reason.Reason) []string {
		out := make([]string, len(rs))
		for i, r := range rs {
			out[i] = string(r)
		}
		slices.Sort(out)
		return out
	}
	normal := list("_reasons_normal")
	slices.Sort(normal)
	if want := names(f2bNormal); !slices.Equal(normal, want) {
		t.Errorf("%s: _reasons_normal = %v, want %v", f2bFilter, normal, want)
	}
	aggr := list("_reasons_aggressive")
	if len(aggr) == 0 || aggr[0] != "%(_reasons_normal)s" {
		t.Errorf("%s: _reasons_aggressive does not start with %%(_reasons_normal)s: %v", f2bFilter, aggr)
	} else {
		aggr = aggr[1:]
		slices.Sort(aggr)
		if want := names(f2bAggressive); !slices.Equal(aggr, want) {
			t.Errorf("%s: _reasons_aggressive adds %v, want %v", f2bFilter, aggr, want)
		}
	}
}

// f2bInjected is the address clients write into what mxguard logs of
// theirs (MAIL FROM, RCPT TO): fail2ban must never take it for the host.
const f2bInjected = "10.66.66.66"

// provocation is one refusal a test client brings about from its own
// address, and the reason the server must log for it.
type provocation struct {
	src    string
	reason reason.Reason
	slow   bool // waits for a limit of seconds: run beside the others
	run    func(t *testing.T, m *mx, src string)
}

// TestFail2banFilter runs the real binary, once for each log_format,
// brings about every refusal the fail2ban filter counts (and a few it
// counts only in mode=aggressive), each from an address of its own, besides
// legitimate sessions (a delivered message, a crowd held by the connection
// throttle), an operator's trust and reload, and a graceful stop. It then
// runs Debian's fail2ban-regex with contrib/fail2ban/filter.d/mxguard.conf
// on the log as the server wrote it, and after the prefix that syslog (text)
// or fail2ban's journal backend (JSON) puts before it. In each, the lines
// with a counted reason, and only those, are matched, each with its own ip
// field as the host and its own time; addresses the clients wrote into the
// log (10.66.66.66, with an ip=, a reason= and a time= of their own, quoted
// to break out of the field) are never taken.
func TestFail2banFilter(t *testing.T) {
	t.Parallel()
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			fail2banScenario(t, format)
		})
	}
}

// fail2banScenario is TestFail2banFilter for one log_format.
func fail2banScenario(t *testing.T, format string) {
	f2b := need(t, "fail2ban-regex", "fail2ban")
	root := repoRoot(t)
	dir := t.TempDir()
	dns := hostsDNS(t, map[string]string{"127.0.4.2": "host2.dialup.example.net"})
	certFile, keyFile := testcert.WriteFiles(t, dir, "mx.test")
	access := writeFile(t, dir, "access", `Connect:127.0.4.3    REJECT
ClientRate:127.0.4.4 3
ClientConn:127.0.4.5 2
GreetPause:127.0.4.6 2000
`)
	hostsDeny := writeFile(t, dir, "hosts.deny", "mxguard: .dialup.example.net\n")
	rcpts := writeFile(t, dir, "recipients", "alice@localhost\n")
	m := startMX(t, fmt.Sprintf(`log_format = %q
trusted_networks = ["127.0.9.9/32"]
resolver = %q
access_map = %q
hosts_deny = %q
tls_cert = %q
tls_key = %q
[limits]
connection_rate_throttle = 10
max_bad_rcpts = 3
max_message_size = "16KiB"
max_session_bytes = "128KiB"
max_session_time = "6s"
[timeouts]
helo = "3s"
datafinal = "5s"
[reputation]
ban_below = -6
[recipients]
file = %q
`, format, dns.Addr, access, hostsDeny, certFile, keyFile, rcpts))

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(readFile(t, certFile)))
	provocations := f2bProvocations(pool)
	t.Run("provoke", func(t *testing.T) {
		t.Run("quick", func(t *testing.T) {
			t.Parallel()
			for _, p := range provocations {
				if !p.slow {
					t.Run(string(p.reason), func(t *testing.T) { p.run(t, m, p.src) })
				}
			}
		})
		for _, p := range provocations {
			if p.slow {
				t.Run(string(p.reason), func(t *testing.T) {
					t.Parallel()
					p.run(t, m, p.src)
				})
			}
		}
	})
	if t.Failed() {
		return
	}

	// Legitimate use: a message delivered, from a sender that carries the
	// injection; a crowd of clients the connection throttle holds; an
	// operator's trust and reload; the stop.
	legit := rawClient(t, "127.0.3.1", m.addr)
	expect(t, legit.reply(), "220")
	expect(t, legit.cmd("EHLO legit.example"), "250")
	expect(t, legit.cmd(`MAIL FROM:<"ip=`+f2bInjected+` reason=pregreet"@example.org>`), "250")
	expect(t, legit.cmd("RCPT TO:<alice@localhost>"), "250")
	expect(t, legit.cmd("DATA"), "354")
	expect(t, legit.cmd("Subject: hello\r\n\r\nan ordinary message\r\n."), "250")
	legit.quit()
	waitMaildir(t, m, filepath.Join(m.dir, "data/mail/localhost/alice"), 1)
	for _, g := range greetAll(t, m.addr, addrs("127.0.5.1", 15))() {
		expect(t, g.line, "220")
		g.c.quit()
	}
	if out, err := m.mxctl("trust", "192.0.2.1"); err != nil {
		t.Fatalf("mxguard trust: %v\n%s", err, out)
	}
	m.hup("configuration reloaded")
	m.stop()

	lines := strings.Split(strings.TrimSuffix(m.logs(), "\n"), "\n")
	parse, prefix := parseSlogText, "Jan  1 00:00:00 mx mxguard[4242]: " // syslog's, with a date of its own
	if format == "json" {
		parse, prefix = parseSlogJSON, "mx mxguard[4242]: " // what fail2ban's journal backend puts first
	}
	recs := make([]f2bRecord, len(lines))
	for i, l := range lines {
		r, err := parse(l)
		if err != nil {
			t.Fatalf("log line %d is not slog's %s form: %v\n%s", i+1, format, err, l)
		}
		recs[i] = r
	}
	// Every provocation was logged as such, and the legitimate lines the
	// filter must pass over are all there.
	for _, p := range provocations {
		if !slices.ContainsFunc(recs, func(r f2bRecord) bool { return r.fields["ip"] == p.src && r.fields["reason"] == string(p.reason) }) {
			t.Errorf("no log line with ip %s and reason %s", p.src, p.reason)
		}
	}
	for _, want := range []struct{ msg, what string }{
		{"listening", "the start"},
		{"accepted", "the accepted message"},
		{"delivered", "its delivery"},
		{"deferring connections on daemon mxguard: 10 per second", "the throttle's stall"},
		{"trusted 192.0.2.1/32", "the operator's trust"},
		{"configuration reloaded", "the reload"},
		{"shutting down", "the stop"},
		{"stopped", "the stop"},
	} {
		if !slices.ContainsFunc(recs, func(r f2bRecord) bool { return strings.HasPrefix(r.msg, want.msg) }) {
			t.Errorf("no log line of %s (msg %q...)", want.what, want.msg)
		}
	}
	if n := strings.Count(m.logs(), f2bInjected); n < 4 {
		t.Errorf("%d log lines hold the injected %s, want at least 4 (two relay refusals, an unknown user, an accepted sender)", n, f2bInjected)
	}

	filter := filepath.Join(root, f2bFilter)
	for _, v := range []struct {
		name  string
		lines []string
	}{
		{"as written", lines},
		{"after a prefix", prefixed(prefix, lines)},
	} {
		for _, mode := range []string{"normal", "aggressive"} {
			t.Run(v.name+"/"+mode, func(t *testing.T) {
				logFile := writeFile(t, t.TempDir(), "mxguard.log", strings.Join(v.lines, "\n")+"\n")
				f := filter
				if mode != "normal" {
					f += "[mode=" + mode + "]"
				}
				checkFail2ban(t, f2b, logFile, f, mode, v.lines, recs, provocations)
			})
		}
	}
	// What an admin runs first: the summary of fail2ban-regex on the log.
	t.Run("summary", func(t *testing.T) {
		logFile := writeFile(t, t.TempDir(), "mxguard.log", strings.Join(lines, "\n")+"\n")
		want := 0
		for _, r := range recs {
			if r.fields["ip"] != "" && f2bCounts("normal", reason.Reason(r.fields["reason"])) {
				want++
			}
		}
		out := runFail2banRegex(t, f2b, "--print-all-missed", logFile, filter)
		sum := regexp.MustCompile(`(?m)^Lines: (\d+) lines, (\d+) ignored, (\d+) matched, (\d+) missed`).FindStringSubmatch(out)
		if sum == nil {
			t.Fatalf("no Lines: summary in fail2ban-regex's output:\n%s", out)
		}
		if got := fmt.Sprintf("%s %s %s", sum[1], sum[2], sum[3]); got != fmt.Sprintf("%d 0 %d", len(recs), want) {
			t.Errorf("fail2ban-regex: %s, want %d lines, 0 ignored, %d matched\n%s", sum[0], len(recs), want, out)
		}
		// Every line's date came from the filter's datepattern: slog's
		// time field.
		dates := 0
		for _, h := range regexp.MustCompile(`(?m)^\|  \[(\d+)\] \^\[\^"=\{\]\*\?(?:time=|\\\{"time":")`).FindAllStringSubmatch(out, -1) {
			n, _ := strconv.Atoi(h[1])
			dates += n
		}
		if dates != len(recs) {
			t.Errorf("fail2ban-regex took the date of %d lines from slog's time, want all %d\n%s", dates, len(recs), out)
		}
	})
}

// checkFail2ban runs fail2ban-regex with filter on logFile (lines, whose
// fields are recs) and checks that it matched exactly the lines with a
// reason that mode counts, each with its own ip field as the host and its
// own time.
func checkFail2ban(t *testing.T, f2b, logFile, filter, mode string, lines []string, recs []f2bRecord, provocations []provocation) {
	t.Helper()
	out := runFail2banRegex(t, f2b, "-o", "<ip>\t<time>\t<msg>", logFile, filter)
	type hit struct{ host, unix string }
	hits := map[string][]hit{}
	for l := range strings.Lines(out) {
		f := strings.SplitN(strings.TrimSuffix(l, "\n"), "\t", 3)
		if len(f) != 3 {
			t.Fatalf("fail2ban-regex -o: unexpected output line %q\n%s", l, out)
		}
		hits[f[2]] = append(hits[f[2]], hit{f[0], f[1]})
		if f[0] == f2bInjected {
			t.Errorf("the injected %s taken for the host of %s", f2bInjected, f[2])
		}
	}
	matched := map[string]bool{} // by ip=, reason=
	for i, line := range lines {
		r := recs[i]
		ip, why := r.fields["ip"], r.fields["reason"]
		want := ip != "" && f2bCounts(mode, reason.Reason(why))
		h := hits[line]
		switch {
		case !want && len(h) > 0:
			t.Errorf("matched (host %s), but reason=%q is not counted in mode %s: %s", h[0].host, why, mode, line)
		case want && len(h) == 0:
			t.Errorf("not matched, but reason=%s is counted in mode %s: %s", why, mode, line)
		case want:
			if h[0].host != ip {
				t.Errorf("host %s, want %s (the ip field): %s", h[0].host, ip, line)
			}
			// fail2ban gives whole seconds, or more.
			if sec, err := strconv.ParseFloat(h[0].unix, 64); err != nil || int64(sec) != r.time.Unix() {
				t.Errorf("time %s, want %d (the line's own time, %s): %s", h[0].unix, r.time.Unix(), r.time.Format(time.RFC3339Nano), line)
			}
			hits[line] = h[1:] // the same line twice is matched twice
			matched[ip+" "+why] = true
		}
	}
	for _, p := range provocations {
		if f2bCounts(mode, p.reason) && !matched[p.src+" "+string(p.reason)] {
			t.Errorf("no line with ip=%s reason=%s matched", p.src, p.reason)
		}
	}
	if t.Failed() {
		t.Logf("fail2ban-regex -o output:\n%s", out)
	}
}

// runFail2banRegex runs fail2ban-regex with args and returns its standard
// output, failing the test on an error or a complaint.
func runFail2banRegex(t *testing.T, f2b string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, f2b, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("fail2ban-regex %q: %v\n%s%s", args, err, stdout.String(), stderr.String())
	}
	if strings.Contains(stderr.String(), "ERROR") {
		t.Fatalf("fail2ban-regex %q complained:\n%s", args, stderr.String())
	}
	return stdout.String()
}

// prefixed puts p before every line.
func prefixed(p string, lines []string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = p + l
	}
	return out
}

// waitRefusal waits for the log line of a refusal of src for r, in the
// server's log format.
func (m *mx) waitRefusal(src string, r reason.Reason) {
	m.t.Helper()
	if m.json {
		m.waitLogAll(20*time.Second, `"ip":"`+src+`"`, `"reason":"`+string(r)+`"`)
		return
	}
	m.waitLogAll(20*time.Second, " ip="+src+" ", " reason="+string(r))
}

// f2bProvocations are the refusals TestFail2banFilter brings about, each
// from its own address. pool verifies the server's certificate.
func f2bProvocations(pool *x509.CertPool) []provocation {
	// session runs one client from src: greeting, EHLO, then cmds, each
	// reply checked to start with its want.
	session := func(t *testing.T, m *mx, src string, steps ...string) *client {
		t.Helper()
		c := rawClient(t, src, m.addr)
		expect(t, c.reply(), "220")
		expect(t, c.cmd("EHLO client.example"), "250")
		for i := 0; i+1 < len(steps); i += 2 {
			expect(t, c.cmd(steps[i]), steps[i+1])
		}
		return c
	}
	// refusedAtConnect: the first reply is the refusal, then the close.
	refusedAtConnect := func(want string) func(*testing.T, *mx, string) {
		return func(t *testing.T, m *mx, src string) {
			c, line, _ := greet(t, src, m.addr)
			expect(t, line, want)
			c.closed()
		}
	}
	// raw writes s as it is and expects a reply starting with want.
	raw := func(t *testing.T, c *client, s, want string) {
		t.Helper()
		if _, err := io.WriteString(c.c, s); err != nil {
			t.Fatal(err)
		}
		expect(t, c.reply(), want)
	}
	// flood writes data until the server closes the connection, reading
	// (and dropping) its replies meanwhile, and waits for the log line.
	flood := func(t *testing.T, m *mx, c *client, src string, data []byte, why reason.Reason) {
		t.Helper()
		done := make(chan struct{})
		go func() {
			defer close(done)
			io.Copy(io.Discard, c.c)
		}()
		c.c.Write(data) // the server may cut it short: that is the point
		m.waitRefusal(src, why)
		c.c.Close()
		<-done
	}
	return []provocation{
		{src: "127.0.4.1", reason: reason.DenyList, run: func(t *testing.T, m *mx, src string) {
			if out, err := m.mxctl("deny", src); err != nil {
				t.Fatalf("mxguard deny %s: %v\n%s", src, err, out)
			}
			refusedAtConnect("550 5.7.1 Access denied")(t, m, src)
		}},
		{src: "127.0.4.2", reason: reason.TCPWrappers, run: refusedAtConnect("550 5.7.1 Access denied")}, // host2.dialup.example.net
		{src: "127.0.4.3", reason: reason.Access, run: refusedAtConnect("550 5.7.1 Access denied")},
		{src: "127.0.4.4", reason: reason.RateControl, run: func(t *testing.T, m *mx, src string) {
			for range 3 {
				c, line, _ := greet(t, src, m.addr)
				expect(t, line, "220")
				c.quit()
			}
			refusedAtConnect("421 4.3.2 Connection rate limit exceeded.")(t, m, src)
		}},
		{src: "127.0.4.5", reason: reason.ConnControl, run: func(t *testing.T, m *mx, src string) {
			for range 2 {
				_, line, _ := greet(t, src, m.addr) // held open until the test ends
				expect(t, line, "220")
			}
			refusedAtConnect("421 4.3.2 Too many open connections.")(t, m, src)
		}},
		{src: "127.0.4.6", reason: reason.Pregreet, run: func(t *testing.T, m *mx, src string) {
			c := rawClient(t, src, m.addr)
			raw(t, c, "EHLO slammer.example\r\n", "554 mx.test not accepting messages")
			c.closed()
		}},
		{src: "127.0.4.7", reason: reason.TooManyErrors, run: func(t *testing.T, m *mx, src string) {
			c := session(t, m, src)
			io.WriteString(c.c, strings.Repeat("XYZZY\r\n", 20))
			for i := 0; ; i++ {
				got := c.reply()
				if strings.HasPrefix(got, "421") {
					break
				}
				if i == 20 || !strings.HasPrefix(got, "5") {
					t.Fatalf("reply %d to 20 unknown commands: %q, want 500s, then 421", i+1, got)
				}
			}
			c.closed()
		}},
		{src: "127.0.4.8", reason: reason.NonSMTP, run: func(t *testing.T, m *mx, src string) {
			c, line, _ := greet(t, src, m.addr)
			expect(t, line, "220")
			raw(t, c, "GET / HTTP/1.0\r\n", "221 2.7.0")
			c.closed()
		}},
		{src: "127.0.4.9", reason: reason.BareLF, run: func(t *testing.T, m *mx, src string) {
			c := session(t, m, src)
			raw(t, c, "NOOP\n", "5")
			c.quit()
		}},
		{src: "127.0.4.10", reason: reason.BareCR, run: func(t *testing.T, m *mx, src string) {
			c := session(t, m, src)
			raw(t, c, "NO\rOP\r\n", "5")
			c.quit()
		}},
		{src: "127.0.4.11", reason: reason.NUL, run: func(t *testing.T, m *mx, src string) {
			c := session(t, m, src)
			raw(t, c, "NO\x00OP\r\n", "5")
			c.quit()
		}},
		{src: "127.0.4.12", reason: reason.LineTooLong, run: func(t *testing.T, m *mx, src string) {
			c := session(t, m, src)
			raw(t, c, "NOOP "+strings.Repeat("x", 600)+"\r\n", "500 5.5.2 Line too long")
			raw(t, c, "NOOP "+strings.Repeat("x", 5000)+"\r\n", "500 5.5.2 Line too long")
		}},
		{src: "127.0.4.13", reason: reason.StartTLSInjection, run: func(t *testing.T, m *mx, src string) {
			c := session(t, m, src)
			raw(t, c, "STARTTLS\r\nNOOP\r\n", "220")
			tc := tls.Client(c.c, &tls.Config{ServerName: "mx.test", RootCAs: pool})
			if err := tc.Handshake(); err != nil {
				t.Fatal(err)
			}
			io.WriteString(tc, "QUIT\r\n")
			tc.Close()
			m.waitRefusal(src, reason.StartTLSInjection)
		}},
		{src: "127.0.4.14", reason: reason.SessionBytes, run: func(t *testing.T, m *mx, src string) {
			c := session(t, m, src, "MAIL FROM:<a@example.org>", "250")
			// 140 KiB of commands, past max_session_bytes (128 KiB): RCPT,
			// which RFC 2920 lets a client pipeline, each accepted (RSET
			// or NOOP would meet junk_command_limit first).
			flood(t, m, c, src, []byte(strings.Repeat("RCPT TO:<alice@localhost>\r\n", 140<<10/26)), reason.SessionBytes)
		}},
		{src: "127.0.4.15", reason: reason.SessionTime, slow: true, run: func(t *testing.T, m *mx, src string) {
			c := session(t, m, src)
			c.c.SetReadDeadline(time.Now().Add(30 * time.Second))
			expect(t, c.reply(), "421 4.7.0 mx.test Error: session time limit exceeded")
		}},
		{src: "127.0.4.16", reason: reason.RelayDenied, run: func(t *testing.T, m *mx, src string) {
			c := session(t, m, src,
				"MAIL FROM:<a@example.org>", "250",
				"RCPT TO:<ip="+f2bInjected+"@evil.test>", "550 5.7.1",
				// For the JSON form: a quoted local part that would close
				// the msg string and add members of its own.
				`RCPT TO:<"\",\"ip\":\"`+f2bInjected+`\",\"reason\":\"pregreet"@evil.test>`, "550 5.7.1")
			c.quit()
		}},
		{src: "127.0.4.17", reason: reason.UnknownUser, run: func(t *testing.T, m *mx, src string) {
			c := session(t, m, src,
				"MAIL FROM:<a@example.org>", "250",
				`RCPT TO:<"x\" ip=`+f2bInjected+` reason=pregreet time=2001-01-01T00:00:00Z"@localhost>`, "550 5.1.1")
			c.quit()
		}},
		{src: "127.0.4.18", reason: reason.BadMailbox, run: func(t *testing.T, m *mx, src string) {
			c := session(t, m, src, "MAIL FROM:<a@example.org>", "250", `RCPT TO:<".hidden"@localhost>`, "550 5.1.3")
			c.quit()
		}},
		{src: "127.0.4.19", reason: reason.TooManyBadRcpts, run: func(t *testing.T, m *mx, src string) {
			c := session(t, m, src, "MAIL FROM:<a@example.org>", "250",
				"RCPT TO:<guess1@localhost>", "550 5.1.1",
				"RCPT TO:<guess2@localhost>", "550 5.1.1",
				"RCPT TO:<guess3@localhost>", "550 5.1.1")
			expect(t, c.reply(), "421 4.7.0 mx.test Error: too many invalid recipients")
			c.closed()
		}},
		{src: "127.0.4.24", reason: reason.Banned, run: func(t *testing.T, m *mx, src string) {
			// Three HTTP requests, -2 points each: the score falls to
			// ban_below (-6), and the next connection is refused.
			for range 3 {
				c, line, _ := greet(t, src, m.addr)
				expect(t, line, "220")
				raw(t, c, "GET / HTTP/1.0\r\n", "221 2.7.0")
				c.closed()
			}
			refusedAtConnect("554 5.7.1 Access denied")(t, m, src)
		}},
		// Counted in mode=aggressive only.
		{src: "127.0.4.20", reason: reason.TLS, run: func(t *testing.T, m *mx, src string) {
			c := session(t, m, src, "STARTTLS", "220")
			io.WriteString(c.c, "this is not a TLS handshake\r\n")
			c.closed()
		}},
		{src: "127.0.4.21", reason: reason.TooBig, run: func(t *testing.T, m *mx, src string) {
			c := session(t, m, src, "MAIL FROM:<a@example.org>", "250", "RCPT TO:<alice@localhost>", "250", "DATA", "354")
			// 100 KiB: more than 64 KiB past max_message_size (16 KiB),
			// within max_session_bytes.
			flood(t, m, c, src, []byte(strings.Repeat(strings.Repeat("b", 78)+"\r\n", 100<<10/80)), reason.TooBig)
		}},
		{src: "127.0.4.23", reason: reason.Pipelining, run: func(t *testing.T, m *mx, src string) {
			c, line, _ := greet(t, src, m.addr)
			expect(t, line, "220")
			raw(t, c, "EHLO bot.test\r\nMAIL FROM:<a@example.org>\r\n", "554 5.5.0")
			c.closed()
		}},
		{src: "127.0.4.22", reason: reason.TimeoutHelo, slow: true, run: func(t *testing.T, m *mx, src string) {
			c, line, _ := greet(t, src, m.addr)
			expect(t, line, "220")
			c.c.SetReadDeadline(time.Now().Add(30 * time.Second))
			expect(t, c.reply(), "421 4.4.2 mx.test Error: timeout exceeded")
		}},
	}
}

// f2bRecord is one log line of slog's, in either form.
type f2bRecord struct {
	time   time.Time
	msg    string
	fields map[string]string // after msg; numbers as slog's text form writes them
}

// parseSlogText reads a line of slog's TextHandler strictly: time=,
// level=, msg=, then key=value fields, a value bare (no space, '"' or
// '=') or Go-quoted.
func parseSlogText(line string) (f2bRecord, error) {
	var keys, values []string
	for s := line; s != ""; {
		eq := strings.IndexByte(s, '=')
		if eq <= 0 || strings.ContainsAny(s[:eq], ` "`) {
			return f2bRecord{}, fmt.Errorf("no key= at %q", s)
		}
		key, value := s[:eq], ""
		s = s[eq+1:]
		if strings.HasPrefix(s, `"`) {
			q, err := strconv.QuotedPrefix(s)
			if err != nil {
				return f2bRecord{}, fmt.Errorf("the value of %s: %v", key, err)
			}
			value, _ = strconv.Unquote(q)
			s = s[len(q):]
		} else {
			end := strings.IndexByte(s, ' ')
			if end < 0 {
				end = len(s)
			}
			value, s = s[:end], s[end:]
			if value == "" || strings.ContainsAny(value, `"=`) {
				return f2bRecord{}, fmt.Errorf("the bare value of %s: %q", key, value)
			}
		}
		keys, values = append(keys, key), append(values, value)
		if s != "" {
			if s[0] != ' ' {
				return f2bRecord{}, fmt.Errorf("no space after the value of %s", key)
			}
			s = s[1:]
		}
	}
	if len(keys) < 3 || keys[0] != "time" || keys[1] != "level" || keys[2] != "msg" {
		return f2bRecord{}, fmt.Errorf("does not start with time=, level=, msg=")
	}
	r := f2bRecord{msg: values[2], fields: map[string]string{}}
	for i := 3; i < len(keys); i++ {
		if _, dup := r.fields[keys[i]]; dup {
			return f2bRecord{}, fmt.Errorf("two %s= fields", keys[i])
		}
		r.fields[keys[i]] = values[i]
	}
	var err error
	r.time, err = time.Parse(time.RFC3339Nano, values[0])
	return r, err
}

// parseSlogJSON reads a line of slog's JSONHandler: one JSON object with
// time, level and msg first, then scalar fields.
func parseSlogJSON(line string) (f2bRecord, error) {
	dec := json.NewDecoder(strings.NewReader(line))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return f2bRecord{}, fmt.Errorf("not a JSON object: %v", err)
	}
	var keys []string
	vals := map[string]string{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return f2bRecord{}, err
		}
		key := tok.(string)
		if tok, err = dec.Token(); err != nil {
			return f2bRecord{}, err
		}
		if _, dup := vals[key]; dup {
			return f2bRecord{}, fmt.Errorf("two %q members", key)
		}
		switch v := tok.(type) {
		case string:
			vals[key] = v
		case json.Number:
			vals[key] = v.String()
		case bool:
			vals[key] = strconv.FormatBool(v)
		default:
			return f2bRecord{}, fmt.Errorf("%q is not a scalar", key)
		}
		keys = append(keys, key)
	}
	if _, err := dec.Token(); err != nil {
		return f2bRecord{}, err
	}
	if dec.More() {
		return f2bRecord{}, fmt.Errorf("more after the object")
	}
	if len(keys) < 3 || keys[0] != "time" || keys[1] != "level" || keys[2] != "msg" {
		return f2bRecord{}, fmt.Errorf("does not start with time, level, msg: %v", keys)
	}
	r := f2bRecord{msg: vals["msg"], fields: vals}
	when := vals["time"]
	for _, k := range keys[:3] {
		delete(vals, k)
	}
	var err error
	r.time, err = time.Parse(time.RFC3339Nano, when)
	return r, err
}

// The jail shipped in contrib/.
const f2bJail = "contrib/fail2ban/jail.d/mxguard.conf"

// TestFail2banJail: Debian's fail2ban-client, given its own configuration
// with contrib/'s filter and jail added, reads the jail as shipped (journal
// backend, the unit's journalmatch, port smtp, the ban limits) and with its
// commented alternatives taken instead (mode=aggressive; a log file).
func TestFail2banJail(t *testing.T) {
	t.Parallel()
	client := need(t, "fail2ban-client", "fail2ban")
	root := repoRoot(t)
	jail := readFile(t, filepath.Join(root, f2bJail))
	logFile := writeFile(t, t.TempDir(), "mxguard.log", "")
	// uncomment takes the commented alternative of the setting key, in
	// place of the setting, if any.
	uncomment := func(s, key, alt string) string {
		s = regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(key)+` *= .*$`).ReplaceAllString(s, "")
		altRe := regexp.MustCompile(`(?m)^#` + regexp.QuoteMeta(key) + `( *= )` + regexp.QuoteMeta(alt) + `$`)
		if !altRe.MatchString(s) {
			t.Fatalf("%s: no commented alternative #%s = %s", f2bJail, key, alt)
		}
		return altRe.ReplaceAllString(s, key+"${1}"+alt)
	}
	fileJail := uncomment(uncomment(jail, "backend", "auto"), "logpath", "/var/log/mxguard.log")
	fileJail = strings.Replace(fileJail, "= /var/log/mxguard.log", "= "+logFile, 1)
	// The failregex ends with the last reason of its mode's list.
	lastNormal := "|" + string(f2bNormal[len(f2bNormal)-1]) + ")"
	lastAggressive := "|" + string(f2bAggressive[len(f2bAggressive)-1]) + ")"
	variants := []struct {
		name, jail string
		want       []string // lines of fail2ban-client -d
		reasons    string   // in the failregex
	}{
		{"as shipped", jail, []string{
			`['add', 'mxguard', 'systemd']`,
			`['set', 'mxguard', 'addjournalmatch', '_SYSTEMD_UNIT=mxguard.service']`,
		}, lastNormal},
		{"mode=aggressive", uncomment(jail, "filter", "mxguard[mode=aggressive]"), []string{
			`['add', 'mxguard', 'systemd']`,
		}, lastAggressive},
		{"log file", fileJail, []string{
			`['add', 'mxguard', 'auto']`,
			`['set', 'mxguard', 'addlogpath', '` + logFile + `', 'head']`,
		}, lastNormal},
	}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			conf := filepath.Join(t.TempDir(), "fail2ban")
			// Debian's configuration, without any jail of its own or of
			// the admin's (jail.d, *.local), and with ours.
			if err := os.CopyFS(conf, os.DirFS("/etc/fail2ban")); err != nil {
				t.Fatalf("copying Debian's fail2ban configuration: %v", err)
			}
			locals, _ := filepath.Glob(filepath.Join(conf, "*.local"))
			for _, p := range append(locals, filepath.Join(conf, "jail.d")) {
				os.RemoveAll(p)
			}
			os.Mkdir(filepath.Join(conf, "jail.d"), 0o755)
			writeFile(t, filepath.Join(conf, "filter.d"), "mxguard.conf", readFile(t, filepath.Join(root, f2bFilter)))
			writeFile(t, filepath.Join(conf, "jail.d"), "mxguard.conf", v.jail)

			var stdout, stderr bytes.Buffer
			cmd := exec.Command(client, "-c", conf, "-d")
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("fail2ban-client -d: %v\n%s%s", err, stdout.String(), stderr.String())
			}
			if strings.Contains(stderr.String(), "ERROR") || strings.Contains(stderr.String(), "mxguard") {
				t.Errorf("fail2ban-client -d complained:\n%s", stderr.String())
			}
			dump := stdout.String()
			want := slices.Concat(v.want, []string{
				`['set', 'mxguard', 'maxretry', 5]`,
				`['set', 'mxguard', 'findtime', '10m']`,
				`['set', 'mxguard', 'bantime', '1h']`,
				`['start', 'mxguard']`,
			})
			for _, w := range want {
				if !strings.Contains(dump, w+"\n") {
					t.Errorf("fail2ban-client -d has no line %s", w)
				}
			}
			if !strings.Contains(dump, `['port', 'smtp']`) {
				t.Errorf("the jail's action does not block port smtp")
			}
			if !strings.Contains(dump, v.reasons) {
				t.Errorf("the jail's failregex does not end its reasons with %s", v.reasons)
			}
			if t.Failed() {
				t.Logf("fail2ban-client -d:\n%s", dump)
			}
		})
	}
}

// TestFail2banFilterIPv6: IPv6 clients, in lines written by the slog
// handlers the server uses, are taken from the ip field like IPv4 ones (the
// loopback server of TestFail2banFilter has IPv4 clients only).
func TestFail2banFilterIPv6(t *testing.T) {
	t.Parallel()
	f2b := need(t, "fail2ban-regex", "fail2ban")
	filter := filepath.Join(repoRoot(t), f2bFilter)
	provocations := []provocation{{src: "2001:db8::5", reason: reason.RelayDenied}, {src: "::1", reason: reason.BareLF}}
	for format, parse := range map[string]func(string) (f2bRecord, error){"text": parseSlogText, "json": parseSlogJSON} {
		t.Run(format, func(t *testing.T) {
			var buf bytes.Buffer
			var h slog.Handler = slog.NewTextHandler(&buf, nil)
			if format == "json" {
				h = slog.NewJSONHandler(&buf, nil)
			}
			log := slog.New(h)
			log.Info("relaying denied for <ip="+f2bInjected+"@evil.test> from unknown [2001:db8::5]", "ip", "2001:db8::5", "reason", reason.RelayDenied)
			log.With("session", "s1", "ip", "::1").Info("protocol error from unknown [::1]", "reason", reason.BareLF)
			log.Info("accepted", "id", "q1", "ip", "2001:db8::6", "from", "ip=2001:db8::66@example.org", "rcpts", 1)
			lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
			recs := make([]f2bRecord, len(lines))
			for i, l := range lines {
				var err error
				if recs[i], err = parse(l); err != nil {
					t.Fatalf("%v: %s", err, l)
				}
			}
			logFile := writeFile(t, t.TempDir(), "mxguard.log", buf.String())
			checkFail2ban(t, f2b, logFile, filter, "normal", lines, recs, provocations)
		})
	}
}
