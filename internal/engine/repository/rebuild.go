package repository

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/blobstore"
	"github.com/cofferhq/coffer/internal/engine/pack"
	"github.com/cofferhq/coffer/internal/engine/tree"
	"golang.org/x/sync/errgroup"
)

// RebuildOptions configure Rebuild.
type RebuildOptions struct {
	// Concurrency is how many pack trailers are read at once (default 4).
	Concurrency int
	// Owner identifies the rebuild in the GC lease it holds (default
	// "rebuild-index"); Lease is how long that lease lasts (default 6 h).
	Owner string
	Lease time.Duration
}

// RebuildReport says what Rebuild found in storage and what it added to
// the index.
type RebuildReport struct {
	Packs          int           `json:"packs"`           // pack objects in storage
	PacksIndexed   int           `json:"packs_indexed"`   // already in the index, left as they were
	PacksAdded     int           `json:"packs_added"`     // read and added
	DamagedPacks   []DamagedPack `json:"damaged_packs"`   // unreadable: not added
	BlobsAdded     int           `json:"blobs_added"`     // blob rows added
	DuplicateBlobs int           `json:"duplicate_blobs"` // blobs of added packs already stored in another pack

	Snapshots        int               `json:"snapshots"`         // manifests in storage
	SnapshotsIndexed int               `json:"snapshots_indexed"` // already in the index
	SnapshotsAdded   int               `json:"snapshots_added"`
	SkippedSnapshots []SkippedSnapshot `json:"skipped_snapshots"` // damaged or incomplete: not added

	Duration time.Duration `json:"duration_ns"`
}

// DamagedPack is a pack object whose trailer cannot be read.
type DamagedPack struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// SkippedSnapshot is a manifest Rebuild did not add, and why.
type SkippedSnapshot struct {
	ID     string `json:"id"`
	Reason string `json:"reason"`
}

// Clean reports whether everything in storage was readable and complete.
func (r *RebuildReport) Clean() bool {
	return len(r.DamagedPacks) == 0 && len(r.SkippedSnapshots) == 0
}

// Rebuild reconstructs the index from the repository's objects alone, for
// a metadata database that was lost or is behind. It adds every pack object
// the index lacks (reading only its footer and trailer), then every
// snapshot manifest the index lacks whose tree reaches only indexed blobs.
// It never removes or changes a row, so it is safe on a partial index, and
// running it again adds nothing (only the GC epoch advances, see below).
//
// Damage is reported, not fatal: a pack whose trailer does not open is
// skipped, and so is a manifest that does not authenticate or whose closure
// is incomplete (a backup whose blobs are gone, or were in a damaged pack);
// adding such a snapshot would promise a restore that cannot happen.
// Errors are for what stops the whole rebuild: the index failing, or
// storage failing transiently (run it again).
//
// Rebuild holds the GC lease while it runs (ErrGCRunning if a collection
// is running), since a collection that ran against the half-built index
// would take the packs not yet added for orphans. Taking it advances the
// index's epoch, which is harmless: GC bounds come from the epochs of live
// sessions and of its own start.
func (r *Repository) Rebuild(ctx context.Context, o RebuildOptions) (*RebuildReport, error) {
	if o.Concurrency <= 0 {
		o.Concurrency = 4
	}
	if o.Owner == "" {
		o.Owner = "rebuild-index"
	}
	if o.Lease <= 0 {
		o.Lease = 6 * time.Hour
	}
	start := time.Now()
	if _, err := r.index.BeginGC(ctx, o.Owner, o.Lease); err != nil {
		return nil, fmt.Errorf("rebuild the index of %s: %w", r.Location(), err)
	}
	defer r.index.EndGC(context.WithoutCancel(ctx), o.Owner)

	rb := &rebuild{repo: r, rep: &RebuildReport{}, claimed: map[blob.ID]int{}}
	if err := rb.packs(ctx, o.Concurrency); err != nil {
		return rb.rep, fmt.Errorf("rebuild the index of %s: %w", r.Location(), err)
	}
	rb.claimed = nil // the snapshots' seen set takes its place
	if err := rb.snapshots(ctx); err != nil {
		return rb.rep, fmt.Errorf("rebuild the index of %s: %w", r.Location(), err)
	}
	rb.rep.Duration = time.Since(start)
	return rb.rep, nil
}

type rebuild struct {
	repo *Repository

	mu      sync.Mutex
	rep     *RebuildReport
	claimed map[blob.ID]int // blobs this rebuild added, and the number of the pack it added them from
}

// stops reports whether err should end a rebuild or a verify rather than
// mark one object as damaged: the context ended, or storage failed in a way
// worth retrying (after the retries of the backend's decorator).
func stops(ctx context.Context, err error) bool {
	return ctx.Err() != nil || blobstore.IsTransient(err)
}

