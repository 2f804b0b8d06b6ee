package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/minio/minio-go/v7"

	"github.com/cofferhq/coffer/internal/engine/blobstore"
)

// Open reads length bytes of name from offset (to the end if length < 0)
// with one ranged GET. The range is checked against the object's size from
// the response's Content-Range; the rare cases one GET cannot settle (zero
// bytes, a range beyond any object, the server's 416) ask Stat.
func (b *Backend) Open(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	if err := blobstore.ValidName(name); err != nil {
		return nil, fmt.Errorf("open at %s: %w", b.location, err)
	}
	if offset < 0 {
		return nil, fmt.Errorf("open %s at %s: offset %d: %w", name, b.location, offset, blobstore.ErrRange)
	}
	var opts minio.GetObjectOptions
	switch {
	case length == 0 || (length > 0 && offset > math.MaxInt64-length):
		return b.openByStat(ctx, name, offset, length)
	case length > 0:
		opts.SetRange(offset, offset+length-1)
	case offset > 0:
		opts.SetRange(offset, 0)
	}
	body, info, header, err := minio.Core{Client: b.client}.GetObject(ctx, b.bucket, b.key(name), opts)
	if err != nil {
		if errors.Is(b.mapOnly(err), blobstore.ErrRange) {
			return b.openByStat(ctx, name, offset, length)
		}
		return nil, b.objectError("open", name, err)
	}
	total, start := info.Size, int64(0) // no Range header, or a server that ignored it
	if cr := header.Get("Content-Range"); cr != "" {
		var end int64
		if start, end, total, err = parseContentRange(cr); err != nil || start != offset || (length > 0 && end-start >= length) {
			body.Close()
			return nil, fmt.Errorf("open %s at %s: the server answered range [%d, +%d) with %q", name, b.location, offset, length, cr)
		}
	}
	if !fits(offset, length, total) {
		body.Close()
		return nil, fmt.Errorf("open %s at %s: [%d, +%d) of %d bytes: %w", name, b.location, offset, length, total, blobstore.ErrRange)
	}
	want := length
	if want < 0 {
		want = total - offset
	}
	if start < offset {
		// The server sent the whole object: skip to offset.
		if _, err := io.CopyN(io.Discard, body, offset-start); err != nil {
			body.Close()
			return nil, b.objectError("open", name, err)
		}
	}
	return &objectReader{b: b, name: name, r: io.LimitReader(body, want), c: body, left: want}, nil
}

// fits reports whether [offset, +length) lies within size bytes, without
// overflowing.
func fits(offset, length, size int64) bool {
	if offset < 0 || offset > size {
		return false
	}
	return length < 0 || length <= size-offset
}

// openByStat answers the reads one GET cannot: an empty range within the
// object, or an offset at its very end, reads nothing; anything past the end
// is ErrRange.
func (b *Backend) openByStat(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	info, err := b.Stat(ctx, name)
	if err != nil {
		return nil, err
	}
	if !fits(offset, length, info.Size) {
		return nil, fmt.Errorf("open %s at %s: [%d, +%d) of %d bytes: %w", name, b.location, offset, length, info.Size, blobstore.ErrRange)
	}
	if length > 0 || (length < 0 && offset < info.Size) {
		// Stat says the range holds bytes but the server refused it: not
		// ours to paper over.
		return nil, fmt.Errorf("open %s at %s: server refused range [%d, +%d) of %d bytes", name, b.location, offset, length, info.Size)
	}
	return io.NopCloser(strings.NewReader("")), nil
}

// mapOnly returns the sentinel err maps to, without wrapping.
func (b *Backend) mapOnly(err error) error {
	cause, _ := b.classify(err)
	return cause
}

// parseContentRange splits "bytes 0-99/1234".
func parseContentRange(cr string) (start, end, total int64, err error) {
	_, err = fmt.Sscanf(cr, "bytes %d-%d/%d", &start, &end, &total)
	if err == nil && (start < 0 || end < start || total <= end) {
		err = errors.New("inconsistent")
	}
	return start, end, total, err
}

// objectReader is the body of an Open: it turns a connection that breaks
// midway into an error naming the object (Transient), and a body that ends
// early into io.ErrUnexpectedEOF rather than a short read.
type objectReader struct {
	b    *Backend
	name string
	r    io.Reader
	c    io.Closer
	left int64
}

func (o *objectReader) Read(p []byte) (int, error) {
	n, err := o.r.Read(p)
	o.left -= int64(n)
	switch {
	case err == io.EOF && o.left > 0:
		err = io.ErrUnexpectedEOF
	case err == io.EOF:
		return n, io.EOF
	case err == nil:
		return n, nil
	}
	return n, o.b.objectError("read", o.name, err)
}

func (o *objectReader) Close() error { return o.c.Close() }

// Stat returns name's size and modification time (HEAD).
func (b *Backend) Stat(ctx context.Context, name string) (blobstore.ObjectInfo, error) {
	if err := blobstore.ValidName(name); err != nil {
		return blobstore.ObjectInfo{}, fmt.Errorf("stat at %s: %w", b.location, err)
	}
	info, err := b.client.StatObject(ctx, b.bucket, b.key(name), minio.StatObjectOptions{})
	if err != nil {
		return blobstore.ObjectInfo{}, b.objectError("stat", name, err)
	}
	return blobstore.ObjectInfo{Name: name, Size: info.Size, ModTime: info.LastModified}, nil
}

// Delete removes name; S3 answers a delete of a missing key with success.
func (b *Backend) Delete(ctx context.Context, name string) error {
	if err := blobstore.ValidName(name); err != nil {
		return fmt.Errorf("delete at %s: %w", b.location, err)
	}
	err := b.client.RemoveObject(ctx, b.bucket, b.key(name), minio.RemoveObjectOptions{})
	if err != nil && !errors.Is(b.mapOnly(err), blobstore.ErrNotFound) {
		return b.objectError("delete", name, err)
	}
	return nil
}

// List calls fn for every object whose name starts with prefix, page by
// page (ListObjectsV2). Keys ending in "/" — folder markers some tools
// create — are not objects and are skipped.
func (b *Backend) List(ctx context.Context, prefix string, fn func(blobstore.ObjectInfo) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	objects := b.client.ListObjects(ctx, b.bucket, minio.ListObjectsOptions{Prefix: b.key(prefix), Recursive: true})
	defer func() {
		cancel()
		for range objects { // let minio-go's lister goroutine finish
		}
	}()
	for obj := range objects {
		if obj.Err != nil {
			return b.objectError("list", prefix+"*", obj.Err)
		}
		name, ok := strings.CutPrefix(obj.Key, b.prefix)
		if !ok || name == "" || strings.HasSuffix(name, "/") {
			continue
		}
		if err := fn(blobstore.ObjectInfo{Name: name, Size: obj.Size, ModTime: obj.LastModified}); err != nil {
			return err
		}
	}
	return ctx.Err()
}
