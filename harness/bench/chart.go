package bench

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// bar is one bar of a grouped bar chart.
type bar struct {
	series string
	value  float64 // NaN: not measured
}

// series of the throughput chart, in drawing order, with their colours.
var series = []struct{ name, color string }{
	{"raw ceiling (best batching)", "#9e9e9e"},
	{"pipeline, unguarded", "#90caf9"},
	{"pipeline, guarded", "#1565c0"},
	{"pipeline, guarded, every message twice", "#ef6c00"},
}

// chart draws records/s by dataset size: the ceiling and the pipeline's modes side by side, with
// the 70 % goal marked on each size.
func (r *Results) chart() string {
	var groups []string
	var bars [][]bar
	for _, s := range r.sizes() {
		groups = append(groups, sizeName(s.Size)+" records")
		bars = append(bars, []bar{
			{series[0].name, median(ceilingRates(s.Ceiling))},
			{series[1].name, median(rates(s.Unguarded))},
			{series[2].name, median(rates(s.Guarded))},
			{series[3].name, median(rates(s.Duplicates))},
		})
	}
	title := fmt.Sprintf("Records/s by dataset size — %s, %d CPUs, commit %s", r.Machine.CPU, r.Machine.Cores, r.Machine.Commit)
	return barChart(title, groups, bars, GoalPipelineVsCeiling)
}

// barChart renders an SVG grouped bar chart; goal > 0 draws a dashed mark at goal × the first
// bar of each group.
func barChart(title string, groups []string, bars [][]bar, goal float64) string {
	const (
		width, height          = 860, 500
		left, right, top, base = 80, 20, 50, 380
		barW, gap, groupGap    = 34, 6, 60
	)
	top_ := 0.0
	for _, g := range bars {
		for _, b := range g {
			if !math.IsNaN(b.value) {
				top_ = math.Max(top_, b.value)
			}
		}
	}
	scale := niceCeil(top_ * 1.1)
	y := func(v float64) float64 { return base - (base-top)*v/scale }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="24" font-size="14" font-weight="bold">%s</text>`+"\n", left, html.EscapeString(title))
	// Grid and y axis.
	for i := 0; i <= 5; i++ {
		v := scale * float64(i) / 5
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#e0e0e0"/>`+"\n", left, y(v), width-right, y(v))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", left-8, y(v)+4, thousands(v))
	}
	fmt.Fprintf(&b, `<text x="18" y="%d" transform="rotate(-90 18 %d)" text-anchor="middle">records/s</text>`+"\n", (top+base)/2, (top+base)/2)
	x := float64(left + 30)
	for gi, g := range bars {
		start := x
		for bi, bb := range g {
			color := series[bi%len(series)].color
			if !math.IsNaN(bb.value) && bb.value > 0 {
				fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%d" height="%.1f" fill="%s"><title>%s: %s records/s</title></rect>`+"\n",
					x, y(bb.value), barW, base-y(bb.value), color, html.EscapeString(bb.series), thousands(bb.value))
				fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="11">%s</text>`+"\n", x+barW/2, y(bb.value)-4, thousands(bb.value))
			}
			x += barW + gap
		}
		if goal > 0 && len(g) > 0 && !math.IsNaN(g[0].value) {
			gy := y(goal * g[0].value)
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#c62828" stroke-dasharray="5,3"/>`+"\n", start-4, gy, x-gap+4, gy)
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", (start+x-gap)/2, base+20, html.EscapeString(groups[gi]))
		x += groupGap
	}
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#424242"/>`+"\n", left, base, width-right, base)
	// Legend: two columns, then the goal's mark.
	for i, s := range series {
		lx, ly := float64(left+(i%2)*380), float64(base+42+(i/2)*20)
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="12" height="12" fill="%s"/><text x="%.1f" y="%.1f">%s</text>`+"\n", lx, ly-10, s.color, lx+18, ly, html.EscapeString(s.name))
	}
	if goal > 0 {
		ly := float64(base + 42 + 2*20)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#c62828" stroke-dasharray="5,3"/><text x="%d" y="%.1f">goal: %.0f %% of the ceiling</text>`+"\n",
			left, ly-4, left+12, ly-4, left+18, ly, 100*goal)
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 || math.IsNaN(v) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

// thousands formats v rounded, with comma thousands separators: 12,345.
func thousands(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}
