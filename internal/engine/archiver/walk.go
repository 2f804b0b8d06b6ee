package archiver

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

	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"
	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/tree"
)

// run is the state of one Archive call.
type run struct {
	a     *Archiver
	ctx   context.Context // cancelled when any stage fails
	saver Saver

	files   chan fileJob
	items   chan item
	batches chan []item
	saves   chan item
	budget  *semaphore.Weighted
	names   *names

	root     blob.ID
	counts   [numCounters]atomic.Uint64
	progress *[numCounters]*atomic.Uint64 // Options.Progress's counters, or nil
	// needAbs is set when files' absolute paths are needed: for the
	// cache, OnFile or Progress.
	needAbs bool
	// comps is the walker's scratch for an entry's path components, when
	// excluding.
	comps []string

	mu     sync.Mutex
	errors []FileError
	open   map[*dir]struct{} // directories holding a descriptor
}

// dir is a directory being backed up. Its nodes are filled in by the
// walker (metadata) and by readers (file content); pending counts the
// entries still to finish plus one for the walker while it lists the
// directory. The goroutine that brings pending to zero encodes the
// directory, stores its tree and completes its node in the parent.
type dir struct {
	parent  *dir
	index   int    // of this directory's node in parent.nodes
	path    string // as errors report it: relative to the root for Archive ("" for the root), absolute for ArchivePaths
	abs     string // absolute, "" for "/"
	comps   []string
	f       *os.File
	fd      int // f's descriptor
	nodes   []tree.Node
	pending atomic.Int64
	// dev is the device of the directory its backup path started at
	// (Options.OneFileSystem).
	dev uint64
	// mount marks a directory on another device than dev, stored
	// without its entries (Options.OneFileSystem).
	mount bool
	// way, for ArchivePaths, is set on a directory on the way to the
	// given paths: it lists way.children instead of its own entries.
	way *pathNode
}

// skipped marks a node left out of its directory.
const skipped tree.Type = 0

// newRun prepares one backup through s.
func (a *Archiver) newRun(ctx context.Context, s Saver) *run {
	o := a.opts
	r := &run{a: a, ctx: ctx, saver: s,
		files:   make(chan fileJob, 4*o.Workers),
		items:   make(chan item, 2*o.BatchSize),
		batches: make(chan []item, 1),
		saves:   make(chan item, o.BatchSize), // a batch waits here while the next is looked up
		budget:  semaphore.NewWeighted(o.MemoryLimit),
		names:   newNames(),
		open:    map[*dir]struct{}{},
		needAbs: o.Cache != nil || o.OnFile != nil || o.Progress != nil,
	}
	if p := o.Progress; p != nil {
		r.progress = p.counters()
	}
	return r
}

// archive runs the pipeline from the directory top, which it closes, and
// returns the root tree's id: zero when top was a way directory all of
// whose entries were left out.
func (r *run) archive(top *dir) (blob.ID, Stats, error) {
	g, gctx := errgroup.WithContext(r.ctx)
	r.ctx = gctx
	o := r.a.opts
	r.opened(top)

	walker := func() error {
		defer close(r.files)
		return r.walk(top)
	}
	// Whoever completes a directory emits its tree, the walker as well as
	// the readers, so the items close once all of them are done.
	goAll(g, append([]func() error{walker}, slices.Repeat([]func() error{r.readFiles}, o.Workers)...),
		func() { close(r.items) })
	g.Go(r.collect)
	goAll(g, slices.Repeat([]func() error{r.query}, o.Queries), func() { close(r.saves) })
	for range o.Savers {
		g.Go(r.save)
	}
	err := g.Wait()
	r.closeAll()
	st := r.stats()
	if err != nil {
		return blob.ID{}, st, err
	}
	return r.root, st, nil
}

// goAll runs each of fns in g and, once all of them have returned, then.
func goAll(g *errgroup.Group, fns []func() error, then func()) {
	var wg sync.WaitGroup
	wg.Add(len(fns))
	for _, fn := range fns {
		g.Go(func() error {
			defer wg.Done()
			return fn()
		})
	}
	g.Go(func() error {
		wg.Wait()
		then()
		return nil
	})
}

// The run's counters.
const (
	cFiles = iota
	cDirs
	cSymlinks
	cOthers
	cBytes
	cRead
	cDataBlobs
	cTreeBlobs
	cAddedRaw
	cFilesNew
	cFilesChanged
	cFilesUnchanged
	cExcluded
	cErrors
	cFoundFiles
	cFoundBytes
	cBrokenLinks
	numCounters
)

// add adds n to counter c of the run and of Options.Progress.
func (r *run) add(c int, n uint64) {
	r.counts[c].Add(n)
	if p := r.progress; p != nil {
		p[c].Add(n)
	}
}

