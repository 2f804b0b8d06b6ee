package retry_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cofferhq/coffer/internal/engine/blobstore"
	"github.com/cofferhq/coffer/internal/engine/blobstore/mem"
	"github.com/cofferhq/coffer/internal/engine/blobstore/retry"
	"github.com/cofferhq/coffer/internal/engine/blobstore/storetest"
)

// readAll copies rc with an odd buffer size so reads straddle faults.
func readAll(t *testing.T, rc io.ReadCloser) ([]byte, error) {
	t.Helper()
	defer rc.Close()
	var out bytes.Buffer
	_, err := io.CopyBuffer(struct{ io.Writer }{&out}, struct{ io.Reader }{rc}, make([]byte, 777))
	return out.Bytes(), err
}

func TestResumedReadsAreIdentical(t *testing.T) {
	data := storetest.Data(1, 200<<10)
	tests := []struct {
		name           string
		offset, length int64
	}{
		{"whole", 0, -1},
		{"range", 1000, 150 << 10},
		{"tail", 100 << 10, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Fail once at the first read at or past each of these object
			// offsets in the range.
			var faults []int64
			for _, off := range []int64{0, 5000, 5001, 77777, 150000, 199999} {
				if off >= tt.offset {
					faults = append(faults, off)
				}
			}
			var next int
			var opens atomic.Int64
			inner := mem.New(mem.Options{
				BeforeOp: func(op mem.Op, _ string) error {
					if op == mem.OpOpen {
						opens.Add(1)
					}
					return nil
				},
				BeforeRead: func(_ string, off int64) error {
					if next < len(faults) && off >= faults[next] {
						next++
						return blobstore.Transient(fmt.Errorf("connection reset at %d", off))
					}
					return nil
				},
			})
			storetest.Put(t, inner, "packs/ab/p", data)
			var s noSleep
			b := retry.New(inner, retry.Options{Sleep: s.Sleep})

			rc, err := b.Open(t.Context(), "packs/ab/p", tt.offset, tt.length)
			if err != nil {
				t.Fatal(err)
			}
			got, err := readAll(t, rc)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			end := int64(len(data))
			if tt.length >= 0 {
				end = tt.offset + tt.length
			}
			if !bytes.Equal(got, data[tt.offset:end]) {
				t.Fatalf("resumed read differs: %d bytes, want %d", len(got), end-tt.offset)
			}
			if opens.Load() < 2 {
				t.Errorf("%d opens: the faults were never hit", opens.Load())
			}
			if int64(len(s.Delays())) != opens.Load()-1 {
				t.Errorf("%d backoffs for %d reopens", len(s.Delays()), opens.Load()-1)
			}
		})
	}
}

// partialFault is a fake whose readers deliver bytes and a transient error
// in the same call once, at object offset failAt.
type partialFault struct {
	*mem.Backend
	failAt int64
	failed atomic.Bool
}

func (f *partialFault) Open(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	rc, err := f.Backend.Open(ctx, name, offset, length)
	if err != nil {
		return nil, err
	}
	return &partialReader{ReadCloser: rc, f: f, pos: offset}, nil
}

type partialReader struct {
	io.ReadCloser
	f   *partialFault
	pos int64
}

func (r *partialReader) Read(p []byte) (int, error) {
	if r.pos < r.f.failAt && r.pos+int64(len(p)) > r.f.failAt && r.f.failed.CompareAndSwap(false, true) {
		n, _ := io.ReadFull(r.ReadCloser, p[:r.f.failAt-r.pos])
		r.pos += int64(n)
		return n, blobstore.Transient(errors.New("unexpected EOF from server"))
	}
	n, err := r.ReadCloser.Read(p)
	r.pos += int64(n)
	return n, err
}

func TestResumeAfterPartialRead(t *testing.T) {
	data := storetest.Data(2, 10000)
	f := &partialFault{Backend: mem.New(mem.Options{}), failAt: 4321}
	storetest.Put(t, f.Backend, "x", data)
	var s noSleep
	rc, err := retry.New(f, retry.Options{Sleep: s.Sleep}).Open(t.Context(), "x", 100, -1)
	if err != nil {
		t.Fatal(err)
	}
	got, err := readAll(t, rc)
	if err != nil || !bytes.Equal(got, data[100:]) {
		t.Fatalf("read %d bytes, %v; want %d identical bytes", len(got), err, len(data)-100)
	}
	if !f.failed.Load() {
		t.Error("the fault was never hit")
	}
}

