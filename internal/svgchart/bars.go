package svgchart

import (
	"math"
	"slices"
	"strconv"
	"time"
)

// Bars renders one bar per element of bars, in the given order (oldest
// first, say), with values in opts.Unit on the y axis and evenly spaced
// time labels under them. Each bar has the classes "chart-bar state-<State>"
// and a default fill for the usual states, a legend names the states, and
// a tooltip gives the label, value, state and time. A zero value still
// shows a one-pixel stub, so a backup that failed at once remains visible.
// With no bars it renders the opts.Empty message.
func Bars(bars []Bar, opts Options) []byte {
	o := opts.normalized("bars")
	c := newCanvas(o, len(bars)*200)
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, b := range bars {
		if finite(b.Value) {
			lo, hi = min(lo, b.Value), max(hi, b.Value)
		}
	}
	if math.IsInf(lo, 1) {
		return c.empty("chart-barchart")
	}

	var states []string // in order of first appearance
	for _, b := range bars {
		if finite(b.Value) && !slices.Contains(states, b.State) && classToken(b.State) != "" {
			states = append(states, b.State)
		}
	}

	c.open("chart-barchart", barsDesc(bars, states, o))
	y := newYAxis(lo, hi, o.Unit, yTickCount(o.Height))
	c.layout(y, len(states) > 0)
	c.yGrid(y)

	slot := (c.x1 - c.x0) / float64(len(bars))
	width := min(slot*0.8, slot-1, 48) // a few bars stay bars, not slabs
	c.barLabels(bars, slot)
	c.baseline()

	c.bars(bars, states, y, slot, width)

	if len(states) > 0 {
		items := make([]legendItem, len(states))
		for i, s := range states {
			items[i] = legendItem{"chart-swatch state-" + classToken(s), stateColor(s), s}
		}
		c.legend(items)
	}
	return c.close()
}

// bars draws the bars, each with its tooltip.
func (c *canvas) bars(bars []Bar, states []string, y yAxis, slot, width float64) {
	classes := make([]string, len(states)) // the class attribute of each state's bars
	for i, s := range states {
		classes[i] = "chart-bar state-" + classToken(s)
	}
	zero := c.yPos(y, 0)
	b := append(c.b, `<g class="chart-bars">`...) // a local slice: see lineSeries
	for i, bar := range bars {
		if !finite(bar.Value) {
			continue
		}
		top, bottom := c.yPos(y, bar.Value), zero
		if top > bottom {
			top, bottom = bottom, top
		}
		if bottom-top < 1 {
			top = bottom - 1
		}
		class := "chart-bar"
		if k := slices.Index(states, bar.State); k >= 0 {
			class = classes[k]
		}
		b = append(b, `<rect class="`...)
		b = append(b, class...)
		b = append(b, `" x="`...)
		b = appendCoord(b, c.x0+(float64(i)+0.5)*slot-width/2)
		b = append(b, `" y="`...)
		b = appendCoord(b, top)
		b = append(b, `" width="`...)
		b = appendCoord(b, max(width, 0.5))
		b = append(b, `" height="`...)
		b = appendCoord(b, bottom-top)
		b = append(b, `" fill="`...)
		b = append(b, stateColor(bar.State)...)
		b = append(b, `"><title>`...)
		if bar.Label != "" {
			b = appendEscaped(b, bar.Label)
			b = append(b, ": "...)
		}
		b = appendValue(b, bar.Value, c.o.Unit)
		if bar.State != "" {
			b = append(b, ", "...)
			b = appendEscaped(b, bar.State)
		}
		if !bar.Time.IsZero() {
			b = append(b, ", "...)
			b = appendTime(b, bar.Time, c.o.Location)
		}
		b = append(b, "</title></rect>"...)
	}
	c.b = append(b, "</g>"...)
}

// barLabels writes the times of evenly spaced bars under the plot, at a
// precision that suits the span of all the bars.
func (c *canvas) barLabels(bars []Bar, slot float64) {
	var first, last time.Time
	for _, b := range bars {
		if b.Time.IsZero() {
			continue
		}
		if first.IsZero() || b.Time.Before(first) {
			first = b.Time
		}
		if b.Time.After(last) {
			last = b.Time
		}
	}
	if first.IsZero() {
		return
	}
	layout := "Jan 2"
	switch span := last.Sub(first); {
	case span <= 24*time.Hour && first.In(c.o.Location).YearDay() == last.In(c.o.Location).YearDay():
		layout = "15:04"
	case span > 365*24*time.Hour:
		layout = "Jan 2006"
	}
	maxLabels := max(int((c.x1-c.x0)/80), 1)
	every := (len(bars) + maxLabels - 1) / maxLabels
	c.s(`<g class="chart-axis chart-axis-x" fill="currentColor">`)
	for i := 0; i < len(bars); i += every {
		if t := bars[i].Time; !t.IsZero() {
			c.xLabel(c.x0+(float64(i)+0.5)*slot, t.In(c.o.Location).Format(layout))
		}
	}
	c.s("</g>")
}

// barsDesc summarizes the bars for the chart's description: how many, in
// which states, and the largest value.
func barsDesc(bars []Bar, states []string, o Options) string {
	if o.Desc != "" {
		return o.Desc
	}
	peak := math.Inf(-1)
	n := 0
	for _, b := range bars {
		if finite(b.Value) {
			n++
			peak = max(peak, b.Value)
		}
	}
	b := appendCountOf(nil, n, "bar")
	for i, s := range states {
		if i == 0 {
			b = append(b, ": "...)
		} else {
			b = append(b, ", "...)
		}
		k := 0
		for _, bar := range bars {
			if bar.State == s && finite(bar.Value) {
				k++
			}
		}
		b = strconv.AppendInt(b, int64(k), 10)
		b = append(b, ' ')
		b = append(b, s...)
	}
	b = append(b, "; highest "...)
	b = appendValue(b, peak, o.Unit)
	return string(append(b, '.'))
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
