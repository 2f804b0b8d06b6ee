package repository

import (
	"context"
	"errors"
	"time"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/pack"
)

// Index is a repository's catalogue — which pack holds each blob, which
// packs exist, which snapshots are committed — kept in the metadata
// database (package metadb implements it on SQLite and PostgreSQL; memindex
// in memory for tests). One Index value serves one repository. The index is
// a cache of what the repository's objects say: Rebuild reconstructs it
// from the packs and snapshot manifests alone.
//
// # Rows are written only for durable objects
//
// AddPack is called only after the pack object is durably stored, so every
// indexed blob can be read. A blob id is indexed at most once: when two
// writers race and both store it, the second AddPack keeps the first
// location (the other copy is dead weight that GC reclaims).
//
// # Touches, epochs and sessions: how GC and backups share a repository
//
// The index keeps an epoch counter that only GC advances, and every blob row
// records the epoch at which it was last touched: written, reported present
// by Missing, or confirmed by CommitSnapshot. A writer opens a Session, which
// records the epoch at its start and holds a lease it must renew.
//
// GC advances the epoch to E (BeginGC), then lists committed snapshots and
// marks what they reach. It may delete only rows touched before its bound
// min(E, start epoch of every live session) (DeleteBlobs checks that
// condition row by row, atomically). So a blob that a backup with a live
// session was told is present, or wrote, survives; and CommitSnapshot touches every blob
// the new snapshot references at the current epoch and fails, naming them,
// if any is gone. BeginGC must wait for commits and session starts that read
// the old epoch to finish (they take a shared lock that BeginGC takes
// exclusively), so a snapshot committed at an epoch below E is visible to
// GC's listing. Together: no committed snapshot ever references a deleted
// blob, without a repository-wide lock.
//
// Errors: a missing blob or snapshot is reported as such (ErrNotIndexed,
// ErrSnapshotNotFound); an expired or ended session as ErrSessionExpired; a
// GC already running as ErrGCRunning. Other errors are database failures.
type Index interface {
	// Lookup returns the locations of the indexed ids among ids; ids that
	// are not indexed are absent from the map.
	Lookup(ctx context.Context, ids []blob.ID) (map[blob.ID]Location, error)

	// Missing returns, in input order, the ids that are not indexed (an id
	// given twice is returned twice), and touches the others at the current
	// epoch.
	Missing(ctx context.Context, ids []blob.ID) ([]blob.ID, error)

	// AddPack records a stored pack and its blobs in one transaction,
	// touching them at the current epoch. Blobs already indexed keep their
	// location and are touched. Adding a pack twice is not an error.
	AddPack(ctx context.Context, p PackInfo, entries []pack.Entry) error

	// Packs calls fn for every indexed pack, in no particular order. A row
	// present throughout the listing is seen exactly once; rows added or
	// removed meanwhile may or may not be. An error from fn stops the
	// listing and is returned.
	Packs(ctx context.Context, fn func(PackInfo) error) error

	// Blobs calls fn for every indexed blob, like Packs.
	Blobs(ctx context.Context, fn func(IndexedBlob) error) error

	// PackBlobs returns the blobs indexed in pack id, in offset order.
	PackBlobs(ctx context.Context, id pack.ID) ([]IndexedBlob, error)

	// BeginSession starts a write session whose lease lasts ttl.
	BeginSession(ctx context.Context, ttl time.Duration) (Session, error)
	// RenewSession extends the lease by ttl from now, or fails with
	// ErrSessionExpired if it has run out (GC may have stopped honouring it).
	RenewSession(ctx context.Context, s Session, ttl time.Duration) error
	// EndSession ends a session; ending an ended session is not an error.
	EndSession(ctx context.Context, s Session) error

	// CommitSnapshot touches every id in refs at the current epoch and, if
	// all are indexed, records the snapshot, in one transaction. Otherwise
	// it records nothing (not even the touches) and returns the ids that are
	// not indexed, each once, in the order of refs (err nil). Committing a
	// snapshot id that exists is not an error and keeps the first record.
	CommitSnapshot(ctx context.Context, snap SnapshotInfo, refs []blob.ID) (missing []blob.ID, err error)
	// AddSnapshot records a snapshot without checking references (Rebuild).
	AddSnapshot(ctx context.Context, snap SnapshotInfo) error
	// Snapshots returns every committed snapshot, oldest first.
	Snapshots(ctx context.Context) ([]SnapshotInfo, error)
	// Snapshot returns one snapshot or ErrSnapshotNotFound.
	Snapshot(ctx context.Context, id string) (SnapshotInfo, error)
	// DeleteSnapshot forgets a snapshot (its blobs free at the next GC).
	// Deleting a missing snapshot is not an error.
	DeleteSnapshot(ctx context.Context, id string) error

	// BeginGC takes the GC lease for owner (ErrGCRunning if another
	// holder's lease is live), advances the epoch, and returns the bound
	// below which untouched rows may be deleted: min(new epoch, start epoch
	// of every live session).
	BeginGC(ctx context.Context, owner string, ttl time.Duration) (bound int64, err error)
	// EndGC releases the GC lease.
	EndGC(ctx context.Context, owner string) error
	// DeleteBlobs deletes the rows of ids that were last touched before
	// bound and returns how many it deleted; the others stay.
	DeleteBlobs(ctx context.Context, ids []blob.ID, bound int64) (int, error)
	// MoveBlobs points the rows of entries that are still in pack from at
	// pack to (already added with AddPack) instead, for repacking.
	MoveBlobs(ctx context.Context, from pack.ID, to PackInfo, entries []pack.Entry) error
	// DeletePack removes pack id's row if no blob row points to it and
	// reports whether it did.
	DeletePack(ctx context.Context, id pack.ID) (bool, error)
}

// Location is where one stored blob lives.
type Location struct {
	Pack      pack.ID
	Type      blob.Type
	Offset    uint32
	Length    uint32 // stored bytes
	RawLength uint32 // plaintext bytes
}

// IndexedBlob is one row of the blob index.
type IndexedBlob struct {
	ID blob.ID
	Location
	Touched int64 // the epoch of its last touch
}

// PackInfo is one row of the pack index.
type PackInfo struct {
	ID      pack.ID
	Size    int64 // bytes of the pack object
	Blobs   int   // entries in its trailer
	AddedAt time.Time
}

// SnapshotInfo is a committed snapshot as the index keeps it: the fields
// queries need, and the manifest itself (its JSON, as in the repository).
type SnapshotInfo struct {
	ID       string
	Time     time.Time
	Tree     blob.ID
	Manifest []byte
}

// Session is a writer's registration with the index (see Index).
type Session struct {
	ID    string
	Epoch int64 // the epoch when it began
}

// Index errors.
var (
	ErrNotIndexed       = errors.New("blob not indexed")
	ErrSnapshotNotFound = errors.New("snapshot not found")
	ErrSessionExpired   = errors.New("write session expired")
	ErrGCRunning        = errors.New("garbage collection already running")
)
