package limit

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxguard/mxguard/internal/redistest"
)

// redisStats is what BenchmarkFleetAdmissions reads from the server.
type redisStats struct {
	cpu      float64 // seconds, user and system
	commands int64   // calls of the commands clients sent (evalsha, zrem)
	in, out  int64   // octets read from and written to the network
	p50, p99 float64 // EVALSHA's run time in the server, µs (INFO latencystats)
}

func readRedisStats(b *testing.B, c *redis.Client) redisStats {
	b.Helper()
	info, err := c.InfoMap(context.Background(), "cpu", "stats", "commandstats", "latencystats").Result()
	if err != nil {
		b.Fatal(err)
	}
	var s redisStats
	for _, f := range []string{"used_cpu_user", "used_cpu_sys"} {
		v, err := strconv.ParseFloat(info["CPU"][f], 64)
		if err != nil {
			b.Fatalf("INFO cpu %s: %v", f, err)
		}
		s.cpu += v
	}
	s.in, _ = strconv.ParseInt(info["Stats"]["total_net_input_bytes"], 10, 64)
	s.out, _ = strconv.ParseInt(info["Stats"]["total_net_output_bytes"], 10, 64)
	for _, cmd := range []string{"evalsha", "zrem"} {
		// calls=N,usec=...
		for _, kv := range splitInfo(info["Commandstats"]["cmdstat_"+cmd]) {
			if kv[0] == "calls" {
				n, _ := strconv.ParseInt(kv[1], 10, 64)
				s.commands += n
			}
		}
	}
	for _, kv := range splitInfo(info["Latencystats"]["latency_percentiles_usec_evalsha"]) {
		v, _ := strconv.ParseFloat(kv[1], 64)
		switch kv[0] {
		case "p50":
			s.p50 = v
		case "p99":
			s.p99 = v
		}
	}
	return s
}

// splitInfo splits INFO's "a=1,b=2" into pairs.
func splitInfo(s string) [][2]string {
	var out [][2]string
	for _, f := range strings.Split(s, ",") {
		if k, v, ok := strings.Cut(f, "="); ok {
			out = append(out, [2]string{k, v})
		}
	}
	return out
}

// BenchmarkFleetAdmissions is three nodes of a fleet, each its own
// limiter (Redis behind Failover, as the server builds it, with its own
// connection pool), admitting connections against one redis-server as fast
// as they can: for each connection, what admission asks of the limiter
// (Rate and Acquire for each tier, ClientRate 5 and ClientConn 3, tier
// limits ×4) and the release when it ends. Every connection is from a
// client not seen before. It reports admissions a second, the admission's
// wait (Rate and Acquire of every tier) at p50 and p99, the Redis server's
// CPU (INFO cpu) in all and per admission, the octets it read and wrote per
// admission (INFO stats), and the server's own time per EVALSHA (INFO
// latencystats). The nodes, the server and the benchmark
// share this machine's cores.
//
//	go test -run '^$' -bench FleetAdmissions -benchtime 10s -count 3 ./internal/limit/
func BenchmarkFleetAdmissions(b *testing.B) {
	for _, tiers := range []int{1, 2} {
		b.Run(fmt.Sprintf("tiers=%d", tiers), func(b *testing.B) {
			addr := redistest.Start(b)
			probe := redis.NewClient(&redis.Options{Addr: addr})
			defer probe.Close()
			const nodes = 3
			var fleet [nodes]*Failover
			for i := range fleet {
				r := newTestRedis(b, RedisOptions{Addr: addr, NodeID: "mx" + strconv.Itoa(i+1) + ".example.net", Timeout: 5 * time.Second})
				fleet[i] = NewFailover(r, newTestMemory(b, nil), PolicyTempfail, nil)
			}
			ctx := context.Background()
			var next atomic.Uint64
			var mu sync.Mutex
			var waits []time.Duration
			admit := func(node *Failover, client uint64) (time.Duration, error) {
				a := [4]byte{10 + byte(client>>24), byte(client >> 16), byte(client >> 8), byte(client)}
				keys := []string{addrKey(a), netKey(a)}[:tiers]
				limits := []int{5, 20}
				start := time.Now()
				var releases []func()
				defer func() {
					for _, r := range releases {
						r()
					}
				}()
				for i, k := range keys {
					if _, err := node.Rate(ctx, k, time.Minute, limits[i]); err != nil {
						return 0, err
					}
				}
				for _, k := range keys {
					_, release, err := node.Acquire(ctx, k)
					if err != nil {
						return 0, err
					}
					releases = append(releases, release)
				}
				return time.Since(start), nil
			}
			// Load the scripts before the clock starts.
			for i, node := range fleet {
				if _, err := admit(node, uint64(1<<27+i)); err != nil {
					b.Fatal(err)
				}
			}
			if err := probe.ConfigResetStat(ctx).Err(); err != nil {
				b.Fatal(err)
			}
			before := readRedisStats(b, probe)
			// Many connections are admitted at once on each node.
			b.SetParallelism(16)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				var mine []time.Duration
				for pb.Next() {
					c := next.Add(1)
					d, err := admit(fleet[c%nodes], c)
					if err != nil {
						b.Error(err)
						return
					}
					mine = append(mine, d)
				}
				mu.Lock()
				waits = append(waits, mine...)
				mu.Unlock()
			})
			b.StopTimer()
			after := readRedisStats(b, probe)
			secs := b.Elapsed().Seconds()
			slices.Sort(waits)
			pct := func(p float64) float64 {
				if len(waits) == 0 {
					return 0
				}
				return float64(waits[int(p*float64(len(waits)-1))].Microseconds())
			}
			b.ReportMetric(float64(b.N)/secs, "admissions/s")
			b.ReportMetric(pct(0.50), "p50-µs")
			b.ReportMetric(pct(0.99), "p99-µs")
			b.ReportMetric(100*(after.cpu-before.cpu)/secs, "redis-cpu-%")
			b.ReportMetric(1e6*(after.cpu-before.cpu)/float64(b.N), "redis-cpu-µs/adm")
			b.ReportMetric(float64(after.commands-before.commands)/float64(b.N), "commands/adm")
			b.ReportMetric(float64(after.in-before.in)/float64(b.N), "redis-in-B/adm")
			b.ReportMetric(float64(after.out-before.out)/float64(b.N), "redis-out-B/adm")
			b.ReportMetric(after.p50, "evalsha-p50-µs")
			b.ReportMetric(after.p99, "evalsha-p99-µs")
		})
	}
}
