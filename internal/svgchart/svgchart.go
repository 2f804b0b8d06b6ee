// Package svgchart renders small, accessible SVG charts on the server, for
// pages that run no JavaScript and send a strict Content-Security-Policy.
//
// The output never carries a style attribute or a <style> element: every
// element has a class name (chart-line, chart-bar state-failed, chart-axis,
// chart-grid, …) for the page's stylesheet to color, and a sensible default
// stroke or fill as a presentation attribute, which any stylesheet rule
// overrides. Text and axes use currentColor, so a chart follows the page's
// text color in dark mode. A chart has a viewBox and scales with its
// container; give it `width: 100%; height: auto` in CSS.
//
// The class names a stylesheet can address:
//
//	svg.chart            the root, plus chart-linechart or chart-barchart,
//	                     chart-nodata when empty, and Options.Class
//	.chart-grid          horizontal (and, on time axes, vertical chart-grid-x) rules
//	.chart-axis          the axis line and the tick labels (chart-axis-x, chart-axis-y)
//	.chart-series        one line's group, with series-0, series-1, … and Series.Class
//	.chart-line          the line's path
//	.chart-point         a point's circle; transparent on dense lines (hover targets)
//	.chart-bar           a bar, with state-<State>, e.g. state-failed
//	.chart-legend        the legend; its swatches are .chart-swatch with the
//	                     series-N or state-<State> class of what they name
//	.chart-empty         the "No data yet" message
//
// For example `.chart .state-failed { fill: var(--danger) }` or
// `.chart-point:hover { fill-opacity: 1 }`.
//
// Text is 12 units of the viewBox high. Choose Width close to the width the
// chart is shown at: a chart drawn 640 wide and shown 320 wide has 6px text.
//
// Charts are accessible images: role="img", a <title> and <desc> (the
// description summarizes the data when none is given), and every point and
// bar has its own <title> tooltip with the value and the time.
//
// Rendering is deterministic: the same input yields the same bytes.
package svgchart

import (
	"hash/fnv"
	"strconv"
	"time"
)

// Unit says what the values measure, which decides the axis ticks and how
// values are written.
type Unit int

const (
	// Count is a plain number: 1,234 in tooltips, 2k or 5M on the axis.
	Count Unit = iota
	// Bytes is a size in bytes, written in binary units (KiB, MiB, GiB, TiB…).
	Bytes
	// Seconds is a duration in seconds, written in ms, s, min and h.
	Seconds
)

// Point is one sample of a Series.
type Point struct {
	Time  time.Time
	Value float64 // NaN or ±Inf marks a missing sample: the line breaks there
}

// Series is one line of a Line chart.
type Series struct {
	Name   string  // in the legend and the tooltips; may be empty
	Class  string  // extra class names for the series' group, e.g. "series-stored"
	Points []Point // in any order; sorted by time when drawn
}

// Bar is one bar of a Bars chart, such as one backup and its duration.
type Bar struct {
	Time  time.Time // labels the x axis and the tooltip; may be zero
	Value float64   // NaN or ±Inf leaves the bar's slot empty
	State string    // e.g. "succeeded", "partial", "failed": the class state-<State>
	Label string    // what the bar is, e.g. "nightly on laptop-3", in its tooltip
}

// Options configure a chart. The zero value is usable.
type Options struct {
	// Width and Height are the size in pixels (defaults 640×240); the
	// viewBox keeps the aspect ratio when the page resizes the chart.
	Width, Height int
	// Title is the chart's accessible name (default "Chart"); Desc its
	// longer description (default: a summary of the data).
	Title, Desc string
	// ID prefixes the ids of the title and desc elements. Pages holding two
	// charts of the same title must set it; by default it derives from Title.
	ID string
	// Class adds class names to the root <svg> element.
	Class string
	// Unit of the values (y axis): Count, Bytes or Seconds.
	Unit Unit
	// Location the times are shown in and the time axis aligns to (default UTC).
	Location *time.Location
	// Start and End fix the time axis of a Line chart, e.g. the last 30
	// days; points outside are left out. By default the axis spans the data.
	Start, End time.Time
	// MaxGap breaks a line between two points further apart than this, so
	// missing samples show as a gap rather than a straight interpolation.
	// Zero joins every pair of points.
	MaxGap time.Duration
	// Empty is the message drawn when there is nothing to plot (default
	// "No data yet").
	Empty string
}