func TestReadGivesUp(t *testing.T) {
	fault := errors.New("flapping link")
	inner := mem.New(mem.Options{BeforeRead: func(_ string, off int64) error {
		if off >= 1000 {
			return blobstore.Transient(fault)
		}
		return nil
	}})
	storetest.Put(t, inner, "x", storetest.Data(1, 2000))
	var s noSleep
	rc, err := retry.New(inner, retry.Options{MaxAttempts: 3, Sleep: s.Sleep}).Open(t.Context(), "x", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	got, err := readAll(t, rc)
	// readAll reads 777 bytes at a time: the read at 1554 fails.
	if !errors.Is(err, fault) || len(got) != 1554 {
		t.Errorf("read %d bytes, %v; want 1554 bytes and the fault", len(got), err)
	}
	if n := len(s.Delays()); n != 2 {
		t.Errorf("%d backoffs, want 2 (3 attempts)", n)
	}
}

func TestReadStopsWhenObjectVanishes(t *testing.T) {
	var inner *mem.Backend
	inner = mem.New(mem.Options{BeforeRead: func(name string, off int64) error {
		if off >= 10 {
			if err := inner.Delete(context.Background(), name); err != nil {
				return err
			}
			return blobstore.Transient(errors.New("reset"))
		}
		return nil
	}})
	storetest.Put(t, inner, "x", storetest.Data(1, 100))
	var s noSleep
	rc, err := retry.New(inner, retry.Options{Sleep: s.Sleep}).Open(t.Context(), "x", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readAll(t, rc); !errors.Is(err, blobstore.ErrNotFound) {
		t.Errorf("read: %v, want ErrNotFound once the object is gone", err)
	}
}

func TestReadCancelledDuringBackoff(t *testing.T) {
	inner := mem.New(mem.Options{BeforeRead: func(string, int64) error {
		return blobstore.Transient(errors.New("reset"))
	}})
	storetest.Put(t, inner, "x", storetest.Data(1, 100))
	ctx, cancel := context.WithCancel(t.Context())
	b := retry.New(inner, retry.Options{
		Sleep: func(ctx context.Context, _ time.Duration) error { cancel(); return ctx.Err() },
	})
	rc, err := b.Open(ctx, "x", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readAll(t, rc); !errors.Is(err, context.Canceled) {
		t.Errorf("read: %v, want context.Canceled", err)
	}
}

// flakyList is a fake whose first List reports some objects and then fails.
type flakyList struct {
	*mem.Backend
	calls int
}

func (f *flakyList) List(ctx context.Context, prefix string, fn func(blobstore.ObjectInfo) error) error {
	f.calls++
	n := 0
	err := f.Backend.List(ctx, prefix, func(fi blobstore.ObjectInfo) error {
		if n++; f.calls == 1 && n > 3 {
			return blobstore.Transient(errors.New("page request timed out"))
		}
		return fn(fi)
	})
	return err
}

func TestListRetryReportsEachObjectOnce(t *testing.T) {
	f := &flakyList{Backend: mem.New(mem.Options{})}
	var want []string
	for i := range 6 {
		name := fmt.Sprintf("snapshots/s%d", i)
		storetest.Put(t, f.Backend, name, []byte{byte(i)})
		want = append(want, name)
	}
	var s noSleep
	b := retry.New(f, retry.Options{Sleep: s.Sleep})
	var got []string
	if err := b.List(t.Context(), "snapshots/", func(fi blobstore.ObjectInfo) error {
		got = append(got, fi.Name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if f.calls != 2 {
		t.Errorf("%d List calls, want 2", f.calls)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("listed (-want +got):\n%s", diff)
	}
}

func TestListCallbackErrorIsNotRetried(t *testing.T) {
	f := &flakyList{Backend: mem.New(mem.Options{})}
	storetest.Put(t, f.Backend, "a", []byte("a"))
	var s noSleep
	stop := blobstore.Transient(errors.New("callback gave up"))
	err := retry.New(f, retry.Options{Sleep: s.Sleep}).List(t.Context(), "", func(blobstore.ObjectInfo) error { return stop })
	if !errors.Is(err, stop) || f.calls != 1 {
		t.Errorf("List: %v after %d calls; want the callback's error after 1", err, f.calls)
	}
}
