package repository

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/blobstore"
	"github.com/cofferhq/coffer/internal/engine/pack"
)

// WriterOptions configure a Writer.
type WriterOptions struct {
	// Uploads is how many finished packs may be uploading at once (default
	// 2). Memory is bounded by about (Uploads+2) × the pack size.
	Uploads int
	// SessionTTL is the lease of the writer's index session (default 10
	// minutes); the writer renews it every third of that.
	SessionTTL time.Duration
	// OnPack, when set, is called (from an uploader goroutine) after each
	// pack is stored and indexed.
	OnPack func(PackInfo, []pack.Entry)
	// Session, when set, is an open session the caller holds and renews
	// (a server's backup, which outlives each of its upload requests): the
	// writer works under it and neither renews nor ends it, sparing two
	// database writes per Writer.
	Session *Session
}

// WriterStats count what a Writer stored.
type WriterStats struct {
	Blobs       int   // blobs written to packs
	RawBytes    int64 // their plaintext bytes
	StoredBytes int64 // their stored (compressed, encrypted) bytes
	Packs       int   // packs uploaded and indexed
	PackBytes   int64 // bytes of those packs
}

// Writer stores blobs into packs for one backup (or one repack). Save is
// safe for concurrent use: callers compress and encrypt on their own
// goroutines, the writer appends to the current pack and uploads finished
// packs in the background, several at a time. A blob's index row is written
// only once its pack is durably stored.
//
// A Writer holds an index session (see Index) from NewWriter to Close, so
// that garbage collection spares every blob it was told is present or has
// written. Close it when done, after Commit or on failure.
type Writer struct {
	repo    *Repository
	opts    WriterOptions
	session Session

	ctx    context.Context // uploads run under it; Close cancels it
	cancel context.CancelFunc

	mu      sync.Mutex
	cur     *pack.Writer         // the pack being filled; nil until a blob needs one
	pending map[blob.ID]struct{} // saved here, not yet indexed
	stats   WriterStats
	err     error // the first upload failure; every later call returns it

	buffers  chan []byte // Data of stored packs, for the next packs
	uploads  chan *pack.Pack
	inflight sync.WaitGroup // packs sent and not yet indexed (or failed)
	workers  sync.WaitGroup
	renewed  chan struct{} // closed when the renewer stops
	closed   sync.Once
	closeErr error
}

// MaxIndexDelay bounds the time between starting to store a pack and
// indexing it: a writer that took longer (stalled, or its database was
// unreachable) does not index the pack, because garbage collection may
// already be deleting it as an orphan (GCOptions.OrphanGrace is at least
// twice this).
const MaxIndexDelay = time.Hour

// NewWriter opens a write session on the repository.
func (r *Repository) NewWriter(ctx context.Context, o WriterOptions) (*Writer, error) {
	if o.Uploads <= 0 {
		o.Uploads = 2
	}
	if o.SessionTTL <= 0 {
		o.SessionTTL = 10 * time.Minute
	}
	var s Session
	if o.Session != nil {
		s = *o.Session
	} else {
		var err error
		if s, err = r.index.BeginSession(ctx, o.SessionTTL); err != nil {
			return nil, fmt.Errorf("begin write session on %s: %w", r.Location(), err)
		}
	}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w := &Writer{repo: r, opts: o, session: s, ctx: wctx, cancel: cancel,
		pending: map[blob.ID]struct{}{}, uploads: make(chan *pack.Pack), renewed: make(chan struct{}),
		buffers: make(chan []byte, o.Uploads+1)}
	for range o.Uploads {
		w.workers.Add(1)
		go w.uploader()
	}
	if o.Session != nil {
		close(w.renewed)
	} else {
		go w.renew()
	}
	return w, nil
}

// newPack starts a pack in a recycled buffer when one is free: a backup
// fills a 16 MiB pack every few tens of milliseconds.
func (w *Writer) newPack() *pack.Writer {
	select {
	case buf := <-w.buffers:
		return pack.NewWriterBuffer(w.repo.codec, buf)
	default:
	}
	if bp, ok := w.repo.packBuffers.Get().(*[]byte); ok {
		return pack.NewWriterBuffer(w.repo.codec, *bp)
	}
	return pack.NewWriter(w.repo.codec, w.repo.cfg.PackSize)
}

func (w *Writer) recycle(buf []byte) {
	select {
	case w.buffers <- buf[:0]:
	default:
		w.repo.releasePackBuffer(buf)
	}
}