const (
	defaultWidth  = 640
	defaultHeight = 240
	fontSize      = 12.0
	charWidth     = 0.6 * fontSize // the average advance of a label glyph
)

func (o Options) normalized(kind string) Options {
	if o.Width <= 0 {
		o.Width = defaultWidth
	}
	if o.Height <= 0 {
		o.Height = defaultHeight
	}
	o.Width = max(o.Width, 160)
	o.Height = max(o.Height, 100)
	if o.Title == "" {
		o.Title = "Chart"
	}
	if o.Location == nil {
		o.Location = time.UTC
	}
	if o.Empty == "" {
		o.Empty = "No data yet"
	}
	if id := classToken(o.ID); id != "" {
		o.ID = id
	} else {
		h := fnv.New32a()
		h.Write([]byte(kind))
		h.Write([]byte(o.Title))
		o.ID = "chart-" + strconv.FormatUint(uint64(h.Sum32()), 36)
	}
	return o
}

// canvas accumulates the SVG of one chart and knows its plot area.
type canvas struct {
	b              []byte
	o              Options
	w, h           float64
	x0, x1, y0, y1 float64 // the plot area: x0 left, y0 top
}

func newCanvas(o Options, sizeHint int) *canvas {
	return &canvas{
		b: make([]byte, 0, 2048+sizeHint),
		o: o,
		w: float64(o.Width),
		h: float64(o.Height),
	}
}

// open writes the root element, the title and the description.
func (c *canvas) open(kind, desc string) {
	c.s(`<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 `)
	c.f(c.w)
	c.s(" ")
	c.f(c.h)
	c.s(`" width="`)
	c.f(c.w)
	c.s(`" height="`)
	c.f(c.h)
	c.s(`" role="img" aria-labelledby="`)
	c.s(c.o.ID)
	c.s(`-title" aria-describedby="`)
	c.s(c.o.ID)
	c.s(`-desc" class="chart `)
	c.s(kind)
	if cl := classList(c.o.Class); cl != "" {
		c.s(" ")
		c.s(cl)
	}
	c.s(`" font-family="system-ui, sans-serif" font-size="`)
	c.f(fontSize)
	c.s(`"><title id="`)
	c.s(c.o.ID)
	c.s(`-title">`)
	c.text(c.o.Title)
	c.s(`</title><desc id="`)
	c.s(c.o.ID)
	c.s(`-desc">`)
	c.text(desc)
	c.s("</desc>")
}

func (c *canvas) close() []byte {
	c.s("</svg>\n")
	return c.b
}

// empty renders the frame of a chart with nothing to plot: a baseline and
// the Empty message, so the page keeps its layout and says why.
func (c *canvas) empty(kind string) []byte {
	desc := c.o.Desc
	if desc == "" {
		desc = c.o.Empty
	}
	c.open(kind+" chart-nodata", desc)
	c.s(`<line class="chart-axis" x1="16" x2="`)
	c.f(c.w - 16)
	c.s(`" y1="`)
	c.f(c.h - 28)
	c.s(`" y2="`)
	c.f(c.h - 28)
	c.s(`" stroke="currentColor" stroke-opacity="0.5"/><text class="chart-empty" x="`)
	c.f(c.w / 2)
	c.s(`" y="`)
	c.f(c.h / 2)
	c.s(`" dy="0.32em" text-anchor="middle" font-size="16" fill="currentColor" fill-opacity="0.7">`)
	c.text(c.o.Empty)
	c.s("</text>")
	return c.close()
}

