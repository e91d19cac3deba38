package e2e

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// seedGreetPause is FEATURE(`greet_pause', `2000') of the seed.
const seedGreetPause = 2 * time.Second

// importSeed runs `mxguard import-sendmail` on the seed's sendmail.mc,
// access file and hosts.deny, checks that it reports exactly the .mc lines
// that have no mxguard meaning, and returns the TOML it printed.
func importSeed(t *testing.T) string {
	t.Helper()
	root := repoRoot(t)
	cmd := exec.Command(binary, "import-sendmail",
		"--mc", "testdata/seed/sendmail.mc",
		"--access", "testdata/seed/access",
		"--hosts-deny", "testdata/seed/hosts.deny")
	cmd.Dir = root
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("import-sendmail: %v\n%s", err, stderr.String())
	}

	// Every line on stderr names a line of sendmail.mc that mxguard has no
	// use for (OSTYPE, the mailers, the timeouts of AUTH and of dialing
	// several hosts), and every such line is named.
	mc := strings.Split(readFile(t, filepath.Join(root, "testdata/seed/sendmail.mc")), "\n")
	untranslatable := map[int]bool{}
	for i, l := range mc {
		for _, p := range []string{"OSTYPE(", "MAILER(", "define(`confTO_AUTH'", "define(`confTO_ICONNECT'", "define(`confTO_ACONNECT'"} {
			if strings.HasPrefix(l, p) {
				untranslatable[i+1] = true
			}
		}
	}
	re := regexp.MustCompile(`^sendmail\.mc:(\d+): `)
	reported := map[int]bool{}
	for _, l := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		m := re.FindStringSubmatch(l)
		if m == nil {
			t.Errorf("import-sendmail stderr line %q does not name a sendmail.mc line", l)
			continue
		}
		n, _ := strconv.Atoi(m[1])
		if !untranslatable[n] {
			t.Errorf("import-sendmail reports sendmail.mc:%d (%q) as untranslated; it has an mxguard equivalent", n, mc[n-1])
		}
		reported[n] = true
	}
	for n := range untranslatable {
		if !reported[n] {
			t.Errorf("import-sendmail does not report sendmail.mc:%d (%q)", n, mc[n-1])
		}
	}
	return stdout.String()
}

