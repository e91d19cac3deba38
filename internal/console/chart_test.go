package console

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/metrics"
	"github.com/mxguard/mxguard/internal/reason"
)

func TestNiceMax(t *testing.T) {
	for in, want := range map[float64]float64{0: 1, -3: 1, 0.3: 0.5, 1: 1, 1.01: 2, 3: 5, 7: 10, 10: 10, 101: 200, 4999: 5000} {
		if got := niceMax(in); got != want {
			t.Errorf("niceMax(%v) = %v, want %v", in, got, want)
		}
	}
}

// TestCharts: rates per second (the last bucket over its elapsed part),
// areas stacked in order of their totals, the reasons beyond the palette
// lumped into "other", and a message instead of an empty chart.
func TestCharts(t *testing.T) {
	n := 4
	s := metrics.Series{Step: 10 * time.Second, Elapsed: 2 * time.Second,
		Admitted: []int64{0, 10, 20, 4}, Accepted: make([]int64, n), Refused: map[reason.Reason][]int64{}}
	all := reason.All()
	for i := range len(palette) + 2 { // two more reasons than colours
		s.Refused[all[i].Reason] = []int64{0, 0, int64(100 - i), 0}
	}
	c := charts(s)
	flow, refused := c[0], c[1]
	// Admitted: 0, 1, 2 and 2 per second (4 in 2 s): top 2, so the line
	// runs from the bottom to the top.
	if got := flow.Series[0].Path; got != "M48.0,178.0 L269.3,93.0 L490.7,8.0 L712.0,8.0" {
		t.Errorf("sessions line %q", got)
	}
	if flow.Empty != "" || flow.Series[1].Total != 0 || flow.YTicks[2].Label != "2/s" {
		t.Errorf("flow chart: %+v", flow)
	}
	if len(refused.Series) != len(palette)+1 || refused.Series[len(palette)].Name != "other" ||
		refused.Series[len(palette)].Total != int64(100-len(palette))+int64(100-len(palette)-1) ||
		refused.Series[0].Name != string(all[0].Reason) || refused.Series[0].Color != palette[0] {
		var names []string
		for _, x := range refused.Series {
			names = append(names, fmt.Sprintf("%s=%d", x.Name, x.Total))
		}
		t.Errorf("refusal areas: %v", names)
	}
	if !strings.HasSuffix(refused.Series[0].Path, " Z") {
		t.Errorf("an area is not closed: %q", refused.Series[0].Path)
	}
	if len(refused.XTicks) != 7 || refused.XTicks[6].Label != "now" || refused.XTicks[6].Pos != plotR {
		t.Errorf("x ticks %+v", refused.XTicks)
	}

	empty := charts(metrics.Series{Step: 10 * time.Second, Elapsed: time.Second, Admitted: make([]int64, n), Accepted: make([]int64, n)})
	if empty[0].Empty == "" || empty[1].Empty == "" || len(empty[1].Series) != 0 {
		t.Errorf("empty charts: %+v", empty)
	}
}

func TestAge(t *testing.T) {
	for d, want := range map[time.Duration]string{-time.Second: "0s", 42 * time.Second: "42s", 12*time.Minute + 5*time.Second: "12m",
		3 * time.Hour: "3h", 3*time.Hour + 10*time.Minute: "3h10m", 50 * time.Hour: "2d2h", 48 * time.Hour: "2d"} {
		if got := age(d); got != want {
			t.Errorf("age(%v) = %q, want %q", d, got, want)
		}
	}
}
