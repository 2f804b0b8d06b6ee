package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"unicode/utf8"
)

// unit says how a figure's values are written and which way its ratio goes.
type unit string

const (
	unitSeconds unit = "seconds" // ratio restic/coffer: above 1 means Coffer is faster
	unitBytes   unit = "bytes"   // ratio coffer/restic: below 1 means Coffer is smaller
)

// target is what the issue asks of a figure's ratio: at least Min (times)
// or at most Max (sizes). A zero target is informational only.
type target struct {
	Min, Max float64
}

func (t target) set() bool { return t.Min > 0 || t.Max > 0 }

// String is the target as the table shows it.
func (t target) String() string {
	switch {
	case t.Min > 0:
		return fmt.Sprintf("≥ %g× faster", t.Min)
	case t.Max > 0:
		return fmt.Sprintf("≤ %g× restic", t.Max)
	}
	return ""
}

// met reports whether ratio r meets the target.
func (t target) met(r float64) bool {
	switch {
	case math.IsNaN(r) || math.IsInf(r, 0):
		return false
	case t.Min > 0:
		return r >= t.Min
	case t.Max > 0:
		return r <= t.Max
	}
	return true
}

// figure is one line of the result: its values for each tool, one per run.
type figure struct {
	Key    string
	Label  string
	Unit   unit
	Target target
	Coffer []float64
	Restic []float64 // empty for Coffer-only figures (the server)
}

// ratio is the comparison the targets are written in, from the
// medians: restic/coffer for times, coffer/restic for sizes and memory.
// It is NaN when a side is missing or zero.
func (f *figure) ratio() float64 {
	c, r := median(f.Coffer), median(f.Restic)
	num, den := c, r
	if f.Unit == unitSeconds {
		num, den = r, c
	}
	if math.IsNaN(num) || math.IsNaN(den) || den == 0 {
		return math.NaN()
	}
	return num / den
}

// verdict is PASS or MISS for a figure with a target, "" otherwise.
func (f *figure) verdict() string {
	if !f.Target.set() {
		return ""
	}
	if f.Target.met(f.ratio()) {
		return "PASS"
	}
	return "MISS"
}

// median of the values (the mean of the middle two for an even count); NaN
// when there are none.
func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// formatValue writes one value in the figure's unit.
func formatValue(u unit, v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	switch u {
	case unitSeconds:
		return fmt.Sprintf("%.2f s", v)
	case unitBytes:
		return formatBytes(v)
	}
	return fmt.Sprintf("%g", v)
}

// formatBytes writes a byte count in MiB, or GiB from 1 GiB up.
func formatBytes(v float64) string {
	if v >= 1<<30 {
		return fmt.Sprintf("%.2f GiB", v/(1<<30))
	}
	return fmt.Sprintf("%.1f MiB", v/(1<<20))
}

func formatRatio(r float64) string {
	if math.IsNaN(r) || math.IsInf(r, 0) {
		return "-"
	}
	return fmt.Sprintf("%.2f×", r)
}

// busyShare is the share of CPU time taken by other processes above which
// the table warns that the times are noisy.
const busyShare = 0.15

// machine describes where the figures were taken.
type machine struct {
	CPUs          int    `json:"cpus"`
	CPUModel      string `json:"cpu_model"`
	MemoryBytes   int64  `json:"memory_bytes"`
	Kernel        string `json:"kernel"`
	OSArch        string `json:"os_arch"`
	GoVersion     string `json:"go_version"`
	CofferVersion string `json:"coffer_version"`
	ResticVersion string `json:"restic_version"`
	ResticRepo    string `json:"restic_repository"` // format version and compression
	// Load is the 1-minute load average before the benchmark began.
	Load float64 `json:"load_average_before"`
	// OtherCPU is the share of the machine's CPU time that went to other
	// processes (and kernel threads, such as write-back) during the timed
	// steps: other work on the machine makes the times noisy.
	OtherCPU float64 `json:"other_cpu_share"`
}

// corpusInfo is the generated tree the tools back up.
type corpusInfo struct {
	Dir          string `json:"dir"`
	Seed         uint64 `json:"seed"`
	SizeAsked    int64  `json:"size_asked"`
	Files        int    `json:"files"`
	Bytes        int64  `json:"bytes"`
	MutatedFiles int    `json:"files_after_mutation"`
	MutatedBytes int64  `json:"bytes_after_mutation"`
}

// results is everything one invocation measured.
type results struct {
	Machine machine    `json:"machine"`
	Corpus  corpusInfo `json:"corpus"`
	Runs    int        `json:"runs"`
	Figures []*figure  `json:"-"`
	Notes   []string   `json:"notes,omitempty"`
}

