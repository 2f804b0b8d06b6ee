package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/apiclient"
	"github.com/cofferhq/coffer/internal/protocol"
)

// fakeSender records the batches shipped; its answers are queued errors
// (nil: accepted).
type fakeSender struct {
	mu      sync.Mutex
	batches [][]protocol.LogLine
	answers []error
	calls   chan []protocol.LogLine // each attempt, when set
}

func (f *fakeSender) send(_ context.Context, b protocol.LogBatch) error {
	f.mu.Lock()
	var err error
	if len(f.answers) > 0 {
		err, f.answers = f.answers[0], f.answers[1:]
	}
	if err == nil {
		f.batches = append(f.batches, b.Lines)
	}
	f.mu.Unlock()
	if f.calls != nil {
		f.calls <- b.Lines
	}
	return err
}

func (f *fakeSender) sent() [][]protocol.LogLine {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.batches)
}

func msgs(lines []protocol.LogLine) string {
	var out []string
	for _, l := range lines {
		out = append(out, l.Message)
	}
	return strings.Join(out, ",")
}

func newTestShipper(f *fakeSender) *logShipper {
	s := newLogShipper(f.send, slog.New(slog.DiscardHandler))
	s.start()
	return s
}

func pushN(s *logShipper, from, to int) {
	for i := from; i < to; i++ {
		s.push(protocol.LogLine{Level: "info", Message: fmt.Sprint(i)})
	}
}

func TestShipHandlerLines(t *testing.T) {
	f := &fakeSender{}
	s := newTestShipper(f)
	var out bytes.Buffer
	log := slog.New(&shipHandler{inner: slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelWarn}), ship: s}).
		With("client_id", "c1")

	log.Info("agent starting", "server", "https://coffer.example", "err", errors.New("boom"), slog.Group("g", "k", 1))
	log.Debug("noise")                            // debug, no job: not shipped
	log.Debug("chunk details", "backup_id", "b1") // debug of a job: shipped
	log.With("restore_id", "r1").Warn("restore started", "backup_id", "b9", slog.Group("http", "status", 200))
	log.WithGroup("req").Info("grouped", "backup_id", "b2")
	many := []any{}
	for i := range protocol.MaxLogAttrs + 5 {
		many = append(many, fmt.Sprintf("k%02d", i), strings.Repeat("v", 300))
	}
	log.Error(strings.Repeat("é", protocol.MaxLogMessage), many...)
	log.With("backup_id", "b3").Debug("with job")                  // the job from With
	log.WithGroup("req").Debug("grouped debug", "backup_id", "b4") // not a job: not shipped

	lines := s.queue
	if got := msgs(lines); got != "agent starting,chunk details,restore started,grouped,"+lines[4].Message+",with job" {
		t.Fatalf("queued %q", got)
	}
	first := lines[0]
	if first.Level != "info" || first.Time.IsZero() || first.BackupID != "" ||
		fmt.Sprint(first.Attrs) != "map[err:boom g.k:1 server:https://coffer.example]" {
		t.Errorf("first line = %+v", first)
	}
	if l := lines[1]; l.Level != "debug" || l.BackupID != "b1" || l.Attrs != nil {
		t.Errorf("job debug line = %+v", l)
	}
	// A restore's line belongs to the restore; the backup it restores
	// stays an attribute.
	if l := lines[2]; l.Level != "warn" || l.RestoreID != "r1" || l.BackupID != "" ||
		fmt.Sprint(l.Attrs) != "map[backup_id:b9 http.status:200]" {
		t.Errorf("restore line = %+v", l)
	}
	// Only a top-level backup_id names the job.
	if l := lines[3]; l.BackupID != "" || fmt.Sprint(l.Attrs) != "map[req.backup_id:b2]" {
		t.Errorf("grouped line = %+v", l)
	}
	if l := lines[5]; l.BackupID != "b3" || l.Level != "debug" {
		t.Errorf("job from With = %+v", l)
	}
	last := lines[4]
	if len(last.Message) > protocol.MaxLogMessage || len(last.Attrs) != protocol.MaxLogAttrs || last.Level != "error" {
		t.Errorf("long line: %d bytes, %d attrs", len(last.Message), len(last.Attrs))
	}
	for k, v := range last.Attrs {
		if len(v) > protocol.MaxLogAttrValue || len(k) > protocol.MaxLogAttrKey {
			t.Errorf("attribute %s of %d bytes", k, len(v))
		}
	}
	// The wrapped handler still gets what its level lets through.
	if got := out.String(); !strings.Contains(got, "restore started") || strings.Contains(got, "agent starting") ||
		!strings.Contains(got, "client_id=c1") || !strings.Contains(got, "http.status=200") {
		t.Errorf("wrapped handler wrote:\n%s", got)
	}

	// Not shipping: nothing is queued, and debug records are not even built.
	s.stop(context.Background())
	h := &shipHandler{inner: slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelInfo}), ship: s}
	if h.Enabled(context.Background(), slog.LevelDebug) {
		t.Error("debug records enabled while not shipping")
	}
	slog.New(h).Info("after stop")
	if len(s.queue) != 0 || len(f.sent()) != 1 {
		t.Errorf("queue %v, sent %v", s.queue, f.sent())
	}
}

