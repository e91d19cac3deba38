package limit

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxguard/mxguard/internal/redistest"
)

// approxLimit is the smallest limit Rate approximates.
const approxLimit = ExactRateLimit + 1

// newMinuteClock is a fake clock on a whole minute, so that the fixed
// windows of a one-minute counter start at the same instants in Memory
// (from its creation) and in Redis (from the Unix epoch).
func newMinuteClock() *fakeClock {
	return &fakeClock{t: time.Now().Truncate(time.Minute)}
}

// TestRateApproxBoundaries checks the sliding-window counter's arithmetic
// at and around the fixed windows' boundaries.
func TestRateApproxBoundaries(t *testing.T) {
	type conn struct {
		at   float64 // seconds from the start, a whole minute
		want int
	}
	tests := []struct {
		name  string
		conns []conn
	}{
		{
			name:  "the first window counts exactly",
			conns: []conn{{0, 1}, {10, 2}, {59.999, 3}},
		},
		{
			// 4 in window 0, then window 1 weighs them by the part of
			// window 0 the sliding window still covers, rounded down.
			name: "the previous window weighed by overlap",
			conns: []conn{
				{50, 1}, {55, 2}, {58, 3}, {59, 4},
				{60, 4 + 1},       // a boundary belongs to the new window: weight 1
				{90, 4*30/60 + 2}, // half covered
				{105, 4*15/60 + 3},
				{119.999, 0 + 4}, // 4 × 0.001/60 rounds down to 0
				{120, 4 + 1},     // window 2: window 1's 4 now weigh 1
				{150, 2 + 2},
			},
		},
		{
			name:  "a window with nothing in it forgets the one before",
			conns: []conn{{10, 1}, {20, 2}, {125, 1}, {130, 2}},
		},
		{
			name: "a clock that steps back stays in the newest window",
			conns: []conn{
				{0, 1}, {10, 2}, {20, 3},
				{60, 3 + 1},
				{50, 3 + 2}, // counted at 60s, in window 1
				{90, 3*30/60 + 3},
			},
		},
	}
	for _, impl := range implementations(t) {
		t.Run(impl.name, func(t *testing.T) {
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					clock := newMinuteClock()
					start := clock.Now()
					l := impl.new(clock.Now)
					for i, c := range tc.conns {
						clock.Set(start.Add(time.Duration(c.at * float64(time.Second))))
						got, err := l.Rate(context.Background(), "a", time.Minute, approxLimit)
						if err != nil {
							t.Fatalf("connection %d at %vs: %v", i, c.at, err)
						}
						if got != c.want {
							t.Errorf("connection %d at %vs: count %d, want %d", i, c.at, got, c.want)
						}
					}
				})
			}
		})
	}
}

// TestRateApproxCapped checks that the estimate, like the log's count,
// never exceeds limit+1, while every connection is still counted: the
// next window weighs all of them.
func TestRateApproxCapped(t *testing.T) {
	for _, impl := range implementations(t) {
		t.Run(impl.name, func(t *testing.T) {
			clock := newMinuteClock()
			start := clock.Now()
			l := impl.new(clock.Now)
			ctx := context.Background()
			for i := range 2 * approxLimit {
				n, err := l.Rate(ctx, "a", time.Minute, approxLimit)
				if err != nil {
					t.Fatal(err)
				}
				if want := min(i+1, approxLimit+1); n != want {
					t.Fatalf("connection %d: count %d, want %d", i+1, n, want)
				}
			}
			// Half way through the next window, half of 2×limit still
			// weighs: the client is over its limit.
			clock.Set(start.Add(90 * time.Second))
			if n, _ := l.Rate(ctx, "a", time.Minute, approxLimit); n != approxLimit+1 {
				t.Errorf("half a window after 2×limit connections: count %d, want %d", n, approxLimit+1)
			}
		})
	}
}

// TestRateApproxThreshold checks that the log stays exact up to
// ExactRateLimit and the counter takes over above it. The pattern tells
// them apart: 4 connections late in a fixed window, then one half way
// through the next; all 5 are in the sliding window, but the counter
// weighs the first 4 by half.
func TestRateApproxThreshold(t *testing.T) {
	for _, impl := range implementations(t) {
		t.Run(impl.name, func(t *testing.T) {
			for _, tc := range []struct {
				limit, want int
			}{
				{ExactRateLimit, 5},
				{ExactRateLimit + 1, 4*30/60 + 1},
			} {
				clock := newMinuteClock()
				start := clock.Now()
				l := impl.new(clock.Now)
				var n int
				for _, at := range []float64{50, 55, 58, 59, 90} {
					clock.Set(start.Add(time.Duration(at * float64(time.Second))))
					var err error
					if n, err = l.Rate(context.Background(), "a", time.Minute, tc.limit); err != nil {
						t.Fatal(err)
					}
				}
				if n != tc.want {
					t.Errorf("limit %d: count %d, want %d", tc.limit, n, tc.want)
				}
			}
		})
	}
}

