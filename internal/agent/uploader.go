package agent

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/cofferhq/coffer/internal/apiclient"
	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/protocol"
)

// Upload defaults.
const (
	defaultUploads     = 2       // concurrent POST /agent/blobs
	defaultBatchBytes  = 8 << 20 // body size an upload aims for
	defaultMaxCheckIDs = 1000    // when the server does not say
)

// uploadAPI is what the uploader needs of the server (an *apiclient.Client).
type uploadAPI interface {
	CheckBlobs(ctx context.Context, req protocol.CheckBlobsRequest) (*protocol.CheckBlobsResponse, error)
	Upload(ctx context.Context, backupID string, frames []byte) (protocol.UploadResponse, error)
}

var _ uploadAPI = (*apiclient.Client)(nil)

// uploader is the archiver's Saver on an agent: it asks the server which
// blobs it lacks, compresses the missing ones (on the archiver's saver
// goroutines) and sends them in batches of frames over several
// connections at once.
//
// Memory is bounded: there are uploads+1 batch buffers — one being filled,
// the others being sent — and a saver that finds them all busy waits.
type uploader struct {
	api      uploadAPI
	backupID string
	codec    *blob.Codec
	maxCheck int
	target   int   // bytes a batch is sent at
	maxBody  int64 // bytes a body must not exceed (the server's limit)

	ctx    context.Context // uploads run under it; canceled on the first failure
	cancel context.CancelCauseFunc

	knownMu sync.Mutex
	known   map[blob.ID]struct{} // saved by this backup: present, for Missing

	batchMu sync.Mutex // held while filling or handing off the current batch
	cur     *batch
	queue   chan *batch // to the upload goroutines (unbuffered)
	free    chan *batch // idle buffers
	workers sync.WaitGroup
	closed  sync.Once

	// Statistics.
	sentBytes   atomic.Uint64 // request bodies that were accepted
	storedBytes atomic.Uint64 // UploadResponse.StoredBytes
	storedBlobs atomic.Uint64
	peakBuffers atomic.Int64 // most buffers allocated at once (tests)
	buffers     atomic.Int64
}

// batch is one upload body being filled.
type batch struct {
	data  []byte
	count int
}

func (b *batch) Write(p []byte) (int, error) {
	b.data = append(b.data, p...)
	return len(p), nil
}

// uploaderOptions configure newUploader (zero: the defaults).
type uploaderOptions struct {
	uploads    int
	batchBytes int
}

func newUploader(ctx context.Context, api uploadAPI, backupID string, codec *blob.Codec, params protocol.RepositoryParams, o uploaderOptions) *uploader {
	if o.uploads <= 0 {
		o.uploads = defaultUploads
	}
	if o.batchBytes <= 0 {
		o.batchBytes = defaultBatchBytes
	}
	maxBody := params.MaxUploadBytes
	if maxBody <= 0 {
		maxBody = 64 << 20
	}
	maxCheck := params.MaxCheckIDs
	if maxCheck <= 0 {
		maxCheck = defaultMaxCheckIDs
	}
	u := &uploader{api: api, backupID: backupID, codec: codec, maxCheck: maxCheck,
		target: int(min(int64(o.batchBytes), maxBody)), maxBody: maxBody,
		known: map[blob.ID]struct{}{}, queue: make(chan *batch), free: make(chan *batch, o.uploads+1)}
	u.ctx, u.cancel = context.WithCancelCause(ctx)
	for range o.uploads + 1 {
		u.free <- nil // allocated on first use
	}
	for range o.uploads {
		u.workers.Add(1)
		go u.upload()
	}
	return u
}

// Missing implements archiver.Saver: it asks the server in batches of the
// server's limit, and counts blobs this backup already saved as present
// (they may still be on their way).
func (u *uploader) Missing(ctx context.Context, ids []blob.ID) ([]blob.ID, error) {
	var out []blob.ID
	hex := make([]string, 0, min(len(ids), u.maxCheck))
	for start := 0; start < len(ids); start += u.maxCheck {
		part := ids[start:min(len(ids), start+u.maxCheck)]
		hex = hex[:0]
		for _, id := range part {
			hex = append(hex, id.String())
		}
		resp, err := u.api.CheckBlobs(ctx, protocol.CheckBlobsRequest{BackupID: u.backupID, IDs: hex})
		if err != nil {
			return nil, fmt.Errorf("ask the server which blobs it lacks: %w", err)
		}
		u.knownMu.Lock()
		for _, s := range resp.Missing {
			id, err := blob.ParseID(s)
			if err != nil {
				u.knownMu.Unlock()
				return nil, fmt.Errorf("ask the server which blobs it lacks: the answer holds %q: %w", s, err)
			}
			if _, ok := u.known[id]; !ok {
				out = append(out, id)
			}
		}
		u.knownMu.Unlock()
	}
	return out, nil
}

