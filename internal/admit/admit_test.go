package admit

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/accessmap"
	"github.com/mxguard/mxguard/internal/config"
	"github.com/mxguard/mxguard/internal/limit"
	"github.com/mxguard/mxguard/internal/reason"
	"github.com/mxguard/mxguard/internal/resolve"
	"github.com/mxguard/mxguard/internal/tcpwrap"
)

// names is a fixed reverse-DNS table; the resolver itself is tested in
// internal/resolve against a real DNS server.
type names map[string]string

func (n names) Verify(_ context.Context, a netip.Addr) resolve.Result {
	if h, ok := n[a.String()]; ok {
		return resolve.Result{Name: h, PTR: h, Status: resolve.OK}
	}
	return resolve.Result{Status: resolve.NoName}
}

func newAdmitter(t testing.TB, access, deny string, lim config.Limits, trusted ...string) *Admitter {
	t.Helper()
	p := &Policy{Hostname: "mx.test", Limits: lim}
	for _, s := range trusted {
		p.Trusted = append(p.Trusted, netip.MustParsePrefix(s))
	}
	if access != "" {
		m, err := accessmap.Parse(strings.NewReader(access), "access")
		if err != nil {
			t.Fatal(err)
		}
		p.Access = m
	}
	if deny != "" {
		w, err := tcpwrap.Parse(nil, strings.NewReader(deny), "", "hosts.deny")
		if err != nil {
			t.Fatal(err)
		}
		p.Wrappers = w
	}
	mem := limit.NewMemory(nil)
	t.Cleanup(mem.Close)
	dns := names{"127.0.0.7": "host5.adsl.alicedsl.de", "127.0.0.8": "mail.example.org"}
	return New(p, Deps{Limiter: mem, DNS: dns, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
}

// limits are the defaults (one tier, the client's own), with a one-minute
// window.
func limits() config.Limits {
	l := config.Default().Limits
	l.ConnectionRateWindowSize = time.Minute
	return l
}

func TestAdmitDecisions(t *testing.T) {
	const seedAccess = `ClientRate:localhost 0
ClientRate:127.0.0.1 0
ClientRate: 5
ClientConn:127.0.0.1 0
ClientConn: 3
GreetPause:127.0.0.1 0
GreetPause:mail.example.org 0
Connect:127.0.2 REJECT
Connect:127.0.3.0/24 ERROR:"554 5.7.1 go away"
Connect:127.0.4.4 RELAY
`
	a := newAdmitter(t, seedAccess, "sendmail: .adsl.alicedsl.de\n", func() config.Limits {
		l := limits()
		l.GreetPause = 2 * time.Second
		return l
	}(), "127.0.9.0/24")
	tests := []struct {
		ip, reply, reason string
		pause             time.Duration
		relay             bool
	}{
		{ip: "127.0.0.5", pause: 2 * time.Second},
		{ip: "127.0.0.1"}, // GreetPause:127.0.0.1 0
		{ip: "127.0.0.8"}, // GreetPause by host name
		{ip: "127.0.9.9"}, // trusted: no pause, no limits
		{ip: "127.0.0.7", reply: "550 5.7.1 Access denied", reason: "tcpwrappers"},
		{ip: "127.0.2.9", reply: "550 5.7.1 Access denied", reason: "access"},
		{ip: "127.0.3.9", reply: "554 5.7.1 go away", reason: "access"},
		{ip: "127.0.4.4", pause: 2 * time.Second, relay: true},
	}
	for _, tt := range tests {
		d := a.Admit(context.Background(), netip.MustParseAddr(tt.ip))
		got := ""
		if d.Reject != nil {
			got = d.Reject.String()
		}
		if got != tt.reply || string(d.Reason) != tt.reason || d.GreetPause != tt.pause || d.Relay != tt.relay {
			t.Errorf("%s: reply %q reason %q pause %v relay %v; want %q %q %v %v",
				tt.ip, got, d.Reason, d.GreetPause, d.Relay, tt.reply, tt.reason, tt.pause, tt.relay)
		}
		d.Release()
	}
}

// TestGreetPauseCap: sendmail, and RFC 5321's five-minute greeting
// timeout, cap the pause at 5 minutes whatever the access map says.
func TestGreetPauseCap(t *testing.T) {
	a := newAdmitter(t, "GreetPause: 400000\nGreetPause:127.0.0.6 299000\n", "", limits())
	for ip, want := range map[string]time.Duration{"127.0.0.5": 5 * time.Minute, "127.0.0.6": 299 * time.Second} {
		d := a.Admit(context.Background(), netip.MustParseAddr(ip))
		if d.GreetPause != want {
			t.Errorf("%s: greet pause %v, want %v", ip, d.GreetPause, want)
		}
		d.Release()
	}
}

// TestHostsAllowFirst: hosts.allow is read before hosts.deny.
func TestHostsAllowFirst(t *testing.T) {
	p := &Policy{Hostname: "mx.test", Limits: limits()}
	w, err := tcpwrap.Parse(strings.NewReader("mxguard: 127.0.0.8\n"), strings.NewReader("ALL: ALL\n"), "hosts.allow", "hosts.deny")
	if err != nil {
		t.Fatal(err)
	}
	p.Wrappers = w
	mem := limit.NewMemory(nil)
	t.Cleanup(mem.Close)
	a := New(p, Deps{Limiter: mem, DNS: names{}, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	for ip, denied := range map[string]bool{"127.0.0.8": false, "127.0.0.9": true} {
		d := a.Admit(context.Background(), netip.MustParseAddr(ip))
		if (d.Reject != nil) != denied {
			t.Errorf("%s: reject %v, want denied=%v", ip, d.Reject, denied)
		}
		d.Release()
	}
}

func TestClientRateAndConn(t *testing.T) {
	a := newAdmitter(t, "ClientRate: 5\nClientConn: 3\nClientRate:127.0.0.1 0\nClientConn:127.0.0.1 0\n", "", limits())
	ctx := context.Background()
	ip := netip.MustParseAddr("127.0.0.5")
	var open []*Decision
	for i := 1; i <= 3; i++ {
		d := a.Admit(ctx, ip)
		if d.Reject != nil {
			t.Fatalf("connection %d refused: %v", i, d.Reject)
		}
		open = append(open, d)
	}
	d := a.Admit(ctx, ip)
	if d.Reject == nil || d.Reject.String() != "421 4.3.2 Too many open connections." || d.Reason != "conncontrol" {
		t.Fatalf("4th concurrent: %+v", d.Reject)
	}
	d.Release()
	for _, d := range open {
		d.Release()
	}
	if d := a.Admit(ctx, ip); d.Reject != nil { // 5th in the window, 1 open
		t.Fatalf("5th connection refused: %v", d.Reject)
	} else {
		d.Release()
	}
	d = a.Admit(ctx, ip)
	if d.Reject == nil || d.Reject.String() != "421 4.3.2 Connection rate limit exceeded." || d.Reason != "ratecontrol" {
		t.Fatalf("6th in the window: %+v", d.Reject)
	}
	d.Release()
	for i := 0; i < 20; i++ { // 0 = unlimited
		d := a.Admit(ctx, netip.MustParseAddr("127.0.0.1"))
		if d.Reject != nil {
			t.Fatalf("localhost limited: %v", d.Reject)
		}
		defer d.Release()
	}
}

func TestNoTerminateDefers(t *testing.T) {
	l := limits()
	l.Terminate = false
	l.ClientRate = 1
	a := newAdmitter(t, "", "", l)
	ip := netip.MustParseAddr("127.0.0.5")
	a.Admit(context.Background(), ip).Release()
	d := a.Admit(context.Background(), ip)
	defer d.Release()
	if d.Reject != nil || d.Defer == nil || d.Defer.String() != "452 4.3.2 Connection rate limit exceeded." {
		t.Fatalf("without terminate: reject %v, defer %v", d.Reject, d.Defer)
	}
}

func TestMaxDaemonChildren(t *testing.T) {
	l := limits()
	l.MaxDaemonChildren = 2
	a := newAdmitter(t, "", "", l, "127.0.0.1/32")
	ctx := context.Background()
	d1 := a.Admit(ctx, netip.MustParseAddr("127.0.0.2"))
	d2 := a.Admit(ctx, netip.MustParseAddr("127.0.0.3"))
	d3 := a.Admit(ctx, netip.MustParseAddr("127.0.0.4"))
	if d3.Reject == nil || d3.Reject.String() != "421 4.3.2 mx.test Too many concurrent connections, try again later" {
		t.Fatalf("3rd session: %v", d3.Reject)
	}
	if d := a.Admit(ctx, netip.MustParseAddr("127.0.0.1")); d.Reject != nil {
		t.Fatalf("trusted host refused: %v", d.Reject)
	} else {
		d.Release()
	}
	d3.Release()
	d1.Release()
	if d := a.Admit(ctx, netip.MustParseAddr("127.0.0.4")); d.Reject != nil {
		t.Fatalf("after a release: %v", d.Reject)
	} else {
		d.Release()
	}
	d2.Release()
	if n := a.Children(); n != 0 {
		t.Fatalf("%d children after all releases", n)
	}
}

// TestThrottleSeconds: the seed's example, 20 connections at 5 per second
// start in seconds 1, 2, 3 and 4.
func TestThrottleSeconds(t *testing.T) {
	var th throttle
	now := time.Unix(1000, 300e6) // 0.3 s into a second
	var waits []time.Duration
	for i := 0; i < 20; i++ {
		waits = append(waits, th.reserve(now, 5))
	}
	for i, w := range waits {
		batch := i / 5
		want := time.Duration(0)
		if batch > 0 {
			want = time.Duration(batch)*time.Second - 300*time.Millisecond
		}
		if w != want {
			t.Errorf("connection %d waits %v, want %v", i+1, w, want)
		}
	}
	// Later, with the queue drained, a connection goes at once.
	if w := th.reserve(now.Add(10*time.Second), 5); w != 0 {
		t.Errorf("after the burst: wait %v", w)
	}
}

// BenchmarkAdmit is the admission cost of one connection with the seed's
// controls on (access map, hosts.deny, rate and concurrency counters).
func BenchmarkAdmit(b *testing.B) {
	var sb strings.Builder
	for i := 0; i < 1000; i++ {
		sb.WriteString("sendmail: .dyn" + string(rune('a'+i%26)) + strings.Repeat("x", i%7) + ".example\n")
	}
	a := newAdmitter(b, "ClientRate: 60000\nClientConn: 1000\nGreetPause: 2000\n", sb.String(), limits())
	ips := make([]netip.Addr, 256)
	for i := range ips {
		ips[i] = netip.AddrFrom4([4]byte{127, 0, 1, byte(i)})
	}
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		d := a.Admit(ctx, ips[i%len(ips)])
		if d.Reject != nil {
			b.Fatal(d.Reject)
		}
		d.Release()
		i++
	}
}

func prefixes(ss ...string) []netip.Prefix {
	ps := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		ps[i] = netip.MustParsePrefix(s)
	}
	return ps
}

// refIn is what IsTrusted and IsDenied answered when they scanned the
// lists: is the client, unmapped, in one of them.
func refIn(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a.Unmap()) {
			return true
		}
	}
	return false
}

