package svgchart

import (
	"bytes"
	"encoding/xml"
	"flag"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // Europe/Berlin without relying on the host's zoneinfo

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

var (
	day   = 24 * time.Hour
	may1  = time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)
	gib   = float64(1 << 30)
	nan   = math.NaN()
	sizes = []float64{12 * gib, 12.4 * gib, 13.1 * gib, 13.1 * gib, 14.8 * gib, 15.2 * gib, 16 * gib}
)

func berlin(t *testing.T) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func daily(start time.Time, values ...float64) []Point {
	pts := make([]Point, len(values))
	for i, v := range values {
		pts[i] = Point{start.Add(time.Duration(i) * day), v}
	}
	return pts
}

func TestLineGolden(t *testing.T) {
	loc := berlin(t)
	hourly := make([]Point, 48)
	for i := range hourly {
		// Across the end of summer time in Berlin: 2024-10-27 03:00 CEST → 02:00 CET.
		hourly[i] = Point{time.Date(2024, 10, 26, 12, 0, 0, 0, loc).Add(time.Duration(i) * time.Hour), float64(i * 37 % 11)}
	}
	tests := []struct {
		name   string
		series []Series
		opts   Options
	}{
		{"empty", nil, Options{Title: "Stored bytes", Unit: Bytes}},
		{"empty-series", []Series{{Name: "Stored", Points: daily(may1, nan, nan)}}, Options{Title: "Stored bytes", Unit: Bytes, Empty: "Nothing stored yet"}},
		{"single-point", []Series{{Name: "Stored", Points: daily(may1, 3*gib)}}, Options{Title: "Stored bytes", Unit: Bytes}},
		{"all-equal", []Series{{Name: "Stored", Points: daily(may1, 5e6, 5e6, 5e6, 5e6)}}, Options{Title: "Stored bytes", Unit: Bytes}},
		{"all-zero", []Series{{Name: "Files", Points: daily(may1, 0, 0, 0)}}, Options{Title: "Files", Unit: Count}},
		{"huge", []Series{{Name: "Stored", Points: daily(may1, 0, 3e18, 7.5e18)}}, Options{Title: "Stored bytes", Unit: Bytes}},
		{"gaps", []Series{{Name: "Stored", Points: append(daily(may1, 1*gib, 2*gib, nan, 3*gib, nan, 4*gib, math.Inf(1)),
			daily(may1.Add(20*day), 5*gib, 6*gib)...)}}, Options{Title: "Stored bytes", Unit: Bytes, MaxGap: 36 * time.Hour}},
		{"two-series-30-days", []Series{
			{Name: "Stored", Class: "series-stored", Points: daily(may1.Add(23*day), sizes...)},
			{Name: "Logical", Class: "series-logical", Points: daily(may1.Add(23*day), 40*gib, 41*gib, 45*gib, 45*gib, 47*gib, 52*gib, 55*gib)},
		}, Options{Title: "Storage, last 30 days", Unit: Bytes, Location: loc, Start: may1, End: may1.Add(30 * day), Width: 800, Height: 260, Class: "dashboard-chart"}},
		{"dst-hours", []Series{{Points: hourly}}, Options{Title: "Running jobs", Unit: Count, Location: loc, ID: "jobs"}},
		{"unsorted-durations", []Series{{Name: "Verify", Points: []Point{{may1.Add(2 * time.Hour), 4000}, {may1, 90}, {may1.Add(time.Hour), 1.5}}}}, Options{Title: "Verify time", Unit: Seconds}},
		{"escaping", []Series{{Name: `<script>alert("x")</script> & co`, Class: `"><script>`, Points: daily(may1, 1, 2)}},
			Options{Title: `Tom & Jerry's <b>chart</b>`, Desc: "a & b < c", ID: `x" onload="y`, Class: `a"b <c>`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := Line(tt.series, tt.opts)
			checkSVG(t, out)
			golden(t, "line-"+tt.name+".svg", out)
			if again := Line(tt.series, tt.opts); !bytes.Equal(out, again) {
				t.Error("two renderings differ")
			}
		})
	}
}

func TestBarsGolden(t *testing.T) {
	states := []string{"succeeded", "succeeded", "partial", "succeeded", "failed", "succeeded"}
	var week []Bar
	for i := range 28 {
		week = append(week, Bar{
			Time:  may1.Add(time.Duration(i)*6*time.Hour + 2*time.Hour),
			Value: float64(40 + i*i*7%900),
			State: states[i%len(states)],
			Label: "nightly on laptop-3",
		})
	}
	tests := []struct {
		name string
		bars []Bar
		opts Options
	}{
		{"empty", nil, Options{Title: "Backup durations", Unit: Seconds}},
		{"week", week, Options{Title: "Backup durations", Unit: Seconds, Location: berlin(t)}},
		{"single", []Bar{{Time: may1, Value: 42, State: "succeeded"}}, Options{Title: "Backup durations", Unit: Seconds}},
		{"zero-nan-and-unknown-state", []Bar{
			{Time: may1, Value: 0, State: "failed", Label: "instant failure"},
			{Time: may1.Add(time.Hour), Value: nan, State: "running"},
			{Time: may1.Add(2 * time.Hour), Value: 7200, State: "weird state!"},
			{Value: 5400},
		}, Options{Title: "Backup durations", Unit: Seconds, Width: 320, Height: 160}},
		{"bytes-over-a-year", []Bar{
			{Time: may1, Value: 3 * gib, State: "succeeded"},
			{Time: may1.AddDate(0, 6, 0), Value: 1.5 * 1024 * gib, State: "succeeded"},
			{Time: may1.AddDate(1, 1, 0), Value: 900 * gib, State: "partial"},
		}, Options{Title: "Added per backup", Unit: Bytes}},
		{"escaping", []Bar{{Time: may1, Value: 3, State: `<script>&`, Label: `<script>alert(1)</script> & "more"`}},
			Options{Title: "<script>&</script>", Unit: Count}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := Bars(tt.bars, tt.opts)
			checkSVG(t, out)
			golden(t, "bars-"+tt.name+".svg", out)
		})
	}
}

