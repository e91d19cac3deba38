package e2e

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// trickle writes s to c one byte every interval until s is used up, the
// write fails (the server hung up) or the test ends.
func trickle(t *testing.T, c *client, s string, interval time.Duration) {
	t.Helper()
	done := make(chan struct{})
	stopped := make(chan struct{})
	t.Cleanup(func() { close(done); <-stopped })
	go func() {
		defer close(stopped)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for i := 0; i < len(s); i++ {
			if _, err := c.c.Write([]byte{s[i]}); err != nil {
				return
			}
			select {
			case <-tick.C:
			case <-done:
				return
			}
		}
	}()
}

// expectTimeout reads the next reply and checks that it is the phase
// timeout, that it came within [lo, hi) of start, and that the server then
// closed the connection.
func expectTimeout(t *testing.T, c *client, start time.Time, lo, hi time.Duration) {
	t.Helper()
	c.c.SetReadDeadline(start.Add(hi + 5*time.Second)) // a server without the timeout fails, not hangs
	got := c.reply()
	took := time.Since(start)
	if got != "421 4.4.2 mx.test Error: timeout exceeded" {
		t.Fatalf("after %v got %q, want the timeout reply", took, got)
	}
	if took < lo || took >= hi {
		t.Errorf("timeout reply after %v, want between %v and %v", took, lo, hi)
	}
	c.closed()
}

// inData connects from src and takes a transaction as far as DATA's 354,
// for the timeouts that run while the body comes in. It returns when DATA
// was sent: the server's clock for the body starts after that, so a time
// taken from there never makes its timeout look early, however late the
// 354 reaches a loaded client.
func inData(t *testing.T, src, addr string) (*client, time.Time) {
	t.Helper()
	c := rawClient(t, src, addr)
	expect(t, c.reply(), "220 mx.test")
	expect(t, c.cmd("EHLO slow.example"), "250")
	expect(t, c.cmd("MAIL FROM:<a@example.org>"), "250")
	expect(t, c.cmd("RCPT TO:<b@localhost>"), "250")
	start := time.Now()
	expect(t, c.cmd("DATA"), "354")
	return c, start
}

// TestTimeouts: each phase is bounded by its [timeouts] value, and the
// deadline is not renewed by a client that trickles bytes (slowloris): it
// runs from the start of the wait, whatever arrives in between.
func TestTimeouts(t *testing.T) {
	t.Parallel()
	m := startMXLoopback(t, `[timeouts]
command = "1s"
helo = "1s"
mail = "1s"
rcpt = "1s"
datainit = "1s"
datablock = "1s"
datafinal = "3s"
`)
	const phase = time.Second
	// A deadline renewed by the trickled bytes would end the session a
	// phase after the last byte, 5s or more in; a loaded machine may add a
	// second or two to the dial and the replies.
	const late = 3 * time.Second
	tests := []struct {
		name  string
		setup []string // commands answered before the slow part
		slow  string   // trickled one byte per 100 ms; "" = silence
		log   string   // phase in the log line
	}{
		{"silent after greeting", nil, "", "phase=helo"},
		{"slowloris EHLO", nil, "EHLO a-very-slow-client.example.org and more and more", "phase=helo"},
		{"slowloris MAIL", []string{"EHLO slow.example"}, "MAIL FROM:<someone-slow@example.org> and more and more", "phase=mail"},
		{"slowloris RCPT", []string{"EHLO slow.example", "MAIL FROM:<a@example.org>"}, "RCPT TO:<someone-slow@localhost> and more and more", "phase=rcpt"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			src := fmt.Sprintf("127.0.3.%d", i+1)
			// The phase's clock starts at the server's reply to the last
			// exchange; start is taken before the client asks for it, so
			// that the reply's way to a loaded client cannot make the
			// timeout look early.
			start := time.Now()
			c := rawClient(t, src, m.addr)
			expect(t, c.reply(), "220 mx.test")
			for _, cmd := range tt.setup {
				start = time.Now()
				expect(t, c.cmd(cmd), "2")
			}
			if tt.slow != "" {
				trickle(t, c, tt.slow, 100*time.Millisecond)
			}
			expectTimeout(t, c, start, phase-100*time.Millisecond, phase+late)
			m.waitLogAll(5*time.Second, "timeout", tt.log, src)
		})
	}

	t.Run("slowloris DATA", func(t *testing.T) {
		t.Parallel()
		c, start := inData(t, "127.0.3.10", m.addr)
		trickle(t, c, "Subject: slow\r\n\r\n"+strings.Repeat("x", 200), 100*time.Millisecond)
		expectTimeout(t, c, start, phase-100*time.Millisecond, phase+late)
		m.waitLogAll(5*time.Second, "timeout", "datablock", "127.0.3.10")
	})

	t.Run("DATA in blocks past datafinal", func(t *testing.T) {
		// Each block renews datablock, but the whole body must be in
		// within datafinal. A server of its own, whose datablock leaves a
		// loaded machine room to send the next block in time: with the
		// 1s above, a block 600ms late ended the body before datafinal.
		t.Parallel()
		m := startMXLoopback(t, `[timeouts]
datablock = "2s"
datafinal = "3s"
`)
		c, start := inData(t, "127.0.3.11", m.addr)
		done := make(chan struct{})
		stopped := make(chan struct{})
		t.Cleanup(func() { close(done); <-stopped })
		block := strings.Repeat(strings.Repeat("y", 998)+"\r\n", 80) // 80 KB, more than one renewal's worth
		go func() {
			defer close(stopped)
			tick := time.NewTicker(400 * time.Millisecond)
			defer tick.Stop()
			for {
				if _, err := io.WriteString(c.c, block); err != nil {
					return
				}
				select {
				case <-tick.C:
				case <-done:
					return
				}
			}
		}()
		expectTimeout(t, c, start, 3*time.Second-100*time.Millisecond, 3*time.Second+late)
	})
}

