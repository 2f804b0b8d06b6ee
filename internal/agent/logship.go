package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/apiclient"
	"github.com/cofferhq/coffer/internal/protocol"
)

// Log shipping defaults.
const (
	// shipQueue is how many lines wait at most; older ones are dropped.
	shipQueue = 5000
	// shipBatch lines waiting start a shipment before shipEvery has passed.
	shipBatch = 200
	// shipEvery is how often waiting lines are shipped.
	shipEvery = 5 * time.Second
	// shipBackoffMax bounds the wait between attempts while the server
	// cannot be reached; the wait doubles from shipEvery up to it.
	shipBackoffMax = 2 * time.Minute
	// shipBytes bounds the estimated size of one batch, well below the
	// server's body limit.
	shipBytes = 4 << 20
	// shipFinal bounds the last shipment when the daemon stops.
	shipFinal = 10 * time.Second
)

// logShipper sends the daemon's log records to the server
// (POST /agent/logs): a shipHandler queues them, run ships them in
// batches. Logging never waits for it: when the queue is full the oldest
// lines are dropped, and the next batch starts with a line saying how many.
type logShipper struct {
	send  func(context.Context, protocol.LogBatch) error
	log   *slog.Logger // the shipper's own trouble: never queued
	max   int
	batch int
	every time.Duration
	after func(time.Duration) <-chan time.Time // the clock (tests replace it)

	active atomic.Bool // lines are queued only while the daemon runs

	mu      sync.Mutex
	queue   []protocol.LogLine // oldest first
	dropped int                // lines dropped since the last shipment
	wake    chan struct{}      // batch lines are waiting
}

func newLogShipper(send func(context.Context, protocol.LogBatch) error, log *slog.Logger) *logShipper {
	return &logShipper{send: send, log: log, max: shipQueue, batch: shipBatch, every: shipEvery, after: time.After,
		wake: make(chan struct{}, 1)}
}

// start makes the handler queue lines.
func (s *logShipper) start() { s.active.Store(true) }

// shipping reports whether lines are being queued.
func (s *logShipper) shipping() bool { return s.active.Load() }

// push queues a line, dropping the oldest when the queue is full.
func (s *logShipper) push(l protocol.LogLine) {
	if !s.active.Load() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) >= s.max {
		s.queue = s.queue[1:]
		s.dropped++
	}
	s.queue = append(s.queue, l)
	if len(s.queue) >= s.batch {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// run ships waiting lines every s.every, or as soon as s.batch lines
// wait, until ctx ends. After a failed shipment it waits twice as long
// each time (up to shipBackoffMax) and keeps the lines.
func (s *logShipper) run(ctx context.Context) {
	wait, failures := s.every, 0
	for {
		timer := s.after(wait)
		wake := s.wake
		if failures > 0 {
			wake = nil // back off: a full batch does not hurry the retry
		}
		select {
		case <-ctx.Done():
			return
		case <-timer:
		case <-wake:
		}
		if err := s.flush(ctx); err != nil {
			if failures++; failures == 1 || failures%20 == 0 {
				s.log.Warn("could not ship log lines to the server; keeping them for later", "failures", failures, "err", err)
			}
			wait = min(wait*2, shipBackoffMax)
			continue
		}
		if failures > 0 {
			s.log.Info("log lines reach the server again", "after_failures", failures)
		}
		wait, failures = s.every, 0
	}
}

// stop ships what waits (within shipFinal) and stops queueing. Call it
// after run has returned.
func (s *logShipper) stop(ctx context.Context) {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shipFinal)
	defer cancel()
	if err := s.flush(fctx); err != nil {
		s.log.Warn("could not ship the last log lines to the server", "err", err)
	}
	s.active.Store(false)
	s.mu.Lock()
	s.queue, s.dropped = nil, 0
	s.mu.Unlock()
}

// flush ships the waiting lines, batch by batch, and stops at the first
// failure, keeping what was not shipped. A batch the server refuses (a 4xx
// other than 408 and 429) is dropped, since sending it again would not
// help, and counted; the error is returned all the same, so that a server
// refusing every batch (an older one, say) is not asked in a tight loop.
func (s *logShipper) flush(ctx context.Context) error {
	for {
		lines, dropped := s.take()
		if len(lines) == 0 && dropped == 0 {
			return nil
		}
		batch := lines
		if dropped > 0 {
			note := protocol.LogLine{Time: time.Now().UTC(), Level: coffer.LogWarn.String(),
				Message: fmt.Sprintf("%d agent log lines were dropped: more were logged than could be shipped to the server", dropped),
				Attrs:   map[string]string{"dropped": fmt.Sprint(dropped)}}
			batch = append([]protocol.LogLine{note}, lines...)
		}
		err := s.send(ctx, protocol.LogBatch{Lines: batch})
		var ae *apiclient.Error
		if errors.As(err, &ae) && ae.Status >= 400 && ae.Status < 500 && ae.Status != http.StatusRequestTimeout &&
			ae.Status != http.StatusTooManyRequests {
			s.mu.Lock()
			s.dropped += dropped + len(lines)
			s.mu.Unlock()
			return fmt.Errorf("the server refused %d log lines, which are dropped: %w", len(lines), err)
		}
		if err != nil {
			s.putBack(lines, dropped)
			return err
		}
	}
}

// take removes the oldest waiting lines that fit in one batch, and the
// count of dropped lines.
func (s *logShipper) take() ([]protocol.LogLine, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, size := 0, 0
	for n < len(s.queue) && n < protocol.MaxLogLines-1 { // room for the note on dropped lines
		size += lineSize(&s.queue[n])
		if n > 0 && size > shipBytes {
			break
		}
		n++
	}
	lines := slices.Clone(s.queue[:n])
	s.queue = s.queue[n:]
	dropped := s.dropped
	s.dropped = 0
	return lines, dropped
}

