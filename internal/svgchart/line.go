package svgchart

import (
	"math"
	"slices"
	"strconv"
	"time"
)

// Line renders series as lines over time: time on the x axis, values in
// opts.Unit on the y axis, a legend when there are two series or more, and
// a tooltip on every point. Missing samples (NaN values, or points further
// apart than opts.MaxGap) break the line; a point with no neighbor shows as
// a dot. With no points at all it renders the opts.Empty message.
func Line(series []Series, opts Options) []byte {
	o := opts.normalized("line")
	clean, total := cleanSeries(series, o)
	c := newCanvas(o, total*180)
	if total == 0 {
		return c.empty("chart-linechart")
	}

	start, end, lo, hi := extent(clean)
	if !o.Start.IsZero() {
		start = o.Start
	}
	if !o.End.IsZero() {
		end = o.End
	}
	if !end.After(start) { // a single instant: center it in a day
		mid := start
		start, end = mid.Add(-12*time.Hour), mid.Add(12*time.Hour)
	}

	c.open("chart-linechart", lineDesc(clean, o))
	y := newYAxis(lo, hi, o.Unit, yTickCount(o.Height))
	c.layout(y, len(clean) > 1)
	c.yGrid(y)

	span := float64(end.Sub(start))
	xPos := func(t time.Time) float64 {
		return c.x0 + float64(t.Sub(start))/span*(c.x1-c.x0)
	}
	c.timeAxis(timeTicks(start, end, o.Location, int((c.x1-c.x0)/80)), xPos)
	c.baseline()

	for i, s := range clean {
		c.lineSeries(i, s, y, xPos)
	}
	if len(clean) > 1 {
		items := make([]legendItem, len(clean))
		for i, s := range clean {
			name := s.Name
			if name == "" {
				name = "Series " + strconv.Itoa(i+1)
			}
			items[i] = legendItem{"chart-swatch series-" + strconv.Itoa(i), seriesColor(i), name}
		}
		c.legend(items)
	}
	return c.close()
}

// cleanSeries copies the drawable points of every series: finite values,
// inside [o.Start, o.End] when set, sorted by time. NaN and ±Inf values are
// kept as gap markers. total counts the finite points.
func cleanSeries(series []Series, o Options) ([]Series, int) {
	out := make([]Series, len(series))
	total := 0
	for i, s := range series {
		pts := make([]Point, 0, len(s.Points))
		for _, p := range s.Points {
			if (!o.Start.IsZero() && p.Time.Before(o.Start)) || (!o.End.IsZero() && p.Time.After(o.End)) {
				continue
			}
			if math.IsInf(p.Value, 0) {
				p.Value = math.NaN()
			}
			if !math.IsNaN(p.Value) {
				total++
			}
			pts = append(pts, p)
		}
		if !slices.IsSortedFunc(pts, comparePoints) {
			slices.SortStableFunc(pts, comparePoints)
		}
		out[i] = Series{Name: s.Name, Class: s.Class, Points: pts}
	}
	return out, total
}

func comparePoints(a, b Point) int { return a.Time.Compare(b.Time) }

// extent returns the time and value range of the finite points.
func extent(series []Series) (start, end time.Time, lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, s := range series {
		for _, p := range s.Points {
			if math.IsNaN(p.Value) {
				continue
			}
			if start.IsZero() || p.Time.Before(start) {
				start = p.Time
			}
			if end.IsZero() || p.Time.After(end) {
				end = p.Time
			}
			lo, hi = min(lo, p.Value), max(hi, p.Value)
		}
	}
	return start, end, lo, hi
}

// timeAxis draws the vertical grid lines and labels of a time axis.
func (c *canvas) timeAxis(ticks []timeTick, xPos func(time.Time) float64) {
	c.s(`<g class="chart-grid chart-grid-x" stroke="currentColor" stroke-opacity="0.1">`)
	for _, t := range ticks {
		x := xPos(t.t)
		c.s(`<line x1="`)
		c.f(x)
		c.s(`" x2="`)
		c.f(x)
		c.s(`" y1="`)
		c.f(c.y0)
		c.s(`" y2="`)
		c.f(c.y1 + 4)
		c.s(`"/>`)
	}
	c.s(`</g><g class="chart-axis chart-axis-x" fill="currentColor">`)
	for _, t := range ticks {
		c.xLabel(xPos(t.t), t.label)
	}
	c.s("</g>")
}

