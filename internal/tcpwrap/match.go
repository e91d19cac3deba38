package tcpwrap

import (
	"math"
	"net/netip"
	"strings"
)

// A flood means every connection is checked, and a hosts.deny can list many
// thousands of domains, so rules are not scanned one by one. A simple rule
// (no EXCEPT, a daemon list of plain names and ALL) is entered into an index
// under each daemon it names, pattern by pattern: .domain suffixes and host
// names in maps, addresses and nets in one map per prefix length. A check
// then costs one map lookup per label of the client's name plus one per
// prefix length in use. Only the remaining rules, and the few patterns the
// maps cannot hold (wildcards, name prefixes), are scanned in order.
//
// Every entry remembers the first rule, in file order, that put it there,
// and the pattern's place in that rule's list; a check takes the lowest over
// all the places that match, so the rule reported, and whose allow or deny
// option applies, is the one tcpd would have stopped at, and the pattern
// reported is the first in that rule that matches.

// noHit orders after every hit.
const noHit = math.MaxInt64

// hit is a match candidate: its order, rule number<<32 | place in the
// rule's client list, and the pattern text that matched.
type hit struct {
	order int64
	pat   string
}

func order(rule int32, pos int) int64 { return int64(rule)<<32 | int64(pos) }

func (h hit) rule() int32 { return int32(h.order >> 32) }

// bucket holds the nets of one prefix length.
type bucket struct {
	bits int
	m    map[netip.Prefix]hit
}

// index holds the patterns of the simple rules for one daemon name.
type index struct {
	special [numSpecial]hit
	suffix  map[string]hit
	name    map[string]hit
	v4, v6  []bucket // by increasing length
	linear  []linearPat
}

// linearPat is a pattern no map can hold, kept in rule order.
type linearPat struct {
	order int64
	p     pattern
}

// fileTable is one parsed file.
type fileTable struct {
	name     string
	rules    []rule
	byDaemon map[string]*index // simple rules naming a daemon
	all      *index            // simple rules for ALL daemons
	complex  []int32           // the other rules, in order
}

func (f *fileTable) init(name string) {
	f.name = name
	f.byDaemon = make(map[string]*index)
}

func newIndex() *index {
	ix := &index{
		suffix: make(map[string]hit),
		name:   make(map[string]hit),
	}
	for i := range ix.special {
		ix.special[i].order = noHit
	}
	return ix
}

// add appends r to f and indexes it.
func (f *fileTable) add(r rule) {
	n := int32(len(f.rules))
	f.rules = append(f.rules, r)
	if len(r.clients) != 1 || len(r.daemons) != 1 || hasKind(r.daemons[0], patGlob) {
		f.complex = append(f.complex, n)
		return
	}
	var targets []*index
	if hasKind(r.daemons[0], patAll) {
		if f.all == nil {
			f.all = newIndex()
		}
		targets = append(targets, f.all)
	} else {
		for _, d := range r.daemons[0] {
			if d.kind != patName {
				continue // patNever
			}
			ix := f.byDaemon[d.s]
			if ix == nil {
				ix = newIndex()
				f.byDaemon[d.s] = ix
			}
			if !containsIndex(targets, ix) {
				targets = append(targets, ix)
			}
		}
	}
	for _, ix := range targets {
		for i, p := range r.clients[0] {
			ix.add(order(n, i), p)
		}
	}
}

func hasKind(ps []pattern, k patKind) bool {
	for _, p := range ps {
		if p.kind == k {
			return true
		}
	}
	return false
}

func containsIndex(ixs []*index, ix *index) bool {
	for _, x := range ixs {
		if x == ix {
			return true
		}
	}
	return false
}

