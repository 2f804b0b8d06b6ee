package backups

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/tree"
	"github.com/cofferhq/coffer/internal/protocol"
)

// TreeOf lists the directory at path p in backup id (for users, who may
// see every client's backups).
func (s *Service) TreeOf(ctx context.Context, id, p string) ([]protocol.TreeEntry, error) {
	b, err := s.store.GetBackup(ctx, id)
	if err != nil {
		return nil, err
	}
	return s.tree(ctx, b, p)
}

// tree walks b's root tree along p: slash-separated, relative to the root
// (a leading "/" is ignored; "" and "/" are the root). A directory lists
// its entries; anything else lists itself.
func (s *Service) tree(ctx context.Context, b *coffer.Backup, p string) ([]protocol.TreeEntry, error) {
	if b.RootTree == "" || b.SnapshotID == "" {
		return nil, coffer.Errorf(coffer.KindConflict, "backup_not_committed",
			"backup %s is %s and has no snapshot to list", b.ID, b.State).With("state", string(b.State))
	}
	if len(p) > MaxPathLen || strings.IndexByte(p, 0) >= 0 {
		return nil, coffer.Errorf(coffer.KindInvalid, "invalid_path", "path %q is longer than 4096 bytes or holds a NUL byte", truncate(p)).
			With("field", "path")
	}
	dir, err := blob.ParseID(b.RootTree)
	if err != nil {
		return nil, fmt.Errorf("backup %s: root tree %q: %w", b.ID, b.RootTree, err)
	}
	repo, err := s.repoOf(ctx, b)
	if err != nil {
		return nil, err
	}
	var elems []string
	for _, e := range strings.Split(p, "/") {
		if e != "" && e != "." {
			elems = append(elems, e)
		}
	}
	for i, name := range elems {
		nodes, err := repo.LoadDir(ctx, dir)
		if err != nil {
			return nil, fmt.Errorf("list backup %s: %w", b.ID, err)
		}
		j := sort.Search(len(nodes), func(k int) bool { return nodes[k].Name >= name })
		if j == len(nodes) || nodes[j].Name != name {
			return nil, pathNotFound(b, p)
		}
		n := &nodes[j]
		if n.Type != tree.Dir {
			if i < len(elems)-1 {
				return nil, pathNotFound(b, p)
			}
			return []protocol.TreeEntry{entry(n)}, nil
		}
		dir = n.Subtree
	}
	nodes, err := repo.LoadDir(ctx, dir)
	if err != nil {
		return nil, fmt.Errorf("list backup %s: %w", b.ID, err)
	}
	out := make([]protocol.TreeEntry, len(nodes))
	for i := range nodes {
		out[i] = entry(&nodes[i])
	}
	return out, nil
}

func pathNotFound(b *coffer.Backup, p string) error {
	return coffer.Errorf(coffer.KindNotFound, "path_not_found", "backup %s has nothing at %q", b.ID, truncate(p)).
		With("path", truncate(p))
}

// entryTypes names node types on the wire (block devices are "dev").
var entryTypes = map[tree.Type]string{tree.File: "file", tree.Dir: "dir", tree.Symlink: "symlink",
	tree.BlockDevice: "dev", tree.CharDevice: "chardev", tree.Fifo: "fifo", tree.Socket: "socket"}

func entry(n *tree.Node) protocol.TreeEntry {
	return protocol.TreeEntry{Name: n.Name, Type: entryTypes[n.Type], Mode: n.Mode, Size: n.Size, Mtime: n.ModTime,
		User: n.User, Group: n.Group, UID: n.UID, GID: n.GID, Target: n.LinkTarget, Content: len(n.Content)}
}
