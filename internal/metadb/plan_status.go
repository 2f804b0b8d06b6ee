package metadb

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/cofferhq/coffer"
)

// PlanStatus is an enabled plan with what the store knows of how its
// backups go: the scheduler's state, its latest finished backup, its
// latest successful one and the backup its last fire queued. It is what
// the plans service judges whether a plan needs attention by.
type PlanStatus struct {
	Plan coffer.Plan
	// Firing is the scheduler's state; its NextFireAt is nil, as in
	// PlanFirings, when the state was computed from another key than the
	// plan's. HasFiring is false for a plan the scheduler has not seen.
	Firing    coffer.PlanFiring
	HasFiring bool
	// LastFinished is the plan's newest backup that ended (succeeded,
	// partial, failed or canceled); nil when none did.
	LastFinished *JobSummary
	// LastSuccessAt is when the newest of its backups that succeeded or
	// was partial ended; nil when none did.
	LastSuccessAt *time.Time
	// Fired is the backup the last fire queued (Firing.LastBackupID) as it
	// is now; nil when there is none or it was forgotten.
	Fired *JobSummary
}

// JobSummary is the part of a backup that tells how it went.
type JobSummary struct {
	ID         string
	State      coffer.JobState
	CreatedAt  time.Time
	FinishedAt *time.Time
	Error      string
}

// jobSummaryColumns are a JobSummary's columns of backups aliased a.
func jobSummaryColumns(a string) string {
	return a + ".id, " + a + ".state, " + a + ".created_at, " + a + ".finished_at, " + a + ".error_message"
}

// PlanStatuses returns every enabled plan with its status, ordered by name,
// in one query (a join of plans with their scheduler state and, through
// the backups_plan index, their latest backups).
func (db *DB) PlanStatuses(ctx context.Context) ([]PlanStatus, error) {
	var w sqlFilter
	ended := make([]string, 0, 4)
	for _, s := range []coffer.JobState{coffer.JobSucceeded, coffer.JobPartial, coffer.JobFailed, coffer.JobCanceled} {
		ended = append(ended, w.arg(s))
	}
	ok := w.arg(coffer.JobSucceeded) + ", " + w.arg(coffer.JobPartial)
	latest := func(states string) string {
		return `(SELECT b.id FROM backups b WHERE b.plan_id = p.id AND b.state IN (` + states + `)
			ORDER BY b.created_at DESC, b.id DESC LIMIT 1)`
	}
	query := `SELECT ` + prefixColumns("p", planColumns) + `,
		s.plan_id IS NOT NULL, (s.plan_id IS NULL OR ` + keyDiffers("s", "p") + `), s.next_fire_at, s.last_fired_at,
		COALESCE(s.last_outcome, ''), COALESCE(s.last_backup_id, ''), COALESCE(s.last_message, ''),
		` + jobSummaryColumns("lf") + `, ls.finished_at, ` + jobSummaryColumns("fb") + `
		FROM plans p
		LEFT JOIN plan_schedules s ON s.plan_id = p.id
		LEFT JOIN backups lf ON lf.id = ` + latest(strings.Join(ended, ", ")) + `
		LEFT JOIN backups ls ON ls.id = ` + latest(ok) + `
		LEFT JOIN backups fb ON fb.id = s.last_backup_id AND fb.plan_id = p.id
		WHERE p.enabled ORDER BY p.name_key, p.id`
	rows, err := queryAll(ctx, db.sql, scanPlanStatus, query, w.args...)
	if err != nil {
		return nil, fmt.Errorf("read plan statuses: %w", err)
	}
	return rows, nil
}

func scanPlanStatus(row rowScanner) (PlanStatus, error) {
	var st PlanStatus
	var stale bool
	var lf, fb nullJob
	extra := []any{&st.HasFiring, &stale, nullUTC{&st.Firing.NextFireAt}, nullUTC{&st.Firing.LastFiredAt},
		&st.Firing.LastOutcome, &st.Firing.LastBackupID, &st.Firing.LastMessage}
	extra = append(extra, lf.dest()...)
	extra = append(extra, nullUTC{&st.LastSuccessAt})
	extra = append(extra, fb.dest()...)
	p, err := scanPlan(moreColumns{row, extra})
	if err != nil {
		return st, err
	}
	st.Plan = *p
	if st.HasFiring {
		st.Firing.PlanID = p.ID
	}
	if stale {
		st.Firing.NextFireAt = nil
	}
	st.LastFinished, st.Fired = lf.job(), fb.job()
	return st, nil
}

// moreColumns scans a row whose first columns a scan function knows and
// the rest go to extra.
type moreColumns struct {
	row   rowScanner
	extra []any
}

func (m moreColumns) Scan(dest ...any) error { return m.row.Scan(append(dest, m.extra...)...) }

// nullJob scans the JobSummary columns of a LEFT JOIN, NULL when no
// backup matched.
type nullJob struct {
	id, state, err *string
	created        *time.Time
	finished       *time.Time
}

func (j *nullJob) dest() []any {
	return []any{&j.id, &j.state, nullUTC{&j.created}, nullUTC{&j.finished}, &j.err}
}

func (j *nullJob) job() *JobSummary {
	if j.id == nil {
		return nil
	}
	out := &JobSummary{ID: *j.id, State: coffer.JobState(*j.state), FinishedAt: j.finished}
	if j.created != nil {
		out.CreatedAt = *j.created
	}
	if j.err != nil {
		out.Error = *j.err
	}
	return out
}

// prefixColumns qualifies a comma-separated column list with a table alias.
func prefixColumns(alias, cols string) string {
	parts := strings.Split(cols, ",")
	for i, c := range parts {
		parts[i] = alias + "." + strings.TrimSpace(c)
	}
	return strings.Join(parts, ", ")
}
