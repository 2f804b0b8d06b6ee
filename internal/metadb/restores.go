package metadb

import (
	"context"
	"fmt"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/oklog/ulid/v2"
)

const restoreColumns = `id, backup_id, source_client_id, target_client_id, paths, destination, overwrite, state, stats,
	errors, error_message, cancel_requested, created_by, created_at, started_at, finished_at, updated_at`

func scanRestore(row rowScanner) (*coffer.Restore, error) {
	var r coffer.Restore
	err := row.Scan(&r.ID, &r.BackupID, &r.SourceClientID, &r.TargetClientID, jsonList[string]{&r.Paths}, &r.Destination,
		&r.Overwrite, &r.State, jsonObject{&r.Stats}, jsonList[coffer.PathError]{&r.Errors}, &r.Error, &r.CancelRequested,
		&r.CreatedBy, utc{&r.CreatedAt}, nullUTC{&r.StartedAt}, nullUTC{&r.FinishedAt}, utc{&r.UpdatedAt})
	if err != nil {
		return nil, err
	}
	return &r, nil
}

// CreateRestore stores a new restore, assigning its id and timestamps. Its
// State must be queued (the default) or running; a running restore starts
// now.
func (db *DB) CreateRestore(ctx context.Context, r *coffer.Restore) error {
	if err := newJobState(&r.State); err != nil {
		return fmt.Errorf("create restore: %w", err)
	}
	now := db.now()
	r.ID = ulid.Make().String()
	r.CreatedAt, r.UpdatedAt = now, now
	r.StartedAt, r.FinishedAt = nil, nil
	if r.State == coffer.JobRunning {
		r.StartedAt = &now
	}
	_, err := db.sql.ExecContext(ctx, `INSERT INTO restores (`+restoreColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
		$9, $10, $11, $12, $13, $14, $15, $16, $17)`,
		r.ID, r.BackupID, r.SourceClientID, r.TargetClientID, jsonArg[string](r.Paths), r.Destination, r.Overwrite, r.State,
		jsonValue{r.Stats}, jsonArg[coffer.PathError](r.Errors), r.Error, r.CancelRequested, r.CreatedBy,
		r.CreatedAt, r.StartedAt, r.FinishedAt, r.UpdatedAt)
	if err != nil {
		return fmt.Errorf("insert restore: %w", err)
	}
	return nil
}

func errRestoreNotFound(id string) error {
	return coffer.Errorf(coffer.KindNotFound, "restore_not_found", "no restore with id %q", id).With("restore_id", id)
}

// GetRestore returns the restore with the given id, or "restore_not_found".
func (db *DB) GetRestore(ctx context.Context, id string) (*coffer.Restore, error) {
	return restoreJobs.get(ctx, db, id)
}

// StartRestore moves a queued restore that targetClientID writes to
// running. A restore another client writes is "restore_not_found"; one that
// is not queued is a conflict "restore_not_queued".
func (db *DB) StartRestore(ctx context.Context, id, targetClientID string) (*coffer.Restore, error) {
	return restoreJobs.transition(ctx, db, id, func(r *coffer.Restore) error {
		if r.TargetClientID != targetClientID {
			return errRestoreNotFound(id)
		}
		return coffer.Errorf(coffer.KindConflict, "restore_not_queued",
			"restore %s is %s, not queued: only a queued restore can be started", id, r.State).With("state", r.State)
	}, `UPDATE restores SET state = $4, started_at = $5, updated_at = $5
		WHERE id = $1 AND target_client_id = $2 AND state = $3`,
		id, targetClientID, coffer.JobQueued, coffer.JobRunning, db.now())
}

// UpdateRestoreProgress stores the running restore's latest statistics and
// returns it (its CancelRequested tells the agent to stop). A restore that
// is not running is a conflict "restore_not_running".
func (db *DB) UpdateRestoreProgress(ctx context.Context, id string, stats coffer.RestoreStats) (*coffer.Restore, error) {
	return restoreJobs.transition(ctx, db, id, func(r *coffer.Restore) error {
		return coffer.Errorf(coffer.KindConflict, "restore_not_running",
			"restore %s is %s, not running: it takes no more progress reports", id, r.State).With("state", r.State)
	}, `UPDATE restores SET stats = $3, updated_at = $4 WHERE id = $1 AND state = $2`,
		id, coffer.JobRunning, jsonValue{stats}, db.now())
}

// RestoreFinish is the outcome FinishRestore records. Zero Stats keep what
// the restore already has (the last progress report's); Errors and Error
// replace it.
type RestoreFinish struct {
	State  coffer.JobState // succeeded, partial, failed or canceled
	Stats  coffer.RestoreStats
	Errors []coffer.PathError
	Error  string
}

// FinishRestore moves a queued or running restore to its final state and
// returns it. A restore already finished is a conflict "restore_finished".
func (db *DB) FinishRestore(ctx context.Context, id string, f RestoreFinish) (*coffer.Restore, error) {
	if !f.State.Final() {
		return nil, coffer.Errorf(coffer.KindInvalid, "invalid_state",
			"a restore cannot finish in state %q: use succeeded, partial, failed or canceled", f.State).With("state", f.State)
	}
	args := []any{id, coffer.JobQueued, coffer.JobRunning, f.State, jsonArg[coffer.PathError](f.Errors), f.Error, db.now()}
	set := ""
	if f.Stats != (coffer.RestoreStats{}) {
		args = append(args, jsonValue{f.Stats})
		set = ", stats = $8"
	}
	return restoreJobs.transition(ctx, db, id, errRestoreFinished,
		`UPDATE restores SET state = $4, errors = $5, error_message = $6, finished_at = $7, updated_at = $7`+set+`
		WHERE id = $1 AND state IN ($2, $3)`, args...)
}

func errRestoreFinished(r *coffer.Restore) error {
	return coffer.Errorf(coffer.KindConflict, "restore_finished", "restore %s already finished (%s): it can no longer change", r.ID, r.State).With("state", r.State)
}

// RequestRestoreCancel cancels a restore: a queued one is canceled at once,
// a running one gets CancelRequested (its agent stops and reports it
// canceled). A finished restore is a conflict "restore_finished".
func (db *DB) RequestRestoreCancel(ctx context.Context, id string) (*coffer.Restore, error) {
	return restoreJobs.cancel(ctx, db, id)
}

// RestoreFilter selects restores for ListRestores. Zero fields do not
// filter.
type RestoreFilter struct {
	BackupID string
	ClientID string // the source or the target client
	States   []coffer.JobState
	After    *Keyset // the last row of the previous page
	Limit    int     // at most this many (0: no limit)
}

// ListRestores returns restores newest first (created_at, then id,
// descending).
func (db *DB) ListRestores(ctx context.Context, f RestoreFilter) ([]coffer.Restore, error) {
	var w sqlFilter
	if f.BackupID != "" {
		w.add("backup_id = " + w.arg(f.BackupID))
	}
	if f.ClientID != "" {
		a := w.arg(f.ClientID)
		w.add("(source_client_id = " + a + " OR target_client_id = " + a + ")")
	}
	w.states(f.States)
	w.keyset(f.After)
	rows, err := queryAll(ctx, db.sql, scanRestore, `SELECT `+restoreColumns+` FROM restores`+w.where()+
		` ORDER BY created_at DESC, id DESC`+w.page(f.Limit, 0), w.args...)
	if err != nil {
		return nil, fmt.Errorf("list restores: %w", err)
	}
	return deref(rows), nil
}

// FailStaleRestores fails every running restore whose last progress report
// is older than updatedBefore, with Error reason, and returns them. Each
// restore is returned by one call only, even when several replicas run it
// at once.
func (db *DB) FailStaleRestores(ctx context.Context, updatedBefore time.Time, reason string) ([]coffer.Restore, error) {
	return restoreJobs.failStale(ctx, db, updatedBefore, reason)
}

// FailQueuedRestores fails every restore still queued that was created
// before createdBefore (its target's agent never came to run it), with
// Error reason, and returns them newest first. Each restore is returned by
// one call only, even when several replicas run it at once.
func (db *DB) FailQueuedRestores(ctx context.Context, createdBefore time.Time, reason string) ([]coffer.Restore, error) {
	return restoreJobs.failQueued(ctx, db, createdBefore, reason)
}
