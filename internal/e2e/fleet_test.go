package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/redistest"
)

// TestFleetRedis: two mxguard nodes behind one MX share their per-client
// counters in a real redis-server, so a client spreading its connections
// over both still gets ClientRate and ClientConn once, not once per node.
// When Redis goes away, on_redis_error = "local" keeps both nodes serving
// (and limiting) on their own counters, and says so in the log.
func TestFleetRedis(t *testing.T) {
	t.Parallel()
	rs := redistest.StartServer(t)
	conf := fmt.Sprintf(`trusted_networks = ["127.0.0.1/32"]
[limits]
client_rate = 5
client_conn = 2
[fleet]
redis = %q
on_redis_error = "local"
`, rs.Addr)
	a, b := startMXLoopback(t, conf), startMXLoopback(t, conf)
	nodes := []*mx{a, b}

	// One greeting from node, quit if served; returns the first reply.
	connect := func(src string, node *mx) string {
		t.Helper()
		c, line, _ := greet(t, src, node.addr)
		if strings.HasPrefix(line, "220") {
			c.quit()
		} else {
			c.closed()
		}
		return line
	}

	for i := range 5 {
		expect(t, connect("127.0.0.13", nodes[i%2]), "220")
	}
	if got := connect("127.0.0.13", b); got != "421 4.3.2 Connection rate limit exceeded." {
		t.Fatalf("6th connection in the window (3rd on node b) got %q", got)
	}
	b.waitLogAll(5*time.Second, "ratecontrol", "127.0.0.13")

	// ClientConn across the fleet: two open on a, a third on b is refused.
	for range 2 { // held open until the test ends
		_, line, _ := greet(t, "127.0.0.16", a.addr)
		expect(t, line, "220")
	}
	if got := connect("127.0.0.16", b); got != "421 4.3.2 Too many open connections." {
		t.Fatalf("3rd concurrent connection (the first on node b) got %q", got)
	}

	rs.Stop()
	for _, n := range nodes {
		expect(t, connect("127.0.0.14", n), "220")
		n.waitLogAll(5*time.Second, "limit: shared counters unreachable", "policy=local")
	}
	if err := sendGo(t, "127.0.0.14", a.addr, "a@example.org", []string{"bob@localhost"}, "Subject: outage\r\n\r\nRedis is down\r\n"); err != nil {
		t.Fatalf("sending through node a while Redis is down: %v", err)
	}
	// Each node still limits on its own counters.
	for range 5 {
		expect(t, connect("127.0.0.15", a), "220")
	}
	if got := connect("127.0.0.15", a); got != "421 4.3.2 Connection rate limit exceeded." {
		t.Errorf("6th connection to node a during the outage got %q, want the local ClientRate", got)
	}
}
