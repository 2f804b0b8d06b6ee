-- The events about one resource (a backup, a restore, a client, a plan…),
-- newest first, for the event history filtered by resource: without this
-- index that filter would read the whole event log.

-- +goose Up
CREATE INDEX events_resource ON events (resource_type, resource_id, id);

-- +goose Down
DROP INDEX events_resource;
