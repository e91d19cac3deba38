package e2e

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/internal/dnstest"
)

// listedAt is the DNS name by which list would list the IPv4 address ip.
func listedAt(ip, list string) string {
	a := netip.MustParseAddr(ip).As4()
	return fmt.Sprintf("%d.%d.%d.%d.%s.", a[3], a[2], a[1], a[0], list)
}

// TestDNSBL: the server asks the project's loopback DNS server, as its
// DNS lists, about each client while the greeting is held. A client the
// weighted lists put at the threshold gets 554 instead of the greeting,
// with a reply that names no list and a log line that does; its second
// connection is answered from the cache. An allowlisted client is greeted
// at once and may talk first; a client under the threshold waits out the
// pause; a list that does not answer in time counts as not listing and
// is counted. With action reject_rcpt the listed client is refused at each
// RCPT, its envelope logged.
func TestDNSBL(t *testing.T) {
	t.Parallel()
	// Each server its own DNS server, whose queries it counts.
	lookups := func(t *testing.T) *dnstest.Server {
		srv := dnstest.Start(t,
			listedAt("127.0.12.1", "bl.test")+" 300 IN A 127.0.0.2",
			listedAt("127.0.12.2", "wl.test")+" 300 IN A 127.0.10.2",
			listedAt("127.0.12.3", "bl2.test")+" 300 IN A 127.0.0.4",
			listedAt("127.0.12.4", "bl.test")+" 300 IN A 127.0.0.2",
		)
		srv.SetDelay(listedAt("127.0.12.4", "bl.test"), 5*time.Second) // longer than dnsbl.timeout
		return srv
	}
	const lists = `sites = ["bl.test*2", "bl2.test", "wl.test=127.0.[0..255].[1..3]*-5"]
threshold = 2
allowlist_threshold = -1
timeout = "2s"
`
	t.Run("reject", func(t *testing.T) {
		t.Parallel()
		srv := lookups(t)
		admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		m := startMX(t, fmt.Sprintf("trusted_networks = []\nresolver = %q\n[limits]\ngreet_pause = \"6s\"\n[dnsbl]\n%s[admin]\nlisten = %q\n", srv.Addr, lists, admin))

		// Listed: 554 instead of the greeting, twice, the second from the cache.
		for range 2 {
			c, line, _ := greet(t, "127.0.12.1", m.addr)
			expect(t, line, "554 5.7.1 Service unavailable; client [127.0.12.1] blocked using DNS blocklists")
			c.closed()
		}
		m.waitLogAll(5*time.Second, "rejecting connection from unknown [127.0.12.1]: listed by bl.test (127.0.0.2), score 2", "reason=dnsbl")
		if n := srv.QueryCount(listedAt("127.0.12.1", "bl.test"), dns.TypeA); n != 1 {
			t.Errorf("bl.test was asked %d times about 127.0.12.1 over two connections, want 1 (cached)", n)
		}

		// Allowlisted: greeted at once, though it talks first.
		start := time.Now()
		c := rawClient(t, "127.0.12.2", m.addr)
		if _, err := c.c.Write([]byte("EHLO allowed.example\r\n")); err != nil {
			t.Fatal(err)
		}
		expect(t, c.reply(), "220")
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("the allowlisted client was greeted after %v: the 6s pause was not skipped", d)
		}
		expect(t, c.reply(), "250")
		c.quit()

		// Under the threshold (weight 1 of 2), and a list that times out:
		// both wait out the pause and are greeted.
		for _, ip := range []string{"127.0.12.3", "127.0.12.4"} {
			c, line, took := greet(t, ip, m.addr)
			expect(t, line, "220")
			if took < 6*time.Second {
				t.Errorf("%s was greeted after %v, before the 6s pause ended", ip, took)
			}
			c.quit()
		}
		body := httpGet(t, "http://"+admin+"/metrics")
		for _, want := range []string{
			`mxguard_refusals_total{reason="dnsbl",stage="greet"} 2`,
			`mxguard_dnsbl_results_total{outcome="listed",site="bl.test*2"} 2`,
			`mxguard_dnsbl_results_total{outcome="timeout",site="bl.test*2"} 1`,
			`mxguard_dnsbl_results_total{outcome="listed",site="wl.test=127.0.[0..255].[1..3]*-5"} 1`,
			`mxguard_dnsbl_lookups_total{source="cache"} `,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("/metrics lacks %q", want)
			}
		}
	})

	t.Run("reject_rcpt", func(t *testing.T) {
		t.Parallel()
		srv := lookups(t)
		m := startMX(t, fmt.Sprintf("trusted_networks = []\nresolver = %q\n[dnsbl]\n%saction = \"reject_rcpt\"\n", srv.Addr, lists))
		c := rawClient(t, "127.0.12.1", m.addr)
		expect(t, c.reply(), "220")
		expect(t, c.cmd("EHLO listed.example"), "250")
		expect(t, c.cmd("MAIL FROM:<sender@example.org>"), "250")
		expect(t, c.cmd("RCPT TO:<alice@localhost>"), "550 5.7.1 Service unavailable; client [127.0.12.1] blocked using DNS blocklists")
		expect(t, c.cmd("DATA"), "503")
		c.quit()
		m.waitLogAll(5*time.Second, "blocked using bl.test (127.0.0.2), score 2: RCPT from unknown [127.0.12.1] from=<sender@example.org> to=<alice@localhost>", "reason=dnsbl_rcpt")
	})
}
