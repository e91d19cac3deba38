package limit

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

func TestMemoryEvictsIdleKeys(t *testing.T) {
	clock := newFakeClock()
	start := clock.Now()
	m := newTestMemory(t, clock.Now)
	ctx := context.Background()

	const flood = 10000
	for i := range flood {
		if _, err := m.Rate(ctx, "10.0."+strconv.Itoa(i), time.Minute, 5); err != nil {
			t.Fatal(err)
		}
	}
	clock.Set(start.Add(30 * time.Second))
	if _, err := m.Rate(ctx, "recent", time.Minute, 5); err != nil {
		t.Fatal(err)
	}
	_, release, _ := m.Acquire(ctx, "open")
	_, releaseIdle, _ := m.Acquire(ctx, "closed")
	releaseIdle()

	sweepAll := func() {
		for i := range m.shards {
			m.sweep(&m.shards[i])
		}
	}
	sweepAll()
	if got, want := m.Len(), flood+2; got != want {
		t.Fatalf("within the window: %d keys remembered, want %d", got, want)
	}

	clock.Set(start.Add(61 * time.Second))
	sweepAll()
	if got, want := m.Len(), 2; got != want { // "recent" and "open"
		t.Fatalf("after the flood's window: %d keys remembered, want %d", got, want)
	}

	clock.Set(start.Add(91 * time.Second))
	sweepAll()
	if got, want := m.Len(), 1; got != want {
		t.Fatalf("with one connection open: %d keys remembered, want %d", got, want)
	}
	if n, r, _ := m.Acquire(ctx, "open"); n != 2 {
		t.Errorf("open connection forgotten: count %d, want 2", n)
	} else {
		r()
	}
	release()
	sweepAll()
	if got := m.Len(); got != 0 {
		t.Errorf("all idle: %d keys remembered, want 0", got)
	}
}

// TestMemoryJanitor checks that the janitor runs on its own. Close waits
// for it to end, so Close returning shows that it stops.
func TestMemoryJanitor(t *testing.T) {
	var calls atomic.Int64
	now := func() time.Time {
		calls.Add(1)
		return time.Unix(1e9, 0)
	}
	m := NewMemory(now)
	defer m.Close()
	tick := time.NewTicker(sweepPeriod / numShards / 4)
	defer tick.Stop()
	deadline := time.After(5 * sweepPeriod / numShards)
	for calls.Load() < 3 { // NewMemory reads the clock once; each sweep once
		select {
		case <-deadline:
			t.Fatal("janitor did not sweep")
		case <-tick.C:
		}
	}
	m.Close()
	m.Close() // idempotent
}

func TestMemoryClockSteppingBack(t *testing.T) {
	clock := newFakeClock()
	start := clock.Now()
	m := newTestMemory(t, clock.Now)
	ctx := context.Background()
	for _, step := range []struct {
		at   time.Duration
		want int
	}{
		{10 * time.Second, 1},
		{0, 2}, // stepped back: counted as at 10s
		{69 * time.Second, 3},
		{71 * time.Second, 2}, // both at "10s" left the window
	} {
		clock.Set(start.Add(step.at))
		if n, _ := m.Rate(ctx, "a", time.Minute, 5); n != step.want {
			t.Errorf("at %v: count %d, want %d", step.at, n, step.want)
		}
	}
}

func TestMemoryLimitChanges(t *testing.T) {
	clock := newFakeClock()
	m := newTestMemory(t, clock.Now)
	ctx := context.Background()
	for _, step := range []struct{ limit, want int }{
		{2, 1}, {2, 2}, {2, 3}, {2, 3},
		{5, 4}, {5, 5}, {5, 6}, {5, 6}, // grown: the old log is kept
		{1, 2}, {1, 2}, // shrunk: the newest limit+1 are kept
		{3, 3}, {3, 4}, {3, 4},
	} {
		if n, _ := m.Rate(ctx, "a", time.Minute, step.limit); n != step.want {
			t.Errorf("limit %d: count %d, want %d", step.limit, n, step.want)
		}
	}
}

