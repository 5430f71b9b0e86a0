package console

// The page's pictures, drawn on the server as inline SVG: the topology,
// the charts of the last minutes and the conflict sparklines. No chart
// library and nothing fetched by the browser: the page works offline.

import (
	"fmt"
	"html"
	"html/template"
	"math"
	"strings"
	"time"

	"github.com/pgjet/pgjet/cmd/internal/status"
)

// linkColors colour each link state.
var linkColors = map[string]string{
	linkFlowing:    "#2e7d32",
	linkCatchingUp: "#f9a825",
	linkStalled:    "#ef6c00",
	linkCut:        "#c62828",
	linkUnknown:    "#9e9e9e",
}

func linkColor(state string) string {
	if c, ok := linkColors[state]; ok {
		return c
	}
	return linkColors[linkUnknown]
}

// applierColor colours an applier's box by its state.
func applierColor(state string) string {
	switch state {
	case status.ApplierRunning:
		return linkColors[linkFlowing]
	case status.ApplierLagging:
		return linkColors[linkCatchingUp]
	case status.ApplierStopped, status.ApplierDown:
		return linkColors[linkCut]
	}
	return linkColors[linkUnknown]
}

var esc = html.EscapeString

// box draws a labelled rectangle with a coloured edge.
func box(b *strings.Builder, x, y, w, h int, edge, title, sub string) {
	fmt.Fprintf(b, `<rect x="%d" y="%d" width="%d" height="%d" rx="6" fill="#fff" stroke="%s" stroke-width="2"/>`, x, y, w, h, edge)
	fmt.Fprintf(b, `<text x="%d" y="%d" class="t">%s</text>`, x+8, y+18, esc(title))
	if sub != "" {
		fmt.Fprintf(b, `<text x="%d" y="%d" class="s">%s</text>`, x+8, y+34, esc(clip(sub, w/6)))
	}
}

