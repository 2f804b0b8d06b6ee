// Package local is the blobstore.Backend of a repository kept in a
// directory on disk, the default of an embedded Coffer server.
//
// An object is a regular file at its name below the directory
// ("packs/ab/ab12…" is <dir>/packs/ab/ab12…). Put writes a temporary file
// beside the final path, fsyncs it, and hard-links it to the final name: the
// link fails if the name exists, which makes Put an atomic create-if-absent
// that never overwrites and never exposes a torn object; the directory is
// fsync'd afterwards so the new name survives a crash. The file system must
// therefore support hard links (every POSIX file system and NTFS do; FAT
// does not).
//
// With Options.DirectWrites (the server sets it), objects of 1 MiB or more
// (packs) are written with direct I/O on Linux where the file system takes
// it (O_DIRECT; the unaligned tail through the page cache), so a backup
// does not copy every pack into the page cache only to flush it at once,
// evicting what the server had cached (direct_linux.go).
//
// Temporary files are named ".tmp~…": "~" is not allowed in object names,
// so they can never collide with an object, and List and Stat ignore them.
// Ones left behind by a crash are removed by Clean.
//
// All access goes through an os.Root, so no name, symlink or "..", however
// it got there, reaches outside the directory.
//
// File-system paths cannot hold both an object "a/b" and an object
// "a/b/c"; the engine's names never need that. Directories are created 0700
// and files 0600, and empty directories are left in place after Delete.
package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/cofferhq/coffer/internal/engine/blobstore"
)

// tempPrefix starts the name of every temporary file.
const tempPrefix = ".tmp~"

// Backend stores objects as files below one directory. It is safe for
// concurrent use, also by several processes sharing the directory.
type Backend struct {
	dir    string // absolute
	root   *os.Root
	direct bool // Options.DirectWrites
}

// Options configure a Backend.
type Options struct {
	// DirectWrites writes objects of 1 MiB or more past the page cache
	// where the platform and file system allow it. That saves the copy
	// into the cache (about 1.2 ms of CPU per MiB on the project's
	// machines) and keeps packs from evicting other data, at the price
	// of reading a pack back from the disk even right after it was
	// written. A server, which writes packs and rarely reads them soon,
	// wants it; a benchmark that reads back at once does not.
	DirectWrites bool
}

var _ blobstore.Backend = (*Backend)(nil)

// New returns a Backend storing objects below dir, which it creates (0700)
// if needed, with default Options. It does not remove leftovers of earlier
// crashes, because another process may be writing into the same directory;
// call Clean for that.
func New(dir string) (*Backend, error) { return NewWithOptions(dir, Options{}) }

// NewWithOptions is New with options.
func NewWithOptions(dir string, o Options) (*Backend, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("local: open %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("local: open %s: %w", abs, err)
	}
	root, err := os.OpenRoot(abs)
	if err != nil {
		return nil, fmt.Errorf("local: open %s: %w", abs, err)
	}
	return &Backend{dir: abs, root: root, direct: o.DirectWrites}, nil
}

// Location returns "local:" and the absolute directory.
func (b *Backend) Location() string { return "local:" + b.dir }

// Close releases the directory handle. Readers already open keep working.
func (b *Backend) Close() error {
	if err := b.root.Close(); err != nil {
		return fmt.Errorf("%s: close: %w", b.Location(), err)
	}
	return nil
}

func (b *Backend) errorf(op, name string, err error) error {
	return fmt.Errorf("%s: %s %s: %w", b.Location(), op, name, err)
}

// check runs the checks every operation on one object starts with.
func (b *Backend) check(ctx context.Context, op, name string) error {
	if err := blobstore.ValidName(name); err != nil {
		return b.errorf(op, name, err)
	}
	if err := ctx.Err(); err != nil {
		return b.errorf(op, name, err)
	}
	return nil
}

