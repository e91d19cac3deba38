package loadgen

import (
	"context"
	"math"
	"math/big"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

func TestScheduleTotal(t *testing.T) {
	for _, tt := range []struct {
		rate float64
		d    time.Duration
		want int64
	}{
		{1000, time.Second, 1000},
		{20000, 10 * time.Second, 200000},
		{3, time.Second, 3},                 // 0, 1/3 s, 2/3 s
		{0.5, 3 * time.Second, 2},           // 0 and 2 s; 4 s is past the end
		{0.5, 2 * time.Second, 1},           // 2 s is the end itself: not inside
		{1, time.Nanosecond, 1},             // the start at 0 is always due
		{7.0 / 3, 3 * time.Second, 7},       // 0, 3/7 s ... 18/7 s
		{33333.3, time.Second, 33334},       // ceil(33333.3)
		{1e6, 10 * time.Millisecond, 10000}, // the highest rate
		{123456.789, 100 * time.Millisecond, 12346},
		{1.1, 50 * time.Second, 55},         // 50 × 1.1 is 55.00000000000001 in float64
		{33333.3, 30 * time.Second, 999999}, // and 30 × 33333.3 is 999999.0000000001
	} {
		s, err := newSchedule(tt.rate, tt.d)
		if err != nil {
			t.Fatalf("newSchedule(%v, %v): %v", tt.rate, tt.d, err)
		}
		if s.total != tt.want {
			t.Errorf("newSchedule(%v, %v): %d starts, want %d", tt.rate, tt.d, s.total, tt.want)
		}
		// Every planned start lies inside the duration, and the next one
		// would not.
		if s.total > 0 && s.at(s.total-1) >= tt.d {
			t.Errorf("rate %v: last start at %v, not before %v", tt.rate, s.at(s.total-1), tt.d)
		}
		if s.at(s.total) < tt.d {
			t.Errorf("rate %v: start %d at %v would still be inside %v", tt.rate, s.total, s.at(s.total), tt.d)
		}
	}
}

func TestScheduleErrors(t *testing.T) {
	for _, tt := range []struct {
		rate float64
		d    time.Duration
	}{
		{0, time.Second},
		{-5, time.Second},
		{math.NaN(), time.Second},
		{math.Inf(1), time.Second},
		{1e6 + 1, time.Second},
		{1000, 0},
		{1000, -time.Second},
		{1e6, 5000 * time.Second}, // 5·10⁹ starts
	} {
		if s, err := newSchedule(tt.rate, tt.d); err == nil {
			t.Errorf("newSchedule(%v, %v) = %+v, want an error", tt.rate, tt.d, s)
		}
	}
}

// TestScheduleDue checks that due counts exactly the starts at or before
// a time, at each start's own time and just before it, and that it stays
// within one of rate × elapsed: the rate is held over any stretch, without
// drift.
func TestScheduleDue(t *testing.T) {
	for _, tt := range []struct {
		rate float64
		d    time.Duration
		ks   []int64 // starts to check besides the first, the last and a spread
	}{
		{1, 20 * time.Second, nil},
		{3, 20 * time.Second, nil},
		{999.999, 20 * time.Second, nil},
		{1000, 20 * time.Second, nil},
		{20000, 20 * time.Second, nil},
		{33333.3, 20 * time.Second, nil},
		{1e6, 20 * time.Second, nil},
		// At these starts rate × elapsed in floating point is just past
		// the start when elapsed is 1ns before it (2251804), and just
		// short of it when elapsed is the start's own time (6567756).
		{7.0 / 3, 800 * time.Hour, []int64{2251804, 2251811, 6567756, 6567763}},
	} {
		rate := tt.rate
		s, err := newSchedule(rate, tt.d)
		if err != nil {
			t.Fatal(err)
		}
		ks := append([]int64{0, 1, 2, 3, 10, 999, s.total / 2, s.total - 2, s.total - 1}, tt.ks...)
		for k := int64(1); k < s.total; k = k*3 + 1 {
			ks = append(ks, k)
		}
		for _, k := range ks {
			if k < 0 || k >= s.total {
				continue
			}
			at := s.at(k)
			// at(k) is the first nanosecond at or after k/rate seconds,
			// but for float64's rounding (an ulp is 0.5ns at 800h).
			exact, _ := new(big.Rat).Quo(new(big.Rat).SetInt64(k*1e9), new(big.Rat).SetFloat64(rate)).Float64()
			if ulp := 2*math.Nextafter(exact, math.Inf(1)) - 2*exact; float64(at) < exact-ulp || float64(at-1) >= exact {
				t.Errorf("rate %v: at(%d) = %dns, want the ceiling of %.3f", rate, k, at, exact)
			}
			if got := s.due(at); got != k+1 {
				t.Errorf("rate %v: due(at(%d) = %v) = %d, want %d", rate, k, at, got, k+1)
			}
			if k > 0 {
				if got := s.due(at - 1); got != k {
					t.Errorf("rate %v: due(at(%d) - 1ns) = %d, want %d", rate, k, got, k)
				}
			}
		}
		var last int64
		for e := time.Duration(0); e < 20*time.Second; e += 7919 * time.Microsecond {
			got := s.due(e)
			// The start at 0 is due at once, so due runs between
			// rate × e and one more (the margin is float rounding).
			if want := rate * e.Seconds(); float64(got) < want-1e-6 || float64(got) > want+1+1e-6 {
				t.Errorf("rate %v: due(%v) = %d, want %.3f to one more", rate, e, got, want)
			}
			if got < last {
				t.Errorf("rate %v: due(%v) = %d, less than %d earlier", rate, e, got, last)
			}
			last = got
		}
		if got := s.due(-time.Second); got != 0 {
			t.Errorf("rate %v: due(-1s) = %d, want 0", rate, got)
		}
		for _, e := range []time.Duration{tt.d, tt.d + time.Hour, math.MaxInt64} {
			if got := s.due(e); got != s.total {
				t.Errorf("rate %v: due(%v) = %d, want all %d", rate, e, got, s.total)
			}
		}
	}
}

// TestDispatch runs the dispatcher on synctest's fake clock: each start
// is queued at its own time, with the time it was due, and none is
// dropped while there is room.
func TestDispatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, _ := newSchedule(3000, time.Second) // 333,333.3ns apart
		starts := make(chan time.Time, s.total)
		var outstanding atomic.Int64
		start := time.Now()
		ctx, cancel := context.WithDeadline(t.Context(), start.Add(time.Second))
		defer cancel()
		var got []time.Duration
		done := make(chan int64)
		go func() { done <- dispatch(ctx, s, start, starts, &outstanding, s.total) }()
		for range s.total {
			due := <-starts
			// The fake clock stands still until every goroutine waits,
			// so a start is taken at the very time it was due.
			if now := time.Now(); !now.Equal(due) {
				t.Fatalf("start due at %v queued at %v", due.Sub(start), now.Sub(start))
			}
			got = append(got, due.Sub(start))
		}
		if dropped := <-done; dropped != 0 || outstanding.Load() != s.total {
			t.Errorf("dropped %d, outstanding %d; want 0 and %d", dropped, outstanding.Load(), s.total)
		}
		for k, at := range got {
			if at != s.at(int64(k)) {
				t.Fatalf("start %d due at %v, want %v", k, at, s.at(int64(k)))
			}
		}
	})
}

