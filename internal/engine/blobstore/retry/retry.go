// Package retry is a blobstore.Backend decorator that retries operations
// failing with errors marked blobstore.Transient (network failures,
// timeouts, throttling), with exponential backoff and full jitter. Permanent
// errors — ErrNotFound, ErrExists, ErrRange, invalid names, anything not
// marked Transient — come back at once.
//
// Beyond repeating calls it keeps three promises the plain loop would
// break:
//
//   - A Put whose response was lost (the object was stored, the call failed)
//     is not reported as ErrExists on the next attempt; see Put.
//   - A reader returned by Open survives a transient error in the middle of
//     the stream by re-opening the object at the offset it had reached.
//   - A List that fails part-way and is retried does not report an object
//     twice.
package retry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/cofferhq/coffer/internal/engine/blobstore"
)

// Options configures the retries. The zero value means the defaults.
type Options struct {
	// MaxAttempts bounds the attempts of one operation, the first included
	// (default 5). For a reader it bounds the consecutive failed attempts
	// to continue the stream.
	MaxAttempts int

	// InitialDelay is the upper bound of the first backoff (default 200ms);
	// the bound doubles after each failure up to MaxDelay (default 10s).
	// The actual delay is drawn uniformly below the bound (full jitter), so
	// that many clients failing together do not retry together.
	InitialDelay time.Duration
	MaxDelay     time.Duration

	// Sleep waits d or until ctx is done, returning ctx's error then.
	// Tests replace it to run without waiting; the default uses a timer.
	Sleep func(ctx context.Context, d time.Duration) error

	// Rand returns a uniform random number in [0, n) for n > 0; it must be
	// safe for concurrent use. Default: math/rand/v2.Int64N.
	Rand func(n int64) int64

	// OnRetry, if set, is called before each backoff, for logs and metrics:
	// op is "put", "open", "read", "stat", "delete" or "list", attempt
	// the number of the attempt that failed (from 1) and err its error.
	OnRetry func(op, name string, attempt int, delay time.Duration, err error)
}

// Backend is the retrying decorator. Its Put, Open and List behave as
// documented on their methods; Stat and Delete are simply retried.
type Backend struct {
	b    blobstore.Backend
	opts Options
}

var _ blobstore.Backend = (*Backend)(nil)

// New wraps b so that its transient failures are retried.
func New(b blobstore.Backend, opts Options) *Backend {
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 5
	}
	if opts.InitialDelay <= 0 {
		opts.InitialDelay = 200 * time.Millisecond
	}
	if opts.MaxDelay <= 0 {
		opts.MaxDelay = 10 * time.Second
	}
	opts.MaxDelay = max(opts.MaxDelay, opts.InitialDelay)
	if opts.Sleep == nil {
		opts.Sleep = sleep
	}
	if opts.Rand == nil {
		opts.Rand = rand.Int64N
	}
	return &Backend{b: b, opts: opts}
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// delay returns the backoff after the given failed attempt (from 1).
func (b *Backend) delay(attempt int) time.Duration {
	bound := b.opts.MaxDelay
	if shift := attempt - 1; shift < 62 {
		if d := b.opts.InitialDelay << shift; d > 0 && d < bound {
			bound = d
		}
	}
	return time.Duration(b.opts.Rand(int64(bound) + 1))
}

// backoff reports a failed attempt and waits before the next one. It
// returns a non-nil error when there is to be no next attempt: err itself
// when it is permanent or the attempts are used up, or the context's error
// (naming err) when the caller gave up while waiting.
func (b *Backend) backoff(ctx context.Context, op, name string, attempt int, err error) error {
	if !blobstore.IsTransient(err) {
		return err
	}
	if attempt >= b.opts.MaxAttempts {
		return fmt.Errorf("%s %s: giving up after %d attempts: %w", op, name, attempt, err)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%s %s: %w (after attempt %d failed: %v)", op, name, ctx.Err(), attempt, err)
	}
	d := b.delay(attempt)
	if b.opts.OnRetry != nil {
		b.opts.OnRetry(op, name, attempt, d, err)
	}
	if serr := b.opts.Sleep(ctx, d); serr != nil {
		return fmt.Errorf("%s %s: %w (while waiting to retry: %v)", op, name, serr, err)
	}
	return nil
}

// do runs f until it succeeds, fails permanently, or runs out of attempts.
func (b *Backend) do(ctx context.Context, op, name string, f func() error) error {
	for attempt := 1; ; attempt++ {
		err := f()
		if err == nil {
			return nil
		}
		if err := b.backoff(ctx, op, name, attempt, err); err != nil {
			return err
		}
	}
}

// Location is the wrapped backend's.
func (b *Backend) Location() string { return b.b.Location() }

// Close closes the wrapped backend.
func (b *Backend) Close() error { return b.b.Close() }

