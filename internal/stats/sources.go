package stats

import (
	"cmp"
	"container/heap"
	"slices"

	"github.com/mxguard/mxguard/internal/reason"
)

// A day's networks and reverse-DNS suffixes are kept in bounded tables:
// at most MaxRefusers that drew refusals and delivered no mail, the ones
// with the most refusals (Metwally et al.'s space-saving algorithm, as the
// status window's offenders: a newcomer takes the place and the count of
// the least refused, so a source with more than 1/MaxRefusers of the
// day's refusals is always among them, its count at most that much too
// high), and at most MaxDeliverers that delivered mail, which are never
// pushed out: that a network delivered mail is what keeps it out of a
// proposed hosts.deny. Deliveries from sources beyond that bound are
// counted as untracked, and `mxguard suggest` says so.
const (
	MaxRefusers   = 128
	MaxDeliverers = 512
	// maxReasons is how many reasons a source keeps by name in the file;
	// the rest are added up as "other".
	maxReasons = 4
)

// OtherReasons is the reason under which a source's less frequent
// reasons are added up in the file.
const OtherReasons reason.Reason = "other"

// Source is one network or reverse-DNS suffix of a day: the refusals its
// clients drew, by reason, and the messages they delivered.
type Source struct {
	Key       string                  `json:"key"`
	Refused   map[reason.Reason]int64 `json:"refused,omitempty"`
	Delivered int64                   `json:"delivered,omitempty"`
}

// Refusals is the source's refusals of every reason.
func (s Source) Refusals() int64 {
	var n int64
	for _, c := range s.Refused {
		n += c
	}
	return n
}

// sources is one day's table of networks (K = netip.Prefix) or suffixes
// (K = string).
type sources[K comparable] struct {
	m          map[K]*source[K]
	refusers   refuserHeap[K] // the entries without deliveries, least refused first
	deliverers int
	untracked  int64 // deliveries from sources the table had no room for
}

type source[K comparable] struct {
	key       K
	refused   map[reason.Reason]int64
	total     int64
	delivered int64
	hi        int // index in refusers, -1 when not there
}

func (t *sources[K]) init() {
	if t.m == nil {
		t.m = make(map[K]*source[K])
	}
}

// refuse counts n refusals for why from key.
func (t *sources[K]) refuse(key K, why reason.Reason, n int64) {
	t.init()
	e := t.m[key]
	if e == nil {
		var inherited int64
		if len(t.refusers) >= MaxRefusers {
			low := heap.Pop(&t.refusers).(*source[K])
			delete(t.m, low.key)
			if low.delivered > 0 {
				t.untracked += low.delivered
			}
			inherited = low.total
		}
		e = &source[K]{key: key, refused: make(map[reason.Reason]int64, 1), hi: -1}
		e.refused[why] += inherited
		e.total = inherited
		t.m[key] = e
		heap.Push(&t.refusers, e)
	}
	if e.refused == nil {
		e.refused = make(map[reason.Reason]int64, 1)
	}
	e.refused[why] += n
	e.total += n
	if e.hi >= 0 {
		heap.Fix(&t.refusers, e.hi)
	}
}

// deliver counts n messages delivered from key.
func (t *sources[K]) deliver(key K, n int64) {
	t.init()
	e := t.m[key]
	switch {
	case e == nil && t.deliverers >= MaxDeliverers:
		t.untracked += n
		return
	case e == nil:
		e = &source[K]{key: key, hi: -1}
		t.m[key] = e
		t.deliverers++
	case e.hi >= 0 && t.deliverers < MaxDeliverers:
		heap.Remove(&t.refusers, e.hi)
		t.deliverers++
	}
	e.delivered += n
}

// list is the table as the file holds it, most refused first.
func (t *sources[K]) list(name func(K) string) []Source {
	out := make([]Source, 0, len(t.m))
	for _, e := range t.m {
		s := Source{Key: name(e.key), Delivered: e.delivered}
		if len(e.refused) > 0 {
			s.Refused = topReasons(e.refused)
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Source) int {
		if c := cmp.Compare(b.Refusals(), a.Refusals()); c != 0 {
			return c
		}
		if c := cmp.Compare(b.Delivered, a.Delivered); c != 0 {
			return c
		}
		return cmp.Compare(a.Key, b.Key)
	})
	return out
}

// topReasons keeps the maxReasons most frequent reasons by name and adds
// up the rest as OtherReasons.
func topReasons(m map[reason.Reason]int64) map[reason.Reason]int64 {
	type rc struct {
		r reason.Reason
		n int64
	}
	var all []rc
	var other int64
	for r, n := range m {
		if n == 0 {
			continue
		}
		if r == OtherReasons {
			other += n
			continue
		}
		all = append(all, rc{r, n})
	}
	slices.SortFunc(all, func(a, b rc) int {
		if c := cmp.Compare(b.n, a.n); c != 0 {
			return c
		}
		return cmp.Compare(a.r, b.r)
	})
	out := make(map[reason.Reason]int64, min(len(all), maxReasons)+1)
	for i, x := range all {
		if i < maxReasons {
			out[x.r] = x.n
		} else {
			other += x.n
		}
	}
	if other > 0 {
		out[OtherReasons] = other
	}
	return out
}

// refuserHeap orders the entries without deliveries by their refusals,
// least first: the one a newcomer replaces.
type refuserHeap[K comparable] []*source[K]

func (h refuserHeap[K]) Len() int { return len(h) }
func (h refuserHeap[K]) Less(i, j int) bool {
	return h[i].total < h[j].total
}
func (h refuserHeap[K]) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].hi, h[j].hi = i, j
}
func (h *refuserHeap[K]) Push(x any) {
	e := x.(*source[K])
	e.hi = len(*h)
	*h = append(*h, e)
}
func (h *refuserHeap[K]) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.hi = -1
	return e
}