// TestRedisApproxKeys checks the keys Redis keeps: a sorted set for the
// log, a small hash for the counter, both expiring on their own.
func TestRedisApproxKeys(t *testing.T) {
	addr := redistest.Start(t)
	r := newTestRedis(t, RedisOptions{Addr: addr})
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	ctx := context.Background()
	for _, tc := range []struct {
		key, name, typ string
		limit          int
	}{
		{"exact", DefaultKeyPrefix + "rate:{exact}", "zset", ExactRateLimit},
		{"approx", DefaultKeyPrefix + "ratec:{approx}", "hash", ExactRateLimit + 1},
	} {
		if _, err := r.Rate(ctx, tc.key, 20*time.Second, tc.limit); err != nil {
			t.Fatal(err)
		}
		if typ, err := c.Type(ctx, tc.name).Result(); err != nil || typ != tc.typ {
			t.Errorf("limit %d: %s is %q (%v), want a %s", tc.limit, tc.name, typ, err, tc.typ)
		}
		// The counter weighs until the end of the next fixed window.
		if ttl, err := c.PTTL(ctx, tc.name).Result(); err != nil || ttl <= 0 || ttl > 40*time.Second {
			t.Errorf("%s: PTTL %v, %v; want in (0, 40s]", tc.name, ttl, err)
		}
	}
}

// arrivals are connection times in nanoseconds from a whole minute.
type arrivals []int64

// uniformArrivals is a Poisson process of rate per second for d.
func uniformArrivals(r *rand.Rand, rate float64, d time.Duration) arrivals {
	var out arrivals
	for t := 0.0; ; {
		t += r.ExpFloat64() / rate
		if t >= d.Seconds() {
			return out
		}
		out = append(out, int64(t*1e9))
	}
}

// burstyArrivals are bursts of about size connections, each within a
// second, at times of a Poisson process of rate bursts per second: a
// sender that comes back with a batch now and then.
func burstyArrivals(r *rand.Rand, bursts float64, size int, d time.Duration) arrivals {
	var out arrivals
	for t := 0.0; ; {
		t += r.ExpFloat64() / bursts
		if t >= d.Seconds() {
			break
		}
		n := size/2 + r.IntN(size+1)
		for range n {
			out = append(out, int64((t+r.Float64())*1e9))
		}
	}
	slices.Sort(out)
	return out
}

// edgeArrivals is the counter's worst case: in each pair of fixed windows,
// n connections in the last second of the first and n in the third-last
// second of the second. Both bursts fit in one sliding window, but when the
// second comes the first is weighed at 3/60 of its size.
func edgeArrivals(window time.Duration, n int, d time.Duration) arrivals {
	var out arrivals
	w, s := int64(window), int64(time.Second)
	for b := int64(0); b+2*w <= int64(d); b += 2 * w {
		for _, from := range []int64{b + w - s, b + 2*w - 3*s} {
			for i := range n {
				out = append(out, from+int64(i)*s/int64(n))
			}
		}
	}
	return out
}

// approxError is the sliding-window counter measured against the exact
// count on one arrival pattern, every connection counted as Rate counts
// it, and admitted when its count is at most the limit.
type approxError struct {
	conns int
	// count error (the estimate minus the exact count, both capped at
	// limit+1 as Rate returns them), as a fraction of the limit
	under, over, meanAbs float64
	// admitted by the estimate but not by the exact count, and the reverse
	falseAdmits, falseRefusals int
	// connections admitted in all: by the estimate, by the exact count
	admitted, admittedExact int
	// the most connections the estimate admitted in any sliding window,
	// as a fraction of the limit; the exact count admits at most 1
	maxInWindow float64
}

// measureApprox runs pattern through the sliding-window counter that
// Memory.Rate uses above ExactRateLimit (at any limit, so that lower
// thresholds can be judged too) and through an exact count.
func measureApprox(pattern arrivals, window time.Duration, limit int) approxError {
	var (
		e        = approxError{conns: len(pattern)}
		counter  entry
		admitted []int64
		lo, alo  int
		sumAbs   float64
	)
	for i, at := range pattern {
		for pattern[lo] <= at-int64(window) {
			lo++
		}
		exact := min(i-lo+1, limit+1)
		est := counter.count(at, int64(window), limit+1)
		d := float64(est-exact) / float64(limit)
		e.under = math.Min(e.under, d)
		e.over = math.Max(e.over, d)
		sumAbs += math.Abs(d)
		switch {
		case est <= limit && exact > limit:
			e.falseAdmits++
		case est > limit && exact <= limit:
			e.falseRefusals++
		}
		if exact <= limit {
			e.admittedExact++
		}
		if est <= limit {
			e.admitted++
			admitted = append(admitted, at)
			for admitted[alo] <= at-int64(window) {
				alo++
			}
			e.maxInWindow = math.Max(e.maxInWindow, float64(len(admitted)-alo)/float64(limit))
		}
	}
	e.meanAbs = sumAbs / float64(len(pattern))
	return e
}

