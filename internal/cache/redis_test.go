package cache

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxguard/mxguard/internal/redistest"
)

// syncBuffer collects log output from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) count(substr string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Count(s.b.String(), substr)
}

func newTestRedis(t testing.TB, opts RedisOptions, log *syncBuffer) *Redis {
	t.Helper()
	var logger *slog.Logger
	if log != nil {
		logger = slog.New(slog.NewTextHandler(log, nil))
	}
	r, err := NewRedis(opts, newTestMemory(t, 1000, nil), logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func TestNewRedisBadOptions(t *testing.T) {
	mem := newTestMemory(t, 10, nil)
	for _, tc := range []struct {
		name     string
		opts     RedisOptions
		fallback *Memory
	}{
		{"no address", RedisOptions{}, mem},
		{"bad URL", RedisOptions{URL: "http://example.com/"}, mem},
		{"negative timeout", RedisOptions{Addr: "127.0.0.1:1", Timeout: -time.Second}, mem},
		{"no fallback", RedisOptions{Addr: "127.0.0.1:1"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if r, err := NewRedis(tc.opts, tc.fallback, nil); err == nil {
				r.Close()
				t.Error("no error")
			}
		})
	}
}

// TestRedisShared runs two caches, as two nodes of a fleet, on one server,
// and a third with another key prefix.
func TestRedisShared(t *testing.T) {
	addr := redistest.Start(t)
	a := newTestRedis(t, RedisOptions{Addr: addr}, nil)
	b := newTestRedis(t, RedisOptions{URL: "redis://" + addr}, nil)
	other := newTestRedis(t, RedisOptions{Addr: addr, KeyPrefix: "otherfleet:"}, nil)
	ctx := context.Background()

	if v, ok := b.Get(ctx, "verify:bob@example.org"); ok {
		t.Fatalf("Get before any Set = %q", v)
	}
	a.Set(ctx, "verify:bob@example.org", "V250 ok", time.Minute)
	if v, ok := b.Get(ctx, "verify:bob@example.org"); !ok || v != "V250 ok" {
		t.Errorf("other node's Get = %q, %v", v, ok)
	}
	if v, ok := other.Get(ctx, "verify:bob@example.org"); ok {
		t.Errorf("another key prefix sees %q", v)
	}
	a.Set(ctx, "verify:none", "x", 0)

	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	ttl, err := c.PTTL(ctx, DefaultKeyPrefix+"verify:bob@example.org").Result()
	if err != nil || ttl <= 50*time.Second || ttl > time.Minute {
		t.Errorf("PTTL = %v, %v; want just under a minute", ttl, err)
	}
	if n, _ := c.Exists(ctx, DefaultKeyPrefix+"verify:none").Result(); n != 0 {
		t.Error("a zero TTL stored a key")
	}
}

func TestRedisExpires(t *testing.T) {
	addr := redistest.Start(t)
	r := newTestRedis(t, RedisOptions{Addr: addr}, nil)
	ctx := context.Background()
	r.Set(ctx, "k", "v", 50*time.Millisecond)
	r.Set(ctx, "sub-ms", "v", time.Microsecond) // rounded up to 1ms, not refused
	if _, ok := r.Get(ctx, "k"); !ok {
		t.Fatal("miss right after Set")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, ok := r.Get(ctx, "k")
		_, ok2 := r.Get(ctx, "sub-ms")
		if !ok && !ok2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("keys still there 5s after their TTL")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r.down.Load() {
		t.Error("cache marked Redis down")
	}
}

// waitRecovered calls Get until Redis answers again, within a few retry
// intervals.
func waitRecovered(t *testing.T, r *Redis) {
	t.Helper()
	deadline := time.Now().Add(5 * retryInterval)
	for r.down.Load() {
		r.Get(context.Background(), "probe")
		if time.Now().After(deadline) {
			t.Fatal("not recovered after Redis came back")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRedisStopped: with the server gone, values set before are found in
// the warm fallback, new ones are kept there, no call waits on Redis after
// the first, and the outage and the recovery are logged once each.
func TestRedisStopped(t *testing.T) {
	srv := redistest.StartServer(t)
	log := &syncBuffer{}
	r := newTestRedis(t, RedisOptions{Addr: srv.Addr}, log)
	ctx := context.Background()

	r.Set(ctx, "before", "b", time.Hour)
	srv.Stop()
	if v, ok := r.Get(ctx, "before"); !ok || v != "b" {
		t.Errorf("Get(before) with Redis stopped = %q, %v; want the fallback's copy", v, ok)
	}
	if !r.down.Load() {
		t.Fatal("Redis not marked down")
	}
	start := time.Now()
	for range 100 {
		r.Set(ctx, "during", "d", time.Hour)
		if v, ok := r.Get(ctx, "during"); !ok || v != "d" {
			t.Fatalf("Get(during) = %q, %v", v, ok)
		}
	}
	// Within one retry interval no call goes to Redis; after it one call
	// does, and that one is bounded by the timeout.
	if el := time.Since(start); el > retryInterval/2+2*DefaultTimeout {
		t.Errorf("200 calls during the outage took %v", el)
	}
	// Past the retry interval a call tries Redis again, fails again, and
	// that is not news.
	time.Sleep(retryInterval + 100*time.Millisecond)
	r.Get(ctx, "during")
	if !r.down.Load() {
		t.Error("Redis not down after a second failed try")
	}
	if n := log.count("redis unreachable"); n != 1 {
		t.Errorf("outage logged %d times, want once:\n%s", n, log.String())
	}

	srv.Restart()
	waitRecovered(t, r)
	if n := log.count("redis reachable again"); n != 1 {
		t.Errorf("recovery logged %d times, want once", n)
	}
	// Redis restarted empty; while it answers it alone is the cache.
	if v, ok := r.Get(ctx, "during"); ok {
		t.Errorf("Get(during) = %q after recovery, want Redis's miss", v)
	}
	r.Set(ctx, "after", "a", time.Hour)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer c.Close()
	if v, err := c.Get(ctx, DefaultKeyPrefix+"after").Result(); err != nil || v != "a" {
		t.Errorf("Redis holds %q, %v after recovery", v, err)
	}
	if n := log.count("redis unreachable"); n != 1 {
		t.Errorf("outage logged %d times in all, want once", n)
	}
}

// TestRedisPaused: a hung server costs one call the timeout, not every
// call, and the cache recovers when the server resumes.
func TestRedisPaused(t *testing.T) {
	srv := redistest.StartServer(t)
	log := &syncBuffer{}
	const timeout = 100 * time.Millisecond
	r := newTestRedis(t, RedisOptions{Addr: srv.Addr, Timeout: timeout}, log)
	ctx := context.Background()
	r.Set(ctx, "k", "v", time.Hour) // opens a pooled connection

	srv.Pause()
	start := time.Now()
	v, ok := r.Get(ctx, "k")
	if el := time.Since(start); el > timeout+time.Second {
		t.Errorf("Get on a hung Redis took %v, timeout %v", el, timeout)
	}
	if !ok || v != "v" {
		t.Errorf("Get = %q, %v; want the fallback's copy", v, ok)
	}
	start = time.Now()
	for range 50 {
		r.Get(ctx, "k")
		r.Set(ctx, "k2", "v2", time.Hour)
	}
	if el := time.Since(start); el > retryInterval/2+2*timeout {
		t.Errorf("100 calls to a cache whose Redis hangs took %v", el)
	}
	srv.Resume()
	waitRecovered(t, r)
	if n, m := log.count("redis unreachable"), log.count("redis reachable again"); n != 1 || m != 1 {
		t.Errorf("logged the outage %d times and the recovery %d times, want once each", n, m)
	}
}

// TestRedisCallerGaveUp: a caller whose context has ended gets a miss, and
// Redis is not blamed for it.
func TestRedisCallerGaveUp(t *testing.T) {
	r := newTestRedis(t, RedisOptions{Addr: redistest.Start(t)}, nil)
	r.Set(context.Background(), "k", "v", time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, ok := r.Get(ctx, "k"); ok {
		// The fallback has it; a cancelled caller is not served from it
		// either, as it has stopped waiting.
		t.Error("hit for a cancelled caller")
	}
	r.Set(ctx, "k3", "v", time.Hour)
	if r.down.Load() {
		t.Error("Redis marked down because a caller gave up")
	}
}

func BenchmarkRedisGetHit(b *testing.B) {
	r := newTestRedis(b, RedisOptions{Addr: redistest.Start(b), Timeout: time.Second}, nil)
	ctx := context.Background()
	r.Set(ctx, "verify:alice@example.org", "V250 2.1.5 Ok", time.Hour)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := r.Get(ctx, "verify:alice@example.org"); !ok {
			b.Fatal("miss")
		}
	}
}
