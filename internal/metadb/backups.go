package metadb

import (
	"context"
	"database/sql/driver"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/oklog/ulid/v2"
)

const backupColumns = `id, client_id, plan_id, repository_id, trigger_kind, state, paths, exclude, full_scan, one_fs,
	host_name, snapshot_id, root_tree, parent_id, stats, errors, error_message, session_id, cancel_requested, created_by,
	created_at, started_at, finished_at, updated_at,
	level, backup_session, backup_name, client_os, agent_version, compression, encrypted`

func scanBackup(row rowScanner) (*coffer.Backup, error) {
	var b coffer.Backup
	err := row.Scan(&b.ID, &b.ClientID, &b.PlanID, &b.RepositoryID, &b.Trigger, &b.State,
		jsonList[string]{&b.Paths}, jsonList[string]{&b.Exclude}, &b.Full, &b.OneFS, &b.HostName, &b.SnapshotID,
		&b.RootTree, &b.ParentID, jsonObject{&b.Stats}, jsonList[coffer.PathError]{&b.Errors}, &b.Error, &b.SessionID,
		&b.CancelRequested, &b.CreatedBy, utc{&b.CreatedAt}, nullUTC{&b.StartedAt}, nullUTC{&b.FinishedAt}, utc{&b.UpdatedAt},
		&b.Meta.Level, &b.Meta.Session, &b.Meta.Name, &b.Meta.ClientOS, &b.Meta.AgentVersion, &b.Meta.Compression, &b.Meta.Encrypted)
	if err != nil {
		return nil, err
	}
	return &b, nil
}

// canceledBeforeStart is the Error of a job canceled while queued.
const canceledBeforeStart = "canceled before it started"

