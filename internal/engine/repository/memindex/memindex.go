// Package memindex keeps a repository.Index in memory, for tests of the
// engine that need an index but not a database. It implements the whole
// contract, epochs, sessions and the GC lease included, and runs the same
// conformance suite (indextest) as the metadb index.
//
// Like the database, it keeps times in UTC at microsecond precision.
package memindex

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/pack"
	"github.com/cofferhq/coffer/internal/engine/repository"
)

// Options configures New.
type Options struct {
	// Now returns the current time, which decides when leases run out and
	// stamps packs added without a time; nil means time.Now. Tests pass a
	// clock they control.
	Now func() time.Time
}

// Index is an in-memory repository.Index. Its methods are safe for
// concurrent use; each call is atomic.
type Index struct {
	now func() time.Time

	mu        sync.Mutex
	epoch     int64
	gcOwner   string
	gcExpires time.Time
	packs     map[pack.ID]repository.PackInfo
	blobs     map[blob.ID]repository.IndexedBlob
	sessions  map[string]session
	snapshots map[string]repository.SnapshotInfo
	sessionN  uint64
}

type session struct {
	epoch   int64
	expires time.Time
}

var _ repository.Index = (*Index)(nil)

// New returns an empty index.
func New(opts Options) *Index {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return &Index{
		now:       now,
		epoch:     1,
		packs:     make(map[pack.ID]repository.PackInfo),
		blobs:     make(map[blob.ID]repository.IndexedBlob),
		sessions:  make(map[string]session),
		snapshots: make(map[string]repository.SnapshotInfo),
	}
}