// TestEscaping checks that user strings come back intact from an XML parser
// and never as markup.
func TestEscaping(t *testing.T) {
	evil := `<script>alert("x")</script> & 'y'`
	line := Line([]Series{{Name: evil, Points: daily(may1, 1, 2)}}, Options{Title: evil, Desc: evil})
	bars := Bars([]Bar{{Time: may1, Value: 1, Label: evil, State: evil}}, Options{Title: evil})
	for name, out := range map[string][]byte{"line": line, "bars": bars} {
		t.Run(name, func(t *testing.T) {
			if bytes.Contains(out, []byte("<script")) {
				t.Errorf("output contains <script:\n%s", out)
			}
			doc := checkSVG(t, out)
			if doc.title != evil {
				t.Errorf("title = %q, want %q", doc.title, evil)
			}
			for _, tip := range doc.tooltips {
				if !strings.Contains(tip, evil) {
					t.Errorf("tooltip %q lacks the label %q", tip, evil)
				}
			}
		})
	}
	if got := string(appendEscaped(nil, "a\x00b\xffc\uFFFEd\r")); got != "a\uFFFDb\uFFFDc\uFFFDd&#13;" {
		t.Errorf("appendEscaped = %q", got)
	}
}

func TestNoData(t *testing.T) {
	for name, out := range map[string][]byte{
		"line": Line([]Series{{Name: "x"}}, Options{}),
		"bars": Bars([]Bar{{Value: math.Inf(1)}}, Options{}),
	} {
		doc := checkSVG(t, out)
		if !slices.Contains(doc.texts, "No data yet") {
			t.Errorf("%s: texts %q lack the empty message", name, doc.texts)
		}
	}
}

func TestTooltips(t *testing.T) {
	out := Line([]Series{{Name: "Stored", Points: daily(may1, 1536, 3*gib)}}, Options{Unit: Bytes, Location: berlin(t)})
	want := []string{"Stored: 1.5 KiB at 2024-05-01 02:00 CEST", "Stored: 3 GiB at 2024-05-02 02:00 CEST"}
	if diff := cmp.Diff(want, checkSVG(t, out).tooltips); diff != "" {
		t.Errorf("tooltips (-want +got):\n%s", diff)
	}
	out = Bars([]Bar{{Time: may1, Value: 133, State: "failed", Label: "nightly"}}, Options{Unit: Seconds})
	want = []string{"nightly: 2 min 13 s, failed, 2024-05-01 00:00 UTC"}
	if diff := cmp.Diff(want, checkSVG(t, out).tooltips); diff != "" {
		t.Errorf("tooltips (-want +got):\n%s", diff)
	}
}

// svgDoc is what checkSVG read from a chart.
type svgDoc struct {
	title, desc string
	tooltips    []string // the <title> of every point and bar
	texts       []string
}

// checkSVG parses out as XML and checks the promises every chart keeps: an
// <svg role="img"> with a viewBox, a labelled title and desc first, classes
// on the marks, and no style or script anywhere.
func checkSVG(t *testing.T, out []byte) svgDoc {
	t.Helper()
	var doc svgDoc
	dec := xml.NewDecoder(bytes.NewReader(out))
	var stack []xml.StartElement
	var text strings.Builder
	ids := map[string]bool{}
	elements := 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("invalid XML: %v\n%s", err, out)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			elements++
			attrs := map[string]string{}
			for _, a := range tok.Attr {
				attrs[a.Name.Local] = a.Value
			}
			if _, ok := attrs["style"]; ok || tok.Name.Local == "style" || tok.Name.Local == "script" {
				t.Errorf("<%s> carries inline style or script", tok.Name.Local)
			}
			if id := attrs["id"]; id != "" {
				if ids[id] {
					t.Errorf("duplicate id %q", id)
				}
				ids[id] = true
			}
			switch tok.Name.Local {
			case "svg":
				if tok.Name.Space != "http://www.w3.org/2000/svg" || attrs["role"] != "img" || attrs["viewBox"] == "" ||
					!strings.HasPrefix(attrs["class"], "chart ") {
					t.Errorf("root element %v", tok)
				}
			case "rect", "path", "circle":
				if attrs["class"] == "" {
					t.Errorf("<%s> without a class", tok.Name.Local)
				}
			}
			if elements == 2 && tok.Name.Local != "title" || elements == 3 && tok.Name.Local != "desc" {
				t.Errorf("element %d is <%s>, want title then desc", elements, tok.Name.Local)
			}
			stack = append(stack, tok)
			text.Reset()
		case xml.CharData:
			text.Write(tok)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
			switch s := text.String(); tok.Name.Local {
			case "title":
				if len(stack) == 1 {
					doc.title = s
				} else {
					doc.tooltips = append(doc.tooltips, s)
				}
			case "desc":
				doc.desc = s
			case "text":
				doc.texts = append(doc.texts, s)
			}
		}
	}
	if elements == 0 || len(stack) != 0 {
		t.Fatalf("no complete document:\n%s", out)
	}
	return doc
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s differs (-want +got; go test -update to accept):\n%s", path, diff)
	}
}
