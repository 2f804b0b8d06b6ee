package svgchart

import (
	"math"
	"strconv"
	"time"
)

// yAxis is a value axis with "nice" ticks: 1, 2 or 5 times a power of ten of
// the unit its labels are written in (B, KiB, … for bytes; ms, s, min, h
// for durations; k, M, G for counts).
type yAxis struct {
	lo, hi float64 // the domain, in the values' unit
	ticks  []float64
	labels []string
}

// newYAxis fits an axis around [lo, hi] with about n intervals. The axis
// always includes zero, since every Unit measures an amount.
func newYAxis(lo, hi float64, u Unit, n int) yAxis {
	lo, hi = min(lo, 0), max(hi, 0)
	if lo == hi {
		hi = 1
	}
	div, suffix := axisUnit(u, max(-lo, hi))
	parts := float64(max(n, 1))
	step := niceStep(hi/div/parts - lo/div/parts) // not (hi-lo): it may overflow
	if div == 1 && u != Seconds && step < 1 {
		step = 1 // no fractional bytes or counts
	}
	kLo := math.Floor(lo/div/step + 1e-9)
	kHi := math.Ceil(hi/div/step - 1e-9)
	a := yAxis{lo: kLo * step * div, hi: kHi * step * div}
	if !(kHi-kLo <= 100) || math.IsInf(a.lo, 0) || math.IsInf(a.hi, 0) {
		// Near the limits of float64 no nice step fits: label the ends.
		a = yAxis{lo: lo, hi: hi, ticks: []float64{lo, hi}}
		a.labels = []string{formatValue(lo, u), formatValue(hi, u)}
		return a
	}
	decimals := max(0, -int(math.Floor(math.Log10(step)+1e-9)))
	for k := kLo; k <= kHi; k++ {
		v := k * step
		a.ticks = append(a.ticks, v*div)
		if k == 0 {
			a.labels = append(a.labels, "0")
			continue
		}
		var b []byte
		if math.Abs(v) >= 1e6 { // beyond the largest unit: keep labels short
			b = strconv.AppendFloat(nil, v, 'g', 3, 64)
		} else {
			b = appendTrimmed(nil, v, decimals)
		}
		a.labels = append(a.labels, string(b)+suffix)
	}
	return a
}

// yTickCount is how many intervals a value axis of a chart this tall gets:
// one per 35 pixels or so.
func yTickCount(height int) int { return max((height-60)/35, 2) }

// niceStep rounds raw up to 1, 2 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	if !(raw > 0) || math.IsInf(raw, 0) {
		return 1
	}
	e := math.Floor(math.Log10(raw))
	p := math.Pow(10, e)
	switch f := raw / p; {
	case f <= 1+1e-9:
		return p
	case f <= 2+1e-9:
		return 2 * p
	case f <= 5+1e-9:
		return 5 * p
	default:
		return 10 * p
	}
}

// axisUnit picks the unit the labels of an axis reaching mag are written in.
func axisUnit(u Unit, mag float64) (div float64, suffix string) {
	switch u {
	case Bytes:
		div = 1
		k := 0
		for mag >= 1024*div && k < len(binaryUnits)-1 {
			div *= 1024
			k++
		}
		return div, " " + binaryUnits[k]
	case Seconds:
		switch {
		case mag < 1:
			return 0.001, " ms"
		case mag < 120:
			return 1, " s"
		case mag < 7200:
			return 60, " min"
		default:
			return 3600, " h"
		}
	default:
		switch {
		case mag < 1e3:
			return 1, ""
		case mag < 1e6:
			return 1e3, "k"
		case mag < 1e9:
			return 1e6, "M"
		case mag < 1e12:
			return 1e9, "G"
		default:
			return 1e12, "T"
		}
	}
}

// timeTick is one labelled instant of a time axis.
type timeTick struct {
	t     time.Time
	label string
}

type calendarUnit int

const (
	minutes calendarUnit = iota
	hours
	days
	weeks
	months
	years
)

