package local

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/cofferhq/coffer/internal/engine/blobstore"
)

// Open returns a reader of a range of the object's file.
func (b *Backend) Open(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	if err := b.check(ctx, "open", name); err != nil {
		return nil, err
	}
	// Lstat first so that Open agrees with Stat and List: a symlink is no
	// object (and os.Root keeps it from leading outside anyway).
	if _, err := b.lstatObject("open", name); err != nil {
		return nil, err
	}
	f, err := b.root.Open(filepath.FromSlash(name))
	if isNotFound(err) {
		return nil, b.errorf("open", name, blobstore.ErrNotFound) // deleted since the Lstat
	} else if err != nil {
		return nil, b.errorf("open", name, err)
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, b.errorf("open", name, err)
	}
	if !fi.Mode().IsRegular() {
		_ = f.Close()
		return nil, b.errorf("open", name, fmt.Errorf("%s is no object: %w", fi.Mode().Type(), blobstore.ErrNotFound))
	}
	size := fi.Size()
	if offset < 0 || offset > size || length > size-offset {
		_ = f.Close()
		return nil, b.errorf("open", name, fmt.Errorf("[%d, +%d) of %d bytes: %w", offset, length, size, blobstore.ErrRange))
	}
	if length < 0 {
		length = size - offset
	}
	return &reader{ctx: ctx, b: b, name: name, f: f, r: io.NewSectionReader(f, offset, length)}, nil
}

// reader reads a section of an object's file until its context is done.
type reader struct {
	ctx  context.Context
	b    *Backend
	name string
	f    *os.File
	r    *io.SectionReader
}

func (r *reader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, r.b.errorf("read", r.name, err)
	}
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		err = r.b.errorf("read", r.name, err)
	}
	return n, err
}

func (r *reader) Close() error {
	if err := r.f.Close(); err != nil {
		return r.b.errorf("close", r.name, err)
	}
	return nil
}

// List walks the directories that can hold names starting with prefix.
// Files whose relative path is no valid object name — temporary files, or
// anything else dropped into the directory — are not objects.
func (b *Backend) List(ctx context.Context, prefix string, fn func(blobstore.ObjectInfo) error) error {
	if err := ctx.Err(); err != nil {
		return b.errorf("list", prefix, err)
	}
	// Names starting with prefix lie below the directory part of prefix,
	// which must itself be a valid name for any object to match.
	start := "."
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		start = prefix[:i]
		if blobstore.ValidName(start) != nil {
			return nil
		}
	}
	var fnErr error
	err := fs.WalkDir(b.root.FS(), start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if isNotFound(err) {
				return nil // no such directory, or removed while walking
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() {
			if p == start || mayHold(p, prefix) {
				return nil
			}
			return fs.SkipDir
		}
		if !d.Type().IsRegular() || !strings.HasPrefix(p, prefix) || blobstore.ValidName(p) != nil {
			return nil
		}
		fi, err := d.Info()
		if isNotFound(err) {
			return nil // deleted while walking
		} else if err != nil {
			return err
		}
		if err := fn(blobstore.ObjectInfo{Name: p, Size: fi.Size(), ModTime: fi.ModTime()}); err != nil {
			fnErr = err
			return fs.SkipAll
		}
		return nil
	})
	if fnErr != nil {
		return fnErr
	}
	if err != nil {
		return b.errorf("list", prefix, err)
	}
	return nil
}

// mayHold reports whether directory dir can hold names starting with
// prefix: either dir lies inside the prefix or the prefix runs into dir.
func mayHold(dir, prefix string) bool {
	if blobstore.ValidName(dir) != nil {
		return false
	}
	return strings.HasPrefix(dir+"/", prefix) || strings.HasPrefix(prefix, dir+"/")
}