// CreateBackup stores a new backup, assigning its id and timestamps. Its
// State must be queued (the default) or running; a running backup starts
// now. A plan runs one backup at a time: a backup of a plan that has one
// queued or running is a conflict "plan_backup_active" naming that one.
func (db *DB) CreateBackup(ctx context.Context, b *coffer.Backup) error {
	if err := newJobState(&b.State); err != nil {
		return fmt.Errorf("create backup: %w", err)
	}
	now := db.now()
	b.ID = ulid.Make().String()
	b.CreatedAt, b.UpdatedAt = now, now
	b.StartedAt, b.FinishedAt = nil, nil
	if b.State == coffer.JobRunning {
		b.StartedAt = &now
	}
	_, err := db.sql.ExecContext(ctx, `INSERT INTO backups (`+backupColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
		$9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24,
		$25, $26, $27, $28, $29, $30, $31)`,
		b.ID, b.ClientID, b.PlanID, b.RepositoryID, b.Trigger, b.State, jsonArg[string](b.Paths), jsonArg[string](b.Exclude),
		b.Full, b.OneFS, b.HostName, b.SnapshotID, b.RootTree, b.ParentID, jsonValue{b.Stats}, jsonArg[coffer.PathError](b.Errors),
		b.Error, b.SessionID, b.CancelRequested, b.CreatedBy, b.CreatedAt, b.StartedAt, b.FinishedAt, b.UpdatedAt,
		b.Meta.Level, b.Meta.Session, b.Meta.Name, b.Meta.ClientOS, b.Meta.AgentVersion, b.Meta.Compression, b.Meta.Encrypted)
	if isUniqueViolation(err) && b.PlanID != "" {
		return db.errPlanBackupActive(ctx, b.PlanID)
	}
	if err != nil {
		return fmt.Errorf("insert backup: %w", err)
	}
	return nil
}

func errBackupNotFound(id string) error {
	return coffer.Errorf(coffer.KindNotFound, "backup_not_found", "no backup with id %q", id).With("backup_id", id)
}

// GetBackup returns the backup with the given id, or "backup_not_found".
func (db *DB) GetBackup(ctx context.Context, id string) (*coffer.Backup, error) {
	return backupJobs.get(ctx, db, id)
}

// StartBackup moves clientID's queued backup to running, recording the
// index write session that protects its blobs and, when not "", the
// repository it writes to. Another client's backup is "backup_not_found";
// one that is not queued is a conflict "backup_not_queued".
func (db *DB) StartBackup(ctx context.Context, id, clientID, sessionID, repositoryID string) (*coffer.Backup, error) {
	args := []any{id, clientID, coffer.JobQueued, coffer.JobRunning, sessionID, db.now()}
	set := ""
	if repositoryID != "" {
		args = append(args, repositoryID)
		set = ", repository_id = $7"
	}
	return backupJobs.transition(ctx, db, id, func(b *coffer.Backup) error {
		if b.ClientID != clientID {
			return errBackupNotFound(id)
		}
		return coffer.Errorf(coffer.KindConflict, "backup_not_queued",
			"backup %s is %s, not queued: only a queued backup can be started", id, b.State).With("state", b.State)
	}, `UPDATE backups SET state = $4, session_id = $5, started_at = $6, updated_at = $6`+set+`
		WHERE id = $1 AND client_id = $2 AND state = $3`, args...)
}

// UpdateBackupProgress stores the running backup's latest statistics and
// returns it (its CancelRequested tells the agent to stop). A backup that
// is not running is a conflict "backup_not_running".
func (db *DB) UpdateBackupProgress(ctx context.Context, id string, stats coffer.BackupStats) (*coffer.Backup, error) {
	return backupJobs.transition(ctx, db, id, func(b *coffer.Backup) error {
		return coffer.Errorf(coffer.KindConflict, "backup_not_running",
			"backup %s is %s, not running: it takes no more progress reports", id, b.State).With("state", b.State)
	}, `UPDATE backups SET stats = $3, updated_at = $4 WHERE id = $1 AND state = $2`,
		id, coffer.JobRunning, jsonValue{stats}, db.now())
}

// BackupFinish is the outcome FinishBackup records. Zero SnapshotID,
// RootTree, ParentID and Stats keep what the backup already has (the last
// progress report's statistics, say); Errors and Error replace it.
type BackupFinish struct {
	State      coffer.JobState // succeeded, partial, failed or canceled
	SnapshotID string
	RootTree   string
	ParentID   string
	Stats      coffer.BackupStats
	Errors     []coffer.PathError
	Error      string
	// Meta, when not nil, replaces the backup's metadata.
	Meta *coffer.BackupMeta
	// RetentionDue marks the backup for the retention runner: its plan's
	// retention has not run since it committed (see RetentionDue).
	RetentionDue bool
}

// FinishBackup moves a queued or running backup to its final state and
// returns it. A backup already finished is a conflict "backup_finished".
func (db *DB) FinishBackup(ctx context.Context, id string, f BackupFinish) (*coffer.Backup, error) {
	if !f.State.Final() {
		return nil, coffer.Errorf(coffer.KindInvalid, "invalid_state",
			"a backup cannot finish in state %q: use succeeded, partial, failed or canceled", f.State).With("state", f.State)
	}
	args := []any{id, coffer.JobQueued, coffer.JobRunning, f.State, jsonArg[coffer.PathError](f.Errors), f.Error, db.now()}
	set := ""
	optional := func(column string, v any) {
		args = append(args, v)
		set += fmt.Sprintf(", %s = $%d", column, len(args))
	}
	if f.SnapshotID != "" {
		optional("snapshot_id", f.SnapshotID)
	}
	if f.RootTree != "" {
		optional("root_tree", f.RootTree)
	}
	if f.ParentID != "" {
		optional("parent_id", f.ParentID)
	}
	if f.Stats != (coffer.BackupStats{}) {
		optional("stats", jsonValue{f.Stats})
	}
	if m := f.Meta; m != nil {
		optional("level", m.Level)
		optional("backup_session", m.Session)
		optional("backup_name", m.Name)
		optional("client_os", m.ClientOS)
		optional("agent_version", m.AgentVersion)
		optional("compression", m.Compression)
		optional("encrypted", m.Encrypted)
	}
	if f.RetentionDue {
		optional("retention_pending", true)
	}
	return backupJobs.transition(ctx, db, id, func(b *coffer.Backup) error {
		return errBackupFinished(b)
	}, `UPDATE backups SET state = $4, errors = $5, error_message = $6, finished_at = $7, updated_at = $7`+set+`
		WHERE id = $1 AND state IN ($2, $3)`, args...)
}

func errBackupFinished(b *coffer.Backup) error {
	return coffer.Errorf(coffer.KindConflict, "backup_finished", "backup %s already finished (%s): it can no longer change", b.ID, b.State).With("state", b.State)
}

// RequestBackupCancel cancels a backup: a queued one is canceled at once, a
// running one gets CancelRequested (its agent stops and reports it
// canceled). A finished backup is a conflict "backup_finished".
func (db *DB) RequestBackupCancel(ctx context.Context, id string) (*coffer.Backup, error) {
	return backupJobs.cancel(ctx, db, id)
}

// Keyset is a position in a list ordered newest first: (created_at DESC,
// id DESC). A page after it holds the rows strictly older.
type Keyset struct {
	CreatedAt time.Time
	ID        string
}

// BackupFilter selects backups for ListBackups. Zero fields do not filter.
type BackupFilter struct {
	ClientID string
	PlanID   string
	AdHoc    bool // only backups of no plan
	States   []coffer.JobState
	Finished bool                 // only backups in a final state (not queued or running)
	Trigger  coffer.BackupTrigger // only backups started this way ("": any)
	Since    time.Time            // created at or after
	Until    time.Time            // created before
	After    *Keyset              // the last row of the previous page
	Limit    int                  // at most this many (0: no limit)
}

// CountBackupsByState counts the backups created at or after since, by
// state (states with none are absent).
func (db *DB) CountBackupsByState(ctx context.Context, since time.Time) (map[coffer.JobState]int, error) {
	// The ordered subquery makes SQLite's planner read the recent rows by
	// the created_at index rather than scan every backup by the state
	// index, which GROUP BY state alone would have it pick.
	rows, err := db.sql.QueryContext(ctx, `SELECT state, COUNT(*) FROM
		(SELECT state FROM backups WHERE created_at >= $1 ORDER BY created_at DESC) recent GROUP BY state`, ts(since))
	if err != nil {
		return nil, fmt.Errorf("count backups: %w", err)
	}
	defer rows.Close()
	out := map[coffer.JobState]int{}
	for rows.Next() {
		var state coffer.JobState
		var n int
		if err := rows.Scan(&state, &n); err != nil {
			return nil, fmt.Errorf("count backups: %w", err)
		}
		out[state] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count backups: %w", err)
	}
	return out, nil
}

// ListBackups returns backups newest first (created_at, then id,
// descending).
func (db *DB) ListBackups(ctx context.Context, f BackupFilter) ([]coffer.Backup, error) {
	var w sqlFilter
	if f.ClientID != "" {
		w.add("client_id = " + w.arg(f.ClientID))
	}
	if f.PlanID != "" {
		w.add("plan_id = " + w.arg(f.PlanID))
	}
	if f.AdHoc {
		w.add("plan_id = ''")
	}
	w.states(f.States)
	if f.Finished {
		// NOT IN rather than the final states IN: the planner then walks
		// the created_at index newest first and stops at the limit,
		// instead of reading every finished backup through the state index
		// and sorting them.
		w.add("state NOT IN (" + w.arg(coffer.JobQueued) + ", " + w.arg(coffer.JobRunning) + ")")
	}
	if f.Trigger != "" {
		w.add("trigger_kind = " + w.arg(f.Trigger))
	}
	if !f.Since.IsZero() {
		w.add("created_at >= " + w.arg(ts(f.Since)))
	}
	if !f.Until.IsZero() {
		w.add("created_at < " + w.arg(ts(f.Until)))
	}
	w.keyset(f.After)
	rows, err := queryAll(ctx, db.sql, scanBackup, `SELECT `+backupColumns+` FROM backups`+w.where()+
		` ORDER BY created_at DESC, id DESC`+w.page(f.Limit, 0), w.args...)
	if err != nil {
		return nil, fmt.Errorf("list backups: %w", err)
	}
	return deref(rows), nil
}

// FailStaleBackups fails every running backup whose last progress report
// is older than updatedBefore (its agent died or lost the server), with
// Error reason, and returns them. Each backup is returned by one call only,
// even when several replicas run it at once.
func (db *DB) FailStaleBackups(ctx context.Context, updatedBefore time.Time, reason string) ([]coffer.Backup, error) {
	return backupJobs.failStale(ctx, db, updatedBefore, reason)
}

// FailQueuedBackups fails every backup still queued that was created
// before createdBefore (its agent never came to run it), with Error
// reason, and returns them newest first. Each backup is returned by one
// call only, even when several replicas run it at once.
func (db *DB) FailQueuedBackups(ctx context.Context, createdBefore time.Time, reason string) ([]coffer.Backup, error) {
	return backupJobs.failQueued(ctx, db, createdBefore, reason)
}

// newJobState checks the state of a job being created: queued (the
// default for "") or running.
func newJobState(s *coffer.JobState) error {
	switch *s {
	case "":
		*s = coffer.JobQueued
	case coffer.JobQueued, coffer.JobRunning:
	default:
		return fmt.Errorf("a new job is queued or running, not %q", *s)
	}
	return nil
}

// sqlFilter builds a WHERE clause with numbered placeholders.
type sqlFilter struct {
	conds []string
	args  []any
}

// arg adds a query argument and returns its placeholder.
func (w *sqlFilter) arg(v any) string {
	w.args = append(w.args, v)
	return fmt.Sprintf("$%d", len(w.args))
}

func (w *sqlFilter) add(cond string) { w.conds = append(w.conds, cond) }

// in adds each of vals as an argument and returns their placeholders as a
// list for IN: "$3, $4, $5".
func in[T any](w *sqlFilter, vals []T) string {
	ph := make([]string, len(vals))
	for i, v := range vals {
		ph[i] = w.arg(v)
	}
	return strings.Join(ph, ", ")
}

// states keeps jobs in one of the states (all when there are none).
func (w *sqlFilter) states(states []coffer.JobState) {
	if len(states) == 0 {
		return
	}
	w.add("state IN (" + in(w, states) + ")")
}

// keyset keeps the rows after k in (created_at DESC, id DESC) order.
func (w *sqlFilter) keyset(k *Keyset) {
	if k == nil {
		return
	}
	w.add("(created_at, id) < (" + w.arg(ts(k.CreatedAt)) + ", " + w.arg(k.ID) + ")")
}

func (w *sqlFilter) where() string {
	if len(w.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(w.conds, " AND ")
}

// page returns the LIMIT and OFFSET clauses (none for zero values).
func (w *sqlFilter) page(limit, offset int) string {
	if limit <= 0 && offset <= 0 {
		return ""
	}
	if limit <= 0 {
		limit = math.MaxInt64 // SQLite has no OFFSET without LIMIT
	}
	s := " LIMIT " + w.arg(limit)
	if offset > 0 {
		s += " OFFSET " + w.arg(offset)
	}
	return s
}

// deref turns the rows of queryAll into values.
func deref[T any](rows []*T) []T {
	out := make([]T, len(rows))
	for i, r := range rows {
		out[i] = *r
	}
	return out
}

// sortNewestFirst orders jobs by (created_at, id) descending, the order of
// the lists (UPDATE … RETURNING has no ORDER BY).
func sortNewestFirst[T any](xs []T, key func(T) Keyset) []T {
	slices.SortFunc(xs, func(a, b T) int {
		ka, kb := key(a), key(b)
		if c := kb.CreatedAt.Compare(ka.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(kb.ID, ka.ID)
	})
	return xs
}

// jsonArg stores a list as JSON text; a nil list as "[]".
type jsonArg[T any] []T

// Value implements driver.Valuer.
func (a jsonArg[T]) Value() (driver.Value, error) {
	if a == nil {
		return "[]", nil
	}
	b, err := json.Marshal([]T(a))
	if err != nil {
		return nil, fmt.Errorf("encode list: %w", err)
	}
	return string(b), nil
}

// jsonList scans a list stored by jsonArg; an empty list scans as nil.
type jsonList[T any] struct{ p *[]T }

// Scan implements sql.Scanner.
func (s jsonList[T]) Scan(v any) error {
	*s.p = nil
	text, err := jsonText(v)
	if err != nil || text == "" {
		return err
	}
	if err := json.Unmarshal([]byte(text), s.p); err != nil {
		return fmt.Errorf("decode list: %w", err)
	}
	if len(*s.p) == 0 {
		*s.p = nil
	}
	return nil
}

// jsonValue stores a value (statistics) as JSON text.
type jsonValue struct{ v any }

// Value implements driver.Valuer.
func (a jsonValue) Value() (driver.Value, error) {
	b, err := json.Marshal(a.v)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", a.v, err)
	}
	return string(b), nil
}

// jsonObject scans a value stored by jsonValue into the pointer p.
type jsonObject struct{ p any }

// Scan implements sql.Scanner.
func (s jsonObject) Scan(v any) error {
	text, err := jsonText(v)
	if err != nil || text == "" {
		return err
	}
	if err := json.Unmarshal([]byte(text), s.p); err != nil {
		return fmt.Errorf("decode %T: %w", s.p, err)
	}
	return nil
}

func jsonText(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case []byte:
		return string(x), nil
	case nil:
		return "", nil
	}
	return "", fmt.Errorf("scan json: unexpected %T", v)
}
