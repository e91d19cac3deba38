package e2e

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestStressMode: a session flood that fills max_daemon_children to
// sessions_percent puts the server under stress: the log says so, status
// and /metrics show it, the idle sessions already open are cut at the
// profile's command timeout instead of their own five minutes, and a new
// session is closed at its first error (hard_error_limit 1). Once the
// load has stayed low for the hold, the server leaves stress, logged and
// counted, and a session may make an error again.
func TestStressMode(t *testing.T) {
	t.Parallel()
	admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	m := startMX(t, fmt.Sprintf(`trusted_networks = []
[limits]
max_daemon_children = 10
[stress]
sessions_percent = 80
hold = "4s"
command_timeout = "1s"
[admin]
listen = %q
`, admin))
	metric := func(name string) string {
		t.Helper()
		mm := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(httpGet(t, "http://"+admin+"/metrics"))
		if mm == nil {
			t.Fatalf("/metrics has no %s", name)
		}
		return mm[1]
	}
	if got := metric("mxguard_stress"); got != "0" {
		t.Fatalf("mxguard_stress = %s before the flood", got)
	}

	// The flood: 8 sessions that say EHLO and then nothing.
	var idle []*client
	for i := range 8 {
		c := rawClient(t, fmt.Sprintf("127.0.9.%d", i+1), m.addr)
		expect(t, c.reply(), "220")
		expect(t, c.cmd("EHLO idle.example"), "250")
		idle = append(idle, c)
	}
	m.waitLog("stress mode on: 8 of 10 sessions open (at or above 80%)", 10*time.Second)

	// A new session under stress: its first error ends it.
	c := rawClient(t, "127.0.9.20", m.addr)
	expect(t, c.reply(), "220")
	expect(t, c.cmd("EHLO new.example"), "250")
	expect(t, c.cmd("XYZZY"), "500")
	expect(t, c.reply(), "421 4.7.0 Error: too many errors")
	c.closed()
	if out, err := m.mxctl("status"); err != nil || !strings.Contains(out, "under stress since ") {
		t.Errorf("mxguard status under stress: %v\n%s", err, out)
	}
	if got := metric("mxguard_stress"); got != "1" {
		t.Errorf("mxguard_stress = %s under stress", got)
	}

	// The idle sessions opened before stress are held to its 1 s timeout
	// (each client waits up to 30 s; its own timeout is 5 minutes).
	for _, c := range idle {
		expect(t, c.reply(), "421 4.4.2")
		c.closed()
	}

	m.waitLog("stress mode off: load below the thresholds for 4s", 20*time.Second)
	if on, off, g := metric(`mxguard_stress_transitions_total{to="on"}`), metric(`mxguard_stress_transitions_total{to="off"}`), metric("mxguard_stress"); on != "1" || off != "1" || g != "0" {
		t.Errorf("after stress: transitions on %s, off %s, gauge %s; want 1, 1, 0", on, off, g)
	}
	if out, err := m.mxctl("status"); err != nil || strings.Contains(out, "under stress") {
		t.Errorf("mxguard status after stress: %v\n%s", err, out)
	}
	c = rawClient(t, "127.0.9.21", m.addr)
	expect(t, c.reply(), "220")
	expect(t, c.cmd("EHLO new.example"), "250")
	expect(t, c.cmd("XYZZY"), "500")
	expect(t, c.cmd("NOOP"), "250")
	c.quit()
}
