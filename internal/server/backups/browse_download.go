package backups

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/tree"
)

// A download is a pipeline with bounded memory:
//
//	source ─ops─▶ producer: locate, cut into batches ─▶ readers (ReadBlobs) ─batches, in order─▶ Download.WriteTo ─▶ sink ─▶ w
//
// The source lists what to write, in order: the start of each entry (a
// file, or every node of an archive) followed by the entry's content
// blobs. The producer locates the blobs in the index a thousand at a time
// and cuts the list into batches of about batchBytes of content. Readers
// read the batches, downloadReaders at once, each with one ReadBlobs call
// (neighbouring blobs of a pack in one ranged read; every blob
// authenticated, decompressed and checked against its id), while the
// writer turns the batches, in order, into bytes on the wire. Memory is
// bounded by downloadBufs batch buffers (each batchBytes, or one blob when
// a blob is larger), the readers' ReadBlobs buffers, and the ops of one
// locate round.
const (
	batchBytes      = 2 << 20 // content bytes of one batch (a batch holds at least one blob)
	batchMaxOps     = 4096    // entries and blobs of one batch
	locateFirst     = 64      // blobs located in the first index query: small, so the first bytes go out soon
	locateMax       = 1024    // blobs located in one index query, later
	downloadReaders = 2       // batches read at once: decoding is CPU-bound, the writer mostly waits
	downloadBufs    = 4       // batch buffers: read by the readers, waiting, and being written
)

// dlEntry is one node of a download: the file of a file download, or an
// entry of an archive.
type dlEntry struct {
	path string // in the archive: relative, slash-separated, no ".."
	node tree.Node
	// link is, for a later link of a hard-linked file in a tar archive,
	// the path of its first link; the entry then has no content.
	link string
	// compressible is set when the entry's first blobs were stored
	// compressed by at least a tenth: a zip deflates it.
	compressible bool
}

// op is one step of a download: the start of an entry, or one content
// blob of the current entry — the bytes [from, to) of its plaintext (to 0:
// up to its end).
type op struct {
	entry *dlEntry // set: an entry starts

	of       *dlEntry // the entry the blob belongs to, for messages
	id       blob.ID
	loc      repository.Location
	located  bool
	from, to uint32
}

func (o *op) end() uint32 {
	if o.to == 0 {
		return o.loc.RawLength
	}
	return o.to
}

// size is the bytes of the blob the op writes (it must be located).
func (o *op) size() int { return int(o.end() - o.from) }

// source lists a download's ops in order, calling emit for each.
type source func(ctx context.Context, emit func(op) error) error

// piece is an op with its content read: an entry start, or data.
type piece struct {
	entry *dlEntry
	data  []byte
}

// batch is a run of pieces; their data lies in buf, read by a reader:
// err is set and done closed once it is.
type batch struct {
	pieces []piece
	buf    []byte
	reqs   []repository.BlobRequest
	reads  []blobRead // reads[j] is where reqs[j] goes
	done   chan struct{}
	err    error
}

// blobRead is where a blob of a batch goes: the bytes [from, end) of its
// plaintext into pieces[piece].data.
type blobRead struct {
	piece     int
	from, end uint32
	of        *dlEntry
}

// sink turns pieces into the bytes of a download.
type sink interface {
	open(w io.Writer)
	entry(e *dlEntry) error
	data(p []byte) error
	finish() error
}

// Download is a file or an archive of a backup being read a few megabytes
// ahead of its writer. Call WriteTo once, and Close.
type Download struct {
	s    *Service
	b    *coffer.Backup
	path string
	sink sink

	batches chan *batch // in order; each is written once done
	free    chan []byte
	cancel  context.CancelFunc
	done    chan struct{}
	err     error  // the producer's, once done is closed
	first   *batch // read by startDownload, not yet written
}

