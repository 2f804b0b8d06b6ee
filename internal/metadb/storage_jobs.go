package metadb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/oklog/ulid/v2"
)

// Repository jobs — verifies and garbage collections — run on one replica
// at a time per repository and kind: a partial unique index admits one
// running job of a kind per repository. The replica running a job renews
// its heartbeat; FailStaleRepositoryJobs ends the jobs whose replica
// stopped doing so.

const repositoryJobColumns = `id, repository_id, kind, state, verify_data, sample_percent, dry_run, result, created_by,
	created_at, heartbeat_at, finished_at`

func scanRepositoryJob(row rowScanner) (*coffer.RepositoryJob, error) {
	var j coffer.RepositoryJob
	err := row.Scan(&j.ID, &j.RepositoryID, &j.Kind, &j.State, &j.VerifyData, &j.SamplePercent, &j.DryRun,
		optionalJSON[coffer.MaintenanceResult]{&j.Result}, &j.CreatedBy, utc{&j.CreatedAt}, utc{&j.HeartbeatAt}, nullUTC{&j.FinishedAt})
	if err != nil {
		return nil, err
	}
	return &j, nil
}

func errRepositoryJobNotFound(id string) error {
	return coffer.Errorf(coffer.KindNotFound, "repository_job_not_found", "no repository job with id %q", id).With("job_id", id)
}

// CreateRepositoryJob stores a new running job, assigning its ID,
// CreatedAt and HeartbeatAt. A job of the same kind already running on
// the repository is a conflict "repository_job_running" (metadata job_id:
// the running one); an unknown repository is "repository_not_found".
func (db *DB) CreateRepositoryJob(ctx context.Context, j *coffer.RepositoryJob) error {
	out := *j
	now := db.now()
	out.ID = ulid.Make().String()
	out.State, out.CreatedAt, out.HeartbeatAt, out.FinishedAt, out.Result = coffer.JobRunning, now, now, nil, nil
	_, err := db.sql.ExecContext(ctx, `INSERT INTO repository_jobs (`+repositoryJobColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
		out.ID, out.RepositoryID, out.Kind, out.State, out.VerifyData, out.SamplePercent, out.DryRun,
		optionalJSON[coffer.MaintenanceResult]{&out.Result}, out.CreatedBy, out.CreatedAt, out.HeartbeatAt, out.FinishedAt)
	switch {
	case isUniqueViolation(err):
		running := ""
		db.sql.QueryRowContext(ctx, `SELECT id FROM repository_jobs WHERE repository_id = $1 AND kind = $2 AND state = $3`,
			out.RepositoryID, out.Kind, coffer.JobRunning).Scan(&running)
		return coffer.Errorf(coffer.KindConflict, "repository_job_running",
			"a %s job is already running on repository %s: wait until it ends (its result is published as an event and kept on the repository)",
			out.Kind, out.RepositoryID).With("repository_id", out.RepositoryID).With("job_id", running)
	case isForeignKeyViolation(err):
		return errRepositoryNotFound(out.RepositoryID)
	case err != nil:
		return fmt.Errorf("insert repository job: %w", err)
	}
	*j = out
	return nil
}

