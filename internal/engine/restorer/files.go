package restorer

import (
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/tree"
)

// file is a regular file being restored: its chunks may be written by
// several workers, and whoever writes the last one finishes it.
type file struct {
	dir  *dir
	node *tree.Node
	path string

	create sync.Once
	fd     int
	tmp    string // its temporary name in dir
	name   string // its final name in dir, once ok

	mu        sync.Mutex
	err       error        // the first failure
	remaining atomic.Int32 // chunks not written yet
	written   atomic.Int64
	ok        atomic.Bool // renamed into place
}

func (f *file) fail(err error) {
	f.mu.Lock()
	if f.err == nil {
		f.err = err
	}
	f.mu.Unlock()
}

func (f *file) failure() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// chunk is where one blob goes: a file and an offset in it.
type chunk struct {
	f   *file
	off int64
}

// job is a run of blobs, in pack order, that one worker reads (together,
// where they are neighbours in a pack) and writes into their files.
type job struct {
	reqs   []repository.BlobRequest
	chunks []chunk
}

// queue adds a file to the batch waiting for its blobs' locations.
func (run *run) queue(d *dir, n *tree.Node, p string) (*file, error) {
	f := &file{dir: d, node: n, path: p, fd: -1}
	d.refs.Add(1)
	run.pending = append(run.pending, f)
	run.pendingIDs += len(n.Content)
	if run.pendingIDs >= run.batchIDs {
		// Small batches first, so the workers start at once; larger
		// ones later, to group more blobs by pack.
		run.batchIDs = min(2*run.batchIDs, run.r.opts.LocateBatch)
		return f, run.flush()
	}
	return f, nil
}

// flush hands the waiting files to the dispatcher.
func (run *run) flush() error {
	if len(run.pending) == 0 {
		return nil
	}
	select {
	case run.batches <- run.pending:
		run.pending, run.pendingIDs = nil, 0
		return nil
	case <-run.ctx.Done():
		return run.ctx.Err()
	}
}

// dispatch turns batches of files into jobs for the workers, while the
// walker goes on walking. After a failure it only releases the files.
func (run *run) dispatch() error {
	defer close(run.jobs)
	var failed error
	for files := range run.batches {
		if failed == nil {
			failed = run.dispatchBatch(files)
			continue
		}
		for _, f := range files {
			f.dir.release()
		}
	}
	return failed
}

// dispatchBatch looks up the blobs of files in one call, sorts all their
// chunks by pack and offset, and hands them to the workers in jobs of
// about JobSize bytes. A large file's chunks thus spread over several
// workers, and neighbouring small files are read with one request.
func (run *run) dispatchBatch(files []*file) error {
	var ids []blob.ID
	seen := map[blob.ID]bool{}
	for _, f := range files {
		for _, id := range f.node.Content {
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
	}
	var locs map[blob.ID]repository.Location
	if len(ids) > 0 {
		var err error
		if locs, err = run.r.repo.Locate(run.ctx, ids); err != nil {
			for _, f := range files {
				f.dir.release()
			}
			return err
		}
	}
	var all job
	for _, f := range files {
		run.plan(f, locs, &all)
	}
	order := make([]int, len(all.reqs))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		la, lb := all.reqs[a].Loc, all.reqs[b].Loc
		return cmp.Or(slices.Compare(la.Pack[:], lb.Pack[:]), cmp.Compare(la.Offset, lb.Offset))
	})
	for len(order) > 0 {
		var j job
		var size int64
		for len(order) > 0 && (len(j.reqs) == 0 || size < run.r.opts.JobSize) {
			i := order[0]
			order = order[1:]
			j.reqs = append(j.reqs, all.reqs[i])
			j.chunks = append(j.chunks, all.chunks[i])
			size += int64(all.reqs[i].Loc.RawLength)
		}
		select {
		case run.jobs <- j:
		case <-run.ctx.Done():
			// Whatever was not sent fails here; the workers finish
			// the files of the jobs they took.
			for _, c := range append(j.chunks, pick(all.chunks, order)...) {
				c.f.fail(run.ctx.Err())
				run.chunkDone(c.f)
			}
			return run.ctx.Err()
		}
	}
	return nil
}

func pick(chunks []chunk, order []int) []chunk {
	out := make([]chunk, len(order))
	for k, i := range order {
		out[k] = chunks[i]
	}
	return out
}

// plan adds a file's chunks to all, or finishes the file at once when it
// has none (empty) or one of its blobs is not indexed.
func (run *run) plan(f *file, locs map[blob.ID]repository.Location, all *job) {
	n := f.node
	for _, id := range n.Content {
		if _, ok := locs[id]; !ok {
			run.report(f.path, fmt.Errorf("content blob %s: %w", id.Short(), repository.ErrNotIndexed))
			f.dir.release()
			return
		}
	}
	if len(n.Content) == 0 {
		f.create.Do(func() { run.createTemp(f) })
		run.finishFile(f)
		return
	}
	var size uint64
	for _, id := range n.Content {
		size += uint64(locs[id].RawLength)
	}
	if size != n.Size {
		run.report(f.path, fmt.Errorf("%w: its blobs hold %d bytes, the tree says %d", ErrSize, size, n.Size))
		f.dir.release()
		return
	}
	f.remaining.Store(int32(len(n.Content)))
	var off int64
	for _, id := range n.Content {
		loc := locs[id]
		all.reqs = append(all.reqs, repository.BlobRequest{ID: id, Loc: loc})
		all.chunks = append(all.chunks, chunk{f: f, off: off})
		off += int64(loc.RawLength)
	}
}

