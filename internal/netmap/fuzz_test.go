package netmap

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"testing"
)

// fuzzAddr4 and fuzzAddr6 spread two fuzzed bytes over an address so that
// the networks and queries of one input often nest, in a few blocks:
// 10.(x&3).y.(x^y) and 2001:db(x&3)::x:y:0:x.
func fuzzAddr4(x, y byte) netip.Addr { return netip.AddrFrom4([4]byte{10, x & 3, y, x ^ y}) }

func fuzzAddr6(x, y byte) netip.Addr {
	return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb0 | x&3, 0, 0, 0, x, 0, y, 15: x})
}

// refLookup is the definition Lookup must meet: of the networks that
// contain a, the longest.
func refLookup(ref map[netip.Prefix]int, a netip.Addr) (int, bool) {
	best, v := -1, 0
	for p, pv := range ref {
		if p.Contains(a) && p.Bits() > best {
			best, v = p.Bits(), pv
		}
	}
	return v, best >= 0
}

// FuzzLookup runs a fuzzed list of operations on a Map and on a plain Go
// map of prefixes beside it, and checks every answer against the plain
// map's brute force: Lookup, Get, Len, All and the lengths Lookup probes
// (checkLengths).
// Each operation is 4 bytes (op, x, y, n): op%6 is 0 or 1: Set an IPv4 or
// IPv6 network of length n; 2: Delete the x-th network present (or an
// absent one); 3: look up an IPv4 address near x, y; 4: an IPv6 one,
// mapped, zoned or the zero Addr by n; 5: Get a network.
func FuzzLookup(f *testing.F) {
	f.Add([]byte{
		0, 1, 2, 8, 0, 1, 2, 16, 0, 1, 2, 24, 0, 1, 2, 32, 0, 0, 0, 0, // nested IPv4 and 0.0.0.0/0
		3, 1, 2, 0, 3, 1, 2, 7, 3, 1, 3, 0, 3, 9, 9, 0,
		2, 1, 0, 0, 3, 1, 2, 0, 2, 0, 0, 0, 3, 1, 2, 0, // delete some, look again
	})
	f.Add([]byte{
		1, 1, 2, 32, 1, 1, 2, 48, 1, 1, 2, 128, 1, 0, 0, 0, 1, 1, 2, 104,
		4, 1, 2, 0, 4, 1, 2, 1, 4, 1, 2, 2, 4, 1, 2, 3, 4, 7, 7, 0,
		2, 3, 0, 0, 4, 1, 2, 0, 5, 1, 2, 48, 5, 1, 2, 47,
	})
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 4*1000 {
			ops = ops[:4*1000]
		}
		var m Map[int]
		ref := map[netip.Prefix]int{}
		for i := 0; i+4 <= len(ops); i += 4 {
			op, x, y, n := ops[i]%6, ops[i+1], ops[i+2], ops[i+3]
			switch op {
			case 0, 1:
				var p netip.Prefix
				if op == 0 {
					p = netip.PrefixFrom(fuzzAddr4(x, y), int(n)%33)
				} else {
					p = netip.PrefixFrom(fuzzAddr6(x, y), int(n)%129)
				}
				m.Set(p, i)
				ref[p.Masked()] = i
			case 2:
				var p netip.Prefix
				if len(ref) > 0 && n%4 != 0 {
					keys := slices.SortedFunc(maps.Keys(ref), func(a, b netip.Prefix) int {
						return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
					})
					p = keys[int(x)%len(keys)]
				} else {
					p = netip.PrefixFrom(fuzzAddr4(x, y), int(n)%33)
				}
				_, had := ref[p.Masked()]
				if got := m.Delete(p); got != had {
					t.Fatalf("Delete(%v) = %v, want %v", p, got, had)
				}
				delete(ref, p.Masked())
			case 3, 4:
				var a netip.Addr
				if op == 3 {
					a = fuzzAddr4(x, y^(n&0x0f)) // near a network, or in it
				} else {
					switch n % 4 {
					case 0:
						a = fuzzAddr6(x, y)
					case 1:
						a = netip.AddrFrom16(fuzzAddr4(x, y).As16()) // ::ffff:10.x.y.z
					case 2:
						a = fuzzAddr6(x, y).WithZone("eth0")
					}
				}
				want, wok := refLookup(ref, a)
				if got, ok := m.Lookup(a); got != want || ok != wok {
					t.Fatalf("Lookup(%v) = %d, %v; want %d, %v", a, got, ok, want, wok)
				}
			case 5:
				p := netip.PrefixFrom(fuzzAddr6(x, y), int(n)%129)
				if n&0x80 != 0 {
					p = netip.PrefixFrom(fuzzAddr4(x, y), int(n)%33)
				}
				want, wok := ref[p.Masked()]
				if got, ok := m.Get(p); got != want || ok != wok {
					t.Fatalf("Get(%v) = %d, %v; want %d, %v", p, got, ok, want, wok)
				}
			}
			if m.Len() != len(ref) {
				t.Fatalf("Len %d, want %d", m.Len(), len(ref))
			}
		}
		if got := maps.Collect(m.All()); !maps.Equal(got, ref) {
			t.Fatalf("All = %v, want %v", got, ref)
		}
		// Lookup probes exactly the lengths present, longest first.
		checkLengths(t, &m, ref)
	})
}