func (r *run) stats() Stats {
	c := &r.counts
	st := Stats{ReadBytes: c[cRead].Load(), AddedRawBytes: c[cAddedRaw].Load(),
		FilesNew: c[cFilesNew].Load(), FilesChanged: c[cFilesChanged].Load(), FilesUnchanged: c[cFilesUnchanged].Load(),
		Excluded: c[cExcluded].Load(), BrokenLinks: c[cBrokenLinks].Load()}
	st.Files, st.Dirs, st.Symlinks, st.Others = c[cFiles].Load(), c[cDirs].Load(), c[cSymlinks].Load(), c[cOthers].Load()
	st.Bytes, st.DataBlobs, st.TreeBlobs = c[cBytes].Load(), c[cDataBlobs].Load(), c[cTreeBlobs].Load()
	r.mu.Lock()
	st.Errors = slices.Clone(r.errors)
	r.mu.Unlock()
	slices.SortFunc(st.Errors, func(a, b FileError) int { return strings.Compare(a.Path, b.Path) })
	return st
}

// report records an entry that is left out or stored as read.
func (r *run) report(p string, err error) {
	fe := FileError{Path: p, Err: err}
	r.mu.Lock()
	r.errors = append(r.errors, fe)
	r.mu.Unlock()
	r.add(cErrors, 1)
	if r.a.opts.OnError != nil {
		r.a.opts.OnError(fe)
	}
}

func (r *run) opened(d *dir) {
	r.mu.Lock()
	r.open[d] = struct{}{}
	r.mu.Unlock()
}

func (r *run) closeDir(d *dir) {
	r.mu.Lock()
	delete(r.open, d)
	r.mu.Unlock()
	d.f.Close()
}

// closeAll closes the directories a failed backup left open.
func (r *run) closeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for d := range r.open {
		d.f.Close()
	}
	clear(r.open)
}

func (d *dir) join(name string) string { return path.Join(d.path, name) }

// child returns the directory entry i of d, open as fd.
func (d *dir) child(i int, name string, fd int) *dir {
	c := &dir{parent: d, index: i, path: d.join(name), abs: d.abs + "/" + name, fd: fd, dev: d.dev}
	c.f = os.NewFile(uintptr(fd), c.path)
	if d.comps != nil {
		c.comps = append(slices.Clip(d.comps), name)
	}
	return c
}

// walk lists d, dispatches its files to the readers and walks its
// subdirectories, depth first.
func (r *run) walk(d *dir) error {
	d.pending.Store(1)
	if d.way != nil {
		return r.walkWay(d)
	}
	if d.mount {
		return r.done(d)
	}
	names, err := d.f.Readdirnames(-1)
	if err != nil {
		// The entries read so far would make a misleading directory.
		if d.parent == nil {
			return fmt.Errorf("list %s: %w", d.f.Name(), err)
		}
		r.report(d.path, fmt.Errorf("list directory: %w", err))
		r.closeDir(d)
		d.parent.nodes[d.index].Type = skipped
		return r.done(d.parent)
	}
	slices.Sort(names) // bytewise, as trees are
	d.nodes = make([]tree.Node, len(names))
	for i, name := range names {
		if err := r.ctx.Err(); err != nil {
			return err
		}
		if err := r.entry(d, i, name); err != nil {
			return err
		}
	}
	return r.done(d)
}

// entry records one directory entry from its lstat, dispatching a file to
// the readers and walking a subdirectory.
func (r *run) entry(d *dir, i int, name string) error {
	n := &d.nodes[i]
	n.Name = name
	var st unix.Stat_t
	if err := fstatat(d.fd, name, &st); err != nil {
		n.Type = skipped
		if r.a.exclude != nil && (r.excluded(d, name, false) || r.excluded(d, name, true)) {
			r.add(cExcluded, 1) // whatever it was
			return nil
		}
		switch {
		case d.way != nil:
			err = fmt.Errorf("path given to back up: %w", err)
		case errors.Is(err, unix.ENOENT):
			err = ErrVanished
		}
		r.report(d.join(name), err)
		return nil
	}
	typ := nodeType(uint32(st.Mode))
	if r.a.exclude != nil && r.excluded(d, name, typ == tree.Dir) {
		n.Type = skipped
		r.add(cExcluded, 1)
		return nil
	}
	switch typ {
	case tree.File: // the reader fills the node from the file it opens
		d.pending.Add(1)
		r.add(cFoundFiles, 1)
		r.add(cFoundBytes, uint64(st.Size))
		select {
		case r.files <- fileJob{dir: d, index: i, st: st}:
			return nil
		case <-r.ctx.Done():
			return r.ctx.Err()
		}
	case tree.Dir: // subdir fills it from the directory it opens
		return r.subdir(d, i)
	}
	r.fill(n, &st)
	switch n.Type {
	case tree.Symlink:
		target, err := readlinkat(d.fd, name)
		if err != nil {
			n.Type = skipped
			r.report(d.join(name), fmt.Errorf("read symlink: %w", err))
			return nil
		}
		n.LinkTarget = target
		r.add(cSymlinks, 1)
		if dangling(d.fd, name) {
			r.add(cBrokenLinks, 1)
		}
	case tree.CharDevice, tree.BlockDevice:
		n.Device = uint64(st.Rdev)
		r.add(cOthers, 1)
	case skipped:
		r.report(d.join(name), fmt.Errorf("unknown file type %#o", st.Mode&unix.S_IFMT))
	default:
		r.add(cOthers, 1)
	}
	return nil
}

