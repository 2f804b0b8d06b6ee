package metadb

import (
	"context"
	"fmt"
	"time"

	"github.com/cofferhq/coffer"
)

// This file keeps the history of backups and restores: forgetting records,
// the marks of the retention runner and the throttle of progress events.

// DeleteBackup deletes a finished backup's record and returns it. A queued
// or running backup is a conflict "backup_active"; a missing one
// "backup_not_found". Of concurrent deletes of one backup, one succeeds.
// It does not touch the repository: forget the snapshot first.
func (db *DB) DeleteBackup(ctx context.Context, id string) (*coffer.Backup, error) {
	return backupJobs.deleteFinished(ctx, db, id, func(b *coffer.Backup) error {
		return coffer.Errorf(coffer.KindConflict, "backup_active",
			"backup %s is %s: cancel it first (POST /api/v1/backups/%s/cancel), then forget it", b.ID, b.State, b.ID).
			With("state", b.State)
	})
}

// DeleteRestore deletes a finished restore's record and returns it. A
// queued or running restore is a conflict "restore_active"; a missing one
// "restore_not_found".
func (db *DB) DeleteRestore(ctx context.Context, id string) (*coffer.Restore, error) {
	return restoreJobs.deleteFinished(ctx, db, id, func(r *coffer.Restore) error {
		return coffer.Errorf(coffer.KindConflict, "restore_active",
			"restore %s is %s: cancel it first (POST /api/v1/restores/%s/cancel), then delete it", r.ID, r.State, r.ID).
			With("state", r.State)
	})
}

// deleteFinished deletes a job in a final state. When none is deleted,
// active says why from the job as it is (not found is the table's error).
func (t jobTable[T]) deleteFinished(ctx context.Context, db *DB, id string, active func(*T) error) (*T, error) {
	return t.transition(ctx, db, id, active, `DELETE FROM `+t.table+` WHERE id = $1 AND state IN ($2, $3, $4, $5)`,
		id, coffer.JobSucceeded, coffer.JobPartial, coffer.JobFailed, coffer.JobCanceled)
}

// RetentionDue returns the backups marked RetentionDue when they committed
// and not cleared since, by plan id.
func (db *DB) RetentionDue(ctx context.Context) (map[string][]string, error) {
	rows, err := db.sql.QueryContext(ctx, `SELECT plan_id, id FROM backups WHERE retention_pending ORDER BY plan_id, id`)
	if err != nil {
		return nil, fmt.Errorf("list backups due for retention: %w", err)
	}
	defer rows.Close()
	out := map[string][]string{}
	for rows.Next() {
		var plan, id string
		if err := rows.Scan(&plan, &id); err != nil {
			return nil, fmt.Errorf("list backups due for retention: %w", err)
		}
		out[plan] = append(out[plan], id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list backups due for retention: %w", err)
	}
	return out, nil
}

// ClearRetentionDue removes the retention mark of the given backups (those
// that are gone are skipped).
func (db *DB) ClearRetentionDue(ctx context.Context, ids []string) error {
	const batch = 500
	for len(ids) > 0 {
		n := min(len(ids), batch)
		var w sqlFilter
		w.arg(false)
		if _, err := db.sql.ExecContext(ctx, `UPDATE backups SET retention_pending = $1 WHERE id IN (`+
			in(&w, ids[:n])+`)`, w.args...); err != nil {
			return fmt.Errorf("clear retention marks: %w", err)
		}
		ids = ids[n:]
	}
	return nil
}

// ClaimBackupProgressEvent reports whether the caller may publish a
// progress event of running backup id now: none was claimed in the last
// every. Of concurrent callers, on any replica, at most one wins an
// interval. A backup that is not running (or does not exist) is not
// claimed.
func (db *DB) ClaimBackupProgressEvent(ctx context.Context, id string, every time.Duration) (bool, error) {
	return db.claimProgressEvent(ctx, "backups", id, every)
}

// ClaimRestoreProgressEvent is ClaimBackupProgressEvent for a restore.
func (db *DB) ClaimRestoreProgressEvent(ctx context.Context, id string, every time.Duration) (bool, error) {
	return db.claimProgressEvent(ctx, "restores", id, every)
}

func (db *DB) claimProgressEvent(ctx context.Context, table, id string, every time.Duration) (bool, error) {
	now := db.now()
	res, err := db.sql.ExecContext(ctx, `UPDATE `+table+` SET progress_event_at = $2
		WHERE id = $1 AND state = $3 AND (progress_event_at IS NULL OR progress_event_at <= $4)`,
		id, now, coffer.JobRunning, ts(now.Add(-every)))
	if err != nil {
		return false, fmt.Errorf("claim progress event of %s %s: %w", table, id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("claim progress event of %s %s: %w", table, id, err)
	}
	return n == 1, nil
}
