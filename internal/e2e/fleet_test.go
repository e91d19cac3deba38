package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/dnstest"
	"github.com/mxguard/mxguard/internal/redistest"
)

// fleetReach is how soon a decision taken on one node must hold on the
// others (the "within one second").
const fleetReach = time.Second

// refusedWithin connects from src to each node until each refuses at
// connect (550 deny list, 554 ban), for at most d, and returns how long that took.
func refusedWithin(t *testing.T, d time.Duration, src string, nodes ...*mx) time.Duration {
	t.Helper()
	start := time.Now()
	for _, n := range nodes {
		for {
			c, line, _ := greet(t, src, n.addr)
			if strings.HasPrefix(line, "55") && strings.Contains(line, " 5.7.1 ") {
				c.closed()
				break
			}
			expect(t, line, "220")
			c.quit()
			if time.Since(start) > d {
				t.Fatalf("%s is still served by %s %v after the decision", src, n.addr, time.Since(start))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return time.Since(start)
}

// servedWithin is refusedWithin's opposite: each node greets src.
func servedWithin(t *testing.T, d time.Duration, src string, nodes ...*mx) time.Duration {
	t.Helper()
	start := time.Now()
	for _, n := range nodes {
		for {
			c, line, _ := greet(t, src, n.addr)
			if strings.HasPrefix(line, "220") {
				c.quit()
				break
			}
			if !strings.Contains(line, " 5.7.1 ") {
				t.Fatalf("%s at %s: %q, want a refusal or 220", src, n.addr, line)
			}
			c.closed()
			if time.Since(start) > d {
				t.Fatalf("%s is still refused by %s %v after the decision", src, n.addr, time.Since(start))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return time.Since(start)
}

// TestFleetSharedDecisions: three nodes share one Redis. A deny given on
// one node refuses the client on all three within a second; a ban made by
// one node's screening is enforced by the others and listed fleet-wide
// with the hits of every node; trust on another node wins over the ban
// everywhere; unban acts fleet-wide; a node that was down when a deny was
// given has it as soon as it is back, in its deny file too.
func TestFleetSharedDecisions(t *testing.T) {
	t.Parallel()
	rs := redistest.StartServer(t)
	admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	conf := func(name, extra string) string {
		return fmt.Sprintf(`hostname = %q
trusted_networks = []
[reputation]
tarpit_below = 0
ban_below = -5
[fleet]
redis = %q
%s`, name, rs.Addr, extra)
	}
	m1 := startMXLoopback(t, conf("mx1.test", fmt.Sprintf("[admin]\nlisten = %q\n", admin)))
	m2 := startMXLoopback(t, conf("mx2.test", ""))
	m3 := startMXLoopback(t, conf("mx3.test", ""))
	all := []*mx{m1, m2, m3}

	// A deny on mx1 reaches all three.
	for _, n := range all {
		c, line, _ := greet(t, "127.0.9.1", n.addr)
		expect(t, line, "220")
		c.quit()
	}
	out, err := m1.mxctl("deny", "127.0.9.1")
	if err != nil || !strings.Contains(out, "shared with the fleet") {
		t.Fatalf("mxguard deny: %v\n%s", err, out)
	}
	took := refusedWithin(t, fleetReach, "127.0.9.1", all...)
	t.Logf("deny on mx1 refused on all three nodes after %v", took)
	m3.waitLogAll(5*time.Second, "fleet: deny 127.0.9.1/32, set by control on mx1.test")

	// mx1's screening bans a client that speaks HTTP (-1 without a
	// reverse name, -2 a protocol error, twice: -5); mx2 and mx3 refuse it.
	for range 2 {
		c, line, _ := greet(t, "127.0.9.2", m1.addr)
		expect(t, line, "220")
		expect(t, c.cmd("GET / HTTP/1.0"), "221 2.7.0")
		c.closed()
	}
	m1.waitLog("banning 127.0.9.2/32 until ", 5*time.Second)
	took = refusedWithin(t, fleetReach, "127.0.9.2", m2, m3)
	t.Logf("ban by mx1's screening enforced by mx2 and mx3 after %v", took)
	refusedWithin(t, 0, "127.0.9.2", m1)
	// The fleet's list, from any node, with the hits of all (one each on
	// mx2, mx3 and mx1 at least), counted within a few seconds.
	re := regexp.MustCompile(`(?m)^ *127\.0\.9\.2/32 +until \S+ +non_smtp +by score on mx1\.test +(\d+) hits$`)
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, err = m3.mxctl("bans")
		if mm := re.FindStringSubmatch(out); err == nil && mm != nil && atoi(mm[1]) >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("mxguard bans on mx3: %v\n%s", err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Trust on mx2 wins over the ban, everywhere.
	if out, err := m2.mxctl("trust", "127.0.9.2"); err != nil || !strings.Contains(out, "shared with the fleet") {
		t.Fatalf("mxguard trust: %v\n%s", err, out)
	}
	took = servedWithin(t, fleetReach, "127.0.9.2", all...)
	t.Logf("trust on mx2 served on all three nodes after %v", took)
	if out, err := m1.mxctl("bans"); err != nil || strings.Contains(out, "127.0.9.2") {
		t.Errorf("the trusted client is still listed as banned: %v\n%s", err, out)
	}

	// A ban made on mx2, lifted by unban on mx3, for all.
	for range 2 {
		c, line, _ := greet(t, "127.0.9.4", m2.addr)
		expect(t, line, "220")
		expect(t, c.cmd("GET / HTTP/1.0"), "221 2.7.0")
		c.closed()
	}
	refusedWithin(t, fleetReach, "127.0.9.4", all...)
	if out, err := m3.mxctl("unban", "127.0.9.0/24"); err != nil || !strings.Contains(out, "(1 in the fleet)") {
		t.Fatalf("mxguard unban: %v\n%s", err, out)
	}
	servedWithin(t, fleetReach, "127.0.9.4", all...)

	// mx3 is down when mx1 denies a network; back, it refuses it at once
	// and keeps it in its own deny file.
	m3.stop()
	if out, err := m1.mxctl("deny", "127.0.9.64/26"); err != nil || !strings.Contains(out, "shared with the fleet") {
		t.Fatalf("mxguard deny: %v\n%s", err, out)
	}
	m3.start()
	refusedWithin(t, 0, "127.0.9.65", m3)
	if b, err := os.ReadFile(filepath.Join(m3.dir, "data", "denied.txt")); err != nil || !strings.Contains(string(b), "127.0.9.64/26 # deny by control on mx1.test") {
		t.Errorf("mx3's deny file: %v\n%s", err, b)
	}

	body := httpGet(t, "http://"+admin+"/metrics")
	if !strings.Contains(body, "\nmxguard_fleet_shared 1\n") {
		t.Errorf("/metrics lacks mxguard_fleet_shared 1:\n%s", grepLines(body, "fleet"))
	}
}

// TestFleetSharedDNSBLCache: one node's DNS list lookup serves the other:
// the second node asks Redis, not the DNS server.
func TestFleetSharedDNSBLCache(t *testing.T) {
	t.Parallel()
	rs := redistest.StartServer(t)
	dnsSrv := dnstest.Start(t, listedAt("127.0.9.130", "bl.test")+" 300 IN A 127.0.0.2")
	conf := fmt.Sprintf("trusted_networks = []\nresolver = %q\n[dnsbl]\nsites = [\"bl.test\"]\n[fleet]\nredis = %q\n", dnsSrv.Addr, rs.Addr)
	m1, m2 := startMX(t, conf), startMX(t, conf)
	name := listedAt("127.0.9.130", "bl.test")
	c, line, _ := greet(t, "127.0.9.130", m1.addr)
	expect(t, line, "554 5.7.1 Service unavailable; client [127.0.9.130] blocked using DNS blocklists")
	c.closed()
	asked := dnsSrv.Zone().QueryCount(name, 1 /* A */)
	if asked != 1 {
		t.Fatalf("the list was asked %d times by the first node, want 1", asked)
	}
	c, line, _ = greet(t, "127.0.9.130", m2.addr)
	expect(t, line, "554 5.7.1 Service unavailable; client [127.0.9.130] blocked using DNS blocklists")
	c.closed()
	if n := dnsSrv.Zone().QueryCount(name, 1); n != asked {
		t.Errorf("the second node asked the list again (%d queries): the fleet's cache was not used", n)
	}
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
