package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"testing"
	"testing/iotest"
	"time"

	"github.com/cofferhq/coffer/internal/engine/blobstore"
)

func testLocation(t *testing.T, b blobstore.Backend) {
	if b.Location() == "" {
		t.Error("Location() is empty; messages and logs need it")
	}
}

func testRoundTrip(t *testing.T, b blobstore.Backend) {
	ctx := t.Context()
	for i, size := range []int{0, 1, 4<<10 + 17, 5<<20 + 3} {
		name := fmt.Sprintf("packs/%02x/roundtrip-%d", i, size)
		data := Data(uint64(i), size)
		before := time.Now()
		Put(t, b, name, data)

		fi, err := b.Stat(ctx, name)
		if err != nil {
			t.Fatalf("Stat(%q) after Put: %v", name, err)
		}
		if fi.Name != name || fi.Size != int64(size) {
			t.Errorf("Stat(%q) = {Name: %q, Size: %d}, want {Name: %q, Size: %d}", name, fi.Name, fi.Size, name, size)
		}
		// Clocks of remote stores drift; only a wildly wrong time is a bug.
		if d := fi.ModTime.Sub(before); fi.ModTime.IsZero() || d < -24*time.Hour || d > 24*time.Hour {
			t.Errorf("Stat(%q).ModTime = %v, want about %v", name, fi.ModTime, before)
		}
		checkBytes(t, "read "+name, Read(t, b, name), data)
	}
}

func testPutExisting(t *testing.T, b blobstore.Backend) {
	ctx := t.Context()
	const name = "config"
	orig := Data(1, 1000)
	Put(t, b, name, orig)

	for _, other := range [][]byte{Data(2, 1000), Data(3, 10), orig} {
		err := b.Put(ctx, name, bytes.NewReader(other), int64(len(other)))
		if !errors.Is(err, blobstore.ErrExists) {
			t.Errorf("second Put(%q, %d bytes): %v, want ErrExists", name, len(other), err)
		}
		if blobstore.IsTransient(err) {
			t.Errorf("second Put(%q): ErrExists is marked transient: %v", name, err)
		}
		checkNamed(t, "second Put", err, name)
	}
	fi, err := b.Stat(ctx, name)
	if err != nil || fi.Size != int64(len(orig)) {
		t.Errorf("Stat(%q) after refused Puts = %+v, %v; want size %d", name, fi, err, len(orig))
	}
	checkBytes(t, "content after refused Puts", Read(t, b, name), orig)
}

func testPutSizeMismatch(t *testing.T, b blobstore.Backend) {
	ctx := t.Context()
	tests := []struct {
		name string
		data []byte
		size int64
	}{
		{"short", Data(1, 100), 101},
		{"long", Data(2, 100), 99},
		{"empty data", nil, 1},
		{"data for empty object", Data(3, 1), 0},
		{"much longer", Data(4, 1<<20), 1},
		{"negative size", Data(5, 10), -1},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := fmt.Sprintf("packs/00/mismatch-%d", i)
			err := b.Put(ctx, name, bytes.NewReader(tt.data), tt.size)
			if err == nil {
				t.Fatalf("Put(%q) of %d bytes with size %d succeeded", name, len(tt.data), tt.size)
			}
			if errors.Is(err, blobstore.ErrExists) {
				t.Errorf("Put(%q): %v, a size mismatch is not ErrExists", name, err)
			}
			checkNamed(t, "Put", err, name)
			checkAbsent(t, b, name)

			// Nothing half-written blocks a correct Put of the same name.
			good := Data(uint64(10+i), 64)
			Put(t, b, name, good)
			checkBytes(t, "content after correct Put", Read(t, b, name), good)
		})
	}
}

// failingReader fails after delivering n bytes of its content.
type failingReader struct {
	*bytes.Reader
	n   int64
	err error
}

func (r *failingReader) Read(p []byte) (int, error) {
	pos, _ := r.Seek(0, io.SeekCurrent)
	if pos >= r.n {
		return 0, r.err
	}
	if rest := r.n - pos; int64(len(p)) > rest {
		p = p[:rest]
	}
	return r.Reader.Read(p)
}

