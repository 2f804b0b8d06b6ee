package restorer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/tree"
)

// run is the state of one Restore call.
type run struct {
	r      *Restorer
	ctx    context.Context
	rootfd int
	owners bool // restore owners

	jobs   chan job
	counts counters

	mu     sync.Mutex
	errors []EntryError

	batches chan []*file // from the walker to the dispatcher

	// Owned by the walker until the workers are done.
	pending    []*file
	pendingIDs int
	batchIDs   int // ids in the next batch
	dirs       []dirMeta
	links      []hardLink
	groups     map[linkKey]*file
}

type counters struct {
	files, dirs, symlinks, links, others, skipped, bytes atomic.Uint64
}

// dir is an open directory of the destination; files being written in it
// hold references, and the last one closes it.
type dir struct {
	fd   int
	path string // relative to the destination
	refs atomic.Int32
}

func (d *dir) join(name string) string { return path.Join(d.path, name) }

func (d *dir) release() {
	if d.refs.Add(-1) == 0 {
		unix.Close(d.fd)
	}
}

// dirMeta is a restored directory whose metadata is applied at the end.
// It copies what it needs from the node: a pointer into the parent's nodes
// would keep every directory listing of the snapshot in memory until then.
type dirMeta struct {
	path           string
	uid, gid, mode uint32
	mtime          time.Time
	xattrs         []tree.Xattr
}

type linkKey struct{ inode, device uint64 }

// hardLink is a path to link to the file restored first in its group.
type hardLink struct {
	path   string
	target *file
}

// Restore writes the entry at path in the tree root (slash-separated; ""
// for the whole tree) into the directory dst, which is created if missing.
// A directory's contents go into dst; any other entry goes into dst under
// its name. Entries that cannot be written are listed in Stats.Errors.
func (r *Restorer) Restore(ctx context.Context, root blob.ID, path, dst string) (Stats, error) {
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return Stats{}, fmt.Errorf("restore to %s: %w", dst, err)
	}
	rootfd, err := retry(func() (int, error) {
		return unix.Open(dst, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	})
	if err != nil {
		return Stats{}, fmt.Errorf("restore to %s: %w", dst, err)
	}
	defer unix.Close(rootfd)
	g, gctx := errgroup.WithContext(ctx)
	run := &run{r: r, ctx: gctx, rootfd: rootfd, owners: r.root && !r.opts.NoOwnership,
		jobs: make(chan job, r.opts.Workers), batches: make(chan []*file, 2),
		batchIDs: min(64, r.opts.LocateBatch), groups: map[linkKey]*file{}}
	g.Go(func() error {
		defer close(run.batches)
		err := run.walkRoot(root, path)
		if err == nil {
			err = run.flush()
		}
		if err != nil {
			for _, f := range run.pending {
				f.dir.release()
			}
		}
		return err
	})
	g.Go(run.dispatch)
	for range r.opts.Workers {
		g.Go(run.write)
	}
	err = g.Wait()
	if err == nil {
		run.ctx = ctx // Wait cancelled gctx
		err = run.finish()
	}
	st := run.stats()
	if err != nil {
		what := path
		if path == "" {
			what = "the snapshot"
		}
		return st, fmt.Errorf("restore %s to %s: %w", what, dst, err)
	}
	return st, nil
}

func (run *run) stats() Stats {
	c := &run.counts
	st := Stats{Files: c.files.Load(), Dirs: c.dirs.Load(), Symlinks: c.symlinks.Load(), Links: c.links.Load(),
		Others: c.others.Load(), Skipped: c.skipped.Load(), Bytes: c.bytes.Load()}
	run.mu.Lock()
	st.Errors = slices.Clone(run.errors)
	run.mu.Unlock()
	slices.SortStableFunc(st.Errors, func(a, b EntryError) int { return strings.Compare(a.Path, b.Path) })
	return st
}

func (run *run) report(p string, err error) {
	e := EntryError{Path: p, Err: err}
	run.mu.Lock()
	run.errors = append(run.errors, e)
	run.mu.Unlock()
	if run.r.opts.OnError != nil {
		run.r.opts.OnError(e)
	}
}

// walkRoot finds path in the tree and restores it.
func (run *run) walkRoot(root blob.ID, p string) error {
	top := &dir{fd: run.rootfd}
	top.refs.Store(2) // the walker's, and the run's: rootfd closes in Restore
	defer top.release()
	if p == "" || p == "/" || p == "." {
		return run.walkDir(top, root)
	}
	id := root
	elems := strings.Split(strings.Trim(p, "/"), "/")
	for i, name := range elems {
		nodes, err := run.r.repo.LoadDir(run.ctx, id)
		if err != nil {
			return err
		}
		j, found := slices.BinarySearchFunc(nodes, name, func(n tree.Node, name string) int { return strings.Compare(n.Name, name) })
		if !found {
			return fmt.Errorf("%s: no such entry in the snapshot", path.Join(elems[:i+1]...))
		}
		n := &nodes[j]
		if i < len(elems)-1 {
			if n.Type != tree.Dir {
				return fmt.Errorf("%s: not a directory", path.Join(elems[:i+1]...))
			}
			id = n.Subtree
			continue
		}
		if n.Type == tree.Dir {
			if err := run.walkDir(top, n.Subtree); err != nil {
				return err
			}
		} else if err := run.entry(top, n); err != nil {
			return err
		}
	}
	return nil
}

