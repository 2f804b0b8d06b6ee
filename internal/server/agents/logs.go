package agents

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/protocol"
)

// IngestLogs stores a batch of lines clientID's agent logged. A line
// naming a backup that is not the client's, or a restore the client did
// not run, is stored without that reference (and counted as detached), so
// an agent cannot write into another client's job history. Lines without a
// time get the time they arrive. A batch with more than
// protocol.MaxLogLines lines is KindTooLarge "too_many_log_lines"; a line
// over the limits of package protocol is KindInvalid "invalid_log_line"
// (metadata field names it), and then nothing is stored.
func (s *Service) IngestLogs(ctx context.Context, clientID string, batch protocol.LogBatch) (*protocol.LogBatchResponse, error) {
	if len(batch.Lines) > protocol.MaxLogLines {
		return nil, coffer.Errorf(coffer.KindTooLarge, "too_many_log_lines",
			"a batch may hold at most %d log lines, not %d: send them in several batches", protocol.MaxLogLines, len(batch.Lines)).
			With("limit", protocol.MaxLogLines)
	}
	now := s.now()
	owned := jobOwnership{s: s, clientID: clientID, known: map[string]bool{}}
	lines := make([]coffer.ClientLog, 0, len(batch.Lines))
	detached := 0
	for i, in := range batch.Lines {
		l, err := logLine(clientID, in, now)
		if err != nil {
			return nil, err.With("field", fmt.Sprintf("body.lines[%d]%s", i, err.Meta["field"]))
		}
		det := false
		if l.BackupID != "" {
			ok, err := owned.check(ctx, "backup", l.BackupID)
			if err != nil {
				return nil, err
			}
			if !ok {
				l.BackupID, det = "", true
			}
		}
		if l.RestoreID != "" {
			ok, err := owned.check(ctx, "restore", l.RestoreID)
			if err != nil {
				return nil, err
			}
			if !ok {
				l.RestoreID, det = "", true
			}
		}
		if det {
			detached++
		}
		lines = append(lines, l)
	}
	if err := s.store.InsertClientLogs(ctx, lines); err != nil {
		return nil, err
	}
	msg := fmt.Sprintf("%d log lines stored.", len(lines))
	if detached > 0 {
		msg += fmt.Sprintf(" %d named a backup or restore that is not this client's and were stored without it.", detached)
	}
	return &protocol.LogBatchResponse{Message: msg, Success: true, Accepted: len(lines), Detached: detached}, nil
}

// logLine checks one shipped line and converts it. Its error's field
// metadata is the part of the line at fault (".attrs", or "").
func logLine(clientID string, in protocol.LogLine, now time.Time) (coffer.ClientLog, *coffer.Error) {
	bad := func(field, format string, args ...any) *coffer.Error {
		return coffer.Errorf(coffer.KindInvalid, "invalid_log_line", format, args...).With("field", field)
	}
	level, ok := coffer.ParseLogLevel(in.Level)
	if !ok {
		return coffer.ClientLog{}, bad(".level", "log level %q is not one of debug, info, warn, error", truncate(in.Level, 32))
	}
	if n := utf8.RuneCountInString(in.Message); n > protocol.MaxLogMessage {
		return coffer.ClientLog{}, bad(".message", "a log message may have at most %d characters, not %d", protocol.MaxLogMessage, n)
	}
	for _, id := range []struct{ name, v string }{{"backup_id", in.BackupID}, {"restore_id", in.RestoreID}} {
		if len(id.v) > 64 || strings.ContainsFunc(id.v, unicode.IsControl) {
			return coffer.ClientLog{}, bad("."+id.name, "%s is not an id", id.name)
		}
	}
	if len(in.Attrs) > protocol.MaxLogAttrs {
		return coffer.ClientLog{}, bad(".attrs", "a log line may have at most %d attributes, not %d", protocol.MaxLogAttrs, len(in.Attrs))
	}
	var attrs map[string]string
	for k, v := range in.Attrs {
		if k == "" || utf8.RuneCountInString(k) > protocol.MaxLogAttrKey || strings.ContainsFunc(k, unicode.IsControl) {
			return coffer.ClientLog{}, bad(".attrs", "attribute name %q is not valid: 1 to %d characters, no control characters",
				truncate(k, protocol.MaxLogAttrKey), protocol.MaxLogAttrKey)
		}
		if n := utf8.RuneCountInString(v); n > protocol.MaxLogAttrValue {
			return coffer.ClientLog{}, bad(".attrs", "the value of attribute %q has %d characters; at most %d are allowed",
				k, n, protocol.MaxLogAttrValue)
		}
		if attrs == nil {
			attrs = make(map[string]string, len(in.Attrs))
		}
		attrs[k] = storable(v)
	}
	t := in.Time
	if t.IsZero() {
		t = now
	}
	return coffer.ClientLog{ClientID: clientID, BackupID: in.BackupID, RestoreID: in.RestoreID, Level: level,
		Message: storable(in.Message), Attrs: attrs, Time: t.UTC()}, nil
}

