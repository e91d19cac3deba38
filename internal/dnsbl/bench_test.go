package dnsbl

import (
	"context"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/mxguard/mxguard/internal/cache"
	"github.com/mxguard/mxguard/internal/dnstest"
)

// benchSites are the documentation's example: four lists, one of them an
// allow list with a filter.
func benchSites() []string {
	return []string{
		"zen.spamhaus.org*2",
		"bl.spamcop.net*1",
		"list.dnswl.org=127.0.[0..255].[1..3]*-5",
		"b.barracudacentral.org=127.0.0.2*7",
	}
}

func benchZone(b *testing.B) *dnstest.Server {
	return dnstest.Start(b,
		soa("zen.spamhaus.org", 300, 300), soa("bl.spamcop.net", 300, 300),
		soa("list.dnswl.org", 300, 300), soa("b.barracudacentral.org", 300, 300),
		a(b, "192.0.2.1", "zen.spamhaus.org", 300, "127.0.0.2"),
		a(b, "192.0.2.1", "zen.spamhaus.org", 300, "127.0.0.4"),
		a(b, "192.0.2.1", "b.barracudacentral.org", 300, "127.0.0.2"),
	)
}

// BenchmarkCached is a check whose answers are all in the cache: the cost
// for a client seen again within the TTL. Start reads the checker's own
// cache itself; another cache ("shared", a Memory here to leave Redis's
// round trips out) is read by a goroutine per list.
func BenchmarkCached(b *testing.B) {
	b.Run("own", func(b *testing.B) { benchmarkCached(b, nil) })
	b.Run("shared", func(b *testing.B) {
		mem, err := cache.NewMemory(DefaultCacheSize, nil)
		if err != nil {
			b.Fatal(err)
		}
		benchmarkCached(b, mem)
	})
}

func benchmarkCached(b *testing.B, c0 cache.Cache) {
	srv := benchZone(b)
	c := newChecker(b, srv, Config{Cache: c0}, benchSites()...)
	ctx := context.Background()
	addr := netip.MustParseAddr("192.0.2.1")
	if r := c.Start(ctx, addr).Wait(ctx); r.Score != 9 {
		b.Fatalf("score %d, want 9", r.Score)
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c.Start(ctx, addr).Wait(ctx)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				c.Start(ctx, addr).Wait(ctx)
			}
		})
	})
	if n := srv.Queries(); n != len(benchSites()) {
		b.Errorf("%d queries, want %d", n, len(benchSites()))
	}
}

// BenchmarkQueried is a check of a new address: one query per list to the
// loopback DNS server, which says NXDOMAIN.
func BenchmarkQueried(b *testing.B) {
	srv := benchZone(b)
	c := newChecker(b, srv, Config{MaxInFlight: 1 << 16}, benchSites()...)
	ctx := context.Background()
	next := uint32(0x0a000000) // 10.0.0.0
	b.ReportAllocs()
	for b.Loop() {
		next++
		var a4 [4]byte
		binary.BigEndian.PutUint32(a4[:], next)
		r := c.Start(ctx, netip.AddrFrom4(a4)).Wait(ctx)
		for _, s := range r.Sites {
			if s.Outcome != NotListed {
				b.Fatalf("%s: %v (%v)", s.Site, s.Outcome, s.Err)
			}
		}
	}
	if st := c.Stats(); st.CacheHits != 0 || st.Busy != 0 {
		b.Errorf("stats %+v: want every list asked", st)
	}
}
