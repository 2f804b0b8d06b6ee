package metadb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cofferhq/coffer"
)

// ScheduleKey is what a plan's fire times depend on: its schedule, time
// zone, window and whether it is enabled, and its client (a plan whose
// client was deleted stops firing until it names another). A plan's
// firing state is computed from one key; when the plan's key changes, its
// next fire time is computed afresh.
type ScheduleKey struct {
	PlanID   string
	ClientID string
	Schedule string
	Timezone string
	StartAt  *time.Time
	EndAt    *time.Time
	Enabled  bool
}

// ScheduleKeyOf returns the key of plan p as it is now.
func ScheduleKeyOf(p *coffer.Plan) ScheduleKey {
	return ScheduleKey{PlanID: p.ID, ClientID: p.ClientID, Schedule: p.Schedule, Timezone: p.Timezone,
		StartAt: tsPtr(p.StartAt), EndAt: tsPtr(p.EndAt), Enabled: p.Enabled}
}

// Matches reports whether plan p still has key k.
func (k ScheduleKey) Matches(p *coffer.Plan) bool {
	o := ScheduleKeyOf(p)
	return k.PlanID == o.PlanID && k.ClientID == o.ClientID && k.Schedule == o.Schedule && k.Timezone == o.Timezone &&
		k.Enabled == o.Enabled && sameTime(k.StartAt, o.StartAt) && sameTime(k.EndAt, o.EndAt)
}

func sameTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

const scheduleKeyColumns = `client_id, schedule, timezone, start_at, end_at, enabled`

// keyDiffers is the SQL condition "rows a and b have different keys".
func keyDiffers(a, b string) string {
	var c []string
	for _, col := range []string{"client_id", "schedule", "timezone", "enabled"} {
		c = append(c, a+"."+col+" <> "+b+"."+col)
	}
	for _, col := range []string{"start_at", "end_at"} {
		c = append(c, a+"."+col+" IS DISTINCT FROM "+b+"."+col)
	}
	return "(" + strings.Join(c, " OR ") + ")"
}

func scanScheduleKey(row rowScanner, extra ...any) (*ScheduleKey, error) {
	var k ScheduleKey
	dest := append([]any{&k.PlanID, &k.ClientID, &k.Schedule, &k.Timezone, nullUTC{&k.StartAt}, nullUTC{&k.EndAt}, &k.Enabled}, extra...)
	if err := row.Scan(dest...); err != nil {
		return nil, err
	}
	return &k, nil
}

// UnscheduledPlans returns up to limit plans whose firing state is missing
// (new plans) or was computed from another key (edited plans), ordered by
// id. It reads every plan: it costs one join of plans with their states.
func (db *DB) UnscheduledPlans(ctx context.Context, limit int) ([]ScheduleKey, error) {
	var w sqlFilter
	rows, err := queryAll(ctx, db.sql, func(r rowScanner) (*ScheduleKey, error) { return scanScheduleKey(r) },
		`SELECT p.id, p.client_id, p.schedule, p.timezone, p.start_at, p.end_at, p.enabled
		FROM plans p LEFT JOIN plan_schedules s ON s.plan_id = p.id
		WHERE s.plan_id IS NULL OR `+keyDiffers("s", "p")+` ORDER BY p.id`+w.page(limit, 0), w.args...)
	if err != nil {
		return nil, fmt.Errorf("list unscheduled plans: %w", err)
	}
	return deref(rows), nil
}