// chunkDone counts one chunk of f as handled; the last finishes the file.
func (run *run) chunkDone(f *file) {
	if f.remaining.Add(-1) == 0 {
		run.finishFile(f)
	}
}

// write is a worker: it reads and writes jobs until the walker is done.
// After a failure elsewhere it still takes every job sent, whose reads then
// fail fast, so that every file is finished and its temporary name
// removed.
func (run *run) write() error {
	var handled []bool
	for j := range run.jobs {
		handled = append(handled[:0], make([]bool, len(j.reqs))...)
		err := run.r.repo.ReadBlobs(run.ctx, blob.Data, j.reqs, func(i int, plain []byte, err error) error {
			handled[i] = true
			c := j.chunks[i]
			c.f.create.Do(func() { run.createTemp(c.f) })
			switch {
			case err != nil:
				c.f.fail(err)
			case len(plain) != int(j.reqs[i].Loc.RawLength):
				c.f.fail(fmt.Errorf("%w: blob %s holds %d bytes, the index says %d", ErrSize, j.reqs[i].ID.Short(), len(plain), j.reqs[i].Loc.RawLength))
			case c.f.failure() == nil:
				run.progress.path.Store(&c.f.path)
				if err := pwriteAll(c.f.fd, plain, c.off); err != nil {
					c.f.fail(fmt.Errorf("write: %w", err))
				} else {
					c.f.written.Add(int64(len(plain)))
					run.progress.Bytes.Add(uint64(len(plain)))
				}
			}
			run.chunkDone(c.f)
			return nil
		})
		if err != nil {
			for i, c := range j.chunks {
				if !handled[i] {
					c.f.fail(err)
					run.chunkDone(c.f)
				}
			}
		}
	}
	return run.ctx.Err()
}

// createTemp creates the file under a fresh temporary name in its
// directory, writable only by us until it is complete.
func (run *run) createTemp(f *file) {
	for range 10 {
		var b [8]byte
		rand.Read(b[:])
		name := ".coffer-restore-" + hex.EncodeToString(b[:])
		fd, err := retry(func() (int, error) {
			return unix.Openat(f.dir.fd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		})
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			f.fail(fmt.Errorf("create: %w", err))
			return
		}
		f.fd, f.tmp = fd, name
		return
	}
	f.fail(errors.New("create: no free temporary name"))
}

// finishFile completes a file once its last segment is written: checks its
// size, sets its owner, mode, attributes and time, and renames it into
// place following the overwrite policy — or removes it after a failure,
// or when an existing entry is kept.
func (run *run) finishFile(f *file) {
	defer f.dir.release()
	err := f.failure()
	if err == nil && f.written.Load() != int64(f.node.Size) {
		err = fmt.Errorf("%w: wrote %d bytes of %d", ErrSize, f.written.Load(), f.node.Size)
	}
	if err == nil {
		err = run.fileMeta(f)
	}
	if f.fd >= 0 {
		if cerr := unix.Close(f.fd); err == nil && cerr != nil {
			err = fmt.Errorf("close: %w", cerr)
		}
	}
	if err == nil {
		err = setMtime(f.dir.fd, f.tmp, f.node.ModTime)
	}
	var name string
	if err == nil {
		name, err = run.place(f.dir.fd, f.node.Name, f.node.ModTime, f.rename)
	}
	if err != nil || name == "" {
		if f.tmp != "" {
			unix.Unlinkat(f.dir.fd, f.tmp, 0)
		}
		if err == nil {
			run.counts.kept.Add(1)
		} else if run.ctx.Err() == nil {
			run.report(f.path, err)
		}
		return
	}
	f.name = name
	f.ok.Store(true)
	if name != f.node.Name {
		run.counts.renamed.Add(1)
	}
	run.counts.files.Add(1)
	run.counts.bytes.Add(f.node.Size)
	run.progress.Files.Add(1)
}

// rename moves the complete file from its temporary name to name: over an
// entry there when replace is set (but not over a directory), else only
// if nothing is there (EEXIST).
func (f *file) rename(name string, replace bool) error {
	if !replace {
		return renameNoReplace(f.dir.fd, f.tmp, name)
	}
	err := unix.Renameat(f.dir.fd, f.tmp, f.dir.fd, name)
	if errors.Is(err, unix.EISDIR) || errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) {
		err = ErrExistsAsDir
	}
	return err
}

// fileMeta sets a complete file's owner, extended attributes and mode, in
// that order: chown clears setuid, setgid and security.capability, and a
// mode without write permission forbids setting user attributes to anyone
// but root. Extended attributes are best effort: a failure is reported,
// the file is kept.
func (run *run) fileMeta(f *file) error {
	n := f.node
	if run.owners {
		if err := unix.Fchown(f.fd, int(n.UID), int(n.GID)); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	if err := setXattrs(f.fd, n.Xattrs); err != nil {
		run.report(f.path, err)
	}
	if err := unix.Fchmod(f.fd, n.Mode); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	return nil
}
