-- The scheduler's state of each plan, and one active backup per plan.
--
-- plan_schedules holds when a plan fires next and what came of its last
-- fire. client_id, schedule, timezone, start_at, end_at and enabled are
-- copies of the plan's columns that next_fire_at was computed from: a plan
-- whose copy differs (it was edited) or that has no row (it is new) gets its
-- next fire time computed afresh from now. next_fire_at is NULL when the plan
-- will not fire. The row goes with its plan (ON DELETE CASCADE).
-- Timestamps are TIMESTAMPTZ (microseconds, like the SQLite schema).
--
-- A plan runs one backup at a time: at most one of its backups is queued or
-- running (backups_plan_active). Duplicates from before this migration are
-- failed, all but the oldest of each plan.

-- +goose Up
CREATE TABLE plan_schedules (
    plan_id        TEXT PRIMARY KEY REFERENCES plans (id) ON DELETE CASCADE,
    client_id      TEXT NOT NULL,
    schedule       TEXT NOT NULL,
    timezone       TEXT NOT NULL,
    start_at       TIMESTAMPTZ,
    end_at         TIMESTAMPTZ,
    enabled        BOOLEAN NOT NULL,
    next_fire_at   TIMESTAMPTZ,
    last_fired_at  TIMESTAMPTZ,
    last_outcome   TEXT NOT NULL DEFAULT '',
    last_backup_id TEXT NOT NULL DEFAULT '',
    last_message   TEXT NOT NULL DEFAULT '',
    updated_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX plan_schedules_due ON plan_schedules (next_fire_at);

UPDATE backups SET state = 'failed', finished_at = updated_at,
    error_message = 'a plan runs one backup at a time: this one was queued beside another of the same plan before the server upgrade'
WHERE plan_id <> '' AND state IN ('queued', 'running') AND EXISTS (
    SELECT 1 FROM backups AS o
    WHERE o.plan_id = backups.plan_id AND o.state IN ('queued', 'running')
      AND (o.created_at < backups.created_at OR (o.created_at = backups.created_at AND o.id < backups.id)));
CREATE UNIQUE INDEX backups_plan_active ON backups (plan_id) WHERE plan_id <> '' AND state IN ('queued', 'running');

-- +goose Down
DROP INDEX backups_plan_active;
DROP TABLE plan_schedules;