// startDownload starts reading what src lists from repo and waits for the
// first batch, so that failing to read the start of a download is an error
// before anything is sent.
func (s *Service) startDownload(ctx context.Context, b *coffer.Backup, p string, repo *repository.Repository, src source, snk sink) (*Download, error) {
	ctx, cancel := context.WithCancel(ctx)
	d := &Download{s: s, b: b, path: p, sink: snk, batches: make(chan *batch, downloadBufs), free: make(chan []byte, downloadBufs),
		cancel: cancel, done: make(chan struct{})}
	for range downloadBufs {
		d.free <- nil
	}
	work := make(chan *batch)
	var readers sync.WaitGroup
	for range downloadReaders {
		readers.Go(func() {
			for b := range work {
				b.err = read(ctx, repo, b)
				close(b.done)
			}
		})
	}
	pr := &producer{out: d.batches, work: work, free: d.free, repo: repo, locateN: locateFirst}
	go func() {
		defer close(d.done)
		err := src(ctx, func(o op) error { return pr.emit(ctx, o) })
		if err == nil {
			err = pr.flush(ctx, true)
		}
		d.err = err
		close(work)
		readers.Wait()
		close(d.batches)
	}()
	first, err := d.receive()
	if err != nil && err != io.EOF {
		d.Close()
		return nil, s.readFailed(b, p, err)
	}
	d.first = first
	return d, nil
}

// receive returns the next batch, read, io.EOF after the last, or the
// error of the reader or the producer.
func (d *Download) receive() (*batch, error) {
	if b, ok := <-d.batches; ok {
		<-b.done
		if b.err != nil {
			return nil, b.err
		}
		return b, nil
	}
	<-d.done
	if d.err != nil {
		return nil, d.err
	}
	return nil, io.EOF
}

// WriteTo writes the download to w. An error after the first byte leaves
// w holding a truncated download: the caller must make that visible (an
// HTTP server aborts the response). Data the repository lacks or cannot
// authenticate is "backup_damaged", and logged.
func (d *Download) WriteTo(w io.Writer) (int64, error) {
	cw := &countingWriter{w: w}
	d.sink.open(cw)
	for {
		b := d.first
		d.first = nil
		if b == nil {
			var err error
			b, err = d.receive()
			if err == io.EOF {
				break
			}
			if err != nil {
				return cw.n, d.s.readFailed(d.b, d.path, err)
			}
		}
		for _, pc := range b.pieces {
			var err error
			if pc.entry != nil {
				err = d.sink.entry(pc.entry)
			} else {
				err = d.sink.data(pc.data)
			}
			if err != nil {
				return cw.n, d.writeFailed(err)
			}
		}
		d.free <- b.buf[:0]
	}
	if err := d.sink.finish(); err != nil {
		return cw.n, d.writeFailed(err)
	}
	return cw.n, nil
}

// writeFailed reports an error of the sink: a size that does not match
// the tree is damage; anything else is the writer's (the client went away).
func (d *Download) writeFailed(err error) error {
	if errors.Is(err, errSizeMismatch) {
		return d.s.readFailed(d.b, d.path, err)
	}
	return fmt.Errorf("write backup %s at %q: %w", d.b.ID, truncate(d.path), err)
}

