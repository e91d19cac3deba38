package resolve

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/internal/dnstest"
)

// clock is a settable time source for cache expiry.
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

// newResolver returns a Resolver that asks srv and keeps time by clk.
func newResolver(t *testing.T, srv *dnstest.Server, clk *clock, cfg Config) *Resolver {
	t.Helper()
	cfg.Server = srv.Addr
	if clk != nil {
		cfg.Time = clk.Now
	}
	r, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func arpa(t testing.TB, addr string) string {
	t.Helper()
	name, err := dns.ReverseAddr(addr)
	if err != nil {
		t.Fatal(err)
	}
	return name
}

const (
	ptr5 = "5.0.0.127.in-addr.arpa. 300 IN PTR Host5.ADSL.alicedsl.de."
	a5   = "host5.adsl.alicedsl.de. 60 IN A 127.0.0.5"
)

func TestVerify(t *testing.T) {
	var many []string // an answer too big for UDP, the matching address last
	for i := range 150 {
		many = append(many, fmt.Sprintf("big.example. 60 IN A 127.1.%d.%d", i/100, i%100+1))
	}
	many = append(many, "big.example. 60 IN A 127.0.0.9", "9.0.0.127.in-addr.arpa. 60 IN PTR big.example.")

	var sixPTRs []string // the only confirming name is past maxNames
	for i := range 6 {
		sixPTRs = append(sixPTRs, fmt.Sprintf("7.0.0.127.in-addr.arpa. 60 IN PTR n%d.example.", i))
	}
	sixPTRs = append(sixPTRs, "n5.example. 60 IN A 127.0.0.7")

	tests := []struct {
		name     string
		records  []string
		servfail []string
		addr     string
		want     Result
	}{
		{
			name:    "confirmed",
			records: []string{ptr5, a5},
			addr:    "127.0.0.5",
			want:    Result{Name: "host5.adsl.alicedsl.de", PTR: "host5.adsl.alicedsl.de", Status: OK},
		},
		{
			name:    "v4-mapped v6 address",
			records: []string{ptr5, a5},
			addr:    "::ffff:127.0.0.5",
			want:    Result{Name: "host5.adsl.alicedsl.de", PTR: "host5.adsl.alicedsl.de", Status: OK},
		},
		{
			name:    "no PTR name",
			records: []string{a5},
			addr:    "127.0.0.5",
			want:    Result{Status: NoName},
		},
		{
			name:    "PTR name exists without PTR record",
			records: []string{"5.0.0.127.in-addr.arpa. 60 IN TXT \"x\""},
			addr:    "127.0.0.5",
			want:    Result{Status: NoName},
		},
		{
			name:    "forward address differs",
			records: []string{ptr5, "host5.adsl.alicedsl.de. 60 IN A 127.0.0.6"},
			addr:    "127.0.0.5",
			want:    Result{PTR: "host5.adsl.alicedsl.de", Status: Mismatch},
		},
		{
			name:    "forward name missing",
			records: []string{ptr5},
			addr:    "127.0.0.5",
			want:    Result{PTR: "host5.adsl.alicedsl.de", Status: Mismatch},
		},
		{
			name: "second PTR name confirms",
			records: []string{
				"5.0.0.127.in-addr.arpa. 60 IN PTR forged.example.",
				ptr5,
				"forged.example. 60 IN A 127.0.0.99",
				a5,
			},
			addr: "127.0.0.5",
			want: Result{Name: "host5.adsl.alicedsl.de", PTR: "forged.example", Status: OK},
		},
		{
			name:    "only the first few PTR names are tried",
			records: sixPTRs,
			addr:    "127.0.0.7",
			want:    Result{PTR: "n0.example", Status: Mismatch},
		},
		{
			name: "classless delegation CNAME (RFC 2317)",
			records: []string{
				"5.0.0.127.in-addr.arpa. 60 IN CNAME 5.0/25.0.0.127.in-addr.arpa.",
				"5.0/25.0.0.127.in-addr.arpa. 60 IN PTR host5.adsl.alicedsl.de.",
				a5,
			},
			addr: "127.0.0.5",
			want: Result{Name: "host5.adsl.alicedsl.de", PTR: "host5.adsl.alicedsl.de", Status: OK},
		},
		{
			name:    "forward answer truncated over UDP",
			records: many,
			addr:    "127.0.0.9",
			want:    Result{Name: "big.example", PTR: "big.example", Status: OK},
		},
		{
			name: "IPv6 confirmed",
			records: []string{
				"5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. 60 IN PTR v6.example.",
				"v6.example. 60 IN AAAA 2001:db8::5",
			},
			addr: "2001:db8::5",
			want: Result{Name: "v6.example", PTR: "v6.example", Status: OK},
		},
		{
			name: "IPv6 asks for AAAA, not A",
			records: []string{
				"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa. 60 IN PTR v4only.example.",
				"v4only.example. 60 IN A 127.0.0.1",
			},
			addr: "::1",
			want: Result{PTR: "v4only.example", Status: Mismatch},
		},
		{
			name:     "SERVFAIL for the PTR",
			records:  []string{ptr5, a5},
			servfail: []string{"5.0.0.127.in-addr.arpa."},
			addr:     "127.0.0.5",
			want:     Result{Status: TempFail},
		},
		{
			name: "unchecked name is not a mismatch",
			records: []string{
				"5.0.0.127.in-addr.arpa. 60 IN PTR broken.example.",
				"5.0.0.127.in-addr.arpa. 60 IN PTR other.example.",
				"other.example. 60 IN A 127.0.0.99",
			},
			servfail: []string{"broken.example."},
			addr:     "127.0.0.5",
			want:     Result{PTR: "broken.example", Status: TempFail},
		},
		{
			name: "unchecked name does not stop a confirmation",
			records: []string{
				"5.0.0.127.in-addr.arpa. 60 IN PTR broken.example.",
				ptr5,
				a5,
			},
			servfail: []string{"broken.example."},
			addr:     "127.0.0.5",
			want:     Result{Name: "host5.adsl.alicedsl.de", PTR: "broken.example", Status: OK},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := dnstest.Start(t, tt.records...)
			for _, name := range tt.servfail {
				srv.SetServfail(name, true)
			}
			r := newResolver(t, srv, nil, Config{})
			got := r.Verify(context.Background(), netip.MustParseAddr(tt.addr))
			if got != tt.want {
				t.Errorf("Verify(%s) = %+v, want %+v", tt.addr, got, tt.want)
			}
		})
	}
}