// TestMemoryEvictsIdleCounters checks that a key counted by the
// sliding-window counter is kept while its connections still weigh (until
// the end of the fixed window after theirs) and forgotten after.
func TestMemoryEvictsIdleCounters(t *testing.T) {
	clock := newMinuteClock()
	start := clock.Now()
	m := newTestMemory(t, clock.Now)
	ctx := context.Background()
	if _, err := m.Rate(ctx, "a", time.Minute, approxLimit); err != nil {
		t.Fatal(err)
	}
	sweepAll := func() {
		for i := range m.shards {
			m.sweep(&m.shards[i])
		}
	}
	clock.Set(start.Add(119 * time.Second))
	sweepAll()
	if m.Len() != 1 {
		t.Fatal("forgotten while its connection still weighs in the next window")
	}
	clock.Set(start.Add(120 * time.Second))
	sweepAll()
	if m.Len() != 0 {
		t.Error("remembered after the window following its connection")
	}
}

// TestMemoryZeroAllocs pins what BenchmarkMemoryRate reports: a known key
// costs no allocation.
func TestMemoryZeroAllocs(t *testing.T) {
	m := newTestMemory(t, nil)
	ctx := context.Background()
	if _, err := m.Rate(ctx, "192.0.2.1", time.Minute, 5); err != nil {
		t.Fatal(err)
	}
	if a := testing.AllocsPerRun(1000, func() {
		_, _ = m.Rate(ctx, "192.0.2.1", time.Minute, 5)
	}); a != 0 {
		t.Errorf("Rate: %v allocations per call", a)
	}
	if a := testing.AllocsPerRun(1000, func() {
		_, _ = m.Rate(ctx, "192.0.2.1", time.Minute, approxLimit)
	}); a != 0 {
		t.Errorf("Rate above ExactRateLimit: %v allocations per call", a)
	}
	_, release, _ := m.Acquire(ctx, "192.0.2.1")
	release()
	if a := testing.AllocsPerRun(1000, func() {
		_, release, _ := m.Acquire(ctx, "192.0.2.1")
		release()
	}); a != 0 {
		t.Errorf("Acquire: %v allocations per call", a)
	}
}

// benchKeys returns addresses for a parallel benchmark that spreads over
// shards as real traffic would.
func benchKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "198.51." + strconv.Itoa(i/256%256) + "." + strconv.Itoa(i%256)
	}
	return keys
}

func BenchmarkMemoryRate(b *testing.B) {
	m := newTestMemory(b, nil)
	ctx := context.Background()
	keys := benchKeys(1024)
	for _, k := range keys {
		_, _ = m.Rate(ctx, k, time.Minute, 5)
	}
	var worker atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(worker.Add(1)) * 97
		for pb.Next() {
			if _, err := m.Rate(ctx, keys[i%len(keys)], time.Minute, 5); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}

func BenchmarkMemoryAcquire(b *testing.B) {
	m := newTestMemory(b, nil)
	ctx := context.Background()
	keys := benchKeys(1024)
	for _, k := range keys {
		_, release, _ := m.Acquire(ctx, k)
		release()
	}
	var worker atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(worker.Add(1)) * 97
		for pb.Next() {
			_, release, err := m.Acquire(ctx, keys[i%len(keys)])
			if err != nil {
				b.Fatal(err)
			}
			release()
			i++
		}
	})
}

// BenchmarkMemoryRateFlood measures new keys: every call is a client not
// seen before.
func BenchmarkMemoryRateFlood(b *testing.B) {
	m := newTestMemory(b, nil)
	ctx := context.Background()
	keys := benchKeys(1 << 16)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if i%len(keys) == 0 {
			for j := range m.shards {
				clear(m.shards[j].m)
			}
		}
		if _, err := m.Rate(ctx, keys[i%len(keys)], time.Minute, 5); err != nil {
			b.Fatal(err)
		}
	}
}
