// Package netmap maps IP networks to values and finds, for an address, the
// value of the longest network that contains it: what a deny list, the
// trusted networks, the bans of clients and an access map's address keys
// all need, each asked once per connection and grown without bound by
// operators and a fleet.
//
// A Map keeps one hash map per address family, keyed by (masked address,
// prefix length), and the lengths present, longest first. Lookup masks the
// address to each length in turn and probes: its cost follows the number
// of distinct lengths present, not the number of networks, and it
// allocates nothing. The lengths are kept per block of the address space
// (a /16 for IPv4, a /32 for IPv6, the usual size of an allocation) for
// the networks that are no wider than one, and for the whole family for
// the few that are wider: an address is probed at the lengths present in
// its own block, one more probe to find them, and at the wide ones. A
// long list of every length from /16 to /32 then costs an address outside
// its blocks one probe (and one per wider length present) instead of
// seventeen, and one inside a block a probe per length in that block;
// without the blocks, every address would be probed at every length, in
// a hash map that no longer fits the caches.
// A binary trie would cost a pointer chase per bit of the address, a
// cache miss each in a large map; a sorted list a binary search per
// length.
//
// A network is its masked form: 10.1.2.3/8 and 10.0.0.0/8 are one key.
// Matching is netip.Prefix.Contains's: IPv4 and IPv6 are apart (an
// IPv4-mapped address such as ::ffff:192.0.2.1 is in ::ffff:0:0/96, not in
// 192.0.2.0/24: unmap it first to match IPv4 networks), and an address
// with a zone, or the zero Addr, is in no network.
package netmap

import (
	"encoding/binary"
	"iter"
	"net/netip"
	"slices"
)

// Map is a set of networks, each with a value. The zero Map is empty and
// ready to use. Like a Go map, it may be read (Get, Lookup, Len, All) by
// any number of goroutines at once, but not while one writes (Set,
// Delete).
type Map[V any] struct {
	v4 family[uint64, V] // key4: the masked address and the length
	v6 family[key6, V]
}

// The blocks, by their length: networks at least this long have their
// lengths kept per block.
const (
	block4 = 16
	block6 = 32
)

// family is the networks of one address family.
type family[K comparable, V any] struct {
	m      map[K]V
	blocks map[uint32]lengths // the lengths of the networks in each block
	wide   lengths            // the lengths of the networks wider than a block
}

// key6 is an IPv6 network. bits is a uint64, not a uint8, so that the
// key has no padding: the runtime hashes and compares it as 24 plain
// bytes instead of field by field.
type key6 struct {
	hi, lo, bits uint64
}

// key4 packs an IPv4 network into one integer, which the runtime's maps
// hash and compare fastest: the masked address above the length.
func key4(ip uint32, bits uint8) uint64 {
	return uint64(ip&mask32(bits))<<8 | uint64(bits)
}

func mask32(bits uint8) uint32 { return ^uint32(0) << (32 - bits) } // 0 for bits 0: Go's shifts saturate

func newKey6(hi, lo uint64, bits uint8) key6 {
	switch {
	case bits <= 64:
		hi &= ^uint64(0) << (64 - bits)
		lo = 0
	default:
		lo &= ^uint64(0) << (128 - bits)
	}
	return key6{hi: hi, lo: lo, bits: uint64(bits)}
}

func addr6(a netip.Addr) (hi, lo uint64) {
	b := a.As16()
	return binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
}