// misses counts the targets not met.
func (r *results) misses() int {
	n := 0
	for _, f := range r.Figures {
		if f.verdict() == "MISS" {
			n++
		}
	}
	return n
}

// writeTable prints the results for a person.
func (r *results) writeTable(w io.Writer) error {
	m, c := r.Machine, r.Corpus
	var b strings.Builder
	fmt.Fprintf(&b, "Coffer vs restic — corpus %s (%d files; %s, %d files after the mutation), seed %d, %s\n",
		formatBytes(float64(c.Bytes)), c.Files, formatBytes(float64(c.MutatedBytes)), c.MutatedFiles, c.Seed, plural(r.Runs, "run"))
	if r.Runs > 1 {
		b.WriteString("Each figure is the median of the runs.\n")
	}
	fmt.Fprintf(&b, "machine: %d CPUs (%s), %s RAM, %s, kernel %s; load average %.2f before; %.0f %% of the CPU time went to other processes during the timed steps\n",
		m.CPUs, m.CPUModel, formatBytes(float64(m.MemoryBytes)), m.OSArch, m.Kernel, m.Load, 100*m.OtherCPU)
	fmt.Fprintf(&b, "%s; %s (%s)\n\n", m.CofferVersion, m.ResticVersion, m.ResticRepo)
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	rows := [][]string{{"figure", "coffer", "restic", "ratio", "target", "result"}}
	for _, f := range r.Figures {
		rows = append(rows, []string{f.Label, formatValue(f.Unit, median(f.Coffer)), formatValue(f.Unit, median(f.Restic)),
			formatRatio(f.ratio()), f.Target.String(), f.verdict()})
	}
	if _, err := io.WriteString(w, columns(rows, "lrrrll")); err != nil {
		return err
	}
	b.Reset()
	b.WriteString("\nratio: restic/coffer for times (above 1: Coffer is faster), coffer/restic for sizes and memory (below 1: Coffer is smaller).\n")
	for _, n := range r.Notes {
		b.WriteString(n + "\n")
	}
	if m.OtherCPU > busyShare {
		fmt.Fprintf(&b, "WARNING: the machine was busy: other processes took %.0f %% of the CPU time during the timed steps, so the times are noisy; rerun on an idle machine.\n", 100*m.OtherCPU)
	}
	if n := r.misses(); n > 0 {
		fmt.Fprintf(&b, "%s missed.\n", plural(n, "target"))
	} else {
		b.WriteString("Every target met.\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// jsonFigure is a figure in the -json file.
type jsonFigure struct {
	Key          string    `json:"key"`
	Label        string    `json:"label"`
	Unit         unit      `json:"unit"`
	Coffer       []float64 `json:"coffer"`
	Restic       []float64 `json:"restic,omitempty"`
	CofferMedian *float64  `json:"coffer_median"`
	ResticMedian *float64  `json:"restic_median"`
	Ratio        *float64  `json:"ratio"`
	Target       string    `json:"target,omitempty"`
	Result       string    `json:"result,omitempty"`
}

func finite(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// jsonResults is the -json file: the results with each figure's medians,
// ratio and verdict.
type jsonResults struct {
	*results
	Figures []jsonFigure `json:"figures"`
}

func (r *results) forJSON() jsonResults {
	out := jsonResults{results: r}
	for _, f := range r.Figures {
		out.Figures = append(out.Figures, jsonFigure{Key: f.Key, Label: f.Label, Unit: f.Unit, Coffer: f.Coffer, Restic: f.Restic,
			CofferMedian: finite(median(f.Coffer)), ResticMedian: finite(median(f.Restic)), Ratio: finite(f.ratio()),
			Target: f.Target.String(), Result: f.verdict()})
	}
	return out
}

// writeJSONFile writes the results to path, indented.
func (r *results) writeJSONFile(path string) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r.forJSON()); err != nil {
		return fmt.Errorf("encode the results: %w", err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write the results: %w", err)
	}
	return nil
}

// columns lays rows out in columns two spaces apart, each flush left or
// right as align says ('l' or 'r', one letter a column).
func columns(rows [][]string, align string) string {
	var width []int
	for _, row := range rows {
		for i, cell := range row {
			if i >= len(width) {
				width = append(width, 0)
			}
			width[i] = max(width[i], utf8.RuneCountInString(cell))
		}
	}
	var b strings.Builder
	for _, row := range rows {
		var line strings.Builder
		for i, cell := range row {
			pad := strings.Repeat(" ", width[i]-utf8.RuneCountInString(cell))
			if i > 0 {
				line.WriteString("  ")
			}
			if i >= len(align) || align[i] == 'l' {
				line.WriteString(cell + pad)
			} else {
				line.WriteString(pad + cell)
			}
		}
		b.WriteString(strings.TrimRight(line.String(), " ") + "\n")
	}
	return b.String()
}
