// Package dnsbl scores a client address by DNS block and allow lists, the
// way Postfix's postscreen does (postscreen_dnsbl_sites and friends).
//
// Each list is asked for an A record under its zone, the client's address
// reversed before it: its octets for IPv4, its 32 nibbles for IPv6. An entry
// of the sites list counts its weight when one of the answers matches its
// filter, once however many match; entries of one domain share its one
// query, and their weights add up. An allow list has a negative weight.
//
// The queries start when the client connects ([Checker.Start]) so that they
// overlap the greeting pause, and the score is collected at its end
// ([Pending.Wait]). A flood must not become a flood of DNS queries, nor
// wait on them, so:
//   - answers are cached, positive and negative, for their DNS TTL clamped
//     to [MinTTL, MaxTTL] (postscreen_dnsbl_min_ttl, _max_ttl), behind
//     internal/cache's interface so that a fleet can share them;
//   - callers that ask about the same address at once share its queries;
//   - at most MaxInFlight queries run at once, shared equally by the lists
//     so that a dead one cannot starve the others; a query that finds no
//     free slot is not sent, and its list counts as not listing;
//   - a list that times out or fails counts as not listing; that is not
//     cached, and it is logged when it starts and when it ends, not for
//     every query.
package dnsbl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/mxguard/mxguard/internal/cache"
	"github.com/mxguard/mxguard/internal/resolve"
)

// Defaults for the zero fields of Config.
const (
	DefaultTimeout     = 5 * time.Second
	DefaultMaxInFlight = 256
	DefaultCacheSize   = 65536
	DefaultMinTTL      = time.Minute // postscreen_dnsbl_min_ttl
	DefaultMaxTTL      = time.Hour   // postscreen_dnsbl_max_ttl
)

const (
	// udpSize is the EDNS0 buffer advertised (DNS flag day 2020).
	udpSize = 1232
	// maxAnswers bounds the addresses kept from one answer, so that a
	// hostile list cannot make a cache entry large. Lists answer with one
	// to a few.
	maxAnswers = 16
	// maxChain bounds CNAME chasing in an answer.
	maxChain = 8
	// logInterval is the least time between two log lines about one
	// list's health, so that a list that fails every other query is not
	// logged twice a query.
	logInterval = 10 * time.Second
	// keyPrefix namespaces the cache keys, which may be shared with other
	// users of a fleet's cache.
	keyPrefix = "dnsbl:"
)

