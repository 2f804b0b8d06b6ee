package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/cofferhq/coffer"
	"golang.org/x/term"
)

// outputMode is how a backup or restore command reports while it runs.
type outputMode int

const (
	// outputPlain shows no live progress (stderr is not a terminal): only
	// the summary, on stdout.
	outputPlain outputMode = iota
	// outputTerminal redraws one status line on stderr, then prints the
	// summary on stdout.
	outputTerminal
	// outputJSON writes JSON lines on stdout: progress objects, then the
	// summary.
	outputJSON
)

// chooseOutput picks the output of a job command: --json wins, else a live
// display when stderr is a terminal.
func chooseOutput(jsonFlag bool, stderr *os.File) outputMode {
	switch {
	case jsonFlag:
		return outputJSON
	case stderr != nil && term.IsTerminal(int(stderr.Fd())):
		return outputTerminal
	}
	return outputPlain
}

// Exit codes of the job commands, documented in their help and in
// docs/agent.md.
const (
	exitSucceeded = 0
	exitFailed    = 1 // failed, canceled, or could not start (usage, connection, server errors)
	exitPartial   = 3 // finished, but some entries could not be backed up or restored (listed)
)

// exitCode maps a job's final state to the process's exit code.
func exitCode(s coffer.JobState) int {
	switch s {
	case coffer.JobSucceeded:
		return exitSucceeded
	case coffer.JobPartial:
		return exitPartial
	}
	return exitFailed
}

// exitStatus is returned by a command that has already reported its
// outcome (the summary): main exits with Code and logs nothing more.
type exitStatus struct {
	Code   int
	Reason string
}

func (e *exitStatus) Error() string { return e.Reason }

// ExitCode is the process's exit code.
func (e *exitStatus) ExitCode() int { return e.Code }

// jobProgress is one progress report of a backup or a restore, in the
// terms the display needs.
type jobProgress struct {
	Files, TotalFiles uint64 // files done, and found so far (0: unknown)
	Bytes, TotalBytes uint64 // bytes done, and of the files found so far (0: unknown)
	Note              string // job-specific figures, e.g. "added 12.0 MiB"
	CurrentPath       string
	Elapsed           time.Duration
	Stats             any // the job's statistics, for the JSON line
}

// progressLine is the JSON object written for a progress report.
type progressLine struct {
	Type           string  `json:"type"` // "progress"
	ElapsedSeconds float64 `json:"elapsed_seconds"`
	BytesPerSecond float64 `json:"bytes_per_second"`
	CurrentPath    string  `json:"current_path,omitempty"`
	Stats          any     `json:"stats"`
}

// progressView shows a running job's progress: it keeps the latest report
// and, from its own goroutine, redraws the terminal's status line or writes
// a JSON line at a steady pace however often reports come. It is also an
// io.Writer for log lines, which it keeps from tangling with the status
// line.
type progressView struct {
	mode     outputMode
	w        io.Writer  // stderr for the terminal, stdout for JSON
	width    func() int // the terminal's width
	interval time.Duration

	mu     sync.Mutex
	latest jobProgress
	dirty  bool // latest was not written yet
	rate   rateMeter
	frame  int
	shown  bool // a status line is on the terminal
	closed bool

	stop chan struct{}
	done chan struct{}
}

// JSON progress lines come at most this often.
const jsonInterval = 500 * time.Millisecond

// startProgress starts showing progress in mode: on w (stderr) for the
// terminal, on w (stdout) for JSON; nothing in outputPlain.
func startProgress(mode outputMode, w io.Writer) *progressView {
	v := &progressView{mode: mode, w: w, width: terminalWidth(w), interval: 150 * time.Millisecond,
		stop: make(chan struct{}), done: make(chan struct{})}
	if mode == outputJSON {
		v.interval = jsonInterval
	}
	if mode == outputPlain {
		close(v.done)
		return v
	}
	go v.loop()
	return v
}

func terminalWidth(w io.Writer) func() int {
	return func() int {
		if f, ok := w.(*os.File); ok {
			if cols, _, err := term.GetSize(int(f.Fd())); err == nil && cols > 0 {
				return cols
			}
		}
		return 80
	}
}

func (v *progressView) loop() {
	defer close(v.done)
	t := time.NewTicker(v.interval)
	defer t.Stop()
	for {
		select {
		case <-v.stop:
			return
		case <-t.C:
			v.tick()
		}
	}
}

