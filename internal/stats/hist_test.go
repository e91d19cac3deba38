package stats

import (
	"encoding/json"
	"math"
	"testing"
)

func TestBucket(t *testing.T) {
	for _, c := range []struct{ v, want int64 }{
		{-5, 0}, {0, 0}, {1, 1}, {127, 127},
		{128, 128}, {129, 136}, {136, 136}, {137, 144}, // steps of 8 from 128 to 256
		{255, 256}, {256, 256}, {257, 272}, // steps of 16 from 256
		{1000, 1024}, {1025, 1088},
		{math.MaxInt64, math.MaxInt64 &^ (1<<58 - 1)},
	} {
		if got := Bucket(c.v); got != c.want {
			t.Errorf("Bucket(%d) = %d, want %d", c.v, got, c.want)
		}
	}
	// At most 1/16 too high, and never low.
	for v := int64(0); v < 1<<20; v += 7 {
		b := Bucket(v)
		if b < v || float64(b-v) > float64(v)/16 {
			t.Fatalf("Bucket(%d) = %d: off by more than 1/16", v, b)
		}
		if Bucket(b) != b {
			t.Fatalf("Bucket(%d) = %d, which is not its own bucket", v, b)
		}
	}
}

func TestQuantile(t *testing.T) {
	var h Hist
	if h.Quantile(0.95) != 0 || h.Count() != 0 || h.Max() != 0 {
		t.Fatal("an empty histogram is not all zero")
	}
	// A day of samples: 95 % of the seconds at most 20 sessions open.
	h.AddN(3, 50000)
	h.AddN(20, 32080) // 82,080 of 86,400 at or below 20: exactly 95 %
	h.AddN(45, 4320)
	for _, c := range []struct {
		q    float64
		want int64
	}{{0.5, 3}, {0.57, 3}, {0.58, 20}, {0.95, 20}, {0.9501, 45}, {0.99, 45}, {1, 45}} {
		if got := h.Quantile(c.q); got != c.want {
			t.Errorf("Quantile(%v) = %d, want %d", c.q, got, c.want)
		}
	}
	if h.Count() != 86400 || h.Max() != 45 {
		t.Errorf("Count %d, Max %d; want 86400, 45", h.Count(), h.Max())
	}
	var one Hist
	one.Add(7)
	if one.Quantile(0.01) != 7 || one.Quantile(0.99) != 7 {
		t.Errorf("one observation: quantiles %d, %d; want 7", one.Quantile(0.01), one.Quantile(0.99))
	}
}

func TestHistJSON(t *testing.T) {
	var h Hist
	h.AddN(0, 10)
	h.AddN(5, 2)
	h.Add(1000)
	b, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != "[[0,10],[5,2],[1024,1]]" {
		t.Errorf("JSON %s", b)
	}
	var back Hist
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Count() != 13 || back.Quantile(1) != 1024 || back.Len() != 3 {
		t.Errorf("round trip: %+v", back)
	}
	for _, bad := range []string{`[[-1,1]]`, `[[3,0]]`, `[[129,1]]`, `{"a":1}`, `[[1,9223372036854775807],[1,1]]`} {
		var x Hist
		if err := json.Unmarshal([]byte(bad), &x); err == nil {
			t.Errorf("%s read without an error", bad)
		}
	}
}
