package netmap

import (
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

// TestLengthsOnDelete: a length whose last network is deleted is no longer
// probed, and one still in use stays, in both families.
func TestLengthsOnDelete(t *testing.T) {
	var m Map[int]
	for i, s := range []string{"10.0.0.0/8", "10.1.0.0/16", "10.2.0.0/16", "10.1.2.0/24", "0.0.0.0/0",
		"2001:db8::/32", "2001:db8:1::/48", "2001:db8:2::/48", "2001:db8::1/128"} {
		m.Set(pfx(s), i)
	}
	m.Set(pfx("10.1.0.0/16"), 99) // a replacement counts once
	check := func(want4, want6 []uint8) {
		t.Helper()
		if !slices.Equal(m.len4.desc, want4) || !slices.Equal(m.len6.desc, want6) {
			t.Fatalf("lengths %v %v, want %v %v", m.len4.desc, m.len6.desc, want4, want6)
		}
	}
	check([]uint8{24, 16, 8, 0}, []uint8{128, 48, 32})
	m.Delete(pfx("10.1.0.0/16"))
	check([]uint8{24, 16, 8, 0}, []uint8{128, 48, 32}) // 10.2.0.0/16 is left
	m.Delete(pfx("10.2.0.0/16"))
	check([]uint8{24, 8, 0}, []uint8{128, 48, 32})
	m.Delete(pfx("0.0.0.0/0"))
	m.Delete(pfx("10.1.2.0/24"))
	check([]uint8{8}, []uint8{128, 48, 32})
	m.Delete(pfx("2001:db8:1::/48"))
	m.Delete(pfx("2001:db8::1/128"))
	check([]uint8{8}, []uint8{48, 32})
	m.Delete(pfx("2001:db8:2::/48"))
	m.Delete(pfx("2001:db8::/32"))
	m.Delete(pfx("10.0.0.0/8"))
	check([]uint8{}, []uint8{})
	if m.Len() != 0 {
		t.Fatalf("Len %d after deleting all", m.Len())
	}
	m.Set(pfx("10.0.0.0/8"), 1) // and it comes back
	check([]uint8{8}, []uint8{})
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