// update records a progress report; it is called from the job's
// goroutines.
func (v *progressView) update(p jobProgress) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.latest = p
	v.dirty = true
	v.rate.add(p.Elapsed, p.Bytes)
}

func (v *progressView) tick() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return
	}
	switch v.mode {
	case outputJSON:
		if !v.dirty {
			return
		}
		v.dirty = false
		writeJSONLine(v.w, progressLine{Type: "progress", ElapsedSeconds: v.latest.Elapsed.Seconds(),
			BytesPerSecond: v.rate.perSecond(), CurrentPath: v.latest.CurrentPath, Stats: v.latest.Stats})
	case outputTerminal:
		v.frame++
		line := renderStatus(v.latest, v.rate.perSecond(), v.frame, v.width())
		fmt.Fprint(v.w, "\r\x1b[K"+line)
		v.shown = true
	}
}

// finish stops the display and clears the status line.
func (v *progressView) finish() {
	v.mu.Lock()
	if v.closed {
		v.mu.Unlock()
		return
	}
	v.closed = true
	v.mu.Unlock()
	if v.mode != outputPlain {
		close(v.stop)
	}
	<-v.done
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.shown {
		fmt.Fprint(v.w, "\r\x1b[K")
		v.shown = false
	}
}

// Write writes a log line to the display's writer, clearing the status
// line first; the next tick draws it again below.
func (v *progressView) Write(b []byte) (int, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.shown {
		fmt.Fprint(v.w, "\r\x1b[K")
		v.shown = false
	}
	return v.w.Write(b)
}

// notice tells the person running the command something (on stderr),
// never on the JSON lines of stdout.
func (v *progressView) notice(msg string) {
	if v.mode == outputTerminal {
		fmt.Fprintln(v, msg)
		return
	}
	fmt.Fprintln(os.Stderr, msg)
}

// logger returns the logger the agent writes through while the job runs:
// on a live display, text lines that do not break the status line, and
// warnings and errors only unless debug logging is on (the summary tells
// the rest). Otherwise the process logger.
func (v *progressView) logger(base *slog.Logger) *slog.Logger {
	if v.mode != outputTerminal {
		return base
	}
	level := slog.LevelWarn
	if base.Enabled(context.Background(), slog.LevelDebug) {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(v, &slog.HandlerOptions{Level: level}))
}

// rateMeter estimates a rate of bytes per second over the last few
// seconds of reports, timed by the job's own elapsed time.
type rateMeter struct {
	samples []rateSample
}

type rateSample struct {
	at    time.Duration
	bytes uint64
}

const (
	rateWindow = 5 * time.Second
	rateStep   = 250 * time.Millisecond // the least time between two kept samples
)

// add records that bytes were done at the job's elapsed time at. The
// samples but the last stay at least rateStep apart; the last is always
// the latest report.
func (m *rateMeter) add(at time.Duration, bytes uint64) {
	if n := len(m.samples); n >= 2 && m.samples[n-1].at-m.samples[n-2].at < rateStep {
		m.samples[n-1] = rateSample{at, bytes}
		return
	}
	m.samples = append(m.samples, rateSample{at, bytes})
	// Keep one sample older than the window so the window is full.
	i := 0
	for i+1 < len(m.samples) && at-m.samples[i+1].at >= rateWindow {
		i++
	}
	m.samples = m.samples[i:]
}

// perSecond is the rate over the window; over the whole job while it is
// younger than a second or so; 0 before anything was measured.
func (m *rateMeter) perSecond() float64 {
	n := len(m.samples)
	if n == 0 {
		return 0
	}
	last := m.samples[n-1]
	first := m.samples[0]
	if last.at-first.at < time.Second {
		first = rateSample{}
	}
	d := last.at - first.at
	if d <= 0 || last.bytes < first.bytes {
		return 0
	}
	return float64(last.bytes-first.bytes) / d.Seconds()
}

var spinner = []rune("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏")