func TestShipperWakesForABatch(t *testing.T) {
	s := newTestShipper(&fakeSender{})
	s.batch = 3
	pushN(s, 0, 2)
	if len(s.wake) != 0 {
		t.Fatal("woken before a batch waits")
	}
	pushN(s, 2, 3)
	if len(s.wake) != 1 {
		t.Fatal("not woken when a batch waits")
	}
}

func TestShipperDropsOldest(t *testing.T) {
	f := &fakeSender{}
	s := newTestShipper(f)
	s.max = 5
	pushN(s, 0, 8)
	if err := s.flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	sent := f.sent()
	if len(sent) != 1 || msgs(sent[0][1:]) != "3,4,5,6,7" {
		t.Fatalf("sent %v", sent)
	}
	if note := sent[0][0]; note.Level != "warn" || !strings.HasPrefix(note.Message, "3 agent log lines were dropped") ||
		note.Attrs["dropped"] != "3" {
		t.Errorf("note = %+v", note)
	}
	if err := s.flush(context.Background()); err != nil || len(f.sent()) != 1 {
		t.Errorf("second flush: %v, %d batches", err, len(f.sent()))
	}
}

func TestShipperSplitsBatches(t *testing.T) {
	f := &fakeSender{}
	s := newTestShipper(f)
	pushN(s, 0, 1200)
	if err := s.flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	var sizes []int
	for _, b := range f.sent() {
		sizes = append(sizes, len(b))
	}
	if fmt.Sprint(sizes) != "[499 499 202]" {
		t.Errorf("batches of %v lines", sizes)
	}
}

// fakeClock hands out timers the test fires.
type fakeClock struct{ waits chan fakeWait }

type fakeWait struct {
	d time.Duration
	c chan time.Time
}

func (c *fakeClock) after(d time.Duration) <-chan time.Time {
	w := fakeWait{d: d, c: make(chan time.Time, 1)}
	c.waits <- w
	return w.c
}

func (c *fakeClock) next(t *testing.T, want time.Duration) fakeWait {
	t.Helper()
	w := <-c.waits
	if w.d != want {
		t.Fatalf("waits %v, want %v", w.d, want)
	}
	return w
}

