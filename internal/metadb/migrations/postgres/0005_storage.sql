-- Storage: S3-compatible endpoints, the repositories backups live in, and
-- the verify and garbage collection jobs run on them.
--
-- A repository's id is its engine config id (the same as engine_repos'
-- repository_id). Its credentials are an opaque blob the storage service
-- sealed with the master key. last_verify and last_gc are JSON text (the
-- outcome of the latest job of each kind). name_key is the lower-cased
-- name: names are unique in any letter case. At most one repository is
-- the default, and at most one job of a kind runs on a repository at a time
-- (partial unique indexes). An endpoint cannot be deleted while a
-- repository uses it (the foreign key has no ON DELETE action); a
-- repository's jobs go with it.
-- backups_repository and plans_repository serve the "still in use" check
-- before a repository is deleted.
-- Timestamps are TIMESTAMPTZ (microseconds, like the SQLite schema).

-- +goose Up
CREATE TABLE endpoints (
    id           TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    name_key     TEXT NOT NULL,
    url          TEXT NOT NULL,
    https        BOOLEAN NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('s3', 'ceph', 'minio', 'aws')),
    region       TEXT NOT NULL DEFAULT '',
    addressing   TEXT NOT NULL CHECK (addressing IN ('path', 'virtual')),
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX endpoints_name ON endpoints (name_key);

CREATE TABLE repositories (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    name_key      TEXT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('local', 's3')),
    path          TEXT NOT NULL DEFAULT '',
    endpoint_id   TEXT REFERENCES endpoints (id),
    bucket        TEXT NOT NULL DEFAULT '',
    prefix        TEXT NOT NULL DEFAULT '',
    credentials   BYTEA,
    quota_bytes   BIGINT NOT NULL DEFAULT 0,
    quota_level   INTEGER NOT NULL DEFAULT 0,
    encrypted     BOOLEAN NOT NULL,
    chunker       TEXT NOT NULL DEFAULT '{}',
    is_default    BOOLEAN NOT NULL DEFAULT FALSE,
    last_verify   TEXT NOT NULL DEFAULT '',
    last_gc       TEXT NOT NULL DEFAULT '',
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX repositories_name ON repositories (name_key);
CREATE UNIQUE INDEX repositories_default ON repositories (is_default) WHERE is_default;
CREATE INDEX repositories_endpoint ON repositories (endpoint_id);

CREATE TABLE repository_jobs (
    id             TEXT PRIMARY KEY,
    repository_id  TEXT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    kind           TEXT NOT NULL CHECK (kind IN ('verify', 'gc')),
    state          TEXT NOT NULL CHECK (state IN ('running', 'succeeded', 'failed')),
    verify_data    BOOLEAN NOT NULL DEFAULT FALSE,
    sample_percent DOUBLE PRECISION NOT NULL DEFAULT 0,
    dry_run        BOOLEAN NOT NULL DEFAULT FALSE,
    result         TEXT NOT NULL DEFAULT '',
    created_by     TEXT NOT NULL DEFAULT '',
    created_at     TIMESTAMPTZ NOT NULL,
    heartbeat_at   TIMESTAMPTZ NOT NULL,
    finished_at    TIMESTAMPTZ
);
CREATE UNIQUE INDEX repository_jobs_running ON repository_jobs (repository_id, kind) WHERE state = 'running';
CREATE INDEX repository_jobs_repository ON repository_jobs (repository_id, created_at);
CREATE INDEX repository_jobs_heartbeat ON repository_jobs (state, heartbeat_at);

CREATE INDEX backups_repository ON backups (repository_id);
CREATE INDEX plans_repository ON plans (repository_id);

-- +goose Down
DROP INDEX plans_repository;
DROP INDEX backups_repository;
DROP TABLE repository_jobs;
DROP TABLE repositories;
DROP TABLE endpoints;
