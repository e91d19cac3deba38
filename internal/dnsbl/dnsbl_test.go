package dnsbl

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/internal/cache"
	"github.com/mxguard/mxguard/internal/dnstest"
	"github.com/mxguard/mxguard/internal/redistest"
)

// waitLimit bounds every wait of a test that should end much sooner, so
// that a broken test fails instead of hanging.
const waitLimit = 10 * time.Second

// clock is a settable time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2009, 3, 29, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// name returns the name a list is asked for addr, made with the miekg/dns
// reverse-zone code so that reverse is checked against another's.
func name(t testing.TB, addr, list string) string {
	t.Helper()
	arpa, err := dns.ReverseAddr(addr)
	if err != nil {
		t.Fatal(err)
	}
	arpa = strings.TrimSuffix(arpa, "in-addr.arpa.")
	arpa = strings.TrimSuffix(arpa, "ip6.arpa.")
	return arpa + list + "."
}

// a returns an A record for addr at list.
func a(t testing.TB, addr, list string, ttl int, answer string) string {
	t.Helper()
	return fmt.Sprintf("%s %d IN A %s", name(t, addr, list), ttl, answer)
}

// soa returns an SOA record for the zone with the TTL and minimum given.
func soa(zone string, ttl, minimum int) string {
	return fmt.Sprintf("%s. %d IN SOA ns.%s. hostmaster.%s. 1 3600 600 86400 %d", zone, ttl, zone, zone, minimum)
}