// layout places the plot area: room on the left for the widest y label, at
// the top for a legend, at the bottom for the time labels.
func (c *canvas) layout(y yAxis, legend bool) {
	widest := 0
	for _, l := range y.labels {
		widest = max(widest, runeCount(l))
	}
	c.x0 = min(max(float64(widest)*charWidth+10, 28), c.w/3)
	c.x1 = c.w - 20
	c.y0 = 10
	if legend {
		c.y0 = 32
	}
	c.y1 = c.h - 28
}

// yGrid draws the horizontal grid lines and the y axis labels.
func (c *canvas) yGrid(y yAxis) {
	c.s(`<g class="chart-grid" stroke="currentColor" stroke-opacity="0.15">`)
	for _, v := range y.ticks {
		py := c.yPos(y, v)
		c.s(`<line x1="`)
		c.f(c.x0)
		c.s(`" x2="`)
		c.f(c.x1)
		c.s(`" y1="`)
		c.f(py)
		c.s(`" y2="`)
		c.f(py)
		c.s(`"/>`)
	}
	c.s(`</g><g class="chart-axis chart-axis-y" fill="currentColor" text-anchor="end">`)
	for i, v := range y.ticks {
		c.s(`<text x="`)
		c.f(c.x0 - 6)
		c.s(`" y="`)
		c.f(c.yPos(y, v))
		c.s(`" dy="0.32em">`)
		c.text(y.labels[i])
		c.s("</text>")
	}
	c.s("</g>")
}

// xLabel writes one time label under the plot, anchored so that it stays
// inside the chart near the edges.
func (c *canvas) xLabel(x float64, label string) {
	half := float64(runeCount(label)) * charWidth / 2
	c.s(`<text x="`)
	switch {
	case x-half < 2:
		c.f(max(x-half, 2))
	case x+half > c.w-2:
		c.f(min(x+half, c.w-2))
		c.s(`" text-anchor="end`)
	default:
		c.f(x)
		c.s(`" text-anchor="middle`)
	}
	c.s(`" y="`)
	c.f(c.y1 + 18)
	c.s(`">`)
	c.text(label)
	c.s("</text>")
}

// baseline draws the x axis line.
func (c *canvas) baseline() {
	c.s(`<line class="chart-axis chart-axis-x" x1="`)
	c.f(c.x0)
	c.s(`" x2="`)
	c.f(c.x1)
	c.s(`" y1="`)
	c.f(c.y1)
	c.s(`" y2="`)
	c.f(c.y1)
	c.s(`" stroke="currentColor" stroke-opacity="0.5"/>`)
}

// legendItem is a swatch and a name in the legend row above the plot.
type legendItem struct {
	class, color, name string
}

func (c *canvas) legend(items []legendItem) {
	c.s(`<g class="chart-legend" fill="currentColor">`)
	x := c.x0
	for _, it := range items {
		c.s(`<rect class="`)
		c.s(it.class)
		c.s(`" x="`)
		c.f(x)
		c.s(`" y="10" width="12" height="12" rx="2" fill="`)
		c.s(it.color)
		c.s(`"/><text x="`)
		c.f(x + 17)
		c.s(`" y="16" dy="0.32em">`)
		c.text(it.name)
		c.s("</text>")
		x += 17 + float64(runeCount(it.name))*charWidth + 16
	}
	c.s("</g>")
}

func (c *canvas) yPos(y yAxis, v float64) float64 {
	return c.y1 - (v/2-y.lo/2)/(y.hi/2-y.lo/2)*(c.y1-c.y0) // halves: no overflow at ±1e308
}

// Default colors, overridden by any stylesheet rule on the class names.
// They are mid-tones that read on light and dark backgrounds.
func seriesColor(i int) string {
	switch i % 5 {
	case 0:
		return "#2563eb"
	case 1:
		return "#d97706"
	case 2:
		return "#059669"
	case 3:
		return "#7c3aed"
	default:
		return "#db2777"
	}
}

func stateColor(state string) string {
	switch state {
	case "succeeded", "success", "ok":
		return "#16a34a"
	case "partial", "warning":
		return "#d97706"
	case "failed", "error":
		return "#dc2626"
	case "running":
		return "#2563eb"
	default:
		return "#6b7280"
	}
}
