package s3

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/cofferhq/coffer/internal/engine/blobstore"
)

// maxParts is the most parts S3 accepts in one multipart upload.
const maxParts = 10000

// errSize marks data that holds more or fewer bytes than Put was told.
var errSize = errors.New("data size differs from the size given")

// Put uploads size bytes of data under name unless name exists: objects up
// to the part size in one PUT, larger ones as a multipart upload. Either way
// the object appears whole when the server completes the request, or not at
// all, and the server checks every byte against an MD5 computed here.
//
// "If-None-Match: *" goes on the PUT and on the multipart completion — the
// request that creates the object — so the server refuses to replace an
// object (blobstore.ErrExists). minio-go's PutObject is not used for that
// reason: v7.4.1 sends the header when it starts a multipart upload but
// drops it from the completion, where S3 and Versity Gateway check it.
func (b *Backend) Put(ctx context.Context, name string, data io.ReadSeeker, size int64) error {
	if err := blobstore.ValidName(name); err != nil {
		return fmt.Errorf("put at %s: %w", b.location, err)
	}
	if size < 0 {
		return fmt.Errorf("put %s at %s: negative size %d", name, b.location, size)
	}
	// Measure first, so a wrong size costs no upload; exactReader still
	// guards against data that changes while it is read.
	end, err := data.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("put %s at %s: seek data: %w", name, b.location, err)
	}
	if end != size {
		return fmt.Errorf("put %s at %s: %w: data holds %d bytes, not %d; nothing stored", name, b.location, errSize, end, size)
	}
	if _, err := data.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("put %s at %s: seek data: %w", name, b.location, err)
	}
	if uint64(size) > b.partSize*maxParts {
		return fmt.Errorf("put %s at %s: %d bytes need more than %d parts of %d bytes: raise the part size", name, b.location, size, maxParts, b.partSize)
	}
	r := &exactReader{r: data, n: size, left: size}
	if b.statFirst || uint64(size) > b.partSize {
		// For a multipart upload, a failed completion costs every part's
		// upload; a HEAD first saves that when the object is already
		// there (a retry after a lost reply, another writer of the same
		// pack). The PUT or completion still decides.
		if err := b.absent(ctx, name); err != nil {
			return b.objectError("put", name, err)
		}
	}
	if uint64(size) <= b.partSize {
		err = b.putSingle(ctx, b.key(name), r)
	} else {
		err = b.putMultipart(ctx, b.key(name), r)
	}
	if err != nil {
		return b.objectError("put", name, err)
	}
	return nil
}

// createOnly returns the options of the request that creates an object.
func createOnly() minio.PutObjectOptions {
	opts := minio.PutObjectOptions{ContentType: "application/octet-stream"}
	opts.SetMatchETagExcept("*") // If-None-Match: *
	return opts
}

// absent returns nil if name does not exist, blobstore.ErrExists if it
// does, and the server's error if it cannot tell.
func (b *Backend) absent(ctx context.Context, name string) error {
	_, err := b.client.StatObject(ctx, b.bucket, b.key(name), minio.StatObjectOptions{})
	switch {
	case err == nil:
		return blobstore.ErrExists
	case errors.Is(b.mapOnly(err), blobstore.ErrNotFound):
		return nil
	}
	return err
}

// putSingle reads r once for its MD5, then again to send it.
func (b *Backend) putSingle(ctx context.Context, key string, r *exactReader) error {
	h := md5.New()
	if _, err := io.Copy(h, r); err != nil {
		return err
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return err
	}
	sum := base64.StdEncoding.EncodeToString(h.Sum(nil))
	_, err := minio.Core{Client: b.client}.PutObject(ctx, b.bucket, key, r, r.n, sum, "", createOnly())
	return err
}

// putMultipart uploads r in parts of b.partSize, one part in memory at a
// time, and completes the upload only if key does not exist by then. Any
// failure, cancellation included, aborts the upload so its parts do not
// linger in the bucket.
func (b *Backend) putMultipart(ctx context.Context, key string, r *exactReader) (err error) {
	core := minio.Core{Client: b.client}
	id, err := core.NewMultipartUpload(ctx, b.bucket, key, minio.PutObjectOptions{ContentType: "application/octet-stream"})
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			// The caller's ctx may be what failed: abort on a detached one.
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			core.AbortMultipartUpload(actx, b.bucket, key, id)
		}
	}()

	buf := make([]byte, b.partSize)
	var parts []minio.CompletePart
	for n, left := 1, r.n; left > 0; n++ {
		part := buf[:min(uint64(left), b.partSize)]
		if _, err := io.ReadFull(r, part); err != nil {
			return err
		}
		sum := md5.Sum(part)
		p, err := core.PutObjectPart(ctx, b.bucket, key, id, n, bytes.NewReader(part), int64(len(part)),
			minio.PutObjectPartOptions{Md5Base64: base64.StdEncoding.EncodeToString(sum[:])})
		if err != nil {
			return fmt.Errorf("part %d: %w", n, err)
		}
		parts = append(parts, minio.CompletePart{PartNumber: n, ETag: p.ETag})
		left -= int64(len(part))
	}
	if err := r.atEnd(); err != io.EOF {
		return err
	}
	_, err = core.CompleteMultipartUpload(ctx, b.bucket, key, id, parts, createOnly())
	return err
}

// exactReader passes on exactly n bytes of r. If r holds more, the read
// that would deliver the last bytes fails instead, and so does reaching EOF
// early: the server never sees a complete body of the wrong data.
type exactReader struct {
	r    io.ReadSeeker
	n    int64 // size
	left int64 // bytes not yet delivered
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.left == 0 {
		return 0, e.atEnd()
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	if e.left == 0 {
		if err := e.atEnd(); err != io.EOF {
			return 0, err
		}
		return n, nil
	}
	if err == io.EOF {
		return n, fmt.Errorf("%w: data ended after %d of %d bytes", errSize, e.n-e.left, e.n)
	}
	return n, err
}

// atEnd returns io.EOF if r is exhausted too, an errSize error if not.
func (e *exactReader) atEnd() error {
	var probe [1]byte
	if m, _ := io.ReadFull(e.r, probe[:]); m > 0 {
		return fmt.Errorf("%w: data holds more than %d bytes", errSize, e.n)
	}
	return io.EOF
}

// Seek rewinds, for the MD5 pass and minio-go's retries; only a seek to the
// start is supported.
func (e *exactReader) Seek(offset int64, whence int) (int64, error) {
	if offset != 0 || whence != io.SeekStart {
		return 0, errors.New("exactReader: only rewinding is supported")
	}
	if _, err := e.r.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	e.left = e.n
	return 0, nil
}
