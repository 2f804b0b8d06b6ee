package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"

	"github.com/cofferhq/coffer/internal/engine/blobstore"
)

func testConcurrentPutSameName(t *testing.T, b blobstore.Backend) {
	const name, writers, size = "packs/ab/contended", 8, 256 << 10
	ctx := t.Context()
	contents := make([][]byte, writers)
	for i := range contents {
		contents[i] = Data(uint64(100+i), size) // same size, different bytes
	}
	errs := make([]error, writers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			<-start
			errs[i] = b.Put(ctx, name, bytes.NewReader(contents[i]), size)
		})
	}
	close(start)
	wg.Wait()

	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("writers %d and %d both succeeded", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, blobstore.ErrExists):
			t.Errorf("writer %d: %v, want nil or ErrExists", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no writer succeeded")
	}
	checkBytes(t, fmt.Sprintf("content (writer %d won)", winner), Read(t, b, name), contents[winner])
}

// testConcurrentPutsAndReads has writers of distinct names race readers of
// ranges of one shared object.
func testConcurrentPutsAndReads(t *testing.T, b blobstore.Backend) {
	const writers, readers, rounds = 16, 8, 10
	ctx := t.Context()
	shared := Data(1, 300<<10)
	Put(t, b, "conc/shared", shared)

	errc := make(chan error, writers+readers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			data := Data(uint64(1000+i), 32<<10+i)
			name := fmt.Sprintf("conc/w%02d", i)
			if err := b.Put(ctx, name, bytes.NewReader(data), int64(len(data))); err != nil {
				errc <- fmt.Errorf("writer %d: %w", i, err)
			}
		})
	}
	for i := range readers {
		wg.Go(func() {
			for j := range rounds {
				off := int64((i*rounds + j) * 3001 % len(shared))
				n := int64(min(20000, len(shared)-int(off)))
				got, err := readRange(ctx, b, "conc/shared", off, n)
				if err != nil {
					errc <- fmt.Errorf("reader %d: %w", i, err)
					return
				}
				if !bytes.Equal(got, shared[off:off+n]) {
					errc <- fmt.Errorf("reader %d: wrong bytes in [%d, %d)", i, off, off+n)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}

	for i := range writers {
		name := fmt.Sprintf("conc/w%02d", i)
		checkBytes(t, name, Read(t, b, name), Data(uint64(1000+i), 32<<10+i))
	}
	if n := len(Names(t, b, "conc/")); n != writers+1 {
		t.Errorf("List(conc/) found %d objects, want %d", n, writers+1)
	}
}

// testCancelledContext: an operation started with a cancelled context
// fails, and a Put stores nothing.
func testCancelledContext(t *testing.T, b blobstore.Backend) {
	const present, absent = "packs/ab/present", "packs/ab/absent"
	Put(t, b, present, Data(1, 1000))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()

	data := Data(2, 1000)
	err := b.Put(ctx, absent, bytes.NewReader(data), int64(len(data)))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Put with a cancelled context: %v, want context.Canceled", err)
	}
	checkAbsent(t, b, absent)

	if _, err := b.Stat(ctx, present); err == nil {
		t.Error("Stat with a cancelled context succeeded")
	}
	if _, err := readRange(ctx, b, present, 0, -1); err == nil {
		t.Error("Open and read with a cancelled context succeeded")
	}
	if err := b.List(ctx, "", func(blobstore.ObjectInfo) error { return nil }); err == nil {
		t.Error("List with a cancelled context succeeded")
	}
	if err := b.Delete(ctx, present); err == nil {
		t.Error("Delete with a cancelled context succeeded")
	}
}

// cancellingReader cancels a context once it has delivered after bytes, the
// way a caller gives up in the middle of an upload.
type cancellingReader struct {
	*bytes.Reader
	after  int64
	cancel context.CancelFunc
}

func (r *cancellingReader) Read(p []byte) (int, error) {
	n, err := r.Reader.Read(p)
	if pos, _ := r.Seek(0, io.SeekCurrent); pos >= r.after {
		r.cancel()
	}
	return n, err
}

func testCancelDuringPut(t *testing.T, b blobstore.Backend) {
	const name = "packs/ab/cancelled"
	data := Data(1, 1<<20)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	r := &cancellingReader{Reader: bytes.NewReader(data), after: 64 << 10, cancel: cancel}
	if err := b.Put(ctx, name, r, int64(len(data))); err == nil {
		t.Fatal("Put whose context was cancelled during the upload succeeded")
	}
	checkAbsent(t, b, name)
}