func (rb *rebuild) packs(ctx context.Context, concurrency int) error {
	known := map[pack.ID]bool{}
	err := rb.repo.index.Packs(ctx, func(p PackInfo) error {
		known[p.ID] = true
		return nil
	})
	if err != nil {
		return fmt.Errorf("list indexed packs: %w", err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(concurrency)
	err = rb.repo.backend.List(ctx, "packs/", func(o blobstore.ObjectInfo) error {
		rb.mu.Lock()
		rb.rep.Packs++
		seq := rb.rep.Packs
		rb.mu.Unlock()
		id, err := pack.ParseName(o.Name)
		if err != nil {
			rb.damaged(o.Name, errors.New("not a pack name: this object does not belong in packs/"))
			return nil
		}
		if known[id] {
			rb.mu.Lock()
			rb.rep.PacksIndexed++
			rb.mu.Unlock()
			return nil
		}
		g.Go(func() error { return rb.addPack(gctx, seq, id, o) })
		return gctx.Err() // a failed worker stops the listing
	})
	if werr := g.Wait(); werr != nil {
		return werr
	}
	if err != nil {
		return fmt.Errorf("list pack objects: %w", err)
	}
	slices.SortFunc(rb.rep.DamagedPacks, func(a, b DamagedPack) int { return strings.Compare(a.Name, b.Name) })
	return nil
}

func (rb *rebuild) damaged(name string, err error) {
	rb.mu.Lock()
	rb.rep.DamagedPacks = append(rb.rep.DamagedPacks, DamagedPack{Name: name, Reason: err.Error()})
	rb.mu.Unlock()
}

// addPack reads one pack's trailer and indexes its blobs. seq numbers the
// pack in this rebuild.
func (rb *rebuild) addPack(ctx context.Context, seq int, id pack.ID, o blobstore.ObjectInfo) error {
	entries, _, err := readPackTrailer(ctx, rb.repo.backend, rb.repo.codec, o.Name, o.Size, trailerReadAhead)
	switch {
	case errors.Is(err, blobstore.ErrNotFound):
		return nil // deleted since the listing
	case err != nil && stops(ctx, err):
		return err
	case err != nil:
		rb.damaged(o.Name, err)
		return nil
	}
	ids := make([]blob.ID, len(entries))
	for i, e := range entries {
		ids[i] = e.ID
	}
	locs, err := rb.repo.index.Lookup(ctx, ids)
	if err != nil {
		return fmt.Errorf("look up the blobs of pack %s: %w", o.Name, err)
	}
	added := o.ModTime.UTC()
	if added.IsZero() {
		added = time.Now().UTC()
	}
	info := PackInfo{ID: id, Size: o.Size, Blobs: len(entries), AddedAt: added}
	if err := rb.repo.index.AddPack(ctx, info, entries); err != nil {
		return fmt.Errorf("index pack %s: %w", o.Name, err)
	}

	rb.mu.Lock()
	defer rb.mu.Unlock()
	rb.rep.PacksAdded++
	for _, e := range entries {
		if loc, ok := locs[e.ID]; ok {
			if loc.Pack != id {
				rb.rep.DuplicateBlobs++
			}
			continue
		}
		if from, ok := rb.claimed[e.ID]; ok {
			if from != seq {
				rb.rep.DuplicateBlobs++
			}
			continue
		}
		rb.claimed[e.ID] = seq
		rb.rep.BlobsAdded++
	}
	return nil
}

// trailerReadAhead is how much of a pack's end Rebuild reads at first: the
// footer and, for most packs, the whole trailer, in one request.
const trailerReadAhead = 32 << 10

// readPackTrailer reads the entries of pack object name, of size bytes,
// with ranged reads of its end: first the last ahead bytes (at least the
// footer), then the rest of the trailer if they did not hold it all. It
// also returns how many bytes it read. A damaged footer or trailer matches
// pack.ErrCorrupt.
func readPackTrailer(ctx context.Context, b blobstore.Backend, codec *blob.Codec, name string, size, ahead int64) ([]pack.Entry, int64, error) {
	if size < pack.FooterSize {
		_, err := pack.TrailerLength(nil, size)
		return nil, 0, err
	}
	tailLen := min(size, max(ahead, pack.FooterSize))
	tail, err := blobstore.ReadRange(ctx, b, name, size-tailLen, tailLen)
	if err != nil {
		return nil, 0, err
	}
	read := tailLen
	n, err := pack.TrailerLength(tail[len(tail)-pack.FooterSize:], size)
	if err != nil {
		return nil, read, err
	}
	var sealed []byte
	if int64(n)+pack.FooterSize <= tailLen {
		sealed = tail[len(tail)-pack.FooterSize-n : len(tail)-pack.FooterSize]
	} else if sealed, err = blobstore.ReadRange(ctx, b, name, size-pack.FooterSize-int64(n), int64(n)); err != nil {
		return nil, read, err
	} else {
		read += int64(n)
	}
	entries, err := pack.ParseTrailer(codec, sealed, size)
	return entries, read, err
}

// snapshots adds the manifests the index lacks, oldest name first, each
// only if every blob it reaches is indexed. seen holds the blobs already
// found indexed, so a tree that many snapshots share is checked once.
func (rb *rebuild) snapshots(ctx context.Context) error {
	idx := rb.repo.index
	indexed, err := idx.Snapshots(ctx)
	if err != nil {
		return fmt.Errorf("list indexed snapshots: %w", err)
	}
	known := make(map[string]bool, len(indexed))
	for _, s := range indexed {
		known[s.ID] = true
	}
	var names []string
	err = rb.repo.backend.List(ctx, SnapshotPrefix, func(o blobstore.ObjectInfo) error {
		names = append(names, o.Name)
		return nil
	})
	if err != nil {
		return fmt.Errorf("list snapshot manifests: %w", err)
	}
	slices.Sort(names)
	seen := map[blob.ID]struct{}{}
	for _, name := range names {
		id := strings.TrimPrefix(name, SnapshotPrefix)
		if known[id] {
			rb.rep.Snapshots++
			rb.rep.SnapshotsIndexed++
			continue
		}
		manifest, snap, err := rb.repo.ReadSnapshotObject(ctx, id)
		switch {
		case errors.Is(err, blobstore.ErrNotFound):
			continue // forgotten since the listing
		case err != nil && stops(ctx, err):
			return err
		}
		rb.rep.Snapshots++
		if err != nil {
			rb.skip(id, err.Error())
			continue
		}
		reason, err := rb.closure(ctx, snap.Tree, seen)
		if err != nil {
			return fmt.Errorf("check snapshot %s: %w", id, err)
		}
		if reason != "" {
			rb.skip(id, reason)
			continue
		}
		info := SnapshotInfo{ID: id, Time: snap.Time, Tree: snap.Tree, Manifest: manifest}
		if err := idx.AddSnapshot(ctx, info); err != nil {
			return fmt.Errorf("index snapshot %s: %w", id, err)
		}
		rb.rep.SnapshotsAdded++
	}
	return nil
}

func (rb *rebuild) skip(id, reason string) {
	rb.rep.SkippedSnapshots = append(rb.rep.SkippedSnapshots, SkippedSnapshot{ID: id, Reason: reason})
}

// lookupBatch bounds the ids of one index lookup (Rebuild, Verify and
// GroupUsage look blobs up in batches).
const lookupBatch = 1000

// closure checks that every blob reachable from root is indexed with the
// right type; trees are read, and so authenticated, on the way. It returns
// why the snapshot is incomplete ("" when it is complete), or an error
// that stops the rebuild. The blobs it adds to seen are taken out again
// when the snapshot is incomplete: seen holds only blobs found indexed.
func (rb *rebuild) closure(ctx context.Context, root blob.ID, seen map[blob.ID]struct{}) (string, error) {
	var added, data []blob.ID
	err := rb.repo.Reach(ctx, []blob.ID{root}, seen, func(t blob.Type, id blob.ID) error {
		added = append(added, id)
		if t == blob.Data {
			data = append(data, id)
		}
		return nil
	})
	reason, err := incomplete(ctx, err)
	if err == nil && reason == "" {
		reason, err = rb.missingData(ctx, data)
	}
	if reason != "" || err != nil {
		for _, id := range added {
			delete(seen, id)
		}
	}
	return reason, err
}

// incomplete turns an error from walking a snapshot's trees into a reason
// to skip the snapshot (a tree missing, damaged or not a tree), or keeps
// it as an error that stops the rebuild (the index or storage failing).
func incomplete(ctx context.Context, err error) (string, error) {
	if err == nil {
		return "", nil
	}
	if stops(ctx, err) {
		return "", err
	}
	for _, e := range []error{ErrNotIndexed, blob.ErrCorrupt, blob.ErrAuth, tree.ErrCorrupt, blobstore.ErrNotFound, blobstore.ErrRange} {
		if errors.Is(err, e) {
			return "its trees cannot all be read: " + err.Error(), nil
		}
	}
	return "", err
}

// missingData describes the data blobs among ids that are not indexed as
// data ("" when all are).
func (rb *rebuild) missingData(ctx context.Context, ids []blob.ID) (string, error) {
	var missing []blob.ID
	for batch := range slices.Chunk(ids, lookupBatch) {
		locs, err := rb.repo.index.Lookup(ctx, batch)
		if err != nil {
			return "", fmt.Errorf("look up blobs: %w", err)
		}
		for _, id := range batch {
			if loc, ok := locs[id]; !ok || loc.Type != blob.Data {
				missing = append(missing, id)
			}
		}
	}
	if len(missing) == 0 {
		return "", nil
	}
	short := make([]string, 0, 3)
	for _, id := range missing[:min(len(missing), 3)] {
		short = append(short, id.Short())
	}
	more := ""
	if len(missing) > 3 {
		more = fmt.Sprintf(" and %d more", len(missing)-3)
	}
	return fmt.Sprintf("%d of its %d data blobs are in no readable pack (%s%s)",
		len(missing), len(ids), strings.Join(short, ", "), more), nil
}