// timeTicks places at most about n ticks on [start, end] at calendar
// boundaries in loc: every 1, 5, 15 or 30 minutes, 1, 2, 3, 6 or 12 hours,
// every day or two, Mondays, first days of months, quarters or years.
func timeTicks(start, end time.Time, loc *time.Location, n int) []timeTick {
	steps := [...]struct {
		unit  calendarUnit
		count int
		size  time.Duration
	}{
		{minutes, 1, time.Minute}, {minutes, 5, 5 * time.Minute},
		{minutes, 15, 15 * time.Minute}, {minutes, 30, 30 * time.Minute},
		{hours, 1, time.Hour}, {hours, 2, 2 * time.Hour}, {hours, 3, 3 * time.Hour},
		{hours, 6, 6 * time.Hour}, {hours, 12, 12 * time.Hour},
		{days, 1, 24 * time.Hour}, {days, 2, 48 * time.Hour}, {weeks, 1, 7 * 24 * time.Hour},
		{months, 1, 30 * 24 * time.Hour}, {months, 3, 91 * 24 * time.Hour},
		{years, 1, 365 * 24 * time.Hour},
	}
	span := end.Sub(start)
	n = max(n, 2)
	unit, count := years, 0
	for _, s := range steps {
		if span/s.size <= time.Duration(n) {
			unit, count = s.unit, s.count
			break
		}
	}
	if count == 0 { // decades and beyond: a nice number of years
		count = int(niceStep(span.Hours() / (365.25 * 24) / float64(n)))
	}

	s := start.In(loc)
	y, mo, d := s.Date()
	h, mi := s.Hour(), s.Minute()
	var next func(k int) time.Time
	switch unit {
	case minutes:
		mi -= mi % count
		next = func(k int) time.Time { return time.Date(y, mo, d, h, mi+k*count, 0, 0, loc) }
	case hours:
		h -= h % count
		next = func(k int) time.Time { return time.Date(y, mo, d, h+k*count, 0, 0, 0, loc) }
	case days, weeks:
		if unit == weeks {
			count = 7
		}
		// Align to the civil day count since 1970-01-01 (a Thursday) so that
		// every other day is stable and weeks start on Mondays.
		civil := time.Date(y, mo, d, 0, 0, 0, 0, time.UTC).Unix() / 86400
		offset := int64(0)
		if unit == weeks {
			offset = 3
		}
		d -= int(((civil+offset)%int64(count) + int64(count)) % int64(count))
		next = func(k int) time.Time { return time.Date(y, mo, d+k*count, 0, 0, 0, 0, loc) }
	case months:
		mo -= (mo - 1) % time.Month(count)
		next = func(k int) time.Time { return time.Date(y, mo+time.Month(k*count), 1, 0, 0, 0, 0, loc) }
	default:
		y -= y % count
		next = func(k int) time.Time { return time.Date(y+k*count, 1, 1, 0, 0, 0, 0, loc) }
	}

	var ticks []timeTick
	var last time.Time
	for k := 0; k < 4*n+8; k++ {
		t := next(k)
		if t.After(end) {
			break
		}
		if t.Before(start) || !t.After(last) {
			continue // before the axis, or repeated by a DST fold
		}
		last = t
		ticks = append(ticks, timeTick{t, tickLabel(t, unit)})
	}
	return ticks
}

// tickLabel writes the time at the precision of the axis, naming the larger
// unit where it changes: the date at midnight, the year in January.
func tickLabel(t time.Time, unit calendarUnit) string {
	switch unit {
	case minutes, hours:
		if t.Hour() == 0 && t.Minute() == 0 {
			return t.Format("Jan 2")
		}
		return t.Format("15:04")
	case days, weeks:
		return t.Format("Jan 2")
	case months:
		if t.Month() == time.January {
			return t.Format("2006")
		}
		return t.Format("Jan")
	default:
		return t.Format("2006")
	}
}
