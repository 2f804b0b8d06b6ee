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

// run is the state of one restore.
type run struct {
	r        *Restorer
	ctx      context.Context
	rootfd   int
	owners   bool // restore owners
	policy   Overwrite
	progress *Progress // Options.Progress, or one nobody reads

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
	files, dirs, symlinks, links, others, skipped, bytes, kept, renamed atomic.Uint64
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

// dirMeta is a restored directory whose metadata is applied at the end
// (an existing one only under OverwriteAlways).
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

// Restore writes the entry at path in the tree root (slash-separated,
// relative to the root; a leading "/" is ignored; "", "/" or "." for the
// whole tree) into the directory dst, which is created if missing. A
// directory's contents go into dst itself; any other entry goes into dst
// under its name. A path with a ".." element is ErrBadPath, one the tree
// does not have ErrNotInSnapshot, both returned before anything is
// written. Entries that cannot be written are listed in Stats.Errors.
func (r *Restorer) Restore(ctx context.Context, root blob.ID, path, dst string) (Stats, error) {
	p, err := cleanPath(path)
	if err != nil {
		return Stats{}, fmt.Errorf("restore to %s: %w", dst, err)
	}
	what := "the snapshot"
	if p == "" {
		return r.restore(ctx, dst, what, func(run *run, top *dir) error { return run.walkDir(top, root) })
	}
	what = p
	rs := newResolver(r.repo, root)
	chain, err := rs.lookup(ctx, p)
	if err != nil {
		return Stats{}, fmt.Errorf("restore %s to %s: %w", what, dst, err)
	}
	n := &chain[len(chain)-1]
	return r.restore(ctx, dst, what, func(run *run, top *dir) error {
		if n.Type == tree.Dir {
			return run.walkDir(top, n.Subtree)
		}
		return run.entry(top, n)
	})
}

// RestorePaths writes the entries at paths in the tree root into the
// directory dst, which is created if missing, each in its place in the
// tree: "home/u/docs" is restored as dst/home/u/docs, its ancestors home
// and u made as directories with their recorded metadata (entries beside
// them are not restored). Paths are slash-separated, relative to the root;
// a leading "/" is ignored; no paths, "", "/" or "." mean the whole tree.
// Paths are cleaned, and a path inside another is restored once, as part
// of it. A path with a ".." element is ErrBadPath, one the tree does not
// have ErrNotInSnapshot, both returned (naming the path) before anything
// is written. Entries that cannot be written are listed in Stats.Errors.
func (r *Restorer) RestorePaths(ctx context.Context, root blob.ID, paths []string, dst string) (Stats, error) {
	clean, err := cleanPaths(paths)
	if err != nil {
		return Stats{}, fmt.Errorf("restore to %s: %w", dst, err)
	}
	if clean == nil {
		return r.restore(ctx, dst, "the snapshot", func(run *run, top *dir) error { return run.walkDir(top, root) })
	}
	what := strings.Join(clean, ", ")
	if len(clean) > 3 {
		what = fmt.Sprintf("%s and %d more paths", strings.Join(clean[:3], ", "), len(clean)-3)
	}
	plan, err := newResolver(r.repo, root).plan(ctx, clean)
	if err != nil {
		return Stats{}, fmt.Errorf("restore %s to %s: %w", what, dst, err)
	}
	return r.restore(ctx, dst, what, func(run *run, top *dir) error { return run.walkPlan(top, plan) })
}

// restore runs walk, which restores entries into top, the destination dst
// (what names them in errors), with the workers writing files meanwhile.
func (r *Restorer) restore(ctx context.Context, dst, what string, walk func(*run, *dir) error) (Stats, error) {
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return Stats{}, fmt.Errorf("restore to %s: %w", dst, err)
	}
	// From here on, everything is relative to rootfd: the directory dst
	// names now, whatever happens to the path later.
	rootfd, err := retry(func() (int, error) {
		return unix.Open(dst, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	})
	if err != nil {
		return Stats{}, fmt.Errorf("restore to %s: %w", dst, err)
	}
	defer unix.Close(rootfd)
	g, gctx := errgroup.WithContext(ctx)
	run := &run{r: r, ctx: gctx, rootfd: rootfd, owners: r.root && !r.opts.NoOwnership,
		policy: r.opts.Overwrite, progress: r.opts.Progress,
		jobs: make(chan job, r.opts.Workers), batches: make(chan []*file, 2),
		batchIDs: min(64, r.opts.LocateBatch), groups: map[linkKey]*file{}}
	if run.progress == nil {
		run.progress = new(Progress)
	}
	g.Go(func() error {
		defer close(run.batches)
		top := &dir{fd: run.rootfd}
		top.refs.Store(2) // the walker's, and the run's: rootfd closes in restore
		err := walk(run, top)
		top.release()
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
		return st, fmt.Errorf("restore %s to %s: %w", what, dst, err)
	}
	return st, nil
}

func (run *run) stats() Stats {
	c := &run.counts
	st := Stats{Files: c.files.Load(), Dirs: c.dirs.Load(), Symlinks: c.symlinks.Load(), Links: c.links.Load(),
		Others: c.others.Load(), Skipped: c.skipped.Load(), Bytes: c.bytes.Load(),
		Kept: c.kept.Load(), Renamed: c.renamed.Load()}
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
	run.progress.Errors.Add(1)
	if run.r.opts.OnError != nil {
		run.r.opts.OnError(e)
	}
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
		child := run.enterDir(d, n)
		if child == nil {
			return nil
		}
		err := run.walkDir(child, n.Subtree)
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
		if run.keepFile(d, n, p) {
			return nil
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

// enterDir makes (or finds) the directory n in d, following the overwrite
// policy, and opens it; it returns nil when the directory is not restored
// (an existing entry kept, or a failure, reported).
func (run *run) enterDir(d *dir, n *tree.Node) *dir {
	name, existed, err := run.placeDir(d.fd, n)
	if err == nil && name == "" {
		run.counts.kept.Add(1)
		return nil
	}
	var fd int
	if err == nil {
		fd, err = openDirAt(d.fd, name)
	}
	if err != nil {
		run.report(d.join(n.Name), fmt.Errorf("make directory: %w", err))
		return nil
	}
	if name != n.Name {
		run.counts.renamed.Add(1)
	}
	child := &dir{fd: fd, path: d.join(name)}
	child.refs.Store(1)
	if !existed || run.policy == OverwriteAlways {
		run.dirs = append(run.dirs, dirMeta{path: child.path, uid: n.UID, gid: n.GID, mode: n.Mode, mtime: n.ModTime, xattrs: n.Xattrs})
	}
	run.counts.dirs.Add(1)
	run.progress.Dirs.Add(1)
	run.progress.path.Store(&child.path)
	return child
}

// keepFile tells whether the file n is not to be restored because an
// entry exists at its name that the policy keeps, counting it, or
// reporting a directory in its way: checked before its content is read.
// Whether the file replaces an entry is decided again when it is renamed
// into place.
func (run *run) keepFile(d *dir, n *tree.Node, p string) bool {
	if run.policy != OverwriteSkip && run.policy != OverwriteIfNewer {
		return false
	}
	st, err := lstatAt(d.fd, n.Name)
	switch {
	case err != nil: // nothing there (or to be found out when placing it)
		return false
	case run.policy == OverwriteSkip:
	case isDir(&st):
		run.report(p, ErrExistsAsDir)
		return true
	case n.ModTime.After(mtimeOf(&st)):
		return false
	}
	run.counts.kept.Add(1)
	return true
}

func (run *run) symlink(d *dir, n *tree.Node, p string) {
	name, err := run.place(d.fd, n.Name, n.ModTime, func(name string, replace bool) error {
		if replace {
			if err := clearEntry(d.fd, name); err != nil {
				return err
			}
		}
		return unix.Symlinkat(n.LinkTarget, d.fd, name)
	})
	if err == nil && name == "" {
		run.counts.kept.Add(1)
		return
	}
	if err == nil && run.owners {
		err = lchown(d.fd, name, n)
	}
	if err == nil {
		err = setMtime(d.fd, name, n.ModTime)
	}
	if err != nil {
		run.report(p, fmt.Errorf("symlink: %w", err))
		return
	}
	run.counts.symlinks.Add(1)
	run.made(d, n.Name, name)
}

func (run *run) special(d *dir, n *tree.Node, p string) {
	name, err := run.place(d.fd, n.Name, n.ModTime, func(name string, replace bool) error {
		if replace {
			if err := clearEntry(d.fd, name); err != nil {
				return err
			}
		}
		return makeSpecial(d.fd, name, n)
	})
	if err == nil && name == "" {
		run.counts.kept.Add(1)
		return
	}
	if err == nil && run.owners {
		err = lchown(d.fd, name, n)
	}
	if err == nil {
		err = chmodNoFollow(d.fd, name, n.Mode) // after chown, which clears setuid and setgid
	}
	if err == nil {
		err = setMtime(d.fd, name, n.ModTime)
	}
	if err != nil {
		run.report(p, fmt.Errorf("make %s: %w", n.Type, err))
		return
	}
	run.counts.others.Add(1)
	run.made(d, n.Name, name)
}

// made counts a symlink or special file made in d as name, for the node
// called orig.
func (run *run) made(d *dir, orig, name string) {
	if name != orig {
		run.counts.renamed.Add(1)
	}
	p := d.join(name)
	run.progress.path.Store(&p)
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
		name, err := run.link(l)
		switch {
		case err != nil:
			run.report(l.path, fmt.Errorf("hard link to %s: %w", l.target.path, err))
		case name == "":
			run.counts.kept.Add(1)
		default:
			run.counts.links.Add(1)
			if name != path.Base(l.path) {
				run.counts.renamed.Add(1)
			}
		}
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

// link makes the hard link l to its group's first file, following the
// overwrite policy; it returns the link's name, or "" when an existing
// entry was kept.
func (run *run) link(l hardLink) (string, error) {
	from, err := openPath(run.rootfd, parent(l.target.path))
	if err != nil {
		return "", err
	}
	defer unix.Close(from)
	to, err := openPath(run.rootfd, parent(l.path))
	if err != nil {
		return "", err
	}
	defer unix.Close(to)
	target := l.target.name // its name in from: it may have been renamed
	return run.place(to, path.Base(l.path), l.target.node.ModTime, func(name string, replace bool) error {
		if replace {
			if err := clearEntry(to, name); err != nil {
				return err
			}
		}
		return unix.Linkat(from, target, to, name, 0)
	})
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
