package svgchart

import (
	"math"
	"testing"
	"time"
)

// FuzzCharts renders charts from arbitrary strings and numbers: the output
// must always be a well-formed SVG whose title reads back unchanged when it
// is valid XML text.
func FuzzCharts(f *testing.F) {
	f.Add("Stored <b>&amp;</b>", "failed", 1.5, 3e9, int64(3600), uint8(0))
	f.Add("\x00\xff\uFFFE", "", math.NaN(), math.Inf(-1), int64(-1), uint8(2))
	f.Add("", "<script>", -1e300, 1e300, int64(1)<<62, uint8(1))
	f.Add("x", "y", -math.MaxFloat64, math.MaxFloat64, int64(1), uint8(2))
	f.Add("x", "y", 5e-324, 1e-300, int64(-1)<<62, uint8(1))
	f.Fuzz(func(t *testing.T, label, state string, v1, v2 float64, step int64, unit uint8) {
		start := time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)
		opts := Options{Title: label, Desc: label, Class: state, Unit: Unit(unit % 3), Empty: label}
		at := start.Add(time.Duration(step))
		line := Line([]Series{{Name: label, Class: state, Points: []Point{{start, v1}, {at, v2}}}}, opts)
		doc := checkSVG(t, line)
		if label != "" && string(appendEscaped(nil, label)) == xmlEscapeSafe(label) && doc.title != label {
			t.Errorf("title %q read back as %q", label, doc.title)
		}
		checkSVG(t, Bars([]Bar{{Time: start, Value: v1, State: state, Label: label}, {Time: at, Value: v2}}, opts))
	})
}

// xmlEscapeSafe is the escaping of a string made only of characters that
// survive XML unchanged (no replacement, no \r normalization).
func xmlEscapeSafe(s string) string {
	for _, r := range s {
		if r == '\r' || r == '\uFFFD' || (r < 0x20 && r != '\t' && r != '\n') || r == 0xFFFE || r == 0xFFFF {
			return ""
		}
	}
	return string(appendEscaped(nil, s))
}
