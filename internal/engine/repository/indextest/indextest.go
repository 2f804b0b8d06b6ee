// Package indextest is the conformance suite of repository.Index: every
// implementation (memindex, the metadb index on SQLite and PostgreSQL) runs
// Run, so that the contract written on the interface — touches, epochs,
// sessions, the GC lease, and the invariant that no committed snapshot
// references a deleted blob — is checked in one place.
//
// The suite relies only on the contract and on the clock it hands to open:
// it never sleeps to let a lease run out, and never reads an
// implementation's storage directly.
package indextest

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/pack"
	"github.com/cofferhq/coffer/internal/engine/repository"
)

// Open returns a fresh, empty index of one repository whose notion of the
// current time (lease expiry, the time of packs added without one) is now.
type Open func(t *testing.T, now func() time.Time) repository.Index

// Run runs the conformance suite. open is called once per subtest; subtests
// run one after the other.
func Run(t *testing.T, open Open) {
	tests := []struct {
		name string
		fn   func(t *testing.T, ix repository.Index, c *Clock)
	}{
		{"Empty", testEmpty},
		{"AddPackAndLookup", testAddPackAndLookup},
		{"AddPackTwice", testAddPackTwice},
		{"AddPackDuplicateBlob", testAddPackDuplicateBlob},
		{"Missing", testMissing},
		{"LargeBatches", testLargeBatches},
		{"PackBlobs", testPackBlobs},
		{"ListingsStop", testListingsStop},
		{"Sessions", testSessions},
		{"SessionsAndGCBound", testSessionsAndGCBound},
		{"CommitSnapshotMissing", testCommitSnapshotMissing},
		{"CommitSnapshot", testCommitSnapshot},
		{"Snapshots", testSnapshots},
		{"GCLease", testGCLease},
		{"DeleteBlobs", testDeleteBlobs},
		{"MoveBlobs", testMoveBlobs},
		{"DeletePack", testDeletePack},
		{"CancelledContext", testCancelledContext},
		{"Concurrency", testConcurrency},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewClock(time.Date(2026, 3, 14, 15, 9, 26, 535897000, time.UTC))
			ix := open(t, c.Now)
			if ix == nil {
				t.Fatal("open returned a nil index")
			}
			tt.fn(t, ix, c)
		})
	}
}