// TestSeedConfig runs the seed's complete sendmail configuration, imported
// with `mxguard import-sendmail` and not edited, and shows each of its
// defences working against real clients. The subtests share one server and
// run in order; each uses its own source addresses so that the per-client
// limits of one do not touch another, and the expensive one
// (max_daemon_children, which leaves 60 connections queued in the
// connection throttle) comes last. Meanwhile one client sits silent after
// its greeting, to meet the seed's 30 s timeout at the end, on a second
// server of the same configuration: on a loaded machine the subtests may
// take longer than 30 s, and the count of open connections they check must
// not change when it is dropped.
func TestSeedConfig(t *testing.T) {
	t.Parallel()
	imported := importSeed(t)

	dns := hostsDNS(t, map[string]string{
		"127.0.0.7":  "host5.adsl.alicedsl.de", // a dial-up pool of the seed's hosts.deny
		"127.0.0.8":  "host8.alicedsl.de",      // same provider, not its .adsl. pool
		"127.0.0.20": "slammer.example.net",    // talks before the greeting
		"127.0.0.21": "patient.example.net",    // waits for it
		"127.0.9.1":  "admin.mx.test",          // trusted
	})
	// What the import cannot know: where to listen and which addresses the
	// test's clients use. 127.0.0.1 is deliberately not trusted here, so
	// that its exemptions come from the seed's access map.
	start := func() *mx {
		t.Helper()
		dir := t.TempDir()
		conf := fmt.Sprintf("listen = [\"127.0.0.1:0\"]\ndata_dir = %q\nhostname = \"mx.test\"\nresolver = %q\ntrusted_networks = [\"127.0.9.1/32\"]\n",
			filepath.Join(dir, "data"), dns.Addr) + imported
		m := startMX(t, conf)
		m.addr = m.listenAddr()
		return m
	}
	m, quiet := start(), start()
	if out, err := exec.Command(binary, "check", "--config", m.config).CombinedOutput(); err != nil {
		t.Fatalf("mxguard check on the imported configuration: %v\n%s", err, out)
	}

	// The silent client, on the second server: its helo timeout runs from
	// the greeting, which comes after silentSince.
	silentSince := time.Now()
	silent, line, _ := greet(t, "127.0.0.1", quiet.addr)
	expect(t, line, "220 mx.test")
	silent.c.SetDeadline(time.Time{}) // expectTimeout below sets the read deadline

	t.Run("ClientRate", func(t *testing.T) {
		// ClientRate: 5 in the 60 s window. Three connections now, two more
		// later: five served. Alongside, seven more from 127.0.0.1, exempt
		// by ClientRate:127.0.0.1 0 and ClientConn:127.0.0.1 0.
		srcs := []string{"127.0.0.5", "127.0.0.5", "127.0.0.5"}
		for range 7 {
			srcs = append(srcs, "127.0.0.1")
		}
		for _, g := range greetAll(t, m.addr, srcs)() {
			expect(t, g.line, "220 mx.test")
			g.c.quit()
		}
		m.waitAdmitted(0) // ClientConn 3 must not get in the way
		for _, g := range greetAll(t, m.addr, []string{"127.0.0.5", "127.0.0.5"})() {
			expect(t, g.line, "220 mx.test")
		}
		// The sixth in the window is refused at once, before any pause.
		c, line, took := greet(t, "127.0.0.5", m.addr)
		if line != "421 4.3.2 Connection rate limit exceeded." {
			t.Fatalf("6th connection from 127.0.0.5 in 60s got %q", line)
		}
		if took >= seedGreetPause {
			t.Errorf("the refusal took %v; it must come before the greeting pause", took)
		}
		c.closed()
		m.waitLogAll(5*time.Second, "ratecontrol", "127.0.0.5")
	})

	t.Run("ClientConn", func(t *testing.T) {
		var open []*client
		for _, g := range greetAll(t, m.addr, []string{"127.0.0.6", "127.0.0.6", "127.0.0.6"})() {
			expect(t, g.line, "220 mx.test")
			open = append(open, g.c)
		}
		c, line, _ := greet(t, "127.0.0.6", m.addr)
		if line != "421 4.3.2 Too many open connections." {
			t.Fatalf("4th concurrent connection from 127.0.0.6 got %q", line)
		}
		c.closed()
		m.waitLogAll(5*time.Second, "conncontrol", "127.0.0.6")
		// It is the number open at once that counts: with one closed, the
		// next connection (the fifth in the window, within ClientRate) is
		// served.
		open[0].quit()
		m.waitAdmitted(2)
		_, line, _ = greet(t, "127.0.0.6", m.addr)
		expect(t, line, "220 mx.test")
	})

	t.Run("GreetPause", func(t *testing.T) {
		// A slammer: talks before the greeting, gets 554, is dropped.
		s := rawClient(t, "127.0.0.20", m.addr)
		if _, err := s.c.Write([]byte("EHLO slammer.example.net\r\n")); err != nil {
			t.Fatal(err)
		}
		if got := s.reply(); got != "554 mx.test not accepting messages" {
			t.Fatalf("slammer got %q", got)
		}
		s.closed()
		m.waitLog("rejecting commands from slammer.example.net [127.0.0.20] due to pre-greeting traffic", 5*time.Second)

		// A patient client waits out the pause and is served.
		p, line, took := greet(t, "127.0.0.21", m.addr)
		expect(t, line, "220 mx.test")
		if took < seedGreetPause {
			t.Errorf("greeting after %v, want the %v pause", took, seedGreetPause)
		}
		expect(t, p.cmd("EHLO patient.example.net"), "250")

		// GreetPause:127.0.0.1 0: no pause for localhost. (The connection
		// throttle may hold it until the next second at most.)
		_, line, took = greet(t, "127.0.0.1", m.addr)
		expect(t, line, "220 mx.test")
		if took >= 1500*time.Millisecond {
			t.Errorf("127.0.0.1 got its greeting after %v, want it without the pause", took)
		}
	})

	t.Run("ConnectionRateThrottle", func(t *testing.T) {
		// Start on a fresh second with nothing queued, so that the batches
		// fall on whole seconds as sendmail's do.
		m.waitAdmitted(0)
		next := time.Now().Truncate(time.Second).Add(time.Second + 20*time.Millisecond)
		<-time.After(time.Until(next))

		crowd := addrs("127.0.1.1", 20)
		wait := greetAll(t, m.addr, crowd)
		// The accept loop does not wait for the crowd: a trusted client is
		// greeted at once while the twenty are stalled.
		_, line, took := greet(t, "127.0.9.1", m.addr)
		expect(t, line, "220 mx.test")
		// Queued behind the crowd, it would wait for the fourth second;
		// 2s leaves room for a loaded machine and still tells the two apart.
		if took > 2*time.Second {
			t.Errorf("trusted client greeted after %v while the throttle held the crowd", took)
		}
		gs := wait()
		var at []time.Time
		for i, g := range gs {
			if !strings.HasPrefix(g.line, "220 mx.test") {
				t.Fatalf("connection from %s got %q", crowd[i], g.line)
			}
			at = append(at, g.at)
		}
		slices.SortFunc(at, time.Time.Compare)
		// The throttle starts at most five of the crowd in any one second
		// from the fresh one on, and greets each a pause after its start,
		// so the i-th greeting cannot come before second i/5 plus the
		// pause. Load only makes greetings later, so this holds on a busy
		// machine, where the greetings' seconds do not show the batches
		// (TestThrottleSeconds in package admit checks those, on a clock
		// of its own).
		fresh := next.Truncate(time.Second)
		for i, a := range at {
			if earliest := fresh.Add(time.Duration(i/5)*time.Second + seedGreetPause); a.Before(earliest) {
				t.Errorf("greeting %d of 20 came %v after the fresh second, before %v: more than 5 started in a second",
					i+1, a.Sub(fresh), earliest.Sub(fresh))
			}
		}
		// The last batch starts in the fourth second; a few more seconds
		// are room for a loaded machine.
		if d := at[len(at)-1].Sub(fresh); d > 3*time.Second+seedGreetPause+4*time.Second {
			t.Errorf("last of the crowd greeted %v after the fresh second, want about %v", d, 3*time.Second+seedGreetPause)
		}
		m.waitLog("deferring connections on daemon mxguard: 5 per second", 5*time.Second)
		for _, g := range gs {
			g.c.quit()
		}
	})

	t.Run("MaxRcptsPerMessage", func(t *testing.T) {
		c, line, _ := greet(t, "127.0.0.1", m.addr)
		expect(t, line, "220")
		expect(t, c.cmd("EHLO localhost"), "250")
		expect(t, c.cmd("MAIL FROM:<list@localhost>"), "250")
		for i := 1; i <= 25; i++ {
			expect(t, c.cmd(fmt.Sprintf("RCPT TO:<r%d@localhost>", i)), "250 2.1.5")
		}
		expect(t, c.cmd("RCPT TO:<r26@localhost>"), "452 4.5.3 Too many recipients")
		// The message still goes to the 25 accepted; the client retries the rest.
		expect(t, c.cmd("DATA"), "354")
		expect(t, c.cmd("Subject: many\r\n\r\nto 25 of 26\r\n."), "250")
		c.quit()
	})

	t.Run("BadRcptThrottle", func(t *testing.T) {
		c, line, _ := greet(t, "127.0.0.1", m.addr)
		expect(t, line, "220")
		expect(t, c.cmd("EHLO localhost"), "250")
		expect(t, c.cmd("MAIL FROM:<guess@example.com>"), "250")
		timed := func(rcpt, want string) time.Duration {
			t.Helper()
			start := time.Now()
			expect(t, c.cmd("RCPT TO:"+rcpt), want)
			return time.Since(start)
		}
		// Two refused recipients are answered at once...
		for _, r := range []string{"<a@elsewhere.example>", "<b@elsewhere.example>"} {
			if d := timed(r, "550 5.7.1 Relaying denied"); d >= time.Second {
				t.Errorf("RCPT %s before the threshold took %v", r, d)
			}
		}
		// ...every later one in the transaction waits a second.
		for _, r := range []struct{ rcpt, want string }{
			{"<c@localhost>", "250 2.1.5"},
			{"<d@elsewhere.example>", "550 5.7.1 Relaying denied"},
		} {
			if d := timed(r.rcpt, r.want); d < time.Second {
				t.Errorf("RCPT %s after two refusals took %v, want at least 1s", r.rcpt, d)
			}
		}
		m.waitLogAll(5*time.Second, "Possible SMTP RCPT flood, throttling.", "127.0.0.1")
		if n := m.logCount("Possible SMTP RCPT flood"); n != 1 {
			t.Errorf("%d flood log lines, want one per transaction", n)
		}
		// A new transaction starts counting afresh.
		expect(t, c.cmd("RSET"), "250")
		expect(t, c.cmd("MAIL FROM:<guess@example.com>"), "250")
		if d := timed("<e@localhost>", "250"); d >= time.Second {
			t.Errorf("RCPT in a new transaction took %v", d)
		}
		c.quit()
	})

	t.Run("HostsDeny", func(t *testing.T) {
		// 127.0.0.7 is host5.adsl.alicedsl.de: `sendmail: .adsl.alicedsl.de`.
		c, line, took := greet(t, "127.0.0.7", m.addr)
		if line != "550 5.7.1 Access denied" {
			t.Fatalf("host5.adsl.alicedsl.de got %q", line)
		}
		if took >= seedGreetPause {
			t.Errorf("refused after %v; hosts.deny applies before the greeting pause", took)
		}
		c.closed()
		m.waitLog("tcpwrappers (host5.adsl.alicedsl.de, 127.0.0.7) rejection", 5*time.Second)
		// The same provider outside the listed pool is served.
		c, line, _ = greet(t, "127.0.0.8", m.addr)
		expect(t, line, "220 mx.test")
		expect(t, c.cmd("EHLO host8.alicedsl.de"), "250")
		c.quit()
	})

	t.Run("MaxDaemonChildren", func(t *testing.T) {
		// Sixty sessions from sixty hosts; the connection throttle admits
		// five a second, but every one of them holds its place already.
		m.waitAdmitted(0)
		for _, src := range addrs("127.0.2.1", 60) {
			rawClient(t, src, m.addr)
		}
		m.waitAdmitted(60)
		c, line, took := greet(t, "127.0.2.61", m.addr)
		if line != "421 4.3.2 mx.test Too many concurrent connections, try again later" {
			t.Fatalf("61st concurrent connection got %q", line)
		}
		if took > 500*time.Millisecond {
			t.Errorf("61st connection refused after %v, want at once", took)
		}
		c.closed()
		m.waitLog("max_daemon_children", 5*time.Second)
	})

	// Timeout.helo 30s: the silent client is told and dropped. (The other
	// phases' timeouts are shown, shortened, by TestTimeouts.)
	// A reply seconds late has been seen on a loaded machine; without the
	// helo timeout there would be none.
	expectTimeout(t, silent, silentSince, 30*time.Second-100*time.Millisecond, 40*time.Second)
	quiet.waitLogAll(5*time.Second, "timeout", "phase=helo", "127.0.0.1")
}
