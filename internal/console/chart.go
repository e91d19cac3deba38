package console

import (
	"cmp"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/mxguard/mxguard/internal/metrics"
	"github.com/mxguard/mxguard/internal/reason"
)

// chart is one SVG chart of rates per second over the window, drawn on
// the server: stacked areas (refusals by reason) or lines (admissions,
// messages), in a viewBox of chartW × chartH.
type chart struct {
	ID, Title string
	Series    []series
	YTicks    []tick
	XTicks    []tick
	Empty     string // shown instead of a chart with nothing in it
}

type series struct {
	Name  string
	Color string
	Area  bool   // a filled area (Path), else a line (Path too, unfilled)
	Path  string // SVG path data
	Total int64  // over the window, for the legend
}

type tick struct {
	Pos    float64 // x or y in the viewBox
	Label  string
	Anchor string // of an x label: "middle", or "end" at the right edge
}

// The chart's geometry in viewBox units.
const (
	chartW, chartH = 720.0, 200.0
	plotL, plotR   = 48.0, 712.0
	plotT, plotB   = 8.0, 178.0
)

// otherColor is for the reasons beyond the palette, lumped together.
const otherColor = "#8c8c8c"

// palette colours the reasons with the most refusals, in order; the rest
// are drawn as one "other" area.
var palette = []string{"#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf"}

// charts draws the window's series: sessions admitted and messages
// accepted per second, and refusals per second by reason.
func charts(s metrics.Series) []chart {
	rate := rates(s)
	flow := chart{ID: "chart-accepts", Title: "sessions admitted and messages accepted per second, last hour"}
	admitted, accepted := rate(s.Admitted), rate(s.Accepted)
	top := niceMax(max(slices.Max(admitted), slices.Max(accepted)))
	flow.Series = []series{
		{Name: "sessions admitted", Color: "#1f77b4", Path: line(admitted, top), Total: sum(s.Admitted)},
		{Name: "messages accepted", Color: "#2ca02c", Path: line(accepted, top), Total: sum(s.Accepted)},
	}
	flow.YTicks, flow.XTicks = yTicks(top), xTicks(len(s.Admitted), s.Step)
	if flow.Series[0].Total == 0 && flow.Series[1].Total == 0 {
		flow.Empty = "no sessions in the last hour"
	}

	refused := chart{ID: "chart-refusals", Title: "refusals per second by reason, last hour"}
	type named struct {
		why    reason.Reason
		counts []int64
		total  int64
	}
	var all []named
	for why, counts := range s.Refused {
		all = append(all, named{why, counts, sum(counts)})
	}
	slices.SortFunc(all, func(a, b named) int {
		if c := cmp.Compare(b.total, a.total); c != 0 {
			return c
		}
		return cmp.Compare(a.why, b.why)
	})
	n := len(s.Admitted)
	if len(all) > len(palette) {
		other := named{why: "other", counts: make([]int64, n)}
		for _, x := range all[len(palette):] {
			for i, c := range x.counts {
				other.counts[i] += c
			}
			other.total += x.total
		}
		all = append(all[:len(palette)], other)
	}
	stack := make([]float64, n) // the top of the areas drawn so far
	layers := make([][]float64, len(all))
	for j, x := range all {
		r := rate(x.counts)
		for i := range r {
			r[i] += stack[i]
		}
		layers[j], stack = r, r
	}
	top = niceMax(slices.Max(append(stack, 0)))
	base := make([]float64, n)
	for j, x := range all {
		color := otherColor
		if j < len(palette) {
			color = palette[j]
		}
		refused.Series = append(refused.Series, series{Name: string(x.why), Color: color, Area: true,
			Path: area(base, layers[j], top), Total: x.total})
		base = layers[j]
	}
	refused.YTicks, refused.XTicks = yTicks(top), xTicks(n, s.Step)
	if len(all) == 0 {
		refused.Empty = "no refusals in the last hour"
	}
	return []chart{flow, refused}
}

// rates turns a series' counts into rates per second: each bucket over
// its length, the last (still filling) over its elapsed part.
func rates(s metrics.Series) func([]int64) []float64 {
	return func(counts []int64) []float64 {
		out := make([]float64, len(counts))
		for i, c := range counts {
			d := s.Step
			if i == len(counts)-1 {
				d = s.Elapsed
			}
			out[i] = float64(c) / d.Seconds()
		}
		return out
	}
}

func sum(v []int64) (n int64) {
	for _, x := range v {
		n += x
	}
	return n
}

// niceMax rounds v up to 1, 2 or 5 times a power of ten, for the y axis.
func niceMax(v float64) float64 {
	if v <= 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return 1
	}
	e := math.Pow(10, math.Floor(math.Log10(v)))
	for _, f := range []float64{1, 2, 5, 10} {
		if v <= f*e*(1+1e-9) {
			return f * e
		}
	}
	return 10 * e
}

func x(i, n int) float64 {
	if n < 2 {
		return plotR
	}
	return plotL + float64(i)*(plotR-plotL)/float64(n-1)
}

func y(v, top float64) float64 { return plotB - min(v/top, 1)*(plotB-plotT) }

// line is the path of a line through v.
func line(v []float64, top float64) string {
	return string(appendLine(make([]byte, 0, len(v)*14), v, top))
}

func appendLine(b []byte, v []float64, top float64) []byte {
	for i, r := range v {
		if i == 0 {
			b = append(b, 'M')
		} else {
			b = append(b, ' ', 'L')
		}
		b = point(b, x(i, len(v)), y(r, top))
	}
	return b
}

// area is the path of the band between lower and upper: along upper, then
// back along lower.
func area(lower, upper []float64, top float64) string {
	b := appendLine(make([]byte, 0, len(upper)*28), upper, top)
	for i := len(lower) - 1; i >= 0; i-- {
		b = append(b, ' ', 'L')
		b = point(b, x(i, len(lower)), y(lower[i], top))
	}
	return string(append(b, ' ', 'Z'))
}

func point(b []byte, px, py float64) []byte {
	b = strconv.AppendFloat(b, px, 'f', 1, 64)
	b = append(b, ',')
	return strconv.AppendFloat(b, py, 'f', 1, 64)
}

func yTicks(top float64) []tick {
	var out []tick
	for _, f := range []float64{0, 0.5, 1} {
		out = append(out, tick{Pos: y(f*top, top), Label: strconv.FormatFloat(f*top, 'g', 3, 64) + "/s"})
	}
	return out
}

// xTicks marks every sixth of the window back from now (ten minutes of
// an hour).
func xTicks(n int, step time.Duration) []tick {
	span := time.Duration(n) * step
	var out []tick
	for k := 6; k >= 0; k-- {
		back := span * time.Duration(k) / 6
		i := n - 1 - int(back/step)
		label := "now"
		if k > 0 {
			label = "-" + age(back)
		}
		anchor := "middle"
		if k == 0 {
			anchor = "end"
		}
		out = append(out, tick{Pos: x(max(i, 0), n), Label: label, Anchor: anchor})
	}
	return out
}
