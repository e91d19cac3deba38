package limit

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxguard/mxguard/internal/redistest"
)

func TestNewRedisBadOptions(t *testing.T) {
	tests := []struct {
		name string
		opts RedisOptions
	}{
		{"no address", RedisOptions{}},
		{"bad URL", RedisOptions{URL: "http://example.com/"}},
		{"negative timeout", RedisOptions{Addr: "127.0.0.1:1", Timeout: -time.Second}},
		{"lease TTL too short", RedisOptions{Addr: "127.0.0.1:1", LeaseTTL: time.Millisecond}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if r, err := NewRedis(tc.opts, nil); err == nil {
				r.Close()
				t.Error("no error")
			}
		})
	}
}

func TestRedisURL(t *testing.T) {
	addr := redistest.Start(t)
	r := newTestRedis(t, RedisOptions{URL: "redis://" + addr + "/3"})
	if err := r.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Rate(context.Background(), "a", time.Minute, 5); err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: addr, DB: 3})
	defer c.Close()
	if n, err := c.Exists(context.Background(), DefaultKeyPrefix+"rate:{a}").Result(); err != nil || n != 1 {
		t.Errorf("key in DB 3: exists = %d, %v", n, err)
	}
}

// TestRedisNodesShareCounts runs two limiters, as two nodes of a fleet, on
// one server.
func TestRedisNodesShareCounts(t *testing.T) {
	addr := redistest.Start(t)
	a := newTestRedis(t, RedisOptions{Addr: addr, NodeID: "a"})
	b := newTestRedis(t, RedisOptions{Addr: addr, NodeID: "b"})
	other := newTestRedis(t, RedisOptions{Addr: addr, NodeID: "c", KeyPrefix: "otherfleet:"})
	ctx := context.Background()

	for i, node := range []*Redis{a, b, a, b, a} {
		if n, err := node.Rate(ctx, "192.0.2.7", time.Minute, 5); err != nil || n != i+1 {
			t.Errorf("connection %d: Rate = %d, %v; want %d", i, n, err, i+1)
		}
	}
	if n, _ := b.Rate(ctx, "192.0.2.7", time.Minute, 5); n != 6 {
		t.Errorf("sixth connection across the fleet: count %d, want 6", n)
	}
	if n, _ := other.Rate(ctx, "192.0.2.7", time.Minute, 5); n != 1 {
		t.Errorf("another key prefix: count %d, want 1", n)
	}

	_, ra, err := a.Acquire(ctx, "192.0.2.7")
	if err != nil {
		t.Fatal(err)
	}
	n, rb, err := b.Acquire(ctx, "192.0.2.7")
	if err != nil || n != 2 {
		t.Fatalf("second node's Acquire = %d, %v; want 2", n, err)
	}
	ra()
	ra() // idempotent: must not remove b's lease
	n, rb2, _ := b.Acquire(ctx, "192.0.2.7")
	if n != 2 {
		t.Errorf("after a released: count %d, want 2", n)
	}
	rb()
	rb2()
}