// SetPlanSchedule stores next (nil: never) as the next fire time of plan
// k.PlanID, computed from key k, keeping what the state says of the last
// fire. It does nothing, and returns false, when the state already has key
// k (another replica got there first) or the plan is gone.
func (db *DB) SetPlanSchedule(ctx context.Context, k ScheduleKey, next *time.Time) (bool, error) {
	res, err := db.sql.ExecContext(ctx, `INSERT INTO plan_schedules (plan_id, `+scheduleKeyColumns+`, next_fire_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
		ON CONFLICT (plan_id) DO UPDATE SET client_id = excluded.client_id, schedule = excluded.schedule,
			timezone = excluded.timezone, start_at = excluded.start_at, end_at = excluded.end_at, enabled = excluded.enabled,
			next_fire_at = excluded.next_fire_at, updated_at = excluded.updated_at
		WHERE `+keyDiffers("plan_schedules", "excluded"),
		k.PlanID, k.ClientID, k.Schedule, k.Timezone, tsPtr(k.StartAt), tsPtr(k.EndAt), k.Enabled, tsPtr(next), db.now())
	if isForeignKeyViolation(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("set schedule of plan %s: %w", k.PlanID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("set schedule of plan %s: %w", k.PlanID, err)
	}
	return n > 0, nil
}

// DueFire is a plan's fire that ClaimDueFires took.
type DueFire struct {
	Key   ScheduleKey // the key the fire time was computed from
	DueAt time.Time   // the fire time that came due
	Next  *time.Time  // the next fire time it was moved to (nil: none)
	// LastOutcome and LastBackupID are what the plan's previous fire
	// recorded.
	LastOutcome  coffer.FireOutcome
	LastBackupID string
}

// ClaimDueFires takes up to limit plans whose next fire time is at or
// before now, earliest first, and moves each to the time advance returns
// for it (nil: it will not fire again until its key changes), in one
// transaction. Each due fire time is claimed by one caller only, even when
// several replicas share the database: PostgreSQL skips the rows another
// transaction holds (FOR UPDATE SKIP LOCKED), SQLite runs one writer at a
// time. advance should return a time after now, so that a plan whose fire
// times passed while nobody claimed them comes due once, not once per
// missed time.
func (db *DB) ClaimDueFires(ctx context.Context, now time.Time, limit int, advance func(ScheduleKey) *time.Time) ([]DueFire, error) {
	var due []DueFire
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		due = nil
		var w sqlFilter
		cond := "next_fire_at <= " + w.arg(ts(now))
		rows, err := queryAll(ctx, tx, func(r rowScanner) (*DueFire, error) {
			var d DueFire
			k, err := scanScheduleKey(r, utc{&d.DueAt}, &d.LastOutcome, &d.LastBackupID)
			if err != nil {
				return nil, err
			}
			d.Key = *k
			return &d, nil
		}, `SELECT plan_id, `+scheduleKeyColumns+`, next_fire_at, last_outcome, last_backup_id FROM plan_schedules WHERE `+cond+
			` ORDER BY next_fire_at, plan_id`+w.page(limit, 0)+db.skipLocked(), w.args...)
		if err != nil {
			return fmt.Errorf("select due plans: %w", err)
		}
		for _, d := range rows {
			d.Next = tsPtr(advance(d.Key))
			if _, err := tx.ExecContext(ctx, `UPDATE plan_schedules SET next_fire_at = $2, updated_at = $3 WHERE plan_id = $1`,
				d.Key.PlanID, d.Next, db.now()); err != nil {
				return fmt.Errorf("advance plan %s: %w", d.Key.PlanID, err)
			}
			due = append(due, *d)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("claim due plans: %w", err)
	}
	return due, nil
}

// skipLocked is the row-lock suffix of a SELECT that claims work: rows
// another transaction holds are passed over rather than waited for.
// SQLite needs none: its transactions take the database write lock at
// BEGIN.
func (db *DB) skipLocked() string {
	if db.dialect == Postgres {
		return " FOR UPDATE SKIP LOCKED"
	}
	return ""
}

// FireRecord is what came of a claimed fire.
type FireRecord struct {
	At       time.Time // when it was handled
	Outcome  coffer.FireOutcome
	BackupID string // the backup queued, or the active one that made it skip
	Message  string
	// Stop clears the plan's next fire time, so that it fires no more
	// until its key changes: its client is gone. It is ignored when the
	// plan names another client by now.
	Stop bool
}

// RecordFire stores what came of the fire of plan k.PlanID claimed with
// key k. A plan deleted meanwhile is no error.
func (db *DB) RecordFire(ctx context.Context, k ScheduleKey, r FireRecord) error {
	set, args := "", []any{k.PlanID, ts(r.At), r.Outcome, r.BackupID, r.Message, db.now()}
	if r.Stop {
		set = ", next_fire_at = CASE WHEN client_id = $7 THEN NULL ELSE next_fire_at END"
		args = append(args, k.ClientID)
	}
	_, err := db.sql.ExecContext(ctx, `UPDATE plan_schedules SET last_fired_at = $2, last_outcome = $3, last_backup_id = $4,
		last_message = $5, updated_at = $6`+set+` WHERE plan_id = $1`, args...)
	if err != nil {
		return fmt.Errorf("record fire of plan %s: %w", k.PlanID, err)
	}
	return nil
}

// PlanFirings returns the firing state of the given plans that have one.
// A state computed from another key than the plan's (the plan was just
// created or changed and the scheduler has not caught up) has no next fire
// time yet.
func (db *DB) PlanFirings(ctx context.Context, planIDs []string) (map[string]coffer.PlanFiring, error) {
	out := make(map[string]coffer.PlanFiring, len(planIDs))
	if len(planIDs) == 0 {
		return out, nil
	}
	var w sqlFilter
	ids := in(&w, planIDs)
	rows, err := queryAll(ctx, db.sql, func(r rowScanner) (*coffer.PlanFiring, error) {
		var f coffer.PlanFiring
		var stale bool
		if err := r.Scan(&f.PlanID, &stale, nullUTC{&f.NextFireAt}, nullUTC{&f.LastFiredAt}, &f.LastOutcome,
			&f.LastBackupID, &f.LastMessage); err != nil {
			return nil, err
		}
		if stale {
			f.NextFireAt = nil
		}
		return &f, nil
	}, `SELECT s.plan_id, `+keyDiffers("s", "p")+`, s.next_fire_at, s.last_fired_at, s.last_outcome, s.last_backup_id, s.last_message
		FROM plan_schedules s JOIN plans p ON p.id = s.plan_id WHERE s.plan_id IN (`+ids+`)`, w.args...)
	if err != nil {
		return nil, fmt.Errorf("read plan firing states: %w", err)
	}
	for _, f := range rows {
		out[f.PlanID] = *f
	}
	return out, nil
}

// errPlanBackupActive is the conflict of queuing a backup of a plan that
// has one queued or running; it names that backup when it still exists.
func (db *DB) errPlanBackupActive(ctx context.Context, planID string) error {
	var id string
	var state coffer.JobState
	err := db.sql.QueryRowContext(ctx, `SELECT id, state FROM backups WHERE plan_id = $1 AND state IN ($2, $3)`,
		planID, coffer.JobQueued, coffer.JobRunning).Scan(&id, &state)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("read the active backup of plan %s: %w", planID, err)
	}
	if id == "" { // it ended in between
		return coffer.Errorf(coffer.KindConflict, "plan_backup_active",
			"a backup of plan %s was queued or running: a plan runs one backup at a time; try again", planID).
			With("plan_id", planID)
	}
	return coffer.Errorf(coffer.KindConflict, "plan_backup_active",
		"plan %s already has backup %s %s: a plan runs one backup at a time; wait for it to finish, or cancel it", planID, id, state).
		With("plan_id", planID).With("backup_id", id).With("state", state)
}
