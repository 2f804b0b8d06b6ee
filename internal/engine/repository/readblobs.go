package repository

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/blobstore"
)

// BlobRequest is one blob for ReadBlobs: its id and where the index says
// it is (see Locate).
type BlobRequest struct {
	ID  blob.ID
	Loc Location
}

// ReadBlobs limits: blobs of one pack are read together when the gap
// between them is at most readGap bytes, in reads of at most readSpan.
const (
	readGap  = 256 << 10
	readSpan = 32 << 20
)

// ReadBlobs reads many blobs of type t, fetching blobs that lie close
// together in one pack with a single ranged read instead of one read per
// blob (the difference between ~40 requests and ~17 000 for a restore from
// S3). It calls fn once per request, in pack and offset order, with the
// request's index and the blob's authenticated plaintext, valid only
// during the call, or the blob's own error (as ReadBlob would return it:
// damaged blobs match blob.ErrCorrupt). A pack gone since the lookup
// (repacked by garbage collection) is read blob by blob through ReadBlob,
// which follows the move; so is a pack shorter than the range, so that
// only the blobs it lost fail. ReadBlobs returns fn's first error, or ctx's.
func (r *Repository) ReadBlobs(ctx context.Context, t blob.Type, reqs []BlobRequest, fn func(i int, plaintext []byte, err error) error) error {
	return r.readBlobs(ctx, t, reqs, r.decodeAt, fn)
}

// ReadPayloads is ReadBlobs for a receiver that checks blobs itself (an
// agent restoring through the server): fn gets each blob's payload as
// blob.Codec.Compress made it — authenticated in an encrypted repository,
// but neither decompressed nor re-hashed (blob.Codec.DecodePayload does
// that). A payload as long as the plaintext is the plaintext.
func (r *Repository) ReadPayloads(ctx context.Context, t blob.Type, reqs []BlobRequest, fn func(i int, payload []byte, err error) error) error {
	return r.readBlobs(ctx, t, reqs, r.openAt, fn)
}

type decodeFunc func(t blob.Type, id blob.ID, loc Location, stored, dst []byte) ([]byte, error)

func (r *Repository) readBlobs(ctx context.Context, t blob.Type, reqs []BlobRequest, decode decodeFunc, fn func(i int, out []byte, err error) error) error {
	order := make([]int, len(reqs))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		la, lb := reqs[a].Loc, reqs[b].Loc
		return cmp.Or(slices.Compare(la.Pack[:], lb.Pack[:]), cmp.Compare(la.Offset, lb.Offset))
	})
	bufs := readBuffers.Get().(*readBuf)
	defer readBuffers.Put(bufs)
	raw, plain := bufs.raw[:0], bufs.plain[:0]
	defer func() { bufs.raw, bufs.plain = raw[:0], plain[:0] }()
	for len(order) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, start, end := spanOf(reqs, order)
		run := order[:n]
		order = order[n:]
		var err error
		raw, err = r.readSpan(ctx, reqs[run[0]].Loc, start, end, raw)
		if errors.Is(err, blobstore.ErrNotFound) || errors.Is(err, blobstore.ErrRange) {
			// The plaintext ReadBlob returns is a valid payload too.
			for _, i := range run {
				out, berr := r.ReadBlob(ctx, t, reqs[i].ID, reqs[i].Loc, plain[:0])
				if berr == nil {
					plain = out
				}
				if err := fn(i, out, berr); err != nil {
					return err
				}
			}
			continue
		}
		// A failed read fails every blob of the run alike.
		for _, i := range run {
			out, berr := []byte(nil), err
			if berr == nil {
				loc := reqs[i].Loc
				out, berr = decode(t, reqs[i].ID, loc, raw[loc.Offset-start:loc.Offset-start+loc.Length], plain[:0])
				if berr == nil {
					plain = out
				}
			}
			if err := fn(i, out, berr); err != nil {
				return err
			}
		}
	}
	return nil
}

// readBuf keeps ReadBlobs' buffers — a span of a pack (up to readSpan)
// and one blob's plaintext — for the next call: a server answering a
// restore calls it for every batch, and zeroing fresh buffers each time was
// a large share of its CPU.
type readBuf struct{ raw, plain []byte }

var readBuffers = sync.Pool{New: func() any { return new(readBuf) }}

// spanOf returns how many of the sorted requests order starts with can be
// read in one range, and that range.
func spanOf(reqs []BlobRequest, order []int) (n int, start, end uint32) {
	first := reqs[order[0]].Loc
	start, end = first.Offset, first.Offset+first.Length
	for n = 1; n < len(order); n++ {
		loc := reqs[order[n]].Loc
		if loc.Pack != first.Pack || loc.Offset > end+readGap || loc.Offset+loc.Length-start > readSpan {
			break
		}
		end = max(end, loc.Offset+loc.Length)
	}
	return n, start, end
}

// readSpan reads bytes [start, end) of loc's pack into buf (grown as
// needed).
func (r *Repository) readSpan(ctx context.Context, loc Location, start, end uint32, buf []byte) ([]byte, error) {
	name := loc.Pack.Name()
	rc, err := r.backend.Open(ctx, name, int64(start), int64(end-start))
	if err != nil {
		return buf, fmt.Errorf("read pack %s: %w", name, err)
	}
	defer rc.Close()
	buf = slices.Grow(buf[:0], int(end-start))[:end-start]
	if _, err := io.ReadFull(rc, buf); err != nil {
		return buf, fmt.Errorf("read pack %s [%d, %d) from %s: %w", name, start, end, r.Location(), err)
	}
	return buf, nil
}

// decodeAt decodes one stored blob read from its pack, the stored bytes
// at loc, checking that loc is of type t.
func (r *Repository) decodeAt(t blob.Type, id blob.ID, loc Location, stored, dst []byte) ([]byte, error) {
	if loc.Type != t {
		return nil, fmt.Errorf("load %s blob %s: the index records it as a %s blob: %w", t, id, loc.Type, blob.ErrCorrupt)
	}
	out, err := r.codec.Decode(dst, t, id, stored, int(loc.RawLength))
	if err != nil {
		return nil, fmt.Errorf("load from pack %s in %s: %w", loc.Pack.Name(), r.Location(), err)
	}
	return out, nil
}

// openAt is decodeAt without decompressing and re-hashing.
func (r *Repository) openAt(t blob.Type, id blob.ID, loc Location, stored, dst []byte) ([]byte, error) {
	if loc.Type != t {
		return nil, fmt.Errorf("load %s blob %s: the index records it as a %s blob: %w", t, id, loc.Type, blob.ErrCorrupt)
	}
	if int(loc.Length) != len(stored) || loc.RawLength > blob.MaxSize {
		return nil, fmt.Errorf("load %s blob %s: bad location: %w", t, id, blob.ErrCorrupt)
	}
	out, err := r.codec.OpenPayload(dst, t, id, stored)
	if err != nil {
		return nil, fmt.Errorf("load from pack %s in %s: %w", loc.Pack.Name(), r.Location(), err)
	}
	return out, nil
}
