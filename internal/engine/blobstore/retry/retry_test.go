package retry_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cofferhq/coffer/internal/engine/blobstore"
	"github.com/cofferhq/coffer/internal/engine/blobstore/mem"
	"github.com/cofferhq/coffer/internal/engine/blobstore/retry"
	"github.com/cofferhq/coffer/internal/engine/blobstore/storetest"
)

// noSleep records the backoffs instead of waiting them.
type noSleep struct {
	mu     sync.Mutex
	delays []time.Duration
}

func (s *noSleep) Sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.delays = append(s.delays, d)
	s.mu.Unlock()
	return ctx.Err()
}

func (s *noSleep) Delays() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.delays...)
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) blobstore.Backend {
		return retry.New(mem.New(mem.Options{}), retry.Options{})
	})
}

// TestConformanceWithFaults: with faults injected at random into every
// kind of call, the decorated backend still keeps the whole contract.
func TestConformanceWithFaults(t *testing.T) {
	storetest.Run(t, func(t *testing.T) blobstore.Backend {
		var mu sync.Mutex
		rnd := rand.New(rand.NewPCG(1, uint64(len(t.Name()))))
		chance := func(n int) bool {
			mu.Lock()
			defer mu.Unlock()
			return rnd.IntN(n) == 0
		}
		fault := errors.New("injected fault")
		inner := mem.New(mem.Options{
			BeforeOp: func(mem.Op, string) error {
				if chance(4) {
					return blobstore.Transient(fault)
				}
				return nil
			},
			BeforeRead: func(string, int64) error {
				if chance(4) {
					return blobstore.Transient(fault)
				}
				return nil
			},
			AfterPut: func(string) error {
				if chance(3) {
					return blobstore.Transient(fmt.Errorf("response lost: %w", fault))
				}
				return nil
			},
		})
		var s noSleep
		return retry.New(inner, retry.Options{MaxAttempts: 30, Sleep: s.Sleep})
	})
}

// failFirst returns a BeforeOp hook that, once armed, fails the first n
// calls of op with transient errors, and a counter of op's calls.
func failFirst(op mem.Op, n int) (hook func(mem.Op, string) error, armed *atomic.Bool, calls *atomic.Int64) {
	armed, calls = new(atomic.Bool), new(atomic.Int64)
	return func(o mem.Op, name string) error {
		if o != op || !armed.Load() {
			return nil
		}
		if c := calls.Add(1); c <= int64(n) {
			return blobstore.Transient(fmt.Errorf("fault %d", c))
		}
		return nil
	}, armed, calls
}

