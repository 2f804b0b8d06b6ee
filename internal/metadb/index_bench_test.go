package metadb_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/repository/indextest"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
)

// forEachDialect runs a benchmark on both databases (PostgreSQL when
// metadbtest can reach one).
func forEachDialect(b *testing.B, fn func(b *testing.B, ix *metadb.Index)) {
	for _, d := range []metadb.Dialect{metadb.SQLite, metadb.Postgres} {
		b.Run(string(d), func(b *testing.B) {
			fn(b, metadbtest.Open(b, d).Index(repositoryID(b)))
		})
	}
}

// seed indexes n blobs (ids from first) in packs of 1000.
func seed(b *testing.B, ix repository.Index, first, n int) {
	b.Helper()
	for i := first; i < first+n; i += 1000 {
		indextest.AddPack(b, ix, fmt.Sprintf("seed-%d", i), indextest.BlobIDs(i, min(i+1000, first+n))...)
	}
}

// BenchmarkIndexMissing asks about 1000 ids in an index of 100 000 blobs,
// as a backup does for each batch of chunks: all present (an unchanged
// file, after the first backup of the epoch touched them), and half absent.
func BenchmarkIndexMissing(b *testing.B) {
	forEachDialect(b, func(b *testing.B, ix *metadb.Index) {
		seed(b, ix, 0, 100_000)
		for _, tc := range []struct {
			name string
			ids  []blob.ID
		}{
			{"present", indextest.BlobIDs(40_000, 41_000)},
			{"half-absent", indextest.BlobIDs(99_500, 100_500)},
		} {
			b.Run(tc.name, func(b *testing.B) {
				for b.Loop() {
					if _, err := ix.Missing(b.Context(), tc.ids); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	})
}

// BenchmarkIndexLookup resolves 1000 ids, as a restore does.
func BenchmarkIndexLookup(b *testing.B) {
	forEachDialect(b, func(b *testing.B, ix *metadb.Index) {
		seed(b, ix, 0, 100_000)
		ids := indextest.BlobIDs(40_000, 41_000)
		for b.Loop() {
			if m, err := ix.Lookup(b.Context(), ids); err != nil || len(m) != len(ids) {
				b.Fatal(len(m), err)
			}
		}
	})
}

// BenchmarkIndexAddPack adds a pack of new blobs: 16 (a 16 MiB pack of
// 1 MiB chunks) and 1000 (small files).
func BenchmarkIndexAddPack(b *testing.B) {
	forEachDialect(b, func(b *testing.B, ix *metadb.Index) {
		seed(b, ix, 0, 100_000)
		n := 1_000_000
		for _, size := range []int{16, 1000} {
			b.Run(fmt.Sprint(size), func(b *testing.B) {
				for b.Loop() {
					entries := indextest.Entries(indextest.BlobIDs(n, n+size)...)
					info := indextest.Info(indextest.PackID(fmt.Sprint("bench-", n)), entries, time.Time{})
					if err := ix.AddPack(b.Context(), info, entries); err != nil {
						b.Fatal(err)
					}
					n += size
				}
			})
		}
	})
}

// BenchmarkIndexCommitSnapshot commits a snapshot of 100 000 refs: refs
// the backup's Missing calls already touched in this epoch (the usual case),
// and refs last touched before the current GC epoch (each needs a write).
func BenchmarkIndexCommitSnapshot(b *testing.B) {
	forEachDialect(b, func(b *testing.B, ix *metadb.Index) {
		seed(b, ix, 0, 100_000)
		refs := indextest.BlobIDs(0, 100_000)
		n := 0
		for _, stale := range []bool{false, true} {
			b.Run(map[bool]string{false: "touched", true: "stale"}[stale], func(b *testing.B) {
				for b.Loop() {
					if stale {
						b.StopTimer()
						if _, err := ix.BeginGC(b.Context(), "bench", time.Hour); err != nil {
							b.Fatal(err)
						}
						b.StartTimer()
					}
					snap := indextest.Snapshot(fmt.Sprint("s", n), time.Now(), refs[0])
					if missing, err := ix.CommitSnapshot(b.Context(), snap, refs); err != nil || len(missing) > 0 {
						b.Fatal(len(missing), err)
					}
					n++
				}
			})
		}
	})
}
