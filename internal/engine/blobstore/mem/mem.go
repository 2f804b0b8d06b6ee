// Package mem is an in-memory blobstore.Backend for the tests of higher
// layers (pack, repository, server): it honours the whole Backend contract,
// keeps nothing after the process ends, and can inject faults through the
// hooks of Options so that retries and error paths can be tested without a
// network.
package mem

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cofferhq/coffer/internal/engine/blobstore"
)

// Op names a Backend operation for the fault hooks.
type Op string

// The operations BeforeOp sees.
const (
	OpPut    Op = "put"
	OpOpen   Op = "open"
	OpStat   Op = "stat"
	OpDelete Op = "delete"
	OpList   Op = "list"
)

// Options configures a Backend. The zero value is a plain, fault-free store.
//
// The hooks are called without any lock held, so they may block, count
// calls, or call the Backend themselves (mind the recursion: a hook sees its
// own nested calls). To simulate a network failure, return an error marked
// with blobstore.Transient.
type Options struct {
	// Name distinguishes backends in Location ("mem:<Name>").
	Name string

	// BeforeOp is called after the name and the context have been checked
	// and before operation op does anything; name is the object's name, or
	// the prefix for OpList. A non-nil error is returned by the operation,
	// wrapped with the object's name, and the operation does nothing.
	BeforeOp func(op Op, name string) error

	// AfterPut is called once a Put has stored the object. A non-nil error
	// is returned by Put although the object stays stored: the "response
	// lost" case that makes a retried Put see ErrExists.
	AfterPut func(name string) error

	// BeforeRead is called before every Read of a reader that Open
	// returned, with the object offset the Read would start at. A non-nil
	// error is returned by that Read (with no bytes): a connection dropped
	// in the middle of a download.
	BeforeRead func(name string, offset int64) error

	// Now stamps ModTime; time.Now by default.
	Now func() time.Time
}

// Backend is an in-memory blobstore.Backend. Objects are copied in and out,
// so callers can neither change a stored object nor see their buffers
// retained.
type Backend struct {
	opts Options

	mu      sync.Mutex
	objects map[string]object
	closed  bool
}

type object struct {
	data    []byte // never modified once stored
	modTime time.Time
}

var _ blobstore.Backend = (*Backend)(nil)

// New returns an empty Backend.
func New(opts Options) *Backend {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Backend{opts: opts, objects: make(map[string]object)}
}

// Location returns "mem:" and the configured name.
func (b *Backend) Location() string { return "mem:" + b.opts.Name }

// begin runs the checks every operation starts with: the backend is open,
// the context live, the name valid, and the fault hook willing.
func (b *Backend) begin(ctx context.Context, op Op, name string) error {
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return b.errorf(op, name, errors.New("backend closed"))
	}
	if err := ctx.Err(); err != nil {
		return b.errorf(op, name, err)
	}
	if op != OpList {
		if err := blobstore.ValidName(name); err != nil {
			return b.errorf(op, name, err)
		}
	}
	if b.opts.BeforeOp != nil {
		if err := b.opts.BeforeOp(op, name); err != nil {
			return b.errorf(op, name, err)
		}
	}
	return nil
}

func (b *Backend) errorf(op Op, name string, err error) error {
	return fmt.Errorf("%s: %s %s: %w", b.Location(), op, name, err)
}

// Put stores a copy of size bytes of data under name unless name exists.
func (b *Backend) Put(ctx context.Context, name string, data io.ReadSeeker, size int64) error {
	if err := b.begin(ctx, OpPut, name); err != nil {
		return err
	}
	if size < 0 {
		return b.errorf(OpPut, name, fmt.Errorf("negative size %d", size))
	}
	if _, err := data.Seek(0, io.SeekStart); err != nil {
		return b.errorf(OpPut, name, fmt.Errorf("rewind data: %w", err))
	}
	buf, err := io.ReadAll(io.LimitReader(data, size+1))
	if err != nil {
		return b.errorf(OpPut, name, fmt.Errorf("read data: %w", err))
	}
	if int64(len(buf)) != size {
		return b.errorf(OpPut, name, fmt.Errorf("data has %s, want %d bytes", describeLen(len(buf), size), size))
	}
	// The commit point: a Put cancelled before it stores nothing.
	if err := ctx.Err(); err != nil {
		return b.errorf(OpPut, name, err)
	}

	b.mu.Lock()
	_, exists := b.objects[name]
	if !exists {
		b.objects[name] = object{data: buf, modTime: b.opts.Now()}
	}
	b.mu.Unlock()
	if exists {
		return b.errorf(OpPut, name, blobstore.ErrExists)
	}
	if b.opts.AfterPut != nil {
		if err := b.opts.AfterPut(name); err != nil {
			return b.errorf(OpPut, name, err)
		}
	}
	return nil
}

