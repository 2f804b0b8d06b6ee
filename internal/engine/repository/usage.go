package repository

import (
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"slices"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/tree"
)

// Usage is how much storage a repository takes, from its index.
type Usage struct {
	StoredBytes int64 `json:"stored_bytes"` // sum of the indexed packs' sizes
	Packs       int   `json:"packs"`
	Blobs       int   `json:"blobs"`      // indexed blobs, garbage included
	BlobBytes   int64 `json:"blob_bytes"` // their stored (compressed, encrypted) bytes
	// LogicalBytes is the size of every snapshot's files added up, as if
	// each snapshot were stored in full.
	LogicalBytes int64 `json:"logical_bytes"`
	Snapshots    int   `json:"snapshots"`
	// DedupRatio is LogicalBytes per byte of BlobBytes: what deduplication
	// and compression together save (0 for an empty repository).
	DedupRatio float64 `json:"dedup_ratio"`
}

// Usage adds up the repository's packs, blobs and snapshots. A snapshot's
// logical size comes from its manifest's stats, or, for a manifest without
// stats, from walking its trees.
func (r *Repository) Usage(ctx context.Context) (*Usage, error) {
	u := &Usage{}
	err := r.index.Packs(ctx, func(p PackInfo) error {
		u.Packs++
		u.StoredBytes += p.Size
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("usage of %s: list packs: %w", r.Location(), err)
	}
	err = r.index.Blobs(ctx, func(b IndexedBlob) error {
		u.Blobs++
		u.BlobBytes += int64(b.Length)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("usage of %s: list blobs: %w", r.Location(), err)
	}
	snaps, err := r.index.Snapshots(ctx)
	if err != nil {
		return nil, fmt.Errorf("usage of %s: list snapshots: %w", r.Location(), err)
	}
	u.Snapshots = len(snaps)
	memo := map[blob.ID]int64{}
	for _, s := range snaps {
		n, err := r.logicalBytes(ctx, s, memo)
		if err != nil {
			return nil, fmt.Errorf("usage of %s: %w", r.Location(), err)
		}
		u.LogicalBytes += n
	}
	if u.BlobBytes > 0 {
		u.DedupRatio = float64(u.LogicalBytes) / float64(u.BlobBytes)
	}
	return u, nil
}

// SetUsage is what a set of snapshots takes in the repository.
type SetUsage struct {
	Snapshots int `json:"snapshots"`
	// UniqueBytes are the stored bytes of the blobs that only snapshots of
	// the set reach: what forgetting the set would free at the next GC.
	UniqueBytes int64 `json:"unique_bytes"`
	// SharedBytes are the stored bytes of the blobs that the set and some
	// snapshot outside it both reach.
	SharedBytes  int64 `json:"shared_bytes"`
	UniqueBlobs  int   `json:"unique_blobs"`
	SharedBlobs  int   `json:"shared_blobs"`
	LogicalBytes int64 `json:"logical_bytes"` // the size of the set's files, per snapshot
}

// SetUsage returns the usage of the snapshots ids. An unknown id is
// ErrSnapshotNotFound.
func (r *Repository) SetUsage(ctx context.Context, ids []string) (*SetUsage, error) {
	m, err := r.GroupUsage(ctx, map[string][]string{"": ids})
	if err != nil {
		return nil, err
	}
	return m[""], nil
}

// GroupUsage returns the usage of several sets of snapshots at once (the
// snapshots of each client, say), at the cost of about one walk of the
// repository's trees rather than one per set. A blob counts as unique to a
// set when no snapshot outside that set reaches it; the snapshots in no set
// count as outside every set. The sets must not overlap. An unknown id is
// ErrSnapshotNotFound.
//
// Blobs that are not indexed (see Verify) count for nothing; a tree that
// cannot be read is an error.
func (r *Repository) GroupUsage(ctx context.Context, groups map[string][]string) (map[string]*SetUsage, error) {
	snaps, err := r.index.Snapshots(ctx)
	if err != nil {
		return nil, fmt.Errorf("usage of %s: list snapshots: %w", r.Location(), err)
	}
	byID := make(map[string]SnapshotInfo, len(snaps))
	for _, s := range snaps {
		byID[s.ID] = s
	}
	names := slices.Sorted(maps.Keys(groups))
	out := make(map[string]*SetUsage, len(names))
	// Every set gets an owner number; the snapshots in no set share the
	// last one.
	members := make([][]SnapshotInfo, len(names)+1)
	grouped := map[string]bool{}
	memo := map[blob.ID]int64{}
	for g, name := range names {
		u := &SetUsage{}
		out[name] = u
		seen := map[string]bool{}
		for _, id := range groups[name] {
			s, ok := byID[id]
			if !ok {
				return nil, fmt.Errorf("usage of snapshot %s in %s: %w", id, r.Location(), ErrSnapshotNotFound)
			}
			if seen[id] {
				continue
			}
			if grouped[id] {
				return nil, fmt.Errorf("usage of %s: snapshot %s is in two sets", r.Location(), id)
			}
			seen[id], grouped[id] = true, true
			members[g] = append(members[g], s)
			u.Snapshots++
			n, err := r.logicalBytes(ctx, s, memo)
			if err != nil {
				return nil, fmt.Errorf("usage of %s: %w", r.Location(), err)
			}
			u.LogicalBytes += n
		}
	}
	rest := len(names)
	for _, s := range snaps {
		if !grouped[s.ID] {
			members[rest] = append(members[rest], s)
		}
	}
	own := newOwnership()
	for g, ss := range members {
		if err := r.markOwner(ctx, ss, int32(g), own); err != nil {
			return nil, fmt.Errorf("usage of %s: %w", r.Location(), err)
		}
	}
	if err := r.countOwned(ctx, own, names, out); err != nil {
		return nil, fmt.Errorf("usage of %s: %w", r.Location(), err)
	}
	return out, nil
}

// markOwner adds owner g to every blob the snapshots ss reach. A tree that
// already has g was walked for g, so each tree is walked once per owner.
func (r *Repository) markOwner(ctx context.Context, ss []SnapshotInfo, g int32, own *ownership) error {
	var stack []blob.ID
	visit := func(t blob.Type, id blob.ID) {
		if own.add(id, g) && t == blob.Tree {
			stack = append(stack, id)
		}
	}
	for _, s := range ss {
		visit(blob.Tree, s.Tree)
	}
	for len(stack) > 0 {
		id := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		t, err := r.LoadTree(ctx, id)
		if err != nil {
			return err
		}
		for typ, ref := range t.Refs() {
			visit(typ, ref)
		}
	}
	return nil
}

// countOwned adds each blob's stored size to the sets that own it: to
// UniqueBytes when it has one owner, to SharedBytes of each owner when it
// has several.
func (r *Repository) countOwned(ctx context.Context, own *ownership, names []string, out map[string]*SetUsage) error {
	ids := make([]blob.ID, 0, min(len(own.of), lookupBatch))
	count := func() error {
		locs, err := r.index.Lookup(ctx, ids)
		if err != nil {
			return fmt.Errorf("look up blobs: %w", err)
		}
		for _, id := range ids {
			loc, ok := locs[id]
			if !ok {
				continue
			}
			set := own.sets[own.of[id]]
			for _, g := range set {
				if int(g) == len(names) {
					continue // the snapshots in no set
				}
				u := out[names[g]]
				if len(set) == 1 {
					u.UniqueBlobs++
					u.UniqueBytes += int64(loc.Length)
				} else {
					u.SharedBlobs++
					u.SharedBytes += int64(loc.Length)
				}
			}
		}
		ids = ids[:0]
		return nil
	}
	for id := range own.of {
		ids = append(ids, id)
		if len(ids) == lookupBatch {
			if err := count(); err != nil {
				return err
			}
		}
	}
	return count()
}

// ownership records which owners reach each blob. Sets of owners are
// interned: a repository has few distinct ones (most blobs have one owner),
// so each blob costs its id and a number.
type ownership struct {
	of     map[blob.ID]uint32 // blob → index in sets; 0 is the empty set
	sets   [][]int32          // sorted owner numbers
	byKey  map[string]uint32
	extend map[[2]uint32]uint32 // (set, owner) → set with owner added
}

func newOwnership() *ownership {
	return &ownership{of: map[blob.ID]uint32{}, sets: [][]int32{nil}, byKey: map[string]uint32{},
		extend: map[[2]uint32]uint32{}}
}

// add makes g an owner of id and reports whether it was not already.
func (o *ownership) add(id blob.ID, g int32) bool {
	cur := o.of[id]
	if slices.Contains(o.sets[cur], g) {
		return false
	}
	k := [2]uint32{cur, uint32(g)}
	next, ok := o.extend[k]
	if !ok {
		set := append(slices.Clone(o.sets[cur]), g)
		slices.Sort(set)
		key := make([]byte, 0, 4*len(set))
		for _, m := range set {
			key = binary.LittleEndian.AppendUint32(key, uint32(m))
		}
		if next, ok = o.byKey[string(key)]; !ok {
			next = uint32(len(o.sets))
			o.sets = append(o.sets, set)
			o.byKey[string(key)] = next
		}
		o.extend[k] = next
	}
	o.of[id] = next
	return true
}

// logicalBytes returns the size of a snapshot's files: its manifest's
// stats, or when it has none, the sum over its trees. memo holds the sizes
// of directories already added up, so shared subtrees are read once.
func (r *Repository) logicalBytes(ctx context.Context, s SnapshotInfo, memo map[blob.ID]int64) (int64, error) {
	snap, err := tree.UnmarshalSnapshot(s.Manifest)
	if err != nil {
		return 0, fmt.Errorf("snapshot %s: %w", s.ID, err)
	}
	if snap.Stats != (tree.SnapshotStats{}) {
		return int64(snap.Stats.Bytes), nil
	}
	n, err := r.dirBytes(ctx, s.Tree, memo)
	if err != nil {
		return 0, fmt.Errorf("size of snapshot %s: %w", s.ID, err)
	}
	return n, nil
}

func (r *Repository) dirBytes(ctx context.Context, id blob.ID, memo map[blob.ID]int64) (int64, error) {
	if n, ok := memo[id]; ok {
		return n, nil
	}
	nodes, err := r.LoadDir(ctx, id)
	if err != nil {
		return 0, err
	}
	var n int64
	for i := range nodes {
		switch nodes[i].Type {
		case tree.File:
			n += int64(nodes[i].Size)
		case tree.Dir:
			sub, err := r.dirBytes(ctx, nodes[i].Subtree, memo)
			if err != nil {
				return 0, err
			}
			n += sub
		}
	}
	memo[id] = n
	return n, nil
}
