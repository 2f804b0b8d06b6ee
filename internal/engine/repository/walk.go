package repository

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/tree"
)

// LoadTree loads one tree blob as stored: a directory's nodes, or the list
// of its parts.
func (r *Repository) LoadTree(ctx context.Context, id blob.ID) (*tree.Tree, error) {
	buf, err := r.LoadBlob(ctx, blob.Tree, id, nil)
	if err != nil {
		return nil, err
	}
	return r.decodeTree(id, buf)
}

// decodeTree decodes the plaintext of tree blob id (the tree keeps no
// reference to buf).
func (r *Repository) decodeTree(id blob.ID, buf []byte) (*tree.Tree, error) {
	t, err := tree.Decode(buf)
	if err != nil {
		return nil, fmt.Errorf("tree %s in %s: %w", id, r.Location(), err)
	}
	return t, nil
}

// LoadDir loads a directory's nodes, joining its parts when it was split.
func (r *Repository) LoadDir(ctx context.Context, id blob.ID) ([]tree.Node, error) {
	t, err := r.LoadTree(ctx, id)
	if err != nil {
		return nil, err
	}
	nodes, err := tree.Nodes(ctx, t, r.LoadTree)
	if err != nil {
		return nil, fmt.Errorf("tree %s in %s: %w", id, r.Location(), err)
	}
	return nodes, nil
}

// Walk calls fn for every node below the directory tree root, depth first
// and in name order, with its slash-separated path relative to root. fn
// returning SkipDir for a directory skips its contents.
func (r *Repository) Walk(ctx context.Context, root blob.ID, fn func(p string, n *tree.Node) error) error {
	return r.walk(ctx, root, "", fn)
}

// SkipDir tells Walk not to descend into a directory.
var SkipDir = errors.New("skip this directory")

func (r *Repository) walk(ctx context.Context, id blob.ID, dir string, fn func(string, *tree.Node) error) error {
	nodes, err := r.LoadDir(ctx, id)
	if err != nil {
		return err
	}
	for i := range nodes {
		n := &nodes[i]
		p := path.Join(dir, n.Name)
		err := fn(p, n)
		if errors.Is(err, SkipDir) {
			continue
		}
		if err != nil {
			return err
		}
		if n.Type == tree.Dir {
			if err := r.walk(ctx, n.Subtree, p, fn); err != nil {
				return err
			}
		}
	}
	return nil
}

// Reach calls fn once for every blob reachable from the tree blobs roots —
// the roots themselves, every part and subtree, every file's content —
// skipping ids already in seen and adding each one it reports. Sharing seen
// across calls walks a subtree that several snapshots share only once.
// Tree blobs are loaded (and so authenticated); data blobs are not read.
func (r *Repository) Reach(ctx context.Context, roots []blob.ID, seen map[blob.ID]struct{}, fn func(blob.Type, blob.ID) error) error {
	return r.reach(ctx, roots, seen, fn, false)
}

// reach is Reach; with unindexedOK a tree that is not indexed is reported
// to fn like any other and not descended into, instead of failing.
func (r *Repository) reach(ctx context.Context, roots []blob.ID, seen map[blob.ID]struct{}, fn func(blob.Type, blob.ID) error, unindexedOK bool) error {
	stack := make([]blob.ID, 0, len(roots))
	visit := func(t blob.Type, id blob.ID) error {
		if _, ok := seen[id]; ok {
			return nil
		}
		seen[id] = struct{}{}
		if t == blob.Tree {
			stack = append(stack, id)
		}
		return fn(t, id)
	}
	for _, id := range roots {
		if err := visit(blob.Tree, id); err != nil {
			return err
		}
	}
	// Trees are looked up in batches: one query per tree would make a
	// commit of a million directories a million round trips.
	var buf []byte
	for len(stack) > 0 {
		batch := slices.Clone(stack[max(0, len(stack)-lookupBatch):])
		stack = stack[:len(stack)-len(batch)]
		locs, err := r.Locate(ctx, batch)
		if err != nil {
			return err
		}
		for _, id := range batch {
			loc, ok := locs[id]
			if !ok && unindexedOK {
				continue
			}
			if !ok {
				return fmt.Errorf("load tree blob %s from %s: %w", id, r.Location(), ErrNotIndexed)
			}
			if buf, err = r.ReadBlob(ctx, blob.Tree, id, loc, buf[:0]); err != nil {
				return err
			}
			t, err := r.decodeTree(id, buf)
			if err != nil {
				return err
			}
			for typ, ref := range t.Refs() {
				if err := visit(typ, ref); err != nil {
					return err
				}
			}
		}
	}
	return nil
}
