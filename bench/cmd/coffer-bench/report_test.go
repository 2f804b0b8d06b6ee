package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{2, 2, 9}, 2},
	} {
		in := append([]float64(nil), c.in...)
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
		if !slicesEqual(in, c.in) {
			t.Errorf("median reordered its input: %v", c.in)
		}
	}
	if got := median(nil); !math.IsNaN(got) {
		t.Errorf("median(nil) = %v, want NaN", got)
	}
}

func slicesEqual(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestRatioAndVerdict(t *testing.T) {
	for _, c := range []struct {
		name    string
		f       figure
		ratio   float64
		verdict string
	}{
		{"time faster enough", figure{Unit: unitSeconds, Target: target{Min: 2}, Coffer: []float64{3.5}, Restic: []float64{7}}, 2, "PASS"},
		{"time not fast enough", figure{Unit: unitSeconds, Target: target{Min: 4}, Coffer: []float64{0.7}, Restic: []float64{2.1}}, 3, "MISS"},
		{"time medians", figure{Unit: unitSeconds, Target: target{Min: 2}, Coffer: []float64{1, 9, 2}, Restic: []float64{6, 4, 5}}, 2.5, "PASS"},
		{"size smaller", figure{Unit: unitBytes, Target: target{Max: 1}, Coffer: []float64{500}, Restic: []float64{625}}, 0.8, "PASS"},
		{"size equal passes", figure{Unit: unitBytes, Target: target{Max: 1}, Coffer: []float64{631}, Restic: []float64{631}}, 1, "PASS"},
		{"size larger", figure{Unit: unitBytes, Target: target{Max: 1}, Coffer: []float64{700}, Restic: []float64{560}}, 1.25, "MISS"},
		{"info only", figure{Unit: unitBytes, Coffer: []float64{1}, Restic: []float64{2}}, 0.5, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := c.f.ratio(); math.Abs(got-c.ratio) > 1e-9 {
				t.Errorf("ratio = %v, want %v", got, c.ratio)
			}
			if got := c.f.verdict(); got != c.verdict {
				t.Errorf("verdict = %q, want %q", got, c.verdict)
			}
		})
	}
	missing := figure{Unit: unitBytes, Target: target{Max: 1}, Coffer: []float64{1}}
	if r := missing.ratio(); !math.IsNaN(r) {
		t.Errorf("ratio without restic = %v, want NaN", r)
	}
	if v := missing.verdict(); v != "MISS" {
		t.Errorf("a target without a ratio is %q, want MISS", v)
	}
	zero := figure{Unit: unitSeconds, Target: target{Min: 2}, Coffer: []float64{0}, Restic: []float64{1}}
	if r := zero.ratio(); !math.IsNaN(r) {
		t.Errorf("ratio over zero = %v, want NaN", r)
	}
}