// storable replaces NUL characters, which PostgreSQL text cannot hold.
func storable(s string) string { return strings.ReplaceAll(s, "\x00", "\uFFFD") }

// jobOwnership answers, once per job of a batch, whether a backup or
// restore belongs to the client.
type jobOwnership struct {
	s        *Service
	clientID string
	known    map[string]bool // kind + "/" + id → the client's
}

func (o *jobOwnership) check(ctx context.Context, kind, id string) (bool, error) {
	key := kind + "/" + id
	if ok, seen := o.known[key]; seen {
		return ok, nil
	}
	var owner string
	var err error
	if kind == "backup" {
		var b *coffer.Backup
		if b, err = o.s.store.GetBackup(ctx, id); err == nil {
			owner = b.ClientID
		}
	} else {
		var r *coffer.Restore
		if r, err = o.s.store.GetRestore(ctx, id); err == nil {
			owner = r.TargetClientID
		}
	}
	if err != nil && !coffer.IsKind(err, coffer.KindNotFound) {
		return false, err
	}
	o.known[key] = owner == o.clientID
	return o.known[key], nil
}

// ClientLogs returns the log lines of client f.ClientID matching f, newest
// first. An unknown client is KindNotFound "client_not_found"; an Until
// not after Since is KindInvalid "invalid_time_range".
func (s *Service) ClientLogs(ctx context.Context, f metadb.ClientLogFilter) ([]coffer.ClientLog, error) {
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Until.After(f.Since) {
		return nil, coffer.Errorf(coffer.KindInvalid, "invalid_time_range", "until (%s) must be after since (%s)",
			f.Until.UTC().Format(time.RFC3339), f.Since.UTC().Format(time.RFC3339)).With("field", "query.until")
	}
	if _, err := s.store.GetClient(ctx, f.ClientID); err != nil {
		return nil, err
	}
	return s.store.ListClientLogs(ctx, f)
}

// pruneLogs deletes client log lines past LogRetention and beyond each
// client's LogMaxLines, at most every LogPruneEvery on this replica.
func (s *Service) pruneLogs(ctx context.Context, now time.Time) error {
	if s.opts.LogRetention <= 0 && s.opts.LogMaxLines <= 0 {
		return nil
	}
	s.mu.Lock()
	due := s.pruned.IsZero() || now.Sub(s.pruned) >= s.opts.LogPruneEvery
	if due {
		s.pruned = now
	}
	s.mu.Unlock()
	if !due {
		return nil
	}
	var old, over int64
	var err error
	if s.opts.LogRetention > 0 {
		if old, err = s.store.DeleteClientLogsBefore(ctx, now.Add(-s.opts.LogRetention)); err != nil {
			return err
		}
	}
	if s.opts.LogMaxLines > 0 {
		if over, err = s.store.TrimClientLogs(ctx, s.opts.LogMaxLines); err != nil {
			return err
		}
	}
	if old+over > 0 {
		s.log.Info("pruned client logs", "expired", old, "over_cap", over)
	}
	return nil
}

// truncate shortens s to at most n bytes for a message, not splitting a
// character.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
