-- Enrolled clients, their enrollment tokens, backup and restore jobs, and
-- the command queue of the agents.
--
-- Lists of strings (paths, addresses) and job statistics and errors are JSON
-- text. Backups and restores keep naming their client after it is deleted:
-- they are history, so they have no foreign key to clients. A client's owner
-- is cleared when that user is deleted; a user's enrollment tokens go with
-- the user. Timestamps are INTEGER microseconds since the epoch in UTC.

-- +goose Up
CREATE TABLE clients (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    name_key        TEXT NOT NULL,
    hostname        TEXT NOT NULL DEFAULT '',
    os              TEXT NOT NULL DEFAULT '',
    arch            TEXT NOT NULL DEFAULT '',
    ipv4            TEXT NOT NULL DEFAULT '[]',
    ipv6            TEXT NOT NULL DEFAULT '[]',
    agent_version   TEXT NOT NULL DEFAULT '',
    owner_id        TEXT REFERENCES users (id) ON DELETE SET NULL,
    status          TEXT NOT NULL CHECK (status IN ('online', 'offline')),
    credential_hash TEXT NOT NULL UNIQUE,
    last_seen_at    TIMESTAMP,
    created_at      TIMESTAMP NOT NULL,
    updated_at      TIMESTAMP NOT NULL
);
CREATE INDEX clients_name ON clients (name_key, id);
CREATE INDEX clients_status ON clients (status, last_seen_at);
CREATE INDEX clients_owner ON clients (owner_id);

CREATE TABLE enrollment_tokens (
    id         TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL DEFAULT '',
    created_by TEXT REFERENCES users (id) ON DELETE CASCADE,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    used_at    TIMESTAMP,
    client_id  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX enrollment_tokens_created_by ON enrollment_tokens (created_by);
CREATE INDEX enrollment_tokens_expires_at ON enrollment_tokens (expires_at);

CREATE TABLE backups (
    id               TEXT PRIMARY KEY,
    client_id        TEXT NOT NULL,
    plan_id          TEXT NOT NULL DEFAULT '',
    repository_id    TEXT NOT NULL DEFAULT '',
    trigger_kind     TEXT NOT NULL DEFAULT '',
    state            TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'partial', 'failed', 'canceled')),
    paths            TEXT NOT NULL DEFAULT '[]',
    exclude          TEXT NOT NULL DEFAULT '[]',
    full_scan        BOOLEAN NOT NULL DEFAULT FALSE,
    one_fs           BOOLEAN NOT NULL DEFAULT FALSE,
    host_name        TEXT NOT NULL DEFAULT '',
    snapshot_id      TEXT NOT NULL DEFAULT '',
    root_tree        TEXT NOT NULL DEFAULT '',
    parent_id        TEXT NOT NULL DEFAULT '',
    stats            TEXT NOT NULL DEFAULT '{}',
    errors           TEXT NOT NULL DEFAULT '[]',
    error_message    TEXT NOT NULL DEFAULT '',
    session_id       TEXT NOT NULL DEFAULT '',
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    created_by       TEXT NOT NULL DEFAULT '',
    created_at       TIMESTAMP NOT NULL,
    started_at       TIMESTAMP,
    finished_at      TIMESTAMP,
    updated_at       TIMESTAMP NOT NULL
);
CREATE INDEX backups_created ON backups (created_at DESC, id DESC);
CREATE INDEX backups_client ON backups (client_id, created_at DESC, id DESC);
CREATE INDEX backups_plan ON backups (plan_id, created_at DESC, id DESC);
CREATE INDEX backups_state ON backups (state, updated_at);

CREATE TABLE restores (
    id               TEXT PRIMARY KEY,
    backup_id        TEXT NOT NULL,
    source_client_id TEXT NOT NULL,
    target_client_id TEXT NOT NULL,
    paths            TEXT NOT NULL DEFAULT '[]',
    destination      TEXT NOT NULL DEFAULT '',
    overwrite        TEXT NOT NULL DEFAULT '',
    state            TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'partial', 'failed', 'canceled')),
    stats            TEXT NOT NULL DEFAULT '{}',
    errors           TEXT NOT NULL DEFAULT '[]',
    error_message    TEXT NOT NULL DEFAULT '',
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    created_by       TEXT NOT NULL DEFAULT '',
    created_at       TIMESTAMP NOT NULL,
    started_at       TIMESTAMP,
    finished_at      TIMESTAMP,
    updated_at       TIMESTAMP NOT NULL
);
CREATE INDEX restores_created ON restores (created_at DESC, id DESC);
CREATE INDEX restores_backup ON restores (backup_id, created_at DESC, id DESC);
CREATE INDEX restores_source ON restores (source_client_id, created_at DESC, id DESC);
CREATE INDEX restores_target ON restores (target_client_id, created_at DESC, id DESC);
CREATE INDEX restores_state ON restores (state, updated_at);

CREATE TABLE agent_commands (
    id           TEXT PRIMARY KEY,
    client_id    TEXT NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    kind         TEXT NOT NULL,
    payload      TEXT NOT NULL DEFAULT '',
    created_at   TIMESTAMP NOT NULL,
    delivered_at TIMESTAMP,
    completed_at TIMESTAMP,
    result       TEXT NOT NULL DEFAULT ''
);
CREATE INDEX agent_commands_pending ON agent_commands (client_id, delivered_at, created_at);
CREATE INDEX agent_commands_created ON agent_commands (created_at);

-- +goose Down
DROP TABLE agent_commands;
DROP TABLE restores;
DROP TABLE backups;
DROP TABLE enrollment_tokens;
DROP TABLE clients;
