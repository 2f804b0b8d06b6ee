-- Whether a client's agent runs plans' pre and post commands: it reports
-- its --allow-commands setting with every heartbeat. Agents that never said
-- are taken to allow them, the agent's default.

-- +goose Up
ALTER TABLE clients ADD COLUMN commands_allowed BOOLEAN NOT NULL DEFAULT TRUE;

-- +goose Down
ALTER TABLE clients DROP COLUMN commands_allowed;
