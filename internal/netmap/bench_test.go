package netmap

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
)

// benchNets are n distinct networks as a deny list or a ban list has them:
// nine in ten IPv4, of every length from /16 to /32 in 10.0.0.0/8, the
// rest IPv6 of the sizes allocations come in, in 2001:db8::/32. It returns
// an address in the last network of each family, for a hit.
func benchNets(n int) (nets []netip.Prefix, hit4, hit6 netip.Addr) {
	r := rand.New(rand.NewPCG(uint64(n), 3))
	seen := make(map[netip.Prefix]bool, n)
	for len(nets) < n {
		var p netip.Prefix
		if r.IntN(10) < 9 {
			a := netip.AddrFrom4([4]byte{10, byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())})
			p = netip.PrefixFrom(a, 16+r.IntN(17)).Masked()
			hit4 = a
		} else {
			var b [16]byte
			b[0], b[1], b[2], b[3] = 0x20, 0x01, 0x0d, 0xb8
			for i := 4; i < 16; i++ {
				b[i] = byte(r.Uint32())
			}
			a := netip.AddrFrom16(b)
			p = netip.PrefixFrom(a, [...]int{32, 40, 48, 56, 64, 128}[r.IntN(6)]).Masked()
			hit6 = a
		}
		if !seen[p] {
			seen[p] = true
			nets = append(nets, p)
		}
	}
	return nets, hit4, hit6
}

var benchSizes = []int{10, 1000, 100_000}

// BenchmarkLookup is one address looked up among n networks: found;
// not found, away from the networks (in a block without any: one probe to
// find that out); and not found among them (in a block that holds
// networks: a probe for each length in it).
func BenchmarkLookup(b *testing.B) {
	for _, n := range benchSizes {
		nets, hit4, hit6 := benchNets(n)
		var m Map[int]
		for i, p := range nets {
			m.Set(p, i)
		}
		near4, near6 := benchNearMiss(&m)
		for _, c := range []struct {
			name string
			addr netip.Addr
			hit  bool
		}{
			{"hit/ipv4", hit4, true},
			{"hit/ipv6", hit6, true},
			{"miss/ipv4", netip.MustParseAddr("198.51.100.7"), false},
			{"miss/ipv6", netip.MustParseAddr("2001:db9::7"), false},
			{"near_miss/ipv4", near4, false},
			{"near_miss/ipv6", near6, false},
		} {
			if !c.addr.IsValid() {
				continue // too few networks to have one of this family
			}
			if _, ok := m.Lookup(c.addr); ok != c.hit {
				b.Fatalf("Lookup(%v) found %v", c.addr, ok)
			}
			b.Run(fmt.Sprintf("entries=%d/%s", n, c.name), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					m.Lookup(c.addr)
				}
			})
		}
	}
}

// benchNearMiss returns addresses that no network of m holds, in blocks
// that hold some: in 10.0.0.0/8 and 2001:db8::/32, where benchNets puts
// them (invalid where every address of the blocks is held).
func benchNearMiss(m *Map[int]) (near4, near6 netip.Addr) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 100_000 {
		if !near4.IsValid() {
			a := netip.AddrFrom4([4]byte{10, byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())})
			if _, ok := m.Lookup(a); !ok && len(m.v4.blocks[addr4(a)>>(32-block4)].desc) > 0 {
				near4 = a
			}
		}
		if !near6.IsValid() {
			b := [16]byte{0x20, 0x01, 0x0d, 0xb8}
			for i := 4; i < 16; i++ {
				b[i] = byte(r.Uint32())
			}
			a := netip.AddrFrom16(b)
			if _, ok := m.Lookup(a); !ok && len(m.v6.blocks[0x20010db8].desc) > 0 {
				near6 = a
			}
		}
	}
	return near4, near6
}

// BenchmarkBuild is making a Map of n networks: what a reload pays for a
// deny list or the trusted networks.
func BenchmarkBuild(b *testing.B) {
	for _, n := range benchSizes {
		nets, _, _ := benchNets(n)
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var m Map[struct{}]
				for _, p := range nets {
					m.Set(p, struct{}{})
				}
			}
		})
	}
}