// releasePackBuffer keeps buf for the next Writer.
func (r *Repository) releasePackBuffer(buf []byte) {
	if cap(buf) >= r.cfg.PackSize {
		buf = buf[:0]
		r.packBuffers.Put(&buf)
	}
}

// renew keeps the session's lease alive until Close. A lease that lapsed
// anyway (the process stalled) is not an error here: CommitSnapshot checks
// every reference, so a blob GC took meanwhile fails the commit by name.
func (w *Writer) renew() {
	defer close(w.renewed)
	t := time.NewTicker(w.opts.SessionTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-t.C:
			w.repo.index.RenewSession(w.ctx, w.session, w.opts.SessionTTL)
		}
	}
}

// Missing returns which of ids the repository lacks (in input order),
// counting blobs this writer holds but has not indexed yet as present, and
// touches the present ones so that GC spares them.
func (w *Writer) Missing(ctx context.Context, ids []blob.ID) ([]blob.ID, error) {
	missing, err := w.repo.index.Missing(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("look up blobs in %s: %w", w.repo.Location(), err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	out := missing[:0]
	for _, id := range missing {
		if _, ok := w.pending[id]; !ok {
			out = append(out, id)
		}
	}
	return out, nil
}

var encodeBuffers = sync.Pool{New: func() any { return new([]byte) }}

// Save encodes a blob (compressed at level when that shrinks it, encrypted
// when the repository is) and adds it to the current pack. It reports
// whether it stored the blob: false when this writer already holds it. id
// must be the blob's id (Codec.IDOf(t, plaintext)). Save does not consult
// the index: ask Missing first.
func (w *Writer) Save(ctx context.Context, t blob.Type, id blob.ID, plaintext []byte, level blob.Compression) (bool, error) {
	if !w.reserve(id) {
		return false, w.failure()
	}
	bufp := encodeBuffers.Get().(*[]byte)
	stored, err := w.repo.codec.Encode((*bufp)[:0], t, id, plaintext, level)
	if err != nil {
		w.release(id)
		encodeBuffers.Put(bufp)
		return false, err
	}
	err = w.add(ctx, t, id, stored, len(plaintext))
	*bufp = stored
	encodeBuffers.Put(bufp)
	return err == nil, err
}

// SavePayload stores a blob that arrives as its payload (see
// blob.Codec.Compress) and plaintext length, as an agent uploads it: it
// checks that the payload decompresses to rawLen bytes hashing to id
// (errors match blob.ErrCorrupt), then encrypts and packs the payload as
// it is, without compressing again. It reports false when this writer
// already holds the blob.
func (w *Writer) SavePayload(ctx context.Context, t blob.Type, id blob.ID, payload []byte, rawLen int) (bool, error) {
	bufp := encodeBuffers.Get().(*[]byte)
	defer encodeBuffers.Put(bufp)
	plain, err := w.repo.codec.DecodePayload((*bufp)[:0], t, id, payload, rawLen)
	if err != nil {
		return false, err
	}
	*bufp = plain
	return w.SaveVerifiedPayload(ctx, t, id, payload, rawLen)
}

// SaveVerifiedPayload is SavePayload for a payload the caller has already
// checked with blob.Codec.DecodePayload (the server checks a whole upload
// before storing any of it, and need not decompress and hash twice).
// Storing an unchecked payload this way would let a client store a blob
// that does not match its id: never do that.
func (w *Writer) SaveVerifiedPayload(ctx context.Context, t blob.Type, id blob.ID, payload []byte, rawLen int) (bool, error) {
	if !w.reserve(id) {
		return false, w.failure()
	}
	sealp := encodeBuffers.Get().(*[]byte)
	defer encodeBuffers.Put(sealp)
	stored := w.repo.codec.SealPayload((*sealp)[:0], t, id, payload)
	*sealp = stored
	err := w.add(ctx, t, id, stored, rawLen)
	return err == nil, err
}

// reserve claims id for this writer; false if it already holds it.
func (w *Writer) reserve(id blob.ID) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.pending[id]; ok {
		return false
	}
	w.pending[id] = struct{}{}
	return true
}

func (w *Writer) release(id blob.ID) {
	w.mu.Lock()
	delete(w.pending, id)
	w.mu.Unlock()
}

func (w *Writer) failure() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// add appends a stored blob to the current pack and sends the pack to the
// uploaders when it is full.
func (w *Writer) add(ctx context.Context, t blob.Type, id blob.ID, stored []byte, rawLen int) error {
	w.mu.Lock()
	if w.err != nil {
		w.mu.Unlock()
		return w.err
	}
	if w.cur == nil {
		w.cur = w.newPack()
	}
	if _, err := w.cur.Add(t, id, stored, rawLen); err != nil {
		delete(w.pending, id)
		w.mu.Unlock()
		return err
	}
	w.stats.Blobs++
	w.stats.RawBytes += int64(rawLen)
	w.stats.StoredBytes += int64(len(stored))
	var full *pack.Writer
	if w.cur.Size() >= w.repo.cfg.PackSize {
		full, w.cur = w.cur, nil
	}
	w.mu.Unlock()
	if full != nil {
		// Hashing and sealing 16 MiB happens outside the lock, so the
		// other savers keep filling the next pack meanwhile.
		return w.send(ctx, full.Finish())
	}
	return nil
}

// send hands a finished pack to an uploader, waiting while all are busy
// (this is what bounds memory).
func (w *Writer) send(ctx context.Context, p *pack.Pack) error {
	w.inflight.Add(1)
	select {
	case w.uploads <- p:
		return nil
	case <-ctx.Done():
	case <-w.ctx.Done():
	}
	w.inflight.Done()
	err := fmt.Errorf("store pack %s: %w", p.ID, context.Cause(ctx))
	if ctx.Err() == nil {
		err = errors.New("store pack: the writer is closed")
	}
	w.fail(err)
	return err
}

func (w *Writer) fail(err error) {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.mu.Unlock()
}

func (w *Writer) uploader() {
	defer w.workers.Done()
	for {
		var p *pack.Pack
		select {
		case p = <-w.uploads:
		case <-w.ctx.Done():
			return
		}
		err := w.store(p)
		if err != nil {
			w.fail(err)
		}
		w.mu.Lock()
		if err == nil {
			w.stats.Packs++
			w.stats.PackBytes += int64(len(p.Data))
		}
		for _, e := range p.Entries {
			delete(w.pending, e.ID)
		}
		w.mu.Unlock()
		w.recycle(p.Data)
		w.inflight.Done()
	}
}

// store uploads a pack and then indexes it, within MaxIndexDelay.
func (w *Writer) store(p *pack.Pack) error {
	b := w.repo.backend
	name := p.ID.Name()
	ctx, cancel := context.WithTimeout(w.ctx, MaxIndexDelay)
	defer cancel()
	err := b.Put(ctx, name, bytes.NewReader(p.Data), int64(len(p.Data)))
	// Packs are salted, so an existing name is our own earlier attempt
	// whose answer was lost.
	if err != nil && !errors.Is(err, blobstore.ErrExists) {
		return fmt.Errorf("store pack %s: %w", name, err)
	}
	info := PackInfo{ID: p.ID, Size: int64(len(p.Data)), Blobs: len(p.Entries), AddedAt: time.Now().UTC()}
	if err := w.repo.index.AddPack(ctx, info, p.Entries); err != nil {
		if errors.Is(err, context.DeadlineExceeded) && w.ctx.Err() == nil {
			err = fmt.Errorf("more than %v passed since it was stored, so garbage collection may be removing it: %w", MaxIndexDelay, err)
		}
		return fmt.Errorf("index pack %s: %w", name, err)
	}
	if w.opts.OnPack != nil {
		w.opts.OnPack(info, p.Entries)
	}
	return nil
}

// Flush finishes the current pack and waits until every pack this writer
// made is stored and indexed. It returns the first failure. Call it once
// the Saves it should cover have returned, not concurrently with them.
func (w *Writer) Flush(ctx context.Context) error {
	w.mu.Lock()
	var last *pack.Pack
	if w.err == nil && w.cur != nil && w.cur.Count() > 0 {
		last = w.cur.Finish()
		w.cur = nil
	}
	w.mu.Unlock()
	if last != nil {
		if err := w.send(ctx, last); err != nil {
			return err
		}
	}
	done := make(chan struct{})
	go func() { w.inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	return w.failure()
}

// Stats returns what the writer stored so far.
func (w *Writer) Stats() WriterStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stats
}

// Close stops the uploaders and ends the session. Blobs saved but not
// flushed are dropped (they were never indexed); call Flush or Commit first
// to keep them. Saves and flushes still running fail. Calling Close again
// returns the first call's result.
func (w *Writer) Close() error {
	w.closed.Do(func() {
		w.cancel()
		w.workers.Wait()
		<-w.renewed
		for {
			select {
			case buf := <-w.buffers:
				w.repo.releasePackBuffer(buf)
				continue
			default:
			}
			break
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if w.opts.Session == nil {
			w.closeErr = w.repo.index.EndSession(ctx, w.session)
		}
	})
	return w.closeErr
}
