package accessmap

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
)

// benchMap generates an access map of n distinct Connect: entries in the proportions
// a large real one has (mostly single addresses and /24s, some networks,
// host names and IPv6), plus a ClientRate: default. Generated addresses lie
// in 10.0.0.0/8, 172.16.0.0/12 and 2001:db8::/32, names under bench.test,
// so that queries elsewhere miss. It returns a query that hits at each stage.
func benchMap(n int) (text string, hitHost string, hitV4, hitV6 netip.Addr) {
	r := rand.New(rand.NewPCG(uint64(n), 42))
	var b strings.Builder
	b.Grow(n * 40)
	b.WriteString("ClientRate: 5\n")
	v4 := func() netip.Addr {
		if r.IntN(2) == 0 {
			return netip.AddrFrom4([4]byte{10, byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())})
		}
		return netip.AddrFrom4([4]byte{172, 16 + byte(r.IntN(16)), byte(r.Uint32()), byte(r.Uint32())})
	}
	v6 := func() netip.Addr {
		var a [16]byte
		a[0], a[1], a[2], a[3] = 0x20, 0x01, 0x0d, 0xb8
		for i := 4; i < 16; i++ {
			a[i] = byte(r.Uint32())
		}
		return netip.AddrFrom16(a)
	}
	seen := make(map[string]bool, n)
	for i := 0; len(seen) < n; i++ {
		var key string
		switch k := r.IntN(20); {
		case k < 9:
			a := v4()
			hitV4 = a
			key = a.String()
		case k < 11:
			a := v4().As4()
			key = fmt.Sprintf("%d.%d.%d", a[0], a[1], a[2])
		case k < 12:
			key = netip.PrefixFrom(v4(), 12+r.IntN(17)).Masked().String()
		case k < 16:
			hitHost = fmt.Sprintf("mx%d.h%d.bench.test", i, i)
			key = fmt.Sprintf("h%d.bench.test", i)
		case k < 18:
			a := v6()
			hitV6 = a
			key = "IPv6:" + a.String()
		default:
			// The network sizes IPv6 allocations come in.
			key = "IPv6:" + netip.PrefixFrom(v6(), [...]int{32, 40, 48, 56, 64}[r.IntN(5)]).Masked().String()
		}
		if seen[key] {
			continue
		}
		seen[key] = true
		fmt.Fprintf(&b, "Connect:%s %s\n", key, [...]string{"OK", "REJECT", "RELAY", "DISCARD"}[r.IntN(4)])
	}
	return b.String(), hitHost, hitV4, hitV6
}

func BenchmarkLookupClient(b *testing.B) {
	for _, n := range []int{10, 1000, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			text, host, v4, v6 := benchMap(n)
			m, err := Parse(strings.NewReader(text), "bench")
			if err != nil {
				b.Fatal(err)
			}
			miss4 := netip.MustParseAddr("198.51.100.7")
			miss6 := netip.MustParseAddr("2001:db9::7")
			cases := []struct {
				name string
				host string
				addr netip.Addr
				hit  bool
			}{
				{"hit/host", host, miss4, host != ""},
				{"hit/ipv4", "client.example.net", v4, v4.IsValid()},
				{"hit/ipv6", "", v6, v6.IsValid()},
				{"miss/ipv4", "client.example.net", miss4, false},
				{"miss/ipv6", "", miss6, false},
			}
			for _, c := range cases {
				if c.hit == false && strings.HasPrefix(c.name, "hit") {
					continue // too few entries to have one of this kind
				}
				if _, ok := m.LookupClient(TagConnect, c.host, c.addr); ok != c.hit {
					b.Fatalf("%s: LookupClient(%q, %v) found %v", c.name, c.host, c.addr, ok)
				}
				b.Run(c.name, func(b *testing.B) {
					b.ReportAllocs()
					for b.Loop() {
						m.LookupClient(TagConnect, c.host, c.addr)
					}
				})
			}
			b.Run("number/default", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					m.ClientNumber(TagClientRate, "client.example.net", miss4)
				}
			})
		})
	}
}

func BenchmarkLookupAddress(b *testing.B) {
	m := mustParse(b, envelopeMap)
	for _, addr := range []string{"user+foo@example.net", "nobody@mail.nowhere.example.org"} {
		b.Run(addr, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				m.LookupAddress(TagFrom, addr)
			}
		})
	}
}

func BenchmarkParse(b *testing.B) {
	text, _, _, _ := benchMap(10_000)
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(strings.NewReader(text), "bench"); err != nil {
			b.Fatal(err)
		}
	}
}