// walkDir restores the entries of the tree id into d.
func (run *run) walkDir(d *dir, id blob.ID) error {
	nodes, err := run.r.repo.LoadDir(run.ctx, id)
	if err != nil {
		if run.ctx.Err() != nil {
			return run.ctx.Err()
		}
		run.report(d.path, fmt.Errorf("load directory: %w", err))
		return nil
	}
	for i := range nodes {
		if err := run.ctx.Err(); err != nil {
			return err
		}
		if err := run.entry(d, &nodes[i]); err != nil {
			return err
		}
	}
	return nil
}

// entry restores one node into d: directories recursively, files through
// the workers, everything else at once.
func (run *run) entry(d *dir, n *tree.Node) error {
	p := d.join(n.Name)
	if err := checkName(n.Name); err != nil {
		run.report(p, err)
		return nil
	}
	switch n.Type {
	case tree.Dir:
		fd, err := makeDir(d.fd, n.Name)
		if err != nil {
			run.report(p, fmt.Errorf("make directory: %w", err))
			return nil
		}
		child := &dir{fd: fd, path: p}
		child.refs.Store(1)
		run.dirs = append(run.dirs, dirMeta{path: p, uid: n.UID, gid: n.GID, mode: n.Mode, mtime: n.ModTime, xattrs: n.Xattrs})
		run.counts.dirs.Add(1)
		err = run.walkDir(child, n.Subtree)
		child.release()
		return err
	case tree.File:
		key := linkKey{n.Inode, n.DeviceID}
		if n.Links >= 2 {
			if first, ok := run.groups[key]; ok {
				run.links = append(run.links, hardLink{path: p, target: first})
				return nil
			}
		}
		f, err := run.queue(d, n, p)
		if n.Links >= 2 {
			run.groups[key] = f
		}
		return err
	case tree.Symlink:
		run.symlink(d, n, p)
	case tree.Fifo, tree.CharDevice, tree.BlockDevice:
		if n.Type != tree.Fifo && !run.r.root {
			run.counts.skipped.Add(1)
			return nil
		}
		run.special(d, n, p)
	default: // sockets belong to the process that made them
		run.counts.skipped.Add(1)
	}
	return nil
}

func (run *run) symlink(d *dir, n *tree.Node, p string) {
	err := clearEntry(d.fd, n.Name)
	if err == nil {
		err = unix.Symlinkat(n.LinkTarget, d.fd, n.Name)
	}
	if err == nil && run.owners {
		err = lchown(d.fd, n.Name, n)
	}
	if err == nil {
		err = setMtime(d.fd, n.Name, n.ModTime)
	}
	if err != nil {
		run.report(p, fmt.Errorf("symlink: %w", err))
		return
	}
	run.counts.symlinks.Add(1)
}

func (run *run) special(d *dir, n *tree.Node, p string) {
	err := clearEntry(d.fd, n.Name)
	if err == nil {
		err = makeSpecial(d.fd, n.Name, n)
	}
	if err == nil && run.owners {
		err = lchown(d.fd, n.Name, n)
	}
	if err == nil {
		err = chmodNoFollow(d.fd, n.Name, n.Mode) // after chown, which clears setuid and setgid
	}
	if err == nil {
		err = setMtime(d.fd, n.Name, n.ModTime)
	}
	if err != nil {
		run.report(p, fmt.Errorf("make %s: %w", n.Type, err))
		return
	}
	run.counts.others.Add(1)
}

// finish makes the hard links, then applies the directories' metadata,
// deepest first.
func (run *run) finish() error {
	for _, l := range run.links {
		if err := run.ctx.Err(); err != nil {
			return err
		}
		if !l.target.ok.Load() {
			run.report(l.path, fmt.Errorf("hard link to %s, which was not restored", l.target.path))
			continue
		}
		if err := run.link(l); err != nil {
			run.report(l.path, fmt.Errorf("hard link to %s: %w", l.target.path, err))
			continue
		}
		run.counts.links.Add(1)
	}
	slices.SortStableFunc(run.dirs, func(a, b dirMeta) int { return strings.Count(b.path, "/") - strings.Count(a.path, "/") })
	for _, m := range run.dirs {
		if err := run.ctx.Err(); err != nil {
			return err
		}
		if err := run.dirMeta(m); err != nil {
			run.report(m.path, err)
		}
	}
	return nil
}

func (run *run) link(l hardLink) error {
	from, err := openPath(run.rootfd, parent(l.target.path))
	if err != nil {
		return err
	}
	defer unix.Close(from)
	to, err := openPath(run.rootfd, parent(l.path))
	if err != nil {
		return err
	}
	defer unix.Close(to)
	name := path.Base(l.path)
	if err := clearEntry(to, name); err != nil {
		return err
	}
	return unix.Linkat(from, path.Base(l.target.path), to, name, 0)
}

// parent is path.Dir for paths relative to the destination ("" at the top).
func parent(p string) string {
	if d := path.Dir(p); d != "." {
		return d
	}
	return ""
}

func (run *run) dirMeta(m dirMeta) error {
	pfd, err := openPath(run.rootfd, parent(m.path))
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	name := path.Base(m.path)
	fd, err := openDirAt(pfd, name)
	if err != nil {
		return err
	}
	var errs []error
	if run.owners {
		errs = append(errs, unix.Fchown(fd, int(m.uid), int(m.gid)))
	}
	errs = append(errs, setXattrs(fd, m.xattrs), unix.Fchmod(fd, m.mode)) // in fileMeta's order
	unix.Close(fd)
	errs = append(errs, setMtime(pfd, name, m.mtime))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("directory metadata: %w", err)
	}
	return nil
}
