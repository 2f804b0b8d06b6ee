package svgchart_test

import (
	"html/template"
	"os"
	"time"

	"github.com/cofferhq/coffer/internal/svgchart"
)

// A dashboard embeds a chart in a server-rendered page. The output escapes
// every string it was given, so it can be trusted as template.HTML.
func ExampleLine() {
	day := 24 * time.Hour
	end := time.Date(2024, 5, 31, 0, 0, 0, 0, time.UTC)
	var stored []svgchart.Point
	for i := range 30 {
		stored = append(stored, svgchart.Point{Time: end.Add(time.Duration(i-29) * day), Value: float64(40+i) * (1 << 30)})
	}
	chart := svgchart.Line([]svgchart.Series{{Name: "Stored", Points: stored}}, svgchart.Options{
		Title: "Stored bytes, last 30 days",
		Unit:  svgchart.Bytes,
		Start: end.Add(-30 * day),
		End:   end,
	})
	page := template.Must(template.New("").Parse(`<figure class="card">{{.}}</figure>`))
	_ = page.Execute(os.Stdout, template.HTML(chart))
}

// Backup durations, one bar per backup, colored by state.
func ExampleBars() {
	at := time.Date(2024, 5, 1, 2, 0, 0, 0, time.UTC)
	chart := svgchart.Bars([]svgchart.Bar{
		{Time: at, Value: 312, State: "succeeded", Label: "nightly on laptop-3"},
		{Time: at.Add(24 * time.Hour), Value: 45, State: "failed", Label: "nightly on laptop-3"},
	}, svgchart.Options{Title: "Backup durations", Unit: svgchart.Seconds, ID: "durations"})
	_, _ = os.Stdout.Write(chart)
}
