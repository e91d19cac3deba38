package limit

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxguard/mxguard/internal/redistest"
)

// scaleClients is how many distinct clients TestRedisMemoryPerClient
// tracks: MXGUARD_SCALE_CLIENTS, or a number small enough for every test
// run. BENCHMARKS.md's figures are at 1,000,000:
//
//	MXGUARD_SCALE_CLIENTS=1000000 go test -run TestRedisMemoryPerClient -v -timeout 30m ./internal/limit/
func scaleClients(t *testing.T) int {
	s := os.Getenv("MXGUARD_SCALE_CLIENTS")
	if s == "" {
		return 20_000
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 1<<24 {
		t.Fatalf("MXGUARD_SCALE_CLIENTS=%q: want a number of clients in [1, %d]", s, 1<<24)
	}
	return n
}

// scaleAddr is the i-th client, an IPv4 address in 10.0.0.0/8 spread as
// the tier layout wants: perNet clients in each /24.
func scaleAddr(i, perNet int) [4]byte {
	net := i / perNet
	return [4]byte{10 + byte(net>>16), byte(net >> 8), byte(net), byte(i % perNet)}
}

func addrKey(a [4]byte) string {
	return fmt.Sprintf("%d.%d.%d.%d", a[0], a[1], a[2], a[3])
}

func netKey(a [4]byte) string {
	return fmt.Sprintf("%d.%d.%d.0/24", a[0], a[1], a[2])
}

// usedMemory is what Redis's allocator holds (INFO memory's used_memory)
// less the clients' buffers (mem_clients_normal), which the pipelines of
// the load swell for a while and which are not the counters' cost.
func usedMemory(t *testing.T, c *redis.Client) int64 {
	t.Helper()
	info, err := c.InfoMap(context.Background(), "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	var n [2]int64
	for i, f := range []string{"used_memory", "mem_clients_normal"} {
		if n[i], err = strconv.ParseInt(info["Memory"][f], 10, 64); err != nil {
			t.Fatalf("INFO memory %s: %v", f, err)
		}
	}
	return n[0] - n[1]
}

// loadScripts loads the limiter's scripts, for pipelines of EVALSHA.
func loadScripts(t *testing.T, r *Redis) {
	t.Helper()
	for _, s := range []*redis.Script{rateScript, windowScript, acquireScript} {
		if err := s.Load(context.Background(), r.client).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// load runs n operations through r's own scripts and arguments, in
// pipelines of 1,000 from 4 goroutines, so that a million clients take
// seconds. op(i, pipe) queues the i-th.
func load(t *testing.T, r *Redis, n int, op func(ctx context.Context, i int, pipe redis.Pipeliner)) {
	t.Helper()
	ctx := context.Background()
	const batch, workers = 1000, 4
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for from := w * batch; from < n; from += workers * batch {
				pipe := r.client.Pipeline()
				for i := from; i < min(from+batch, n); i++ {
					op(ctx, i, pipe)
				}
				if _, err := pipe.Exec(ctx); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
}

// measureLoad returns how much Redis memory at addr load(n, op) takes, op
// queueing the limiter's scripts. The load's connections are closed before
// each measure, so that their buffers do not count; and a first run of op
// on a few thousand, flushed before measuring, grows what the server keeps
// however many keys it holds (tables and buffers, about 100 KB: enough to
// swamp a load of a few keys).
func measureLoad(t *testing.T, addr string, n int, op func(ctx context.Context, r *Redis, i int, pipe redis.Pipeliner)) int64 {
	t.Helper()
	probe := redis.NewClient(&redis.Options{Addr: addr})
	defer probe.Close()
	run := func(n int) {
		r, err := NewRedis(RedisOptions{Addr: addr, NodeID: "mx1.example.net", LeaseTTL: scaleWindow, Timeout: time.Minute}, nil)
		if err != nil {
			t.Fatal(err)
		}
		loadScripts(t, r)
		load(t, r, n, func(ctx context.Context, i int, pipe redis.Pipeliner) { op(ctx, r, i, pipe) })
		r.Close()
		waitClients(t, probe, 1)
	}
	run(min(n, 8000))
	if err := probe.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	before := usedMemory(t, probe)
	run(n)
	return usedMemory(t, probe) - before
}

// waitClients waits until the server has n clients connected: closed
// connections are freed when the server reads their end.
func waitClients(t *testing.T, c *redis.Client, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := c.InfoMap(context.Background(), "clients").Result()
		if err != nil {
			t.Fatal(err)
		}
		got := info["Clients"]["connected_clients"]
		if got == strconv.Itoa(n) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s clients connected after 10s, want %d", got, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// queueRate queues what r.Rate would run for key.
func queueRate(ctx context.Context, r *Redis, pipe redis.Pipeliner, key string, limit int) {
	script, keys, args := r.rateCall(key, scaleWindow, limit)
	script.EvalSha(ctx, pipe, keys, args...)
}

// queueAcquire queues what r.Acquire would run for key.
func queueAcquire(ctx context.Context, r *Redis, pipe redis.Pipeliner, key string) {
	acquireScript.EvalSha(ctx, pipe, []string{r.key("conn", key)},
		r.nowArg(), r.leaseTTL.Milliseconds(), r.member(r.seq.Add(1)))
}

// scaleWindow is long enough that nothing expires while a million clients
// load: memory does not depend on the window's length.
const scaleWindow = time.Hour

// TestRedisMemoryPerClient measures (INFO memory, used_memory before and
// after) what the shared counters cost Redis per distinct client, with the
// limiter's own scripts, keys and members (NodeID "mx1.example.net", the
// length of a typical host name, is part of each member). It holds each
// figure to a ceiling, so that a change that makes the keys fatter fails.
func TestRedisMemoryPerClient(t *testing.T) {
	n := scaleClients(t)
	tests := []struct {
		name string
		// keys the load leaves, as a multiple of n (rounded up)
		keysPer float64
		perNet  int // clients in a /24
		op      func(ctx context.Context, r *Redis, i int, pipe redis.Pipeliner, a [4]byte)
		ceiling float64 // bytes per client
	}{
		{"ClientRate 5, 1 connection each (log of 1)", 1, 256, func(ctx context.Context, r *Redis, _ int, p redis.Pipeliner, a [4]byte) {
			queueRate(ctx, r, p, addrKey(a), 5)
		}, 250},
		{"ClientRate 5, 6 connections each (log of 6, the most kept)", 1, 256, func(ctx context.Context, r *Redis, _ int, p redis.Pipeliner, a [4]byte) {
			for range 6 {
				queueRate(ctx, r, p, addrKey(a), 5)
			}
		}, 550},
		{"ClientConn, 1 open connection each (1 lease)", 1, 256, func(ctx context.Context, r *Redis, _ int, p redis.Pipeliner, a [4]byte) {
			queueAcquire(ctx, r, p, addrKey(a))
		}, 250},
		{"ClientRate above 1,000 (sliding-window counter)", 1, 256, func(ctx context.Context, r *Redis, _ int, p redis.Pipeliner, a [4]byte) {
			queueRate(ctx, r, p, addrKey(a), approxLimit)
		}, 250},
		{"/24 tier of ClientRate 5 (limit 20), 256 clients a /24", 1.0 / 256, 256, func(ctx context.Context, r *Redis, _ int, p redis.Pipeliner, a [4]byte) {
			queueRate(ctx, r, p, netKey(a), 20)
		}, 10},
		{"/24 tier of ClientRate 5 (limit 20), 1 client a /24", 1, 1, func(ctx context.Context, r *Redis, _ int, p redis.Pipeliner, a [4]byte) {
			queueRate(ctx, r, p, netKey(a), 20)
		}, 250},
		{"/24 tier of ClientConn 3 (limit 12), 12 clients a /24, 1 open each", 1.0 / 12, 12, func(ctx context.Context, r *Redis, _ int, p redis.Pipeliner, a [4]byte) {
			queueAcquire(ctx, r, p, netKey(a))
		}, 100},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr := redistest.Start(t)
			start := time.Now()
			used := measureLoad(t, addr, n, func(ctx context.Context, r *Redis, i int, pipe redis.Pipeliner) {
				tc.op(ctx, r, i, pipe, scaleAddr(i, tc.perNet))
			})
			took := time.Since(start)
			c := redis.NewClient(&redis.Options{Addr: addr})
			defer c.Close()
			if v, err := c.InfoMap(context.Background(), "server").Result(); err == nil {
				t.Logf("%d distinct clients, redis-server %s", n, v["Server"]["redis_version"])
			}
			keys, err := c.DBSize(context.Background()).Result()
			if err != nil {
				t.Fatal(err)
			}
			if want := int64((float64(n)*tc.keysPer + 0.999)); keys != want {
				t.Fatalf("%d keys, want %d", keys, want)
			}
			per := float64(used) / float64(n)
			t.Logf("%s: %d keys, %d bytes: %.1f bytes a client, %.1f a key (loaded twice in %v)",
				tc.name, keys, used, per, float64(used)/float64(keys), took.Round(time.Millisecond))
			if per > tc.ceiling {
				t.Errorf("%.1f bytes a client, more than %.0f", per, tc.ceiling)
			}
		})
	}
}

// TestRedisMemoryLongLog measures a log at the largest exact limit, 1,000
// (1,001 connection times): what the counter that replaces it above
// ExactRateLimit saves. A thousandth of scaleClients keys (at least
// 50) are enough: each is large.
func TestRedisMemoryLongLog(t *testing.T) {
	keys := max(scaleClients(t)/1000, 50)
	used := measureLoad(t, redistest.Start(t), keys*(ExactRateLimit+1), func(ctx context.Context, r *Redis, i int, pipe redis.Pipeliner) {
		queueRate(ctx, r, pipe, addrKey(scaleAddr(i%keys, 256)), ExactRateLimit)
	})
	per := float64(used) / float64(keys)
	t.Logf("limit %d, %d connections each, %d keys: %.0f bytes a key", ExactRateLimit, ExactRateLimit+1, keys, per)
	if per > 200_000 {
		t.Errorf("%.0f bytes a key, more than 200,000", per)
	}
}

// TestMemoryBytesPerClient measures the in-process counters' heap per
// distinct client (runtime.MemStats.HeapAlloc after a collection, before
// and after): what each node of a fleet holds besides Redis, since
// Failover counts every connection locally too, for the outage.
func TestMemoryBytesPerClient(t *testing.T) {
	n := scaleClients(t)
	for _, tc := range []struct {
		name    string
		op      func(m *Memory, key string)
		ceiling float64
	}{
		{"ClientRate 5, 1 connection each", func(m *Memory, k string) { _, _ = m.Rate(context.Background(), k, time.Hour, 5) }, 250},
		{"ClientConn, 1 open connection each", func(m *Memory, k string) { _, _, _ = m.Acquire(context.Background(), k) }, 250},
		{"ClientRate above 1,000, 1 connection each", func(m *Memory, k string) {
			_, _ = m.Rate(context.Background(), k, time.Hour, approxLimit)
		}, 250},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys := make([]string, n)
			for i := range keys {
				keys[i] = addrKey(scaleAddr(i, 256))
			}
			heap := func() uint64 {
				var ms runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&ms)
				return ms.HeapAlloc
			}
			before := heap()
			m := NewMemory(nil)
			defer m.Close()
			for _, k := range keys {
				tc.op(m, k)
			}
			keys = nil // the keys the map holds are its own copies
			per := (float64(heap()) - float64(before)) / float64(n)
			if m.Len() != n {
				t.Fatalf("%d keys remembered, want %d", m.Len(), n)
			}
			t.Logf("%s: %d clients, %.1f bytes a client", tc.name, n, per)
			if per > tc.ceiling {
				t.Errorf("%.1f bytes a client, more than %.0f", per, tc.ceiling)
			}
		})
	}
}

// TestRedisMembersStayCompact checks that a long NodeID (a cloud host name)
// does not push the members of a client's sorted sets past the 64 bytes up
// to which Redis keeps them compact (listpack), which would cost 5.7 times
// the memory per client, and that two processes with the same NodeID still
// write members of their own.
func TestRedisMembersStayCompact(t *testing.T) {
	addr := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	ctx := context.Background()
	for _, node := range []string{"ip-172-31-22-145.eu-central-1.compute.internal", strings.Repeat("n", 300)} {
		prefix := fmt.Sprintf("t%d:", len(node))
		a := newTestRedis(t, RedisOptions{Addr: addr, NodeID: node, KeyPrefix: prefix})
		b := newTestRedis(t, RedisOptions{Addr: addr, NodeID: node, KeyPrefix: prefix})
		for _, r := range []*Redis{a, b} {
			r.seq.Store(1<<64 - 3) // the longest sequence numbers
			for range 2 {
				if _, err := r.Rate(ctx, "k", time.Minute, 5); err != nil {
					t.Fatal(err)
				}
				if _, _, err := r.Acquire(ctx, "k"); err != nil {
					t.Fatal(err)
				}
			}
		}
		for _, key := range []string{prefix + "rate:{k}", prefix + "conn:{k}"} {
			members, err := c.ZRange(ctx, key, 0, -1).Result()
			if err != nil || len(members) != 4 {
				t.Errorf("NodeID of %d characters: %s holds %q (%v), want 4 members of their own", len(node), key, members, err)
			}
			for _, m := range members {
				if len(m) > 64 {
					t.Errorf("member %q: %d bytes", m, len(m))
				}
			}
			if enc, err := c.ObjectEncoding(ctx, key).Result(); err != nil || enc != "listpack" {
				t.Errorf("NodeID of %d characters: %s is a %q (%v), want a listpack", len(node), key, enc, err)
			}
		}
	}
}