// Stat retries the wrapped Stat.
func (b *Backend) Stat(ctx context.Context, name string) (blobstore.ObjectInfo, error) {
	var fi blobstore.ObjectInfo
	err := b.do(ctx, "stat", name, func() error {
		var err error
		fi, err = b.b.Stat(ctx, name)
		return err
	})
	return fi, err
}

// Delete retries the wrapped Delete, which is idempotent.
func (b *Backend) Delete(ctx context.Context, name string) error {
	return b.do(ctx, "delete", name, func() error { return b.b.Delete(ctx, name) })
}

// Put retries the wrapped Put, rewinding data before every attempt.
//
// An attempt can store the object and still fail transiently — the
// response was lost, or the connection dropped after the upload completed.
// The next attempt then meets ErrExists. So after a transient failure,
// ErrExists is checked rather than believed: Put compares the stored
// object with data, size first and then byte by byte, and reports success
// if they are equal, ErrExists otherwise. That costs one download of the
// object, but only in this rare case; comparing bytes rather than trusting
// name and size keeps "Put never replaces a different object" true for
// names that are not content hashes too (the repository config). A
// failure of that check that outlasts its own retries counts as a failed
// attempt of Put.
func (b *Backend) Put(ctx context.Context, name string, data io.ReadSeeker, size int64) error {
	maybeStored := false
	return b.do(ctx, "put", name, func() error {
		if _, err := data.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("%s: put %s: rewind data: %w", b.Location(), name, err)
		}
		err := b.b.Put(ctx, name, data, size)
		if errors.Is(err, blobstore.ErrExists) && maybeStored {
			same, cerr := b.sameObject(ctx, name, data, size)
			if errors.Is(cerr, blobstore.ErrNotFound) {
				// Deleted since: the next attempt can store it.
				return blobstore.Transient(fmt.Errorf("%s: put %s: object vanished while compared: %v", b.Location(), name, cerr))
			}
			if cerr != nil {
				return cerr
			}
			if same {
				return nil
			}
		}
		if blobstore.IsTransient(err) {
			maybeStored = true
		}
		return err
	})
}

// sameObject reports whether the stored object name holds exactly the size
// bytes of data.
func (b *Backend) sameObject(ctx context.Context, name string, data io.ReadSeeker, size int64) (bool, error) {
	fi, err := b.b.Stat(ctx, name)
	if err != nil {
		return false, err
	}
	if fi.Size != size {
		return false, nil
	}
	if _, err := data.Seek(0, io.SeekStart); err != nil {
		return false, fmt.Errorf("%s: put %s: rewind data: %w", b.Location(), name, err)
	}
	// The resuming reader: a transient fault half-way through a large
	// object need not fail the whole comparison.
	rc, err := b.Open(ctx, name, 0, -1)
	if err != nil {
		return false, err
	}
	defer rc.Close()
	return equalReaders(rc, data)
}

// equalReaders reports whether stored and want yield the same bytes. Errors
// come from stored unless want fails.
func equalReaders(stored, want io.Reader) (bool, error) {
	const chunk = 64 << 10
	bufS, bufW := make([]byte, chunk), make([]byte, chunk)
	for {
		nw, errW := io.ReadFull(want, bufW)
		if errW != nil && errW != io.EOF && errW != io.ErrUnexpectedEOF {
			return false, fmt.Errorf("reread data: %w", errW)
		}
		ns, errS := io.ReadFull(stored, bufS[:nw])
		if errS != nil && errS != io.EOF && errS != io.ErrUnexpectedEOF {
			return false, errS
		}
		if ns != nw || !bytes.Equal(bufS[:ns], bufW[:nw]) {
			return false, nil
		}
		if nw < chunk {
			// want is exhausted; equal only if stored is too.
			n, err := stored.Read(bufS[:1])
			if n > 0 {
				return false, nil
			}
			if err != nil && err != io.EOF {
				return false, err
			}
			return true, nil
		}
	}
}

// List retries the wrapped List. Objects already passed to fn by a failed
// attempt are not passed again, so fn sees every object once (at the price
// of remembering the names listed); an error from fn ends the listing and
// is returned as is, never retried, even if it is marked Transient.
func (b *Backend) List(ctx context.Context, prefix string, fn func(blobstore.ObjectInfo) error) error {
	seen := make(map[string]struct{})
	var fnErr error
	for attempt := 1; ; attempt++ {
		err := b.b.List(ctx, prefix, func(fi blobstore.ObjectInfo) error {
			if _, ok := seen[fi.Name]; ok {
				return nil
			}
			seen[fi.Name] = struct{}{}
			fnErr = fn(fi)
			return fnErr
		})
		switch {
		case fnErr != nil && err != nil:
			return err
		case fnErr != nil:
			return fnErr
		case err == nil:
			return nil
		}
		if err := b.backoff(ctx, "list", prefix, attempt, err); err != nil {
			return err
		}
	}
}
