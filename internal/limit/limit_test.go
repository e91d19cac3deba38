package limit

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/redistest"
)

// fakeClock is a clock that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	// Near the real time, so that Redis key expiry stays sensible.
	return &fakeClock{t: time.Now().Truncate(time.Second)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// syncBuffer collects log output written from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func newTestMemory(t testing.TB, now func() time.Time) *Memory {
	t.Helper()
	m := NewMemory(now)
	t.Cleanup(m.Close)
	return m
}

func newTestRedis(t testing.TB, opts RedisOptions) *Redis {
	t.Helper()
	if opts.Timeout == 0 {
		// DefaultTimeout (100ms) is short enough for a busy test machine to
		// miss, and only the failover tests are about the timeout: they
		// set theirs.
		opts.Timeout = 5 * time.Second
	}
	r, err := NewRedis(opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// implementations yields each Limiter under test, reading time from now.
// The Redis ones share one server per test.
func implementations(t *testing.T) []struct {
	name string
	new  func(now func() time.Time) Limiter
} {
	t.Helper()
	var addr string
	return []struct {
		name string
		new  func(now func() time.Time) Limiter
	}{
		{"memory", func(now func() time.Time) Limiter { return newTestMemory(t, now) }},
		{"redis", func(now func() time.Time) Limiter {
			if addr == "" {
				addr = redistest.Start(t)
			}
			// A fresh prefix keeps the subtests apart on one server.
			return newTestRedis(t, RedisOptions{
				Addr:      addr,
				KeyPrefix: fmt.Sprintf("test%d:", time.Now().UnixNano()),
				Now:       now,
			})
		}},
	}
}

func TestRateSlidingWindow(t *testing.T) {
	type conn struct {
		at   float64 // seconds from the start
		key  string  // "" is "a"
		want int
	}
	tests := []struct {
		name   string
		window time.Duration
		limit  int
		conns  []conn
	}{
		{
			name: "sixth in the window is over", window: time.Minute, limit: 5,
			conns: []conn{{0, "", 1}, {1, "", 2}, {2, "", 3}, {3, "", 4}, {4, "", 5}, {5, "", 6}},
		},
		{
			name: "still over before the oldest ages out", window: time.Minute, limit: 5,
			conns: []conn{{0, "", 1}, {1, "", 2}, {2, "", 3}, {3, "", 4}, {4, "", 5}, {59, "", 6}},
		},
		{
			name: "one more once the oldest aged out", window: time.Minute, limit: 5,
			conns: []conn{{0, "", 1}, {1, "", 2}, {2, "", 3}, {3, "", 4}, {4, "", 5}, {60.5, "", 5}},
		},
		{
			name: "two aged out by 61s", window: time.Minute, limit: 5,
			conns: []conn{{0, "", 1}, {1, "", 2}, {2, "", 3}, {3, "", 4}, {4, "", 5}, {61, "", 4}},
		},
		{
			// A fixed 60 s bucket starting at 0 would reset at 60.
			name: "no reset at a fixed boundary", window: time.Minute, limit: 5,
			conns: []conn{{55, "", 1}, {56, "", 2}, {57, "", 3}, {58, "", 4}, {59, "", 5}, {61, "", 6}, {116.5, "", 5}},
		},
		{
			name: "a connection leaves exactly one window later", window: time.Minute, limit: 5,
			conns: []conn{{0, "", 1}, {59.999, "", 2}, {60, "", 2}, {119.999, "", 2}},
		},
		{
			name: "rejected connections count too", window: 10 * time.Second, limit: 1,
			conns: []conn{{0, "", 1}, {5, "", 2}, {12, "", 2}, {16, "", 2}, {27, "", 1}},
		},
		{
			name: "exact up to limit+1", window: time.Minute, limit: 2,
			conns: []conn{{0, "", 1}, {0, "", 2}, {0, "", 3}, {0, "", 3}, {1, "", 3}, {30, "", 3}},
		},
		{
			name: "limit 0 remembers one", window: time.Minute, limit: 0,
			conns: []conn{{0, "", 1}, {1, "", 1}, {61, "", 1}},
		},
		{
			name: "keys are separate", window: time.Minute, limit: 5,
			conns: []conn{{0, "a", 1}, {1, "b", 1}, {2, "a", 2}, {3, "c", 1}, {4, "b", 2}},
		},
		{
			name: "sub-second window", window: 250 * time.Millisecond, limit: 3,
			conns: []conn{{0, "", 1}, {0.1, "", 2}, {0.2, "", 3}, {0.26, "", 3}, {0.6, "", 1}},
		},
	}
	for _, impl := range implementations(t) {
		t.Run(impl.name, func(t *testing.T) {
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					clock := newFakeClock()
					start := clock.Now()
					l := impl.new(clock.Now)
					for i, c := range tc.conns {
						key := c.key
						if key == "" {
							key = "a"
						}
						clock.Set(start.Add(time.Duration(c.at * float64(time.Second))))
						got, err := l.Rate(context.Background(), key, tc.window, tc.limit)
						if err != nil {
							t.Fatalf("connection %d at %vs: %v", i, c.at, err)
						}
						if got != c.want {
							t.Errorf("connection %d from %s at %vs: count %d, want %d", i, key, c.at, got, c.want)
						}
					}
				})
			}
		})
	}
}

