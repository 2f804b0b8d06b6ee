package metadb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/cofferhq/coffer"
)

// jobTable is what the two job tables, backups and restores, share: a row
// read by id, conditional state transitions, cancel, and the sweep of jobs
// whose agent stopped reporting. Their columns differ; this SQL does not.
type jobTable[T any] struct {
	table    string // "backups"
	noun     string // "backup", in error messages
	columns  string
	scan     func(rowScanner) (*T, error)
	notFound func(id string) error
	finished func(*T) error // the conflict of changing a finished job
	key      func(T) Keyset
}

var (
	backupJobs = jobTable[coffer.Backup]{table: "backups", noun: "backup", columns: backupColumns, scan: scanBackup,
		notFound: errBackupNotFound, finished: errBackupFinished,
		key: func(b coffer.Backup) Keyset { return Keyset{b.CreatedAt, b.ID} }}
	restoreJobs = jobTable[coffer.Restore]{table: "restores", noun: "restore", columns: restoreColumns, scan: scanRestore,
		notFound: errRestoreNotFound, finished: errRestoreFinished,
		key: func(r coffer.Restore) Keyset { return Keyset{r.CreatedAt, r.ID} }}
)

// get returns the job with the given id, or the table's not-found error.
func (t jobTable[T]) get(ctx context.Context, db *DB, id string) (*T, error) {
	j, err := t.scan(db.sql.QueryRowContext(ctx, `SELECT `+t.columns+` FROM `+t.table+` WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, t.notFound(id)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", t.noun, err)
	}
	return j, nil
}

// transition runs a conditional UPDATE (or DELETE) … RETURNING of one
// job. When it matches no row, refuse says why from the job as it is.
func (t jobTable[T]) transition(ctx context.Context, db *DB, id string, refuse func(*T) error, query string, args ...any) (*T, error) {
	j, err := t.scan(db.sql.QueryRowContext(ctx, query+` RETURNING `+t.columns, args...))
	if errors.Is(err, sql.ErrNoRows) {
		cur, err := t.get(ctx, db, id)
		if err != nil {
			return nil, err
		}
		return nil, refuse(cur)
	}
	if err != nil {
		return nil, fmt.Errorf("change %s %s: %w", t.noun, id, err)
	}
	return j, nil
}

// cancel cancels a job: a queued one is canceled at once, a running one
// gets cancel_requested (its agent stops and reports it canceled). A
// finished job is the table's conflict.
func (t jobTable[T]) cancel(ctx context.Context, db *DB, id string) (*T, error) {
	return t.transition(ctx, db, id, t.finished, `UPDATE `+t.table+` SET
		state = CASE WHEN state = $2 THEN $4 ELSE state END,
		cancel_requested = CASE WHEN state = $3 THEN $5 ELSE cancel_requested END,
		error_message = CASE WHEN state = $2 THEN $6 ELSE error_message END,
		finished_at = CASE WHEN state = $2 THEN $7 ELSE finished_at END,
		updated_at = CASE WHEN state = $2 THEN $7 ELSE updated_at END
		WHERE id = $1 AND state IN ($2, $3)`,
		id, coffer.JobQueued, coffer.JobRunning, coffer.JobCanceled, true, canceledBeforeStart, db.now())
}

// failStale fails every running job whose last progress report is older
// than updatedBefore, with error reason, and returns them newest first.
// Each job is returned by one call only, even when several replicas sweep
// at once.
func (t jobTable[T]) failStale(ctx context.Context, db *DB, updatedBefore time.Time, reason string) ([]T, error) {
	return t.failOlder(ctx, db, coffer.JobRunning, "updated_at", updatedBefore, reason)
}

// failQueued fails every job still queued that was created before
// createdBefore (its agent never came to run it), with error reason, and
// returns them newest first, each by one call only.
func (t jobTable[T]) failQueued(ctx context.Context, db *DB, createdBefore time.Time, reason string) ([]T, error) {
	return t.failOlder(ctx, db, coffer.JobQueued, "created_at", createdBefore, reason)
}

// failOlder fails the jobs in state whose column (a timestamp) is before
// before, in one conditional update, and returns them newest first.
func (t jobTable[T]) failOlder(ctx context.Context, db *DB, state coffer.JobState, column string, before time.Time, reason string) ([]T, error) {
	rows, err := queryAll(ctx, db.sql, t.scan, `UPDATE `+t.table+` SET state = $1, error_message = $2, finished_at = $3, updated_at = $3
		WHERE state = $4 AND `+column+` < $5 RETURNING `+t.columns,
		coffer.JobFailed, reason, db.now(), state, ts(before))
	if err != nil {
		return nil, fmt.Errorf("fail %s %s: %w", state, t.table, err)
	}
	return sortNewestFirst(deref(rows), t.key), nil
}