// The shipper ships on its tick, keeps lines and backs off while the
// server cannot be reached, and ships what is left when it stops.
func TestShipperRetriesAndFlushesOnStop(t *testing.T) {
	f := &fakeSender{answers: []error{errors.New("connection refused"), errors.New("connection refused")},
		calls: make(chan []protocol.LogLine, 10)}
	s := newTestShipper(f)
	clock := &fakeClock{waits: make(chan fakeWait, 1)}
	s.after = clock.after
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.run(ctx)
	}()

	w := clock.next(t, shipEvery)
	pushN(s, 0, 2)
	w.c <- time.Now()
	if got := msgs(<-f.calls); got != "0,1" {
		t.Fatalf("first attempt %q", got)
	}
	w = clock.next(t, 2*shipEvery) // backing off
	pushN(s, 2, 3)
	w.c <- time.Now()
	if got := msgs(<-f.calls); got != "0,1,2" {
		t.Fatalf("second attempt %q", got)
	}
	w = clock.next(t, 4*shipEvery)
	w.c <- time.Now()
	if got := msgs(<-f.calls); got != "0,1,2" {
		t.Fatalf("third attempt %q", got)
	}
	w = clock.next(t, shipEvery) // shipped: back to the normal pace
	// A full batch does not wait for the tick.
	s.batch = 2
	pushN(s, 3, 5)
	if got := msgs(<-f.calls); got != "3,4" {
		t.Fatalf("batch %q", got)
	}
	clock.next(t, shipEvery)

	pushN(s, 5, 6)
	cancel()
	<-done
	s.stop(context.Background())
	if got := msgs(<-f.calls); got != "5" {
		t.Fatalf("last lines %q", got)
	}
	pushN(s, 6, 7) // after stop: not queued
	if len(s.queue) != 0 {
		t.Errorf("queued after stop: %v", s.queue)
	}
	if n := len(f.sent()); n != 3 {
		t.Errorf("%d batches accepted, want 3", n)
	}
}

// A batch the server refuses is dropped, and said so in the next one.
func TestShipperDropsRefusedBatch(t *testing.T) {
	f := &fakeSender{answers: []error{&apiclient.Error{Status: 400, Code: "invalid_request", Detail: "bad line"}}}
	s := newTestShipper(f)
	pushN(s, 0, 2)
	if err := s.flush(context.Background()); err == nil || !strings.Contains(err.Error(), "refused 2 log lines") {
		t.Fatalf("flush: %v", err)
	}
	pushN(s, 2, 3)
	if err := s.flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	sent := f.sent()
	if len(sent) != 1 || msgs(sent[0][1:]) != "2" || !strings.HasPrefix(sent[0][0].Message, "2 agent log lines were dropped") {
		t.Errorf("sent %v", sent)
	}
}

// A queue that overflows while the server is away keeps the newest lines.
func TestShipperPutBackKeepsNewest(t *testing.T) {
	f := &fakeSender{answers: []error{errors.New("timeout")}, calls: make(chan []protocol.LogLine, 1)}
	s := newTestShipper(f)
	s.max = 4
	pushN(s, 0, 3)
	lines, dropped := s.take()
	pushN(s, 3, 6) // logged while the batch was on its way
	s.putBack(lines, dropped)
	if got := msgs(s.queue); got != "2,3,4,5" || s.dropped != 2 {
		t.Errorf("queue %q, dropped %d", got, s.dropped)
	}
}

// The daemon ships its log, a backup's lines attached to the backup, and
// the last lines when it stops.
func TestRunShipsLogs(t *testing.T) {
	s := newFakeServer(t)
	a := s.agent(t)
	src := t.TempDir()
	makeTree(t, src)
	id := s.queue(src)
	cancel, done := startRun(t, a)
	s.commands <- []protocol.Command{{ID: "c1", Kind: protocol.CommandBackup, Backup: &protocol.BackupCommand{BackupID: id}}}
	waitFor(t, "the backup", func() bool { return s.state(id).Final() })
	waitFor(t, "the agent to end the backup", func() bool { return len(a.jobs.ids()) == 0 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	done <- nil

	var job []string
	other := map[string]bool{}
	for _, l := range s.shipped() {
		if _, ok := l.Attrs["client_id"]; ok {
			t.Errorf("line %q carries client_id", l.Message)
		}
		if l.BackupID == id {
			job = append(job, l.Message)
		} else {
			other[l.Message] = true
			if lv, _ := coffer.ParseLogLevel(l.Level); lv < coffer.LogInfo {
				t.Errorf("debug line of no job shipped: %+v", l)
			}
		}
	}
	for _, want := range []string{"command: run backup", "backup started", "backup scanned", "backup finished"} {
		if !slices.Contains(job, want) {
			t.Errorf("the backup's lines %q lack %q", job, want)
		}
	}
	if !other["agent starting"] || !other["agent stopped"] {
		t.Errorf("daemon lines = %v", other)
	}
}
