package main

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"

	"github.com/zeebo/blake3"
	"golang.org/x/sync/errgroup"
)

// node is what a restore must reproduce of one entry of the corpus: its
// type and permissions, and a regular file's content and modification
// time, or a symlink's target.
type node struct {
	Type    fs.FileMode // fs.ModeDir, fs.ModeSymlink or 0 for a regular file
	Perm    fs.FileMode
	Size    int64
	ModTime int64 // Unix nanoseconds, regular files only
	Hash    [32]byte
	Target  string
}

// String describes the node in a difference report.
func (n node) String() string {
	switch n.Type {
	case fs.ModeDir:
		return fmt.Sprintf("directory %v", n.Perm)
	case fs.ModeSymlink:
		return fmt.Sprintf("symlink → %q", n.Target)
	case 0:
		return fmt.Sprintf("file %v, %d bytes, mtime %d, blake3 %x…", n.Perm, n.Size, n.ModTime, n.Hash[:6])
	}
	return fmt.Sprintf("special file %v", n.Type)
}

// tree maps slash-separated paths relative to the root to their nodes.
type tree map[string]node

// files counts the regular files and their bytes.
func (t tree) files() (n int, bytes int64) {
	for _, e := range t {
		if e.Type == 0 {
			n++
			bytes += e.Size
		}
	}
	return n, bytes
}

// hashTree walks root and hashes every regular file, on all cores.
func hashTree(ctx context.Context, root string) (tree, error) {
	t := tree{}
	var files []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		n := node{Type: info.Mode().Type(), Perm: info.Mode().Perm() | info.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)}
		switch n.Type {
		case fs.ModeSymlink:
			if n.Target, err = os.Readlink(p); err != nil {
				return err
			}
			n.Perm = 0 // a symlink's own mode is not restored by anyone
		case 0:
			n.Size, n.ModTime = info.Size(), info.ModTime().UnixNano()
			files = append(files, rel)
		}
		t[rel] = n
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("walk %s: %w", root, err)
	}
	hashes := make([][32]byte, len(files))
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0))
	for i, rel := range files {
		g.Go(func() error {
			if err := ctx.Err(); err != nil {
				return err
			}
			h, err := hashFile(filepath.Join(root, filepath.FromSlash(rel)))
			hashes[i] = h
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("hash %s: %w", root, err)
	}
	for i, rel := range files {
		n := t[rel]
		n.Hash = hashes[i]
		t[rel] = n
	}
	return t, nil
}

func hashFile(p string) ([32]byte, error) {
	var sum [32]byte
	f, err := os.Open(p)
	if err != nil {
		return sum, err
	}
	defer f.Close()
	h := blake3.New()
	if _, err := io.Copy(h, f); err != nil {
		return sum, fmt.Errorf("read %s: %w", p, err)
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

// diffTrees lists how got differs from want, at most limit lines (and a
// count of the rest), sorted by path; nil when they are the same.
func diffTrees(want, got tree, limit int) []string {
	var out []string
	for p, w := range want {
		g, ok := got[p]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("%s: missing (want %v)", p, w))
		case g != w:
			out = append(out, fmt.Sprintf("%s: got %v, want %v", p, g, w))
		}
	}
	for p, g := range got {
		if _, ok := want[p]; !ok {
			out = append(out, fmt.Sprintf("%s: not in the corpus (%v)", p, g))
		}
	}
	sort.Strings(out)
	if len(out) > limit {
		out = append(out[:limit], fmt.Sprintf("… and %d more differences", len(out)-limit))
	}
	return out
}

// verifyRestore compares the restored tree at root with the corpus, and
// says exactly what differs.
func verifyRestore(ctx context.Context, tool string, want tree, root string) error {
	got, err := hashTree(ctx, root)
	if err != nil {
		return fmt.Errorf("check %s's restore: %w", tool, err)
	}
	if d := diffTrees(want, got, 20); d != nil {
		return fmt.Errorf("%s's restore at %s differs from the corpus (a wrong restore makes its time meaningless):\n  %s",
			tool, root, strings.Join(d, "\n  "))
	}
	return nil
}

// diskUsage is what `du -sb` reports for root: the apparent sizes of every
// entry (directories and symlinks included), hard-linked files once.
func diskUsage(root string) (int64, error) {
	type inode struct{ dev, ino uint64 }
	seen := map[inode]bool{}
	var total int64
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 && !info.IsDir() {
			k := inode{uint64(st.Dev), st.Ino}
			if seen[k] {
				return nil
			}
			seen[k] = true
		}
		total += info.Size()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("measure %s: %w", root, err)
	}
	return total, nil
}

// restoredRoot is where a tool that recreates the absolute layout puts the
// corpus when it restores into target.
func restoredRoot(target, corpus string) string {
	return filepath.Join(target, strings.TrimPrefix(filepath.Clean(corpus), string(filepath.Separator)))
}
