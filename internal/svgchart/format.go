package svgchart

import (
	"math"
	"strconv"
	"time"
)

// tooltipTime is how a point's or a bar's time reads in its tooltip.
const tooltipTime = "2006-01-02 15:04 MST"

// appendTime writes t in loc as tooltipTime does, without the cost of a
// general layout (a chart writes one per point).
func appendTime(b []byte, t time.Time, loc *time.Location) []byte {
	t = t.In(loc)
	y, mo, d := t.Date()
	h, mi, _ := t.Clock()
	zone, _ := t.Zone()
	if y < 0 || y > 9999 || zone == "" {
		return t.AppendFormat(b, tooltipTime)
	}
	b = append(b, byte('0'+y/1000), byte('0'+y/100%10), byte('0'+y/10%10), byte('0'+y%10), '-',
		byte('0'+mo/10), byte('0'+mo%10), '-', byte('0'+d/10), byte('0'+d%10), ' ',
		byte('0'+h/10), byte('0'+h%10), ':', byte('0'+mi/10), byte('0'+mi%10), ' ')
	return append(b, zone...)
}

var binaryUnits = [...]string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}

// appendValue writes v as a person reads it: "1.23 GiB", "2 min 13 s",
// "1,234,567".
func appendValue(b []byte, v float64, u Unit) []byte {
	if v < 0 {
		b = append(b, '-')
		v = -v
	}
	switch u {
	case Bytes:
		return appendBytes(b, v)
	case Seconds:
		return appendDuration(b, v)
	default:
		return appendCount(b, v)
	}
}

func appendBytes(b []byte, v float64) []byte {
	if v < 1024 {
		b = strconv.AppendFloat(b, math.Round(v), 'f', 0, 64)
		return append(b, " B"...)
	}
	k := 0
	for v >= 1024 && k < len(binaryUnits)-1 {
		v /= 1024
		k++
	}
	b = appendSignificant(b, v)
	b = append(b, ' ')
	return append(b, binaryUnits[k]...)
}

// appendSignificant writes v with three significant digits, without
// trailing zeros: 1.5, 17.3, 512.
func appendSignificant(b []byte, v float64) []byte {
	prec := 0
	switch {
	case v >= 1e4: // beyond the largest unit
		return strconv.AppendFloat(b, v, 'g', 3, 64)
	case v < 10:
		prec = 2
	case v < 100:
		prec = 1
	}
	return appendTrimmed(b, v, prec)
}

// appendTrimmed writes v with at most prec decimals, dropping trailing zeros.
func appendTrimmed(b []byte, v float64, prec int) []byte {
	n := len(b)
	b = strconv.AppendFloat(b, v, 'f', prec, 64)
	if prec > 0 {
		for b[len(b)-1] == '0' {
			b = b[:len(b)-1]
		}
		if b[len(b)-1] == '.' {
			b = b[:len(b)-1]
		}
	}
	if len(b)-n > 24 { // absurd magnitudes: scientific notation
		b = strconv.AppendFloat(b[:n], v, 'g', 3, 64)
	}
	return b
}

func appendDuration(b []byte, sec float64) []byte {
	switch {
	case sec < 1:
		b = strconv.AppendFloat(b, math.Round(sec*1000), 'f', 0, 64)
		return append(b, " ms"...)
	case sec < 10:
		b = appendTrimmed(b, sec, 1)
		return append(b, " s"...)
	case sec < 60:
		b = strconv.AppendFloat(b, math.Round(sec), 'f', 0, 64)
		return append(b, " s"...)
	}
	s := math.Round(sec)
	switch {
	case s < 3600:
		return appendPair(b, s/60, "min", math.Mod(s, 60), "s")
	case s < 86400:
		m := math.Round(s / 60)
		return appendPair(b, m/60, "h", math.Mod(m, 60), "min")
	}
	h := math.Round(s / 3600)
	return appendPair(b, h/24, "d", math.Mod(h, 24), "h")
}

// appendPair writes "2 min 13 s", or "2 min" when the smaller part is zero.
func appendPair(b []byte, big float64, bigUnit string, small float64, smallUnit string) []byte {
	b = appendTrimmed(b, math.Floor(big), 0)
	b = append(b, ' ')
	b = append(b, bigUnit...)
	if small != 0 {
		b = append(b, ' ')
		b = strconv.AppendFloat(b, small, 'f', 0, 64)
		b = append(b, ' ')
		b = append(b, smallUnit...)
	}
	return b
}

// appendCount writes a count with thousands separators: 1,234,567.
func appendCount(b []byte, v float64) []byte {
	if v >= 1e15 {
		return strconv.AppendFloat(b, v, 'g', 4, 64)
	}
	v = math.Round(v*100) / 100
	whole := math.Floor(v)
	digits := strconv.AppendFloat(nil, whole, 'f', 0, 64)
	for i, d := range digits {
		if i > 0 && (len(digits)-i)%3 == 0 {
			b = append(b, ',')
		}
		b = append(b, d)
	}
	if frac := v - whole; frac > 0.001 {
		f := appendTrimmed(nil, frac, 2) // "0.25"
		b = append(b, f[1:]...)
	}
	return b
}

func formatValue(v float64, u Unit) string { return string(appendValue(nil, v, u)) }

// appendCountOf writes "1 point" or "3 points".
func appendCountOf(b []byte, n int, noun string) []byte {
	b = strconv.AppendInt(b, int64(n), 10)
	b = append(b, ' ')
	b = append(b, noun...)
	if n != 1 {
		b = append(b, 's')
	}
	return b
}