// excluded reports whether entry name of d matches Options.Exclude.
func (r *run) excluded(d *dir, name string, isDir bool) bool {
	r.comps = append(append(r.comps[:0], d.comps...), name)
	return r.a.exclude.Match(r.comps, isDir)
}

// subdir opens and walks the directory entry i of d.
func (r *run) subdir(d *dir, i int) error {
	n := &d.nodes[i]
	p := d.join(n.Name)
	fd, err := openat(d.fd, n.Name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW)
	if err != nil {
		n.Type = skipped
		switch {
		case errors.Is(err, unix.ENOENT):
			err = ErrVanished
		case errors.Is(err, unix.ELOOP), errors.Is(err, unix.ENOTDIR):
			err = ErrReplaced
		}
		r.report(p, err)
		return nil
	}
	child := d.child(i, n.Name, fd)
	r.opened(child)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		r.closeDir(child)
		n.Type = skipped
		r.report(p, err)
		return nil
	}
	r.fill(n, &st) // the directory we opened, not the name we saw
	if n.Type != tree.Dir {
		r.closeDir(child)
		n.Type = skipped
		r.report(p, ErrReplaced)
		return nil
	}
	dev := r.dev(child.abs, &st)
	if d.way != nil {
		child.dev = dev // a given path: its own file system
	} else if r.a.opts.OneFileSystem && dev != d.dev {
		child.mount = true
	}
	n.Xattrs = r.xattrs(fd, p)
	d.pending.Add(1)
	return r.walk(child)
}

// dev returns the device of the directory at abs from its stat.
func (r *run) dev(abs string, st *unix.Stat_t) uint64 {
	if r.a.devHook != nil {
		return r.a.devHook(abs, st)
	}
	return uint64(st.Dev)
}

// done finishes one entry of d; the last one stores d's tree. A directory
// on the way to given paths none of which was stored is left out.
func (r *run) done(d *dir) error {
	if d.pending.Add(-1) > 0 {
		return nil
	}
	r.closeDir(d)
	if d.way != nil && !slices.ContainsFunc(d.nodes, func(n tree.Node) bool { return n.Type != skipped }) {
		if d.parent == nil {
			return nil // nothing stored: r.root stays zero
		}
		d.parent.nodes[d.index].Type = skipped
		return r.done(d.parent)
	}
	id, err := r.storeTree(d)
	if err != nil {
		return err
	}
	if d.parent == nil {
		r.root = id
		return nil
	}
	d.parent.nodes[d.index].Subtree = id
	r.add(cDirs, 1)
	return r.done(d.parent)
}

// storeTree encodes d's nodes — split into parts when the encoding would
// exceed the largest blob — and emits the tree blobs.
func (r *run) storeTree(d *dir) (blob.ID, error) {
	nodes := slices.DeleteFunc(d.nodes, func(n tree.Node) bool { return n.Type == skipped })
	parts, err := tree.Split(nodes, r.a.maxTreeSize)
	if err != nil {
		return blob.ID{}, fmt.Errorf("directory %q: %w", d.path, err)
	}
	var ids []blob.ID
	for _, t := range parts {
		id, err := r.emitTree(t)
		if err != nil {
			return blob.ID{}, fmt.Errorf("directory %q: %w", d.path, err)
		}
		ids = append(ids, id)
	}
	d.nodes = nil
	if len(ids) == 1 {
		return ids[0], nil
	}
	id, err := r.emitTree(&tree.Tree{Parts: ids})
	if err != nil {
		return blob.ID{}, fmt.Errorf("directory %q: %w", d.path, err)
	}
	return id, nil
}

func (r *run) emitTree(t *tree.Tree) (blob.ID, error) {
	b, err := t.Encode()
	if err != nil {
		return blob.ID{}, err
	}
	id := r.a.opts.Codec.TreeID(b)
	return id, r.emit(item{t: blob.Tree, id: id, data: b})
}