func TestVerifyInvalidAddr(t *testing.T) {
	srv := dnstest.Start(t)
	r := newResolver(t, srv, nil, Config{})
	if got := r.Verify(context.Background(), netip.Addr{}); got.Status != NoName {
		t.Errorf("Verify(zero Addr) = %+v, want NoName", got)
	}
	if n := srv.Queries(); n != 0 {
		t.Errorf("%d queries for an invalid address", n)
	}
}

func TestVerifyTimeout(t *testing.T) {
	srv := dnstest.Start(t, ptr5, a5)
	srv.SetDelay(arpa(t, "127.0.0.5"), time.Minute)
	r := newResolver(t, srv, nil, Config{Timeout: 100 * time.Millisecond})

	start := time.Now()
	got := r.Verify(context.Background(), netip.MustParseAddr("127.0.0.5"))
	if got.Status != TempFail {
		t.Errorf("Verify = %+v, want TempFail", got)
	}
	// The lookup budget is three query timeouts.
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("Verify took %v with a 100ms timeout", elapsed)
	}
}

func TestVerifyServerDown(t *testing.T) {
	srv := dnstest.Start(t, ptr5, a5)
	r := newResolver(t, srv, nil, Config{Timeout: 200 * time.Millisecond})
	srv.Close()
	if got := r.Verify(context.Background(), netip.MustParseAddr("127.0.0.5")); got.Status != TempFail {
		t.Errorf("Verify = %+v, want TempFail", got)
	}
}

