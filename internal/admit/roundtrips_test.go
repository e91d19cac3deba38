package admit

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/limit"
	"github.com/mxguard/mxguard/internal/redistest"
)

// TestRedisRoundTrips counts, on a real redis-server (MONITOR), the
// commands one connection's admission sends to Redis with the fleet's
// limiter (Redis behind Failover, as the server builds it), so that the
// count cannot grow unnoticed: BENCHMARKS.md and DESIGN.md quote it. Each
// command is a round trip of its own; only lease renewal, in the background,
// pipelines (internal/limit's TestRedisRoundTrips counts it).
func TestRedisRoundTrips(t *testing.T) {
	tests := []struct {
		name          string
		tiers         []int
		first, client string // the first client after Redis starts, then one counted
		// commands at admission, and at Release
		admit, release []string
	}{
		{
			name: "one tier", tiers: []int{32}, first: "198.51.100.1", client: "192.0.2.1",
			admit:   []string{"evalsha", "evalsha"}, // Rate, Acquire
			release: []string{"zrem"},
		},
		{
			name: "two tiers (/32, /24)", tiers: []int{32, 24}, first: "198.51.100.1", client: "192.0.2.2",
			admit:   []string{"evalsha", "evalsha", "evalsha", "evalsha"},
			release: []string{"zrem", "zrem"},
		},
		{
			name: "IPv6, two tiers (/64, /48)", tiers: []int{64, 48}, first: "2001:db8:1::1", client: "2001:db8::1",
			admit:   []string{"evalsha", "evalsha", "evalsha", "evalsha"},
			release: []string{"zrem", "zrem"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr := redistest.Start(t)
			mon := redistest.NewMonitor(t, addr)
			// A long lease: no renewal runs while the test counts.
			r, err := limit.NewRedis(limit.RedisOptions{Addr: addr, Timeout: 5 * time.Second, LeaseTTL: time.Hour}, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(r.Close)
			mem := limit.NewMemory(nil)
			t.Cleanup(mem.Close)
			lim := limits()
			lim.ClientRate, lim.ClientConn = 5, 3
			if strings.Contains(tc.client, ":") {
				lim.IPv6Tiers = tc.tiers
			} else {
				lim.IPv4Tiers = tc.tiers
			}
			a := New(&Policy{Hostname: "mx.test", Limits: lim}, Deps{
				Limiter: limit.NewFailover(r, mem, limit.PolicyTempfail, nil),
				Log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
			})
			ctx := context.Background()
			admit := func(ip string) *Decision {
				t.Helper()
				d := a.Admit(ctx, netip.MustParseAddr(ip))
				if d.Reject != nil {
					t.Fatalf("%s refused: %v", ip, d.Reject)
				}
				return d
			}

			// The first admission after Redis starts opens a connection
			// (HELLO: once per pooled connection) and loads each script
			// (EVALSHA answered NOSCRIPT, then EVAL: once per server).
			d := admit(tc.first)
			perTier := len(tc.tiers) - 1
			wantCold := append([]string{"hello", "evalsha", "eval"}, tc.admit[:perTier]...)
			wantCold = append(append(wantCold, "evalsha", "eval"), tc.admit[:perTier]...)
			if got := mon.Take(); !slices.Equal(got, wantCold) {
				t.Errorf("first admission after Redis started: %v, want %v", got, wantCold)
			}
			d.Release()
			mon.Take()

			d = admit(tc.client)
			if got := mon.Take(); !slices.Equal(got, tc.admit) {
				t.Errorf("admission: %v, want %v", got, tc.admit)
			}
			d.Release()
			if got := mon.Take(); !slices.Equal(got, tc.release) {
				t.Errorf("release: %v, want %v", got, tc.release)
			}
			d.Release() // idempotent: nothing more
			if got := mon.Take(); len(got) != 0 {
				t.Errorf("second Release: %v, want nothing", got)
			}
		})
	}
}
