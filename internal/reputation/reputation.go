// Package reputation keeps a score for each client from what it does, and
// bans the worst for a while. A refusal costs points by its reason (talking
// before the greeting, guessing recipients, a protocol error, a DNS
// blocklist's weight, no confirmed reverse name); replies to a client below
// the tarpit threshold are slowed in proportion, and a client below the ban
// threshold is refused at connect until its ban expires or an operator
// trusts it. A score drifts back to neutral when the client behaves (or is
// silent): each point is forgiven after forgive_after.
//
// Botnets reconnect from the same addresses, so a score outlives the
// connection; it is kept in memory for a bounded number of clients (the
// least recently seen are forgotten first), and, in a fleet, bans are
// shared through Redis (the caller's job).
package reputation

import (
	"cmp"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/mxguard/mxguard/internal/netmap"
	"github.com/mxguard/mxguard/internal/reason"
)

// Config is the scoring policy. Scores are negative for bad behaviour; 0
// is neutral. A zero threshold turns its measure off.
type Config struct {
	Points       map[reason.Reason]int // the cost of a refusal, by reason (negative)
	TarpitBelow  int                   // replies are delayed below this score
	TarpitStep   time.Duration         // the delay for each point below TarpitBelow
	TarpitMax    time.Duration         // the longest delay
	BanBelow     int                   // a client at or below this is banned
	BanTime      time.Duration         // for this long
	ForgiveAfter time.Duration         // one point is forgiven after this long without trouble
	MaxClients   int                   // scores remembered at once
}

// Ban is a refusal at connect for a network, until Expires.
type Ban struct {
	Prefix  netip.Prefix  `json:"prefix"`
	Reason  reason.Reason `json:"reason"`         // what brought it about
	By      string        `json:"by"`             // "score", or the operator's command
	Node    string        `json:"node,omitempty"` // the node that set it, in a fleet
	Created time.Time     `json:"created"`        // when
	Expires time.Time     `json:"expires"`
	Hits    int64         `json:"hits"` // connections refused by it
}

// Book is the scores and bans of one node. It is safe for concurrent use.
type Book struct {
	cfg     Config
	now     func() time.Time
	trusted func(netip.Addr) bool

	mu     sync.Mutex
	scores *lru.Cache[netip.Addr, *score]
	// bans by network, so that the check of each connection is a longest
	// match (a few hash probes), not a scan: a flood's clients are banned
	// by the thousand.
	bans  netmap.Map[*Ban]
	nbans atomic.Int64 // bans.Len(), read without the lock
	onBan func(Ban)
}

// setBan and dropBan keep nbans in step with bans. b.mu must be held.
func (b *Book) setBan(ban *Ban) {
	b.bans.Set(ban.Prefix, ban)
	b.nbans.Store(int64(b.bans.Len()))
}

func (b *Book) dropBan(p netip.Prefix) bool {
	if !b.bans.Delete(p) {
		return false
	}
	b.nbans.Add(-1)
	return true
}

type score struct {
	points int       // from refusals: added up, forgiven with time
	last   time.Time // of the last change of points, for forgiving
	static int       // what the client is, as of its last connection
	why    reason.Reason
}

// New returns an empty Book. trusted (never scored, delayed or banned) is
// asked each time, so that `mxguard trust` applies at once; onBan, when
// set, is told each ban the scores make (for the log and the fleet).
func New(cfg Config, now func() time.Time, trusted func(netip.Addr) bool, onBan func(Ban)) (*Book, error) {
	if now == nil {
		now = time.Now
	}
	if trusted == nil {
		trusted = func(netip.Addr) bool { return false }
	}
	c, err := lru.New[netip.Addr, *score](max(cfg.MaxClients, 1))
	if err != nil {
		return nil, err
	}
	return &Book{cfg: cfg, now: now, trusted: trusted, scores: c, onBan: onBan}, nil
}

// current returns s's score after forgiving the time since its last
// change: its points plus its standing part. b.mu must be held.
func (b *Book) current(s *score, now time.Time) int {
	if s.points < 0 && b.cfg.ForgiveAfter > 0 {
		if forgiven := int(now.Sub(s.last) / b.cfg.ForgiveAfter); forgiven > 0 {
			s.points = min(s.points+forgiven, 0)
			s.last = s.last.Add(time.Duration(forgiven) * b.cfg.ForgiveAfter)
		}
	}
	return s.points + s.static
}

// SetStatic sets the standing part of client's score (the sum of its DNS
// blocklist weights and its reverse-DNS penalty, as of this connection),
// and returns the score and the ban it brought about, if any.
func (b *Book) SetStatic(client netip.Addr, points int, why reason.Reason) (int, *Ban) {
	return b.change(client, why, func(s *score) { s.static = points }, points != 0)
}

// Penalize charges client for a refusal for why (the reason's points), or
// points given directly (a DNSBL weight: pass why and points). It returns
// the client's new score and the ban it brought about, if any.
func (b *Book) Penalize(client netip.Addr, why reason.Reason, points int) (int, *Ban) {
	client = client.Unmap()
	if points == 0 {
		points = b.cfg.Points[why]
	}
	return b.change(client, why, func(s *score) { s.points += points; s.last = b.now() }, points != 0)
}

