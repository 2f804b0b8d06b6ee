package limit_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/engine/blobstore"
	"github.com/cofferhq/coffer/internal/engine/blobstore/limit"
	"github.com/cofferhq/coffer/internal/engine/blobstore/mem"
	"github.com/cofferhq/coffer/internal/engine/blobstore/storetest"
)

func TestConformance(t *testing.T) {
	for _, opts := range []limit.Options{
		{},
		{MaxConcurrent: 4, UploadBytesPerSec: 1 << 30, DownloadBytesPerSec: 1 << 30},
		// One slot: the suite's concurrent tests must still finish.
		{MaxConcurrent: 1, UploadBytesPerSec: 512 << 20, DownloadBytesPerSec: 512 << 20, Burst: 64 << 10},
	} {
		t.Run(fmt.Sprintf("%+v", opts), func(t *testing.T) {
			storetest.Run(t, func(t *testing.T) blobstore.Backend {
				return limit.New(mem.New(mem.Options{}), opts)
			})
		})
	}
}

// gauge measures how many calls run at once inside the wrapped backend.
// Each call waits (up to a few seconds) until limit calls are inside
// together, which proves that the limit is reached, not just respected.
type gauge struct {
	limit   int64
	inside  atomic.Int64
	most    atomic.Int64
	once    sync.Once
	reached chan struct{}
}

func newGauge(limit int) *gauge {
	return &gauge{limit: int64(limit), reached: make(chan struct{})}
}

func (g *gauge) enter() {
	n := g.inside.Add(1)
	for {
		m := g.most.Load()
		if n <= m || g.most.CompareAndSwap(m, n) {
			break
		}
	}
	if n >= g.limit {
		g.once.Do(func() { close(g.reached) })
	}
	select {
	case <-g.reached:
	case <-time.After(5 * time.Second):
	}
	time.Sleep(time.Millisecond) // stay inside a little, so overlaps are likely
	g.inside.Add(-1)
}

func TestMaxConcurrent(t *testing.T) {
	const slots, workers = 3, 12
	g := newGauge(slots)
	inner := mem.New(mem.Options{
		BeforeOp:   func(mem.Op, string) error { g.enter(); return nil },
		BeforeRead: func(string, int64) error { g.enter(); return nil },
	})
	b := limit.New(inner, limit.Options{MaxConcurrent: slots})
	ctx := t.Context()

	errc := make(chan error, workers)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() {
			name := fmt.Sprintf("packs/%02d", i)
			data := storetest.Data(uint64(i), 10000)
			err := b.Put(ctx, name, bytes.NewReader(data), int64(len(data)))
			if err == nil {
				_, err = b.Stat(ctx, name)
			}
			if err == nil {
				var got []byte
				got, err = readAll(ctx, b, name)
				if err == nil && !bytes.Equal(got, data) {
					err = errors.New("wrong content")
				}
			}
			if err == nil {
				err = b.List(ctx, "packs/", func(blobstore.ObjectInfo) error { return nil })
			}
			if err == nil {
				err = b.Delete(ctx, name)
			}
			if err != nil {
				errc <- fmt.Errorf("worker %d: %w", i, err)
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if m := g.most.Load(); m != slots {
		t.Errorf("at most %d calls ran at once, want exactly %d", m, slots)
	}
}

// readAll reads a whole object with small reads.
func readAll(ctx context.Context, b blobstore.Backend, name string) ([]byte, error) {
	rc, err := b.Open(ctx, name, 0, -1)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var out bytes.Buffer
	_, err = io.CopyBuffer(struct{ io.Writer }{&out}, struct{ io.Reader }{rc}, make([]byte, 4096))
	return out.Bytes(), err
}

// TestOneSlotDoesNotDeadlock: several open readers, calls while they are
// open, and calls from a List callback all work with a single slot.
func TestOneSlotDoesNotDeadlock(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	b := limit.New(mem.New(mem.Options{}), limit.Options{MaxConcurrent: 1})
	var want [][]byte
	for i := range 3 {
		want = append(want, storetest.Data(uint64(i), 5000))
		storetest.Put(t, b, fmt.Sprintf("o%d", i), want[i])
	}

	var readers []io.ReadCloser
	for i := range 3 {
		rc, err := b.Open(ctx, fmt.Sprintf("o%d", i), 0, -1)
		if err != nil {
			t.Fatalf("Open o%d with %d readers open: %v", i, i, err)
		}
		defer rc.Close()
		readers = append(readers, rc)
	}
	got := make([][]byte, 3)
	buf := make([]byte, 1000)
	for range 5 {
		for i, rc := range readers {
			n, err := io.ReadFull(rc, buf)
			if err != nil {
				t.Fatalf("read o%d: %v", i, err)
			}
			got[i] = append(got[i], buf[:n]...)
		}
		if _, err := b.Stat(ctx, "o0"); err != nil {
			t.Fatalf("Stat with readers open: %v", err)
		}
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Errorf("interleaved read of o%d differs", i)
		}
	}

	err := b.List(ctx, "", func(fi blobstore.ObjectInfo) error {
		if _, err := readAll(ctx, b, fi.Name); err != nil {
			return err
		}
		return b.Delete(ctx, fi.Name)
	})
	if err != nil {
		t.Fatalf("List calling the backend from its callback: %v", err)
	}
	if names := storetest.Names(t, b, ""); len(names) != 0 {
		t.Errorf("left after deleting from List: %q", names)
	}
}

// The bandwidth tests assert only lower bounds on time: a shared machine
// may be slower, never faster, than the limit allows.

func TestUploadBandwidth(t *testing.T) {
	const rate, burst, size = 4 << 20, 256 << 10, 2 << 20
	b := limit.New(mem.New(mem.Options{}), limit.Options{UploadBytesPerSec: rate, Burst: burst})
	data := storetest.Data(1, size)
	start := time.Now()
	storetest.Put(t, b, "x", data)
	// (size - burst) / rate = 437.5ms; allow for timer slack.
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Errorf("uploading %d bytes at %d B/s took %v, want at least 400ms", size, rate, d)
	}
}