func TestRedisKeysExpire(t *testing.T) {
	addr := redistest.Start(t)
	r := newTestRedis(t, RedisOptions{Addr: addr, LeaseTTL: 9 * time.Second})
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()

	if _, err := r.Rate(ctx, "a", 20*time.Second, 5); err != nil {
		t.Fatal(err)
	}
	_, release, err := r.Acquire(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []struct {
		key string
		max time.Duration
	}{
		{DefaultKeyPrefix + "rate:{a}", 20 * time.Second},
		{DefaultKeyPrefix + "conn:{a}", 9 * time.Second},
	} {
		ttl, err := c.PTTL(ctx, k.key).Result()
		if err != nil || ttl <= 0 || ttl > k.max {
			t.Errorf("%s: PTTL %v, %v; want in (0, %v]", k.key, ttl, err, k.max)
		}
	}
	release()
	if n, _ := c.Exists(ctx, DefaultKeyPrefix+"conn:{a}").Result(); n != 0 {
		t.Error("lease set left behind after the last release")
	}
	if n, _ := c.ZCard(ctx, DefaultKeyPrefix+"rate:{a}").Result(); n != 1 {
		t.Errorf("rate log holds %d entries, want 1", n)
	}
}

// waitCount polls node's count for key (one Acquire, released at once)
// until it is want or the deadline passes.
func waitCount(t *testing.T, node Limiter, key string, want int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		n, release, err := node.Acquire(context.Background(), key)
		if err == nil {
			release()
			if n-1 == want {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("count of others for %s: %d (err %v), want %d within %v", key, n-1, err, want, within)
		}
		<-tick.C
	}
}

// TestRedisLeases checks that a live node's leases outlast LeaseTTL while
// it renews them, that a dead node's leases expire, and that renewal puts
// leases back after Redis restarts empty.
func TestRedisLeases(t *testing.T) {
	// Renewals every ttl/3 must come in time, and an expiry is measured
	// against it, on a loaded machine too: 300ms was too short.
	const ttl = time.Second
	t.Parallel() // mostly waiting for the TTL
	srv := redistest.StartServer(t)
	a := newTestRedis(t, RedisOptions{Addr: srv.Addr, NodeID: "a", LeaseTTL: ttl})
	b := newTestRedis(t, RedisOptions{Addr: srv.Addr, NodeID: "b", LeaseTTL: ttl})
	ctx := context.Background()

	for range 2 {
		if _, _, err := a.Acquire(ctx, "k"); err != nil {
			t.Fatal(err)
		}
	}
	waitCount(t, b, "k", 2, time.Second)

	// Well past the TTL, a's renewals keep its connections counted.
	<-time.After(3 * ttl)
	waitCount(t, b, "k", 2, 0)

	srv.Stop()
	if err := b.Ping(ctx); err == nil {
		t.Error("Ping answered with the server stopped")
	}
	srv.Restart()
	waitCount(t, b, "k", 2, 5*ttl)

	// a dies: its renewals stop, its leases are not removed.
	a.stop()
	<-a.done
	start := time.Now()
	waitCount(t, b, "k", 0, 3*ttl)
	if d := time.Since(start); d > 2*ttl {
		t.Errorf("dead node's leases took %v to expire, LeaseTTL %v", d, ttl)
	}
}

// TestRedisCloseReleases checks that a node that shuts down removes its
// leases at once instead of leaving them to expire.
func TestRedisCloseReleases(t *testing.T) {
	addr := redistest.Start(t)
	a, err := NewRedis(RedisOptions{Addr: addr, NodeID: "a"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b := newTestRedis(t, RedisOptions{Addr: addr, NodeID: "b"})
	_, release, err := a.Acquire(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	release() // after Close: harmless
	waitCount(t, b, "k", 0, 0)
}

func BenchmarkRedisRate(b *testing.B) {
	r := newTestRedis(b, RedisOptions{Addr: redistest.Start(b), Timeout: time.Second})
	ctx := context.Background()
	keys := benchKeys(1024)
	var worker atomic.Int64
	// Many connections are admitted at once; Redis round trips overlap.
	b.SetParallelism(8)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(worker.Add(1)) * 97
		for pb.Next() {
			if _, err := r.Rate(ctx, keys[i%len(keys)], time.Minute, 5); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

func BenchmarkRedisAcquire(b *testing.B) {
	r := newTestRedis(b, RedisOptions{Addr: redistest.Start(b), Timeout: time.Second})
	ctx := context.Background()
	var worker atomic.Int64
	// Many connections are admitted at once; Redis round trips overlap.
	b.SetParallelism(8)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		key := "192.0.2." + strconv.Itoa(int(worker.Add(1)))
		for pb.Next() {
			_, release, err := r.Acquire(ctx, key)
			if err != nil {
				b.Fatal(err)
			}
			release()
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}