func TestFormat(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{formatValue(unitSeconds, 7.004), "7.00 s"},
		{formatValue(unitBytes, 631<<20), "631.0 MiB"},
		{formatValue(unitBytes, 12<<30), "12.00 GiB"},
		{formatValue(unitBytes, math.NaN()), "-"},
		{formatRatio(2.256), "2.26×"},
		{formatRatio(math.NaN()), "-"},
		{target{Min: 2}.String(), "≥ 2× faster"},
		{target{Max: 1}.String(), "≤ 1× restic"},
		{target{}.String(), ""},
		{plural(1, "run"), "1 run"},
		{plural(3, "run"), "3 runs"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

func TestColumns(t *testing.T) {
	got := columns([][]string{{"figure", "coffer", "target"}, {"first backup", "3.10 s", "≥ 2×"}, {"x", "10.00 s", ""}}, "lrl")
	want := "figure         coffer  target\n" +
		"first backup   3.10 s  ≥ 2×\n" +
		"x             10.00 s\n"
	if got != want {
		t.Errorf("columns:\n%s\nwant:\n%s", got, want)
	}
}

// sampleResults are two runs' worth of figures.
func sampleResults() *results {
	runs := []runFigures{
		{backup1: [2]measurement{{Wall: 3 * time.Second, MaxRSS: 100 << 20, CPU: 5}, {Wall: 7 * time.Second, MaxRSS: 136 << 20, CPU: 12}},
			backup2: [2]measurement{{Wall: time.Second / 2, MaxRSS: 120 << 20}, {Wall: 2100 * time.Millisecond, MaxRSS: 90 << 20}},
			restore: [2]measurement{{Wall: 3 * time.Second, MaxRSS: 80 << 20}, {Wall: 4900 * time.Millisecond, MaxRSS: 70 << 20}},
			repo1:   [2]int64{500 << 20, 600 << 20}, repo2: [2]int64{560 << 20, 631 << 20}, serverRSS: 200 << 20, dataDir: 570 << 20},
		{backup1: [2]measurement{{Wall: 4 * time.Second, MaxRSS: 110 << 20, CPU: 6}, {Wall: 7 * time.Second, MaxRSS: 140 << 20, CPU: 12}},
			backup2: [2]measurement{{Wall: time.Second / 2, MaxRSS: 120 << 20}, {Wall: 2100 * time.Millisecond, MaxRSS: 90 << 20}},
			restore: [2]measurement{{Wall: 3 * time.Second, MaxRSS: 80 << 20}, {Wall: 4900 * time.Millisecond, MaxRSS: 70 << 20}},
			repo1:   [2]int64{500 << 20, 600 << 20}, repo2: [2]int64{560 << 20, 631 << 20}, serverRSS: 220 << 20, dataDir: 570 << 20},
	}
	return &results{Runs: 2, Figures: figures(runs),
		Machine: machine{CPUs: 2, CPUModel: "Test CPU", MemoryBytes: 8 << 30, Kernel: "6.1", OSArch: "linux/amd64",
			Load: 0.1, OtherCPU: 0.3, CofferVersion: "coffer dev", ResticVersion: "restic 0.14.0", ResticRepo: "repository format 2"},
		Corpus: corpusInfo{Seed: 1, Files: 16471, Bytes: 1 << 30, MutatedFiles: 16600, MutatedBytes: 1100 << 20}}
}

func TestFigures(t *testing.T) {
	r := sampleResults()
	byKey := map[string]*figure{}
	for _, f := range r.Figures {
		byKey[f.Key] = f
	}
	check := func(key string, coffer, restic float64) {
		t.Helper()
		f := byKey[key]
		if f == nil {
			t.Fatalf("no figure %s", key)
		}
		if c := median(f.Coffer); c != coffer {
			t.Errorf("%s: coffer %v, want %v", key, c, coffer)
		}
		if r := median(f.Restic); !(r == restic || math.IsNaN(r) && math.IsNaN(restic)) {
			t.Errorf("%s: restic %v, want %v", key, r, restic)
		}
	}
	check("first_backup_seconds", 3.5, 7)
	check("incremental_backup_seconds", 0.5, 2.1)
	check("repository_bytes", 560<<20, 631<<20)
	// The agent's peak is the larger of its two backups, each run.
	check("agent_peak_rss_bytes", 120<<20, 138<<20)
	check("server_peak_rss_bytes", 210<<20, math.NaN())
	check("first_backup_cpu_seconds", 5.5, 12)
	check("coffer_data_dir_bytes", 570<<20, math.NaN())
	if n := r.misses(); n != 1 { // only the restore: 4.9/3 = 1.63; the first backup, 7/3.5 = 2, passes
		t.Errorf("misses = %d, want 1", n)
	}
}

func TestWriteTable(t *testing.T) {
	var b bytes.Buffer
	if err := sampleResults().writeTable(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"corpus 1.00 GiB (16471 files; 1.07 GiB, 16600 files after the mutation), seed 1, 2 runs",
		"median of the runs",
		"2 CPUs (Test CPU)",
		"restic 0.14.0 (repository format 2)",
		"first backup",
		"2.00×  ≥ 2× faster  PASS",
		"restore",
		"1.63×  ≥ 2× faster  MISS",
		"0.89×  ≤ 1× restic  PASS",
		"Coffer server peak RSS",
		"1 target missed.",
		"load average 0.10 before; 30 % of the CPU time went to other processes",
		"WARNING: the machine was busy: other processes took 30 %",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestWriteJSONFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "r.json")
	r := sampleResults()
	r.Notes = []string{"<data-dir>"}
	if err := r.writeJSONFile(p); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(raw, []byte("<data-dir>")) {
		t.Errorf("the notes are HTML-escaped:\n%s", raw)
	}
	var got struct {
		Runs    int `json:"runs"`
		Machine struct {
			CPUs int `json:"cpus"`
		} `json:"machine"`
		Figures []struct {
			Key          string    `json:"key"`
			Coffer       []float64 `json:"coffer"`
			ResticMedian *float64  `json:"restic_median"`
			Ratio        *float64  `json:"ratio"`
			Result       string    `json:"result"`
		} `json:"figures"`
	}
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	if got.Runs != 2 || got.Machine.CPUs != 2 || len(got.Figures) != len(r.Figures) {
		t.Fatalf("decoded %+v", got)
	}
	first := got.Figures[0]
	if first.Key != "first_backup_seconds" || len(first.Coffer) != 2 || first.Ratio == nil || *first.Ratio != 2 || first.Result != "PASS" {
		t.Errorf("first figure %+v", first)
	}
	for _, f := range got.Figures {
		if f.Key == "server_peak_rss_bytes" && (f.ResticMedian != nil || f.Ratio != nil) {
			t.Errorf("the server's figure has a restic side: %+v", f)
		}
	}
}