func testPutReaderError(t *testing.T, b blobstore.Backend) {
	const name = "packs/00/reader-error"
	data := Data(1, 256<<10)
	r := &failingReader{Reader: bytes.NewReader(data), n: 100 << 10, err: errors.New("disk on fire")}
	if err := b.Put(t.Context(), name, r, int64(len(data))); err == nil {
		t.Fatalf("Put(%q) with a failing reader succeeded", name)
	}
	checkAbsent(t, b, name)
}

func testPutSeeksToStart(t *testing.T, b blobstore.Backend) {
	data := Data(1, 50<<10)
	for _, pos := range []int64{int64(len(data)), int64(len(data)) / 2} {
		name := fmt.Sprintf("snapshots/seek-%d", pos)
		r := bytes.NewReader(data)
		if _, err := r.Seek(pos, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		if err := b.Put(t.Context(), name, r, int64(len(data))); err != nil {
			t.Fatalf("Put(%q) from a reader at offset %d: %v", name, pos, err)
		}
		checkBytes(t, "content put from offset "+fmt.Sprint(pos), Read(t, b, name), data)
	}
}

func testOpenRange(t *testing.T, b blobstore.Backend) {
	const name = "packs/ab/range"
	const size = 10000
	data := Data(7, size)
	Put(t, b, name, data)
	tests := []struct {
		name           string
		offset, length int64
		wantRange      bool
	}{
		{"whole", 0, size, false},
		{"whole to end", 0, -1, false},
		{"start", 0, 100, false},
		{"middle", 4000, 1234, false},
		{"end", size - 100, 100, false},
		{"middle to end", 5000, -1, false},
		{"last byte", size - 1, 1, false},
		{"last byte to end", size - 1, -1, false},
		{"zero length at start", 0, 0, false},
		{"zero length in middle", 10, 0, false},
		{"zero length at end", size, 0, false},
		{"to end from end", size, -1, false},
		{"one past the end", size - 100, 101, true},
		{"starts past the end", size + 1, 0, true},
		{"starts past the end to end", size + 1, -1, true},
		{"far past the end", 1 << 40, 10, true},
		{"negative offset", -1, 10, true},
		{"huge length", 1, math.MaxInt64, true},
		{"huge offset", math.MaxInt64, -1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readRange(t.Context(), b, name, tt.offset, tt.length)
			if tt.wantRange {
				if !errors.Is(err, blobstore.ErrRange) {
					t.Fatalf("Open(%q, %d, %d): %d bytes, %v; want ErrRange", name, tt.offset, tt.length, len(got), err)
				}
				checkNamed(t, "Open", err, name)
				return
			}
			if err != nil {
				t.Fatalf("Open(%q, %d, %d): %v", name, tt.offset, tt.length, err)
			}
			end := int64(size)
			if tt.length >= 0 {
				end = tt.offset + tt.length
			}
			checkBytes(t, fmt.Sprintf("range [%d, %d)", tt.offset, end), got, data[tt.offset:end])
		})
	}
}

func testOpenRangeEmptyObject(t *testing.T, b blobstore.Backend) {
	const name = "empty"
	Put(t, b, name, nil)
	for _, r := range [][2]int64{{0, -1}, {0, 0}} {
		got, err := readRange(t.Context(), b, name, r[0], r[1])
		if err != nil || len(got) != 0 {
			t.Errorf("Open(%q, %d, %d) = %d bytes, %v; want 0 bytes", name, r[0], r[1], len(got), err)
		}
	}
	for _, r := range [][2]int64{{0, 1}, {1, -1}, {1, 0}} {
		if _, err := readRange(t.Context(), b, name, r[0], r[1]); !errors.Is(err, blobstore.ErrRange) {
			t.Errorf("Open(%q, %d, %d): %v, want ErrRange", name, r[0], r[1], err)
		}
	}
}

// testReaderConformance runs the standard library's reader checks (small
// reads, reads after EOF, and Seek/ReadAt if the reader offers them).
func testReaderConformance(t *testing.T, b blobstore.Backend) {
	const name = "packs/cd/reader"
	data := Data(8, 70000)
	Put(t, b, name, data)
	for _, r := range [][2]int64{{0, -1}, {1000, 33333}} {
		rc, err := b.Open(t.Context(), name, r[0], r[1])
		if err != nil {
			t.Fatalf("Open(%q, %d, %d): %v", name, r[0], r[1], err)
		}
		end := int64(len(data))
		if r[1] >= 0 {
			end = r[0] + r[1]
		}
		if err := iotest.TestReader(rc, data[r[0]:end]); err != nil {
			t.Errorf("reader of %q [%d, %d): %v", name, r[0], end, err)
		}
		if err := rc.Close(); err != nil {
			t.Errorf("Close reader of %q: %v", name, err)
		}
	}
}