func TestVerifyCallerGivesUp(t *testing.T) {
	srv := dnstest.Start(t, ptr5, a5)
	name := arpa(t, "127.0.0.5")
	srv.SetDelay(name, time.Minute)
	r := newResolver(t, srv, nil, Config{})
	addr := netip.MustParseAddr("127.0.0.5")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan Result)
	go func() { done <- r.Verify(ctx, addr) }()
	srv.WaitQueries(1)
	cancel()
	if got := <-done; got.Status != TempFail {
		t.Errorf("Verify with a cancelled context = %+v, want TempFail", got)
	}

	// The abandoned lookup goes on; a later caller shares it.
	go func() { done <- r.Verify(context.Background(), addr) }()
	srv.SetDelay(name, 0)
	if got := <-done; got.Status != OK {
		t.Errorf("second Verify = %+v, want OK", got)
	}
	if n := srv.QueryCount(name, dns.TypePTR); n != 1 {
		t.Errorf("%d PTR queries, want 1", n)
	}
}

func TestCacheTTL(t *testing.T) {
	tests := []struct {
		name           string
		ptrTTL, aTTL   int
		minTTL, maxTTL time.Duration
		want           time.Duration
	}{
		{"smaller of PTR and A", 300, 60, time.Second, time.Hour, 60 * time.Second},
		{"PTR smaller", 30, 600, time.Second, time.Hour, 30 * time.Second},
		{"raised to MinTTL", 0, 0, 10 * time.Second, time.Hour, 10 * time.Second},
		{"lowered to MaxTTL", 86400, 86400, time.Second, time.Hour, time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := dnstest.Start(t,
				fmt.Sprintf("5.0.0.127.in-addr.arpa. %d IN PTR host5.example.", tt.ptrTTL),
				fmt.Sprintf("host5.example. %d IN A 127.0.0.5", tt.aTTL))
			clk := newClock()
			r := newResolver(t, srv, clk, Config{MinTTL: tt.minTTL, MaxTTL: tt.maxTTL})
			addr := netip.MustParseAddr("127.0.0.5")

			want := Result{Name: "host5.example", PTR: "host5.example", Status: OK}
			verify := func(wantQueries int) {
				t.Helper()
				if got := r.Verify(context.Background(), addr); got != want {
					t.Fatalf("Verify = %+v, want %+v", got, want)
				}
				if n := srv.Queries(); n != wantQueries {
					t.Fatalf("%d queries, want %d", n, wantQueries)
				}
			}
			verify(2)
			verify(2)
			clk.Advance(tt.want - time.Nanosecond)
			verify(2)
			clk.Advance(time.Nanosecond)
			verify(4)
		})
	}
}

func TestCacheNegative(t *testing.T) {
	srv := dnstest.Start(t, a5)
	clk := newClock()
	r := newResolver(t, srv, clk, Config{NegativeTTL: 10 * time.Minute})
	addr := netip.MustParseAddr("127.0.0.5")

	if got := r.Verify(context.Background(), addr); got.Status != NoName {
		t.Fatalf("Verify = %+v, want NoName", got)
	}
	srv.Add(ptr5)
	clk.Advance(10*time.Minute - time.Second)
	if got := r.Verify(context.Background(), addr); got.Status != NoName {
		t.Errorf("Verify within NegativeTTL = %+v, want the cached NoName", got)
	}
	clk.Advance(time.Second)
	if got := r.Verify(context.Background(), addr); got.Status != OK {
		t.Errorf("Verify after NegativeTTL = %+v, want OK", got)
	}
}

func TestCacheMismatchUsesNegativeTTL(t *testing.T) {
	srv := dnstest.Start(t, ptr5)
	clk := newClock()
	r := newResolver(t, srv, clk, Config{MinTTL: time.Second, NegativeTTL: 20 * time.Second})
	addr := netip.MustParseAddr("127.0.0.5")

	if got := r.Verify(context.Background(), addr); got.Status != Mismatch {
		t.Fatalf("Verify = %+v, want Mismatch", got)
	}
	srv.Add(a5)
	clk.Advance(20*time.Second - time.Nanosecond)
	if got := r.Verify(context.Background(), addr); got.Status != Mismatch {
		t.Errorf("Verify within NegativeTTL = %+v, want the cached Mismatch", got)
	}
	clk.Advance(time.Nanosecond)
	if got := r.Verify(context.Background(), addr); got.Status != OK {
		t.Errorf("Verify after NegativeTTL = %+v, want OK", got)
	}
}