// add enters pattern p at order o. Patterns arrive in order, so an entry
// that is already there came first and is kept.
func (ix *index) add(o int64, p pattern) {
	h := hit{order: o, pat: p.text}
	switch p.kind {
	case patAll, patLocal, patKnown, patUnknown, patParanoid:
		if ix.special[p.kind].order == noHit {
			ix.special[p.kind] = h
		}
	case patSuffix:
		setFirst(ix.suffix, p.s, h)
	case patName:
		setFirst(ix.name, p.s, h)
	case patPrefix:
		bs := &ix.v6
		if p.prefix.Addr().Is4() {
			bs = &ix.v4
		}
		setFirst(bucketFor(bs, p.prefix.Bits()), p.prefix, h)
	case patNever:
	default:
		ix.linear = append(ix.linear, linearPat{order: o, p: p})
	}
}

func setFirst[K comparable](m map[K]hit, k K, h hit) {
	if _, ok := m[k]; !ok {
		m[k] = h
	}
}

// bucketFor returns the map for prefix length bits, adding it in order.
func bucketFor(bs *[]bucket, bits int) map[netip.Prefix]hit {
	i := 0
	for i < len(*bs) && (*bs)[i].bits < bits {
		i++
	}
	if i < len(*bs) && (*bs)[i].bits == bits {
		return (*bs)[i].m
	}
	b := bucket{bits: bits, m: make(map[netip.Prefix]hit)}
	*bs = append(*bs, bucket{})
	copy((*bs)[i+1:], (*bs)[i:])
	(*bs)[i] = b
	return b.m
}

// clientView is a Client prepared for matching.
type clientView struct {
	addr     netip.Addr // unmapped, no zone; invalid when unknown
	name     string     // "" when unknown or paranoid
	paranoid bool
	textLen  int      // length of the address text in buf; 0 until made
	buf      [48]byte // room for the longest IPv6 address without zone
}

func newClientView(c Client) clientView {
	cv := clientView{addr: c.Addr.Unmap().WithZone(""), paranoid: c.Paranoid}
	if !c.Paranoid {
		cv.name = canonicalName(c.Name)
	}
	return cv
}

// canonicalName forgives a trailing dot or upper case in a caller's name,
// allocating only for the latter.
func canonicalName(s string) string {
	s = strings.TrimSuffix(s, ".")
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}

// text returns the address as text, made on first use. It keeps a length,
// not a slice, because a clientView pointing into itself would have to live
// on the heap.
func (cv *clientView) text() []byte {
	if cv.textLen == 0 {
		b := cv.addr.AppendTo(cv.buf[:0])
		if len(b) > len(cv.buf) {
			return b
		}
		cv.textLen = len(b)
	}
	return cv.buf[:cv.textLen]
}

func (cv *clientView) special(k patKind) bool {
	switch k {
	case patAll:
		return true
	case patLocal:
		return cv.name != "" && !strings.Contains(cv.name, ".")
	case patKnown:
		return cv.name != "" && cv.addr.IsValid()
	case patUnknown:
		return (cv.name == "" && !cv.paranoid) || !cv.addr.IsValid()
	case patParanoid:
		return cv.paranoid
	}
	return false
}

// matchClient reports whether client pattern p matches cv.
func (p *pattern) matchClient(cv *clientView) bool {
	switch p.kind {
	case patAll, patLocal, patKnown, patUnknown, patParanoid:
		return cv.special(p.kind)
	case patSuffix:
		n := len(cv.name) - len(p.s)
		return n > 0 && cv.name[n:] == p.s
	case patName:
		return cv.name != "" && cv.name == p.s
	case patNamePrefix:
		return cv.name != "" && strings.HasPrefix(cv.name, p.s)
	case patPrefix:
		return cv.addr.IsValid() && p.prefix.Contains(cv.addr)
	case patGlob:
		return (cv.addr.IsValid() && glob(p.s, cv.text())) || (cv.name != "" && glob(p.s, cv.name))
	}
	return false
}

// matchDaemon reports whether daemon pattern p matches canonical name d.
func (p *pattern) matchDaemon(d string) bool {
	switch p.kind {
	case patAll:
		return true
	case patName:
		return p.s == d
	case patGlob:
		return glob(p.s, d)
	}
	return false
}

