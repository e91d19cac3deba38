package admit

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/limit"
	"github.com/mxguard/mxguard/internal/reason"
	"github.com/mxguard/mxguard/internal/reputation"
)

// TestStepOrder: the documented order, cheapest first, and which steps a
// trusted client takes.
func TestStepOrder(t *testing.T) {
	var names, trusted []string
	for _, s := range steps {
		names = append(names, s.name)
		if s.forTrusted {
			trusted = append(trusted, s.name)
		}
	}
	want := []string{"max_daemon_children", "deny_list", "ban", "throttle", "rdns", "score", "tcpwrappers", "access", "ratecontrol", "conncontrol", "dnsbl", "greet_pause"}
	if !slices.Equal(names, want) {
		t.Errorf("steps %v, want %v", names, want)
	}
	if !slices.Equal(trusted, []string{"max_daemon_children", "deny_list", "rdns"}) {
		t.Errorf("trusted clients take %v", trusted)
	}
}

// runStep runs one step alone on a fresh check of addr.
func runStep(a *Admitter, name string, addr string) (*Decision, bool) {
	p := a.policy.Load()
	ip := netip.MustParseAddr(addr)
	c := &check{ctx: context.Background(), addr: ip, p: p, d: &Decision{Policy: p, Trusted: p.IsTrusted(ip)}}
	for _, s := range steps {
		if s.name == name {
			return c.d, s.run(a, c)
		}
	}
	panic("no step " + name)
}

// TestEachStep: each step alone decides what it owns, and nothing else.
func TestEachStep(t *testing.T) {
	lim := limits()
	lim.MaxDaemonChildren = 1
	lim.ClientRate, lim.ClientConn = 1, 1
	lim.GreetPause = time.Second
	a := newAdmitter(t, "Connect:127.0.2.2 REJECT\nConnect:127.0.2.3 DISCARD\nGreetPause:127.0.2.4 0\n", "ALL: 127.0.3.3\n", lim)
	p := a.Policy()
	a.SetPolicy(&Policy{Hostname: p.Hostname, Limits: p.Limits, Access: p.Access, Wrappers: p.Wrappers,
		Denied: []netip.Prefix{netip.MustParsePrefix("127.0.4.0/24")}})
	tests := []struct {
		step, addr string
		done       bool
		reason     reason.Reason
		check      func(*Decision) bool
	}{
		{"max_daemon_children", "127.0.1.1", false, "", nil},
		{"max_daemon_children", "127.0.1.1", true, reason.MaxDaemonChildren, nil}, // the second open
		{"deny_list", "127.0.4.9", true, reason.DenyList, nil},
		{"deny_list", "127.0.5.9", false, "", nil},
		{"rdns", "127.0.0.7", false, "", func(d *Decision) bool { return d.Host == "host5.adsl.alicedsl.de" }},
		{"tcpwrappers", "127.0.3.3", true, reason.TCPWrappers, nil},
		{"tcpwrappers", "127.0.3.4", false, "", nil},
		{"access", "127.0.2.2", true, reason.Access, nil},
		{"access", "127.0.2.3", false, "", func(d *Decision) bool { return d.Discard }},
		{"ratecontrol", "127.0.6.1", false, "", nil},
		{"ratecontrol", "127.0.6.1", true, reason.RateControl, nil},
		{"conncontrol", "127.0.7.1", false, "", nil},
		{"conncontrol", "127.0.7.1", true, reason.ConnControl, nil}, // the first still holds its count
		{"greet_pause", "127.0.8.1", false, "", func(d *Decision) bool { return d.GreetPause == time.Second }},
		{"greet_pause", "127.0.2.4", false, "", func(d *Decision) bool { return d.GreetPause == 0 }},
	}
	for i, tt := range tests {
		d, done := runStep(a, tt.step, tt.addr)
		if done != tt.done || d.Reason != tt.reason || tt.check != nil && !tt.check(d) {
			t.Errorf("%d: step %s for %s: done %v reason %q decision %+v", i, tt.step, tt.addr, done, d.Reason, d)
		}
	}
}