// TestTerminateFalse: without `terminate', a client over ClientRate or
// ClientConn keeps its session, but MAIL gets the temporary error; a
// client within its limits is untouched.
func TestTerminateFalse(t *testing.T) {
	t.Parallel()
	m := startMXLoopback(t, `trusted_networks = ["127.0.0.1/32"]
[limits]
client_rate = 2
client_conn = 1
terminate = false
`)
	start := func(src string) *client {
		t.Helper()
		c := rawClient(t, src, m.addr)
		expect(t, c.reply(), "220 mx.test")
		expect(t, c.cmd("EHLO client.example"), "250")
		return c
	}
	first := start("127.0.0.3")
	expect(t, first.cmd("MAIL FROM:<a@example.org>"), "250 2.1.0")

	// Second at once: ClientConn 1 exceeded; the session goes on.
	second := start("127.0.0.3")
	expect(t, second.cmd("MAIL FROM:<a@example.org>"), "452 4.3.2 Too many open connections.")
	expect(t, second.cmd("NOOP"), "250")
	m.waitLogAll(5*time.Second, "conncontrol", "127.0.0.3")

	// Third in the window: ClientRate 2 exceeded, which sendmail checks
	// first, so its reply is the one given.
	third := start("127.0.0.3")
	expect(t, third.cmd("MAIL FROM:<a@example.org>"), "452 4.3.2 Connection rate limit exceeded.")
	expect(t, third.cmd("RSET"), "250")
	expect(t, third.cmd("MAIL FROM:<a@example.org>"), "452 4.3.2 Connection rate limit exceeded.")
	m.waitLogAll(5*time.Second, "ratecontrol", "127.0.0.3")
	second.quit()
	third.quit()

	// The first session, within the limits, completes its message.
	expect(t, first.cmd("RCPT TO:<bob@localhost>"), "250")
	expect(t, first.cmd("DATA"), "354")
	expect(t, first.cmd("Subject: first\r\n\r\nwithin the limits\r\n."), "250")
	first.quit()
	waitMaildir(t, m, filepath.Join(m.dir, "data/mail/localhost/bob"), 1)

	// Another client is not affected by 127.0.0.3's counts.
	other := start("127.0.0.4")
	expect(t, other.cmd("MAIL FROM:<a@example.org>"), "250")
}

