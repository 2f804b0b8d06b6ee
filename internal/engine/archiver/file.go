package archiver

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/chunker"
	"github.com/cofferhq/coffer/internal/engine/tree"
)

// fileJob is one regular file for a reader: entry index of dir, and what
// the walker's lstat saw.
type fileJob struct {
	dir   *dir
	index int
	st    unix.Stat_t
}

// reader is one reader goroutine's reusable state.
type reader struct {
	r       *run
	chunker *chunker.Chunker
	fd      fdReader
	prefix  bytes.Reader
	euid    uint32
}

// readFiles reads files until the walker is done.
func (r *run) readFiles() error {
	p := r.a.opts.Chunker
	rd := &reader{r: r, euid: uint32(unix.Geteuid())}
	c, err := chunker.NewBuffer(&rd.fd, p, make([]byte, chunker.BufferSize(p)))
	if err != nil {
		return err
	}
	rd.chunker = c
	for job := range r.files {
		if err := rd.file(job); err != nil {
			return err
		}
		if err := r.done(job.dir); err != nil {
			return err
		}
	}
	return nil
}

// file stores one file's content and completes its node. Only errors that
// end the backup are returned; a file that cannot be read is reported and
// left out.
func (rd *reader) file(job fileJob) error {
	r := rd.r
	o := &r.a.opts
	n := &job.dir.nodes[job.index]
	p := job.dir.join(n.Name)
	var abs string
	if r.needAbs {
		abs = job.dir.abs + "/" + n.Name
		if o.Progress != nil {
			o.Progress.current.Store(&abs)
		}
	}
	state := CacheMiss
	if o.Cache != nil {
		fst := fileStat(&job.st)
		content, cs := o.Cache.Lookup(abs, fst)
		if cs == CacheUnchanged && (len(content) > 0) == (job.st.Size > 0) {
			return rd.reuse(job, abs, fst, content)
		}
		if cs != CacheMiss {
			state = CacheChanged
		}
	}
	var start time.Time
	if o.OnFile != nil {
		start = time.Now()
	}
	if r.a.hook != nil {
		r.a.hook("open", p)
	}
	fd, err := rd.open(job.dir.fd, n.Name, job.st.Uid)
	if err != nil {
		n.Type = skipped
		switch {
		case errors.Is(err, unix.ENOENT):
			err = ErrVanished
		case errors.Is(err, unix.ELOOP):
			err = ErrReplaced // now a symlink
		default:
			err = fmt.Errorf("open: %w", err)
		}
		r.report(p, err)
		return nil
	}
	defer unix.Close(fd)
	var before unix.Stat_t
	if err := unix.Fstat(fd, &before); err != nil {
		n.Type = skipped
		r.report(p, err)
		return nil
	}
	if before.Mode&unix.S_IFMT != unix.S_IFREG || before.Ino != job.st.Ino || before.Dev != job.st.Dev {
		n.Type = skipped
		r.report(p, ErrReplaced)
		return nil
	}
	r.fill(n, &before) // the file as opened
	if r.a.hook != nil {
		r.a.hook("read", p)
	}
	content, size, err := rd.content(fd, before.Size)
	if err != nil {
		if r.ctx.Err() != nil {
			return r.ctx.Err()
		}
		var fatal *fatalError
		if errors.As(err, &fatal) {
			return fatal.err
		}
		n.Type = skipped
		r.report(p, fmt.Errorf("read: %w", err))
		return nil
	}
	n.Content, n.Size = content, uint64(size)
	var after unix.Stat_t
	changed := unix.Fstat(fd, &after) != nil || after.Size != before.Size || after.Mtim != before.Mtim || size != before.Size
	if changed {
		r.report(p, ErrChanged)
	}
	n.Xattrs = r.xattrs(fd, p)
	r.add(cFiles, 1)
	r.add(cBytes, uint64(size))
	if state == CacheMiss {
		r.add(cFilesNew, 1)
	} else {
		r.add(cFilesChanged, 1)
	}
	if o.OnFile != nil && !changed {
		o.OnFile(abs, smudge(fileStat(&before), start, r.a.racyWindow), content)
	}
	return nil
}

// reuse completes the node of a file the cache knows unchanged, from the
// walker's lstat and the cached content, without opening the file.
func (rd *reader) reuse(job fileJob, abs string, fst FileStat, content []blob.ID) error {
	r := rd.r
	n := &job.dir.nodes[job.index]
	r.fill(n, &job.st)
	n.Content = content
	n.Xattrs = r.linkXattrs(job.dir, n.Name)
	r.add(cFiles, 1)
	r.add(cBytes, uint64(job.st.Size))
	r.add(cFilesUnchanged, 1)
	if f := r.a.opts.OnFile; f != nil {
		f(abs, fst, content)
	}
	return nil
}