func (e approxError) String() string {
	return fmt.Sprintf("%d connections: count error %+.3f..%+.3f of the limit (mean |error| %.4f); "+
		"false admits %.2f %%, false refusals %.2f %% of connections; admitted %d (exact %d, %+.2f %%); "+
		"most admitted in a sliding window %.3f× the limit",
		e.conns, e.under, e.over, e.meanAbs,
		100*float64(e.falseAdmits)/float64(e.conns), 100*float64(e.falseRefusals)/float64(e.conns),
		e.admitted, e.admittedExact, 100*(float64(e.admitted)/float64(max(e.admittedExact, 1))-1),
		e.maxInWindow)
}

// The generated traffic of TestRateApproxError: 30 minutes of one client,
// window one minute.
var approxPatterns = []struct {
	name    string
	pattern func(r *rand.Rand, limit int) arrivals
}{
	{"uniform at the limit", func(r *rand.Rand, l int) arrivals {
		return uniformArrivals(r, float64(l)/60, 30*time.Minute)
	}},
	{"uniform at 1.5× the limit", func(r *rand.Rand, l int) arrivals {
		return uniformArrivals(r, 1.5*float64(l)/60, 30*time.Minute)
	}},
	{"bursts of about limit/10, 10 a minute", func(r *rand.Rand, l int) arrivals {
		return burstyArrivals(r, 10.0/60, l/10, 30*time.Minute)
	}},
	{"bursts of about limit/2, 2 a minute", func(r *rand.Rand, l int) arrivals {
		return burstyArrivals(r, 2.0/60, l/2, 30*time.Minute)
	}},
	{"worst case: bursts of limit at the windows' ends", func(_ *rand.Rand, l int) arrivals {
		return edgeArrivals(time.Minute, l, 30*time.Minute)
	}},
}

// TestRateApproxError measures the sliding-window counter against the
// exact count on generated traffic (seeded, so the figures repeat), logs
// the figures that BENCHMARKS.md quotes (go test -run TestRateApproxError
// -v ./internal/limit/) and holds them to the bounds measured at
// ExactRateLimit+1, the lowest limit approximated.
func TestRateApproxError(t *testing.T) {
	// bounds: |count error| and the most admitted in a window, as
	// fractions of the limit
	bounds := map[string][2]float64{
		"uniform at the limit":                             {0.05, 1.04},
		"uniform at 1.5× the limit":                        {0.05, 1.0},
		"bursts of about limit/10, 10 a minute":            {0.5, 1.3},
		"bursts of about limit/2, 2 a minute":              {0.5, 1.3},
		"worst case: bursts of limit at the windows' ends": {1.0, 2.0},
	}
	for _, limit := range []int{10, 100, approxLimit, 10000} {
		for _, p := range approxPatterns {
			t.Run(fmt.Sprintf("limit %d/%s", limit, p.name), func(t *testing.T) {
				e := measureApprox(p.pattern(rand.New(rand.NewPCG(1, uint64(limit))), limit), time.Minute, limit)
				t.Logf("limit %d, %s: %v", limit, p.name, e)
				if limit != approxLimit {
					return // for comparison only
				}
				b := bounds[p.name]
				if worst := math.Max(-e.under, e.over); worst > b[0] {
					t.Errorf("count error %.4f of the limit, bound %.4f", worst, b[0])
				}
				if e.maxInWindow > b[1] {
					t.Errorf("%.4f× the limit admitted in a window, bound %.4f", e.maxInWindow, b[1])
				}
			})
		}
	}
}

// TestRateApproxSameInRedis runs one bursty pattern through both
// implementations: Redis's script counts as Memory does, so the error
// measured on Memory is Redis's too.
func TestRateApproxSameInRedis(t *testing.T) {
	p := burstyArrivals(rand.New(rand.NewPCG(2, 2)), 4/time.Minute.Seconds(), 200, 10*time.Minute)
	var counts [][]int
	for _, impl := range implementations(t) {
		clock := newMinuteClock()
		start := clock.Now()
		l := impl.new(clock.Now)
		var got []int
		for _, at := range p {
			// Redis counts in milliseconds.
			clock.Set(start.Add(time.Duration(at).Truncate(time.Millisecond)))
			n, err := l.Rate(context.Background(), "a", time.Minute, approxLimit)
			if err != nil {
				t.Fatalf("%s: %v", impl.name, err)
			}
			got = append(got, n)
		}
		counts = append(counts, got)
	}
	if len(p) < 1000 {
		t.Fatalf("pattern of %d connections, want more", len(p))
	}
	for i := range p {
		if counts[0][i] != counts[1][i] {
			t.Fatalf("connection %d of %d at %v: memory counts %d, redis %d",
				i, len(p), time.Duration(p[i]), counts[0][i], counts[1][i])
		}
	}
}