// TestAccessMap: Connect:, From: and To: entries of a sendmail access file,
// looked up as sendmail does (host name and its parent domains before
// address keys, then shorter address prefixes), plus CIDR keys.
func TestAccessMap(t *testing.T) {
	t.Parallel()
	dns := hostsDNS(t, map[string]string{
		"127.0.5.5": "mx5.bad.example.net",
		"127.0.6.6": "mail.good.example.org",
	})
	// A PTR record anyone can publish for their own addresses; the name
	// does not resolve back, so it must not count.
	dns.Add("8.6.0.127.in-addr.arpa. 60 IN PTR forged.good.example.org.",
		"forged.good.example.org. 60 IN A 127.0.6.6")
	back := startMXLoopback(t, "hostname = \"back.test\"\nlocal_domains = [\"other.example\"]\n")
	dir := t.TempDir()
	access := writeFile(t, dir, "access", `# sendmail access file
Connect:127.0.2.0/24        REJECT
Connect:127.0.4             ERROR:5.7.1:550 Dial-up hosts must use their provider's relay
Connect:bad.example.net     REJECT
Connect:127.0.6             REJECT
Connect:good.example.org    OK
Connect:127.0.3.4           RELAY
From:spammer@example.com    REJECT
From:spam.example           REJECT
To:closed@localhost         REJECT
`)
	m := startMX(t, fmt.Sprintf(`trusted_networks = ["127.0.0.1/32"]
resolver = %q
access_map = %q
[delivery]
relay = "smtp://%s"
`, dns.Addr, access, back.addr))

	connects := []struct {
		src, want, log string
	}{
		{"127.0.2.9", "550 5.7.1 Access denied", "Connect:127.0.2.0/24"},
		{"127.0.2.250", "550 5.7.1 Access denied", "Connect:127.0.2.0/24"},
		{"127.0.4.1", "550 5.7.1 Dial-up hosts must use their provider's relay", "Connect:127.0.4"},
		{"127.0.5.5", "550 5.7.1 Access denied", "Connect:bad.example.net"}, // parent domain of mx5.bad.example.net
		{"127.0.6.7", "550 5.7.1 Access denied", "Connect:127.0.6"},
		{"127.0.6.6", "220 mx.test", ""},                            // mail.good.example.org: the host-name entry comes first
		{"127.0.6.8", "550 5.7.1 Access denied", "Connect:127.0.6"}, // claims good.example.org, not forward-confirmed
		{"127.0.3.9", "220 mx.test", ""},                            // nothing matches
	}
	for _, tt := range connects {
		c, line, _ := greet(t, tt.src, m.addr)
		if !strings.HasPrefix(line, tt.want) {
			t.Errorf("connection from %s got %q, want %q", tt.src, line, tt.want)
			continue
		}
		if tt.log == "" {
			c.quit()
			continue
		}
		c.closed()
		m.waitLogAll(5*time.Second, "access", tt.log, "ip="+tt.src)
	}

	c, line, _ := greet(t, "127.0.3.9", m.addr)
	expect(t, line, "220")
	expect(t, c.cmd("EHLO client.example"), "250")
	expect(t, c.cmd("MAIL FROM:<spammer@example.com>"), "550 5.7.1")
	expect(t, c.cmd("MAIL FROM:<someone@spam.example>"), "550 5.7.1")
	expect(t, c.cmd("MAIL FROM:<someone@sub.spam.example>"), "550 5.7.1")
	m.waitLogAll(5*time.Second, "rejecting sender", "From:spammer@example.com")
	expect(t, c.cmd("MAIL FROM:<friend@example.com>"), "250")
	expect(t, c.cmd("RCPT TO:<closed@localhost>"), "550 5.2.1")
	expect(t, c.cmd("RCPT TO:<open@localhost>"), "250")
	// An ordinary untrusted client may not relay...
	expect(t, c.cmd("RCPT TO:<user@other.example>"), "550 5.7.1 Relaying denied")
	c.quit()

	// ...one with Connect: RELAY may, and the message arrives.
	r, line, _ := greet(t, "127.0.3.4", m.addr)
	expect(t, line, "220")
	expect(t, r.cmd("EHLO partner.example"), "250")
	expect(t, r.cmd("MAIL FROM:<app@partner.example>"), "250")
	expect(t, r.cmd("RCPT TO:<user@other.example>"), "250")
	expect(t, r.cmd("DATA"), "354")
	expect(t, r.cmd("Subject: relayed\r\n\r\nfrom a RELAY client\r\n."), "250")
	r.quit()
	files := waitMaildir(t, back, filepath.Join(back.dir, "data/mail/other.example/user"), 1)
	if got := readFile(t, files[0]); !strings.Contains(got, "from a RELAY client") {
		t.Errorf("relayed message:\n%s", got)
	}
}