// describeLen says how much data a Put got, without claiming an exact count
// when it stopped reading one byte past size.
func describeLen(got int, size int64) string {
	if int64(got) > size {
		return "more than that"
	}
	return fmt.Sprintf("%d bytes", got)
}

// Open returns a reader of a copy of the requested range.
func (b *Backend) Open(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	if err := b.begin(ctx, OpOpen, name); err != nil {
		return nil, err
	}
	obj, err := b.get(OpOpen, name)
	if err != nil {
		return nil, err
	}
	size := int64(len(obj.data))
	if offset < 0 || offset > size || length > size-offset {
		return nil, b.errorf(OpOpen, name, fmt.Errorf("[%d, +%d) of %d bytes: %w", offset, length, size, blobstore.ErrRange))
	}
	if length < 0 {
		length = size - offset
	}
	return &reader{
		ctx:    ctx,
		b:      b,
		name:   name,
		offset: offset,
		r:      bytes.NewReader(bytes.Clone(obj.data[offset : offset+length])),
	}, nil
}

// Stat returns the size and time of name.
func (b *Backend) Stat(ctx context.Context, name string) (blobstore.ObjectInfo, error) {
	if err := b.begin(ctx, OpStat, name); err != nil {
		return blobstore.ObjectInfo{}, err
	}
	obj, err := b.get(OpStat, name)
	if err != nil {
		return blobstore.ObjectInfo{}, err
	}
	return blobstore.ObjectInfo{Name: name, Size: int64(len(obj.data)), ModTime: obj.modTime}, nil
}

func (b *Backend) get(op Op, name string) (object, error) {
	b.mu.Lock()
	obj, ok := b.objects[name]
	b.mu.Unlock()
	if !ok {
		return object{}, b.errorf(op, name, blobstore.ErrNotFound)
	}
	return obj, nil
}

// Delete removes name; a missing name is not an error.
func (b *Backend) Delete(ctx context.Context, name string) error {
	if err := b.begin(ctx, OpDelete, name); err != nil {
		return err
	}
	b.mu.Lock()
	delete(b.objects, name)
	b.mu.Unlock()
	return nil
}

// List calls fn for the objects under prefix, in name order. It works on a
// snapshot taken at the start, so fn may call the Backend (delete what it
// sees, for example).
func (b *Backend) List(ctx context.Context, prefix string, fn func(blobstore.ObjectInfo) error) error {
	if err := b.begin(ctx, OpList, prefix); err != nil {
		return err
	}
	b.mu.Lock()
	var infos []blobstore.ObjectInfo
	for name, obj := range b.objects {
		if strings.HasPrefix(name, prefix) {
			infos = append(infos, blobstore.ObjectInfo{Name: name, Size: int64(len(obj.data)), ModTime: obj.modTime})
		}
	}
	b.mu.Unlock()
	slices.SortFunc(infos, func(x, y blobstore.ObjectInfo) int { return strings.Compare(x.Name, y.Name) })
	for _, fi := range infos {
		if err := ctx.Err(); err != nil {
			return b.errorf(OpList, prefix, err)
		}
		if err := fn(fi); err != nil {
			return err
		}
	}
	return nil
}

// Close makes every later operation fail. Readers already open keep working.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	return nil
}

// reader reads one range, failing once its context ends or when the
// BeforeRead hook says so.
type reader struct {
	ctx    context.Context
	b      *Backend
	name   string
	offset int64 // object offset of r's first byte
	r      *bytes.Reader
}

func (r *reader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, r.b.errorf("read", r.name, err)
	}
	if hook := r.b.opts.BeforeRead; hook != nil {
		pos := r.offset + r.r.Size() - int64(r.r.Len())
		if err := hook(r.name, pos); err != nil {
			return 0, r.b.errorf("read", r.name, err)
		}
	}
	return r.r.Read(p)
}

func (r *reader) Close() error { return nil }