// isNotFound reports whether a file-system error means that there is no
// file at a name, including when an element of the path is a file.
func isNotFound(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// Put writes the object through a temporary file and links it into place.
func (b *Backend) Put(ctx context.Context, name string, data io.ReadSeeker, size int64) error {
	if err := b.check(ctx, "put", name); err != nil {
		return err
	}
	if size < 0 {
		return b.errorf("put", name, fmt.Errorf("negative size %d", size))
	}
	if _, err := data.Seek(0, io.SeekStart); err != nil {
		return b.errorf("put", name, fmt.Errorf("rewind data: %w", err))
	}
	dir := path.Dir(name)
	if err := b.mkdirs(dir); err != nil {
		return b.errorf("put", name, err)
	}
	tmp, err := b.writeTemp(ctx, dir, data, size)
	if err != nil {
		return b.errorf("put", name, err)
	}
	// The last moment a cancelled Put can still store nothing.
	if err := ctx.Err(); err != nil {
		_ = b.root.Remove(tmp)
		return b.errorf("put", name, err)
	}
	linkErr := b.root.Link(tmp, filepath.FromSlash(name))
	// A temporary name that cannot be removed is harmless: List ignores it
	// and Clean collects it later.
	_ = b.root.Remove(tmp)
	if linkErr != nil {
		if errors.Is(linkErr, fs.ErrExist) {
			if fi, err := b.root.Lstat(filepath.FromSlash(name)); err == nil && !fi.Mode().IsRegular() {
				return b.errorf("put", name, fmt.Errorf("a %s is in the way", fi.Mode().Type()))
			}
			return b.errorf("put", name, blobstore.ErrExists)
		}
		return b.errorf("put", name, linkErr)
	}
	if err := b.syncDir(dir); err != nil {
		return b.errorf("put", name, err)
	}
	return nil
}

// writeTemp writes size bytes of data to a new temporary file in dir,
// fsyncs it, and returns its name. On error it removes the file again.
func (b *Backend) writeTemp(ctx context.Context, dir string, data io.Reader, size int64) (string, error) {
	f, tmp, direct, err := b.createTemp(dir, b.direct && size >= directMin)
	if err != nil {
		return "", err
	}
	if err := writeSync(ctx, f, data, size, direct); err != nil {
		_ = f.Close()
		_ = b.root.Remove(tmp)
		return "", fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		_ = b.root.Remove(tmp)
		return "", fmt.Errorf("close %s: %w", tmp, err)
	}
	return tmp, nil
}

// writeSync copies exactly size bytes of data to f and fsyncs it. Data in
// memory (a bytes.Reader, as packs are) goes to the file in writes of up
// to writePiece bytes straight from its slice; with direct set (f was
// opened for direct I/O), the aligned part of it bypasses the page cache.
func writeSync(ctx context.Context, f *os.File, data io.Reader, size int64, direct bool) error {
	w := &sizedWriter{ctx: ctx, f: f, size: size, direct: direct}
	var err error
	if br, ok := data.(*bytes.Reader); ok {
		_, err = br.WriteTo(w)
	} else {
		// Only Read: a type that wraps a bytes.Reader must not have its
		// WriteTo bypass its own Read.
		_, err = io.Copy(w, struct{ io.Reader }{data})
	}
	if err != nil {
		return err
	}
	if w.n < size {
		return fmt.Errorf("data has %d bytes, want %d", w.n, size)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	return nil
}

// Direct I/O (Options.DirectWrites): objects of directMin bytes or more
// are written with O_DIRECT, in blocks of directAlign bytes from addresses
// aligned the same (which covers 512-byte and 4 KiB logical blocks).
const (
	directAlign = 4096
	directMin   = 1 << 20
)

// writePiece bounds a single write, so that a cancelled Put of a large
// object stops soon. It is a multiple of directAlign.
const writePiece = 8 << 20

// sizedWriter writes to f and refuses to write more than size bytes in
// all, or anything once ctx is done.
type sizedWriter struct {
	ctx     context.Context
	f       *os.File
	n, size int64
	direct  bool // f is in direct I/O mode
}

func (w *sizedWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > w.size-w.n {
		return 0, fmt.Errorf("data has more than %d bytes", w.size)
	}
	written := 0
	for len(p) > 0 {
		if err := w.ctx.Err(); err != nil {
			return written, err
		}
		piece := p[:min(len(p), writePiece)]
		if w.direct {
			// Direct I/O takes whole aligned blocks from an aligned
			// address; the rest (the tail of a pack, or a buffer that
			// happens to be unaligned) goes through the page cache.
			if n := directLen(piece, w.n); n > 0 {
				piece = piece[:n]
			} else if err := w.endDirect(); err != nil {
				return written, err
			}
		}
		m, err := w.f.Write(piece)
		written += m
		w.n += int64(m)
		if err != nil {
			if w.direct && m == 0 && errors.Is(err, syscall.EINVAL) {
				// The file system took the open but not the write.
				if err := w.endDirect(); err != nil {
					return written, err
				}
				continue
			}
			return written, err
		}
		p = p[m:]
	}
	return written, nil
}

func (w *sizedWriter) endDirect() error {
	if err := clearDirect(w.f); err != nil {
		return fmt.Errorf("leave direct I/O: %w", err)
	}
	w.direct = false
	return nil
}

// directLen returns how many bytes at the start of p a direct write at
// file offset off may take: a multiple of directAlign when p's address
// and off are aligned, else 0.
func directLen(p []byte, off int64) int {
	if off%directAlign != 0 || uintptr(unsafe.Pointer(unsafe.SliceData(p)))%directAlign != 0 {
		return 0
	}
	return len(p) &^ (directAlign - 1)
}

// createTemp creates a new, empty temporary file in dir (0600). With
// direct set it asks for direct I/O where the platform has it, and says
// whether it got it: a file system that refuses it at open gets an
// ordinary file.
func (b *Backend) createTemp(dir string, direct bool) (*os.File, string, bool, error) {
	direct = direct && oDirect != 0
	for range 100 {
		name := filepath.Join(filepath.FromSlash(dir), fmt.Sprintf("%s%016x", tempPrefix, rand.Uint64()))
		flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
		if direct {
			flags |= oDirect
		}
		f, err := b.root.OpenFile(name, flags, 0o600)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if direct && errors.Is(err, syscall.EINVAL) {
			// Linux checks for direct I/O support after O_CREAT made
			// the file: remove it (the name is ours alone) and try an
			// ordinary one.
			_ = b.root.Remove(name)
			direct = false
			continue
		}
		if err != nil {
			return nil, "", false, fmt.Errorf("create temporary file: %w", err)
		}
		return f, name, direct, nil
	}
	return nil, "", false, fmt.Errorf("create temporary file in %s: too many collisions", dir)
}

// mkdirs creates dir and its missing parents (0700), fsyncing each parent
// that gains an entry so the path to a new object survives a crash.
func (b *Backend) mkdirs(dir string) error {
	if dir == "." {
		return nil
	}
	if fi, err := b.root.Stat(filepath.FromSlash(dir)); err == nil && fi.IsDir() {
		return nil
	}
	elems := strings.Split(dir, "/")
	for i := range elems {
		p := strings.Join(elems[:i+1], "/")
		err := b.root.Mkdir(filepath.FromSlash(p), 0o700)
		if errors.Is(err, fs.ErrExist) {
			continue // made by a concurrent Put, or a file that the next step reports
		}
		if err != nil {
			return fmt.Errorf("create directory: %w", err)
		}
		if err := b.syncDir(path.Dir(p)); err != nil {
			return err
		}
	}
	return nil
}

// syncDir fsyncs a directory so that entries added to it are durable.
// Windows cannot fsync a directory and does not need to.
func (b *Backend) syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := b.root.Open(filepath.FromSlash(dir))
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// Stat returns the size and modification time of the object's file.
func (b *Backend) Stat(ctx context.Context, name string) (blobstore.ObjectInfo, error) {
	if err := b.check(ctx, "stat", name); err != nil {
		return blobstore.ObjectInfo{}, err
	}
	fi, err := b.lstatObject("stat", name)
	if err != nil {
		return blobstore.ObjectInfo{}, err
	}
	return blobstore.ObjectInfo{Name: name, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// lstatObject returns the file of an object, or ErrNotFound when there is
// none: nothing, a directory, or a symlink.
func (b *Backend) lstatObject(op, name string) (fs.FileInfo, error) {
	fi, err := b.root.Lstat(filepath.FromSlash(name))
	switch {
	case isNotFound(err):
		return nil, b.errorf(op, name, blobstore.ErrNotFound)
	case err != nil:
		return nil, b.errorf(op, name, err)
	case !fi.Mode().IsRegular():
		return nil, b.errorf(op, name, fmt.Errorf("%s is no object: %w", fi.Mode().Type(), blobstore.ErrNotFound))
	}
	return fi, nil
}

// Delete removes the object's file. A missing object, or a directory in its
// place, is nothing to delete.
func (b *Backend) Delete(ctx context.Context, name string) error {
	if err := b.check(ctx, "delete", name); err != nil {
		return err
	}
	if _, err := b.lstatObject("delete", name); errors.Is(err, blobstore.ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	if err := b.root.Remove(filepath.FromSlash(name)); err != nil && !isNotFound(err) {
		return b.errorf("delete", name, err)
	}
	return nil
}

// Clean removes temporary files older than olderThan, left behind by Puts
// that crashed, and returns how many it removed. A Put in progress has
// a young temporary file, so an age of an hour or more is safe even when
// other processes write to the same directory.
func (b *Backend) Clean(ctx context.Context, olderThan time.Duration) (int, error) {
	cutoff := time.Now().Add(-olderThan)
	removed := 0
	err := fs.WalkDir(b.root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if isNotFound(err) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if !d.Type().IsRegular() || !strings.HasPrefix(d.Name(), tempPrefix) {
			return nil
		}
		fi, err := d.Info()
		if isNotFound(err) {
			return nil // its Put just finished
		} else if err != nil {
			return err
		}
		if fi.ModTime().After(cutoff) {
			return nil
		}
		if err := b.root.Remove(filepath.FromSlash(p)); err != nil && !isNotFound(err) {
			return err
		}
		removed++
		return nil
	})
	if err != nil {
		return removed, fmt.Errorf("%s: clean: %w", b.Location(), err)
	}
	return removed, nil
}
