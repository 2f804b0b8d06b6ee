-- Backup plans: what to back up on which client, into which repository,
-- when, and how long to keep it.
--
-- Path, pattern and command lists and the retention policy are JSON text.
-- name_key is the lower-cased name: plan names are unique in any letter
-- case. A plan names its client without a foreign key: deleting a client
-- must not drop its plans silently, so the service checks for them first.
-- A plan's creator is cleared when that user is deleted (ON DELETE SET NULL).
-- Timestamps are INTEGER microseconds since the epoch in UTC.

-- +goose Up
CREATE TABLE plans (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    name_key         TEXT NOT NULL,
    group_name       TEXT NOT NULL DEFAULT '',
    client_id        TEXT NOT NULL,
    repository_id    TEXT NOT NULL DEFAULT '',
    schedule         TEXT NOT NULL DEFAULT '',
    timezone         TEXT NOT NULL DEFAULT '',
    start_at         TIMESTAMP,
    end_at           TIMESTAMP,
    include_paths    TEXT NOT NULL DEFAULT '[]',
    exclude_patterns TEXT NOT NULL DEFAULT '[]',
    pre_commands     TEXT NOT NULL DEFAULT '[]',
    post_commands    TEXT NOT NULL DEFAULT '[]',
    retention        TEXT NOT NULL DEFAULT '{}',
    compression      TEXT NOT NULL DEFAULT '',
    full_every       INTEGER NOT NULL DEFAULT 0,
    one_fs           BOOLEAN NOT NULL DEFAULT FALSE,
    enabled          BOOLEAN NOT NULL DEFAULT TRUE,
    created_by       TEXT REFERENCES users (id) ON DELETE SET NULL,
    created_at       TIMESTAMP NOT NULL,
    updated_at       TIMESTAMP NOT NULL
);
CREATE UNIQUE INDEX plans_name ON plans (name_key);
CREATE INDEX plans_client ON plans (client_id);
CREATE INDEX plans_group ON plans (group_name);
CREATE INDEX plans_created_by ON plans (created_by);

-- +goose Down
DROP TABLE plans;
