package netmap

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"testing"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

// TestLookup: the longest network containing the address wins, whatever
// the order the networks came in; the families are apart, as
// netip.Prefix.Contains has them.
func TestLookup(t *testing.T) {
	var m Map[string]
	for _, s := range []string{
		"10.1.2.0/24", "10.0.0.0/8", "0.0.0.0/0", "10.1.2.3/32", "10.1.0.0/16",
		"192.0.2.128/25",
		"2001:db8::/32", "2001:db8:1::/48", "2001:db8:1::1/128", "::/0",
		"::ffff:198.51.100.0/120",
	} {
		m.Set(pfx(s), s)
	}
	tests := []struct {
		addr string
		want string // "" for no network
	}{
		{"10.1.2.3", "10.1.2.3/32"},
		{"10.1.2.4", "10.1.2.0/24"},
		{"10.1.3.4", "10.1.0.0/16"},
		{"10.2.0.0", "10.0.0.0/8"},
		{"11.0.0.1", "0.0.0.0/0"},
		{"192.0.2.200", "192.0.2.128/25"},
		{"192.0.2.127", "0.0.0.0/0"},
		{"2001:db8:1::1", "2001:db8:1::1/128"},
		{"2001:db8:1::2", "2001:db8:1::/48"},
		{"2001:db8:2::1", "2001:db8::/32"},
		{"2001:db9::1", "::/0"},
		// A mapped address is IPv6: only IPv6 networks hold it.
		{"::ffff:198.51.100.7", "::ffff:198.51.100.0/120"},
		{"::ffff:10.1.2.3", "::/0"},
		{"198.51.100.7", "0.0.0.0/0"},
		// As Contains: a zone keeps an address out of every network.
		{"2001:db8:1::1%eth0", ""},
	}
	for _, tt := range tests {
		got, ok := m.Lookup(addr(tt.addr))
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("Lookup(%s) = %q, %v; want %q", tt.addr, got, ok, tt.want)
		}
	}
	if v, ok := m.Lookup(netip.Addr{}); ok {
		t.Errorf("Lookup(zero Addr) = %q", v)
	}
}

// TestLookupEmptyFamily: a map of one family finds nothing of the other.
func TestLookupEmptyFamily(t *testing.T) {
	var m Map[int]
	if _, ok := m.Lookup(addr("10.0.0.1")); ok {
		t.Error("empty map found an IPv4 address")
	}
	m.Set(pfx("10.0.0.0/8"), 1)
	if _, ok := m.Lookup(addr("::1")); ok {
		t.Error("IPv4-only map found an IPv6 address")
	}
	m = Map[int]{}
	m.Set(pfx("::/0"), 1)
	if _, ok := m.Lookup(addr("10.0.0.1")); ok {
		t.Error("IPv6-only map found an IPv4 address")
	}
}

// TestSetGetDelete: networks are keyed by their masked form; replacing a
// value keeps one entry; Delete says whether there was one; invalid
// prefixes are never stored.
func TestSetGetDelete(t *testing.T) {
	var m Map[int]
	m.Set(pfx("10.1.2.3/8"), 1)
	if v, ok := m.Get(pfx("10.0.0.0/8")); !ok || v != 1 {
		t.Errorf("Get(10.0.0.0/8) = %d, %v after Set(10.1.2.3/8)", v, ok)
	}
	if v, ok := m.Get(pfx("10.9.9.9/8")); !ok || v != 1 {
		t.Errorf("Get(10.9.9.9/8) = %d, %v", v, ok)
	}
	if _, ok := m.Get(pfx("10.0.0.0/9")); ok {
		t.Error("Get(10.0.0.0/9) found the /8")
	}
	m.Set(pfx("10.0.0.0/8"), 2)
	if v, _ := m.Get(pfx("10.0.0.0/8")); v != 2 || m.Len() != 1 {
		t.Errorf("after replacing: value %d, Len %d; want 2, 1", v, m.Len())
	}
	m.Set(pfx("2001:db8::1/64"), 3)
	if v, ok := m.Get(pfx("2001:db8::/64")); !ok || v != 3 || m.Len() != 2 {
		t.Errorf("Get(2001:db8::/64) = %d, %v, Len %d", v, ok, m.Len())
	}
	// The same bits in the two families are two networks.
	m.Set(pfx("::a00:0/104"), 4)
	if v, _ := m.Get(pfx("10.0.0.0/8")); v != 2 || m.Len() != 3 {
		t.Errorf("IPv6 ::a00:0/104 replaced 10.0.0.0/8: value %d, Len %d", v, m.Len())
	}

	for _, p := range []netip.Prefix{{}, netip.PrefixFrom(addr("10.0.0.1"), 33), netip.PrefixFrom(addr("::1"), -1)} {
		m.Set(p, 9)
		if _, ok := m.Get(p); ok || m.Len() != 3 {
			t.Errorf("invalid %v stored (Len %d)", p, m.Len())
		}
		if m.Delete(p) {
			t.Errorf("Delete(invalid %v) = true", p)
		}
	}

	if !m.Delete(pfx("10.2.3.4/8")) {
		t.Error("Delete(10.2.3.4/8) = false, want true (the /8, masked)")
	}
	if m.Delete(pfx("10.0.0.0/8")) {
		t.Error("second Delete(10.0.0.0/8) = true")
	}
	if m.Delete(pfx("2001:db8::/63")) {
		t.Error("Delete of an absent length = true")
	}
	if _, ok := m.Lookup(addr("10.0.0.1")); ok || m.Len() != 2 {
		t.Errorf("after Delete: Lookup found 10.0.0.1, Len %d", m.Len())
	}
}

