package cache

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"
)

// clock is a settable clock for expiry tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Unix(1_700_000_000, 0)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTestMemory(t testing.TB, size int, now func() time.Time) *Memory {
	t.Helper()
	m, err := NewMemory(size, now)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestNewMemoryBadSize(t *testing.T) {
	for _, n := range []int{0, -1} {
		if _, err := NewMemory(n, nil); err == nil {
			t.Errorf("NewMemory(%d): no error", n)
		}
	}
}

func TestMemoryTTL(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	m := newTestMemory(t, 10, clk.now)

	m.Set(ctx, "short", "s", time.Minute)
	m.Set(ctx, "long", "l", time.Hour)
	m.Set(ctx, "zero", "z", 0)
	m.Set(ctx, "negative", "n", -time.Second)
	if n := m.Len(); n != 2 {
		t.Errorf("Len = %d after two Sets with a TTL and two without, want 2", n)
	}
	for _, k := range []string{"zero", "negative", "absent"} {
		if v, ok := m.Get(ctx, k); ok {
			t.Errorf("Get(%q) = %q, want a miss", k, v)
		}
	}
	if v, ok := m.Get(ctx, "short"); !ok || v != "s" {
		t.Errorf("Get(short) = %q, %v", v, ok)
	}

	clk.advance(time.Minute - time.Nanosecond)
	if _, ok := m.Get(ctx, "short"); !ok {
		t.Error("short expired before its TTL")
	}
	clk.advance(time.Nanosecond)
	if _, ok := m.Get(ctx, "short"); ok {
		t.Error("short still there at its TTL")
	}
	if v, ok := m.Get(ctx, "long"); !ok || v != "l" {
		t.Errorf("Get(long) = %q, %v after a minute of its hour", v, ok)
	}
	if n := m.Len(); n != 1 {
		t.Errorf("Len = %d after the expired entry was looked up, want 1", n)
	}

	// Set replaces value and TTL.
	m.Set(ctx, "long", "l2", time.Second)
	clk.advance(2 * time.Second)
	if v, ok := m.Get(ctx, "long"); ok {
		t.Errorf("Get(long) = %q after its new, shorter TTL", v)
	}
}

// TestMemoryBounded shows that a flood of new keys cannot grow the cache
// past its size, and that what it evicts is the least recently used.
func TestMemoryBounded(t *testing.T) {
	ctx := context.Background()
	const size = 100
	m := newTestMemory(t, size, nil)
	m.Set(ctx, "hot", "h", time.Hour)
	for i := range 10 * size {
		m.Set(ctx, "random"+strconv.Itoa(i), "x", time.Hour)
		if i%(size/2) == 0 {
			if _, ok := m.Get(ctx, "hot"); !ok {
				t.Fatalf("hot key evicted after %d new keys although it was used", i)
			}
		}
	}
	if n := m.Len(); n != size {
		t.Errorf("Len = %d, want the bound %d", n, size)
	}
	if _, ok := m.Get(ctx, "random0"); ok {
		t.Error("the oldest unused key survived 10×size new ones")
	}
	if _, ok := m.Get(ctx, "random"+strconv.Itoa(10*size-1)); !ok {
		t.Error("the newest key is missing")
	}
}

func TestMemoryConcurrent(t *testing.T) {
	ctx := context.Background()
	m := newTestMemory(t, 64, nil)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				k := strconv.Itoa((g*1000 + i) % 200)
				m.Set(ctx, k, k, time.Hour)
				if v, ok := m.Get(ctx, k); ok && v != k {
					t.Errorf("Get(%q) = %q", k, v)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := m.Len(); n > 64 {
		t.Errorf("Len = %d, past the bound 64", n)
	}
}

func BenchmarkMemoryGetHit(b *testing.B) {
	ctx := context.Background()
	m := newTestMemory(b, 65536, nil)
	m.Set(ctx, "verify:alice@example.org", "V250 2.1.5 Ok", time.Hour)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := m.Get(ctx, "verify:alice@example.org"); !ok {
			b.Fatal("miss")
		}
	}
}