// putBack returns lines that could not be shipped to the front of the
// queue, dropping the oldest of them when lines queued meanwhile left no
// room.
func (s *logShipper) putBack(lines []protocol.LogLine, dropped int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropped += dropped
	if room := s.max - len(s.queue); len(lines) > room {
		s.dropped += len(lines) - room
		lines = lines[len(lines)-room:]
	}
	s.queue = append(lines, s.queue...)
}

// lineSize estimates a line's JSON size.
func lineSize(l *protocol.LogLine) int {
	n := 100 + len(l.Message) + len(l.BackupID) + len(l.RestoreID)
	for k, v := range l.Attrs {
		n += len(k) + len(v) + 6
	}
	return n
}

// shipHandler is the slog.Handler of an agent: it passes every record to
// the handler it wraps and queues for the server the records at info and
// above, and any record of a backup or restore (a backup_id or restore_id
// attribute), while the daemon runs.
type shipHandler struct {
	inner slog.Handler
	ship  *logShipper
	attrs []slog.Attr // from WithAttrs, keys prefixed with their groups
	group string      // the open groups, "a.b." (prefix of the record's keys)
	job   bool        // attrs name a backup or restore
}

// Enabled lets records of every level through while lines are shipped:
// a debug record is shipped when it names a job, which only its
// attributes tell.
func (h *shipHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l) || h.ship.shipping()
}

// Handle passes the record on and queues its line.
func (h *shipHandler) Handle(ctx context.Context, r slog.Record) error {
	var err error
	if h.inner.Enabled(ctx, r.Level) {
		err = h.inner.Handle(ctx, r)
	}
	if h.ship.shipping() && (r.Level >= slog.LevelInfo || h.job || h.group == "" && recordNamesJob(r)) {
		if l := h.line(r); r.Level >= slog.LevelInfo || l.BackupID != "" || l.RestoreID != "" {
			h.ship.push(l)
		}
	}
	return err
}

// isJobKey reports whether a top-level attribute names a job.
func isJobKey(k string) bool { return k == "backup_id" || k == "restore_id" }

// recordNamesJob reports whether the record has a top-level backup_id or
// restore_id attribute.
func recordNamesJob(r slog.Record) bool {
	found := false
	r.Attrs(func(a slog.Attr) bool {
		found = isJobKey(a.Key)
		return !found
	})
	return found
}

// WithAttrs returns a handler whose records carry attrs.
func (h *shipHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	out := *h
	out.inner = h.inner.WithAttrs(attrs)
	out.attrs = slices.Clip(h.attrs)
	for _, a := range attrs {
		out.attrs = append(out.attrs, slog.Attr{Key: h.group + a.Key, Value: a.Value})
		out.job = out.job || h.group == "" && isJobKey(a.Key)
	}
	return &out
}

// WithGroup returns a handler whose records' attributes are in group name.
func (h *shipHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	out := *h
	out.inner = h.inner.WithGroup(name)
	out.group = h.group + name + "."
	return &out
}

// line converts a record. The top-level backup_id and restore_id become
// the line's job (a restore's line keeps the backup it restores as an
// attribute); client_id is dropped (the server knows it from the
// credential); the other attributes, flattened, are kept up to the
// protocol's limits.
func (h *shipHandler) line(r slog.Record) protocol.LogLine {
	l := protocol.LogLine{Time: r.Time.UTC(), Level: coffer.LogLevel(r.Level).String(),
		Message: truncate(r.Message, protocol.MaxLogMessage)}
	var backupID string
	add := func(key string, v slog.Value) {
		switch key {
		case "client_id":
			return
		case "backup_id":
			if backupID == "" {
				backupID = v.String()
				return
			}
		case "restore_id":
			if l.RestoreID == "" {
				l.RestoreID = truncate(v.String(), 64)
				return
			}
		}
		if len(l.Attrs) >= protocol.MaxLogAttrs {
			return
		}
		if l.Attrs == nil {
			l.Attrs = map[string]string{}
		}
		l.Attrs[attrKey(key)] = truncate(attrValue(v), protocol.MaxLogAttrValue)
	}
	var walk func(prefix string, a slog.Attr)
	walk = func(prefix string, a slog.Attr) {
		v := a.Value.Resolve()
		if v.Kind() == slog.KindGroup {
			p := prefix
			if a.Key != "" {
				p += a.Key + "."
			}
			for _, g := range v.Group() {
				walk(p, g)
			}
			return
		}
		if a.Key != "" {
			add(prefix+a.Key, v)
		}
	}
	for _, a := range h.attrs {
		walk("", a)
	}
	r.Attrs(func(a slog.Attr) bool {
		walk(h.group, a)
		return true
	})
	switch {
	case l.RestoreID != "" && backupID != "":
		if len(l.Attrs) < protocol.MaxLogAttrs {
			if l.Attrs == nil {
				l.Attrs = map[string]string{}
			}
			l.Attrs["backup_id"] = truncate(backupID, protocol.MaxLogAttrValue)
		}
	case backupID != "":
		l.BackupID = truncate(backupID, 64)
	}
	return l
}

// attrKey makes a key the server accepts: no control characters, at most
// protocol.MaxLogAttrKey bytes.
func attrKey(k string) string {
	k = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '_'
		}
		return r
	}, k)
	return truncate(k, protocol.MaxLogAttrKey)
}

func attrValue(v slog.Value) string {
	if v.Kind() == slog.KindTime {
		return v.Time().UTC().Format(time.RFC3339Nano)
	}
	return v.String()
}