// TestLengthsOnDelete: a length whose last network in a block (or among
// the wide networks) is deleted is no longer probed there, one still in
// use stays, and a block with no network left goes, in both families.
func TestLengthsOnDelete(t *testing.T) {
	var m Map[int]
	nets := []string{"10.0.0.0/8", "10.1.0.0/16", "10.1.128.0/17", "10.1.2.0/24", "10.1.3.0/24", "10.2.0.0/16", "0.0.0.0/0",
		"2001::/16", "2001:db8::/32", "2001:db8:1::/48", "2001:db8:2::/48", "2001:db8::1/128", "2001:db9::/32"}
	for i, s := range nets {
		m.Set(pfx(s), i)
	}
	m.Set(pfx("10.1.0.0/16"), 99) // a replacement counts once
	want := map[netip.Prefix]int{}
	for _, s := range nets {
		want[pfx(s)] = 0
	}
	checkLengths(t, &m, want)
	if got := m.v4.blocks[0x0a01].desc; !slices.Equal(got, []uint8{24, 17, 16}) {
		t.Fatalf("10.1.0.0/16's lengths %v, want [24 17 16]", got)
	}
	for _, s := range []string{"10.1.2.0/24", "10.2.0.0/16", "0.0.0.0/0", "2001:db8::1/128", "2001:db8:1::/48", "2001:db9::/32"} {
		m.Delete(pfx(s))
		delete(want, pfx(s))
		checkLengths(t, &m, want)
	}
	if _, ok := m.v4.blocks[0x0a02]; ok {
		t.Fatal("10.2.0.0/16's block outlived its last network")
	}
	if got := m.v4.blocks[0x0a01].desc; !slices.Equal(got, []uint8{24, 17, 16}) {
		t.Fatalf("10.1.0.0/16's lengths %v, want [24 17 16] (10.1.3.0/24 is left)", got)
	}
	for s := range want {
		m.Delete(s)
	}
	checkLengths(t, &m, nil)
	if m.Len() != 0 || len(m.v4.blocks) != 0 || len(m.v6.blocks) != 0 || len(m.v4.wide.desc) != 0 || len(m.v6.wide.desc) != 0 {
		t.Fatalf("after deleting all: Len %d, blocks %v %v, wide %v %v", m.Len(), m.v4.blocks, m.v6.blocks, m.v4.wide, m.v6.wide)
	}
	m.Set(pfx("10.0.0.0/8"), 1) // and it comes back
	checkLengths(t, &m, map[netip.Prefix]int{pfx("10.0.0.0/8"): 1})
}

// checkLengths checks that m probes exactly the lengths of the networks
// of ref (masked): per block for those at least a block long, per family
// for the others, longest first, each with its count.
func checkLengths(t *testing.T, m *Map[int], ref map[netip.Prefix]int) {
	t.Helper()
	type counts = map[uint8]int32
	wide := [2]counts{{}, {}}
	blocks := [2]map[uint32]counts{{}, {}}
	for p := range ref {
		p = p.Masked()
		fam, blockBits := 0, block4
		if !p.Addr().Is4() {
			fam, blockBits = 1, block6
		}
		bits := uint8(p.Bits())
		if p.Bits() < blockBits {
			wide[fam][bits]++
			continue
		}
		b := p.Addr().AsSlice()
		block := uint32(b[0])<<8 | uint32(b[1])
		if fam == 1 {
			block = uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		}
		if blocks[fam][block] == nil {
			blocks[fam][block] = counts{}
		}
		blocks[fam][block][bits]++
	}
	same := func(what string, l lengths, want counts) {
		t.Helper()
		if !slices.IsSortedFunc(l.desc, func(x, y uint8) int { return int(y) - int(x) }) || len(l.desc) != len(l.n) {
			t.Fatalf("%s: lengths %v (counts %v) not longest first", what, l.desc, l.n)
		}
		got := counts{}
		for i, b := range l.desc {
			got[b] = l.n[i]
		}
		if !maps.Equal(got, want) || len(l.desc) != len(want) {
			t.Fatalf("%s: lengths %v, counts %v; want %v", what, l.desc, l.n, want)
		}
	}
	same("IPv4 wide", m.v4.wide, wide[0])
	same("IPv6 wide", m.v6.wide, wide[1])
	for fam, got := range [2]map[uint32]lengths{m.v4.blocks, m.v6.blocks} {
		if len(got) != len(blocks[fam]) {
			t.Fatalf("family %d: %d blocks, want %d", fam, len(got), len(blocks[fam]))
		}
		for b, want := range blocks[fam] {
			same(fmt.Sprintf("family %d block %#x", fam, b), got[b], want)
		}
	}
}

// TestAll: All yields every network, masked, with its value; a loop may
// delete as it goes.
func TestAll(t *testing.T) {
	var m Map[int]
	want := map[netip.Prefix]int{}
	for i, s := range []string{"10.1.2.3/24", "0.0.0.0/0", "192.0.2.7/32", "2001:db8::9/32", "::/0",
		"::ffff:10.0.0.0/104", "2001:db8::1/128"} {
		m.Set(pfx(s), i)
		want[pfx(s).Masked()] = i
	}
	if got := maps.Collect(m.All()); !maps.Equal(got, want) {
		t.Fatalf("All = %v, want %v", got, want)
	}
	for p := range m.All() {
		if !p.Addr().Is4() {
			m.Delete(p)
		}
	}
	for p := range want {
		if !p.Addr().Is4() {
			delete(want, p)
		}
	}
	if got := maps.Collect(m.All()); !maps.Equal(got, want) || m.Len() != len(want) {
		t.Fatalf("after deleting IPv6 in the loop: All = %v (Len %d), want %v", got, m.Len(), want)
	}
	n := 0
	for range m.All() {
		n++
		break
	}
	if n != 1 {
		t.Fatalf("All went on after break: %d", n)
	}
}
