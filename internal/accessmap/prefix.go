package accessmap

import (
	"encoding/binary"
	"net/netip"
	"slices"
)

// prefixSet finds the longest of its prefixes that contains an address. It
// keeps one hash map per address family keyed by (masked address, length),
// and the lengths present, longest first: a lookup costs one hash probe per
// length present, whatever the number of prefixes, and allocates nothing.
type prefixSet struct {
	v4     map[v4key]int32
	v6     map[v6key]int32
	v4bits []uint8 // lengths present, longest first
	v6bits []uint8
}

type v4key struct {
	ip   uint32
	bits uint8
}

type v6key struct {
	hi, lo uint64
	bits   uint8
}

// get returns the value stored for exactly p.
func (s *prefixSet) get(p netip.Prefix) (int32, bool) {
	var v int32
	var ok bool
	if p.Addr().Is4() {
		v, ok = s.v4[key4(p.Addr(), p.Bits())]
	} else {
		v, ok = s.v6[key6(p.Addr(), p.Bits())]
	}
	return v, ok
}

// set stores v for p, which must be masked and valid.
func (s *prefixSet) set(p netip.Prefix, v int32) {
	bits := uint8(p.Bits())
	if p.Addr().Is4() {
		if s.v4 == nil {
			s.v4 = make(map[v4key]int32)
		}
		s.v4[key4(p.Addr(), p.Bits())] = v
		s.v4bits = addBits(s.v4bits, bits)
		return
	}
	if s.v6 == nil {
		s.v6 = make(map[v6key]int32)
	}
	s.v6[key6(p.Addr(), p.Bits())] = v
	s.v6bits = addBits(s.v6bits, bits)
}

// remap replaces every stored value v with f(v).
func (s *prefixSet) remap(f func(int32) int32) {
	for k, v := range s.v4 {
		s.v4[k] = f(v)
	}
	for k, v := range s.v6 {
		s.v6[k] = f(v)
	}
}

// lookup returns the value of the longest prefix containing a, which must be
// unmapped and without a zone.
func (s *prefixSet) lookup(a netip.Addr) (int32, bool) {
	if a.Is4() {
		if len(s.v4) == 0 {
			return 0, false
		}
		for _, b := range s.v4bits {
			if v, ok := s.v4[key4(a, int(b))]; ok {
				return v, true
			}
		}
		return 0, false
	}
	if len(s.v6) == 0 || !a.Is6() {
		return 0, false
	}
	for _, b := range s.v6bits {
		if v, ok := s.v6[key6(a, int(b))]; ok {
			return v, true
		}
	}
	return 0, false
}

func key4(a netip.Addr, bits int) v4key {
	b := a.As4()
	ip := binary.BigEndian.Uint32(b[:])
	if bits < 32 {
		ip &= ^uint32(0) << (32 - bits)
	}
	return v4key{ip: ip, bits: uint8(bits)}
}

func key6(a netip.Addr, bits int) v6key {
	b := a.As16()
	hi := binary.BigEndian.Uint64(b[:8])
	lo := binary.BigEndian.Uint64(b[8:])
	switch {
	case bits <= 64:
		hi &= ^uint64(0) << (64 - bits)
		lo = 0
	case bits < 128:
		lo &= ^uint64(0) << (128 - bits)
	}
	return v6key{hi: hi, lo: lo, bits: uint8(bits)}
}

// addBits inserts b into the descending list bs unless it is there already.
func addBits(bs []uint8, b uint8) []uint8 {
	i, found := slices.BinarySearchFunc(bs, b, func(x, y uint8) int { return int(y) - int(x) })
	if found {
		return bs
	}
	return slices.Insert(bs, i, b)
}