func norm(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// lock takes the mutex unless ctx is already done, the way a database call
// fails on a cancelled context.
func (ix *Index) lock(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ix.mu.Lock()
	return nil
}

// touch raises a row's epoch to the current one; it reports whether the row
// exists. Callers hold mu.
func (ix *Index) touch(id blob.ID) bool {
	b, ok := ix.blobs[id]
	if ok && b.Touched < ix.epoch {
		b.Touched = ix.epoch
		ix.blobs[id] = b
	}
	return ok
}

// Lookup implements repository.Index.
func (ix *Index) Lookup(ctx context.Context, ids []blob.ID) (map[blob.ID]repository.Location, error) {
	if err := ix.lock(ctx); err != nil {
		return nil, err
	}
	defer ix.mu.Unlock()
	out := make(map[blob.ID]repository.Location)
	for _, id := range ids {
		if b, ok := ix.blobs[id]; ok {
			out[id] = b.Location
		}
	}
	return out, nil
}

// Missing implements repository.Index. An id given twice and not indexed
// is returned twice.
func (ix *Index) Missing(ctx context.Context, ids []blob.ID) ([]blob.ID, error) {
	if err := ix.lock(ctx); err != nil {
		return nil, err
	}
	defer ix.mu.Unlock()
	var missing []blob.ID
	for _, id := range ids {
		if !ix.touch(id) {
			missing = append(missing, id)
		}
	}
	return missing, nil
}

// AddPack implements repository.Index. A zero p.AddedAt is recorded as now.
func (ix *Index) AddPack(ctx context.Context, p repository.PackInfo, entries []pack.Entry) error {
	if err := ix.lock(ctx); err != nil {
		return err
	}
	defer ix.mu.Unlock()
	ix.addPack(p)
	for _, e := range entries {
		if ix.touch(e.ID) {
			continue
		}
		ix.blobs[e.ID] = repository.IndexedBlob{ID: e.ID, Location: location(p.ID, e), Touched: ix.epoch}
	}
	return nil
}

// addPack records p unless its id is indexed. Callers hold mu.
func (ix *Index) addPack(p repository.PackInfo) {
	if _, ok := ix.packs[p.ID]; ok {
		return
	}
	if p.AddedAt.IsZero() {
		p.AddedAt = ix.now()
	}
	p.AddedAt = norm(p.AddedAt)
	ix.packs[p.ID] = p
}

func location(p pack.ID, e pack.Entry) repository.Location {
	return repository.Location{Pack: p, Type: e.Type, Offset: e.Offset, Length: e.Length, RawLength: e.RawLength}
}

// Packs implements repository.Index. It calls fn in id order on a copy of
// the rows, so fn may use the index.
func (ix *Index) Packs(ctx context.Context, fn func(repository.PackInfo) error) error {
	return walk(ctx, ix, ix.packs, fn)
}

// Blobs implements repository.Index, like Packs.
func (ix *Index) Blobs(ctx context.Context, fn func(repository.IndexedBlob) error) error {
	return walk(ctx, ix, ix.blobs, fn)
}

// walk copies the rows of m under the lock, then calls fn for each in id
// order.
func walk[K ~[32]byte, V any](ctx context.Context, ix *Index, m map[K]V, fn func(V) error) error {
	if err := ix.lock(ctx); err != nil {
		return err
	}
	ids := slices.Collect(maps.Keys(m))
	rows := make([]V, len(ids))
	slices.SortFunc(ids, func(a, b K) int { return slices.Compare(a[:], b[:]) })
	for i, id := range ids {
		rows[i] = m[id]
	}
	ix.mu.Unlock()
	for _, r := range rows {
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}

// PackBlobs implements repository.Index.
func (ix *Index) PackBlobs(ctx context.Context, id pack.ID) ([]repository.IndexedBlob, error) {
	if err := ix.lock(ctx); err != nil {
		return nil, err
	}
	defer ix.mu.Unlock()
	var out []repository.IndexedBlob
	for _, b := range ix.blobs {
		if b.Pack == id {
			out = append(out, b)
		}
	}
	slices.SortFunc(out, func(a, b repository.IndexedBlob) int {
		return cmp.Or(cmp.Compare(a.Offset, b.Offset), slices.Compare(a.ID[:], b.ID[:]))
	})
	return out, nil
}

// BeginSession implements repository.Index.
func (ix *Index) BeginSession(ctx context.Context, ttl time.Duration) (repository.Session, error) {
	if err := ix.lock(ctx); err != nil {
		return repository.Session{}, err
	}
	defer ix.mu.Unlock()
	ix.sessionN++
	s := repository.Session{ID: fmt.Sprintf("mem-%d", ix.sessionN), Epoch: ix.epoch}
	ix.sessions[s.ID] = session{epoch: s.Epoch, expires: norm(ix.now().Add(ttl))}
	return s, nil
}

// RenewSession implements repository.Index.
func (ix *Index) RenewSession(ctx context.Context, s repository.Session, ttl time.Duration) error {
	if err := ix.lock(ctx); err != nil {
		return err
	}
	defer ix.mu.Unlock()
	now := norm(ix.now())
	ss, ok := ix.sessions[s.ID]
	if !ok || !now.Before(ss.expires) {
		delete(ix.sessions, s.ID)
		return fmt.Errorf("renew session %s: %w", s.ID, repository.ErrSessionExpired)
	}
	ss.expires = norm(now.Add(ttl))
	ix.sessions[s.ID] = ss
	return nil
}

// EndSession implements repository.Index.
func (ix *Index) EndSession(ctx context.Context, s repository.Session) error {
	if err := ix.lock(ctx); err != nil {
		return err
	}
	defer ix.mu.Unlock()
	delete(ix.sessions, s.ID)
	return nil
}

// CommitSnapshot implements repository.Index. The ids it returns are in
// the order of refs, each once.
func (ix *Index) CommitSnapshot(ctx context.Context, snap repository.SnapshotInfo, refs []blob.ID) ([]blob.ID, error) {
	if err := ix.lock(ctx); err != nil {
		return nil, err
	}
	defer ix.mu.Unlock()
	var missing []blob.ID
	seen := make(map[blob.ID]bool)
	for _, id := range refs {
		if _, ok := ix.blobs[id]; !ok && !seen[id] {
			missing = append(missing, id)
		}
		seen[id] = true
	}
	if len(missing) > 0 {
		return missing, nil
	}
	for _, id := range refs {
		ix.touch(id)
	}
	ix.addSnapshot(snap)
	return nil, nil
}

// AddSnapshot implements repository.Index. An existing snapshot of the same
// id is kept.
func (ix *Index) AddSnapshot(ctx context.Context, snap repository.SnapshotInfo) error {
	if err := ix.lock(ctx); err != nil {
		return err
	}
	defer ix.mu.Unlock()
	ix.addSnapshot(snap)
	return nil
}

func (ix *Index) addSnapshot(snap repository.SnapshotInfo) {
	if _, ok := ix.snapshots[snap.ID]; ok {
		return
	}
	snap.Time = norm(snap.Time)
	snap.Manifest = slices.Clone(snap.Manifest)
	ix.snapshots[snap.ID] = snap
}

// Snapshots implements repository.Index: oldest first, then by id.
func (ix *Index) Snapshots(ctx context.Context) ([]repository.SnapshotInfo, error) {
	if err := ix.lock(ctx); err != nil {
		return nil, err
	}
	defer ix.mu.Unlock()
	out := make([]repository.SnapshotInfo, 0, len(ix.snapshots))
	for _, s := range ix.snapshots {
		s.Manifest = slices.Clone(s.Manifest)
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b repository.SnapshotInfo) int {
		return cmp.Or(a.Time.Compare(b.Time), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

// Snapshot implements repository.Index.
func (ix *Index) Snapshot(ctx context.Context, id string) (repository.SnapshotInfo, error) {
	if err := ix.lock(ctx); err != nil {
		return repository.SnapshotInfo{}, err
	}
	defer ix.mu.Unlock()
	s, ok := ix.snapshots[id]
	if !ok {
		return repository.SnapshotInfo{}, fmt.Errorf("snapshot %s: %w", id, repository.ErrSnapshotNotFound)
	}
	s.Manifest = slices.Clone(s.Manifest)
	return s, nil
}

// DeleteSnapshot implements repository.Index.
func (ix *Index) DeleteSnapshot(ctx context.Context, id string) error {
	if err := ix.lock(ctx); err != nil {
		return err
	}
	defer ix.mu.Unlock()
	delete(ix.snapshots, id)
	return nil
}

// BeginGC implements repository.Index. It also forgets expired sessions.
func (ix *Index) BeginGC(ctx context.Context, owner string, ttl time.Duration) (int64, error) {
	if owner == "" {
		return 0, errors.New("begin gc: owner is empty: name the collector that takes the lease")
	}
	if err := ix.lock(ctx); err != nil {
		return 0, err
	}
	defer ix.mu.Unlock()
	now := norm(ix.now())
	if ix.gcOwner != "" && ix.gcOwner != owner && now.Before(ix.gcExpires) {
		return 0, fmt.Errorf("begin gc: %w (held by %s until %s)", repository.ErrGCRunning, ix.gcOwner, ix.gcExpires.Format(time.RFC3339))
	}
	ix.gcOwner, ix.gcExpires = owner, norm(now.Add(ttl))
	ix.epoch++
	bound := ix.epoch
	for id, s := range ix.sessions {
		if !now.Before(s.expires) {
			delete(ix.sessions, id)
			continue
		}
		bound = min(bound, s.epoch)
	}
	return bound, nil
}

// EndGC implements repository.Index. It does nothing when owner does not
// hold the lease (it ran out and another GC took it).
func (ix *Index) EndGC(ctx context.Context, owner string) error {
	if err := ix.lock(ctx); err != nil {
		return err
	}
	defer ix.mu.Unlock()
	if ix.gcOwner == owner {
		ix.gcOwner, ix.gcExpires = "", time.Time{}
	}
	return nil
}

// DeleteBlobs implements repository.Index.
func (ix *Index) DeleteBlobs(ctx context.Context, ids []blob.ID, bound int64) (int, error) {
	if err := ix.lock(ctx); err != nil {
		return 0, err
	}
	defer ix.mu.Unlock()
	n := 0
	for _, id := range ids {
		if b, ok := ix.blobs[id]; ok && b.Touched < bound {
			delete(ix.blobs, id)
			n++
		}
	}
	return n, nil
}

// MoveBlobs implements repository.Index. It records pack to if it is not
// indexed yet.
func (ix *Index) MoveBlobs(ctx context.Context, from pack.ID, to repository.PackInfo, entries []pack.Entry) error {
	if err := ix.lock(ctx); err != nil {
		return err
	}
	defer ix.mu.Unlock()
	ix.addPack(to)
	for _, e := range entries {
		if b, ok := ix.blobs[e.ID]; ok && b.Pack == from {
			b.Location = location(to.ID, e)
			ix.blobs[e.ID] = b
		}
	}
	return nil
}

// DeletePack implements repository.Index.
func (ix *Index) DeletePack(ctx context.Context, id pack.ID) (bool, error) {
	if err := ix.lock(ctx); err != nil {
		return false, err
	}
	defer ix.mu.Unlock()
	if _, ok := ix.packs[id]; !ok {
		return false, nil
	}
	for _, b := range ix.blobs {
		if b.Pack == id {
			return false, nil
		}
	}
	delete(ix.packs, id)
	return true, nil
}