// GetRepositoryJob returns the job with the given id, or
// "repository_job_not_found".
func (db *DB) GetRepositoryJob(ctx context.Context, id string) (*coffer.RepositoryJob, error) {
	j, err := scanRepositoryJob(db.sql.QueryRowContext(ctx, `SELECT `+repositoryJobColumns+` FROM repository_jobs WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errRepositoryJobNotFound(id)
	}
	if err != nil {
		return nil, fmt.Errorf("read repository job: %w", err)
	}
	return j, nil
}

// RunningRepositoryJobs returns the running jobs, oldest first: of
// repository id, or of every repository when id is "".
func (db *DB) RunningRepositoryJobs(ctx context.Context, id string) ([]coffer.RepositoryJob, error) {
	var w sqlFilter
	w.add("state = " + w.arg(coffer.JobRunning))
	if id != "" {
		w.add("repository_id = " + w.arg(id))
	}
	rows, err := queryAll(ctx, db.sql, scanRepositoryJob, `SELECT `+repositoryJobColumns+` FROM repository_jobs`+w.where()+
		` ORDER BY created_at, id`, w.args...)
	if err != nil {
		return nil, fmt.Errorf("list running repository jobs: %w", err)
	}
	return deref(rows), nil
}

// HeartbeatRepositoryJob records that the replica running job id is alive.
// A job that is no longer running is a conflict "repository_job_finished"
// (FailStaleRepositoryJobs may have ended it).
func (db *DB) HeartbeatRepositoryJob(ctx context.Context, id string) error {
	res, err := db.sql.ExecContext(ctx, `UPDATE repository_jobs SET heartbeat_at = $3 WHERE id = $1 AND state = $2`,
		id, coffer.JobRunning, db.now())
	if err != nil {
		return fmt.Errorf("heartbeat of repository job %s: %w", id, err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return errJobFinished(id)
	}
	return nil
}

func errJobFinished(id string) error {
	return coffer.Errorf(coffer.KindConflict, "repository_job_finished", "repository job %s is no longer running", id).With("job_id", id)
}

// FinishRepositoryJob ends running job id with state (succeeded or failed)
// and result, and records result on its repository as the last verify or
// last GC, in one transaction. It returns the finished job. A job that is
// not running is a conflict "repository_job_finished".
func (db *DB) FinishRepositoryJob(ctx context.Context, id string, state coffer.JobState, result *coffer.MaintenanceResult) (*coffer.RepositoryJob, error) {
	if state != coffer.JobSucceeded && state != coffer.JobFailed {
		return nil, fmt.Errorf("finish repository job %s: state %q is not succeeded or failed", id, state)
	}
	var j *coffer.RepositoryJob
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		j, err = scanRepositoryJob(tx.QueryRowContext(ctx, `UPDATE repository_jobs SET state = $3, result = $4, finished_at = $5
			WHERE id = $1 AND state = $2 RETURNING `+repositoryJobColumns,
			id, coffer.JobRunning, state, optionalJSON[coffer.MaintenanceResult]{&result}, db.now()))
		if errors.Is(err, sql.ErrNoRows) {
			var one int
			if err := tx.QueryRowContext(ctx, `SELECT 1 FROM repository_jobs WHERE id = $1`, id).Scan(&one); errors.Is(err, sql.ErrNoRows) {
				return errRepositoryJobNotFound(id)
			}
			return errJobFinished(id)
		}
		if err != nil {
			return fmt.Errorf("finish repository job %s: %w", id, err)
		}
		column := "last_verify"
		if j.Kind == coffer.JobGC {
			column = "last_gc"
		}
		if _, err := tx.ExecContext(ctx, `UPDATE repositories SET `+column+` = $2 WHERE id = $1`, j.RepositoryID,
			optionalJSON[coffer.MaintenanceResult]{&result}); err != nil {
			return fmt.Errorf("record the result of job %s on repository %s: %w", id, j.RepositoryID, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return j, nil
}

// FailStaleRepositoryJobs fails the running jobs whose heartbeat is older
// than before — their replica stopped or lost the database — recording
// reason as their error, and returns them.
func (db *DB) FailStaleRepositoryJobs(ctx context.Context, before time.Time, reason string) ([]coffer.RepositoryJob, error) {
	stale, err := queryAll(ctx, db.sql, scanRepositoryJob, `SELECT `+repositoryJobColumns+` FROM repository_jobs
		WHERE state = $1 AND heartbeat_at < $2 ORDER BY created_at, id`, coffer.JobRunning, ts(before))
	if err != nil {
		return nil, fmt.Errorf("list stale repository jobs: %w", err)
	}
	var out []coffer.RepositoryJob
	for _, j := range stale {
		res := &coffer.MaintenanceResult{JobID: j.ID, Error: reason, StartedAt: j.CreatedAt, FinishedAt: db.now(),
			Summary: fmt.Sprintf("The %s did not finish: %s.", j.Kind, reason)}
		done, err := db.FinishRepositoryJob(ctx, j.ID, coffer.JobFailed, res)
		if coffer.IsKind(err, coffer.KindConflict) || coffer.IsKind(err, coffer.KindNotFound) {
			continue // it finished, or another replica failed it, meanwhile
		}
		if err != nil {
			return out, err
		}
		out = append(out, *done)
	}
	return out, nil
}
