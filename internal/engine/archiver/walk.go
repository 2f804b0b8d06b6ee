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

	root   blob.ID
	counts counters

	mu     sync.Mutex
	errors []FileError
	open   map[*dir]struct{} // directories holding a descriptor
}

// counters are the statistics that several goroutines update.
type counters struct {
	files, dirs, symlinks, others, bytes, read atomic.Uint64
	dataBlobs, treeBlobs, addedRaw             atomic.Uint64
}

// dir is a directory being backed up. Its nodes are filled in by the
// walker (metadata) and by readers (file content); pending counts the
// entries still to finish plus one for the walker while it lists the
// directory. The goroutine that brings pending to zero encodes the
// directory, stores its tree and completes its node in the parent.
type dir struct {
	parent  *dir
	index   int    // of this directory's node in parent.nodes
	path    string // relative to the root, "" for the root
	f       *os.File
	fd      int // f's descriptor
	nodes   []tree.Node
	pending atomic.Int64
}

// skipped marks a node left out of its directory.
const skipped tree.Type = 0

// Archive backs up the directory tree at root (which must be a directory;
// a symlink given as root is followed, none below it is) through s and
// returns the id of the root's tree. It fails when the root cannot be read,
// when s fails, or when ctx ends; unreadable entries below the root are
// reported in Stats.Errors instead.
func (a *Archiver) Archive(ctx context.Context, s Saver, root string) (blob.ID, Stats, error) {
	f, err := os.Open(root)
	if err != nil {
		return blob.ID{}, Stats{}, fmt.Errorf("archive %s: %w", root, err)
	}
	if fi, err := f.Stat(); err != nil || !fi.IsDir() {
		f.Close()
		if err == nil {
			err = errors.New("not a directory")
		}
		return blob.ID{}, Stats{}, fmt.Errorf("archive %s: %w", root, err)
	}
	g, gctx := errgroup.WithContext(ctx)
	o := a.opts
	r := &run{a: a, ctx: gctx, saver: s,
		files:   make(chan fileJob, 4*o.Workers),
		items:   make(chan item, 2*o.BatchSize),
		batches: make(chan []item, 1),
		saves:   make(chan item, o.BatchSize), // a batch waits here while the next is looked up
		budget:  semaphore.NewWeighted(o.MemoryLimit),
		names:   newNames(),
		open:    map[*dir]struct{}{},
	}
	top := &dir{f: f, fd: int(f.Fd())}
	r.opened(top)

	var producers sync.WaitGroup
	producers.Add(1 + o.Workers)
	g.Go(func() error {
		defer producers.Done()
		defer close(r.files)
		return r.walk(top)
	})
	for range o.Workers {
		g.Go(func() error {
			defer producers.Done()
			return r.readFiles()
		})
	}
	g.Go(func() error {
		producers.Wait()
		close(r.items)
		return nil
	})
	g.Go(r.collect)
	g.Go(r.query)
	var savers sync.WaitGroup
	savers.Add(o.Savers)
	for range o.Savers {
		g.Go(func() error {
			defer savers.Done()
			return r.save()
		})
	}
	err = g.Wait()
	r.closeAll()
	st := r.stats()
	if err != nil {
		return blob.ID{}, st, fmt.Errorf("archive %s: %w", root, err)
	}
	if r.root.IsZero() {
		// Only an internal error can leave the root unfinished.
		return blob.ID{}, st, fmt.Errorf("archive %s: the root directory was not stored", root)
	}
	return r.root, st, nil
}

func (r *run) stats() Stats {
	c := &r.counts
	st := Stats{ReadBytes: c.read.Load(), AddedRawBytes: c.addedRaw.Load()}
	st.Files, st.Dirs, st.Symlinks, st.Others = c.files.Load(), c.dirs.Load(), c.symlinks.Load(), c.others.Load()
	st.Bytes, st.DataBlobs, st.TreeBlobs = c.bytes.Load(), c.dataBlobs.Load(), c.treeBlobs.Load()
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

// walk lists d, dispatches its files to the readers and walks its
// subdirectories, depth first.
func (r *run) walk(d *dir) error {
	d.pending.Store(1)
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
		if errors.Is(err, unix.ENOENT) {
			err = ErrVanished
		}
		r.report(d.join(name), err)
		return nil
	}
	switch nodeType(uint32(st.Mode)) {
	case tree.File: // the reader fills the node from the file it opens
		d.pending.Add(1)
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
		r.counts.symlinks.Add(1)
	case tree.CharDevice, tree.BlockDevice:
		n.Device = uint64(st.Rdev)
		r.counts.others.Add(1)
	case skipped:
		r.report(d.join(name), fmt.Errorf("unknown file type %#o", st.Mode&unix.S_IFMT))
	default:
		r.counts.others.Add(1)
	}
	return nil
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
	child := &dir{parent: d, index: i, path: p, f: os.NewFile(uintptr(fd), p), fd: fd}
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
	n.Xattrs = r.xattrs(fd, p)
	d.pending.Add(1)
	return r.walk(child)
}

// done finishes one entry of d; the last one stores d's tree.
func (r *run) done(d *dir) error {
	if d.pending.Add(-1) > 0 {
		return nil
	}
	r.closeDir(d)
	id, err := r.storeTree(d)
	if err != nil {
		return err
	}
	if d.parent == nil {
		r.root = id
		return nil
	}
	d.parent.nodes[d.index].Subtree = id
	r.counts.dirs.Add(1)
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
