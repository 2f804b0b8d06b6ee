package svgchart

import (
	"math"
	"testing"
	"time"
)

func benchPoints(n int) []Point {
	pts := make([]Point, n)
	start := time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)
	for i := range pts {
		pts[i] = Point{start.Add(time.Duration(i) * 43 * time.Minute), 1e9 * (10 + 3*math.Sin(float64(i)/40) + float64(i)/100)}
	}
	return pts
}

func BenchmarkLine1000(b *testing.B) {
	series := []Series{{Name: "Stored", Points: benchPoints(1000)}}
	opts := Options{Title: "Stored bytes", Unit: Bytes}
	b.ReportAllocs()
	var size int
	for b.Loop() {
		size = len(Line(series, opts))
	}
	b.ReportMetric(float64(size), "bytes/chart")
}

func BenchmarkBars1000(b *testing.B) {
	bars := make([]Bar, 1000)
	for i, p := range benchPoints(1000) {
		bars[i] = Bar{Time: p.Time, Value: p.Value / 1e7, State: [...]string{"succeeded", "partial", "failed"}[i%3], Label: "nightly"}
	}
	opts := Options{Title: "Backup durations", Unit: Seconds}
	b.ReportAllocs()
	var size int
	for b.Loop() {
		size = len(Bars(bars, opts))
	}
	b.ReportMetric(float64(size), "bytes/chart")
}
