-- The Freezer metadata of backups (seed 002), the marks of the retention
-- runner, and the throttle of progress events.
--
-- level and backup_session place a committed backup in its chain: level 0
-- read every file, level n trusted the change cache of a chain of n
-- backups back to the full one whose id is backup_session. backup_name,
-- client_os, agent_version, compression and encrypted are copied when the
-- backup ends, so they stay true after the plan is renamed or the agent
-- upgraded. retention_pending marks a plan's backup that committed and whose
-- plan's retention has not run since. progress_event_at is when the last
-- progress event of a running job was published (NULL: none yet).
--
-- Committed backups from before this migration get their level and session
-- from their parent_id chains; a chain whose first backup was forgotten
-- starts at level 1 with no session.

-- +goose Up
ALTER TABLE backups ADD COLUMN level INTEGER NOT NULL DEFAULT 0;
ALTER TABLE backups ADD COLUMN backup_session TEXT NOT NULL DEFAULT '';
ALTER TABLE backups ADD COLUMN backup_name TEXT NOT NULL DEFAULT '';
ALTER TABLE backups ADD COLUMN client_os TEXT NOT NULL DEFAULT '';
ALTER TABLE backups ADD COLUMN agent_version TEXT NOT NULL DEFAULT '';
ALTER TABLE backups ADD COLUMN compression TEXT NOT NULL DEFAULT '';
ALTER TABLE backups ADD COLUMN encrypted BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE backups ADD COLUMN retention_pending BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE backups ADD COLUMN progress_event_at TIMESTAMPTZ;
ALTER TABLE restores ADD COLUMN progress_event_at TIMESTAMPTZ;
CREATE INDEX backups_retention_pending ON backups (plan_id) WHERE retention_pending;

WITH RECURSIVE chain (id, session, lvl) AS (
    SELECT id, CASE WHEN parent_id = '' OR full_scan THEN id ELSE '' END,
        CASE WHEN parent_id = '' OR full_scan THEN 0 ELSE 1 END
    FROM backups
    WHERE snapshot_id <> '' AND (parent_id = '' OR full_scan OR parent_id NOT IN (SELECT id FROM backups))
    UNION ALL
    SELECT b.id, c.session, c.lvl + 1 FROM backups b JOIN chain c ON b.parent_id = c.id
    WHERE b.snapshot_id <> '' AND NOT b.full_scan AND c.lvl < 1000000
)
UPDATE backups SET level = chain.lvl, backup_session = chain.session
FROM chain WHERE backups.id = chain.id;

-- +goose Down
DROP INDEX backups_retention_pending;
ALTER TABLE restores DROP COLUMN progress_event_at;
ALTER TABLE backups DROP COLUMN progress_event_at;
ALTER TABLE backups DROP COLUMN retention_pending;
ALTER TABLE backups DROP COLUMN encrypted;
ALTER TABLE backups DROP COLUMN compression;
ALTER TABLE backups DROP COLUMN agent_version;
ALTER TABLE backups DROP COLUMN client_os;
ALTER TABLE backups DROP COLUMN backup_name;
ALTER TABLE backups DROP COLUMN backup_session;
ALTER TABLE backups DROP COLUMN level;
