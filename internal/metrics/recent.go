package metrics

import (
	"cmp"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/mxguard/mxguard/internal/reason"
	"github.com/mxguard/mxguard/internal/stats"
)

// The recent window: bucketSpan-long buckets covering the last hour, so
// that "the last minute" is exact to bucketSpan.
const (
	bucketSpan = 10 * time.Second
	numBuckets = int(time.Hour / bucketSpan)
	// topK is how many clients (and networks) a bucket tracks. A flood
	// from a million addresses costs topK entries, not a million; the
	// heavy hitters, which are what an operator acts on, are kept
	// (Metwally et al.'s space-saving algorithm: a client with more than
	// 1/topK of a bucket's refusals is always among them).
	topK = 64
)

// reasonIndex numbers the vocabulary, for the per-bucket counts.
var reasonIndex = func() map[reason.Reason]int {
	m := make(map[reason.Reason]int)
	for i, r := range reason.All() {
		m[r.Reason] = i
	}
	return m
}()

// Recent is the last hour of refusals, admissions and accepted messages,
// in buckets of ten seconds, with the clients and networks that drew the
// most refusals. It is what `mxguard status` and the console show; its
// memory is bounded whatever the traffic.
type Recent struct {
	now func() time.Time

	mu      sync.Mutex
	buckets [numBuckets]bucket
	limiter string
}

type bucket struct {
	start    int64 // unix time / bucketSpan; 0 = unused
	admitted int64
	accepted int64
	refused  []int64 // by reasonIndex
	ips      topTable
	nets     topTable
}

// NewRecent returns an empty window read with the clock now.
func NewRecent(now func() time.Time) *Recent { return &Recent{now: now} }

// cur returns the bucket of now, emptied if it held an older span.
// r.mu must be held.
func (r *Recent) cur() *bucket {
	span := r.now().UnixNano() / int64(bucketSpan)
	b := &r.buckets[span%int64(numBuckets)]
	if b.start != span {
		refused := b.refused
		if refused == nil {
			refused = make([]int64, len(reasonIndex))
		}
		clear(refused)
		*b = bucket{start: span, refused: refused, ips: b.ips.reset(), nets: b.nets.reset()}
	}
	return b
}

// Refused records a refusal for reason why from client.
func (r *Recent) Refused(why reason.Reason, client netip.Addr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.cur()
	if i, ok := reasonIndex[why]; ok {
		b.refused[i]++
	}
	if client.IsValid() {
		b.ips.add(netip.PrefixFrom(client, client.BitLen()), why)
		b.nets.add(Network(client), why)
	}
}

// Admitted counts a session that got past admission.
func (r *Recent) Admitted() {
	r.mu.Lock()
	r.cur().admitted++
	r.mu.Unlock()
}

// Accepted counts a message accepted.
func (r *Recent) Accepted() {
	r.mu.Lock()
	r.cur().accepted++
	r.mu.Unlock()
}

// SetLimiter records the limit store's state.
func (r *Recent) SetLimiter(backend string) {
	r.mu.Lock()
	r.limiter = backend
	r.mu.Unlock()
}

// Network is the network a client is counted in as an offender: its /24,
// or its /64 for IPv6, as a dial-up pool or one host's allocation.
func Network(a netip.Addr) netip.Prefix { return stats.Network(a) }

// Offender is a client or a network and what it drew.
type Offender struct {
	Prefix netip.Prefix  `json:"prefix"`
	Count  int64         `json:"count"`
	Reason reason.Reason `json:"reason"` // the reason it drew most recently
}

// Summary is the window's figures over some span.
type Summary struct {
	Span     time.Duration           `json:"span"`
	Admitted int64                   `json:"admitted"`
	Accepted int64                   `json:"accepted"`
	Refused  map[reason.Reason]int64 `json:"refused"`
	TopIPs   []Offender              `json:"top_ips"`
	TopNets  []Offender              `json:"top_networks"`
	Limiter  string                  `json:"limiter"`
}

// Summary adds up the buckets of the last span (at most an hour) and
// returns the top n clients and networks by refusals.
func (r *Recent) Summary(span time.Duration, n int) Summary {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := Summary{Span: span, Refused: map[reason.Reason]int64{}, Limiter: r.limiter}
	now := r.now().UnixNano() / int64(bucketSpan)
	first := now - int64(span/bucketSpan) + 1
	ips, nets := map[netip.Prefix]*Offender{}, map[netip.Prefix]*Offender{}
	all := reason.All()
	for span := max(first, now-int64(numBuckets)+1); span <= now; span++ { // oldest first: the latest reason wins
		b := &r.buckets[span%int64(numBuckets)]
		if b.start != span {
			continue
		}
		s.Admitted += b.admitted
		s.Accepted += b.accepted
		for j, c := range b.refused {
			if c > 0 {
				s.Refused[all[j].Reason] += c
			}
		}
		b.ips.sumInto(ips)
		b.nets.sumInto(nets)
	}
	s.TopIPs, s.TopNets = top(ips, n), top(nets, n)
	return s
}

func top(m map[netip.Prefix]*Offender, n int) []Offender {
	out := make([]Offender, 0, len(m))
	for _, o := range m {
		out = append(out, *o)
	}
	slices.SortFunc(out, func(a, b Offender) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		return a.Prefix.Addr().Compare(b.Prefix.Addr())
	})
	if len(out) > n {
		out = out[:n]
	}
	return out
}

// topTable is a space-saving table of the topK keys with the most
// counts: a new key, when the table is full, takes the place (and the
// count) of the least counted one.
type topTable struct {
	entries []topEntry
	index   map[netip.Prefix]int
}

type topEntry struct {
	key    netip.Prefix
	count  int64
	reason reason.Reason
}

func (t topTable) reset() topTable {
	clear(t.index)
	return topTable{entries: t.entries[:0], index: t.index}
}

func (t *topTable) add(key netip.Prefix, why reason.Reason) {
	if t.index == nil {
		t.index = make(map[netip.Prefix]int, topK)
	}
	if i, ok := t.index[key]; ok {
		t.entries[i].count++
		t.entries[i].reason = why
		return
	}
	if len(t.entries) < topK {
		t.index[key] = len(t.entries)
		t.entries = append(t.entries, topEntry{key: key, count: 1, reason: why})
		return
	}
	low := 0
	for i := range t.entries {
		if t.entries[i].count < t.entries[low].count {
			low = i
		}
	}
	delete(t.index, t.entries[low].key)
	t.index[key] = low
	t.entries[low] = topEntry{key: key, count: t.entries[low].count + 1, reason: why}
}

func (t *topTable) sumInto(m map[netip.Prefix]*Offender) {
	for _, e := range t.entries {
		o := m[e.key]
		if o == nil {
			o = &Offender{Prefix: e.key}
			m[e.key] = o
		}
		o.Count += e.count
		o.Reason = e.reason
	}
}
