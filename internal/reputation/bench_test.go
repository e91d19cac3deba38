package reputation

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/reason"
)

// benchBook is a book as the default configuration makes it (tarpit below
// -3, 100,000 clients remembered), with bans on at banBelow (0: off), on
// the real clock, with trusted networks as the server asks for them.
func benchBook(b *testing.B, banBelow int) *Book {
	b.Helper()
	trusted := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	book, err := New(Config{
		Points:      Points(-5, -2, -1),
		TarpitBelow: -3, TarpitStep: 500 * time.Millisecond, TarpitMax: 5 * time.Second,
		BanBelow: banBelow, BanTime: time.Hour, ForgiveAfter: 5 * time.Minute, MaxClients: 100_000,
	}, nil, func(a netip.Addr) bool {
		for _, p := range trusted {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}, nil)
	if err != nil {
		b.Fatal(err)
	}
	return book
}

// benchAddrs are n clients, 198.18.0.0 onwards.
func benchAddrs(n int) []netip.Addr {
	out := make([]netip.Addr, n)
	for i := range out {
		out[i] = netip.AddrFrom4([4]byte{198, 18 + byte(i>>16), byte(i >> 8), byte(i)})
	}
	return out
}

// BenchmarkPenalize is one refusal charged to a client: one the book
// already scores (4,096 of them in turn), and each time a new one (a flood
// from many addresses: past 100,000 the least recently seen are dropped).
func BenchmarkPenalize(b *testing.B) {
	b.Run("known", func(b *testing.B) {
		book := benchBook(b, 0)
		addrs := benchAddrs(4096)
		for _, a := range addrs {
			book.Penalize(a, reason.UnknownUser, 0)
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			book.Penalize(addrs[i%len(addrs)], reason.UnknownUser, 0)
			i++
		}
	})
	b.Run("new", func(b *testing.B) {
		book := benchBook(b, 0)
		b.ReportAllocs()
		n := uint32(0xc6120000) // 198.18.0.0
		for b.Loop() {
			n++
			book.Penalize(netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}), reason.UnknownUser, 0)
		}
	})
}

// BenchmarkDelay is the tarpit's question, asked before each batch of
// replies: for a client the book does not score, and for one below the
// tarpit threshold.
func BenchmarkDelay(b *testing.B) {
	book := benchBook(b, 0)
	addrs := benchAddrs(4096)
	for _, a := range addrs[:2048] {
		book.Penalize(a, reason.Pregreet, 0) // -5: tarpitted
	}
	for _, bc := range []struct {
		name  string
		addrs []netip.Addr
		want  time.Duration
	}{
		{"unscored", addrs[2048:], 0},
		{"tarpitted", addrs[:2048], time.Second},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if d := book.Delay(bc.addrs[i%len(bc.addrs)]); d != bc.want {
					b.Fatalf("delay %v, want %v", d, bc.want)
				}
				i++
			}
		})
	}
}

// BenchmarkBanned is the ban check of each connection: with no ban in
// force (the fast path, without the lock), and with 10, 1,000 and 100,000
// bans of other clients in force; and a banned client's among them.
func BenchmarkBanned(b *testing.B) {
	clients := benchAddrs(256)
	for _, n := range []int{0, 10, 1000, 100_000} {
		book := benchBook(b, -20)
		for i := range n {
			a := netip.AddrFrom4([4]byte{10, byte(200 + i>>16), byte(i >> 8), byte(i)})
			book.Add(Ban{Prefix: netip.PrefixFrom(a, 32), Reason: reason.Pregreet, By: "score",
				Created: time.Now(), Expires: time.Now().Add(time.Hour)})
		}
		b.Run(fmt.Sprintf("bans=%d/not_banned", n), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, banned := book.Banned(clients[i%len(clients)]); banned {
					b.Fatal("banned")
				}
				i++
			}
		})
		if n == 0 {
			continue
		}
		b.Run(fmt.Sprintf("bans=%d/banned", n), func(b *testing.B) {
			banned := netip.AddrFrom4([4]byte{10, byte(200 + (n-1)>>16), byte((n - 1) >> 8), byte(n - 1)})
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := book.Banned(banned); !ok {
					b.Fatal("not banned")
				}
			}
		})
	}
}