// fatalError wraps an error of the pipeline (not of the file) that surfaced
// while reading a file.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }

// open opens a regular file of a directory without following a symlink and
// without blocking on a fifo put in its place, and without updating its
// access time where the kernel lets us. Only the file's owner (or a process
// with CAP_FOWNER) may ask for that, so it is not tried on others' files
// (owner, from the walker's lstat): a failed try would double the opens of
// a backup that does not run as root.
func (rd *reader) open(dirfd int, name string, owner uint32) (int, error) {
	flags := unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK
	if oNoatime != 0 && (rd.euid == 0 || rd.euid == owner) {
		fd, err := openat(dirfd, name, flags|oNoatime)
		if !errors.Is(err, unix.EPERM) {
			return fd, err
		}
		// Root without CAP_FOWNER, or the file changed hands.
	}
	return openat(dirfd, name, flags)
}

// content reads, chunks and hashes the open file fd and emits its chunks.
// A file no larger than the chunker's minimum is one chunk, read in one
// call into a pooled buffer; others go through the chunker.
func (rd *reader) content(fd int, size int64) ([]blob.ID, int64, error) {
	r := rd.r
	rd.fd.fd = fd
	min := int64(r.a.opts.Chunker.Min)
	var src io.Reader = &rd.fd
	if size <= min {
		buf, err := r.buffer(int(size) + 1)
		if err != nil {
			return nil, 0, &fatalError{err}
		}
		n, err := io.ReadFull(&rd.fd, buf.b[:size+1])
		switch {
		case err == io.ErrUnexpectedEOF || err == io.EOF:
		case err != nil:
			r.release(buf)
			return nil, 0, err
		}
		if int64(n) <= size {
			if n == 0 {
				r.release(buf)
				return nil, 0, nil
			}
			data := buf.b[:n]
			id := r.a.opts.Codec.ID(data)
			r.add(cRead, uint64(n))
			if err := r.emit(item{t: blob.Data, id: id, data: data, buf: buf}); err != nil {
				return nil, 0, &fatalError{err}
			}
			return []blob.ID{id}, int64(n), nil
		}
		// It grew while we read: chunk what we have and the rest. (Rare;
		// the copy keeps the buffer's lifetime simple.)
		rd.prefix.Reset(append([]byte(nil), buf.b[:n]...))
		r.release(buf)
		src = io.MultiReader(&rd.prefix, &rd.fd)
	}
	rd.chunker.Reset(src)
	var ids []blob.ID
	var total int64
	for {
		chunk, err := rd.chunker.Next()
		if err == io.EOF {
			return ids, total, nil
		}
		if err != nil {
			return nil, 0, err
		}
		if err := r.ctx.Err(); err != nil {
			return nil, 0, &fatalError{err}
		}
		id := r.a.opts.Codec.ID(chunk)
		buf, err := r.buffer(len(chunk))
		if err != nil {
			return nil, 0, &fatalError{err}
		}
		data := buf.b[:copy(buf.b, chunk)]
		if err := r.emit(item{t: blob.Data, id: id, data: data, buf: buf}); err != nil {
			return nil, 0, &fatalError{err}
		}
		ids = append(ids, id)
		total += int64(len(chunk))
		r.add(cRead, uint64(len(chunk)))
	}
}

// fdReader reads a file descriptor.
type fdReader struct{ fd int }

func (r *fdReader) Read(p []byte) (int, error) {
	for {
		n, err := unix.Read(r.fd, p)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, err
		case n == 0 && len(p) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

func openat(dirfd int, name string, flags int) (int, error) {
	for {
		fd, err := unix.Openat(dirfd, name, flags|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

func fstatat(dirfd int, name string, st *unix.Stat_t) error {
	for {
		err := unix.Fstatat(dirfd, name, st, unix.AT_SYMLINK_NOFOLLOW)
		if err != unix.EINTR {
			return err
		}
	}
}

// dangling reports whether the symlink name in dirfd points nowhere:
// following it ends at a name that does not exist (ENOENT), goes through a
// non-directory (ENOTDIR) or loops (ELOOP). A target that exists but cannot
// be reached (EACCES) is not counted: the link is fine, the reader is not.
func dangling(dirfd int, name string) bool {
	var st unix.Stat_t
	for {
		err := unix.Fstatat(dirfd, name, &st, 0)
		if err != unix.EINTR {
			return err == unix.ENOENT || err == unix.ENOTDIR || err == unix.ELOOP
		}
	}
}

func readlinkat(dirfd int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
		if size > tree.MaxLinkTargetLen {
			return "", fmt.Errorf("symlink target longer than %d bytes", tree.MaxLinkTargetLen)
		}
	}
}
