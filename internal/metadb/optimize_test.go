package metadb_test

import (
	"context"
	"testing"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
)

// TestOptimize gives SQLite statistics of a table it had none of (with
// them its planner reads the newest finished backups through the
// created_at index, not every backup by state); on PostgreSQL it is a no-op
// that succeeds.
func TestOptimize(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		for i := range 300 {
			b := newBackup(t, db, coffer.Backup{ClientID: "c1"})
			if i%3 == 0 {
				if _, err := db.FinishBackup(ctx, b.ID, metadb.BackupFinish{State: coffer.JobSucceeded}); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := db.Optimize(ctx); err != nil {
			t.Fatal(err)
		}
		if db.Dialect() != metadb.SQLite {
			return
		}
		var n int
		if err := db.SQL().QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_stat1 WHERE tbl = 'backups'`).Scan(&n); err != nil || n == 0 {
			t.Fatalf("statistics of backups after Optimize: %d rows, %v", n, err)
		}
	})
}
