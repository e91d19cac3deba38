// Package resolve finds the forward-confirmed reverse-DNS name (FCrDNS) of a
// client address, for the host-name keys of the access map and for
// hosts_access(5) patterns.
//
// An MX under a flood sees the same addresses again and again, and its
// accept path must not wait on a slow DNS server. So results are cached
// with their DNS TTL, concurrent lookups of one address share a single
// query, each query has a short timeout, and when too many lookups are
// already running a new one fails at once with [TempFail] instead of
// queueing.
package resolve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/miekg/dns"
	"golang.org/x/sync/singleflight"
)

// Defaults for the zero fields of Config.
const (
	DefaultTimeout     = 2 * time.Second
	DefaultMaxInFlight = 64
	DefaultCacheSize   = 65536
	DefaultMinTTL      = time.Minute
	DefaultMaxTTL      = time.Hour
	DefaultNegativeTTL = 5 * time.Minute
)

const (
	// maxNames bounds the PTR names tried, so that an address with a
	// hostile number of PTR records costs a few queries, not hundreds.
	maxNames = 5
	// tempFailTTL is how long a failed lookup is remembered. It is short
	// so that a DNS hiccup does not mislabel a client for long, and not
	// zero so that a dead server is not asked again for every connection.
	tempFailTTL = 2 * time.Second
	// udpSize is the EDNS0 buffer size advertised (DNS flag day 2020):
	// large enough for most answers, small enough to avoid fragmentation.
	udpSize = 1232
	// resolvConf is where the system's DNS servers are configured.
	resolvConf = "/etc/resolv.conf"
	// maxChain bounds CNAME chasing in an answer.
	maxChain = 8
	// fallbackServer is used when resolvConf cannot be read, as the C
	// library does.
	fallbackServer = "127.0.0.1:53"
)

// Config configures a Resolver. Zero fields take the defaults above.
type Config struct {
	// Server is the host:port of the DNS server to ask (a bare IP address
	// means port 53). Empty means the servers in /etc/resolv.conf.
	Server string
	// Timeout bounds each query; a lookup, which is a PTR query followed by
	// address queries, gets three times as long in all.
	Timeout time.Duration
	// MaxInFlight is the number of lookups that may run at once.
	MaxInFlight int
	// CacheSize is the number of addresses whose result is kept; the
	// least recently used is dropped first.
	CacheSize int
	// MinTTL and MaxTTL clamp the DNS TTL of a cached answer.
	MinTTL, MaxTTL time.Duration
	// NegativeTTL is how long an address without a PTR record is
	// remembered as such.
	NegativeTTL time.Duration
	// Time, if not nil, is the clock used for cache expiry. Tests set it.
	Time func() time.Time
	// OnCache, when set, is told whether each verification was answered
	// from the cache; OnLookup, the duration of each lookup that went to
	// the DNS server (for the metrics).
	OnCache  func(hit bool)
	OnLookup func(time.Duration)
}

// Status says what a lookup found.
type Status int

const (
	// OK: a PTR name resolves back to the address.
	OK Status = iota
	// NoName: the address has no PTR record (tcp_wrappers' UNKNOWN).
	NoName
	// Mismatch: no PTR name resolves back to the address (tcp_wrappers'
	// PARANOID).
	Mismatch
	// TempFail: the answer could not be had now (timeout, SERVFAIL, too
	// many lookups running). Callers should not treat it as NoName.
	TempFail
)

func (s Status) String() string {
	switch s {
	case OK:
		return "ok"
	case NoName:
		return "noname"
	case Mismatch:
		return "mismatch"
	case TempFail:
		return "tempfail"
	}
	return "Status(" + strconv.Itoa(int(s)) + ")"
}

// Result is the outcome of Verify.
type Result struct {
	// Name is the forward-confirmed name, in lower case without the
	// trailing dot; it is set only when Status is OK.
	Name string
	// PTR is the first PTR name, confirmed or not, in the same form; it is
	// for logs only and must not be trusted.
	PTR    string
	Status Status
}

type entry struct {
	res     Result
	expires time.Time
}

// A Resolver verifies client addresses. It is safe for concurrent use.
type Resolver struct {
	servers     []string
	udp, tcp    *dns.Client
	timeout     time.Duration
	maxInFlight int64
	minTTL      time.Duration
	maxTTL      time.Duration
	negativeTTL time.Duration
	now         func() time.Time
	log         *slog.Logger
	// system: the servers came from resolv.conf. Loopback clients are then
	// not looked up: their names live in /etc/hosts, not in DNS, and asking
	// the network about 127.0.0.1 only leaks queries off the machine.
	system bool

	onCache  func(hit bool)
	onLookup func(time.Duration)

	cache     *lru.Cache[netip.Addr, entry]
	flights   singleflight.Group
	inFlight  atomic.Int64
	saturated atomic.Bool
	rejected  atomic.Int64 // lookups refused since saturation began
}