// arrow draws a link from (x1,y1) to (x2,y2) in colour, dashed when cut,
// with label at its middle.
func arrow(b *strings.Builder, x1, y1, x2, y2 int, color, label string, cut bool) {
	dash := ""
	if cut {
		dash = ` stroke-dasharray="6 5"`
	}
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"%s marker-end="url(#head)"/>`, x1, y1, x2, y2, color, dash)
	if label != "" {
		fmt.Fprintf(b, `<text x="%d" y="%d" class="l" fill="%s" text-anchor="middle">%s</text>`, (x1+x2)/2, (y1+y2)/2-6, color, esc(label))
	}
}

func clip(s string, n int) string {
	if len(s) <= n || n < 2 {
		return s
	}
	return s[:n-1] + "…"
}

// topology draws source → hub → each region's mirror → applier →
// replica, each region's link in the colour of its state.
func topology(v view) template.HTML {
	const rowH, boxH, boxW = 64, 44, 150
	n := max(len(v.Regions), 1)
	height := n*rowH + 16
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="topology" viewBox="0 0 900 %d" width="900" height="%d" role="img" aria-label="topology">`, height, height)
	b.WriteString(`<defs><marker id="head" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" fill="context-stroke"/></marker></defs>`)
	mid := height/2 - boxH/2
	stall := v.Stall.Seconds()
	capEdge, capSub := linkColors[linkUnknown], "capture → stream"
	if cp := v.Capture; cp != nil {
		switch {
		case cp.Error != "":
			capEdge, capSub = linkColors[linkCut], "source unreachable"
		case cp.Missing:
			capEdge, capSub = linkColors[linkCut], "no slot "+cp.Slot
		case !cp.Active:
			capEdge, capSub = linkColors[linkCut], "slot "+cp.Slot+" idle: capture stopped"
		case cp.ReplySeconds != nil && *cp.ReplySeconds > stall:
			// A client holds the slot but has not replied to its
			// walsender: capture is stuck, not streaming.
			capEdge, capSub = linkColors[linkStalled], fmt.Sprintf("slot %s: no reply for %.0fs", cp.Slot, *cp.ReplySeconds)
		default:
			capEdge, capSub = linkColors[linkFlowing], "slot "+cp.Slot+" streaming"
		}
	}
	box(&b, 8, mid, 150, boxH, capEdge, "source "+v.Source, capSub)
	hubEdge, hubTitle, hubSub := linkColors[linkCut], "hub", "home stream not found"
	arrowColor := capEdge
	if h := v.Home; h != nil {
		hubEdge, hubTitle, hubSub = linkColors[linkFlowing], "hub (domain "+h.Domain+")", fmt.Sprintf("%s seq %d", h.Stream, h.LastSeq)
		// Capture publishes a heartbeat every few seconds: a home
		// stream without a message for longer than the stall timeout
		// receives nothing, whatever the slot says.
		switch {
		case h.LastTime == nil:
			hubEdge, hubSub, arrowColor = linkColors[linkStalled], h.Stream+": no message yet", linkColors[linkStalled]
		case v.At.Sub(*h.LastTime).Seconds() > stall:
			hubEdge, hubSub, arrowColor = linkColors[linkStalled], fmt.Sprintf("%s: last message %.0fs ago", h.Stream, v.At.Sub(*h.LastTime).Seconds()), linkColors[linkStalled]
		}
	}
	arrow(&b, 158, mid+boxH/2, 186, mid+boxH/2, arrowColor, "", arrowColor == linkColors[linkCut])
	box(&b, 190, mid, boxW+20, boxH, hubEdge, hubTitle, hubSub)
	for i, r := range v.Regions {
		y := 8 + i*rowH
		color := linkColor(r.Link)
		arrow(&b, 360, mid+boxH/2, 466, y+boxH/2, color, r.Link, r.Link == linkCut)
		box(&b, 470, y, 130, boxH, color, "mirror "+r.Name, r.Mirror)
		ac := applierColor(r.ApplierState)
		arrow(&b, 600, y+boxH/2, 636, y+boxH/2, ac, "", false)
		box(&b, 640, y, 110, boxH, ac, "applier "+r.Name, r.Applier)
		repEdge, repSub := ac, "lag "+r.Lag
		if r.DBError != "" {
			repEdge, repSub = linkColors[linkCut], "database unreachable"
		}
		arrow(&b, 750, y+boxH/2, 772, y+boxH/2, ac, "", false)
		box(&b, 776, y, 116, boxH, repEdge, "replica "+r.Name, repSub)
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// chart geometry.
const (
	chartW, chartH           = 440, 170
	chartLeft, chartRight    = 62, 18
	chartTop, chartBottom    = 10, 22
	plotW, plotH             = chartW - chartLeft - chartRight, chartH - chartTop - chartBottom
	timelineRow, timelineTop = 16, 4
)

// charts draws the lag in seconds, the lag in bytes and the applied rate
// of each region over the window, and the timeline of each region's
// link state.
func charts(samples []Sample, regions []regionView, now time.Time, window time.Duration) (lag, bytes, rate, timeline template.HTML) {
	secs := func(f float64) string { return num(f) + "s" }
	lag = lineChart("lag seconds", samples, regions, now, window, secs, niceCeil, func(r RegionSample) *float64 { return r.LagSeconds })
	bytes = lineChart("lag bytes", samples, regions, now, window, func(f float64) string { return status.HumanBytes(int64(f)) }, niceBytes,
		func(r RegionSample) *float64 {
			if r.BehindBytes == nil {
				return nil
			}
			f := float64(*r.BehindBytes)
			return &f
		})
	rate = lineChart("applied per second", samples, regions, now, window, func(f float64) string { return num(f) + "/s" }, niceCeil,
		func(r RegionSample) *float64 { return r.AppliedPerSecond })
	return lag, bytes, rate, linkTimeline(samples, regions, now, window)
}

// num renders an axis value without an exponent: 2000, 2.5, 0.25.
func num(f float64) string {
	if f >= 100 {
		return fmt.Sprintf("%.0f", f)
	}
	return fmt.Sprintf("%.3g", f)
}

// xOf places time t on a chart of window ending at now.
func xOf(t, now time.Time, window time.Duration) float64 {
	f := 1 - now.Sub(t).Seconds()/window.Seconds()
	return chartLeft + math.Max(0, math.Min(1, f))*plotW
}

// axis draws the time axis under a plot width wide that starts at y0
// and is h high, with grid lines when grid is set.
func axis(b *strings.Builder, window time.Duration, width float64, y0, h int, grid bool) {
	for i := 0; i <= 3; i++ {
		x := chartLeft + float64(i)*width/3
		label := "now"
		if i < 3 {
			label = "-" + shortDuration(window*time.Duration(3-i)/3)
		}
		if grid {
			fmt.Fprintf(b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" class="grid"/>`, x, y0, x, y0+h)
		}
		fmt.Fprintf(b, `<text x="%.1f" y="%d" class="s" text-anchor="middle">%s</text>`, x, y0+h+15, label)
	}
}

// lineChart draws one line per region of value over the window; a sample
// without a value breaks the line.
func lineChart(title string, samples []Sample, regions []regionView, now time.Time, window time.Duration, format func(float64) string, nice func(float64) float64, value func(RegionSample) *float64) template.HTML {
	top := 0.0
	for _, s := range samples {
		for _, r := range s.Regions {
			if v := value(r); v != nil && now.Sub(s.At) <= window {
				top = math.Max(top, *v)
			}
		}
	}
	top = nice(top)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %d %d" width="%d" height="%d" role="img" aria-label="%s">`, chartW, chartH, chartW, chartH, esc(title))
	for i, r := range regions {
		fmt.Fprintf(&b, `<text x="%d" y="%d" class="l" fill="%s" text-anchor="end">%s</text>`, chartLeft+plotW-4, chartTop+14+i*13, r.Color, esc(r.Name))
	}
	for i := 0; i <= 2; i++ {
		y := float64(chartTop) + float64(plotH)*float64(i)/2
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" class="grid"/>`, chartLeft, y, chartLeft+plotW, y)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" class="s" text-anchor="end">%s</text>`, chartLeft-4, y+4, esc(format(top*float64(2-i)/2)))
	}
	axis(&b, window, plotW, chartTop, plotH, true)
	yOf := func(v float64) float64 { return float64(chartTop) + float64(plotH)*(1-v/top) }
	for _, r := range regions {
		var pts []string
		flush := func() {
			switch len(pts) {
			case 0:
			case 1:
				xy := strings.Split(pts[0], ",")
				fmt.Fprintf(&b, `<circle cx="%s" cy="%s" r="2" fill="%s"/>`, xy[0], xy[1], r.Color)
			default:
				fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2" data-region="%s"/>`, strings.Join(pts, " "), r.Color, esc(r.Name))
			}
			pts = pts[:0]
		}
		for _, s := range samples {
			if now.Sub(s.At) > window {
				continue
			}
			rs := s.region(r.Name)
			var v *float64
			if rs != nil {
				v = value(*rs)
			}
			if v == nil {
				flush()
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", xOf(s.At, now, window), yOf(*v)))
		}
		flush()
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten (1 for 0).
func niceCeil(v float64) float64 {
	if v <= 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

// niceBytes rounds v up to 1, 2 or 5 times a power of 1024 (so that
// the axis reads 2 KiB, not 1.95 KiB).
func niceBytes(v float64) float64 {
	unit := 1.0
	for v > 1024*unit {
		unit *= 1024
	}
	return niceCeil(v/unit) * unit
}

// linkTimeline draws, per region, a band coloured by its link state over
// the window: a cut shows as a red stretch, the catch-up after it amber.
func linkTimeline(samples []Sample, regions []regionView, now time.Time, window time.Duration) template.HTML {
	h := timelineTop + len(regions)*timelineRow + chartBottom
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="timeline" viewBox="0 0 %d %d" width="%d" height="%d" role="img" aria-label="link state over time">`, chartW*2, h, chartW*2, h)
	plot := float64(chartW*2 - chartLeft - chartRight)
	x := func(t time.Time) float64 {
		f := 1 - now.Sub(t).Seconds()/window.Seconds()
		return chartLeft + math.Max(0, math.Min(1, f))*plot
	}
	for i, r := range regions {
		y := timelineTop + i*timelineRow
		fmt.Fprintf(&b, `<text x="%d" y="%d" class="s" text-anchor="end">%s</text>`, chartLeft-4, y+12, esc(r.Name))
		for j, s := range samples {
			rs := s.region(r.Name)
			if rs == nil || now.Sub(s.At) > window {
				continue
			}
			end := now
			if j+1 < len(samples) {
				end = samples[j+1].At
			}
			x0, x1 := x(s.At), x(end)
			fmt.Fprintf(&b, `<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"><title>%s: %s</title></rect>`,
				x0, y, math.Max(x1-x0, 0.5), timelineRow-3, linkColor(rs.Link), esc(r.Name), esc(rs.Link))
		}
	}
	axis(&b, window, plot, timelineTop, len(regions)*timelineRow, false)
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// spark draws counts as small bars, oldest first.
func spark(counts []int64) template.HTML {
	const w, h = 90, 18
	top := int64(1)
	for _, c := range counts {
		top = max(top, c)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="spark" viewBox="0 0 %d %d" width="%d" height="%d">`, w, h, w, h)
	bw := float64(w) / float64(max(len(counts), 1))
	for i, c := range counts {
		bh := float64(h) * float64(c) / float64(top)
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#555"/>`, float64(i)*bw, float64(h)-bh, bw-1, bh)
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}
