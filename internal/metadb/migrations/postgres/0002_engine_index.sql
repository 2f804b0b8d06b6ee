-- The storage engine's index: packs, blobs, write sessions and snapshots of
-- each repository (see repository.Index). Ids of blobs and packs are their
-- 32 raw bytes. engine_repos gives each repository a small integer key so
-- that the big tables do not repeat its 64-digit id in every row.
--
-- Keys of packs and blobs lead with the id, not the repository: an index
-- that leads with the repository lets PostgreSQL's planner, when its
-- statistics are stale (a new repository growing fast, a table not yet
-- analyzed), scan a whole repository for a batch of ids instead of probing
-- for each. A repository's listing filters the id-ordered key instead.
-- Offsets and lengths are BIGINT: they are uint32 in the pack format.
-- engine_blobs leaves a fifth of each page free so that touches (an UPDATE
-- of the unindexed touched column, once per blob per GC epoch) can be HOT
-- updates that write no index entries.

-- +goose Up
CREATE TABLE engine_repos (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    repository_id TEXT NOT NULL UNIQUE,
    epoch         BIGINT NOT NULL,
    gc_owner      TEXT NOT NULL DEFAULT '',
    gc_expires_at TIMESTAMPTZ
);

CREATE TABLE engine_packs (
    repo     BIGINT NOT NULL REFERENCES engine_repos (id),
    id       BYTEA NOT NULL,
    size     BIGINT NOT NULL,
    blobs    INTEGER NOT NULL,
    added_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (id, repo)
);

CREATE TABLE engine_blobs (
    repo        BIGINT NOT NULL,
    id          BYTEA NOT NULL,
    blob_type   SMALLINT NOT NULL,
    pack_id     BYTEA NOT NULL,
    blob_offset BIGINT NOT NULL,
    blob_length BIGINT NOT NULL,
    raw_length  BIGINT NOT NULL,
    touched     BIGINT NOT NULL,
    PRIMARY KEY (id, repo),
    FOREIGN KEY (pack_id, repo) REFERENCES engine_packs (id, repo)
) WITH (fillfactor = 80);
CREATE INDEX engine_blobs_pack ON engine_blobs (pack_id, repo, blob_offset);

CREATE TABLE engine_sessions (
    repo       BIGINT NOT NULL REFERENCES engine_repos (id),
    id         TEXT NOT NULL,
    epoch      BIGINT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (repo, id)
);

CREATE TABLE engine_snapshots (
    repo     BIGINT NOT NULL REFERENCES engine_repos (id),
    id       TEXT NOT NULL,
    taken_at TIMESTAMPTZ NOT NULL,
    tree     BYTEA NOT NULL,
    manifest BYTEA NOT NULL,
    PRIMARY KEY (repo, id)
);
CREATE INDEX engine_snapshots_taken_at ON engine_snapshots (repo, taken_at, id);

-- +goose Down
DROP TABLE engine_snapshots;
DROP TABLE engine_sessions;
DROP TABLE engine_blobs;
DROP TABLE engine_packs;
DROP TABLE engine_repos;