// lineSeries draws one series: a path with a subpath per unbroken run, and
// a circle per point carrying its tooltip. Dense series get transparent
// circles (hover targets); isolated points are always visible.
func (c *canvas) lineSeries(i int, s Series, y yAxis, xPos func(time.Time) float64) {
	color := seriesColor(i)
	idx := strconv.Itoa(i)
	c.s(`<g class="chart-series series-`)
	c.s(idx)
	if cl := classList(s.Class); cl != "" {
		c.s(" ")
		c.s(cl)
	}
	c.s(`"><path class="chart-line" fill="none" stroke="`)
	c.s(color)
	c.s(`" stroke-width="2" stroke-linejoin="round" stroke-linecap="round" d="`)
	pts := s.Points
	joined := func(a, b int) bool { // whether pts[a] and pts[b] are connected
		if a < 0 || b >= len(pts) || math.IsNaN(pts[a].Value) || math.IsNaN(pts[b].Value) {
			return false
		}
		return c.o.MaxGap <= 0 || pts[b].Time.Sub(pts[a].Time) <= c.o.MaxGap
	}
	// The loops below append to a local slice: a chart writes a few hundred
	// thousand bytes, and appending through c would pay a GC write barrier
	// on every call.
	b := c.b
	xy := make([][2]float64, len(pts)) // computed once for the path and the points
	finite := 0
	for j, p := range pts {
		if math.IsNaN(p.Value) {
			continue
		}
		finite++
		xy[j] = [2]float64{xPos(p.Time), c.yPos(y, p.Value)}
		if joined(j-1, j) {
			b = append(b, 'L')
		} else {
			b = append(b, 'M')
		}
		b = appendCoord(b, xy[j][0])
		b = append(b, ' ')
		b = appendCoord(b, xy[j][1])
	}
	b = append(b, `"/><g class="chart-points" fill="`...)
	b = append(b, color...)
	b = append(b, `">`...)

	var name []byte
	if s.Name != "" {
		name = append(appendEscaped(nil, s.Name), ": "...)
	}
	dense := float64(finite)*8 > c.x1-c.x0
	for j, p := range pts {
		if math.IsNaN(p.Value) {
			continue
		}
		if isolated := !joined(j-1, j) && !joined(j, j+1); dense && !isolated {
			b = append(b, `<circle class="chart-point" r="4" fill-opacity="0" cx="`...)
		} else {
			b = append(b, `<circle class="chart-point" r="3" cx="`...)
		}
		b = appendCoord(b, xy[j][0])
		b = append(b, `" cy="`...)
		b = appendCoord(b, xy[j][1])
		b = append(b, `"><title>`...)
		b = append(b, name...)
		b = appendValue(b, p.Value, c.o.Unit)
		b = append(b, " at "...)
		b = appendTime(b, p.Time, c.o.Location)
		b = append(b, "</title></circle>"...)
	}
	c.b = append(b, "</g></g>"...)
}

// lineDesc summarizes the series for the chart's description.
func lineDesc(series []Series, o Options) string {
	if o.Desc != "" {
		return o.Desc
	}
	var b []byte
	for i, s := range series {
		var first, last Point
		n := 0
		peak := math.Inf(-1)
		for _, p := range s.Points {
			if math.IsNaN(p.Value) {
				continue
			}
			if n == 0 {
				first = p
			}
			last, n, peak = p, n+1, max(peak, p.Value)
		}
		if n == 0 {
			continue
		}
		if len(b) > 0 {
			b = append(b, ' ')
		}
		name := s.Name
		if name == "" {
			name = "Series " + strconv.Itoa(i+1)
		}
		b = append(b, name...)
		b = append(b, ": "...)
		b = appendCountOf(b, n, "point")
		b = append(b, " from "...)
		b = first.Time.In(o.Location).AppendFormat(b, tooltipTime)
		b = append(b, " to "...)
		b = last.Time.In(o.Location).AppendFormat(b, tooltipTime)
		b = append(b, "; latest "...)
		b = appendValue(b, last.Value, o.Unit)
		b = append(b, ", highest "...)
		b = appendValue(b, peak, o.Unit)
		b = append(b, '.')
	}
	return string(b)
}