// New returns a Resolver for cfg. It logs to logger (nil: nowhere), among
// other things when the system's resolver configuration cannot be read.
func New(cfg Config, logger *slog.Logger) (*Resolver, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	servers, err := Servers(cfg.Server, logger)
	if err != nil {
		return nil, err
	}
	cache, err := lru.New[netip.Addr, entry](cfg.CacheSize)
	if err != nil {
		return nil, fmt.Errorf("resolve: cache: %w", err)
	}
	now := cfg.Time
	if now == nil {
		now = time.Now
	}
	return &Resolver{
		system:      cfg.Server == "",
		servers:     servers,
		udp:         &dns.Client{Net: "udp", Timeout: cfg.Timeout, UDPSize: udpSize},
		tcp:         &dns.Client{Net: "tcp", Timeout: cfg.Timeout},
		timeout:     cfg.Timeout,
		maxInFlight: int64(cfg.MaxInFlight),
		minTTL:      cfg.MinTTL,
		maxTTL:      cfg.MaxTTL,
		negativeTTL: cfg.NegativeTTL,
		now:         now,
		log:         logger,
		cache:       cache,
		onCache:     cfg.OnCache,
		onLookup:    cfg.OnLookup,
	}, nil
}

func (cfg *Config) setDefaults() error {
	for _, f := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"timeout", &cfg.Timeout, DefaultTimeout},
		{"min TTL", &cfg.MinTTL, DefaultMinTTL},
		{"max TTL", &cfg.MaxTTL, DefaultMaxTTL},
		{"negative TTL", &cfg.NegativeTTL, DefaultNegativeTTL},
	} {
		if *f.v < 0 {
			return fmt.Errorf("resolve: negative %s %v", f.name, *f.v)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	if cfg.MinTTL > cfg.MaxTTL {
		return fmt.Errorf("resolve: min TTL %v is above max TTL %v", cfg.MinTTL, cfg.MaxTTL)
	}
	for _, f := range []struct {
		name string
		v    *int
		def  int
	}{
		{"max in flight", &cfg.MaxInFlight, DefaultMaxInFlight},
		{"cache size", &cfg.CacheSize, DefaultCacheSize},
	} {
		if *f.v < 0 {
			return fmt.Errorf("resolve: negative %s %d", f.name, *f.v)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	return nil
}

// Servers returns the DNS servers to ask, as host:port, for the configured
// resolver address: that one server (a bare IP address means port 53), or
// when it is empty the system's servers from /etc/resolv.conf. Every
// package that talks DNS picks its servers here, so that the resolver
// setting means the same everywhere. A resolv.conf that cannot be used is
// logged to logger and the C library's fallback, 127.0.0.1:53, is used.
func Servers(server string, logger *slog.Logger) ([]string, error) {
	if server == "" {
		return systemServers(resolvConf, logger), nil
	}
	s, err := parseServer(server)
	if err != nil {
		return nil, err
	}
	return []string{s}, nil
}

// parseServer checks a configured server address and adds the default port
// to a bare IP address.
func parseServer(s string) (string, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return net.JoinHostPort(a.String(), "53"), nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("resolve: resolver %q: want host:port", s)
	}
	if n, err := strconv.ParseUint(port, 10, 16); host == "" || err != nil || n == 0 {
		return "", fmt.Errorf("resolve: resolver %q: want host:port", s)
	}
	return s, nil
}

// systemServers returns the name servers in the resolv.conf file at path,
// or the fallback if there are none.
func systemServers(path string, logger *slog.Logger) []string {
	cc, err := dns.ClientConfigFromFile(path)
	if err == nil && len(cc.Servers) == 0 {
		err = errors.New("no nameserver lines")
	}
	if err != nil {
		logger.Warn("resolve: cannot use the system's DNS servers; using "+fallbackServer,
			"file", path, "err", err)
		return []string{fallbackServer}
	}
	servers := make([]string, len(cc.Servers))
	for i, s := range cc.Servers {
		servers[i] = net.JoinHostPort(s, cc.Port)
	}
	return servers
}

// Verify returns the forward-confirmed name of addr. It answers from the
// cache when it can, and otherwise returns when the lookup ends or ctx is
// done, whichever is first; a lookup abandoned by its callers still runs to
// its end and fills the cache. An invalid address has no name.
func (r *Resolver) Verify(ctx context.Context, addr netip.Addr) Result {
	addr = addr.Unmap().WithZone("")
	if !addr.IsValid() || r.system && addr.IsLoopback() {
		return Result{Status: NoName}
	}
	res, ok := r.cached(addr)
	if r.onCache != nil {
		r.onCache(ok)
	}
	if ok {
		return res
	}
	if ctx.Err() != nil {
		return Result{Status: TempFail}
	}
	// The lookup must not die with the caller that started it, since
	// other callers may be waiting for it too.
	lookupCtx := context.WithoutCancel(ctx)
	ch := r.flights.DoChan(addr.String(), func() (any, error) {
		return r.lookupShared(lookupCtx, addr), nil
	})
	select {
	case res := <-ch:
		return res.Val.(Result)
	case <-ctx.Done():
		return Result{Status: TempFail}
	}
}

// Name is the forward-confirmed name of addr if the cache holds it now, ""
// otherwise. It asks no DNS server and leaves the cache as it is (neither
// its order nor its hit counts): it is for showing the clients already
// looked up (the console's reverse-DNS suffixes), not for deciding.
func (r *Resolver) Name(addr netip.Addr) string {
	e, ok := r.cache.Peek(addr.Unmap().WithZone(""))
	if !ok || !r.now().Before(e.expires) || e.res.Status != OK {
		return ""
	}
	return e.res.Name
}

func (r *Resolver) cached(addr netip.Addr) (Result, bool) {
	e, ok := r.cache.Get(addr)
	if !ok || !r.now().Before(e.expires) {
		return Result{}, false
	}
	return e.res, true
}

// lookupShared runs one lookup for all the callers waiting on addr.
func (r *Resolver) lookupShared(ctx context.Context, addr netip.Addr) Result {
	// A flight that ended after our cache miss has already stored its
	// answer; asking again would double the queries under load.
	if res, ok := r.cached(addr); ok {
		return res
	}
	if !r.acquire() {
		return Result{Status: TempFail}
	}
	defer r.inFlight.Add(-1)

	ctx, cancel := context.WithTimeout(ctx, 3*r.timeout)
	defer cancel()
	start := time.Now()
	res, ttl, err := r.lookup(ctx, addr)
	if r.onLookup != nil {
		r.onLookup(time.Since(start))
	}
	if err != nil {
		r.log.Debug("resolve: lookup failed", "addr", addr, "err", err)
	} else {
		r.log.Debug("resolve: lookup", "addr", addr, "status", res.Status, "name", res.Name, "ptr", res.PTR, "ttl", ttl)
	}
	r.cache.Add(addr, entry{res, r.now().Add(ttl)})
	return res
}

// acquire takes a lookup slot if one is free. Saturation is logged when it
// starts and when it ends, not for every refused lookup.
func (r *Resolver) acquire() bool {
	if r.inFlight.Add(1) > r.maxInFlight {
		r.inFlight.Add(-1)
		r.rejected.Add(1)
		if r.saturated.CompareAndSwap(false, true) {
			r.log.Warn("resolve: too many lookups in flight; refusing new ones", "max", r.maxInFlight)
		}
		return false
	}
	if r.saturated.Load() && r.saturated.CompareAndSwap(true, false) {
		r.log.Info("resolve: lookups accepted again", "refused", r.rejected.Swap(0))
	}
	return true
}

// lookup does the PTR query and the forward confirmation. It returns the
// result and how long to cache it; err explains a TempFail.
func (r *Resolver) lookup(ctx context.Context, addr netip.Addr) (Result, time.Duration, error) {
	arpa, err := dns.ReverseAddr(addr.String())
	if err != nil {
		return Result{Status: NoName}, r.negativeTTL, nil
	}
	ptr, err := r.query(ctx, arpa, dns.TypePTR)
	if err != nil {
		return Result{Status: TempFail}, tempFailTTL, err
	}
	names := ptrNames(ptr.rrs)
	if len(names) == 0 {
		return Result{Status: NoName}, r.negativeTTL, nil
	}

	qtype := dns.TypeA
	if addr.Is6() {
		qtype = dns.TypeAAAA
	}
	res := Result{PTR: names[0], Status: Mismatch}
	ttl := ptr.ttl
	var failed error
	for _, name := range names {
		fwd, err := r.query(ctx, dns.Fqdn(name), qtype)
		if err != nil {
			failed = err
			continue
		}
		if containsAddr(fwd.rrs, addr) {
			res.Name, res.Status = name, OK
			return res, r.clamp(min(ptr.ttl, fwd.ttl)), nil
		}
		if len(fwd.rrs) == 0 {
			ttl = min(ttl, r.negativeTTL)
		} else {
			ttl = min(ttl, fwd.ttl)
		}
	}
	// Without every answer, a name we could not check might have been
	// the one that confirms: that is not yet a mismatch.
	if failed != nil {
		return Result{PTR: res.PTR, Status: TempFail}, tempFailTTL, failed
	}
	return res, r.clamp(ttl), nil
}

func (r *Resolver) clamp(ttl time.Duration) time.Duration {
	return min(max(ttl, r.minTTL), r.maxTTL)
}

// ptrNames returns up to maxNames distinct PTR targets, in lower case
// without the trailing dot. The root name is no host name and is skipped.
func ptrNames(rrs []dns.RR) []string {
	var names []string
	for _, rr := range rrs {
		ptr, ok := rr.(*dns.PTR)
		if !ok {
			continue
		}
		name := strings.TrimSuffix(strings.ToLower(ptr.Ptr), ".")
		if name == "" || containsString(names, name) {
			continue
		}
		names = append(names, name)
		if len(names) == maxNames {
			break
		}
	}
	return names
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func containsAddr(rrs []dns.RR, addr netip.Addr) bool {
	for _, rr := range rrs {
		var ip net.IP
		switch rr := rr.(type) {
		case *dns.A:
			ip = rr.A
		case *dns.AAAA:
			ip = rr.AAAA
		default:
			continue
		}
		if a, ok := netip.AddrFromSlice(ip); ok && a.Unmap() == addr {
			return true
		}
	}
	return false
}

// answer is the useful part of a definite reply (NOERROR or NXDOMAIN).
type answer struct {
	rrs []dns.RR      // records of the asked type, after any CNAMEs
	ttl time.Duration // the smallest TTL along the way
}

// query asks the servers in turn until one gives a definite answer.
func (r *Resolver) query(ctx context.Context, name string, qtype uint16) (answer, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.SetEdns0(udpSize, false)
	var err error
	for _, server := range r.servers {
		if ctx.Err() != nil {
			break
		}
		var resp *dns.Msg
		resp, err = r.exchange(ctx, m, server)
		if err != nil {
			continue
		}
		switch resp.Rcode {
		case dns.RcodeSuccess:
			return extract(resp, name, qtype), nil
		case dns.RcodeNameError:
			return answer{}, nil
		}
		err = fmt.Errorf("%s %s from %s: %s", name, dns.TypeToString[qtype], server, dns.RcodeToString[resp.Rcode])
	}
	if err == nil {
		err = ctx.Err()
	}
	return answer{}, err
}

// exchange sends m to server over UDP, and again over TCP if the UDP answer
// was truncated.
func (r *Resolver) exchange(ctx context.Context, m *dns.Msg, server string) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	resp, _, err := r.udp.ExchangeContext(ctx, m, server)
	if err == nil && resp.Truncated {
		resp, _, err = r.tcp.ExchangeContext(ctx, m, server)
	}
	if err != nil {
		return nil, err
	}
	q := m.Question[0]
	if len(resp.Question) != 1 || resp.Question[0].Qtype != q.Qtype || !strings.EqualFold(resp.Question[0].Name, q.Name) {
		return nil, fmt.Errorf("%s %s from %s: reply for another question", q.Name, dns.TypeToString[q.Qtype], server)
	}
	return resp, nil
}

// extract returns the records of type qtype for name in the answer section
// of resp, following CNAMEs (RFC 2317 delegates reverse zones that way).
func extract(resp *dns.Msg, name string, qtype uint16) answer {
	var a answer
	ttl := uint32(1<<32 - 1)
	for range maxChain {
		var next string
		for _, rr := range resp.Answer {
			h := rr.Header()
			if !strings.EqualFold(h.Name, name) {
				continue
			}
			if h.Rrtype == qtype {
				a.rrs = append(a.rrs, rr)
				ttl = min(ttl, h.Ttl)
			}
			if c, ok := rr.(*dns.CNAME); ok && next == "" {
				next = c.Target
				ttl = min(ttl, h.Ttl)
			}
		}
		if len(a.rrs) > 0 || next == "" {
			break
		}
		name = next
	}
	if len(a.rrs) > 0 {
		a.ttl = time.Duration(ttl) * time.Second
	}
	return a
}
