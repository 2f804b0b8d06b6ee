package backups

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/protocol"
)

// upFrame is one verified frame of an upload; its payload is
// arena[off:off+n].
type upFrame struct {
	t      blob.Type
	id     blob.ID
	rawLen int
	off, n int
}

// Upload stores the blobs in body, a stream of frames (protocol.WriteFrame)
// at most MaxUploadBytes long, for the running backup backupID of
// clientID. size is the body's length when known (its Content-Length), else
// -1.
//
// Every frame is verified first — decompressed, re-hashed and compared
// with its id — and a corrupt one fails the whole request with
// coffer.KindInvalid "blob_corrupt" naming it, storing nothing. Blobs the
// repository already holds are counted as duplicates and not written
// again (so a retried request is harmless); the rest are packed with one
// writer. It returns only once those packs are stored and indexed: a
// success means every blob of the body is in the repository.
func (s *Service) Upload(ctx context.Context, clientID, backupID string, body io.Reader, size int64) (*protocol.UploadResponse, error) {
	b, err := s.runningBackup(ctx, clientID, backupID)
	if err != nil {
		return nil, err
	}
	if size > s.maxUpload {
		return nil, s.tooLarge()
	}
	repo, err := s.repoOf(ctx, b)
	if err != nil {
		return nil, err
	}
	select {
	case s.uploads <- struct{}{}:
		defer func() { <-s.uploads }()
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
	bufs := uploadBuffers.Get().(*uploadBuf)
	defer uploadBuffers.Put(bufs)
	arena, frames, err := s.readFrames(repo.Codec(), body, size, bufs)
	if err != nil {
		return nil, err
	}
	s.renew(ctx, b)

	// An id twice in one body is stored once.
	ids := make([]blob.ID, 0, len(frames))
	byID := make(map[blob.ID]*upFrame, len(frames))
	for i := range frames {
		f := &frames[i]
		if byID[f.id] == nil {
			ids = append(ids, f.id)
			byID[f.id] = f
		}
	}
	missing, err := repo.Index().Missing(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("upload to backup %s: %w", b.ID, err)
	}
	resp := &protocol.UploadResponse{Success: true, Duplicates: len(frames)}
	if len(missing) > 0 {
		var add int64
		for _, id := range missing {
			add += int64(byID[id].n)
		}
		if err := s.admit(ctx, b, add); err != nil {
			return nil, err
		}
		st, err := s.storeBlobs(ctx, repo, b, arena, missing, byID)
		if err != nil {
			return nil, err
		}
		resp.Stored, resp.StoredBytes = st.Blobs, st.StoredBytes
		resp.Duplicates = len(frames) - st.Blobs
	}
	resp.Message = fmt.Sprintf("%d blobs stored, %d already in the repository.", resp.Stored, resp.Duplicates)
	return resp, nil
}

// storeBlobs packs the missing blobs and waits until their packs are indexed.
func (s *Service) storeBlobs(ctx context.Context, repo *repository.Repository, b *coffer.Backup, arena []byte, missing []blob.ID, byID map[blob.ID]*upFrame) (repository.WriterStats, error) {
	w, err := repo.NewWriter(ctx, writerOptions(b, repository.WriterOptions{}))
	if err != nil {
		return repository.WriterStats{}, fmt.Errorf("upload to backup %s: %w", b.ID, err)
	}
	defer func() {
		if err := w.Close(); err != nil {
			s.log.Warn("close upload writer", "backup_id", b.ID, "err", err)
		}
	}()
	for _, id := range missing {
		f := byID[id]
		if _, err := w.SaveVerifiedPayload(ctx, f.t, f.id, arena[f.off:f.off+f.n], f.rawLen); err != nil { // checked while reading the body
			return repository.WriterStats{}, fmt.Errorf("upload to backup %s: store blob %s: %w", b.ID, id, err)
		}
	}
	if err := w.Flush(ctx); err != nil {
		return repository.WriterStats{}, fmt.Errorf("upload to backup %s: %w", b.ID, err)
	}
	return w.Stats(), nil
}

func (s *Service) tooLarge() error {
	return coffer.Errorf(coffer.KindTooLarge, "upload_too_large",
		"the upload exceeds %d bytes: send fewer blobs a request", s.maxUpload).With("limit_bytes", s.maxUpload)
}

// readFrames reads and verifies every frame of body, copying the payloads
// into one arena.
func (s *Service) readFrames(codec *blob.Codec, body io.Reader, size int64, bufs *uploadBuf) ([]byte, []upFrame, error) {
	lr := &limitedReader{r: body, left: s.maxUpload}
	if bufs.fr == nil {
		bufs.fr = protocol.NewFrameReader(lr)
	} else {
		bufs.fr.Reset(lr)
	}
	fr := bufs.fr
	arena := bufs.arena[:0]
	if size > 0 && int64(cap(arena)) < size {
		arena = make([]byte, 0, size)
	}
	frames := bufs.frames[:0]
	scratch := bufs.scratch[:0]
	defer func() { bufs.arena, bufs.frames, bufs.scratch = arena[:0], frames[:0], scratch[:0] }()
	for {
		f, err := fr.Read()
		if err == io.EOF {
			break
		}
		if lr.exceeded {
			return nil, nil, s.tooLarge()
		}
		if err != nil {
			return nil, nil, coffer.Errorf(coffer.KindInvalid, "invalid_frames",
				"the upload is not a valid frame stream after %d frames (%v): nothing of it was stored", len(frames), err).
				With("frame", len(frames))
		}
		if f.Err != "" {
			return nil, nil, coffer.Errorf(coffer.KindInvalid, "invalid_frames",
				"frame %d is an error frame, which only read responses carry: nothing of the upload was stored", len(frames)).
				With("frame", len(frames))
		}
		if scratch, err = codec.DecodePayload(scratch[:0], f.Type, f.ID, f.Payload, f.RawLen); err != nil {
			if !errors.Is(err, blob.ErrCorrupt) {
				return nil, nil, fmt.Errorf("verify uploaded blob %s: %w", f.ID, err)
			}
			return nil, nil, coffer.Errorf(coffer.KindInvalid, "blob_corrupt",
				"%s blob %s does not match its id (%v): nothing of this upload was stored; compress and upload it again",
				f.Type, f.ID, err).With("id", f.ID.String()).With("frame", len(frames))
		}
		frames = append(frames, upFrame{t: f.Type, id: f.ID, rawLen: f.RawLen, off: len(arena), n: len(f.Payload)})
		arena = append(arena, f.Payload...)
	}
	return arena, frames, nil
}

// uploadBuf holds one upload's buffers between requests: the payload
// arena, the frame list, the decompression scratch and the frame reader
// (each up to the upload limit or a blob's size). Allocating them afresh
// for every 8 MiB request cost the server a tenth of its CPU in zeroing.
type uploadBuf struct {
	arena   []byte
	frames  []upFrame
	scratch []byte
	fr      *protocol.FrameReader
}

var uploadBuffers = sync.Pool{New: func() any { return new(uploadBuf) }}

// limitedReader reads at most left bytes and records an attempt to read
// more (a frame reader reports that as a truncated frame).
type limitedReader struct {
	r        io.Reader
	left     int64
	exceeded bool
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		// Probe for one more byte: a body that ends exactly at the limit
		// is not too large.
		var one [1]byte
		n, err := l.r.Read(one[:])
		if n > 0 {
			l.exceeded = true
			return 0, errors.New("upload too large")
		}
		return 0, err
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}

// writerOptions makes a writer work under backup b's own write session,
// which the service renews for as long as the backup runs, instead of
// beginning and ending a session of its own for every request.
func writerOptions(b *coffer.Backup, o repository.WriterOptions) repository.WriterOptions {
	if b.SessionID != "" {
		o.Session = &repository.Session{ID: b.SessionID}
	}
	return o
}
