package loadgen

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// Percentiles summarises a set of latency samples. The figures are exact
// (nearest rank), not estimated from buckets.
type Percentiles struct {
	Count int
	P50   time.Duration
	P90   time.Duration
	P99   time.Duration
	Max   time.Duration
}

// summarize sorts samples in place and returns their percentiles.
func summarize(samples []time.Duration) Percentiles {
	if len(samples) == 0 {
		return Percentiles{}
	}
	slices.Sort(samples)
	return Percentiles{
		Count: len(samples),
		P50:   rank(samples, 50),
		P90:   rank(samples, 90),
		P99:   rank(samples, 99),
		Max:   samples[len(samples)-1],
	}
}

// rank returns the nearest-rank p-th percentile of sorted: the smallest
// sample that at least p percent of the samples do not exceed.
func rank[T cmp.Ordered](sorted []T, p int) T {
	i := (len(sorted)*p + 99) / 100 // ceil(n*p/100), 1-based
	return sorted[max(i, 1)-1]
}

// String formats p on one line, in milliseconds.
func (p Percentiles) String() string {
	if p.Count == 0 {
		return "no samples"
	}
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  max %s  (%d samples)",
		ms(p.P50), ms(p.P90), ms(p.P99), ms(p.Max), p.Count)
}

// MarshalJSON writes the figures in milliseconds, which scripts can plot
// without knowing Go's duration format.
func (p Percentiles) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Count int     `json:"count"`
		P50   float64 `json:"p50_ms"`
		P90   float64 `json:"p90_ms"`
		P99   float64 `json:"p99_ms"`
		Max   float64 `json:"max_ms"`
	}{p.Count, millis(p.P50), millis(p.P90), millis(p.P99), millis(p.Max)})
}

func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func ms(d time.Duration) string { return fmt.Sprintf("%.3fms", millis(d)) }

// perSecond returns n divided by d in seconds, or 0 for an empty interval.
func perSecond(n float64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return n / d.Seconds()
}