func TestCacheTempFailBriefly(t *testing.T) {
	srv := dnstest.Start(t, ptr5, a5)
	name := arpa(t, "127.0.0.5")
	srv.SetServfail(name, true)
	clk := newClock()
	r := newResolver(t, srv, clk, Config{})
	addr := netip.MustParseAddr("127.0.0.5")

	if got := r.Verify(context.Background(), addr); got.Status != TempFail {
		t.Fatalf("Verify = %+v, want TempFail", got)
	}
	srv.SetServfail(name, false)
	if got := r.Verify(context.Background(), addr); got.Status != TempFail {
		t.Errorf("Verify right after a failure = %+v, want the cached TempFail", got)
	}
	clk.Advance(tempFailTTL)
	if got := r.Verify(context.Background(), addr); got.Status != OK {
		t.Errorf("Verify %v after a failure = %+v, want OK", tempFailTTL, got)
	}
}

func TestCacheEvictsLeastRecentlyUsed(t *testing.T) {
	srv := dnstest.Start(t)
	for i := 1; i <= 3; i++ {
		srv.Add(fmt.Sprintf("%d.0.0.127.in-addr.arpa. 3600 IN PTR h%d.example.", i, i),
			fmt.Sprintf("h%d.example. 3600 IN A 127.0.0.%d", i, i))
	}
	r := newResolver(t, srv, newClock(), Config{CacheSize: 2})
	verify := func(addr string) {
		t.Helper()
		if got := r.Verify(context.Background(), netip.MustParseAddr(addr)); got.Status != OK {
			t.Fatalf("Verify(%s) = %+v", addr, got)
		}
	}
	verify("127.0.0.1")
	verify("127.0.0.2")
	verify("127.0.0.1") // now .2 is the least recently used
	verify("127.0.0.3") // evicts .2
	before := srv.Queries()
	verify("127.0.0.1")
	verify("127.0.0.3")
	if n := srv.Queries() - before; n != 0 {
		t.Errorf("%d queries for cached addresses", n)
	}
	verify("127.0.0.2")
	if n := srv.Queries() - before; n != 2 {
		t.Errorf("%d queries for the evicted address, want 2", n)
	}
}

func TestMaxInFlight(t *testing.T) {
	srv := dnstest.Start(t)
	var held []string
	for i := 1; i <= 3; i++ {
		srv.Add(fmt.Sprintf("%d.0.0.127.in-addr.arpa. 60 IN PTR h%d.example.", i, i),
			fmt.Sprintf("h%d.example. 60 IN A 127.0.0.%d", i, i))
		held = append(held, arpa(t, fmt.Sprintf("127.0.0.%d", i)))
	}
	for _, name := range held[:2] {
		srv.SetDelay(name, time.Minute)
	}
	r := newResolver(t, srv, newClock(), Config{MaxInFlight: 2, Timeout: 30 * time.Second})

	results := make(chan Result, 2)
	for _, addr := range []string{"127.0.0.1", "127.0.0.2"} {
		go func() { results <- r.Verify(context.Background(), netip.MustParseAddr(addr)) }()
	}
	srv.WaitQueries(2)

	start := time.Now()
	got := r.Verify(context.Background(), netip.MustParseAddr("127.0.0.3"))
	if got.Status != TempFail {
		t.Errorf("third lookup = %+v, want TempFail", got)
	}
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Errorf("refusing the third lookup took %v", elapsed)
	}
	if n := srv.Queries(); n != 2 {
		t.Errorf("%d queries, want the 2 held ones", n)
	}

	for _, name := range held[:2] {
		srv.SetDelay(name, 0)
	}
	for range 2 {
		if got := <-results; got.Status != OK {
			t.Errorf("held lookup = %+v, want OK", got)
		}
	}
	// A refusal for load is not an answer about the address: not cached.
	if got := r.Verify(context.Background(), netip.MustParseAddr("127.0.0.3")); got.Status != OK {
		t.Errorf("third lookup once slots are free = %+v, want OK", got)
	}
}

