package stats

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
)

// exactBelow is where a Hist stops counting values exactly: the figures
// that matter for limits (sessions open, connections a second or a window,
// one client's connections) are small numbers on most hosts, and a limit
// proposed from them should be the figure itself. Above it values are
// rounded up to one of 16 steps per power of two (at most 1/16 too high),
// so that a histogram has at most maxBuckets entries whatever it counts.
const exactBelow = 128

// maxBuckets bounds the entries of a Hist: the exact values, then 16 steps
// for each power of two from 2^7 to 2^62.
const maxBuckets = exactBelow + 16*56

// Hist counts non-negative integer observations: how many times each value
// was seen. Its zero value is empty and ready to use. It is not safe for
// concurrent use. In JSON it is an array of [value, count] pairs in
// increasing order of value.
type Hist struct {
	n map[int64]int64
}

// Bucket is the value v is counted as: v itself below 128, else v rounded
// up to the next of 16 steps per power of two. Negative values count as 0.
func Bucket(v int64) int64 {
	if v < exactBelow {
		return max(v, 0)
	}
	shift := bits.Len64(uint64(v)) - 5 // keep the top 5 bits: 16 steps an octave
	step := int64(1) << shift
	if v > math.MaxInt64-step {
		return math.MaxInt64 &^ (step - 1)
	}
	return (v + step - 1) &^ (step - 1)
}

// Add counts one observation of v.
func (h *Hist) Add(v int64) { h.AddN(v, 1) }

// AddN counts n observations of v.
func (h *Hist) AddN(v, n int64) {
	if n <= 0 {
		return
	}
	if h.n == nil {
		h.n = make(map[int64]int64)
	}
	h.n[Bucket(v)] += n
}

// Merge adds o's observations to h.
func (h *Hist) Merge(o Hist) {
	for v, n := range o.n {
		h.AddN(v, n)
	}
}

// Count is the number of observations.
func (h Hist) Count() int64 {
	var c int64
	for _, n := range h.n {
		c += n
	}
	return c
}

// Len is the number of distinct values (buckets) held.
func (h Hist) Len() int { return len(h.n) }

// Max is the largest value observed, 0 when empty.
func (h Hist) Max() int64 {
	var m int64
	for v := range h.n {
		m = max(m, v)
	}
	return m
}

// Quantile is the nearest-rank q-quantile (0 < q <= 1): the smallest value
// at or below which at least q of the observations lie. 0 when empty.
func (h Hist) Quantile(q float64) int64 {
	total := h.Count()
	if total == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(total)))
	rank = min(max(rank, 1), total)
	var seen int64
	for _, v := range h.values() {
		seen += h.n[v]
		if seen >= rank {
			return v
		}
	}
	return h.Max()
}

// Mean is the average of the observations (their bucket values), 0 when
// empty.
func (h Hist) Mean() float64 {
	total := h.Count()
	if total == 0 {
		return 0
	}
	var sum float64
	for v, n := range h.n {
		sum += float64(v) * float64(n)
	}
	return sum / float64(total)
}

func (h Hist) values() []int64 {
	vs := make([]int64, 0, len(h.n))
	for v := range h.n {
		vs = append(vs, v)
	}
	slices.Sort(vs)
	return vs
}

// Clone returns a copy of h that shares nothing with it.
func (h Hist) Clone() Hist {
	var c Hist
	c.Merge(h)
	return c
}

// MarshalJSON writes [[value, count], ...] in increasing order of value.
func (h Hist) MarshalJSON() ([]byte, error) {
	pairs := make([][2]int64, 0, len(h.n))
	for _, v := range h.values() {
		pairs = append(pairs, [2]int64{v, h.n[v]})
	}
	return json.Marshal(pairs)
}

// UnmarshalJSON reads what MarshalJSON writes. A value that is not a
// bucket of its own, a negative one or a count below 1 is an error: the
// file was not written by mxguard.
func (h *Hist) UnmarshalJSON(b []byte) error {
	var pairs [][2]int64
	if err := json.Unmarshal(b, &pairs); err != nil {
		return err
	}
	if len(pairs) > maxBuckets {
		return fmt.Errorf("a histogram of %d values, more than the %d it can hold", len(pairs), maxBuckets)
	}
	h.n = nil
	for _, p := range pairs {
		switch {
		case p[0] < 0 || p[1] < 1:
			return fmt.Errorf("histogram entry [%d, %d]: values are >= 0 and counts >= 1", p[0], p[1])
		case Bucket(p[0]) != p[0]:
			return fmt.Errorf("histogram entry [%d, %d]: %d is not a bucket value", p[0], p[1], p[0])
		case h.n[p[0]] > math.MaxInt64-p[1]:
			return errors.New("histogram counts overflow")
		}
		h.AddN(p[0], p[1])
	}
	return nil
}
