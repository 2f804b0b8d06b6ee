package repository

import (
	"context"
	"errors"
	"fmt"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/blobstore"
)

// Locate returns the index locations of ids; ids that are not indexed are
// absent from the map.
func (r *Repository) Locate(ctx context.Context, ids []blob.ID) (map[blob.ID]Location, error) {
	locs, err := r.index.Lookup(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("look up blobs in %s: %w", r.Location(), err)
	}
	return locs, nil
}

// LoadBlob returns the plaintext of blob id of type t, appended to dst. The
// content is authenticated and re-hashed: it is returned only if it matches
// id. A blob that is not indexed is ErrNotIndexed; a damaged one matches
// blob.ErrCorrupt; a pack missing from storage matches
// blobstore.ErrNotFound. Every error names the blob and the pack.
func (r *Repository) LoadBlob(ctx context.Context, t blob.Type, id blob.ID, dst []byte) ([]byte, error) {
	locs, err := r.Locate(ctx, []blob.ID{id})
	if err != nil {
		return nil, err
	}
	loc, ok := locs[id]
	if !ok {
		return nil, fmt.Errorf("load %s blob %s from %s: %w", t, id, r.Location(), ErrNotIndexed)
	}
	return r.ReadBlob(ctx, t, id, loc, dst)
}

// ReadBlob is LoadBlob with the blob's location already looked up (see
// Locate), for readers that look up many blobs at once. When the pack is
// gone because garbage collection repacked the blob meanwhile, it looks the
// blob up again and reads it from its new pack.
func (r *Repository) ReadBlob(ctx context.Context, t blob.Type, id blob.ID, loc Location, dst []byte) ([]byte, error) {
	out, err := r.readAt(ctx, t, id, loc, dst)
	if !errors.Is(err, blobstore.ErrNotFound) {
		return out, err
	}
	locs, lerr := r.Locate(ctx, []blob.ID{id})
	if lerr != nil {
		return nil, errors.Join(err, lerr)
	}
	if moved, ok := locs[id]; ok && moved.Pack != loc.Pack {
		return r.readAt(ctx, t, id, moved, dst)
	}
	return nil, err
}

func (r *Repository) readAt(ctx context.Context, t blob.Type, id blob.ID, loc Location, dst []byte) ([]byte, error) {
	name := loc.Pack.Name()
	stored, err := blobstore.ReadRange(ctx, r.backend, name, int64(loc.Offset), int64(loc.Length))
	if errors.Is(err, blobstore.ErrRange) {
		return nil, fmt.Errorf("load %s blob %s: pack %s is truncated: %w: %w", t, id, name, err, blob.ErrCorrupt)
	}
	if err != nil {
		return nil, fmt.Errorf("load %s blob %s from pack %s: %w", t, id, name, err)
	}
	return r.decodeAt(t, id, loc, stored, dst)
}