// change applies f to client's score (made when need is set and there is
// none), and bans the client when the score falls to BanBelow.
func (b *Book) change(client netip.Addr, why reason.Reason, f func(*score), need bool) (int, *Ban) {
	client = client.Unmap()
	if !client.IsValid() || b.trusted(client) {
		return 0, nil
	}
	now := b.now()
	b.mu.Lock()
	s, ok := b.scores.Get(client)
	if !ok {
		if !need {
			b.mu.Unlock()
			return 0, nil
		}
		s = &score{last: now}
		b.scores.Add(client, s)
	}
	b.current(s, now) // forgive first: the new points count in full
	f(s)
	n := b.current(s, now)
	if why != "" {
		s.why = why
	}
	var banned *Ban
	if b.cfg.BanBelow != 0 && n <= b.cfg.BanBelow {
		p := netip.PrefixFrom(client, client.BitLen())
		if _, already := b.bans.Get(p); !already {
			banned = &Ban{Prefix: p, Reason: s.why, By: "score", Created: now, Expires: now.Add(b.cfg.BanTime)}
			b.setBan(banned)
		}
	}
	b.mu.Unlock()
	if banned != nil && b.onBan != nil {
		b.onBan(*banned)
	}
	return n, banned
}

// Score is client's score now (0 for one never scored).
func (b *Book) Score(client netip.Addr) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	s, ok := b.scores.Peek(client.Unmap())
	if !ok {
		return 0
	}
	return b.current(s, b.now())
}

// Delay is how long to hold a reply to client: TarpitStep for each point
// below TarpitBelow, at most TarpitMax; 0 for a client above it, or
// trusted.
func (b *Book) Delay(client netip.Addr) time.Duration {
	if b.cfg.TarpitBelow == 0 || b.cfg.TarpitStep <= 0 {
		return 0
	}
	n := b.Score(client)
	if n >= b.cfg.TarpitBelow || b.trusted(client.Unmap()) {
		return 0
	}
	return min(time.Duration(b.cfg.TarpitBelow-n)*b.cfg.TarpitStep, b.cfg.TarpitMax)
}

// maxNested bounds the networks that can hold one address: one of each
// length, 0 to 128.
const maxNested = 129

// Banned returns the ban in force on client, counting the hit: of the
// bans on networks that hold it, the narrowest's.
func (b *Book) Banned(client netip.Addr) (Ban, bool) {
	client = client.Unmap()
	if b.nbans.Load() == 0 || b.trusted(client) { // the common case, without the lock; trust wins
		return Ban{}, false
	}
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	// An expired ban found is dropped and the lookup made again, which
	// finds a wider one or none: at most one per network holding client.
	for range maxNested + 1 {
		ban, ok := b.bans.Lookup(client)
		if !ok {
			return Ban{}, false
		}
		if !now.Before(ban.Expires) {
			b.dropBan(ban.Prefix)
			continue
		}
		ban.Hits++
		return *ban, true
	}
	return Ban{}, false
}

// Add bans p for ttl (an operator's or another node's ban). A ban already
// on p is replaced.
func (b *Book) Add(ban Ban) {
	ban.Prefix = ban.Prefix.Masked()
	b.mu.Lock()
	b.setBan(&ban)
	b.mu.Unlock()
}

// Drop ends the ban on exactly p (one the fleet no longer has), keeping
// the scores, and reports whether there was one.
func (b *Book) Drop(p netip.Prefix) bool {
	p = p.Masked()
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dropBan(p)
}

// Lift ends every ban within p (`mxguard trust`, `mxguard unban`) and
// forgets the scores of its clients, and returns how many bans it ended.
func (b *Book) Lift(p netip.Prefix) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for q := range b.bans.All() {
		if p.Overlaps(q) && p.Bits() <= q.Bits() {
			b.dropBan(q)
			n++
		}
	}
	for _, a := range b.scores.Keys() {
		if p.Contains(a) {
			b.scores.Remove(a)
		}
	}
	return n
}

// Bans lists the bans in force, soonest to expire first.
func (b *Book) Bans() []Ban {
	now := b.now()
	b.mu.Lock()
	out := make([]Ban, 0, b.bans.Len())
	for p, ban := range b.bans.All() {
		if !now.Before(ban.Expires) {
			b.dropBan(p)
			continue
		}
		out = append(out, *ban)
	}
	b.mu.Unlock()
	slices.SortFunc(out, func(x, y Ban) int { return cmp.Compare(x.Expires.UnixNano(), y.Expires.UnixNano()) })
	return out
}

// Points is the cost of each refusal reason, from the configured costs of
// the kinds of bad behaviour: talking before the greeting, a protocol
// violation, and a refused recipient. The reasons not named cost nothing:
// a limit or a DNS failure is no fault of the client's.
func Points(pregreet, protocolError, unknownUser int) map[reason.Reason]int {
	return map[reason.Reason]int{
		reason.Pregreet:          pregreet,
		reason.Pipelining:        protocolError,
		reason.NonSMTP:           protocolError,
		reason.BareLF:            protocolError,
		reason.BareCR:            protocolError,
		reason.NUL:               protocolError,
		reason.NonASCII:          protocolError,
		reason.LineTooLong:       protocolError,
		reason.TooManyErrors:     protocolError,
		reason.StartTLSInjection: protocolError,
		reason.UnknownUser:       unknownUser,
		reason.BadMailbox:        unknownUser,
		reason.RelayDenied:       unknownUser,
	}
}