// TestTrustDenyFromLogLine: `mxguard trust` and `mxguard deny` take the
// log line an operator is looking at, change the running server at once,
// and are still in force after a restart.
func TestTrustDenyFromLogLine(t *testing.T) {
	t.Parallel()
	m := startMXLoopback(t, `trusted_networks = ["127.0.0.1/32"]
[limits]
client_rate = 2
`)
	// connect makes n connections from src and returns the last first reply.
	connect := func(src string, n int) string {
		t.Helper()
		var line string
		for range n {
			var c *client
			c, line, _ = greet(t, src, m.addr)
			if strings.HasPrefix(line, "220") {
				c.quit()
			}
		}
		return line
	}
	if got := connect("127.0.0.8", 3); got != "421 4.3.2 Connection rate limit exceeded." {
		t.Fatalf("3rd connection got %q", got)
	}
	logLine := m.waitLogAll(5*time.Second, "ratecontrol", "127.0.0.8")
	out, err := m.mxctl("trust", logLine)
	if err != nil || !strings.Contains(out, "127.0.0.8/32") {
		t.Fatalf("mxguard trust %q: %v: %s", logLine, err, out)
	}
	if got := connect("127.0.0.8", 3); !strings.HasPrefix(got, "220") {
		t.Fatalf("after trust, 127.0.0.8 got %q", got)
	}

	// A sendmail maillog line, as the operator may have it from the old server.
	denyLine := "Mar 29 21:14:07 nifelhei sm-mta[4211]: n2TKE7Zq004211: rejecting commands from host9.adsl.alicedsl.de [127.0.0.9] due to pre-greeting traffic"
	out, err = m.mxctl("deny", denyLine)
	if err != nil || !strings.Contains(out, "127.0.0.9/32") {
		t.Fatalf("mxguard deny: %v: %s", err, out)
	}
	c, line, _ := greet(t, "127.0.0.9", m.addr)
	if line != "550 5.7.1 Access denied" {
		t.Fatalf("denied 127.0.0.9 got %q", line)
	}
	c.closed()
	m.waitLogAll(5*time.Second, "deny_list", "127.0.0.9")
	if got := connect("127.0.0.10", 1); !strings.HasPrefix(got, "220") {
		t.Fatalf("127.0.0.10 got %q; deny must take only the one address", got)
	}

	m.restart()
	if got := connect("127.0.0.8", 3); !strings.HasPrefix(got, "220") {
		t.Errorf("after restart, trusted 127.0.0.8 got %q", got)
	}
	c, line, _ = greet(t, "127.0.0.9", m.addr)
	if line != "550 5.7.1 Access denied" {
		t.Errorf("after restart, denied 127.0.0.9 got %q", line)
	}
	c.closed()
}

// TestReloadSIGHUP: SIGHUP re-reads the access map; a session open across
// the reload carries on and delivers, new connections get the new limits,
// and a broken file is reported and the running map kept.
func TestReloadSIGHUP(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	access := writeFile(t, dir, "access", "ClientRate:   10\n")
	m := startMXLoopback(t, fmt.Sprintf("trusted_networks = [\"127.0.0.1/32\"]\naccess_map = %q\n", access))

	open, line, _ := greet(t, "127.0.0.10", m.addr)
	expect(t, line, "220")
	expect(t, open.cmd("EHLO before.example"), "250")
	expect(t, open.cmd("MAIL FROM:<a@example.org>"), "250")

	writeFile(t, dir, "access", "ClientRate:   2\n")
	m.hup("configuration reloaded")

	expect(t, open.cmd("RCPT TO:<bob@localhost>"), "250")
	expect(t, open.cmd("DATA"), "354")
	expect(t, open.cmd("Subject: across a reload\r\n\r\nstill here\r\n."), "250")
	open.quit()
	waitMaildir(t, m, filepath.Join(m.dir, "data/mail/localhost/bob"), 1)

	// thirdRefused checks that src gets two connections and not a third.
	thirdRefused := func(src string) {
		t.Helper()
		for range 2 {
			c, line, _ := greet(t, src, m.addr)
			expect(t, line, "220")
			c.quit()
		}
		c, line, _ := greet(t, src, m.addr)
		if line != "421 4.3.2 Connection rate limit exceeded." {
			t.Fatalf("3rd connection from %s got %q, want the reloaded ClientRate 2", src, line)
		}
		c.closed()
	}
	thirdRefused("127.0.0.11")

	writeFile(t, dir, "access", "ClientRate:   lots\n")
	m.hup("reload failed")
	m.waitLogAll(5*time.Second, "reload failed", "ClientRate", "lots")
	thirdRefused("127.0.0.12")
}

// TestRateWindowSliding: ClientRate counts the connections of the last
// connection_rate_window_size, a window that slides with each connection:
// a limit counted in fixed intervals would let a client in twice at an
// interval's end and twice again at the next one's start.
func TestRateWindowSliding(t *testing.T) {
	t.Parallel()
	m := startMXLoopback(t, `trusted_networks = ["127.0.0.1/32"]
[limits]
client_rate = 2
connection_rate_window_size = "2s"
`)
	connectAt := func(at time.Time, want string) {
		t.Helper()
		<-time.After(time.Until(at))
		c, line, _ := greet(t, "127.0.0.17", m.addr)
		expect(t, line, want)
		if strings.HasPrefix(line, "220") {
			c.quit()
		}
	}
	start := time.Now()
	connectAt(start, "220")
	connectAt(start.Add(time.Second), "220")
	// The first has left the window, the second has not: one more, not two.
	connectAt(start.Add(2300*time.Millisecond), "220")
	connectAt(start.Add(2400*time.Millisecond), "421 4.3.2 Connection rate limit exceeded.")
}