func testMissing(t *testing.T, b blobstore.Backend) {
	ctx := t.Context()
	Put(t, b, "packs/ab/present", Data(1, 10))
	for _, name := range []string{"packs/ab/missing", "missing", "packs/zz/missing", "packs/ab/present/below"} {
		_, err := b.Stat(ctx, name)
		if !errors.Is(err, blobstore.ErrNotFound) {
			t.Errorf("Stat(%q): %v, want ErrNotFound", name, err)
		}
		checkNamed(t, "Stat", err, name)
		if blobstore.IsTransient(err) {
			t.Errorf("Stat(%q): ErrNotFound is marked transient: %v", name, err)
		}
		for _, r := range [][2]int64{{0, -1}, {10, 5}} {
			_, err := readRange(ctx, b, name, r[0], r[1])
			if !errors.Is(err, blobstore.ErrNotFound) {
				t.Errorf("Open(%q, %d, %d): %v, want ErrNotFound", name, r[0], r[1], err)
			}
			checkNamed(t, "Open", err, name)
		}
	}
	// A "directory" that only exists as a prefix of other names is no object.
	if _, err := b.Stat(ctx, "packs/ab"); !errors.Is(err, blobstore.ErrNotFound) {
		t.Errorf(`Stat("packs/ab"), a prefix of an object: %v, want ErrNotFound`, err)
	}
	if err := b.Delete(ctx, "packs/ab"); err != nil {
		t.Errorf(`Delete("packs/ab"), a prefix of an object: %v`, err)
	}
	checkBytes(t, "object under a deleted prefix", Read(t, b, "packs/ab/present"), Data(1, 10))
}

func testDelete(t *testing.T, b blobstore.Backend) {
	ctx := t.Context()
	const name, sibling = "packs/ab/doomed", "packs/ab/sibling"
	Put(t, b, name, Data(1, 1000))
	Put(t, b, sibling, Data(2, 1000))

	if err := b.Delete(ctx, name); err != nil {
		t.Fatalf("Delete(%q): %v", name, err)
	}
	checkAbsent(t, b, name)
	checkBytes(t, "sibling after Delete", Read(t, b, sibling), Data(2, 1000))

	if err := b.Delete(ctx, name); err != nil {
		t.Errorf("Delete(%q) again: %v, want nil", name, err)
	}
	if err := b.Delete(ctx, "never/existed"); err != nil {
		t.Errorf("Delete of a missing object: %v, want nil", err)
	}
	// A deleted name can be created again.
	Put(t, b, name, Data(3, 500))
	checkBytes(t, "content put after Delete", Read(t, b, name), Data(3, 500))
}

func testInvalidNames(t *testing.T, b blobstore.Backend) {
	ctx := t.Context()
	invalid := []string{
		"", "/", "/abs", "a//b", "a/", "../x", "a/../b", "a/..", "..", ".", "./a", "a/./b",
		"a b", `a\b`, "a:b", "é", "a\x00b", "a\nb", "~tmp", "*",
	}
	for _, name := range invalid {
		if err := blobstore.ValidName(name); err == nil {
			t.Fatalf("the suite's invalid name %q is valid", name)
		}
		check := func(op string, err error) {
			t.Helper()
			switch {
			case err == nil:
				t.Errorf("%s(%q) accepted an invalid name", op, name)
			case errors.Is(err, blobstore.ErrNotFound), errors.Is(err, blobstore.ErrExists):
				t.Errorf("%s(%q): %v, want an invalid-name error", op, name, err)
			case blobstore.IsTransient(err):
				t.Errorf("%s(%q): invalid name marked transient: %v", op, name, err)
			}
		}
		check("Put", b.Put(ctx, name, bytes.NewReader([]byte("x")), 1))
		_, err := b.Open(ctx, name, 0, -1)
		check("Open", err)
		_, err = b.Stat(ctx, name)
		check("Stat", err)
		check("Delete", b.Delete(ctx, name))
	}
	if names := Names(t, b, ""); len(names) != 0 {
		t.Errorf("objects stored by Puts of invalid names: %q", names)
	}
}