func TestDownloadBandwidth(t *testing.T) {
	const rate, burst, size = 4 << 20, 256 << 10, 2 << 20
	inner := mem.New(mem.Options{})
	data := storetest.Data(1, size)
	storetest.Put(t, inner, "x", data)
	b := limit.New(inner, limit.Options{DownloadBytesPerSec: rate, Burst: burst})
	start := time.Now()
	// One big read: the reader must cut it into waits no larger than the burst.
	rc, err := b.Open(t.Context(), "x", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Errorf("downloading %d bytes at %d B/s took %v, want at least 400ms", size, rate, d)
	}
}

func TestCancelWhileWaitingForBandwidth(t *testing.T) {
	data := storetest.Data(1, 100<<10)
	inner := mem.New(mem.Options{})
	storetest.Put(t, inner, "existing", data)
	b := limit.New(inner, limit.Options{UploadBytesPerSec: 1 << 10, DownloadBytesPerSec: 1 << 10})

	t.Run("put", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		timer := time.AfterFunc(50*time.Millisecond, cancel)
		defer timer.Stop()
		err := b.Put(ctx, "new", bytes.NewReader(data), int64(len(data)))
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Put: %v, want context.Canceled", err)
		}
		if _, err := inner.Stat(t.Context(), "new"); !errors.Is(err, blobstore.ErrNotFound) {
			t.Errorf("Stat after a cancelled Put: %v, want ErrNotFound", err)
		}
	})
	t.Run("read", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		timer := time.AfterFunc(50*time.Millisecond, cancel)
		defer timer.Stop()
		if _, err := readAll(ctx, b, "existing"); !errors.Is(err, context.Canceled) {
			t.Errorf("read: %v, want context.Canceled", err)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		err := b.Put(ctx, "new", bytes.NewReader(data), int64(len(data)))
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Put: %v, want context.DeadlineExceeded", err)
		}
	})
}

// blockingReader blocks its first Read until released, keeping a Put (and
// its slot) busy.
type blockingReader struct {
	*bytes.Reader
	started chan struct{}
	release chan struct{}
	once    sync.Once
}

func (r *blockingReader) Read(p []byte) (int, error) {
	r.once.Do(func() {
		close(r.started)
		<-r.release
	})
	return r.Reader.Read(p)
}

func TestCancelWhileWaitingForSlot(t *testing.T) {
	ctx := t.Context()
	b := limit.New(mem.New(mem.Options{}), limit.Options{MaxConcurrent: 1})
	storetest.Put(t, b, "x", []byte("x"))
	waitCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	rc, err := b.Open(waitCtx, "x", 0, -1) // opened now; each Read needs a slot
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()

	slow := &blockingReader{Reader: bytes.NewReader([]byte("abc")), started: make(chan struct{}), release: make(chan struct{})}
	putErr := make(chan error, 1)
	go func() { putErr <- b.Put(ctx, "slow", slow, 3) }()
	<-slow.started // the Put holds the only slot

	timer := time.AfterFunc(50*time.Millisecond, cancel)
	defer timer.Stop()
	for name, call := range map[string]func() error{
		"stat":   func() error { _, err := b.Stat(waitCtx, "x"); return err },
		"delete": func() error { return b.Delete(waitCtx, "x") },
		"list":   func() error { return b.List(waitCtx, "", func(blobstore.ObjectInfo) error { return nil }) },
		"open":   func() error { _, err := b.Open(waitCtx, "x", 0, -1); return err },
		"read":   func() error { _, err := rc.Read(make([]byte, 1)); return err },
		"put":    func() error { return b.Put(waitCtx, "y", bytes.NewReader([]byte("y")), 1) },
	} {
		if err := call(); !errors.Is(err, context.Canceled) {
			t.Errorf("%s waiting for a slot: %v, want context.Canceled", name, err)
		}
	}
	close(slow.release)
	if err := <-putErr; err != nil {
		t.Fatalf("the slow Put: %v", err)
	}
	if got := storetest.Read(t, b, "slow"); string(got) != "abc" {
		t.Errorf("slow Put stored %q", got)
	}
}
