package metadb_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/repository/indextest"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
)

// TestHotStatementsCached checks that the index's frequent statements are
// prepared once and then reused: backups of the same shape add no new
// statements to the cache, and a transaction only ever uses cached ones or
// its own (never preparing through the pool, which could deadlock on
// SQLite; the conformance suite's concurrency test catches that).
func TestHotStatementsCached(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		ix := db.Index("hot-statements")
		write := func(seed int) {
			t.Helper()
			ids := indextest.BlobIDs(seed*1000, seed*1000+40) // 40 rows: several insert and IN-list shapes
			_, entries := indextest.AddPack(t, ix, fmt.Sprint("pack-", seed), ids...)
			if len(entries) != len(ids) {
				t.Fatalf("AddPack indexed %d entries, want %d", len(entries), len(ids))
			}
			if missing, err := ix.Missing(ctx, ids); err != nil || len(missing) > 0 {
				t.Fatalf("Missing = %v, %v", missing, err)
			}
			snap := repository.SnapshotInfo{ID: fmt.Sprint("snap-", seed), Time: time.Unix(int64(seed), 0).UTC(), Tree: ids[0]}
			if gone, err := ix.CommitSnapshot(ctx, snap, ids); err != nil || len(gone) > 0 {
				t.Fatalf("CommitSnapshot = %v, %v", gone, err)
			}
		}
		write(1)
		// The pack insert, two shapes of blob inserts (40 rows split by
		// rowBatches), the lookup of Missing, and the touch and count of
		// CommitSnapshot: the statements that run inside transactions are
		// there too, warmed before each one began.
		n := metadb.HotStatements(db)
		if n < 6 {
			t.Fatalf("%d statements cached after a backup, want at least 6", n)
		}
		for seed := 2; seed < 6; seed++ {
			write(seed)
		}
		if got := metadb.HotStatements(db); got != n {
			t.Errorf("%d statements cached after more backups of the same shape, %d after the first", got, n)
		}
	})
}
