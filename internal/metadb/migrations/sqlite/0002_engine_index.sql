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
-- Timestamps are INTEGER microseconds since the epoch in UTC.

-- +goose Up
CREATE TABLE engine_repos (
    id            INTEGER PRIMARY KEY,
    repository_id TEXT NOT NULL UNIQUE,
    epoch         INTEGER NOT NULL,
    gc_owner      TEXT NOT NULL DEFAULT '',
    gc_expires_at TIMESTAMP
);

CREATE TABLE engine_packs (
    repo     INTEGER NOT NULL REFERENCES engine_repos (id),
    id       BLOB NOT NULL,
    size     INTEGER NOT NULL,
    blobs    INTEGER NOT NULL,
    added_at TIMESTAMP NOT NULL,
    PRIMARY KEY (id, repo)
) WITHOUT ROWID;

CREATE TABLE engine_blobs (
    repo        INTEGER NOT NULL,
    id          BLOB NOT NULL,
    blob_type   INTEGER NOT NULL,
    pack_id     BLOB NOT NULL,
    blob_offset INTEGER NOT NULL,
    blob_length INTEGER NOT NULL,
    raw_length  INTEGER NOT NULL,
    touched     INTEGER NOT NULL,
    PRIMARY KEY (id, repo),
    FOREIGN KEY (pack_id, repo) REFERENCES engine_packs (id, repo)
) WITHOUT ROWID;
CREATE INDEX engine_blobs_pack ON engine_blobs (pack_id, repo, blob_offset);

CREATE TABLE engine_sessions (
    repo       INTEGER NOT NULL REFERENCES engine_repos (id),
    id         TEXT NOT NULL,
    epoch      INTEGER NOT NULL,
    started_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    PRIMARY KEY (repo, id)
);

CREATE TABLE engine_snapshots (
    repo     INTEGER NOT NULL REFERENCES engine_repos (id),
    id       TEXT NOT NULL,
    taken_at TIMESTAMP NOT NULL,
    tree     BLOB NOT NULL,
    manifest BLOB NOT NULL,
    PRIMARY KEY (repo, id)
);
CREATE INDEX engine_snapshots_taken_at ON engine_snapshots (repo, taken_at, id);

-- +goose Down
DROP TABLE engine_snapshots;
DROP TABLE engine_sessions;
DROP TABLE engine_blobs;
DROP TABLE engine_packs;
DROP TABLE engine_repos;