// lookup returns the earliest hit for cv in ix that is earlier than best,
// or best.
func (ix *index) lookup(cv *clientView, best hit) hit {
	for k := range ix.special {
		if h := ix.special[k]; h.order < best.order && cv.special(patKind(k)) {
			best = h
		}
	}
	if name := cv.name; name != "" {
		if h, ok := ix.name[name]; ok && h.order < best.order {
			best = h
		}
		if len(ix.suffix) > 0 {
			// A suffix pattern starts with a dot and must leave at least one
			// character of the name before it.
			for i := 1; i < len(name); i++ {
				if name[i] != '.' {
					continue
				}
				if h, ok := ix.suffix[name[i:]]; ok && h.order < best.order {
					best = h
				}
			}
		}
	}
	if cv.addr.IsValid() {
		bs := ix.v6
		if cv.addr.Is4() {
			bs = ix.v4
		}
		for _, b := range bs {
			pfx, _ := cv.addr.Prefix(b.bits)
			if h, ok := b.m[pfx]; ok && h.order < best.order {
				best = h
			}
		}
	}
	for i := range ix.linear {
		lp := &ix.linear[i]
		if lp.order >= best.order {
			break
		}
		if lp.p.matchClient(cv) {
			best = hit{order: lp.order, pat: lp.p.text}
			break
		}
	}
	return best
}

// match returns the first rule of f that matches daemon d and client cv.
func (f *fileTable) match(d string, cv *clientView) (hit, bool) {
	best := hit{order: noHit}
	if ix := f.byDaemon[d]; ix != nil {
		best = ix.lookup(cv, best)
	}
	if f.all != nil {
		best = f.all.lookup(cv, best)
	}
	for _, n := range f.complex {
		if order(n, 0) >= best.order {
			break
		}
		r := &f.rules[n]
		if !matchDaemons(r.daemons, d) {
			continue
		}
		if pat, ok := matchClients(r.clients, cv); ok {
			best = hit{order: order(n, 0), pat: pat}
			break
		}
	}
	return best, best.order != noHit
}

// The EXCEPT chain g0 EXCEPT g1 EXCEPT g2 ... means g0 && !(g1 && !(g2 ...)):
// walking forward, the first operand that does not match settles it, true
// when an odd number of operands matched before it.

func matchDaemons(c chain, d string) bool {
	for i, g := range c {
		matched := false
		for j := range g {
			if g[j].matchDaemon(d) {
				matched = true
				break
			}
		}
		if !matched {
			return i%2 == 1
		}
	}
	return len(c)%2 == 1
}

// matchClients also returns the first pattern of the leading operand that
// matched, for the verdict.
func matchClients(c chain, cv *clientView) (string, bool) {
	var first string
	for i, g := range c {
		matched := false
		for j := range g {
			if g[j].matchClient(cv) {
				if i == 0 {
					first = g[j].text
				}
				matched = true
				break
			}
		}
		if !matched {
			return first, i%2 == 1
		}
	}
	return first, len(c)%2 == 1
}

// glob matches s against a pattern of '*' (any run of characters, dots
// included) and '?' (one character), in time linear in both: on a mismatch
// only the most recent star is retried, one character further on.
func glob[S string | []byte](pat string, s S) bool {
	// What follows the last star has a fixed length and must end s; most
	// names fail here, before any backtracking.
	if star := strings.LastIndexByte(pat, '*'); star >= 0 {
		tail := pat[star+1:]
		if len(tail) > len(s) {
			return false
		}
		off := len(s) - len(tail)
		for i := 0; i < len(tail); i++ {
			if tail[i] != '?' && tail[i] != s[off+i] {
				return false
			}
		}
	}
	px, sx := 0, 0
	nextPx, nextSx := 0, 0
	for px < len(pat) || sx < len(s) {
		if px < len(pat) {
			switch c := pat[px]; c {
			case '*':
				nextPx, nextSx = px, sx+1
				px++
				continue
			case '?':
				if sx < len(s) {
					px++
					sx++
					continue
				}
			default:
				if sx < len(s) && s[sx] == c {
					px++
					sx++
					continue
				}
			}
		}
		if 0 < nextSx && nextSx <= len(s) {
			px, sx = nextPx, nextSx
			continue
		}
		return false
	}
	return true
}