// Clock is a time source that moves only when told to.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock reading t.
func NewClock(t time.Time) *Clock { return &Clock{now: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// BlobID returns a blob id determined by n alone.
func BlobID(n int) blob.ID {
	return blob.ID(sha256.Sum256(fmt.Appendf(nil, "blob %d", n)))
}

// BlobIDs returns BlobID(n) for n in [from, to).
func BlobIDs(from, to int) []blob.ID {
	ids := make([]blob.ID, 0, max(to-from, 0))
	for n := from; n < to; n++ {
		ids = append(ids, BlobID(n))
	}
	return ids
}

// PackID returns a pack id determined by name alone.
func PackID(name string) pack.ID {
	return pack.ID(sha256.Sum256([]byte("pack " + name)))
}

// Entries lays ids out back to back as a pack trailer would list them:
// each blob's stored length and raw length derive from its position.
func Entries(ids ...blob.ID) []pack.Entry {
	entries := make([]pack.Entry, len(ids))
	off := uint32(0)
	for i, id := range ids {
		typ := blob.Data
		if i%5 == 4 {
			typ = blob.Tree
		}
		length := uint32(100 + i%1000)
		entries[i] = pack.Entry{Type: typ, ID: id, Offset: off, Length: length, RawLength: 2*length + 7}
		off += length
	}
	return entries
}

// Info returns the PackInfo of a pack holding entries.
func Info(id pack.ID, entries []pack.Entry, addedAt time.Time) repository.PackInfo {
	size := int64(0)
	if n := len(entries); n > 0 {
		size = int64(entries[n-1].Offset) + int64(entries[n-1].Length) + 64
	}
	return repository.PackInfo{ID: id, Size: size, Blobs: len(entries), AddedAt: addedAt}
}

// AddPack adds a pack named name holding ids and returns its info and
// entries, failing the test on error.
func AddPack(t testing.TB, ix repository.Index, name string, ids ...blob.ID) (repository.PackInfo, []pack.Entry) {
	t.Helper()
	entries := Entries(ids...)
	info := Info(PackID(name), entries, time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC))
	if err := ix.AddPack(context.Background(), info, entries); err != nil {
		t.Fatalf("AddPack %s: %v", name, err)
	}
	return info, entries
}

// loc is the location entry e of pack p has.
func loc(p pack.ID, e pack.Entry) repository.Location {
	return repository.Location{Pack: p, Type: e.Type, Offset: e.Offset, Length: e.Length, RawLength: e.RawLength}
}

// allPacks lists every pack, ordered by id.
func allPacks(t testing.TB, ix repository.Index) []repository.PackInfo {
	t.Helper()
	var out []repository.PackInfo
	if err := ix.Packs(context.Background(), func(p repository.PackInfo) error {
		out = append(out, p)
		return nil
	}); err != nil {
		t.Fatalf("Packs: %v", err)
	}
	slices.SortFunc(out, func(a, b repository.PackInfo) int { return slices.Compare(a.ID[:], b.ID[:]) })
	return out
}

// allBlobs lists every blob row, keyed by id; a row listed twice fails the
// test.
func allBlobs(t testing.TB, ix repository.Index) map[blob.ID]repository.IndexedBlob {
	t.Helper()
	out := make(map[blob.ID]repository.IndexedBlob)
	if err := ix.Blobs(context.Background(), func(b repository.IndexedBlob) error {
		if _, dup := out[b.ID]; dup {
			return fmt.Errorf("blob %s listed twice", b.ID.Short())
		}
		out[b.ID] = b
		return nil
	}); err != nil {
		t.Fatalf("Blobs: %v", err)
	}
	return out
}

// touched returns the epoch blob id was last touched at, failing the test
// if it is not indexed.
func touched(t testing.TB, ix repository.Index, id blob.ID) int64 {
	t.Helper()
	b, ok := allBlobs(t, ix)[id]
	if !ok {
		t.Fatalf("blob %s is not indexed", id.Short())
	}
	return b.Touched
}

// lookup returns the locations of ids, failing the test on error.
func lookup(t testing.TB, ix repository.Index, ids ...blob.ID) map[blob.ID]repository.Location {
	t.Helper()
	m, err := ix.Lookup(context.Background(), ids)
	if err != nil {
		t.Fatalf("Lookup: %v", err)
	}
	return m
}

// beginGC takes the GC lease, failing the test on error.
func beginGC(t testing.TB, ix repository.Index, owner string) int64 {
	t.Helper()
	bound, err := ix.BeginGC(context.Background(), owner, time.Hour)
	if err != nil {
		t.Fatalf("BeginGC(%s): %v", owner, err)
	}
	return bound
}

func endGC(t testing.TB, ix repository.Index, owner string) {
	t.Helper()
	if err := ix.EndGC(context.Background(), owner); err != nil {
		t.Fatalf("EndGC(%s): %v", owner, err)
	}
}

// deleteBlobs deletes ids below bound and checks how many went.
func deleteBlobs(t testing.TB, ix repository.Index, ids []blob.ID, bound int64, want int) {
	t.Helper()
	n, err := ix.DeleteBlobs(context.Background(), ids, bound)
	if err != nil {
		t.Fatalf("DeleteBlobs: %v", err)
	}
	if n != want {
		t.Fatalf("DeleteBlobs deleted %d rows, want %d", n, want)
	}
}

func shorts(ids []blob.ID) []string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = id.Short()
	}
	return s
}

var errStop = errors.New("stop here")