// Close stops reading and waits for the reader to end. It may be called
// more than once.
func (d *Download) Close() {
	d.cancel()
	<-d.done
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// producer turns a source's ops into batches of read content.
type producer struct {
	repo      *repository.Repository
	out       chan<- *batch // to the writer, in order
	work      chan<- *batch // to the readers
	free      chan []byte
	pending   []op     // ops not sent yet: all located but those emitted since the last flush
	unlocated int      // blobs in pending not located yet
	locateN   int      // flush when this many are pending
	cur       *dlEntry // the last entry emitted
}

func (p *producer) emit(ctx context.Context, o op) error {
	if o.entry != nil {
		p.cur = o.entry
	} else {
		o.of = p.cur
		if !o.located {
			p.unlocated++
		}
	}
	p.pending = append(p.pending, o)
	if p.unlocated >= p.locateN || len(p.pending) >= batchMaxOps {
		p.locateN = min(2*p.locateN, locateMax)
		return p.flush(ctx, false)
	}
	return nil
}

// flush locates the pending blobs and sends every full batch, or, when
// final, everything.
func (p *producer) flush(ctx context.Context, final bool) error {
	if err := p.locate(ctx); err != nil {
		return err
	}
	all := p.pending
	for len(p.pending) > 0 {
		n, full := cut(p.pending)
		if !full && !final {
			break
		}
		annotate(p.pending, n)
		if err := p.send(ctx, p.pending[:n]); err != nil {
			return err
		}
		p.pending = p.pending[n:]
	}
	p.pending = append(all[:0], p.pending...)
	return nil
}

// locate looks up every pending blob not located yet, in one query.
func (p *producer) locate(ctx context.Context) error {
	if p.unlocated == 0 {
		return nil
	}
	ids := make([]blob.ID, 0, p.unlocated)
	for i := range p.pending {
		if o := &p.pending[i]; o.entry == nil && !o.located {
			ids = append(ids, o.id)
		}
	}
	locs, err := p.repo.Locate(ctx, ids)
	if err != nil {
		return err
	}
	for i := range p.pending {
		o := &p.pending[i]
		if o.entry != nil || o.located {
			continue
		}
		loc, ok := locs[o.id]
		if !ok {
			return fmt.Errorf("content blob %s of %q: %w", o.id, entryPath(o.of), repository.ErrNotIndexed)
		}
		o.loc, o.located = loc, true
	}
	p.unlocated = 0
	return nil
}

func entryPath(e *dlEntry) string {
	if e == nil {
		return ""
	}
	return truncate(e.path)
}

// cut returns how many of the located ops make the next batch, and whether
// that batch is full (more would exceed batchBytes or batchMaxOps).
func cut(ops []op) (n int, full bool) {
	size, blobs := 0, 0
	for i := range ops {
		if i == batchMaxOps {
			return i, true
		}
		o := &ops[i]
		if o.entry != nil {
			continue
		}
		k := o.size()
		if blobs > 0 && size+k > batchBytes {
			return i, true
		}
		size, blobs = size+k, blobs+1
	}
	return len(ops), size >= batchBytes || len(ops) >= batchMaxOps
}

// annotate sets compressible on the file entries among the first n ops,
// judging by the stored and plaintext lengths of the blobs that follow
// them in ops.
func annotate(ops []op, n int) {
	for i := range n {
		e := ops[i].entry
		if e == nil || e.node.Type != tree.File {
			continue
		}
		var stored, raw uint64
		for j := i + 1; j < len(ops) && ops[j].entry == nil && ops[j].located; j++ {
			stored, raw = stored+uint64(ops[j].loc.Length), raw+uint64(ops[j].loc.RawLength)
		}
		e.compressible = raw > 0 && stored*10 <= raw*9
	}
}

// send hands the batch of ops to the writer, in order, and to a reader,
// once a buffer for its content is free.
func (p *producer) send(ctx context.Context, ops []op) error {
	var buf []byte
	select {
	case buf = <-p.free:
	case <-ctx.Done():
		return ctx.Err()
	}
	size := 0
	for i := range ops {
		if ops[i].entry == nil {
			size += ops[i].size()
		}
	}
	buf = slices.Grow(buf[:0], size)[:size]
	b := &batch{pieces: make([]piece, len(ops)), buf: buf, done: make(chan struct{})}
	off := 0
	for i := range ops {
		o := &ops[i]
		if o.entry != nil {
			b.pieces[i].entry = o.entry
			continue
		}
		k := o.size()
		b.pieces[i].data = buf[off : off+k : off+k]
		off += k
		b.reqs = append(b.reqs, repository.BlobRequest{ID: o.id, Loc: o.loc})
		b.reads = append(b.reads, blobRead{piece: i, from: o.from, end: o.end(), of: o.of})
	}
	p.out <- b // never blocks: it holds as many batches as there are buffers
	select {
	case p.work <- b:
		return nil
	case <-ctx.Done():
		b.err = ctx.Err()
		close(b.done)
		return ctx.Err()
	}
}

// read reads the content of batch b into its buffer.
func read(ctx context.Context, repo *repository.Repository, b *batch) error {
	if len(b.reqs) == 0 {
		return nil
	}
	return repo.ReadBlobs(ctx, blob.Data, b.reqs, func(j int, plain []byte, err error) error {
		r, req := &b.reads[j], &b.reqs[j]
		if err != nil {
			return fmt.Errorf("content of %q: %w", entryPath(r.of), err)
		}
		if len(plain) != int(req.Loc.RawLength) {
			return fmt.Errorf("content blob %s of %q: %d bytes, the index says %d: %w", req.ID, entryPath(r.of), len(plain),
				req.Loc.RawLength, blob.ErrCorrupt)
		}
		copy(b.pieces[r.piece].data, plain[r.from:r.end])
		return nil
	})
}

// fileSink writes a file's content as it is.
type fileSink struct {
	w       io.Writer
	want, n int64
}

func (s *fileSink) open(w io.Writer)     { s.w = w }
func (s *fileSink) entry(*dlEntry) error { return nil }

func (s *fileSink) data(p []byte) error {
	n, err := s.w.Write(p)
	s.n += int64(n)
	return err
}

func (s *fileSink) finish() error {
	if s.n != s.want {
		return fmt.Errorf("wrote %d bytes of %d: %w", s.n, s.want, errSizeMismatch)
	}
	return nil
}
