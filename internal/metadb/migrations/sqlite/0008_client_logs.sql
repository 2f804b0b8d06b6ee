-- Log lines agents ship to the server (POST /api/v1/agent/logs).
--
-- logged_at is the agent's time of the line, the order lists show it in
-- (newest first, then by id); received_at is when the server stored it,
-- which retention counts from (an agent's clock cannot keep a line
-- forever). level holds log/slog's numbers (debug -4, info 0, warn 4,
-- error 8), so a minimum level is a range. backup_id and restore_id are ''
-- when the line is about no job. A client's lines go with the client.
-- Timestamps are INTEGER microseconds since the epoch in UTC.

-- +goose Up
CREATE TABLE client_logs (
    id          TEXT PRIMARY KEY,
    client_id   TEXT NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    backup_id   TEXT NOT NULL DEFAULT '',
    restore_id  TEXT NOT NULL DEFAULT '',
    level       INTEGER NOT NULL,
    message     TEXT NOT NULL,
    attrs       TEXT NOT NULL DEFAULT '{}',
    logged_at   TIMESTAMP NOT NULL,
    received_at TIMESTAMP NOT NULL
);
-- A client's lines newest first (every list), and the cap per client.
CREATE INDEX client_logs_client ON client_logs (client_id, logged_at DESC, id DESC);
-- One backup's or restore's lines newest first.
CREATE INDEX client_logs_backup ON client_logs (backup_id, logged_at DESC, id DESC);
CREATE INDEX client_logs_restore ON client_logs (restore_id, logged_at DESC, id DESC);
-- Retention.
CREATE INDEX client_logs_received ON client_logs (received_at);

-- +goose Down
DROP TABLE client_logs;