func addr4(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

// lengths are the prefix lengths present in a block or a family, longest
// first, with the number of networks of each, so that Delete can tell
// when a length has none left and Lookup stops probing it.
type lengths struct {
	desc []uint8
	n    []int32 // n[i]: the networks of length desc[i]
}

func (l *lengths) find(bits uint8) (int, bool) {
	return slices.BinarySearchFunc(l.desc, bits, func(x, y uint8) int { return int(y) - int(x) })
}

func (l *lengths) add(bits uint8) {
	i, found := l.find(bits)
	if found {
		l.n[i]++
		return
	}
	l.desc = slices.Insert(l.desc, i, bits)
	l.n = slices.Insert(l.n, i, 1)
}

func (l *lengths) remove(bits uint8) {
	i, found := l.find(bits)
	if !found {
		return
	}
	if l.n[i]--; l.n[i] == 0 {
		l.desc = slices.Delete(l.desc, i, i+1)
		l.n = slices.Delete(l.n, i, i+1)
	}
}

// set stores v under k, a network of length bits in block.
func (f *family[K, V]) set(k K, block uint32, bits, blockBits uint8, v V) {
	if f.m == nil {
		f.m = make(map[K]V)
	}
	n := len(f.m)
	f.m[k] = v
	if len(f.m) == n {
		return // a new value for a network already there
	}
	if bits < blockBits {
		f.wide.add(bits)
		return
	}
	if f.blocks == nil {
		f.blocks = make(map[uint32]lengths)
	}
	l := f.blocks[block]
	l.add(bits)
	f.blocks[block] = l
}

// delete removes k, a network of length bits in block, and reports
// whether it was there.
func (f *family[K, V]) delete(k K, block uint32, bits, blockBits uint8) bool {
	n := len(f.m)
	delete(f.m, k)
	if len(f.m) == n {
		return false
	}
	if bits < blockBits {
		f.wide.remove(bits)
		return true
	}
	l := f.blocks[block]
	l.remove(bits)
	if len(l.desc) == 0 {
		delete(f.blocks, block)
	} else {
		f.blocks[block] = l
	}
	return true
}

// Set stores v for the network p (masked), replacing the value it had. An
// invalid p (the zero Prefix, or a length out of range) is not stored.
func (m *Map[V]) Set(p netip.Prefix, v V) {
	if !p.IsValid() {
		return
	}
	bits := uint8(p.Bits())
	if p.Addr().Is4() {
		ip := addr4(p.Addr())
		m.v4.set(key4(ip, bits), ip>>(32-block4), bits, block4, v)
		return
	}
	hi, lo := addr6(p.Addr())
	m.v6.set(newKey6(hi, lo, bits), uint32(hi>>(64-block6)), bits, block6, v)
}

// Get returns the value stored for exactly the network p (masked).
func (m *Map[V]) Get(p netip.Prefix) (v V, ok bool) {
	if !p.IsValid() {
		return v, false
	}
	if p.Addr().Is4() {
		v, ok = m.v4.m[key4(addr4(p.Addr()), uint8(p.Bits()))]
		return v, ok
	}
	hi, lo := addr6(p.Addr())
	v, ok = m.v6.m[newKey6(hi, lo, uint8(p.Bits()))]
	return v, ok
}

// Delete removes the network p (masked) and reports whether it was there.
func (m *Map[V]) Delete(p netip.Prefix) bool {
	if !p.IsValid() {
		return false
	}
	bits := uint8(p.Bits())
	if p.Addr().Is4() {
		ip := addr4(p.Addr())
		return m.v4.delete(key4(ip, bits), ip>>(32-block4), bits, block4)
	}
	hi, lo := addr6(p.Addr())
	return m.v6.delete(newKey6(hi, lo, bits), uint32(hi>>(64-block6)), bits, block6)
}

// Lookup returns the value of the longest network that contains a.
func (m *Map[V]) Lookup(a netip.Addr) (v V, ok bool) {
	if a.Is4() {
		f := &m.v4
		if len(f.m) == 0 {
			return v, false
		}
		ip := addr4(a)
		if len(f.blocks) > 0 {
			for _, bits := range f.blocks[ip>>(32-block4)].desc {
				if v, ok := f.m[key4(ip, bits)]; ok {
					return v, true
				}
			}
		}
		for _, bits := range f.wide.desc {
			if v, ok := f.m[key4(ip, bits)]; ok {
				return v, true
			}
		}
		return v, false
	}
	f := &m.v6
	if len(f.m) == 0 || !a.Is6() || a.Zone() != "" {
		return v, false
	}
	hi, lo := addr6(a)
	if len(f.blocks) > 0 {
		for _, bits := range f.blocks[uint32(hi>>(64-block6))].desc {
			if v, ok := f.m[newKey6(hi, lo, bits)]; ok {
				return v, true
			}
		}
	}
	for _, bits := range f.wide.desc {
		if v, ok := f.m[newKey6(hi, lo, bits)]; ok {
			return v, true
		}
	}
	return v, false
}

// Len is the number of networks in the map.
func (m *Map[V]) Len() int { return len(m.v4.m) + len(m.v6.m) }

// All yields every network (masked) and its value, IPv4 first, in no
// particular order within a family. As in a range over a Go map, the loop
// may Delete networks, or Set those already present, as it goes.
func (m *Map[V]) All() iter.Seq2[netip.Prefix, V] {
	return func(yield func(netip.Prefix, V) bool) {
		for k, v := range m.v4.m {
			var b [4]byte
			binary.BigEndian.PutUint32(b[:], uint32(k>>8))
			if !yield(netip.PrefixFrom(netip.AddrFrom4(b), int(k&0xff)), v) {
				return
			}
		}
		for k, v := range m.v6.m {
			var b [16]byte
			binary.BigEndian.PutUint64(b[:8], k.hi)
			binary.BigEndian.PutUint64(b[8:], k.lo)
			if !yield(netip.PrefixFrom(netip.AddrFrom16(b), int(k.bits)), v) {
				return
			}
		}
	}
}
