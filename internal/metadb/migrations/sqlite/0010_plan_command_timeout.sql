-- How long each of a plan's pre and post commands may run, in seconds;
-- 0 takes the server's default (10 minutes).

-- +goose Up
ALTER TABLE plans ADD COLUMN command_timeout_seconds INTEGER NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE plans DROP COLUMN command_timeout_seconds;