// TestDispatchLimit has every start due at once, as after a long stall:
// as many are queued as the limit allows and the rest dropped.
func TestDispatchLimit(t *testing.T) {
	s, _ := newSchedule(1000, time.Second)
	for _, tt := range []struct{ outstanding, limit, queued int64 }{
		{0, 1000, 1000},
		{0, 300, 300},
		{250, 300, 50},
		{300, 300, 0},
	} {
		starts := make(chan time.Time, tt.limit)
		var outstanding atomic.Int64
		outstanding.Store(tt.outstanding)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		dropped := dispatch(ctx, s, time.Now().Add(-time.Hour), starts, &outstanding, tt.limit)
		if int64(len(starts)) != tt.queued || dropped != s.total-tt.queued || outstanding.Load() != tt.outstanding+tt.queued {
			t.Errorf("%d outstanding, limit %d: queued %d, dropped %d, outstanding %d; want %d queued",
				tt.outstanding, tt.limit, len(starts), dropped, outstanding.Load(), tt.queued)
		}
	}
}

// TestDispatchCancel stops the schedule when ctx ends: nothing not yet due
// is queued.
func TestDispatchCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, _ := newSchedule(10, time.Hour)
		starts := make(chan time.Time, s.total)
		var outstanding atomic.Int64
		start := time.Now()
		ctx, cancel := context.WithTimeout(t.Context(), 250*time.Millisecond)
		defer cancel()
		if dropped := dispatch(ctx, s, start, starts, &outstanding, s.total); dropped != 0 || len(starts) != 3 {
			t.Fatalf("queued %d, dropped %d; want the 3 due in 250ms (0, 100, 200ms)", len(starts), dropped)
		}
		if time.Since(start) != 250*time.Millisecond {
			t.Errorf("returned after %v, want 250ms", time.Since(start))
		}
	})
}
