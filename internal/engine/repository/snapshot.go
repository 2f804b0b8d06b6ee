package repository

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/blobstore"
	"github.com/cofferhq/coffer/internal/engine/tree"
)

// snapshotKind is the seal label of snapshot manifest objects.
const snapshotKind = "snapshot v1"

// SnapshotPrefix is the object name prefix of snapshot manifests.
const SnapshotPrefix = "snapshots/"

// MissingBlobsError is a commit refused because blobs the snapshot
// references are not in the repository (never stored, or removed by garbage
// collection while the backup ran). Storing them again and committing again
// succeeds.
type MissingBlobsError struct {
	IDs []blob.ID
}

func (e *MissingBlobsError) Error() string {
	ids := make([]string, 0, min(len(e.IDs), 5))
	for _, id := range e.IDs[:min(len(e.IDs), 5)] {
		ids = append(ids, id.Short())
	}
	more := ""
	if len(e.IDs) > 5 {
		more = fmt.Sprintf(" and %d more", len(e.IDs)-5)
	}
	return fmt.Sprintf("%d blobs the snapshot references are not in the repository (%s%s): store them again and retry",
		len(e.IDs), strings.Join(ids, ", "), more)
}

// Commit flushes the writer and commits a snapshot of the tree snap.Tree:
// it collects every blob the tree reaches, writes the sealed manifest to
// snapshots/<id>, and records the snapshot in the index, which checks (and
// touches) every one of those blobs in the same transaction. If any is gone
// it returns a *MissingBlobsError and nothing is committed. It returns the
// snapshot's id: the keyed hash of its manifest.
func (w *Writer) Commit(ctx context.Context, snap *tree.Snapshot) (string, error) {
	if err := w.Flush(ctx); err != nil {
		return "", err
	}
	r := w.repo
	// A tree that is not indexed (a reused subtree GC took) is listed, not
	// descended into: the index then names it as missing.
	var refs []blob.ID
	err := r.reach(ctx, []blob.ID{snap.Tree}, map[blob.ID]struct{}{}, func(_ blob.Type, id blob.ID) error {
		refs = append(refs, id)
		return nil
	}, true)
	if err != nil {
		return "", fmt.Errorf("commit snapshot: %w", err)
	}
	manifest, err := snap.Marshal()
	if err != nil {
		return "", fmt.Errorf("commit snapshot: %w", err)
	}
	id := r.codec.ID(manifest).String()
	name := SnapshotPrefix + id
	sealed := r.codec.Seal(nil, snapshotKind, manifest)
	err = r.backend.Put(ctx, name, bytes.NewReader(sealed), int64(len(sealed)))
	// An existing manifest is this same snapshot, committed before (or by
	// an attempt whose answer was lost): never delete it below.
	created := err == nil
	if err != nil && !errors.Is(err, blobstore.ErrExists) {
		return "", fmt.Errorf("commit snapshot: store manifest %s: %w", name, err)
	}
	info := SnapshotInfo{ID: id, Time: snap.Time, Tree: snap.Tree, Manifest: manifest}
	missing, err := r.index.CommitSnapshot(ctx, info, refs)
	if err == nil && len(missing) > 0 {
		err = &MissingBlobsError{IDs: missing}
	}
	if err != nil {
		if !created {
			return "", fmt.Errorf("commit snapshot %s: %w", id, err)
		}
		// The manifest must not outlive a refused commit: rebuilding the
		// index from the repository would resurrect it.
		if derr := r.backend.Delete(context.WithoutCancel(ctx), name); derr != nil {
			err = errors.Join(err, fmt.Errorf("remove the uncommitted manifest %s: %w", name, derr))
		}
		return "", fmt.Errorf("commit snapshot %s: %w", id, err)
	}
	return id, nil
}

// Snapshots returns the committed snapshots, oldest first.
func (r *Repository) Snapshots(ctx context.Context) ([]SnapshotInfo, error) {
	return r.index.Snapshots(ctx)
}

// LoadSnapshot returns a committed snapshot's manifest.
func (r *Repository) LoadSnapshot(ctx context.Context, id string) (*tree.Snapshot, error) {
	info, err := r.index.Snapshot(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("load snapshot %s from %s: %w", id, r.Location(), err)
	}
	s, err := tree.UnmarshalSnapshot(info.Manifest)
	if err != nil {
		return nil, fmt.Errorf("load snapshot %s from %s: %w", id, r.Location(), err)
	}
	return s, nil
}

// ReadSnapshotObject reads and authenticates the manifest object of
// snapshot id from storage, returning its JSON and decoded form. Its id must
// be the keyed hash of the JSON.
func (r *Repository) ReadSnapshotObject(ctx context.Context, id string) ([]byte, *tree.Snapshot, error) {
	name := SnapshotPrefix + id
	info, err := r.backend.Stat(ctx, name)
	if err != nil {
		return nil, nil, fmt.Errorf("read snapshot manifest %s: %w", name, err)
	}
	if info.Size > 16<<20 {
		return nil, nil, fmt.Errorf("read snapshot manifest %s: %d bytes is not a manifest: %w", name, info.Size, tree.ErrCorrupt)
	}
	sealed, err := blobstore.ReadRange(ctx, r.backend, name, 0, info.Size)
	if err != nil {
		return nil, nil, fmt.Errorf("read snapshot manifest: %w", err)
	}
	manifest, err := r.codec.Open(snapshotKind, sealed)
	if err != nil {
		return nil, nil, fmt.Errorf("read snapshot manifest %s: %w", name, err)
	}
	if got := r.codec.ID(manifest).String(); got != id {
		return nil, nil, fmt.Errorf("read snapshot manifest %s: its content hashes to %s: %w", name, got, tree.ErrCorrupt)
	}
	s, err := tree.UnmarshalSnapshot(manifest)
	if err != nil {
		return nil, nil, fmt.Errorf("read snapshot manifest %s: %w", name, err)
	}
	return manifest, s, nil
}

// ForgetSnapshot removes a snapshot: its manifest object, then its index
// row. Its blobs are reclaimed by the next garbage collection unless other
// snapshots share them. Forgetting a snapshot that does not exist is not an
// error.
func (r *Repository) ForgetSnapshot(ctx context.Context, id string) error {
	// The object goes first: if we stopped between the two steps, the
	// snapshot would still be listed (and kept whole by GC) rather than be
	// resurrected by a later index rebuild.
	if err := r.backend.Delete(ctx, SnapshotPrefix+id); err != nil {
		return fmt.Errorf("forget snapshot %s: %w", id, err)
	}
	if err := r.index.DeleteSnapshot(ctx, id); err != nil {
		return fmt.Errorf("forget snapshot %s: %w", id, err)
	}
	return nil
}
