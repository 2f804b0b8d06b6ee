package svgchart

import (
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestYAxis(t *testing.T) {
	tests := []struct {
		name   string
		lo, hi float64
		unit   Unit
		n      int
		want   []string
	}{
		{"bytes GiB", 0, 783 * gib, Bytes, 4, []string{"0", "200 GiB", "400 GiB", "600 GiB", "800 GiB"}},
		{"bytes TiB halves", 3 * gib, 1.5 * 1024 * gib, Bytes, 4, []string{"0", "0.5 TiB", "1 TiB", "1.5 TiB"}},
		{"bytes small", 0, 700, Bytes, 4, []string{"0", "200 B", "400 B", "600 B", "800 B"}},
		{"bytes never fractional", 0, 3, Bytes, 5, []string{"0", "1 B", "2 B", "3 B"}},
		{"bytes all equal", 5e6, 5e6, Bytes, 5, []string{"0", "1 MiB", "2 MiB", "3 MiB", "4 MiB", "5 MiB"}},
		{"bytes EiB", 0, 7.5e18, Bytes, 4, []string{"0", "2 EiB", "4 EiB", "6 EiB", "8 EiB"}},
		{"seconds", 0, 90, Seconds, 4, []string{"0", "50 s", "100 s"}},
		{"minutes", 0, 504, Seconds, 5, []string{"0", "2 min", "4 min", "6 min", "8 min", "10 min"}},
		{"hours", 0, 30 * 3600, Seconds, 4, []string{"0", "10 h", "20 h", "30 h"}},
		{"milliseconds", 0, 0.35, Seconds, 4, []string{"0", "100 ms", "200 ms", "300 ms", "400 ms"}},
		{"fraction of a second all zero", 0, 0, Seconds, 5, []string{"0", "0.2 s", "0.4 s", "0.6 s", "0.8 s", "1 s"}},
		{"count zero", 0, 0, Count, 5, []string{"0", "1"}},
		{"count k", 0, 8000, Count, 4, []string{"0", "2k", "4k", "6k", "8k"}},
		{"count negative", -3, 7, Count, 5, []string{"-4", "-2", "0", "2", "4", "6", "8"}},
		{"count huge", 0, 1e20, Count, 4, []string{"0", "5e+07T", "1e+08T"}},
		{"float64 limits", -math.MaxFloat64, math.MaxFloat64, Count, 4, []string{"-1.798e+308", "1.798e+308"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newYAxis(tt.lo, tt.hi, tt.unit, tt.n)
			if diff := cmp.Diff(tt.want, a.labels); diff != "" {
				t.Errorf("labels (-want +got):\n%s", diff)
			}
			if a.lo > min(tt.lo, 0) || a.hi < tt.hi || len(a.ticks) != len(a.labels) {
				t.Errorf("axis [%g, %g] with %d ticks does not cover [%g, %g]", a.lo, a.hi, len(a.ticks), tt.lo, tt.hi)
			}
		})
	}
}

func TestNiceStep(t *testing.T) {
	for raw, want := range map[float64]float64{0.013: 0.02, 1: 1, 1.01: 2, 3: 5, 7: 10, 450: 500, 0: 1, -4: 1} {
		if got := niceStep(raw); got != want {
			t.Errorf("niceStep(%g) = %g, want %g", raw, got, want)
		}
	}
}

func TestTimeTicks(t *testing.T) {
	loc := berlin(t)
	at := func(y int, m time.Month, d, h, mi int) time.Time { return time.Date(y, m, d, h, mi, 0, 0, loc) }
	tests := []struct {
		name       string
		start, end time.Time
		n          int
		want       []string
	}{
		{"quarter hours", at(2024, 5, 1, 9, 7), at(2024, 5, 1, 10, 20), 6, []string{"09:15", "09:30", "09:45", "10:00", "10:15"}},
		{"hours to midnight", at(2024, 5, 1, 20, 30), at(2024, 5, 2, 2, 0), 6, []string{"21:00", "22:00", "23:00", "May 2", "01:00", "02:00"}},
		{"across summer time end", at(2024, 10, 26, 18, 0), at(2024, 10, 27, 12, 0), 6, []string{"18:00", "21:00", "Oct 27", "03:00", "06:00", "09:00", "12:00"}},
		{"across summer time start", at(2024, 3, 30, 22, 0), at(2024, 3, 31, 5, 0), 8, []string{"22:00", "23:00", "Mar 31", "01:00", "03:00", "04:00", "05:00"}},
		{"days", at(2024, 5, 1, 12, 0), at(2024, 5, 6, 12, 0), 6, []string{"May 2", "May 3", "May 4", "May 5", "May 6"}},
		{"mondays", at(2024, 5, 1, 0, 0), at(2024, 5, 31, 0, 0), 6, []string{"May 6", "May 13", "May 20", "May 27"}},
		{"months", at(2024, 2, 10, 0, 0), at(2024, 8, 1, 0, 0), 7, []string{"Mar", "Apr", "May", "Jun", "Jul", "Aug"}},
		{"quarters into a new year", at(2024, 5, 1, 0, 0), at(2025, 8, 1, 0, 0), 7, []string{"Jul", "Oct", "2025", "Apr", "Jul"}},
		{"decades", at(1990, 1, 1, 0, 0), at(2024, 1, 1, 0, 0), 4, []string{"1990", "2000", "2010", "2020"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, tk := range timeTicks(tt.start, tt.end, loc, tt.n) {
				got = append(got, tk.label)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("labels (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFormatValue(t *testing.T) {
	tests := []struct {
		v    float64
		unit Unit
		want string
	}{
		{0, Bytes, "0 B"},
		{1023, Bytes, "1023 B"},
		{1536, Bytes, "1.5 KiB"},
		{17.26 * 1024 * 1024, Bytes, "17.3 MiB"},
		{512 * gib, Bytes, "512 GiB"},
		{-2 * gib, Bytes, "-2 GiB"},
		{7.5e18, Bytes, "6.51 EiB"},
		{1e30, Bytes, "8.67e+11 EiB"},
		{0.25, Seconds, "250 ms"},
		{4.26, Seconds, "4.3 s"},
		{42, Seconds, "42 s"},
		{120, Seconds, "2 min"},
		{133, Seconds, "2 min 13 s"},
		{3900, Seconds, "1 h 5 min"},
		{93600, Seconds, "1 d 2 h"},
		{0, Count, "0"},
		{1234567, Count, "1,234,567"},
		{999.5, Count, "999.5"},
		{12.25, Count, "12.25"},
		{2e15, Count, "2e+15"},
	}
	for _, tt := range tests {
		if got := formatValue(tt.v, tt.unit); got != tt.want {
			t.Errorf("formatValue(%g, %d) = %q, want %q", tt.v, tt.unit, got, tt.want)
		}
	}
}

func TestClassToken(t *testing.T) {
	for in, want := range map[string]string{"failed": "failed", "weird state!": "weirdstate", `"><script>`: "script", "9lives": "lives", "": ""} {
		if got := classToken(in); got != want {
			t.Errorf("classToken(%q) = %q, want %q", in, got, want)
		}
	}
}
