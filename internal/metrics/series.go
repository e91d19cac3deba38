package metrics

import (
	"time"

	"github.com/mxguard/mxguard/internal/reason"
)

// Series is the recent window bucket by bucket, oldest first: what the
// console charts. Each slice has one count a bucket.
type Series struct {
	Start time.Time     // the first bucket's start
	Step  time.Duration // each bucket's length
	// Elapsed is how much of the last bucket, which is still filling, has
	// passed: a rate over it divides by this, not by Step.
	Elapsed  time.Duration
	Admitted []int64                   // sessions past admission
	Accepted []int64                   // messages accepted
	Refused  map[reason.Reason][]int64 // the reasons counted in the span only
}

// Series returns the buckets of the last span (at most an hour).
func (r *Recent) Series(span time.Duration) Series {
	n := int(min(max(span, bucketSpan), time.Hour) / bucketSpan)
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now().UnixNano()
	last := now / int64(bucketSpan)
	first := last - int64(n) + 1
	s := Series{
		Start:    time.Unix(0, first*int64(bucketSpan)),
		Step:     bucketSpan,
		Elapsed:  max(time.Duration(now-last*int64(bucketSpan)), time.Second),
		Admitted: make([]int64, n),
		Accepted: make([]int64, n),
		Refused:  map[reason.Reason][]int64{},
	}
	all := reason.All()
	for i := range n {
		span := first + int64(i)
		b := &r.buckets[span%int64(numBuckets)]
		if b.start != span {
			continue
		}
		s.Admitted[i], s.Accepted[i] = b.admitted, b.accepted
		for j, c := range b.refused {
			if c == 0 {
				continue
			}
			v := s.Refused[all[j].Reason]
			if v == nil {
				v = make([]int64, n)
				s.Refused[all[j].Reason] = v
			}
			v[i] = c
		}
	}
	return s
}