// TestTiers: a /24 spread over 50 addresses meets its network limit though
// no address is over its own; the refusal names the network. Each IPv6
// client counts in its /64 and its /48.
func TestTiers(t *testing.T) {
	lim := limits()
	lim.ClientRate = 2
	lim.IPv4Tiers, lim.IPv6Tiers, lim.TierMultiplier = []int{32, 24}, []int{64, 48}, 4
	var logs bytes.Buffer
	p := &Policy{Hostname: "mx.test", Limits: lim}
	mem := limit.NewMemory(nil)
	t.Cleanup(mem.Close)
	a := New(p, Deps{Limiter: mem, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	admitted := 0
	for i := range 50 {
		d := a.Admit(context.Background(), netip.MustParseAddr(fmt.Sprintf("192.0.2.%d", i+1)))
		if d.Reject == nil {
			admitted++
		} else if d.Reason != reason.RateControl {
			t.Fatalf("refused for %s", d.Reason)
		}
		d.Release()
	}
	if admitted != 8 { // the /24's limit: 2 × 4
		t.Errorf("%d of 50 admitted from one /24, want 8", admitted)
	}
	if !strings.Contains(logs.String(), "ratecontrol (192.0.2.0/24): 9 connections in 1m0s, limit 8") {
		t.Errorf("the refusal does not name the network:\n%s", logs.String())
	}
	// Another /24 is counted on its own.
	if d := a.Admit(context.Background(), netip.MustParseAddr("192.0.3.1")); d.Reject != nil {
		t.Errorf("another /24 refused: %v", d.Reject)
	}
	// IPv6: the client's own /64 (limit 2), then its /48 (limit 8).
	for i, want := range []bool{true, true, false} {
		d := a.Admit(context.Background(), netip.MustParseAddr(fmt.Sprintf("2001:db8:1:1::%d", i+1)))
		if (d.Reject == nil) != want {
			t.Errorf("IPv6 client %d in one /64: reject %v", i, d.Reject)
		}
	}
	admitted = 0
	for i := range 20 {
		d := a.Admit(context.Background(), netip.MustParseAddr(fmt.Sprintf("2001:db8:1:%x::1", 0x100+i)))
		if d.Reject == nil {
			admitted++
		}
	}
	if admitted != 6 { // 8 in the /48, 2 of them spent above
		t.Errorf("%d /64s of one /48 admitted, want 6", admitted)
	}
}

// TestTierConn: open connections are counted per tier and given back.
func TestTierConn(t *testing.T) {
	lim := limits()
	lim.ClientConn = 1
	lim.IPv4Tiers, lim.TierMultiplier = []int{32, 24}, 2
	p := &Policy{Hostname: "mx.test", Limits: lim}
	mem := limit.NewMemory(nil)
	t.Cleanup(mem.Close)
	a := New(p, Deps{Limiter: mem, Log: slog.New(slog.DiscardHandler)})
	var open []*Decision
	for i := range 3 {
		d := a.Admit(context.Background(), netip.MustParseAddr(fmt.Sprintf("198.51.100.%d", i+1)))
		if (d.Reject == nil) != (i < 2) {
			t.Errorf("client %d: reject %v", i+1, d.Reject)
		}
		open = append(open, d)
	}
	for _, d := range open {
		d.Release()
	}
	if d := a.Admit(context.Background(), netip.MustParseAddr("198.51.100.9")); d.Reject != nil {
		t.Errorf("after the others closed: %v", d.Reject)
	}
}

// TestBanAndScore: the ban step refuses a banned client; the score step
// charges a client without a confirmed name its standing cost, bans it
// when that is its last straw, and gives the session its tarpit.
func TestBanAndScore(t *testing.T) {
	book, err := reputation.New(reputation.Config{
		Points: map[reason.Reason]int{reason.Pregreet: -5}, TarpitBelow: -1, TarpitStep: time.Second,
		TarpitMax: 3 * time.Second, BanBelow: -10, BanTime: time.Hour, MaxClients: 10,
	}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := &Policy{Hostname: "mx.test", Limits: limits(), NoFCrDNSPoints: -1}
	mem := limit.NewMemory(nil)
	t.Cleanup(mem.Close)
	a := New(p, Deps{Limiter: mem, DNS: names{"127.0.0.8": "mail.example.org"}, Reputation: book, Log: slog.New(slog.DiscardHandler)})

	named := a.Admit(context.Background(), netip.MustParseAddr("127.0.0.8"))
	if named.Reject != nil || named.Delay() != 0 || book.Score(netip.MustParseAddr("127.0.0.8")) != 0 {
		t.Errorf("a named client: %v, delay %v", named.Reject, named.Delay())
	}
	anon := netip.MustParseAddr("127.0.0.9")
	d := a.Admit(context.Background(), anon)
	if d.Reject != nil || book.Score(anon) != -1 || d.Delay() != 0 {
		t.Errorf("a nameless client: %v, score %d, delay %v", d.Reject, book.Score(anon), d.Delay())
	}
	book.Penalize(anon, reason.Pregreet, 0) // -6: the tarpit, read at each reply
	if got := d.Delay(); got != 3*time.Second {
		t.Errorf("delay at -6 = %v, want the 3s cap", got)
	}
	book.Penalize(anon, reason.Pregreet, 0) // -11: banned
	if d := a.Admit(context.Background(), anon); d.Reason != reason.Banned || d.Reject.String() != "554 5.7.1 Access denied" {
		t.Errorf("a banned client: %v %s", d.Reject, d.Reason)
	}
}