// renderStatus is the terminal's status line for p, narrower than width
// columns: a bar with percentage and ETA when the total size is known, a
// spinner otherwise; then counts, rate, elapsed time, the job's note, and
// the current path, cut from the left to fit. When the line is too wide,
// the note, the elapsed time, the rate and the ETA go first, in that
// order.
func renderStatus(p jobProgress, rate float64, frame, width int) string {
	type part struct {
		s    string
		drop int // 0: never dropped; higher: dropped sooner
	}
	var parts []part
	files := formatCount(p.Files)
	if p.TotalFiles > 0 {
		files += "/" + formatCount(p.TotalFiles)
	}
	bytes := formatBytes(p.Bytes)
	if p.TotalBytes > 0 {
		bytes += "/" + formatBytes(p.TotalBytes)
		frac := min(float64(p.Bytes)/float64(p.TotalBytes), 1)
		barWidth := 20
		if width < 100 {
			barWidth = 10
		}
		full := int(frac * float64(barWidth))
		parts = append(parts, part{s: fmt.Sprintf("[%s%s] %3.0f%%", strings.Repeat("=", full), strings.Repeat(" ", barWidth-full), frac*100)})
	} else {
		parts = append(parts, part{s: string(spinner[frame%len(spinner)])})
	}
	parts = append(parts, part{s: files + " files"}, part{s: bytes})
	if rate > 0 {
		parts = append(parts, part{s: formatBytes(uint64(rate)) + "/s", drop: 2})
	}
	if p.TotalBytes > 0 && rate > 0 && p.Bytes < p.TotalBytes {
		eta := time.Duration(float64(p.TotalBytes-p.Bytes) / rate * float64(time.Second))
		parts = append(parts, part{s: "ETA " + formatClock(eta), drop: 1})
	}
	parts = append(parts, part{s: formatClock(p.Elapsed), drop: 3})
	if p.Note != "" {
		parts = append(parts, part{s: p.Note, drop: 4})
	}

	if width <= 1 {
		width = 80
	}
	width-- // never touch the last column: some terminals wrap there
	length := func() int {
		n := 0
		for i, pt := range parts {
			if i > 0 {
				n += 2 // the separator; the spinner's is one space, counted generously
			}
			n += utf8.RuneCountInString(pt.s)
		}
		return n
	}
	for drop := 4; drop > 0 && length() > width; drop-- {
		parts = slices.DeleteFunc(parts, func(pt part) bool { return pt.drop == drop })
	}
	var b strings.Builder
	for i, pt := range parts {
		switch {
		case i == 1 && p.TotalBytes == 0:
			b.WriteString(" ") // after the spinner
		case i > 0:
			b.WriteString("  ")
		}
		b.WriteString(pt.s)
	}
	line := b.String()
	used := utf8.RuneCountInString(line)
	if used > width {
		return string([]rune(line)[:width])
	}
	if room := width - used - 2; p.CurrentPath != "" && room >= 8 {
		line += "  " + cutLeft(printable(p.CurrentPath), room)
	}
	return line
}

// cutLeft shortens s to n runes, keeping its end (a path's file name).
func cutLeft(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return "…" + string(r[len(r)-n+1:])
}

// printable replaces control characters (a newline in a file name) so
// that a path cannot break a line or drive the terminal.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == utf8.RuneError {
			return '?'
		}
		return r
	}, s)
}

// quoteName returns a file name as is, or Go-quoted when it holds
// characters that would garble a listing (newlines, control characters,
// invalid UTF-8).
func quoteName(s string) string {
	for _, r := range s {
		if !unicode.IsPrint(r) && r != ' ' || r == utf8.RuneError {
			return strconv.Quote(s)
		}
	}
	return s
}

// formatBytes renders n in binary units: "512 B", "1.5 KiB", "12.3 GiB".
func formatBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// formatCount renders n with thousands separators: "1,234,567".
func formatCount(n uint64) string {
	s := strconv.FormatUint(n, 10)
	if len(s) <= 3 {
		return s
	}
	var b strings.Builder
	head := len(s) % 3
	if head > 0 {
		b.WriteString(s[:head])
	}
	for i := head; i < len(s); i += 3 {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(s[i : i+3])
	}
	return b.String()
}

// formatClock renders d as m:ss or h:mm:ss, for the status line.
func formatClock(d time.Duration) string {
	s := int64(d.Round(time.Second) / time.Second)
	if s < 0 {
		s = 0
	}
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}

// formatDuration renders a job's duration for its summary: "850ms",
// "12.3s", "4m5s", "1h2m3s".
func formatDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// dedupRatio is a backup's file bytes per byte it added to the
// repository: what deduplication and compression saved. ok is false when
// there is no ratio to give: no file data, or nothing added.
func dedupRatio(logical, added uint64) (ratio float64, ok bool) {
	if logical == 0 || added == 0 {
		return 0, false
	}
	return float64(logical) / float64(added), true
}

