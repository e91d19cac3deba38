package metrics

import (
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

	last int64 // the latest bucket it drew a refusal in, for the names' reasons
}

// Summary is the window's figures over some span.
type Summary struct {
	Span     time.Duration           `json:"span"`
	Admitted int64                   `json:"admitted"`
	Accepted int64                   `json:"accepted"`
	Refused  map[reason.Reason]int64 `json:"refused"`
	TopIPs   []Offender              `json:"top_ips"`
	TopNets  []Offender              `json:"top_networks"`
	// TopNames are the reverse-DNS suffixes of the top clients, when the
	// summary was asked for with their names (SummaryNamed).
	TopNames []NameOffender `json:"top_names,omitempty"`
	Limiter  string         `json:"limiter"`
}

// Summary adds up the buckets of the last span (at most an hour) and
// returns the top n clients and networks by refusals.
func (r *Recent) Summary(span time.Duration, n int) Summary {
	s, _ := r.summary(span, n)
	return s
}

// SummaryNamed is Summary with the top n reverse-DNS suffixes (NameSuffix)
// of the clients the window holds, named by name ("" for a client without
// a known name). The names are asked for here, when the figures are read,
// so that counting a refusal costs nothing more for them; a client the
// window's bounded tables did not keep, or whose name name no longer
// knows, is not counted in its suffix.
func (r *Recent) SummaryNamed(span time.Duration, n int, name func(netip.Addr) string) Summary {
	s, ips := r.summary(span, n)
	if name != nil {
		s.TopNames = topNames(ips, n, name)
	}
	return s
}

// summary is Summary, and every client of the span with its count.
func (r *Recent) summary(span time.Duration, n int) (Summary, map[netip.Prefix]*Offender) {
	s, ipsRaw, netsRaw := r.collect(span)
	ips, nets := sumEntries(ipsRaw), sumEntries(netsRaw)
	s.TopIPs, s.TopNets = top(ips, n), top(nets, n)
	return s, ips
}

// collect takes the counts of the last span and copies the entries of its
// tables, oldest bucket first. It is all that is done under the lock,
// which every refusal takes: adding the entries up and ranking them is
// left to the caller, so that a reader of an hour of a flood holds
// refusals up for a copy only.
func (r *Recent) collect(span time.Duration) (s Summary, ipsRaw, netsRaw []spanEntry) {
	s = Summary{Span: span, Refused: map[reason.Reason]int64{}}
	all := reason.All()
	r.mu.Lock()
	s.Limiter = r.limiter
	now := r.now().UnixNano() / int64(bucketSpan)
	first := max(now-int64(span/bucketSpan)+1, now-int64(numBuckets)+1)
	var nIPs, nNets int
	for span := first; span <= now; span++ {
		if b := &r.buckets[span%int64(numBuckets)]; b.start == span {
			nIPs, nNets = nIPs+len(b.ips.entries), nNets+len(b.nets.entries)
		}
	}
	ipsRaw, netsRaw = make([]spanEntry, 0, nIPs), make([]spanEntry, 0, nNets)
	for span := first; span <= now; span++ { // oldest first: the latest reason wins
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
		for _, e := range b.ips.entries {
			ipsRaw = append(ipsRaw, spanEntry{e, span})
		}
		for _, e := range b.nets.entries {
			netsRaw = append(netsRaw, spanEntry{e, span})
		}
	}
	r.mu.Unlock()
	return s, ipsRaw, netsRaw
}

// spanEntry is a table's entry and the bucket it is from.
type spanEntry struct {
	topEntry
	span int64
}

// sumEntries adds up the entries of the buckets, oldest first, by key.
func sumEntries(raw []spanEntry) map[netip.Prefix]*Offender {
	m := make(map[netip.Prefix]*Offender, len(raw)/4)
	for i := range raw {
		e := &raw[i]
		o := m[e.key]
		if o == nil {
			o = &Offender{Prefix: e.key}
			m[e.key] = o
		}
		o.Count += e.count
		o.Reason = e.reason
		o.last = e.span
	}
	return m
}

// top returns the n offenders of m with the most refusals, most first
// (then by address), keeping only n in order as it goes: an hour of a
// flood from many addresses holds tens of thousands, of which ten are
// shown.
func top(m map[netip.Prefix]*Offender, n int) []Offender {
	out := make([]Offender, 0, min(n, len(m))+1)
	for _, o := range m {
		if len(out) == n && (n == 0 || !ahead(o, &out[n-1])) {
			continue
		}
		i, _ := slices.BinarySearchFunc(out, o, func(e Offender, o *Offender) int {
			if ahead(&e, o) {
				return -1
			}
			return 1
		})
		out = slices.Insert(out, i, *o)
		if len(out) > n {
			out = out[:n]
		}
	}
	return out
}

// ahead reports whether a ranks before b: more refusals, or as many and
// a lower address.
func ahead(a, b *Offender) bool {
	if a.Count != b.Count {
		return a.Count > b.Count
	}
	return a.Prefix.Addr().Less(b.Prefix.Addr())
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

// limiterNow is the limit store's state as last set.
func (r *Recent) limiterNow() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.limiter
}
