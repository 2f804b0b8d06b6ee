-- The history of each repository's storage use, for the dashboard's chart
-- of stored bytes over time and the storage page's logical bytes and
-- deduplication ratio (its newest sample).
--
-- The storage service's maintenance records one sample per repository per
-- hour (and refreshes the hour's sample after a garbage collection).
-- hour_bucket is taken_at in whole hours since the epoch (UTC): the primary
-- key keeps one sample per repository and hour however many replicas race
-- to record it, and integer buckets group into days or weeks the same way
-- on both databases. stored_bytes is what the repository's packs take in
-- storage, blob_bytes what the distinct blobs of its index take there
-- (compressed and encrypted, each once: the deduplication ratio's
-- denominator), logical_bytes what its snapshots hold before deduplication
-- and compression. Samples go with their repository and are pruned after
-- 400 days. Timestamps are TIMESTAMPTZ (microseconds, like the SQLite schema).

-- +goose Up
CREATE TABLE repository_usage_samples (
    repository_id TEXT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    hour_bucket   BIGINT NOT NULL,
    taken_at      TIMESTAMPTZ NOT NULL,
    stored_bytes  BIGINT NOT NULL,
    blob_bytes    BIGINT NOT NULL,
    logical_bytes BIGINT NOT NULL,
    PRIMARY KEY (repository_id, hour_bucket)
);
CREATE INDEX repository_usage_samples_hour ON repository_usage_samples (hour_bucket);

-- +goose Down
DROP TABLE repository_usage_samples;
