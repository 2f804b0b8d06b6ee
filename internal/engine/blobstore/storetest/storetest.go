// Package storetest is the conformance suite of blobstore.Backend: every
// backend (mem, local, s3) and every decorator (retry, limit) runs Run, so
// that the contract written on the interface is checked in one place
// rather than re-interpreted by each implementation.
//
// The suite relies only on the contract: it never assumes a listing order,
// never inspects a backend's storage directly, and checks sizes and bytes
// rather than timings. It also exports the small helpers (Data, Put, Read,
// Names) that tests of higher layers need to seed and inspect a backend.
package storetest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/internal/engine/blobstore"
)

// Run runs the conformance suite against the backends returned by open.
//
// open is called once per subtest and must return a fresh, empty backend
// (a new directory, a new bucket prefix, a new in-memory store). Run closes
// that backend when the subtest ends; cleanups that open registers with
// t.Cleanup run after that Close, so open may use them to remove the
// backend's storage. Subtests run sequentially, so open need not be safe for
// concurrent use.
func Run(t *testing.T, open func(t *testing.T) blobstore.Backend) {
	tests := []struct {
		name string
		fn   func(t *testing.T, b blobstore.Backend)
	}{
		{"Location", testLocation},
		{"RoundTrip", testRoundTrip},
		{"PutExisting", testPutExisting},
		{"PutSizeMismatch", testPutSizeMismatch},
		{"PutReaderError", testPutReaderError},
		{"PutSeeksToStart", testPutSeeksToStart},
		{"OpenRange", testOpenRange},
		{"OpenRangeEmptyObject", testOpenRangeEmptyObject},
		{"ReaderConformance", testReaderConformance},
		{"Missing", testMissing},
		{"Delete", testDelete},
		{"List", testList},
		{"ListEmpty", testListEmpty},
		{"ListStops", testListStops},
		{"ListOddPrefix", testListOddPrefix},
		{"InvalidNames", testInvalidNames},
		{"ConcurrentPutSameName", testConcurrentPutSameName},
		{"ConcurrentPutsAndReads", testConcurrentPutsAndReads},
		{"CancelledContext", testCancelledContext},
		{"CancelDuringPut", testCancelDuringPut},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := open(t)
			if b == nil {
				t.Fatal("open returned a nil backend")
			}
			t.Cleanup(func() {
				if err := b.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tt.fn(t, b)
		})
	}
}

// Data returns n pseudo-random bytes determined by seed alone (ChaCha8), so
// tests can regenerate expected content instead of keeping it around, and
// different seeds give different content of the same size.
func Data(seed uint64, n int) []byte {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	buf := make([]byte, n)
	// ChaCha8.Read never fails.
	_, _ = rand.NewChaCha8(key).Read(buf)
	return buf
}

// Put stores data under name and fails the test on error.
func Put(t testing.TB, b blobstore.Backend, name string, data []byte) {
	t.Helper()
	if err := b.Put(t.Context(), name, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("Put(%q, %d bytes): %v", name, len(data), err)
	}
}

// Read returns the whole content of name and fails the test on error.
func Read(t testing.TB, b blobstore.Backend, name string) []byte {
	t.Helper()
	got, err := readRange(t.Context(), b, name, 0, -1)
	if err != nil {
		t.Fatalf("read %q: %v", name, err)
	}
	return got
}

// Names returns the sorted names that List reports under prefix and fails
// the test on error. Sorting makes results comparable whatever order the
// backend lists in.
func Names(t testing.TB, b blobstore.Backend, prefix string) []string {
	t.Helper()
	infos, err := list(t.Context(), b, prefix)
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	names := make([]string, 0, len(infos))
	for _, fi := range infos {
		names = append(names, fi.Name)
	}
	return names
}

// list collects List's results sorted by name.
func list(ctx context.Context, b blobstore.Backend, prefix string) ([]blobstore.ObjectInfo, error) {
	var infos []blobstore.ObjectInfo
	err := b.List(ctx, prefix, func(fi blobstore.ObjectInfo) error {
		infos = append(infos, fi)
		return nil
	})
	slices.SortFunc(infos, func(a, b blobstore.ObjectInfo) int { return strings.Compare(a.Name, b.Name) })
	return infos, err
}

// readRange opens a range and reads it to the end. A backend may report
// ErrRange from Open or from the first Read, so both come back as the error.
func readRange(ctx context.Context, b blobstore.Backend, name string, offset, length int64) ([]byte, error) {
	rc, err := b.Open(ctx, name, offset, length)
	if err != nil {
		return nil, err
	}
	got, err := io.ReadAll(rc)
	if cerr := rc.Close(); err == nil {
		err = cerr
	}
	return got, err
}

// checkBytes reports where got and want first differ, instead of dumping
// megabytes of diff.
func checkBytes(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	t.Errorf("%s: got %d bytes, want %d; first difference at offset %d", what, len(got), len(want), i)
}

// checkNamed requires err to mention the object's name, as the contract asks.
func checkNamed(t *testing.T, op string, err error, name string) {
	t.Helper()
	if err != nil && !strings.Contains(err.Error(), name) {
		t.Errorf("%s: error %q does not name the object %q", op, err, name)
	}
}

// checkAbsent requires name to be missing for Stat, Open and List.
func checkAbsent(t *testing.T, b blobstore.Backend, name string) {
	t.Helper()
	ctx := t.Context()
	if fi, err := b.Stat(ctx, name); !errors.Is(err, blobstore.ErrNotFound) {
		t.Errorf("Stat(%q) = %+v, %v; want ErrNotFound", name, fi, err)
	}
	if _, err := readRange(ctx, b, name, 0, -1); !errors.Is(err, blobstore.ErrNotFound) {
		t.Errorf("Open(%q): %v; want ErrNotFound", name, err)
	}
	if slices.Contains(Names(t, b, ""), name) {
		t.Errorf("List lists %q, which should not exist", name)
	}
}