func TestRateBadArguments(t *testing.T) {
	tests := []struct {
		window time.Duration
		limit  int
	}{
		{0, 5},
		{-time.Second, 5},
		{time.Minute, -1},
		{time.Minute, MaxRateLimit + 1},
	}
	for _, impl := range implementations(t) {
		t.Run(impl.name, func(t *testing.T) {
			l := impl.new(nil)
			for _, tc := range tests {
				if n, err := l.Rate(context.Background(), "a", tc.window, tc.limit); err == nil {
					t.Errorf("Rate(window %v, limit %d) = %d, want an error", tc.window, tc.limit, n)
				}
			}
		})
	}
}

func TestAcquireRelease(t *testing.T) {
	for _, impl := range implementations(t) {
		t.Run(impl.name, func(t *testing.T) {
			l := impl.new(nil)
			ctx := context.Background()
			acquire := func(key string, want int) func() {
				t.Helper()
				n, release, err := l.Acquire(ctx, key)
				if err != nil {
					t.Fatalf("Acquire(%s): %v", key, err)
				}
				if n != want {
					t.Errorf("Acquire(%s) = %d, want %d", key, n, want)
				}
				return release
			}
			r1 := acquire("a", 1)
			r2 := acquire("a", 2)
			r3 := acquire("a", 3)
			rb := acquire("b", 1)
			r2()
			r4 := acquire("a", 3)
			r1()
			r3()
			r4()
			acquire("a", 1)()
			rb()
			acquire("b", 1)()
		})
	}
}

// TestRateConcurrent checks that each concurrent call is counted once and
// atomically: the counts handed out are exactly 1..N.
func TestRateConcurrent(t *testing.T) {
	const workers, each = 16, 25
	for _, impl := range implementations(t) {
		t.Run(impl.name, func(t *testing.T) {
			clock := newFakeClock()
			l := impl.new(clock.Now)
			counts := make(chan int, workers*each)
			var wg sync.WaitGroup
			for range workers {
				wg.Go(func() {
					for range each {
						n, err := l.Rate(context.Background(), "flood", time.Minute, workers*each)
						if err != nil {
							t.Error(err)
							return
						}
						counts <- n
					}
				})
			}
			wg.Wait()
			close(counts)
			seen := make([]bool, workers*each+1)
			for n := range counts {
				if n < 1 || n > workers*each || seen[n] {
					t.Fatalf("count %d handed out twice or out of range", n)
				}
				seen[n] = true
			}
			for n := 1; n <= workers*each; n++ {
				if !seen[n] {
					t.Errorf("count %d never handed out", n)
				}
			}
		})
	}
}

func TestAcquireConcurrent(t *testing.T) {
	const workers, each = 16, 25
	for _, impl := range implementations(t) {
		t.Run(impl.name, func(t *testing.T) {
			l := impl.new(nil)
			ctx := context.Background()
			var wg sync.WaitGroup
			for range workers {
				wg.Go(func() {
					for range each {
						n, release, err := l.Acquire(ctx, "flood")
						if err != nil {
							t.Error(err)
							return
						}
						if n < 1 || n > workers {
							t.Errorf("count %d with %d workers", n, workers)
						}
						release()
					}
				})
			}
			wg.Wait()
			n, release, err := l.Acquire(ctx, "flood")
			if err != nil {
				t.Fatal(err)
			}
			release()
			if n != 1 {
				t.Errorf("after every release: count %d, want 1", n)
			}
		})
	}
}