// Config configures a Checker. Zero fields take the defaults above.
type Config struct {
	// Sites are the lists to ask, as from ParseSites.
	Sites []Site
	// Server is the DNS server as host:port (a bare IP address means port
	// 53); empty means the system's, from /etc/resolv.conf. It is
	// mxguard's resolver setting, read by resolve.Servers.
	Server string
	// Timeout bounds each DNS query.
	Timeout time.Duration
	// MaxInFlight bounds the DNS queries running at once; each distinct
	// domain gets an equal share, so it must be at least their number.
	MaxInFlight int
	// Cache keeps the answers. Nil means a Memory of CacheSize entries
	// keeping time by Time, which Start reads itself; any other cache is
	// read by the lookups in their goroutines, as a remote one (Redis) may
	// be slow, and Start must not wait.
	Cache     cache.Cache
	CacheSize int
	// MinTTL and MaxTTL clamp the DNS TTL of a cached answer.
	MinTTL, MaxTTL time.Duration
	// Time is the clock for the default cache and for spacing log lines;
	// time.Now when nil. Tests set it.
	Time func() time.Time
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
	} {
		if *f.v < 0 {
			return fmt.Errorf("dnsbl: negative %s %v", f.name, *f.v)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	if cfg.MinTTL > cfg.MaxTTL {
		return fmt.Errorf("dnsbl: min TTL %v is above max TTL %v", cfg.MinTTL, cfg.MaxTTL)
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
			return fmt.Errorf("dnsbl: negative %s %d", f.name, *f.v)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	if cfg.Time == nil {
		cfg.Time = time.Now
	}
	return nil
}

// Outcome is what one site said about one address.
type Outcome int

const (
	// NotListed: the list does not list the address, or lists it with
	// answers that the site's filter does not select.
	NotListed Outcome = iota
	// Listed: an answer matched the site's filter; its weight counts.
	Listed
	// Timeout: the list did not answer in time, or the caller stopped
	// waiting first. It counts as NotListed.
	Timeout
	// Error: the query failed (SERVFAIL, REFUSED, a network error), or the
	// list answered, without a filter to select from its answers, only
	// with addresses outside 127.0.0.0/8 or in 127.255.255.0/24: a list
	// refusing the query, or a resolver rewriting NXDOMAIN. It counts as
	// NotListed.
	Error
	// Busy: the query was not sent, as too many were in flight. It counts
	// as NotListed.
	Busy
	// NumOutcomes is the number of outcomes, for arrays indexed by them.
	NumOutcomes
)

func (o Outcome) String() string {
	switch o {
	case NotListed:
		return "not_listed"
	case Listed:
		return "listed"
	case Timeout:
		return "timeout"
	case Error:
		return "error"
	case Busy:
		return "busy"
	}
	return "Outcome(" + strconv.Itoa(int(o)) + ")"
}

// SiteResult is one site's part of a Result.
type SiteResult struct {
	// Site is the entry, shared with the Checker: read it, do not change it.
	Site    *Site
	Outcome Outcome
	// Answer is the list's answer that matched when Listed, and the
	// answer that was not understood for Error; otherwise the zero Addr.
	Answer netip.Addr
	// Err says why for Timeout and Error, when a query failed.
	Err error
}

// Result is the score of one address.
type Result struct {
	// Score is the sum of the weights of the sites that list the address.
	Score int
	// Sites has one entry per configured site, in their order.
	Sites []SiteResult
}

// Top returns the listing site of the largest weight, which postscreen
// names in its reply, and false if no site lists the address.
func (r Result) Top() (SiteResult, bool) {
	var top SiteResult
	found := false
	for _, s := range r.Sites {
		if s.Outcome == Listed && (!found || s.Site.Weight > top.Site.Weight) {
			top, found = s, true
		}
	}
	return top, found
}

// A Checker scores addresses. It is safe for concurrent use.
type Checker struct {
	sites   []Site
	domains []*domain
	servers []string
	udp     *dns.Client
	tcp     *dns.Client
	timeout time.Duration
	minTTL  time.Duration
	maxTTL  time.Duration
	cache   cache.Cache
	local   *cache.Memory // the cache, when it is the Checker's own
	now     func() time.Time
	log     *slog.Logger

	// ctx ends the queries still running at Close.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	flights map[string]*flight // by cache key
	closed  bool

	queries   atomic.Uint64
	cacheHits atomic.Uint64
	busy      atomic.Uint64
	counts    [][NumOutcomes]atomic.Uint64 // per site
}

// domain is one list's zone, asked once for all the sites that name it.
type domain struct {
	name  string // "zen.spamhaus.org", for the log
	fqdn  string // "zen.spamhaus.org."
	sites []int  // indexes into Checker.sites

	limit     int64 // its share of MaxInFlight
	inFlight  atomic.Int64
	saturated atomic.Bool
	refused   atomic.Int64 // queries not sent since saturation began

	mu      sync.Mutex
	health  health // after the last query
	logged  health // as last logged
	lastLog time.Time
	changes int // health changes since the last log line
}

// health is a list's state as its last query found it.
type health int

const (
	healthy   health = iota
	timingOut        // the query timed out
	failing          // the query failed
	refusing         // it answered with addresses outside the ones that list
)

// New returns a Checker for cfg. It logs to logger (nil: nowhere) when a
// list's health changes and when queries are refused for lack of slots.
func New(cfg Config, logger *slog.Logger) (*Checker, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	servers, err := resolve.Servers(cfg.Server, logger)
	if err != nil {
		return nil, fmt.Errorf("dnsbl: %w", err)
	}
	c := &Checker{
		sites:   slices.Clone(cfg.Sites),
		servers: servers,
		udp:     &dns.Client{Net: "udp", Timeout: cfg.Timeout, UDPSize: udpSize},
		tcp:     &dns.Client{Net: "tcp", Timeout: cfg.Timeout},
		timeout: cfg.Timeout,
		minTTL:  cfg.MinTTL,
		maxTTL:  cfg.MaxTTL,
		cache:   cfg.Cache,
		now:     cfg.Time,
		log:     logger,
		flights: make(map[string]*flight),
		counts:  make([][NumOutcomes]atomic.Uint64, len(cfg.Sites)),
	}
	byName := make(map[string]*domain)
	for i, s := range c.sites {
		if err := checkDomain(s.Domain); err != nil || s.Domain != strings.ToLower(s.Domain) {
			return nil, fmt.Errorf("dnsbl: site %q: domain not as ParseSites returns it", s.Domain)
		}
		d := byName[s.Domain]
		if d == nil {
			d = &domain{name: s.Domain, fqdn: s.Domain + "."}
			byName[s.Domain] = d
			c.domains = append(c.domains, d)
		}
		d.sites = append(d.sites, i)
	}
	if n := len(c.domains); n > 0 {
		if cfg.MaxInFlight < n {
			return nil, fmt.Errorf("dnsbl: max in flight %d is below the number of lists, %d: each needs one",
				cfg.MaxInFlight, n)
		}
		for _, d := range c.domains {
			d.limit = int64(cfg.MaxInFlight / n)
		}
	}
	if c.cache == nil {
		m, err := cache.NewMemory(cfg.CacheSize, cfg.Time)
		if err != nil {
			return nil, fmt.Errorf("dnsbl: %w", err)
		}
		c.cache, c.local = m, m
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// Sites returns the sites the Checker asks, in order. The slice is the
// Checker's own: do not change it.
func (c *Checker) Sites() []Site { return c.sites }

// Close stops the queries still running, waits for them to end, and makes
// later ones fail at once.
func (c *Checker) Close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
}

// answer is what asking one list about one address gave.
type answer struct {
	kind  answerKind
	addrs string // answered: the A records, comma-separated; empty when none
	err   error  // why, for the other kinds
}

type answerKind int

const (
	answered answerKind = iota
	timedOut
	failed
	notAsked // no query slot was free
)

// flight is the lookup of one cache key, shared by the callers that want
// it while it runs. ans is written before done is closed.
type flight struct {
	key  string
	done chan struct{}
	ans  answer
}

// Pending is the score of one address on its way. Its queries run whether
// or not Wait is called.
type Pending struct {
	c       *Checker
	lists   []pendingList // per domain
	counted atomic.Bool
}

// pendingList is one list's answer: at hand when f is nil, else on its way.
type pendingList struct {
	f   *flight
	ans answer
}

// errInvalid is the answer for an address that is not one.
var errInvalid = errors.New("not an IP address")

// Start starts the lookups of addr at every list, all at once, and returns
// without waiting for them. An IPv4-mapped IPv6 address is looked up as the
// IPv4 address it maps.
func (c *Checker) Start(ctx context.Context, addr netip.Addr) *Pending {
	p := &Pending{c: c, lists: make([]pendingList, len(c.domains))}
	addr = addr.Unmap().WithZone("")
	if !addr.IsValid() {
		for i := range p.lists {
			p.lists[i].ans = answer{kind: failed, err: errInvalid}
		}
		return p
	}
	if err := ctx.Err(); err != nil {
		for i := range p.lists {
			p.lists[i].ans = answer{kind: timedOut, err: err}
		}
		return p
	}
	var buf [ipv6Prefix]byte
	rev := reverse(buf[:0], addr)
	for i, d := range c.domains {
		var key strings.Builder
		key.Grow(len(keyPrefix) + len(rev) + len(d.fqdn))
		key.WriteString(keyPrefix)
		key.Write(rev)
		key.WriteString(d.fqdn)
		k := key.String()
		if c.local != nil {
			if v, ok := c.local.Get(ctx, k); ok && validValue(v) {
				c.cacheHits.Add(1)
				p.lists[i].ans = answer{kind: answered, addrs: v}
				continue
			}
		}
		p.lists[i].f = c.lookup(k, d)
	}
	return p
}

const hexDigits = "0123456789abcdef"

// reverse appends the DNSBL form of addr, with a trailing dot: its octets
// reversed for IPv4, its nibbles reversed for IPv6.
func reverse(b []byte, addr netip.Addr) []byte {
	if addr.Is4() {
		a := addr.As4()
		for i := 3; i >= 0; i-- {
			b = strconv.AppendUint(b, uint64(a[i]), 10)
			b = append(b, '.')
		}
		return b
	}
	a := addr.As16()
	for i := 15; i >= 0; i-- {
		b = append(b, hexDigits[a[i]&0xf], '.', hexDigits[a[i]>>4], '.')
	}
	return b
}

// lookup joins the flight for key, or starts one.
func (c *Checker) lookup(key string, d *domain) *flight {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f, ok := c.flights[key]; ok {
		return f
	}
	if c.closed {
		f := &flight{done: make(chan struct{}), ans: answer{kind: failed, err: errors.New("checker closed")}}
		close(f.done)
		return f
	}
	f := &flight{key: key, done: make(chan struct{})}
	c.flights[key] = f
	c.wg.Add(1)
	go c.fly(f, d)
	return f
}

func (c *Checker) fly(f *flight, d *domain) {
	defer c.wg.Done()
	f.ans = c.answer(f.key, d)
	c.mu.Lock()
	delete(c.flights, f.key)
	c.mu.Unlock()
	close(f.done)
}

// answer returns the list's answer for the cache key from the cache, or
// from the DNS if a query slot is free.
func (c *Checker) answer(key string, d *domain) answer {
	if v, ok := c.cache.Get(c.ctx, key); ok && validValue(v) {
		c.cacheHits.Add(1)
		return answer{kind: answered, addrs: v}
	}
	if !d.acquire(c.log) {
		c.busy.Add(1)
		return answer{kind: notAsked, err: errBusy}
	}
	defer d.inFlight.Add(-1)
	c.queries.Add(1)
	name := key[len(keyPrefix):]
	addrs, ttl, err := c.query(c.ctx, name)
	if err != nil {
		if isTimeout(err) {
			d.observe(c, timingOut, err, netip.Addr{})
			return answer{kind: timedOut, err: err}
		}
		d.observe(c, failing, err, netip.Addr{})
		return answer{kind: failed, err: err}
	}
	h, odd := healthy, strangeAnswer(addrs)
	if odd.IsValid() {
		h = refusing
	}
	d.observe(c, h, nil, odd)
	c.cache.Set(c.ctx, key, addrs, min(max(ttl, c.minTTL), c.maxTTL))
	return answer{kind: answered, addrs: addrs}
}

// errBusy marks an answer that was not asked for: no query slot was free.
var errBusy = errors.New("too many DNS queries in flight")

// acquire takes a query slot if one of the domain's is free. Saturation is
// logged when it begins, and when it has ended: when a query finds the
// slots no more than half taken, so that a list at its limit does not log
// every query.
func (d *domain) acquire(log *slog.Logger) bool {
	n := d.inFlight.Add(1)
	if n > d.limit {
		d.inFlight.Add(-1)
		d.refused.Add(1)
		if d.saturated.CompareAndSwap(false, true) {
			log.Warn("dnsbl: too many queries in flight; lists not asked count as not listing",
				"list", d.name, "max", d.limit)
		}
		return false
	}
	if d.saturated.Load() && n <= max(1, d.limit/2) && d.saturated.CompareAndSwap(true, false) {
		log.Info("dnsbl: queries asked again", "list", d.name, "not_asked", d.refused.Swap(0))
	}
	return true
}

// observe records the health a query found, and logs a change, no sooner
// than logInterval after the last line about the list.
func (d *domain) observe(c *Checker, h health, err error, odd netip.Addr) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if h != d.health {
		d.health = h
		d.changes++
	}
	if d.health == d.logged {
		return
	}
	now := c.now()
	if !d.lastLog.IsZero() && now.Sub(d.lastLog) < logInterval {
		return
	}
	attrs := []any{"list", d.name}
	if d.changes > 1 {
		attrs = append(attrs, "changes", d.changes)
	}
	switch h {
	case healthy:
		c.log.Info("dnsbl: list answering again", attrs...)
	case timingOut:
		c.log.Warn("dnsbl: list not answering; counted as not listing", append(attrs, "err", err)...)
	case failing:
		c.log.Warn("dnsbl: list failing; counted as not listing", append(attrs, "err", err)...)
	case refusing:
		c.log.Warn("dnsbl: list answering with an address that does not list; counted as not listing unless a filter selects it",
			append(attrs, "answer", odd)...)
	}
	d.logged, d.lastLog, d.changes = h, now, 0
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// listing reports whether a is an answer that lists when no filter says
// which do: one in 127.0.0.0/8 but not in 127.255.255.0/24.
func listing(a netip.Addr) bool {
	if !a.Is4() {
		return false
	}
	b := a.As4()
	return b[0] == 127 && !(b[1] == 255 && b[2] == 255)
}

// strangeAnswer returns the first address of an answer that does not list
// by default, or the zero Addr.
func strangeAnswer(addrs string) netip.Addr {
	for rest := addrs; rest != ""; {
		var s string
		s, rest, _ = strings.Cut(rest, ",")
		if a, err := netip.ParseAddr(s); err == nil && !listing(a) {
			return a
		}
	}
	return netip.Addr{}
}

// validValue reports whether v is an answer as answer stores them, so that
// a cache shared with other programs or versions cannot feed us garbage.
func validValue(v string) bool {
	n := 0
	for rest := v; rest != ""; n++ {
		var s string
		s, rest, _ = strings.Cut(rest, ",")
		if a, err := netip.ParseAddr(s); err != nil || !a.Is4() || n == maxAnswers {
			return false
		}
	}
	return !strings.HasSuffix(v, ",")
}

// Wait waits for the answers of every list, or for ctx to be done, and
// returns the score. A list that has not answered by then counts as not
// listing (Timeout); its query goes on and fills the cache for the next
// time. Call it once: the first call counts the outcomes in Stats.
func (p *Pending) Wait(ctx context.Context) Result {
	c := p.c
	res := Result{Sites: make([]SiteResult, len(c.sites))}
	for i, l := range p.lists {
		a := l.ans
		if f := l.f; f != nil {
			select {
			case <-f.done:
				a = f.ans
			default:
				select {
				case <-f.done:
					a = f.ans
				case <-ctx.Done():
					a = answer{kind: timedOut, err: ctx.Err()}
				}
			}
		}
		for _, s := range c.domains[i].sites {
			r := evaluate(&c.sites[s], a)
			if r.Outcome == Listed {
				res.Score += r.Site.Weight
			}
			res.Sites[s] = r
		}
	}
	if p.counted.CompareAndSwap(false, true) {
		for i, r := range res.Sites {
			c.counts[i][r.Outcome].Add(1)
		}
	}
	return res
}

// evaluate applies a site's filter to its list's answer. Like postscreen,
// it counts a site once when any of the answers matches.
func evaluate(s *Site, a answer) SiteResult {
	r := SiteResult{Site: s, Err: a.err}
	switch a.kind {
	case notAsked:
		r.Outcome = Busy
		return r
	case timedOut:
		r.Outcome = Timeout
		return r
	case failed:
		r.Outcome = Error
		return r
	}
	filtered := !s.Filter.IsZero()
	for rest := a.addrs; rest != ""; {
		var text string
		text, rest, _ = strings.Cut(rest, ",")
		addr, err := netip.ParseAddr(text)
		if err != nil {
			continue // not stored by answer; validValue keeps them out
		}
		if filtered && s.Filter.Match(addr) || !filtered && listing(addr) {
			r.Outcome, r.Answer = Listed, addr
			return r
		}
		if !filtered && !r.Answer.IsValid() {
			r.Answer = addr
		}
	}
	if r.Answer.IsValid() {
		r.Outcome = Error
		r.Err = fmt.Errorf("answer %s does not list (outside 127.0.0.0/8, or a list's refusal in 127.255.255.0/24)", r.Answer)
	}
	return r
}

// SiteStats counts the outcomes of one site, one per Wait.
type SiteStats struct {
	Site     Site
	Outcomes [NumOutcomes]uint64 // indexed by Outcome
}

// Stats are a Checker's counters since it was made.
type Stats struct {
	Sites []SiteStats
	// Queries counts the DNS lookups sent (one per list and address,
	// however many servers they took); CacheHits, the answers found in
	// the cache; Busy, the lookups not sent for lack of a slot.
	Queries, CacheHits, Busy uint64
}

// Stats returns the counters, for the metrics.
func (c *Checker) Stats() Stats {
	st := Stats{
		Sites:     make([]SiteStats, len(c.sites)),
		Queries:   c.queries.Load(),
		CacheHits: c.cacheHits.Load(),
		Busy:      c.busy.Load(),
	}
	for i := range c.sites {
		st.Sites[i].Site = c.sites[i]
		for o := range st.Sites[i].Outcomes {
			st.Sites[i].Outcomes[o] = c.counts[i][o].Load()
		}
	}
	return st
}
