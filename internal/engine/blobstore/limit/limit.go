// Package limit is a blobstore.Backend decorator that bounds how hard the
// engine drives its storage: how many operations run at once, and how many
// bytes per second go up and come down. Operators set these so that backups
// leave room for everything else on a shared link, disk or S3 account.
//
// # Which calls take a concurrency slot
//
// A slot is held only while a call into the wrapped backend runs: Put,
// Stat, Delete, Open (opening only), each Read of a reader that Open
// returned, and List — except while List's callback runs. An open reader
// holds no slot between Reads, and a callback holds none either. So no
// caller ever waits for a slot while holding one, and a caller may keep
// several readers open, or call the backend from a List callback, with
// MaxConcurrent 1 without deadlocking. The price: connections that a remote
// backend keeps open for idle readers are not counted.
//
// # Bandwidth
//
// Bytes are counted after they are read — from the data of a Put as the
// wrapped backend consumes it, from a reader as the caller receives it —
// with token buckets (golang.org/x/time/rate) that allow a burst of
// Options.Burst bytes, capped at one second's worth of the rate. Where a
// rate is set, reads are cut to at most the burst so that one large read
// waits in steps rather than asking the bucket for more than it can ever
// hold. A Put retried by a decorator below this one counts its bytes again:
// they are sent again.
//
// A wait for a slot or for bandwidth ends with the context's error when the
// caller gives up; a bandwidth wait that the context's deadline would cut
// short fails at once with an error matching context.DeadlineExceeded.
package limit

import (
	"context"
	"fmt"
	"io"

	"golang.org/x/time/rate"

	"github.com/cofferhq/coffer/internal/engine/blobstore"
)

// DefaultBurst is the bucket size used when Options.Burst is zero.
const DefaultBurst = 256 << 10

// Options configures the limits. Zero values mean unlimited.
type Options struct {
	// MaxConcurrent bounds the calls running at once in the wrapped
	// backend (see the package documentation for what counts).
	MaxConcurrent int

	// UploadBytesPerSec and DownloadBytesPerSec bound the average rate of
	// bytes put and read.
	UploadBytesPerSec   int64
	DownloadBytesPerSec int64

	// Burst is how many bytes may pass at once after a pause, and the most
	// one Read moves under a rate limit (default DefaultBurst; never more
	// than one second's worth of the rate).
	Burst int
}

// Backend is the limiting decorator.
type Backend struct {
	b        blobstore.Backend
	slots    chan struct{} // nil: unlimited
	up, down *rate.Limiter // nil: unlimited
}

var _ blobstore.Backend = (*Backend)(nil)

// New wraps b with the limits of opts.
func New(b blobstore.Backend, opts Options) *Backend {
	l := &Backend{b: b}
	if opts.MaxConcurrent > 0 {
		l.slots = make(chan struct{}, opts.MaxConcurrent)
	}
	burst := opts.Burst
	if burst <= 0 {
		burst = DefaultBurst
	}
	l.up = newLimiter(opts.UploadBytesPerSec, burst)
	l.down = newLimiter(opts.DownloadBytesPerSec, burst)
	return l
}

func newLimiter(perSec int64, burst int) *rate.Limiter {
	if perSec <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(perSec), int(min(int64(burst), perSec)))
}

// Location is the wrapped backend's.
func (l *Backend) Location() string { return l.b.Location() }

// Close closes the wrapped backend.
func (l *Backend) Close() error { return l.b.Close() }

// acquire takes a concurrency slot, or fails when ctx ends first.
func (l *Backend) acquire(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if l.slots == nil {
		return nil
	}
	select {
	case l.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *Backend) slotError(op, name string, err error) error {
	return fmt.Errorf("%s: %s %s: wait for a slot: %w", l.Location(), op, name, err)
}

func (l *Backend) release() {
	if l.slots != nil {
		<-l.slots
	}
}

// Put holds a slot for the whole upload and meters data as the wrapped
// backend reads it.
func (l *Backend) Put(ctx context.Context, name string, data io.ReadSeeker, size int64) error {
	if err := l.acquire(ctx); err != nil {
		return l.slotError("put", name, err)
	}
	defer l.release()
	if l.up != nil {
		data = &meteredSeeker{meteredReader{ctx: ctx, what: l.Location() + ": put " + name, r: data, lim: l.up}, data}
	}
	return l.b.Put(ctx, name, data, size)
}

// Stat holds a slot for the call.
func (l *Backend) Stat(ctx context.Context, name string) (blobstore.ObjectInfo, error) {
	if err := l.acquire(ctx); err != nil {
		return blobstore.ObjectInfo{}, l.slotError("stat", name, err)
	}
	defer l.release()
	return l.b.Stat(ctx, name)
}

// Delete holds a slot for the call.
func (l *Backend) Delete(ctx context.Context, name string) error {
	if err := l.acquire(ctx); err != nil {
		return l.slotError("delete", name, err)
	}
	defer l.release()
	return l.b.Delete(ctx, name)
}

// List holds a slot while the wrapped List runs, releasing it around each
// call of fn so that fn may use the backend.
func (l *Backend) List(ctx context.Context, prefix string, fn func(blobstore.ObjectInfo) error) error {
	if err := l.acquire(ctx); err != nil {
		return l.slotError("list", prefix, err)
	}
	held := true
	defer func() {
		if held {
			l.release()
		}
	}()
	return l.b.List(ctx, prefix, func(fi blobstore.ObjectInfo) error {
		l.release()
		held = false
		if err := fn(fi); err != nil {
			return err
		}
		if err := l.acquire(ctx); err != nil {
			return l.slotError("list", prefix, err)
		}
		held = true
		return nil
	})
}

// Open holds a slot while opening; the reader takes one for each Read and
// meters what it delivers.
func (l *Backend) Open(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	if err := l.acquire(ctx); err != nil {
		return nil, l.slotError("open", name, err)
	}
	rc, err := l.b.Open(ctx, name, offset, length)
	l.release()
	if err != nil {
		return nil, err
	}
	what := l.Location() + ": read " + name
	var r io.Reader = &slotReader{l: l, ctx: ctx, what: what, r: rc}
	if l.down != nil {
		r = &meteredReader{ctx: ctx, what: what, r: r, lim: l.down}
	}
	return struct {
		io.Reader
		io.Closer
	}{r, rc}, nil
}

// slotReader holds a concurrency slot during each Read.
type slotReader struct {
	l    *Backend
	ctx  context.Context
	what string // for messages: "<location>: read <name>"
	r    io.Reader
}

func (s *slotReader) Read(p []byte) (int, error) {
	if err := s.l.acquire(s.ctx); err != nil {
		return 0, fmt.Errorf("%s: wait for a slot: %w", s.what, err)
	}
	defer s.l.release()
	return s.r.Read(p)
}