// Save implements archiver.Saver: it compresses the blob and adds its frame
// to the current batch, handing the batch to an upload goroutine when it
// is full (and waiting while all are busy). The blob is on the server only
// once Flush returned.
func (u *uploader) Save(ctx context.Context, t blob.Type, id blob.ID, plaintext []byte, level blob.Compression) (bool, error) {
	if err := u.failure(); err != nil {
		return false, err
	}
	u.knownMu.Lock()
	if _, ok := u.known[id]; ok {
		u.knownMu.Unlock()
		return false, nil
	}
	u.known[id] = struct{}{}
	u.knownMu.Unlock()

	sp := scratch.Get().(*[]byte)
	defer scratch.Put(sp)
	payload, err := u.codec.Compress((*sp)[:0], plaintext, level)
	if err != nil {
		return false, err
	}
	*sp = payload
	if err := u.add(ctx, t, id, len(plaintext), payload); err != nil {
		return false, err
	}
	return true, nil
}

var scratch = sync.Pool{New: func() any { return new([]byte) }}

// add appends one frame to the current batch.
func (u *uploader) add(ctx context.Context, t blob.Type, id blob.ID, rawLen int, payload []byte) error {
	size := protocol.FrameHeaderSize + len(payload)
	if int64(size) > u.maxBody {
		return fmt.Errorf("blob %s takes %d bytes, more than the server accepts in one upload (%d): raise the server's upload limit", id.Short(), size, u.maxBody)
	}
	u.batchMu.Lock()
	defer u.batchMu.Unlock()
	if u.cur != nil && len(u.cur.data)+size > u.target {
		if err := u.send(ctx); err != nil {
			return err
		}
	}
	if u.cur == nil {
		select {
		case b := <-u.free:
			if b == nil {
				b = &batch{data: make([]byte, 0, u.target+protocol.FrameHeaderSize)}
				u.peakBuffers.Store(max(u.peakBuffers.Load(), u.buffers.Add(1)))
			}
			u.cur = b
		case <-ctx.Done():
			return ctx.Err()
		case <-u.ctx.Done():
			return u.failure()
		}
	}
	if err := protocol.WriteFrame(u.cur, t, id, rawLen, payload); err != nil {
		return err
	}
	u.cur.count++
	if len(u.cur.data) >= u.target {
		return u.send(ctx)
	}
	return nil
}

// send hands the current batch to an upload goroutine; batchMu is held.
func (u *uploader) send(ctx context.Context) error {
	select {
	case u.queue <- u.cur:
		u.cur = nil
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-u.ctx.Done():
		return u.failure()
	}
}

// upload sends batches until the queue closes; after a failure it only
// returns buffers.
func (u *uploader) upload() {
	defer u.workers.Done()
	for b := range u.queue {
		if u.ctx.Err() == nil {
			resp, err := u.api.Upload(u.ctx, u.backupID, b.data)
			if err != nil {
				u.cancel(fmt.Errorf("upload %d blobs: %w", b.count, err))
			} else {
				u.sentBytes.Add(uint64(len(b.data)))
				u.storedBytes.Add(uint64(max(resp.StoredBytes, 0)))
				u.storedBlobs.Add(uint64(max(resp.Stored, 0)))
			}
		}
		b.data, b.count = b.data[:0], 0
		u.free <- b
	}
}

// failure returns the first upload error, or nil.
func (u *uploader) failure() error {
	if u.ctx.Err() == nil {
		return nil
	}
	return context.Cause(u.ctx)
}

// Flush sends the last batch and waits for every upload; it returns the
// first upload error. The uploader takes no more blobs afterwards.
func (u *uploader) Flush(ctx context.Context) error {
	u.batchMu.Lock()
	var err error
	if u.cur != nil && u.cur.count > 0 {
		err = u.send(ctx)
	}
	u.batchMu.Unlock()
	u.closed.Do(func() { close(u.queue) })
	u.workers.Wait()
	if ferr := u.failure(); ferr != nil {
		return ferr
	}
	return err
}

// Close stops the uploads (those running are canceled) and waits for them.
func (u *uploader) Close() {
	u.cancel(context.Canceled)
	u.closed.Do(func() { close(u.queue) })
	u.workers.Wait()
}