func TestFailsTwiceThenSucceeds(t *testing.T) {
	ops := map[mem.Op]func(ctx context.Context, b blobstore.Backend) error{
		mem.OpPut: func(ctx context.Context, b blobstore.Backend) error {
			return b.Put(ctx, "new", bytes.NewReader([]byte("data")), 4)
		},
		mem.OpOpen: func(ctx context.Context, b blobstore.Backend) error {
			_, err := blobstore.ReadRange(ctx, b, "x", 1, 3)
			return err
		},
		mem.OpStat: func(ctx context.Context, b blobstore.Backend) error {
			_, err := b.Stat(ctx, "x")
			return err
		},
		mem.OpDelete: func(ctx context.Context, b blobstore.Backend) error { return b.Delete(ctx, "x") },
		mem.OpList: func(ctx context.Context, b blobstore.Backend) error {
			n := 0
			err := b.List(ctx, "", func(blobstore.ObjectInfo) error { n++; return nil })
			if err == nil && n != 1 {
				err = fmt.Errorf("listed %d objects, want 1", n)
			}
			return err
		},
	}
	for op, call := range ops {
		t.Run(string(op), func(t *testing.T) {
			hook, armed, calls := failFirst(op, 2)
			inner := mem.New(mem.Options{BeforeOp: hook})
			storetest.Put(t, inner, "x", []byte("data"))
			armed.Store(true)

			var s noSleep
			type retried struct {
				Op, Name string
				Attempt  int
				Err      string
			}
			var got []retried
			b := retry.New(inner, retry.Options{
				Sleep: s.Sleep,
				OnRetry: func(op, name string, attempt int, _ time.Duration, err error) {
					got = append(got, retried{op, name, attempt, err.Error()})
				},
			})
			if err := call(t.Context(), b); err != nil {
				t.Fatalf("%s: %v", op, err)
			}
			if n := calls.Load(); n != 3 {
				t.Errorf("%d calls of %s, want 3", n, op)
			}
			if n := len(s.Delays()); n != 2 {
				t.Errorf("%d backoffs, want 2", n)
			}
			name := "x"
			if op == mem.OpPut {
				name = "new"
			} else if op == mem.OpList {
				name = ""
			}
			want := []retried{
				{string(op), name, 1, fmt.Sprintf("mem:: %s %s: fault 1", op, name)},
				{string(op), name, 2, fmt.Sprintf("mem:: %s %s: fault 2", op, name)},
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("OnRetry calls (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPermanentErrorsAreNotRetried(t *testing.T) {
	ctx := t.Context()
	var calls atomic.Int64
	permanent := errors.New("access denied")
	inner := mem.New(mem.Options{BeforeOp: func(op mem.Op, name string) error {
		calls.Add(1)
		if name == "denied" {
			return permanent
		}
		return nil
	}})
	storetest.Put(t, inner, "x", []byte("data"))
	var s noSleep
	b := retry.New(inner, retry.Options{Sleep: s.Sleep})

	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"unmarked error", func() error { _, err := b.Stat(ctx, "denied"); return err }, permanent},
		{"not found", func() error { _, err := b.Stat(ctx, "missing"); return err }, blobstore.ErrNotFound},
		{"exists", func() error { return b.Put(ctx, "x", bytes.NewReader([]byte("data")), 4) }, blobstore.ErrExists},
		{"range", func() error { _, err := b.Open(ctx, "x", 2, 10); return err }, blobstore.ErrRange},
		{"size mismatch", func() error { return b.Put(ctx, "y", bytes.NewReader([]byte("data")), 5) }, nil},
		{"invalid name", func() error { return b.Delete(ctx, "../x") }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls.Store(0)
			err := tt.call()
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Errorf("error %v, want %v", err, tt.want)
			}
			if n := calls.Load(); n > 1 {
				t.Errorf("%d calls, want at most 1", n)
			}
		})
	}
	if d := s.Delays(); len(d) != 0 {
		t.Errorf("backed off %d times for permanent errors", len(d))
	}
}

func TestGivesUpAfterMaxAttempts(t *testing.T) {
	var errs []error
	inner := mem.New(mem.Options{BeforeOp: func(op mem.Op, name string) error {
		err := blobstore.Transient(fmt.Errorf("fault %d", len(errs)+1))
		errs = append(errs, err)
		return err
	}})
	var s noSleep
	b := retry.New(inner, retry.Options{MaxAttempts: 4, Sleep: s.Sleep})
	_, err := b.Stat(t.Context(), "x")
	if len(errs) != 4 {
		t.Fatalf("%d attempts, want 4", len(errs))
	}
	if !errors.Is(err, errs[3]) || !strings.Contains(err.Error(), "fault 4") || !strings.Contains(err.Error(), "4 attempts") {
		t.Errorf("error %q, want the last error, fault 4, after 4 attempts", err)
	}
	if n := len(s.Delays()); n != 3 {
		t.Errorf("%d backoffs, want 3", n)
	}
}

func TestBackoffBounds(t *testing.T) {
	tests := []struct {
		name            string
		initial, max    time.Duration
		attempts        int
		wantMaxBackoffs []time.Duration
	}{
		{"defaults", 0, 0, 0, []time.Duration{200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, 1600 * time.Millisecond}},
		{"capped", time.Second, 3 * time.Second, 6, []time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 3 * time.Second, 3 * time.Second}},
		{"max below initial", time.Second, time.Millisecond, 3, []time.Duration{time.Second, time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inner := mem.New(mem.Options{BeforeOp: func(mem.Op, string) error { return blobstore.Transient(errors.New("down")) }})
			var s noSleep
			var bounds []int64
			b := retry.New(inner, retry.Options{
				MaxAttempts: tt.attempts, InitialDelay: tt.initial, MaxDelay: tt.max, Sleep: s.Sleep,
				Rand: func(n int64) int64 { bounds = append(bounds, n); return n - 1 }, // the largest delay
			})
			if _, err := b.Stat(t.Context(), "x"); err == nil {
				t.Fatal("Stat succeeded")
			}
			if diff := cmp.Diff(tt.wantMaxBackoffs, s.Delays()); diff != "" {
				t.Errorf("backoffs (-want +got):\n%s", diff)
			}
			for i, n := range bounds {
				if want := int64(tt.wantMaxBackoffs[i]) + 1; n != want {
					t.Errorf("Rand(%d) for backoff %d, want Rand(%d): jitter must span [0, bound]", n, i, want)
				}
			}
		})
	}
}

func TestCancelDuringBackoff(t *testing.T) {
	inner := mem.New(mem.Options{BeforeOp: func(mem.Op, string) error {
		return blobstore.Transient(errors.New("server busy"))
	}})
	// The real Sleep, with a backoff far longer than the test may run.
	b := retry.New(inner, retry.Options{InitialDelay: time.Hour, MaxDelay: time.Hour, Rand: func(n int64) int64 { return n - 1 }})
	ctx, cancel := context.WithCancel(t.Context())
	timer := time.AfterFunc(20*time.Millisecond, cancel)
	defer timer.Stop()

	_, err := b.Stat(ctx, "x")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Stat: %v, want context.Canceled", err)
	}
	if !strings.Contains(err.Error(), "server busy") {
		t.Errorf("error %q does not say what failed before the wait", err)
	}
}

