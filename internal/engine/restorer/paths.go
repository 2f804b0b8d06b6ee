package restorer

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/tree"
)

// cleanPath turns a path to restore into a clean slash-separated path
// relative to the snapshot's root, "" for the root itself. A leading "/"
// is ignored; a ".." element is ErrBadPath.
func cleanPath(p string) (string, error) {
	rel := strings.TrimLeft(p, "/")
	for _, e := range strings.Split(rel, "/") {
		if e == ".." {
			return "", fmt.Errorf("%q: %w: \"..\" is not allowed; give the path from the snapshot's root, like home/user/docs", p, ErrBadPath)
		}
	}
	if rel = path.Clean(rel); rel == "." {
		rel = ""
	}
	return rel, nil
}

// cleanPaths cleans paths, sorts them and removes duplicates; nil means
// the whole tree (no paths, or one of them the root).
func cleanPaths(paths []string) ([]string, error) {
	out := make([]string, 0, len(paths))
	all := len(paths) == 0
	for _, p := range paths {
		c, err := cleanPath(p)
		if err != nil {
			return nil, err
		}
		all = all || c == ""
		out = append(out, c)
	}
	if all {
		return nil, nil
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// resolver finds paths in a snapshot, loading each directory once.
type resolver struct {
	repo Repository
	root blob.ID
	dirs map[blob.ID][]tree.Node
}

func newResolver(repo Repository, root blob.ID) *resolver {
	return &resolver{repo: repo, root: root, dirs: map[blob.ID][]tree.Node{}}
}

// lookup returns the nodes on the way to the clean, non-empty path p,
// from the root's child to p's own node.
func (rs *resolver) lookup(ctx context.Context, p string) ([]tree.Node, error) {
	elems := strings.Split(p, "/")
	chain := make([]tree.Node, 0, len(elems))
	id := rs.root
	for i, name := range elems {
		if i > 0 {
			if last := &chain[i-1]; last.Type != tree.Dir {
				return nil, fmt.Errorf("%s: %w (%s is a %s, not a directory)", p, ErrNotInSnapshot, path.Join(elems[:i]...), last.Type)
			}
			id = chain[i-1].Subtree
		}
		nodes, ok := rs.dirs[id]
		if !ok {
			var err error
			if nodes, err = rs.repo.LoadDir(ctx, id); err != nil {
				return nil, fmt.Errorf("load directory /%s: %w", path.Join(elems[:i]...), err)
			}
			rs.dirs[id] = nodes
		}
		j, found := slices.BinarySearchFunc(nodes, name, func(n tree.Node, name string) int { return strings.Compare(n.Name, name) })
		if !found {
			return nil, fmt.Errorf("%s: %w", p, ErrNotInSnapshot)
		}
		chain = append(chain, nodes[j])
	}
	return chain, nil
}

// planEntry is an entry of the snapshot that RestorePaths writes: one of
// the paths asked for, restored whole, or a directory on the way to some.
type planEntry struct {
	node     tree.Node
	whole    bool                  // restore node and everything below it
	children map[string]*planEntry // otherwise, what to restore in it
}

// plan finds every path (clean, non-empty) in the snapshot, and returns
// them as a tree whose top entry stands for the root; a path inside
// another is restored as part of it.
func (rs *resolver) plan(ctx context.Context, paths []string) (*planEntry, error) {
	top := &planEntry{}
	for _, p := range paths {
		chain, err := rs.lookup(ctx, p)
		if err != nil {
			return nil, err
		}
		e := top
		for _, n := range chain {
			if e.whole {
				break // covered by e
			}
			c := e.children[n.Name]
			if c == nil {
				c = &planEntry{node: n}
				if e.children == nil {
					e.children = map[string]*planEntry{}
				}
				e.children[n.Name] = c
			}
			e = c
		}
		e.whole, e.children = true, nil
	}
	return top, nil
}

// walkPlan restores what e plans into d: whole entries as Restore does,
// the directories on the way with their own metadata, and none of the
// entries beside them.
func (run *run) walkPlan(d *dir, e *planEntry) error {
	names := make([]string, 0, len(e.children))
	for name := range e.children {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if err := run.ctx.Err(); err != nil {
			return err
		}
		c := e.children[name]
		if c.whole {
			if err := run.entry(d, &c.node); err != nil {
				return err
			}
			continue
		}
		if err := checkName(c.node.Name); err != nil {
			run.report(d.join(c.node.Name), err)
			continue
		}
		child := run.enterDir(d, &c.node)
		if child == nil {
			continue
		}
		err := run.walkPlan(child, c)
		child.release()
		if err != nil {
			return err
		}
	}
	return nil
}