func TestConcurrentVerifyShareOneLookup(t *testing.T) {
	srv := dnstest.Start(t, ptr5, a5)
	name := arpa(t, "127.0.0.5")
	// Slow enough that every caller arrives while the lookup runs.
	srv.SetDelay(name, 200*time.Millisecond)
	r := newResolver(t, srv, newClock(), Config{})
	addr := netip.MustParseAddr("127.0.0.5")

	const callers = 100
	start := make(chan struct{})
	results := make(chan Result, callers)
	for range callers {
		go func() {
			<-start
			results <- r.Verify(context.Background(), addr)
		}()
	}
	close(start)
	for range callers {
		if got := <-results; got.Status != OK {
			t.Errorf("Verify = %+v, want OK", got)
		}
	}
	if n := srv.QueryCount(name, dns.TypePTR); n != 1 {
		t.Errorf("%d PTR queries for %d concurrent callers, want 1", n, callers)
	}
}

func TestNewConfig(t *testing.T) {
	tests := []struct {
		cfg     Config
		servers []string // nil: New must fail
	}{
		{Config{Server: "127.0.0.1:5353"}, []string{"127.0.0.1:5353"}},
		{Config{Server: "127.0.0.1"}, []string{"127.0.0.1:53"}},
		{Config{Server: "::1"}, []string{"[::1]:53"}},
		{Config{Server: "[::1]:5353"}, []string{"[::1]:5353"}},
		{Config{Server: "localhost:53"}, []string{"localhost:53"}},
		{Config{Server: "dns.example"}, nil},
		{Config{Server: ":53"}, nil},
		{Config{Server: "127.0.0.1:0"}, nil},
		{Config{Server: "127.0.0.1:65536"}, nil},
		{Config{Server: "127.0.0.1:domain"}, nil},
		{Config{Server: "127.0.0.1:53", Timeout: -time.Second}, nil},
		{Config{Server: "127.0.0.1:53", MaxInFlight: -1}, nil},
		{Config{Server: "127.0.0.1:53", CacheSize: -1}, nil},
		{Config{Server: "127.0.0.1:53", MinTTL: 2 * time.Hour, MaxTTL: time.Hour}, nil},
		{Config{Server: "127.0.0.1:53", MinTTL: 2 * time.Hour}, nil}, // above the default MaxTTL
		{Config{Server: "127.0.0.1:53", NegativeTTL: -1}, nil},
	}
	for _, tt := range tests {
		r, err := New(tt.cfg, nil)
		switch {
		case tt.servers == nil && err == nil:
			t.Errorf("New(%+v) succeeded, want an error", tt.cfg)
		case tt.servers != nil && err != nil:
			t.Errorf("New(%+v): %v", tt.cfg, err)
		case err == nil && !slices.Equal(r.servers, tt.servers):
			t.Errorf("New(%+v) asks %q, want %q", tt.cfg, r.servers, tt.servers)
		case err != nil && !strings.HasPrefix(err.Error(), "resolve: "):
			t.Errorf("New(%+v) error %q lacks the package prefix", tt.cfg, err)
		}
	}
}