// formatDedup renders the dedup ratio for a summary.
func formatDedup(logical, added uint64) string {
	r, ok := dedupRatio(logical, added)
	switch {
	case logical == 0:
		return "n/a (no file data)"
	case !ok:
		return "∞ (nothing new to store)"
	case r >= 100:
		return fmt.Sprintf("%.0fx", r)
	case r < 1: // more metadata than data, or incompressible new data
		return fmt.Sprintf("%.2fx", r)
	}
	return fmt.Sprintf("%.1fx", r)
}

// progressNote is a job's figures for the status line: figure (may be
// empty), then the error count when there are errors.
func progressNote(figure string, errs uint64) string {
	if errs > 0 {
		figure = strings.TrimSpace(figure + "  " + formatCount(errs) + " errors")
	}
	return figure
}

// jobExit is a job command's outcome once its summary is out: nil for
// success, else the exit code.
func jobExit(kind, id string, state coffer.JobState) error {
	code := exitCode(state)
	if code == exitSucceeded {
		return nil
	}
	return &exitStatus{Code: code, Reason: fmt.Sprintf("%s %s %s", kind, id, state)}
}

// writeSummaryHead prints a text summary's first line — what ended, its
// state, how long it ran and why it failed — and a blank line, and returns
// the function that prints one labelled row.
func writeSummaryHead(w io.Writer, what string, state coffer.JobState, d time.Duration, failure string) func(label, format string, args ...any) {
	verb := "in"
	if state != coffer.JobSucceeded && state != coffer.JobPartial {
		verb = "after"
	}
	fmt.Fprintf(w, "%s %s %s %s", what, state, verb, formatDuration(d))
	if failure != "" {
		fmt.Fprintf(w, ": %s", failure)
	}
	fmt.Fprintln(w, ".")
	fmt.Fprintln(w)
	return func(label, format string, args ...any) {
		fmt.Fprintf(w, "  %-13s%s\n", label, fmt.Sprintf(format, args...))
	}
}

// maxListedErrors is how many path errors a text summary lists.
const maxListedErrors = 20

// writePathErrors lists up to maxListedErrors of errs, indented, then how
// many more there were: total counts them all (the server may keep fewer
// than it counted).
func writePathErrors(w io.Writer, errs []coffer.PathError, total uint64) {
	total = max(total, uint64(len(errs)))
	for i, e := range errs {
		if i == maxListedErrors {
			break
		}
		fmt.Fprintf(w, "    %s: %s\n", quoteName(e.Path), printable(e.Message))
	}
	if shown := uint64(min(len(errs), maxListedErrors)); total > shown {
		fmt.Fprintf(w, "    … and %s more\n", formatCount(total-shown))
	}
}

// writeJSONLine writes v as one line of JSON.
func writeJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// errInterrupted is why a job the person stopped was canceled, as the
// server records it.
var errInterrupted = errors.New("interrupted on the machine (SIGINT or SIGTERM)")

// failureText is why a job ended badly, for its summary: the interruption
// when the person stopped it, else the agent's error without the "backup
// ID failed:" it starts with (the summary says that already).
func failureText(ctx context.Context, kind, id string, err error) string {
	if err == nil {
		return ""
	}
	if errors.Is(context.Cause(ctx), errInterrupted) {
		return errInterrupted.Error()
	}
	msg := describeError(err).Error()
	msg = strings.TrimPrefix(msg, kind+" "+id+" failed: ")
	msg = strings.TrimPrefix(msg, kind+" "+id+" ")
	return strings.TrimSuffix(msg, ": "+context.Canceled.Error())
}

// jobContext returns the context of a backup or restore: the first
// SIGINT or SIGTERM cancels it (the agent tells the server the job was
// canceled) after calling notice; a second one ends the process at once,
// since the signals' default action is back by then. stop releases the
// signals.
func jobContext(notice func()) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case <-sigs:
			signal.Stop(sigs)
			notice()
			cancel(errInterrupted)
		case <-quit:
		}
	})
	var once sync.Once
	return ctx, func() {
		once.Do(func() {
			close(quit)
			wg.Wait()
			signal.Stop(sigs)
			cancel(nil)
		})
	}
}
