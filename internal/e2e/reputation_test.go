package e2e

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestTarpitThenBan: a client guessing recipients is slowed once its score
// falls below tarpit_below, more with each guess up to tarpit_max, then
// banned at ban_below: refused at connect, logged, listed by `mxguard
// bans` and `mxguard status`, counted in /metrics. A trusted client doing
// the same is never slowed or banned. `mxguard trust` lifts the ban;
// `mxguard unban` lifts another without trusting.
func TestTarpitThenBan(t *testing.T) {
	t.Parallel()
	admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	rcpts := writeFile(t, t.TempDir(), "recipients", "alice@localhost\n")
	m := startMX(t, fmt.Sprintf(`trusted_networks = ["127.0.8.9/32"]
[limits]
max_bad_rcpts = 100
[reputation]
tarpit_below = -2
tarpit_step = "1s"
tarpit_max = "2s"
ban_below = -5
unknown_user_points = -1
protocol_error_points = -2
[recipients]
file = %q
[admin]
listen = %q
`, rcpts, admin))
	metric := func(name string) float64 {
		t.Helper()
		mm := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(httpGet(t, "http://"+admin+"/metrics"))
		if mm == nil {
			t.Fatalf("/metrics has no %s", name)
		}
		v, _ := strconv.ParseFloat(mm[1], 64)
		return v
	}
	// guess sends RCPT for an unknown user and returns how long the 550
	// took to come.
	guess := func(c *client, i int) time.Duration {
		t.Helper()
		start := time.Now()
		expect(t, c.cmd(fmt.Sprintf("RCPT TO:<guess%d@localhost>", i)), "550 5.1.1")
		return time.Since(start)
	}

	// Trusted: six guesses, never held, never banned.
	c := rawClient(t, "127.0.8.9", m.addr)
	expect(t, c.reply(), "220")
	expect(t, c.cmd("EHLO trusted.example"), "250")
	expect(t, c.cmd("MAIL FROM:<a@example.org>"), "250")
	for i := range 6 {
		guess(c, i)
	}
	c.quit()
	c = rawClient(t, "127.0.8.9", m.addr)
	expect(t, c.reply(), "220")
	c.quit()
	if n := metric("mxguard_tarpit_delays_total"); n != 0 {
		t.Fatalf("a trusted client was tarpitted: mxguard_tarpit_delays_total = %v", n)
	}

	// Untrusted, without a reverse name (no_fcrdns_points, -1 by
	// default), -1 a guess: at -2 nothing yet, at -3 (below -2) one
	// second, at -4 two, at -5 two (tarpit_max), and banned.
	c = rawClient(t, "127.0.8.1", m.addr)
	expect(t, c.reply(), "220")
	expect(t, c.cmd("EHLO guesser.example"), "250")
	expect(t, c.cmd("MAIL FROM:<a@example.org>"), "250")
	guess(c, 1)
	for i, least := range []time.Duration{time.Second, 2 * time.Second, 2 * time.Second} {
		if d := guess(c, 2+i); d < least {
			t.Errorf("guess %d: the 550 came after %v, want at least %v (tarpit)", 2+i, d, least)
		}
	}
	expect(t, c.cmd("RCPT TO:<alice@localhost>"), "250") // the session goes on, slowly
	c.quit()
	m.waitLog("banning 127.0.8.1/32 until ", 10*time.Second)
	c, line, _ := greet(t, "127.0.8.1", m.addr)
	expect(t, line, "554 5.7.1 Access denied")
	c.closed()
	m.waitLog("rejecting connection from unknown [127.0.8.1]: banned until ", 10*time.Second)
	if n := metric("mxguard_tarpit_delays_total"); n < 5 {
		t.Errorf("mxguard_tarpit_delays_total = %v, want at least 5 (three guesses, the RCPT and the QUIT after)", n)
	}
	if s := metric("mxguard_tarpit_delay_seconds_total"); s < 9 {
		t.Errorf("mxguard_tarpit_delay_seconds_total = %v, want at least 9", s)
	}
	if n, b := metric("mxguard_bans_total"), metric("mxguard_bans"); n != 1 || b != 1 {
		t.Errorf("mxguard_bans_total = %v, mxguard_bans = %v, want 1 and 1", n, b)
	}
	out, err := m.mxctl("bans")
	if err != nil || !regexp.MustCompile(`(?m)^127\.0\.8\.1/32 +until \S+ +unknown_user +by score +1 hits$`).MatchString(out) {
		t.Errorf("mxguard bans: %v\n%s", err, out)
	}
	if js, err := m.mxctl("bans", "--json"); err != nil || !strings.Contains(js, `"prefix":"127.0.8.1/32","reason":"unknown_user","by":"score"`) {
		t.Errorf("mxguard bans --json: %v\n%s", err, js)
	}
	if out, err := m.mxctl("status"); err != nil || !strings.Contains(out, "bans in force: 1\n  127.0.8.1/32") {
		t.Errorf("mxguard status: %v\n%s", err, out)
	}

	// A second client, banned by protocol errors: HTTP on port 25, -2
	// each, after its -1 for no reverse name.
	for range 2 {
		c, line, _ := greet(t, "127.0.8.2", m.addr)
		expect(t, line, "220")
		expect(t, c.cmd("GET / HTTP/1.0"), "221 2.7.0")
		c.closed()
	}
	c, line, _ = greet(t, "127.0.8.2", m.addr)
	expect(t, line, "554 5.7.1 Access denied")
	c.closed()

	// trust lifts the first ban; unban the second.
	if out, err := m.mxctl("trust", "127.0.8.1"); err != nil || !strings.Contains(out, "1 bans lifted") {
		t.Errorf("mxguard trust: %v\n%s", err, out)
	}
	c, line, _ = greet(t, "127.0.8.1", m.addr)
	expect(t, line, "220")
	c.quit()
	if out, err := m.mxctl("unban", "127.0.8.0/24"); err != nil || !strings.Contains(out, "lifted 1 bans in 127.0.8.0/24") {
		t.Errorf("mxguard unban: %v\n%s", err, out)
	}
	held := metric("mxguard_tarpit_delays_total")
	c, line, _ = greet(t, "127.0.8.2", m.addr)
	expect(t, line, "220")
	c.quit()
	// unban forgot its score too: nothing held.
	if n := metric("mxguard_tarpit_delays_total"); n != held {
		t.Errorf("the unbanned client was tarpitted (%v batches held, %v before): its score was kept", n, held)
	}
	if out, err := m.mxctl("bans"); err != nil || strings.TrimSpace(out) != "no bans" {
		t.Errorf("mxguard bans after trust and unban: %v\n%s", err, out)
	}
}