func TestNewDefaults(t *testing.T) {
	r, err := New(Config{Server: "127.0.0.1:53"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.timeout != DefaultTimeout || r.maxInFlight != DefaultMaxInFlight ||
		r.minTTL != DefaultMinTTL || r.maxTTL != DefaultMaxTTL || r.negativeTTL != DefaultNegativeTTL {
		t.Errorf("defaults not applied: %+v", r)
	}
}

func TestSystemServers(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(conf, []byte("search example\nnameserver 127.0.0.53\nnameserver ::1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.conf")
	if err := os.WriteFile(empty, []byte("# no servers\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		path string
		want []string
		warn bool
	}{
		{conf, []string{"127.0.0.53:53", "[::1]:53"}, false},
		{empty, []string{fallbackServer}, true},
		{filepath.Join(dir, "missing.conf"), []string{fallbackServer}, true},
	}
	for _, tt := range tests {
		var logs bytes.Buffer
		got := systemServers(tt.path, slog.New(slog.NewTextHandler(&logs, nil)))
		if !slices.Equal(got, tt.want) {
			t.Errorf("systemServers(%s) = %q, want %q", tt.path, got, tt.want)
		}
		if warned := strings.Contains(logs.String(), "level=WARN"); warned != tt.warn {
			t.Errorf("systemServers(%s) logged %q; want a warning: %v", tt.path, logs.String(), tt.warn)
		}
	}
}

func TestStatusString(t *testing.T) {
	for s, want := range map[Status]string{OK: "ok", NoName: "noname", Mismatch: "mismatch", TempFail: "tempfail", 9: "Status(9)"} {
		if got := s.String(); got != want {
			t.Errorf("Status(%d).String() = %q, want %q", int(s), got, want)
		}
	}
}

func BenchmarkVerifyCached(b *testing.B) {
	srv := dnstest.Start(b, ptr5, a5)
	r, err := New(Config{Server: srv.Addr}, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	addr := netip.MustParseAddr("127.0.0.5")
	if got := r.Verify(ctx, addr); got.Status != OK {
		b.Fatalf("Verify = %+v", got)
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r.Verify(ctx, addr)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				r.Verify(ctx, addr)
			}
		})
	})
	if n := srv.Queries(); n != 2 {
		b.Errorf("%d queries, want 2", n)
	}
}

// TestSystemResolverSkipsLoopback: with the system's servers, loopback
// clients are not looked up (their names are in /etc/hosts, and the query
// would leave the machine); with a configured server they are.
func TestSystemResolverSkipsLoopback(t *testing.T) {
	srv := dnstest.Start(t, ptr5, a5)
	r := newResolver(t, srv, nil, Config{})
	r.system = true // as if srv had come from resolv.conf
	if got := r.Verify(context.Background(), netip.MustParseAddr("127.0.0.5")); got.Status != NoName {
		t.Fatalf("system resolver, loopback client: %+v, want NoName", got)
	}
	if n := srv.Queries(); n != 0 {
		t.Fatalf("%d queries sent for a loopback client", n)
	}
	r.system = false
	if got := r.Verify(context.Background(), netip.MustParseAddr("127.0.0.5")); got.Status != OK {
		t.Fatalf("configured resolver, loopback client: %+v, want OK", got)
	}
}

// TestName: Name answers from the cache only: nothing before a lookup,
// the confirmed name after it, nothing once it expires or for a name that
// did not confirm; and it asks no server and counts no cache hit.
func TestName(t *testing.T) {
	srv := dnstest.Start(t, ptr5, a5, "6.0.0.127.in-addr.arpa. 60 IN PTR nowhere.example.")
	clk := newClock()
	var hits int
	r := newResolver(t, srv, clk, Config{MinTTL: time.Second, MaxTTL: time.Minute, OnCache: func(hit bool) {
		if hit {
			hits++
		}
	}})
	five, six := netip.MustParseAddr("127.0.0.5"), netip.MustParseAddr("127.0.0.6")
	if n := r.Name(five); n != "" {
		t.Errorf("before a lookup: %q", n)
	}
	if srv.Queries() != 0 {
		t.Errorf("Name asked the server")
	}
	r.Verify(context.Background(), five)
	r.Verify(context.Background(), six)
	if n := r.Name(netip.AddrFrom16(five.As16())); n != "host5.adsl.alicedsl.de" {
		t.Errorf("after a lookup (as a mapped address): %q", n)
	}
	if n := r.Name(six); n != "" {
		t.Errorf("an unconfirmed name: %q", n)
	}
	if hits != 0 {
		t.Errorf("Name counted %d cache hits", hits)
	}
	clk.Advance(time.Minute)
	if n := r.Name(five); n != "" {
		t.Errorf("after the TTL: %q", n)
	}
}
