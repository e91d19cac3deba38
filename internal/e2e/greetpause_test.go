package e2e

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

var goroutinesRE = regexp.MustCompile(`(?m)^go_goroutines (\d+)$`)
var pausingRE = regexp.MustCompile(`(?m)^mxguard_sessions_greet_pause (\d+)$`)

func metric(t *testing.T, body string, re *regexp.Regexp) int {
	t.Helper()
	sub := re.FindStringSubmatch(body)
	if sub == nil {
		t.Fatalf("no %s in /metrics", re)
	}
	n, _ := strconv.Atoi(sub[1])
	return n
}

// TestGreetPauseHeld: the real server holds the clients in its greeting
// pause without a goroutine each (internal/hold), and each still gets what
// the pause promises: the greeting when it is over, 554 at once for a
// client that talks first, and a session that goes on after the greeting.
func TestGreetPauseHeld(t *testing.T) {
	const n = 200
	const pause = 6 * time.Second
	m := startMXLoopback(t, fmt.Sprintf(`trusted_networks = []
[limits]
greet_pause = %q
[admin]
listen = "127.0.0.1:0"
`, pause))
	admin := m.adminURL()
	before := metric(t, httpGet(t, admin+"/metrics"), goroutinesRE)

	start := time.Now()
	clients := make([]*client, n)
	for i := range clients {
		clients[i] = rawClient(t, fmt.Sprintf("127.0.%d.%d", 10+i/250, 1+i%250), m.addr)
	}
	var body string
	for deadline := time.Now().Add(pause / 2); ; time.Sleep(20 * time.Millisecond) {
		body = httpGet(t, admin+"/metrics")
		if metric(t, body, pausingRE) == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d clients in the greeting pause, want %d", metric(t, body, pausingRE), n)
		}
	}
	// A goroutine each would be n more; a few come and go (the admin
	// request, the resolver, the last admissions).
	if now := metric(t, body, goroutinesRE); now-before > n/10 {
		t.Errorf("%d goroutines with %d clients in the greeting pause, %d before: not held", now, n, before)
	}

	// A client that talks first is caught at once, not at the pause's end.
	talker := clients[0]
	fmt.Fprintf(talker.c, "EHLO early\r\n")
	expect(t, talker.reply(), "554 ")
	if waited := time.Since(start); waited >= pause {
		t.Errorf("the early talker got its 554 after %v, at the end of the pause", waited)
	}
	m.waitLogAll(5*time.Second, "reason=pregreet", "ip=127.0.10.1")

	// The others get their greeting when the pause is over, and go on.
	for i, c := range clients[1:] {
		got := c.reply()
		if !strings.HasPrefix(got, "220 ") {
			t.Fatalf("client %d: %q, want the greeting", i+1, got)
		}
		if waited := time.Since(start); waited < pause {
			t.Fatalf("client %d greeted after %v, within its %v pause", i+1, waited, pause)
		}
	}
	last := clients[n-1]
	expect(t, last.cmd("EHLO patient.test"), "250 ")
	expect(t, last.cmd("QUIT"), "221 ")
	if got := metric(t, httpGet(t, admin+"/metrics"), pausingRE); got != 0 {
		t.Errorf("%d clients in the greeting pause after it ended", got)
	}
}
