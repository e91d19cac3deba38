package loadgen

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// maxRate bounds a schedule's rate: beyond a million connections a second
// the start times of consecutive connections would be under a microsecond
// apart, far finer than any timer, and no client on one machine gets there.
const maxRate = 1e6

// maxStarts bounds a schedule's length, so that a typo such as -duration
// 100h at -rate 100000 is an error rather than a plan nobody will run.
const maxStarts = 1 << 32

// A schedule is an open-loop plan: connection k (counting from 0) is due
// at at(k) after the start, whatever became of the connections before it,
// so that a slow server faces the same offered load as a fast one.
//
// Start times are computed from k, never by adding an interval to the
// previous one, so that rounding never accumulates: after any stretch of
// time the number of starts due is within one of rate × time.
type schedule struct {
	rate  float64 // starts per second
	total int64   // starts in the whole plan
}

// newSchedule plans rate starts per second for d: every start k with
// k/rate < d.
func newSchedule(rate float64, d time.Duration) (schedule, error) {
	switch {
	case math.IsNaN(rate) || rate <= 0:
		return schedule{}, fmt.Errorf("rate %v, want more than 0", rate)
	case rate > maxRate:
		return schedule{}, fmt.Errorf("rate %v, want at most %v", rate, float64(maxRate))
	case d <= 0:
		return schedule{}, fmt.Errorf("duration %v, want more than 0", d)
	}
	total := math.Ceil(d.Seconds() * rate)
	if total > maxStarts {
		return schedule{}, errors.New("rate × duration is more than 2³² connections")
	}
	s := schedule{rate: rate, total: int64(total)}
	// Ceil of a product in floating point can land one over: trim any
	// start not strictly inside d.
	for s.total > 0 && s.at(s.total-1) >= d {
		s.total--
	}
	return s, nil
}

// at returns when start k is due: k/rate seconds after the start, rounded
// up to the nanosecond (as far as float64 tells, which is to well under a
// nanosecond for any schedule of less than a day).
func (s schedule) at(k int64) time.Duration {
	return time.Duration(math.Ceil(float64(k) * 1e9 / s.rate))
}

// due returns how many starts are due once elapsed has passed: the number
// of k in [0, total) with at(k) ≤ elapsed. It is exact with respect to at:
// the estimate from the rate is corrected until it agrees.
func (s schedule) due(elapsed time.Duration) int64 {
	if elapsed < 0 {
		return 0
	}
	// An estimate of the last due index, clamped before the conversion
	// so that no elapsed time overflows it.
	k := s.total - 1
	if est := math.Floor(float64(elapsed) * s.rate / 1e9); est < float64(k) {
		k = int64(est)
	}
	for k+1 < s.total && s.at(k+1) <= elapsed {
		k++
	}
	for k >= 0 && s.at(k) > elapsed {
		k--
	}
	return k + 1
}