func TestCancelledContextIsNotRetried(t *testing.T) {
	var calls atomic.Int64
	inner := mem.New(mem.Options{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	var s noSleep
	b := retry.New(&ctxFault{Backend: inner, calls: &calls}, retry.Options{Sleep: s.Sleep})
	if _, err := b.Stat(ctx, "x"); !errors.Is(err, context.Canceled) {
		t.Errorf("Stat: %v, want context.Canceled", err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("%d calls after cancellation, want 1", n)
	}
}

// ctxFault reports a cancelled context as a transient failure, as a
// network client might: the retry loop must still stop.
type ctxFault struct {
	*mem.Backend
	calls *atomic.Int64
}

func (f *ctxFault) Stat(ctx context.Context, name string) (blobstore.ObjectInfo, error) {
	f.calls.Add(1)
	if err := ctx.Err(); err != nil {
		return blobstore.ObjectInfo{}, blobstore.Transient(fmt.Errorf("stat %s: %w", name, err))
	}
	return f.Backend.Stat(ctx, name)
}

// TestPutLostResponse: the first attempt stores the object but fails; the
// retry meets ErrExists, finds its own bytes, and reports success.
func TestPutLostResponse(t *testing.T) {
	var puts atomic.Int64
	inner := mem.New(mem.Options{AfterPut: func(string) error {
		if puts.Add(1) == 1 {
			return blobstore.Transient(errors.New("connection reset"))
		}
		return nil
	}})
	var s noSleep
	b := retry.New(inner, retry.Options{Sleep: s.Sleep})
	data := storetest.Data(1, 300<<10)
	if err := b.Put(t.Context(), "packs/ab/p", bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("Put: %v", err)
	}
	if !bytes.Equal(storetest.Read(t, inner, "packs/ab/p"), data) {
		t.Error("stored content differs")
	}
	// A later Put of the same name is a plain ErrExists again.
	if err := b.Put(t.Context(), "packs/ab/p", bytes.NewReader(data), int64(len(data))); !errors.Is(err, blobstore.ErrExists) {
		t.Errorf("second Put: %v, want ErrExists", err)
	}
}

// TestPutLostResponseOtherContent: after a failed attempt, another writer
// stored different bytes under the name; the retry must not claim them.
func TestPutLostResponseOtherContent(t *testing.T) {
	data := storetest.Data(1, 10000)
	for _, other := range [][]byte{storetest.Data(2, 10000), storetest.Data(3, 99)} {
		var inner *mem.Backend
		var first atomic.Bool
		first.Store(true)
		inner = mem.New(mem.Options{BeforeOp: func(op mem.Op, name string) error {
			if op == mem.OpPut && first.CompareAndSwap(true, false) {
				// The other writer wins the race (nested call: first is false now).
				if err := inner.Put(context.Background(), name, bytes.NewReader(other), int64(len(other))); err != nil {
					return err
				}
				return blobstore.Transient(errors.New("timeout"))
			}
			return nil
		}})
		var s noSleep
		b := retry.New(inner, retry.Options{Sleep: s.Sleep})
		err := b.Put(t.Context(), "config", bytes.NewReader(data), int64(len(data)))
		if !errors.Is(err, blobstore.ErrExists) {
			t.Errorf("Put over %d other bytes: %v, want ErrExists", len(other), err)
		}
		if !bytes.Equal(storetest.Read(t, inner, "config"), other) {
			t.Error("the other writer's object changed")
		}
	}
}

// halfPut is a fake whose first Put reads part of the data and then fails,
// and which (unlike mem) never rewinds data itself.
type halfPut struct {
	*mem.Backend
	calls int
}

func (f *halfPut) Put(ctx context.Context, name string, data io.ReadSeeker, size int64) error {
	f.calls++
	if f.calls == 1 {
		if _, err := io.CopyN(io.Discard, data, size/2); err != nil {
			return err
		}
		return blobstore.Transient(errors.New("broken pipe"))
	}
	buf := make([]byte, size)
	if _, err := io.ReadFull(data, buf); err != nil {
		return err
	}
	return f.Backend.Put(ctx, name, bytes.NewReader(buf), size)
}

func TestPutRewindsData(t *testing.T) {
	f := &halfPut{Backend: mem.New(mem.Options{})}
	var s noSleep
	b := retry.New(f, retry.Options{Sleep: s.Sleep})
	data := storetest.Data(1, 1000)
	if err := b.Put(t.Context(), "x", bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("Put: %v", err)
	}
	if f.calls != 2 {
		t.Errorf("%d attempts, want 2", f.calls)
	}
	if !bytes.Equal(storetest.Read(t, f.Backend, "x"), data) {
		t.Error("stored content differs: data was not rewound")
	}
}