// TestPolicyNetworks: the trusted networks and the deny list, indexed,
// answer as a scan of the lists does (unmasked and nested networks, both
// families, the client's IPv4-mapped form and a zone), on a Policy given
// to an Admitter and on one never given to one; a policy swapped in
// answers with its own lists, and admission refuses by them.
func TestPolicyNetworks(t *testing.T) {
	trusted := prefixes("127.0.9.0/24", "10.0.0.0/8", "192.168.1.7/16", "2001:db8::/32", "::1/128")
	denied := prefixes("10.1.0.0/16", "10.1.2.3/32", "198.51.100.0/24", "2001:db8:1::/48", "::ffff:203.0.113.0/120")
	queries := []string{"127.0.9.1", "127.0.10.1", "10.2.3.4", "10.1.2.3", "10.1.9.9", "::ffff:10.1.2.3",
		"192.168.200.1", "192.169.0.1", "198.51.100.77", "203.0.113.5", "::ffff:203.0.113.5",
		"2001:db8:1::5", "2001:db8:2::5", "2001:db8:1::5%eth0", "::1", "::2", "0.0.0.0"}
	a := newAdmitter(t, "", "", limits())
	a.SetPolicy(&Policy{Hostname: "mx.test", Limits: limits(), Trusted: trusted, Denied: denied})
	loose := &Policy{Trusted: trusted, Denied: denied}
	for _, p := range []*Policy{a.Policy(), loose} {
		for _, q := range queries {
			ip := netip.MustParseAddr(q)
			if got, want := p.IsTrusted(ip), refIn(trusted, ip); got != want {
				t.Errorf("IsTrusted(%s) = %v, want %v", q, got, want)
			}
			if got, want := p.IsDenied(ip), refIn(denied, ip); got != want {
				t.Errorf("IsDenied(%s) = %v, want %v", q, got, want)
			}
		}
	}
	for _, tt := range []struct {
		ip     string
		reason reason.Reason
	}{
		{"10.1.2.3", reason.DenyList}, // denied and trusted: the deny list wins
		{"::ffff:198.51.100.9", reason.DenyList},
		{"10.2.0.1", ""},
		{"127.0.4.9", ""},
	} {
		d := a.Admit(context.Background(), netip.MustParseAddr(tt.ip))
		if d.Reason != tt.reason {
			t.Errorf("%s: reason %q, want %q", tt.ip, d.Reason, tt.reason)
		}
		d.Release()
	}
	// A reload: the new lists, not the old.
	a.SetPolicy(&Policy{Hostname: "mx.test", Limits: limits(), Denied: prefixes("127.0.4.0/24")})
	for _, tt := range []struct {
		ip     string
		reason reason.Reason
	}{{"10.1.2.3", ""}, {"127.0.4.9", reason.DenyList}} {
		d := a.Admit(context.Background(), netip.MustParseAddr(tt.ip))
		if d.Reason != tt.reason {
			t.Errorf("after the reload, %s: reason %q, want %q", tt.ip, d.Reason, tt.reason)
		}
		d.Release()
	}
	if a.Policy().IsTrusted(netip.MustParseAddr("10.2.0.1")) {
		t.Error("the old trusted networks outlived the reload")
	}
}

// TestPolicyNetworksConcurrent: a Policy nobody has asked yet, asked by
// many goroutines at once, as connections and the reputation book ask
// the one a reload swapped in; with -race, an index built without the
// sync.Once is a data race.
func TestPolicyNetworksConcurrent(t *testing.T) {
	p := &Policy{Trusted: prefixes("127.0.9.0/24"), Denied: prefixes("127.0.4.0/24")}
	in, out := netip.MustParseAddr("127.0.9.9"), netip.MustParseAddr("127.0.4.4")
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for range 8 {
		wg.Go(func() {
			if !p.IsTrusted(in) || p.IsTrusted(out) || !p.IsDenied(out) || p.IsDenied(in) {
				errs <- "wrong answer"
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}
