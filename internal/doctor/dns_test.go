package doctor

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/dnstest"
)

var (
	loopback = netip.MustParseAddr("127.0.0.1")
	testNet1 = netip.MustParseAddr("192.0.2.1")
)

const testNet1PTR = "1.2.0.192.in-addr.arpa."

// TestDNS runs the DNS check against the project's own DNS server on
// loopback: answers are timed, each round asks again (no cache), and a
// slow, failing or absent server is a warning that says which.
func TestDNS(t *testing.T) {
	ctx := context.Background()
	addrs := []netip.Addr{loopback, testNet1}
	zone := []string{"1.0.0.127.in-addr.arpa. 60 IN PTR localhost.test.", "localhost.test. 60 IN A 127.0.0.1"}

	t.Run("answers", func(t *testing.T) {
		srv := dnstest.Start(t, zone...)
		want(t, DNS(ctx, srv.Addr, addrs), CheckDNS, OK, "6 of 6 reverse lookups through "+srv.Addr+" answered",
			"median ", "127.0.0.1: localhost.test", "192.0.2.1: no name")
		if n := srv.QueryCount("1.0.0.127.in-addr.arpa.", dns.TypePTR); n != DNSRounds {
			t.Errorf("%d PTR queries for 127.0.0.1, want one a round (%d): a cached answer measures nothing", n, DNSRounds)
		}
	})
	t.Run("slow", func(t *testing.T) {
		srv := dnstest.Start(t, zone...)
		srv.SetDelay(testNet1PTR, DNSSlow+50*time.Millisecond)
		want(t, DNS(ctx, srv.Addr, []netip.Addr{testNet1}), CheckDNS, Warn, "3 of 3", "the median is over 100 ms")
	})
	t.Run("one fails", func(t *testing.T) {
		srv := dnstest.Start(t, zone...)
		srv.SetServfail(testNet1PTR, true)
		want(t, DNS(ctx, srv.Addr, addrs), CheckDNS, Warn, "3 of 6 reverse lookups", "192.0.2.1: no answer", "no answer for 192.0.2.1")
	})
	t.Run("no server", func(t *testing.T) {
		srv := dnstest.Start(t, zone...)
		srv.Close()
		want(t, DNS(ctx, srv.Addr, addrs), CheckDNS, Warn, "no reverse lookup through "+srv.Addr+" got an answer", "127.0.0.1: no answer")
	})
	t.Run("interrupted", func(t *testing.T) {
		srv := dnstest.Start(t, zone...)
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		want(t, DNS(cancelled, srv.Addr, addrs), CheckDNS, Fail, "interrupted")
	})
	t.Run("bad resolver", func(t *testing.T) {
		want(t, DNS(ctx, "no port", addrs), CheckDNS, Fail, "want host:port")
	})
}

// TestDNSAddrs: specific listen addresses first, loopback only through a
// configured resolver (the system path never asks DNS about it), never an
// unspecified address, the documentation addresses always.
func TestDNSAddrs(t *testing.T) {
	cfg := config.Default()
	cfg.Listen = []string{"127.0.0.1:25", "192.0.2.9:25", "[::]:25", ":2525", "[2001:db8::9]:25"}
	got := DNSAddrs(cfg)
	if len(got) < 4 || got[0] != netip.MustParseAddr("192.0.2.9") || got[1] != netip.MustParseAddr("2001:db8::9") {
		t.Errorf("DNSAddrs = %v, want the listen addresses 192.0.2.9 and 2001:db8::9 first", got)
	}
	for _, a := range docAddrs {
		if !slices.Contains(got, a) {
			t.Errorf("DNSAddrs = %v, lacks %v", got, a)
		}
	}
	for _, a := range got {
		if a.IsLoopback() || a.IsUnspecified() {
			t.Errorf("DNSAddrs = %v, has %v with the system resolver", got, a)
		}
	}
	cfg.Resolver = "127.0.0.1:53"
	if got := DNSAddrs(cfg); !slices.Contains(got, loopback) {
		t.Errorf("DNSAddrs with a resolver = %v, lacks 127.0.0.1", got)
	}
}