// newChecker returns a Checker for the sites that asks srv (if not nil),
// closed when the test ends.
func newChecker(t testing.TB, srv *dnstest.Server, cfg Config, sites ...string) *Checker {
	t.Helper()
	parsed, err := ParseSites(sites)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Sites = parsed
	if srv != nil {
		cfg.Server = srv.Addr
	}
	c, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// check scores addr, waiting no longer than waitLimit.
func check(t testing.TB, c *Checker, addr string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	return c.Start(ctx, netip.MustParseAddr(addr)).Wait(ctx)
}

func outcomes(r Result) []Outcome {
	var o []Outcome
	for _, s := range r.Sites {
		o = append(o, s.Outcome)
	}
	return o
}

func TestScore(t *testing.T) {
	srv := dnstest.Start(t,
		soa("bl.example", 300, 300), soa("wl.example", 300, 300), soa("multi.example", 300, 300),
		a(t, "192.0.2.1", "bl.example", 60, "127.0.0.2"),
		a(t, "192.0.2.3", "wl.example", 60, "127.0.5.2"),
		a(t, "192.0.2.4", "wl.example", 60, "127.0.5.7"), // the filter does not select it
		a(t, "192.0.2.5", "multi.example", 60, "127.0.0.2"),
		a(t, "192.0.2.5", "multi.example", 60, "127.0.0.3"),
		a(t, "192.0.2.5", "multi.example", 60, "127.0.0.4"),
		a(t, "192.0.2.6", "multi.example", 60, "127.0.0.9"),
		a(t, "192.0.2.7", "bl.example", 60, "127.255.255.254"), // Spamhaus: "query through a public resolver"
		a(t, "192.0.2.8", "bl.example", 60, "198.51.100.7"),    // a resolver rewriting NXDOMAIN
		a(t, "192.0.2.9", "bl.example", 60, "198.51.100.7"),
		a(t, "192.0.2.9", "bl.example", 60, "127.0.0.4"),
		a(t, "192.0.2.10", "wl.example", 60, "127.255.255.254"), // a filter selects what it selects
		a(t, "2001:db8::1", "bl.example", 60, "127.0.0.2"),
		a(t, "2001:db8:1234:5678:9abc:def0:1234:5678", "wl.example", 60, "127.0.1.3"),
	)
	c := newChecker(t, srv, Config{},
		"bl.example*2",
		"wl.example=127.0.[0..255].[1..3]*-5",
		"multi.example=127.0.0.[2;3]*3",
		"multi.example=127.0.0.4*10",
		"multi.example",
		"wl.example=127.255.255.254*7",
	)
	const (
		N = NotListed
		L = Listed
		E = Error
	)
	tests := []struct {
		addr     string
		score    int
		outcomes []Outcome
		answers  []string // per site, "" for none
	}{
		{"192.0.2.1", 2, []Outcome{L, N, N, N, N, N}, []string{"127.0.0.2", "", "", "", "", ""}},
		{"192.0.2.2", 0, []Outcome{N, N, N, N, N, N}, nil},
		{"192.0.2.3", -5, []Outcome{N, L, N, N, N, N}, []string{"", "127.0.5.2", "", "", "", ""}},
		{"192.0.2.4", 0, []Outcome{N, N, N, N, N, N}, nil},
		// Three answers: each entry counts once, whichever of them match.
		{"192.0.2.5", 3 + 10 + 1, []Outcome{N, N, L, L, L, N}, []string{"", "", "127.0.0.2", "127.0.0.4", "127.0.0.2", ""}},
		{"192.0.2.6", 1, []Outcome{N, N, N, N, L, N}, []string{"", "", "", "", "127.0.0.9", ""}},
		{"192.0.2.7", 0, []Outcome{E, N, N, N, N, N}, []string{"127.255.255.254", "", "", "", "", ""}},
		{"192.0.2.8", 0, []Outcome{E, N, N, N, N, N}, []string{"198.51.100.7", "", "", "", "", ""}},
		{"192.0.2.9", 2, []Outcome{L, N, N, N, N, N}, []string{"127.0.0.4", "", "", "", "", ""}},
		{"192.0.2.10", 7, []Outcome{N, N, N, N, N, L}, []string{"", "", "", "", "", "127.255.255.254"}},
		{"2001:db8::1", 2, []Outcome{L, N, N, N, N, N}, []string{"127.0.0.2", "", "", "", "", ""}},
		{"2001:db8:1234:5678:9abc:def0:1234:5678", -5, []Outcome{N, L, N, N, N, N}, []string{"", "127.0.1.3", "", "", "", ""}},
		{"::ffff:192.0.2.1", 2, []Outcome{L, N, N, N, N, N}, []string{"127.0.0.2", "", "", "", "", ""}},
	}
	for _, tt := range tests {
		r := check(t, c, tt.addr)
		if r.Score != tt.score || !slices.Equal(outcomes(r), tt.outcomes) {
			t.Errorf("%s: score %d %v, want %d %v", tt.addr, r.Score, outcomes(r), tt.score, tt.outcomes)
		}
		for i, s := range r.Sites {
			var want string
			if tt.answers != nil {
				want = tt.answers[i]
			}
			if got := s.Answer; want == "" && got.IsValid() || want != "" && got.String() != want {
				t.Errorf("%s: %s answered %v, want %q", tt.addr, s.Site, got, want)
			}
			if s.Site != &c.Sites()[i] {
				t.Errorf("%s: result %d is for %s", tt.addr, i, s.Site)
			}
			if (s.Outcome == Error) != (s.Err != nil) {
				t.Errorf("%s: %s: outcome %v with error %v", tt.addr, s.Site, s.Outcome, s.Err)
			}
		}
	}
	// One query per list and address, however many entries name the list.
	for _, addr := range []string{"192.0.2.5", "192.0.2.2"} {
		if n := srv.QueryCount(name(t, addr, "multi.example"), dns.TypeA); n != 1 {
			t.Errorf("multi.example asked %d times about %s, want 1", n, addr)
		}
	}
	if n := srv.Queries(); n != 3*(len(tests)-1) { // the mapped address is in the cache
		t.Errorf("%d queries, want %d", n, 3*(len(tests)-1))
	}
}

func TestTop(t *testing.T) {
	srv := dnstest.Start(t,
		a(t, "192.0.2.1", "a.example", 60, "127.0.0.2"),
		a(t, "192.0.2.1", "b.example", 60, "127.0.0.2"),
		a(t, "192.0.2.1", "c.example", 60, "127.0.0.2"),
	)
	c := newChecker(t, srv, Config{}, "a.example*2", "b.example*5", "c.example*-3", "d.example*9")
	r := check(t, c, "192.0.2.1")
	if top, ok := r.Top(); !ok || top.Site.Domain != "b.example" {
		t.Errorf("Top() = %v, %v; want b.example", top.Site, ok)
	}
	if r.Score != 4 {
		t.Errorf("score %d, want 4", r.Score)
	}
	if top, ok := check(t, c, "192.0.2.2").Top(); ok {
		t.Errorf("Top() of an address nobody lists = %v", top.Site)
	}
}

// TestTTL checks that answers are cached for their TTL clamped to
// [MinTTL, MaxTTL], negative answers for their SOA's (RFC 2308).
func TestTTL(t *testing.T) {
	const addr = "192.0.2.1"
	srv := dnstest.Start(t,
		a(t, addr, "short.example", 5, "127.0.0.2"),
		a(t, addr, "long.example", 86400, "127.0.0.2"),
		a(t, addr, "mid.example", 300, "127.0.0.2"),
		"alias.0.2.0.192.cname.example. 7200 IN A 127.0.0.2",
		name(t, addr, "cname.example")+" 120 IN CNAME alias.0.2.0.192.cname.example.",
		soa("neg.example", 900, 300),    // the minimum
		soa("negshort.example", 900, 5), // clamped to MinTTL
		soa("negttl.example", 200, 3000),
		soa("neglong.example", 86400, 86400), // clamped to MaxTTL
		soa("nodata.example", 900, 400),
		name(t, addr, "nodata.example")+" 60 IN TXT listed",
	)
	lists := []struct {
		list   string
		ttl    time.Duration
		listed bool
	}{
		{"short.example", time.Minute, true},
		{"long.example", time.Hour, true},
		{"mid.example", 5 * time.Minute, true},
		{"cname.example", 2 * time.Minute, true}, // the smallest along the chain
		{"neg.example", 5 * time.Minute, false},
		{"negshort.example", time.Minute, false},
		{"negttl.example", 200 * time.Second, false},
		{"neglong.example", time.Hour, false},
		{"nodata.example", 400 * time.Second, false},
		{"nosoa.example", time.Minute, false},
	}
	for _, l := range lists {
		clk := newClock()
		start := clk.Now()
		c := newChecker(t, srv, Config{Time: clk.Now}, l.list, "other.example")
		n := name(t, addr, l.list)
		for _, step := range []struct {
			advance time.Duration
			want    int
		}{
			{0, 1},
			{l.ttl - time.Second, 1},
			{time.Second, 2}, // expired at l.ttl
			{l.ttl - time.Second, 2},
			{time.Second, 3},
		} {
			clk.Advance(step.advance)
			r := check(t, c, addr)
			if got := srv.QueryCount(n, dns.TypeA); got != step.want {
				t.Errorf("%s (TTL %v) at %v: asked %d times, want %d", l.list, l.ttl, clk.Now().Sub(start), got, step.want)
			}
			if l.listed != (r.Score == 1) {
				t.Errorf("%s: score %d %v", l.list, r.Score, outcomes(r))
			}
		}
	}
}

func TestTTLBounds(t *testing.T) {
	const addr = "192.0.2.1"
	srv := dnstest.Start(t, a(t, addr, "bl.example", 1, "127.0.0.2"), soa("wl.example", 86400, 86400))
	clk := newClock()
	c := newChecker(t, srv, Config{Time: clk.Now, MinTTL: 10 * time.Second, MaxTTL: 20 * time.Second}, "bl.example", "wl.example")
	check(t, c, addr)
	for _, step := range []time.Duration{9 * time.Second, 2 * time.Second, 9 * time.Second, 2 * time.Second} {
		clk.Advance(step)
		check(t, c, addr)
	}
	// Asked at 0 s, 11 s (MinTTL 10 s), 22 s (MaxTTL 20 s).
	for list, want := range map[string]int{"bl.example": 3, "wl.example": 2} {
		if n := srv.QueryCount(name(t, addr, list), dns.TypeA); n != want {
			t.Errorf("%s asked %d times, want %d", list, n, want)
		}
	}
}

func TestCache(t *testing.T) {
	srv := dnstest.Start(t, a(t, "192.0.2.1", "bl.example", 300, "127.0.0.2"))
	mem, err := cache.NewMemory(100, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Two checkers sharing a cache are two nodes of a fleet.
	c1 := newChecker(t, srv, Config{Cache: mem}, "bl.example*2", "bl.example=127.0.0.3", "other.example")
	c2 := newChecker(t, srv, Config{Cache: mem}, "bl.example*3")
	for range 3 {
		if r := check(t, c1, "192.0.2.1"); r.Score != 2 {
			t.Errorf("score %d, want 2", r.Score)
		}
	}
	if r := check(t, c2, "192.0.2.1"); r.Score != 3 {
		t.Errorf("second checker: score %d, want 3", r.Score)
	}
	if n := srv.Queries(); n != 2 {
		t.Errorf("%d queries, want 2 (one per list)", n)
	}
	if st := c1.Stats(); st.Queries != 2 || st.CacheHits != 4 {
		t.Errorf("stats: %d queries, %d cache hits; want 2 and 4", st.Queries, st.CacheHits)
	}
	if st := c2.Stats(); st.Queries != 0 || st.CacheHits != 1 {
		t.Errorf("second checker's stats: %d queries, %d cache hits; want 0 and 1", st.Queries, st.CacheHits)
	}

	// What another program left under a key is not an answer, whether
	// read by Start from the checker's own cache or by the lookup.
	own := newChecker(t, srv, Config{}, "bl.example*2", "bl.example=127.0.0.3", "other.example")
	if own.local == nil || c1.local != nil {
		t.Fatal("the checker's own cache is not read by Start, or another is")
	}
	check(t, own, "192.0.2.1")
	key := keyPrefix + name(t, "192.0.2.1", "other.example")
	for _, c := range []*Checker{c1, own} {
		for _, v := range []string{"garbage", "127.0.0.2,", ",127.0.0.2", "::1", "127.0.0.2,,127.0.0.3", strings.Repeat("127.0.0.2,", maxAnswers) + "127.0.0.2"} {
			c.cache.Set(context.Background(), key, v, time.Hour)
			before := srv.Queries()
			if r := check(t, c, "192.0.2.1"); r.Sites[2].Outcome != NotListed {
				t.Errorf("cached %q: outcome %v", v, r.Sites[2].Outcome)
			}
			if srv.Queries() != before+1 {
				t.Errorf("cached %q was taken for an answer", v)
			}
		}
	}
}

// TestRedisCache shares answers between two nodes through a real Redis.
func TestRedisCache(t *testing.T) {
	srv := dnstest.Start(t, a(t, "192.0.2.1", "bl.example", 300, "127.0.0.2"))
	redisAddr := redistest.Start(t)
	node := func() *Checker {
		mem, err := cache.NewMemory(100, nil)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := cache.NewRedis(cache.RedisOptions{Addr: redisAddr}, mem, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rc.Close() })
		return newChecker(t, srv, Config{Cache: rc}, "bl.example*2", "wl.example*-1")
	}
	n1, n2 := node(), node()
	if r := check(t, n1, "192.0.2.1"); r.Score != 2 {
		t.Errorf("node 1: score %d, want 2", r.Score)
	}
	if r := check(t, n2, "192.0.2.1"); r.Score != 2 {
		t.Errorf("node 2: score %d, want 2", r.Score)
	}
	if n := srv.Queries(); n != 2 {
		t.Errorf("%d queries, want 2: node 2 should have found both answers in Redis", n)
	}
}

func TestTimeout(t *testing.T) {
	srv := dnstest.Start(t, a(t, "192.0.2.1", "slow.example", 60, "127.0.0.2"), a(t, "192.0.2.1", "bl.example", 60, "127.0.0.2"))
	srv.SetDelay(name(t, "192.0.2.1", "slow.example"), time.Hour)
	c := newChecker(t, srv, Config{Timeout: 100 * time.Millisecond}, "slow.example*5", "bl.example")
	r := check(t, c, "192.0.2.1")
	if r.Score != 1 || !slices.Equal(outcomes(r), []Outcome{Timeout, Listed}) || !isTimeout(r.Sites[0].Err) {
		t.Errorf("score %d %v (%v), want 1 [timeout listed] with a timeout error", r.Score, outcomes(r), r.Sites[0].Err)
	}
	// A timeout is not cached.
	check(t, c, "192.0.2.1")
	if n := srv.QueryCount(name(t, "192.0.2.1", "slow.example"), dns.TypeA); n != 2 {
		t.Errorf("slow list asked %d times, want 2", n)
	}
}

// TestDeadServer asks a server that reads queries and never answers.
func TestDeadServer(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	var logs syncBuffer
	sites, _ := ParseSites([]string{"bl.example", "wl.example*-1"})
	c, err := New(Config{Sites: sites, Server: pc.LocalAddr().String(), Timeout: 100 * time.Millisecond},
		slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, addr := range []string{"192.0.2.1", "192.0.2.2", "192.0.2.3"} {
		r := check(t, c, addr)
		if r.Score != 0 || !slices.Equal(outcomes(r), []Outcome{Timeout, Timeout}) {
			t.Errorf("%s: score %d %v, want 0 [timeout timeout]", addr, r.Score, outcomes(r))
		}
	}
	// Logged once per list, not per query.
	if n := strings.Count(logs.String(), "dnsbl: list not answering"); n != 2 {
		t.Errorf("%d lines about lists not answering, want 2:\n%s", n, logs.String())
	}
}

func TestServfail(t *testing.T) {
	srv := dnstest.Start(t, a(t, "192.0.2.1", "bl.example", 60, "127.0.0.2"), a(t, "192.0.2.1", "wl.example", 60, "127.0.0.2"))
	srv.SetServfail(name(t, "192.0.2.1", "bl.example"), true)
	c := newChecker(t, srv, Config{}, "bl.example*2", "wl.example*-1")
	for range 2 {
		r := check(t, c, "192.0.2.1")
		if r.Score != -1 || !slices.Equal(outcomes(r), []Outcome{Error, Listed}) ||
			r.Sites[0].Err == nil || !strings.Contains(r.Sites[0].Err.Error(), "SERVFAIL") {
			t.Errorf("score %d %v (%v), want -1 [error listed] with SERVFAIL", r.Score, outcomes(r), r.Sites[0].Err)
		}
	}
	// Not cached: the list is asked again, and its answer counts once it
	// comes.
	srv.SetServfail(name(t, "192.0.2.1", "bl.example"), false)
	if r := check(t, c, "192.0.2.1"); r.Score != 1 {
		t.Errorf("after the SERVFAIL: score %d, want 1", r.Score)
	}
	if n := srv.QueryCount(name(t, "192.0.2.1", "bl.example"), dns.TypeA); n != 3 {
		t.Errorf("asked %d times, want 3", n)
	}
}

// TestTruncated gets an answer too big for UDP, which is asked again over
// TCP, and keeps only the first maxAnswers addresses.
func TestTruncated(t *testing.T) {
	var rrs []string
	for i := range 100 {
		rrs = append(rrs, a(t, "192.0.2.1", "bl.example", 60, fmt.Sprintf("127.0.%d.%d", i/50, i%50+2)))
	}
	srv := dnstest.Start(t, rrs...)
	clk := newClock()
	mem, err := cache.NewMemory(10, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	c := newChecker(t, srv, Config{Cache: mem}, "bl.example", "bl.example=127.0.0.[2..200]*2", "bl.example=127.0.1.51*5")
	r := check(t, c, "192.0.2.1")
	if r.Score != 3 || !slices.Equal(outcomes(r), []Outcome{Listed, Listed, NotListed}) {
		t.Errorf("score %d %v, want 3 [listed listed not_listed]", r.Score, outcomes(r))
	}
	if n := srv.QueryCount(name(t, "192.0.2.1", "bl.example"), dns.TypeA); n != 2 {
		t.Errorf("asked %d times, want 2: over UDP, and again over TCP", n)
	}
	v, _ := mem.Get(context.Background(), keyPrefix+name(t, "192.0.2.1", "bl.example"))
	if n := strings.Count(v, ",") + 1; n != maxAnswers {
		t.Errorf("%d addresses cached, want %d: %q", n, maxAnswers, v)
	}
}

func TestWaitContext(t *testing.T) {
	const addr = "192.0.2.1"
	srv := dnstest.Start(t, a(t, addr, "bl.example", 60, "127.0.0.2"), a(t, addr, "wl.example", 60, "127.0.0.2"))
	srv.SetDelay(name(t, addr, "bl.example"), time.Hour)
	c := newChecker(t, srv, Config{Timeout: waitLimit}, "bl.example*2", "wl.example*-1")

	// The caller stops waiting: the late list counts as timing out...
	p := c.Start(context.Background(), netip.MustParseAddr(addr))
	srv.WaitQueries(2)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := p.Wait(ctx)
	if r.Score != 0 && r.Score != -1 || r.Sites[0].Outcome != Timeout || r.Sites[0].Err != context.Canceled {
		t.Errorf("score %d %v (%v), want bl.example to time out with the context", r.Score, outcomes(r), r.Sites[0].Err)
	}
	// ... but its query goes on, and its answer is cached when it comes.
	srv.SetDelay(name(t, addr, "bl.example"), 0)
	if r := check(t, c, addr); r.Score != 1 {
		t.Errorf("after the answer came: score %d %v, want 1", r.Score, outcomes(r))
	}
	if n := srv.Queries(); n != 2 {
		t.Errorf("%d queries, want 2", n)
	}

	// A context done before Start asks nothing.
	r = c.Start(ctx, netip.MustParseAddr("192.0.2.2")).Wait(context.Background())
	if r.Score != 0 || !slices.Equal(outcomes(r), []Outcome{Timeout, Timeout}) {
		t.Errorf("with a done context: score %d %v", r.Score, outcomes(r))
	}
	if n := srv.Queries(); n != 2 {
		t.Errorf("%d queries after a done context, want 2", n)
	}
}

func TestInvalidAddr(t *testing.T) {
	srv := dnstest.Start(t)
	c := newChecker(t, srv, Config{}, "bl.example")
	r := c.Start(context.Background(), netip.Addr{}).Wait(context.Background())
	if r.Score != 0 || !slices.Equal(outcomes(r), []Outcome{Error}) {
		t.Errorf("zero Addr: score %d %v", r.Score, outcomes(r))
	}
	if srv.Queries() != 0 {
		t.Error("the zero Addr was looked up")
	}
}

// TestSingleflight starts many checks of one address while its queries
// are held: they share one query per list.
func TestSingleflight(t *testing.T) {
	const addr = "192.0.2.1"
	srv := dnstest.Start(t, a(t, addr, "bl.example", 60, "127.0.0.2"), a(t, addr, "wl.example", 60, "127.0.0.2"))
	for _, l := range []string{"bl.example", "wl.example"} {
		srv.SetDelay(name(t, addr, l), time.Hour)
	}
	c := newChecker(t, srv, Config{Timeout: waitLimit}, "bl.example*3", "wl.example*-1")
	var pending []*Pending
	for range 20 {
		pending = append(pending, c.Start(context.Background(), netip.MustParseAddr(addr)))
	}
	srv.WaitQueries(2)
	for _, l := range []string{"bl.example", "wl.example"} {
		srv.SetDelay(name(t, addr, l), 0)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	for _, p := range pending {
		if r := p.Wait(ctx); r.Score != 2 {
			t.Errorf("score %d %v, want 2", r.Score, outcomes(r))
		}
	}
	if n := srv.Queries(); n != 2 {
		t.Errorf("%d queries, want 2", n)
	}
}

// waitStats waits until cond holds for the checker's counters.
func waitStats(t *testing.T, c *Checker, what string, cond func(Stats) bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond(c.Stats()) {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s: %+v", waitLimit, what, c.Stats())
		}
		time.Sleep(time.Millisecond)
	}
}

// TestInFlightBound floods the checker with addresses while the list holds
// its answers: no more queries than the bound are sent, the others count
// as not listed at once.
func TestInFlightBound(t *testing.T) {
	srv := dnstest.Start(t)
	var logs syncBuffer
	sites, _ := ParseSites([]string{"bl.example*5", "wl.example*-1"})
	c, err := New(Config{Sites: sites, Server: srv.Addr, MaxInFlight: 6, Timeout: waitLimit},
		slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	const n = 50
	var addrs []string
	for i := range n {
		addr := fmt.Sprintf("192.0.2.%d", i+1)
		addrs = append(addrs, addr)
		srv.SetDelay(name(t, addr, "bl.example"), time.Hour)
		srv.SetDelay(name(t, addr, "wl.example"), time.Hour)
	}
	var pending []*Pending
	for _, addr := range addrs {
		pending = append(pending, c.Start(context.Background(), netip.MustParseAddr(addr)))
	}
	// Each list has half the slots.
	waitStats(t, c, "the lookups to be sent or refused", func(s Stats) bool { return s.Queries+s.Busy == 2*n })
	if st := c.Stats(); st.Queries != 6 || st.Busy != 2*n-6 {
		t.Errorf("%d queries sent and %d not, want 6 and %d", st.Queries, st.Busy, 2*n-6)
	}
	// The refused ones need no answer to be had: callers that wait a
	// second in all get them, and the others time out.
	soon, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var got [2][NumOutcomes]int
	for _, p := range pending {
		for i, s := range p.Wait(soon).Sites {
			got[i][s.Outcome]++
		}
	}
	for i := range got {
		if want := [NumOutcomes]int{Timeout: 3, Busy: n - 3}; got[i] != want {
			t.Errorf("site %d: outcomes %v, want %v", i, got[i], want)
		}
	}
	for _, addr := range addrs {
		srv.SetDelay(name(t, addr, "bl.example"), 0)
		srv.SetDelay(name(t, addr, "wl.example"), 0)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	for _, p := range pending {
		p.Wait(ctx) // until the queries sent are answered
	}
	if q := srv.Queries(); q != 6 {
		t.Errorf("the server got %d queries, want 6", q)
	}
	// Saturation is logged when it begins and when it ends, per list.
	if got := strings.Count(logs.String(), "dnsbl: too many queries in flight"); got != 2 {
		t.Errorf("%d lines about too many queries, want 2:\n%s", got, logs.String())
	}
	if r := check(t, c, "198.51.100.1"); !slices.Equal(outcomes(r), []Outcome{NotListed, NotListed}) {
		t.Errorf("once the answers came: %v", outcomes(r))
	}
	if got := strings.Count(logs.String(), "dnsbl: queries asked again"); got != 2 || strings.Count(logs.String(), "not_asked=47") != 2 {
		t.Errorf("%d lines about queries asked again, want 2 with not_asked=47:\n%s", got, logs.String())
	}
	// Counted at the first Wait of each.
	for i, s := range c.Stats().Sites {
		if want := [NumOutcomes]uint64{NotListed: 1, Timeout: 3, Busy: n - 3}; s.Outcomes != want {
			t.Errorf("site %d: counted %v, want %v", i, s.Outcomes, want)
		}
	}
}

// TestSaturationLog checks that the end of a saturation is logged only
// once the list's slots are no more than half taken, not at the first free
// one, so that a list at its limit does not log every other query.
func TestSaturationLog(t *testing.T) {
	srv := dnstest.Start(t)
	var logs syncBuffer
	sites, _ := ParseSites([]string{"bl.example"})
	c, err := New(Config{Sites: sites, Server: srv.Addr, MaxInFlight: 4, Timeout: waitLimit},
		slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var held []*Pending
	for i := range 4 {
		addr := fmt.Sprintf("192.0.2.%d", i+1)
		srv.SetDelay(name(t, addr, "bl.example"), time.Hour)
		held = append(held, c.Start(context.Background(), netip.MustParseAddr(addr)))
	}
	srv.WaitQueries(4)
	if r := check(t, c, "192.0.2.5"); r.Sites[0].Outcome != Busy {
		t.Fatalf("a fifth query at once: %v", outcomes(r))
	}
	release := func(i int) {
		t.Helper()
		srv.SetDelay(name(t, fmt.Sprintf("192.0.2.%d", i+1), "bl.example"), 0)
		held[i].Wait(context.Background())
	}
	release(0)
	check(t, c, "192.0.2.6") // the fourth slot, with three taken
	if strings.Contains(logs.String(), "queries asked again") {
		t.Errorf("the end of saturation logged with 4 slots of 4 taken:\n%s", logs.String())
	}
	release(1)
	release(2)
	check(t, c, "192.0.2.7") // two of four taken
	if got := strings.Count(logs.String(), "dnsbl: queries asked again"); got != 1 || !strings.Contains(logs.String(), "not_asked=1") {
		t.Errorf("%d lines about the end of saturation, want 1 with not_asked=1:\n%s", got, logs.String())
	}
	release(3)
}

// TestDeadListDoesNotStarve: a list that holds every query uses up its
// own share of the slots, not the others'.
func TestDeadListDoesNotStarve(t *testing.T) {
	srv := dnstest.Start(t)
	mem, err := cache.NewMemory(100, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := newChecker(t, srv, Config{MaxInFlight: 4, Timeout: waitLimit, Cache: mem}, "dead.example", "bl.example")
	for i := range 10 {
		addr := fmt.Sprintf("192.0.2.%d", i+1)
		srv.SetDelay(name(t, addr, "dead.example"), time.Hour)
		srv.Add(a(t, addr, "bl.example", 60, "127.0.0.2"))
	}
	// Two clients take the dead list's two slots. (The live list's answers
	// about them are in the cache already, lest they be still coming when
	// the test goes on.)
	warm := newChecker(t, srv, Config{Cache: mem}, "bl.example")
	check(t, warm, "192.0.2.1")
	check(t, warm, "192.0.2.2")
	c.Start(context.Background(), netip.MustParseAddr("192.0.2.1"))
	c.Start(context.Background(), netip.MustParseAddr("192.0.2.2"))
	srv.WaitQueries(4)
	// ... and the live list still answers about the others.
	for i := 3; i <= 10; i++ {
		r := check(t, c, fmt.Sprintf("192.0.2.%d", i))
		if !slices.Equal(outcomes(r), []Outcome{Busy, Listed}) {
			t.Errorf("client %d: %v, want [busy listed]: %v %+v", i, outcomes(r), r.Sites[1].Err, c.Stats())
		}
	}
}

func TestNew(t *testing.T) {
	sites, _ := ParseSites([]string{"a.example", "a.example=127.0.0.2", "b.example"})
	for _, tt := range []struct {
		cfg  Config
		want string
	}{
		{Config{Timeout: -1}, "dnsbl: negative timeout -1ns"},
		{Config{MinTTL: -1}, "dnsbl: negative min TTL -1ns"},
		{Config{MaxTTL: -time.Second}, "dnsbl: negative max TTL -1s"},
		{Config{MinTTL: time.Hour, MaxTTL: time.Minute}, "dnsbl: min TTL 1h0m0s is above max TTL 1m0s"},
		{Config{MaxInFlight: -1}, "dnsbl: negative max in flight -1"},
		{Config{CacheSize: -1}, "dnsbl: negative cache size -1"},
		{Config{Sites: sites, MaxInFlight: 1}, "dnsbl: max in flight 1 is below the number of lists, 2: each needs one"},
		{Config{Server: "dns.example"}, `dnsbl: resolve: resolver "dns.example": want host:port`},
		{Config{Sites: []Site{{Domain: "Bl.example"}}}, `dnsbl: site "Bl.example": domain not as ParseSites returns it`},
		{Config{Sites: []Site{{Domain: "bl.example."}}}, `dnsbl: site "bl.example.": domain not as ParseSites returns it`},
	} {
		if tt.cfg.Server == "" {
			tt.cfg.Server = "127.0.0.1:53"
		}
		if _, err := New(tt.cfg, nil); err == nil || err.Error() != tt.want {
			t.Errorf("New(%+v) = %v, want %s", tt.cfg, err, tt.want)
		}
	}
	c, err := New(Config{Sites: sites, Server: "127.0.0.1:53", MaxInFlight: 5}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if len(c.domains) != 2 || c.domains[0].limit != 2 || c.domains[1].limit != 2 {
		t.Errorf("5 slots for 2 lists shared as %d and %d", c.domains[0].limit, c.domains[1].limit)
	}
	if c.timeout != DefaultTimeout || c.minTTL != DefaultMinTTL || c.maxTTL != DefaultMaxTTL {
		t.Errorf("defaults not applied")
	}
}

// syncBuffer is a log destination safe for the checker's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestHealthLog checks that a list's health is logged when it changes, not
// for every query, and no more than once per logInterval.
func TestHealthLog(t *testing.T) {
	srv := dnstest.Start(t)
	clk := newClock()
	var logs syncBuffer
	sites, _ := ParseSites([]string{"bl.example"})
	c, err := New(Config{Sites: sites, Server: srv.Addr, Timeout: 100 * time.Millisecond, Time: clk.Now},
		slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	i := 0
	ask := func(how string) {
		t.Helper()
		i++
		addr := fmt.Sprintf("192.0.2.%d", i)
		n := name(t, addr, "bl.example")
		switch how {
		case "timeout":
			srv.SetDelay(n, time.Hour)
		case "servfail":
			srv.SetServfail(n, true)
		case "refusal":
			srv.Add(a(t, addr, "bl.example", 60, "127.255.255.254"))
		}
		check(t, c, addr)
	}
	lines := func() []string {
		var out []string
		for l := range strings.Lines(logs.String()) {
			_, msg, _ := strings.Cut(l, "msg=")
			out = append(out, strings.TrimSpace(msg))
		}
		return out
	}
	steps := []struct {
		how     string
		advance time.Duration
		want    int // log lines in all
	}{
		{"ok", 0, 0},
		{"timeout", 0, 1}, // the first change is logged at once
		{"timeout", 0, 1},
		{"ok", 0, 1}, // too soon after the last line
		{"ok", logInterval, 2},
		{"ok", 0, 2},
		{"servfail", logInterval, 3},
		{"refusal", 0, 3},
		{"ok", 0, 3},
		{"servfail", 0, 3},
		{"timeout", logInterval, 4}, // changes=4: refusal, ok, servfail, timeout
		{"refusal", logInterval, 5},
	}
	for _, s := range steps {
		clk.Advance(s.advance)
		ask(s.how)
		if got := lines(); len(got) != s.want {
			t.Fatalf("after %d queries (%s): %d lines, want %d:\n%s", i, s.how, len(got), s.want, strings.Join(got, "\n"))
		}
	}
	got := lines()
	for i, want := range []string{
		`"dnsbl: list not answering; counted as not listing" list=bl.example err=`,
		`"dnsbl: list answering again" list=bl.example`,
		`"dnsbl: list failing; counted as not listing" list=bl.example err=`,
		`"dnsbl: list not answering; counted as not listing" list=bl.example changes=4 err=`,
		`"dnsbl: list answering with an address that does not list; counted as not listing unless a filter selects it" list=bl.example answer=127.255.255.254`,
	} {
		if !strings.HasPrefix(got[i], want) {
			t.Errorf("line %d: %s\n want %s...", i+1, got[i], want)
		}
	}
}

func TestStats(t *testing.T) {
	srv := dnstest.Start(t, a(t, "192.0.2.1", "bl.example", 60, "127.0.0.2"))
	srv.SetServfail(name(t, "192.0.2.2", "bl.example"), true)
	c := newChecker(t, srv, Config{}, "bl.example*2", "bl.example=127.0.0.3")
	ctx := context.Background()
	p := c.Start(ctx, netip.MustParseAddr("192.0.2.1"))
	p.Wait(ctx)
	p.Wait(ctx) // counted once
	check(t, c, "192.0.2.1")
	check(t, c, "192.0.2.2")
	check(t, c, "192.0.2.3")
	st := c.Stats()
	want := [][NumOutcomes]uint64{
		{NotListed: 1, Listed: 2, Error: 1},
		{NotListed: 3, Error: 1},
	}
	for i, s := range st.Sites {
		if s.Outcomes != want[i] || s.Site != c.Sites()[i] {
			t.Errorf("site %d (%s): %v, want %v", i, s.Site, s.Outcomes, want[i])
		}
	}
	if st.Queries != 3 || st.CacheHits != 1 || st.Busy != 0 {
		t.Errorf("stats %+v, want 3 queries and 1 cache hit", st)
	}
	for o, want := range []string{"not_listed", "listed", "timeout", "error", "busy"} {
		if got := Outcome(o).String(); got != want {
			t.Errorf("Outcome(%d) = %q, want %q", o, got, want)
		}
	}
	if got := NumOutcomes.String(); got != "Outcome(5)" {
		t.Errorf("NumOutcomes.String() = %q", got)
	}
}

// TestClose ends a checker with queries held by the server: Close returns
// without waiting for their answers, and leaves no goroutine behind.
func TestClose(t *testing.T) {
	srv := dnstest.Start(t)
	c := newChecker(t, srv, Config{Timeout: time.Hour}, "bl.example", "wl.example*-1")
	var pending []*Pending
	for i := range 20 {
		addr := fmt.Sprintf("192.0.2.%d", i+1)
		srv.SetDelay(name(t, addr, "bl.example"), time.Hour)
		pending = append(pending, c.Start(context.Background(), netip.MustParseAddr(addr)))
	}
	srv.WaitQueries(40)
	done := make(chan struct{})
	go func() {
		c.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(waitLimit):
		t.Fatal("Close waited for the held answers")
	}
	for _, p := range pending {
		if r := p.Wait(context.Background()); r.Sites[0].Outcome != Error {
			t.Errorf("a query cut short by Close: %v", outcomes(r))
		}
	}
	r := c.Start(context.Background(), netip.MustParseAddr("198.51.100.1")).Wait(context.Background())
	if !slices.Equal(outcomes(r), []Outcome{Error, Error}) || !strings.Contains(r.Sites[0].Err.Error(), "closed") {
		t.Errorf("after Close: %v (%v)", outcomes(r), r.Sites[0].Err)
	}
	waitGoroutines(t)
}

// waitGoroutines waits until no goroutine runs the package's code but
// the test's own. (The test DNS server's goroutines, held by delays, are
// not the checker's to end.)
func waitGoroutines(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var left []string
		for g := range strings.SplitSeq(string(buf), "\n\n") {
			if strings.Contains(g, "internal/dnsbl.") && !strings.Contains(g, "internal/dnsbl.waitGoroutines") {
				left = append(left, g)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines left:\n%s", len(left), strings.Join(left, "\n\n"))
		}
		time.Sleep(time.Millisecond)
	}
}

// TestNoLeak runs every kind of lookup, and checks that once they are
// done no goroutine is left.
func TestNoLeak(t *testing.T) {
	srv := dnstest.Start(t, a(t, "192.0.2.1", "bl.example", 60, "127.0.0.2"))
	srv.SetDelay(name(t, "192.0.2.2", "bl.example"), time.Hour)
	srv.SetServfail(name(t, "192.0.2.3", "bl.example"), true)
	c := newChecker(t, srv, Config{Timeout: 100 * time.Millisecond, MaxInFlight: 2}, "bl.example", "wl.example")
	for range 3 {
		for _, addr := range []string{"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "2001:db8::1"} {
			check(t, c, addr)
		}
	}
	// And lookups nobody waits for, nor finishes waiting for.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for i := range 10 {
		p := c.Start(context.Background(), netip.MustParseAddr(fmt.Sprintf("192.0.2.%d", i)))
		if i%2 == 0 {
			p.Wait(ctx)
		}
	}
	waitGoroutines(t)
}
