package archiver

import (
	"math/bits"
	"time"

	"github.com/cofferhq/coffer/internal/engine/blob"
)

// item is a blob on its way to the saver: a chunk in a pooled buffer, or an
// encoded tree.
type item struct {
	t    blob.Type
	id   blob.ID
	data []byte
	buf  *buffer // nil for trees
}

// buffer is a pooled chunk buffer of a power-of-two size class; its size
// is what it costs against the memory limit.
type buffer struct {
	b     []byte
	class uint8
}

// Buffer size classes run from 4 KiB to the largest chunk (16 MiB).
const (
	minClass = 12
	maxClass = 24
)

func classOf(n int) uint8 {
	if n <= 1<<minClass {
		return minClass
	}
	return uint8(bits.Len(uint(n - 1)))
}

// bufferSize is the size of the class that holds n bytes.
func bufferSize(n int) int { return 1 << classOf(n) }

// buffer returns a buffer of at least n bytes once the memory limit allows.
func (r *run) buffer(n int) (*buffer, error) {
	c := classOf(n)
	if err := r.budget.Acquire(r.ctx, 1<<c); err != nil {
		return nil, err
	}
	if b, ok := r.a.pools[c].Get().(*buffer); ok {
		return b, nil
	}
	return &buffer{b: make([]byte, 1<<c), class: c}, nil
}

func (r *run) release(b *buffer) {
	r.budget.Release(1 << b.class)
	r.a.pools[b.class].Put(b)
}

// free returns an item's buffer.
func (r *run) free(it item) {
	if it.buf != nil {
		r.release(it.buf)
	}
}

// emit sends a blob to the batcher.
func (r *run) emit(it item) error {
	select {
	case r.items <- it:
		return nil
	case <-r.ctx.Done():
		r.free(it)
		return r.ctx.Err()
	}
}

// collect gathers items into batches: up to BatchSize ids, half the memory
// limit of chunk bytes, or whatever arrived within BatchDelay of the
// batch's first item. While one batch is being looked up (query), the
// next one fills.
func (r *run) collect() error {
	defer close(r.batches)
	o := r.a.opts
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var batch []item
	var size int64
	send := func() error {
		timer.Stop()
		select {
		case r.batches <- batch:
		case <-r.ctx.Done():
			r.drop(batch)
			return r.ctx.Err()
		}
		batch, size = nil, 0
		return nil
	}
	for {
		select {
		case it, ok := <-r.items:
			if !ok {
				if len(batch) > 0 {
					return send()
				}
				return nil
			}
			if len(batch) == 0 {
				batch = make([]item, 0, o.BatchSize)
				timer.Reset(o.BatchDelay)
			}
			batch = append(batch, it)
			size += int64(len(it.data))
			if len(batch) >= o.BatchSize || size >= o.MemoryLimit/2 {
				if err := send(); err != nil {
					return err
				}
			}
		case <-timer.C:
			if len(batch) > 0 {
				if err := send(); err != nil {
					return err
				}
			}
		case <-r.ctx.Done():
			r.drop(batch)
			return r.ctx.Err()
		}
	}
}

// query asks the saver which blobs of each batch are missing and hands
// those to the savers; the others' buffers go back to the pool at once.
// Options.Queries of them run at once, so that the saver's answer time (a
// round trip to the server, for an agent) does not hold up the readers.
// A blob in two batches looked up at once may come back missing from both:
// Saver.Save must take a blob it already has (it returns false), as it
// must anyway for a blob that two batches held before the first was saved.
func (r *run) query() error {
	var ids []blob.ID
	seen := map[blob.ID]bool{}
	for batch := range r.batches {
		ids = ids[:0]
		clear(seen)
		for _, it := range batch {
			if !seen[it.id] {
				seen[it.id] = true
				ids = append(ids, it.id)
			}
		}
		missing, err := r.saver.Missing(r.ctx, ids)
		if err != nil {
			r.drop(batch)
			return err
		}
		clear(seen)
		for _, id := range missing {
			seen[id] = true
		}
		for i, it := range batch {
			if !seen[it.id] {
				r.free(it)
				continue
			}
			delete(seen, it.id) // a second copy in the batch is not saved twice
			select {
			case r.saves <- it:
			case <-r.ctx.Done():
				r.drop(batch[i:])
				return r.ctx.Err()
			}
		}
	}
	return nil
}

func (r *run) drop(batch []item) {
	for _, it := range batch {
		r.free(it)
	}
}

// save stores the missing blobs, compressing and encrypting on this
// goroutine (inside Saver.Save).
func (r *run) save() error {
	for it := range r.saves {
		level := r.a.opts.Compression
		if it.t == blob.Data && r.a.opts.SkipIncompressible && level != blob.Off && looksRandom(it.data) {
			level = blob.Off
		}
		stored, err := r.saver.Save(r.ctx, it.t, it.id, it.data, level)
		n := len(it.data)
		r.free(it)
		if err != nil {
			return err
		}
		if !stored {
			continue
		}
		if it.t == blob.Tree {
			r.add(cTreeBlobs, 1)
		} else {
			r.add(cDataBlobs, 1)
		}
		r.add(cAddedRaw, uint64(n))
	}
	return nil
}
