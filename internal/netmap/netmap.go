// Package netmap maps IP networks to values and finds, for an address, the
// value of the longest network that contains it: what a deny list, the
// trusted networks, the bans of clients and an access map's address keys
// all need, each asked once per connection and grown without bound by
// operators and a fleet.
//
// A Map keeps one hash map per address family, keyed by (masked address,
// prefix length), and the lengths present, longest first. Lookup masks the
// address to each length in turn and probes: its cost follows the number
// of distinct lengths present (at most 33 for IPv4 and 129 for IPv6; a
// handful in real lists), not the number of networks, and it allocates
// nothing. A binary trie would cost a pointer chase per bit of the
// address, a cache miss each once the map outgrows the caches; a sorted
// list a binary search per length.
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
	v4   map[uint64]V // key4: the masked address and the length
	v6   map[key6]V
	len4 lengths
	len6 lengths
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

// lengths are the prefix lengths present in one family, longest first,
// with the number of networks of each, so that Delete can tell when a
// length has none left and Lookup stops probing it.
type lengths struct {
	desc []uint8
	n    []int32 // networks of each length; made at the first add
}

func (l *lengths) add(bits uint8, maxBits int) {
	if l.n == nil {
		l.n = make([]int32, maxBits+1)
	}
	l.n[bits]++
	if l.n[bits] == 1 {
		i, _ := slices.BinarySearchFunc(l.desc, bits, func(x, y uint8) int { return int(y) - int(x) })
		l.desc = slices.Insert(l.desc, i, bits)
	}
}

func (l *lengths) remove(bits uint8) {
	l.n[bits]--
	if l.n[bits] == 0 {
		i, _ := slices.BinarySearchFunc(l.desc, bits, func(x, y uint8) int { return int(y) - int(x) })
		l.desc = slices.Delete(l.desc, i, i+1)
	}
}

// Set stores v for the network p (masked), replacing the value it had. An
// invalid p (the zero Prefix, or a length out of range) is not stored.
func (m *Map[V]) Set(p netip.Prefix, v V) {
	if !p.IsValid() {
		return
	}
	bits := uint8(p.Bits())
	if p.Addr().Is4() {
		if m.v4 == nil {
			m.v4 = make(map[uint64]V)
		}
		n := len(m.v4)
		m.v4[key4(addr4(p.Addr()), bits)] = v
		if len(m.v4) > n {
			m.len4.add(bits, 32)
		}
		return
	}
	if m.v6 == nil {
		m.v6 = make(map[key6]V)
	}
	hi, lo := addr6(p.Addr())
	n := len(m.v6)
	m.v6[newKey6(hi, lo, bits)] = v
	if len(m.v6) > n {
		m.len6.add(bits, 128)
	}
}

// Get returns the value stored for exactly the network p (masked).
func (m *Map[V]) Get(p netip.Prefix) (v V, ok bool) {
	if !p.IsValid() {
		return v, false
	}
	if p.Addr().Is4() {
		v, ok = m.v4[key4(addr4(p.Addr()), uint8(p.Bits()))]
		return v, ok
	}
	hi, lo := addr6(p.Addr())
	v, ok = m.v6[newKey6(hi, lo, uint8(p.Bits()))]
	return v, ok
}

// Delete removes the network p (masked) and reports whether it was there.
func (m *Map[V]) Delete(p netip.Prefix) bool {
	if !p.IsValid() {
		return false
	}
	bits := uint8(p.Bits())
	if p.Addr().Is4() {
		n := len(m.v4)
		delete(m.v4, key4(addr4(p.Addr()), bits))
		if len(m.v4) == n {
			return false
		}
		m.len4.remove(bits)
		return true
	}
	hi, lo := addr6(p.Addr())
	n := len(m.v6)
	delete(m.v6, newKey6(hi, lo, bits))
	if len(m.v6) == n {
		return false
	}
	m.len6.remove(bits)
	return true
}

// Lookup returns the value of the longest network that contains a.
func (m *Map[V]) Lookup(a netip.Addr) (v V, ok bool) {
	if a.Is4() {
		if len(m.v4) == 0 {
			return v, false
		}
		ip := addr4(a)
		for _, bits := range m.len4.desc {
			if v, ok := m.v4[key4(ip, bits)]; ok {
				return v, true
			}
		}
		return v, false
	}
	if len(m.v6) == 0 || !a.Is6() || a.Zone() != "" {
		return v, false
	}
	hi, lo := addr6(a)
	for _, bits := range m.len6.desc {
		if v, ok := m.v6[newKey6(hi, lo, bits)]; ok {
			return v, true
		}
	}
	return v, false
}

// Len is the number of networks in the map.
func (m *Map[V]) Len() int { return len(m.v4) + len(m.v6) }

// All yields every network (masked) and its value, IPv4 first, in no
// particular order within a family. As in a range over a Go map, the loop
// may Delete networks, or Set those already present, as it goes.
func (m *Map[V]) All() iter.Seq2[netip.Prefix, V] {
	return func(yield func(netip.Prefix, V) bool) {
		for k, v := range m.v4 {
			var b [4]byte
			binary.BigEndian.PutUint32(b[:], uint32(k>>8))
			if !yield(netip.PrefixFrom(netip.AddrFrom4(b), int(k&0xff)), v) {
				return
			}
		}
		for k, v := range m.v6 {
			var b [16]byte
			binary.BigEndian.PutUint64(b[:8], k.hi)
			binary.BigEndian.PutUint64(b[8:], k.lo)
			if !yield(netip.PrefixFrom(netip.AddrFrom16(b), int(k.bits)), v) {
				return
			}
		}
	}
}
