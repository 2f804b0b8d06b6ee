package retry

import (
	"context"
	"errors"
	"io"

	"github.com/cofferhq/coffer/internal/engine/blobstore"
)

// Open retries opening the object and returns a reader that resumes after
// transient read errors: it closes the broken stream, backs off, and opens
// the rest of the range from the offset it had reached, so the caller reads
// the same bytes as without the failure. At most MaxAttempts consecutive
// attempts may fail without a byte of progress; then Read returns the last
// error. Reopening and its backoff use ctx, the context given to Open.
func (b *Backend) Open(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	var rc io.ReadCloser
	err := b.do(ctx, "open", name, func() error {
		var err error
		rc, err = b.b.Open(ctx, name, offset, length)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &reader{b: b, ctx: ctx, name: name, offset: offset, length: length, rc: rc}, nil
}

var errClosed = errors.New("read after close")

// reader is the resuming reader of one range.
type reader struct {
	b              *Backend
	ctx            context.Context
	name           string
	offset, length int64 // the range opened; length < 0 is to the end

	rc       io.ReadCloser // the current stream; nil after it broke
	pos      int64         // bytes delivered so far
	failures int           // consecutive failed attempts since the last progress
	lastErr  error         // the error of the last failed attempt
	err      error         // sticky: the reader has given up, or was closed
}

func (r *reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	for {
		if r.rc == nil {
			if err := r.reopen(); err != nil {
				r.err = err
				return 0, err
			}
			continue
		}
		n, err := r.rc.Read(p)
		r.pos += int64(n)
		if n > 0 {
			r.failures = 0
		}
		if err == nil || err == io.EOF || !blobstore.IsTransient(err) {
			return n, err
		}
		_ = r.rc.Close()
		r.rc = nil
		r.failures++
		r.lastErr = err
		if n > 0 {
			return n, nil // deliver the bytes now; the next Read resumes
		}
	}
}

// reopen waits out the backoff of the last failure and opens the rest of
// the range. A failure to open counts as another failed attempt and leaves
// r.rc nil; the error returned means the reader gives up.
func (r *reader) reopen() error {
	if err := r.b.backoff(r.ctx, "read", r.name, r.failures, r.lastErr); err != nil {
		return err
	}
	rest := int64(-1)
	if r.length >= 0 {
		rest = r.length - r.pos
	}
	rc, err := r.b.b.Open(r.ctx, r.name, r.offset+r.pos, rest)
	if err != nil {
		r.failures++
		r.lastErr = err
		return nil
	}
	r.rc = rc
	return nil
}

func (r *reader) Close() error {
	if r.err == errClosed {
		return nil
	}
	r.err = errClosed
	if r.rc == nil {
		return nil
	}
	err := r.rc.Close()
	r.rc = nil
	return err
}
