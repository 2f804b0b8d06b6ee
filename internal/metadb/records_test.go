package metadb_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/google/go-cmp/cmp"
)

// finishedBackup stores a backup of plan that ran and ended in state, with
// meta when it is not nil.
func finishedBackup(t *testing.T, db *metadb.DB, plan string, state coffer.JobState, f metadb.BackupFinish) *coffer.Backup {
	t.Helper()
	b := newBackup(t, db, coffer.Backup{ClientID: "client-1", PlanID: plan, State: coffer.JobRunning, Paths: []string{"/"}})
	f.State = state
	done, err := db.FinishBackup(context.Background(), b.ID, f)
	if err != nil {
		t.Fatal(err)
	}
	return done
}

func TestBackupMetaAndRetentionMarks(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		meta := coffer.BackupMeta{Level: 3, Session: "01FULL", Name: "nightly", ClientOS: "linux", AgentVersion: "1.2.3",
			Compression: "fastest", Encrypted: true}
		a := finishedBackup(t, db, "plan-1", coffer.JobSucceeded, metadb.BackupFinish{SnapshotID: "s1", RootTree: "r1",
			Meta: &meta, RetentionDue: true})
		if diff := cmp.Diff(meta, a.Meta); diff != "" {
			t.Errorf("meta returned by FinishBackup (-want +got):\n%s", diff)
		}
		got, err := db.GetBackup(ctx, a.ID)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(meta, got.Meta); diff != "" {
			t.Errorf("meta read back (-want +got):\n%s", diff)
		}
		// Without Meta the metadata stays zero; the list carries it too.
		b := finishedBackup(t, db, "plan-1", coffer.JobFailed, metadb.BackupFinish{Error: "boom"})
		c := finishedBackup(t, db, "plan-2", coffer.JobPartial, metadb.BackupFinish{SnapshotID: "s3", RetentionDue: true})
		finishedBackup(t, db, "", coffer.JobSucceeded, metadb.BackupFinish{SnapshotID: "s4"})
		if b.Meta != (coffer.BackupMeta{}) {
			t.Errorf("meta of a backup finished without any = %+v", b.Meta)
		}
		list, err := db.ListBackups(ctx, metadb.BackupFilter{PlanID: "plan-1"})
		if err != nil || len(list) != 2 || list[1].Meta != meta {
			t.Fatalf("list = %+v, %v", list, err)
		}

		due, err := db.RetentionDue(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(map[string][]string{"plan-1": {a.ID}, "plan-2": {c.ID}}, due); diff != "" {
			t.Errorf("RetentionDue (-want +got):\n%s", diff)
		}
		if err := db.ClearRetentionDue(ctx, []string{a.ID, "01GONE"}); err != nil {
			t.Fatal(err)
		}
		due, err = db.RetentionDue(ctx)
		if err != nil || len(due) != 1 || len(due["plan-2"]) != 1 {
			t.Fatalf("RetentionDue after clearing plan-1 = %v, %v", due, err)
		}
		if err := db.ClearRetentionDue(ctx, nil); err != nil {
			t.Fatal(err)
		}
		// Many at once are cleared in batches.
		var ids []string
		for range 1203 {
			ids = append(ids, fmt.Sprintf("01X%05d", len(ids)))
		}
		if err := db.ClearRetentionDue(ctx, append(ids, c.ID)); err != nil {
			t.Fatal(err)
		}
		if due, err := db.RetentionDue(ctx); err != nil || len(due) != 0 {
			t.Fatalf("RetentionDue after clearing all = %v, %v", due, err)
		}
	})
}

func TestDeleteFinishedJobs(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		queued := newBackup(t, db, coffer.Backup{ClientID: "client-1", Paths: []string{"/"}})
		_, err := db.DeleteBackup(ctx, queued.ID)
		wantCode(t, err, "backup_active")
		running := newBackup(t, db, coffer.Backup{ClientID: "client-1", State: coffer.JobRunning, Paths: []string{"/"}})
		_, err = db.DeleteBackup(ctx, running.ID)
		wantCode(t, err, "backup_active")
		_, err = db.DeleteBackup(ctx, "01NOPE")
		wantCode(t, err, "backup_not_found")

		for _, state := range []coffer.JobState{coffer.JobSucceeded, coffer.JobPartial, coffer.JobFailed, coffer.JobCanceled} {
			b := finishedBackup(t, db, "plan-1", state, metadb.BackupFinish{Error: "x"})
			// Of concurrent deletes, exactly one gets the record.
			var wins atomic.Int32
			var wg sync.WaitGroup
			for range 4 {
				wg.Go(func() {
					got, err := db.DeleteBackup(ctx, b.ID)
					switch {
					case err == nil && got.ID == b.ID && got.State == state:
						wins.Add(1)
					case coffer.ErrorCode(err) != "backup_not_found":
						t.Errorf("delete %s backup: %+v, %v", state, got, err)
					}
				})
			}
			wg.Wait()
			if wins.Load() != 1 {
				t.Errorf("%d concurrent deletes of a %s backup succeeded, want 1", wins.Load(), state)
			}
			_, err := db.GetBackup(ctx, b.ID)
			wantCode(t, err, "backup_not_found")
		}
		if _, err := db.GetBackup(ctx, queued.ID); err != nil {
			t.Fatalf("the queued backup is gone: %v", err)
		}

		r := &coffer.Restore{BackupID: "b", SourceClientID: "c", TargetClientID: "c", Destination: "/r", Overwrite: coffer.OverwriteSkip}
		if err := db.CreateRestore(ctx, r); err != nil {
			t.Fatal(err)
		}
		_, err = db.DeleteRestore(ctx, r.ID)
		wantCode(t, err, "restore_active")
		if _, err := db.FinishRestore(ctx, r.ID, metadb.RestoreFinish{State: coffer.JobFailed, Error: "x"}); err != nil {
			t.Fatal(err)
		}
		got, err := db.DeleteRestore(ctx, r.ID)
		if err != nil || got.ID != r.ID || got.State != coffer.JobFailed {
			t.Fatalf("DeleteRestore = %+v, %v", got, err)
		}
		_, err = db.DeleteRestore(ctx, r.ID)
		wantCode(t, err, "restore_not_found")
	})
}

func TestClaimProgressEvent(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		clock := newJobClock(db)
		claim := func(id string) bool {
			t.Helper()
			ok, err := db.ClaimBackupProgressEvent(ctx, id, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			return ok
		}
		queued := newBackup(t, db, coffer.Backup{ClientID: "client-1", Paths: []string{"/"}})
		b := newBackup(t, db, coffer.Backup{ClientID: "client-1", State: coffer.JobRunning, Paths: []string{"/"}})
		if claim(queued.ID) || claim("01NOPE") {
			t.Fatal("claimed an event of a backup that does not run")
		}
		if !claim(b.ID) {
			t.Fatal("the first claim of a running backup failed")
		}
		clock.Add(4 * time.Second)
		if claim(b.ID) {
			t.Fatal("claimed twice within the interval")
		}
		clock.Add(time.Second)
		// Two replicas at once: one wins.
		var wins atomic.Int32
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				if ok, err := db.ClaimBackupProgressEvent(ctx, b.ID, 5*time.Second); err != nil {
					t.Error(err)
				} else if ok {
					wins.Add(1)
				}
			})
		}
		wg.Wait()
		if wins.Load() != 1 {
			t.Fatalf("%d concurrent claims won after the interval, want 1", wins.Load())
		}
		if _, err := db.FinishBackup(ctx, b.ID, metadb.BackupFinish{State: coffer.JobFailed}); err != nil {
			t.Fatal(err)
		}
		clock.Add(time.Minute)
		if claim(b.ID) {
			t.Fatal("claimed an event of a finished backup")
		}

		r := &coffer.Restore{BackupID: "b", SourceClientID: "c", TargetClientID: "c", Destination: "/r",
			Overwrite: coffer.OverwriteSkip, State: coffer.JobRunning}
		if err := db.CreateRestore(ctx, r); err != nil {
			t.Fatal(err)
		}
		for i, want := range []bool{true, false} {
			if ok, err := db.ClaimRestoreProgressEvent(ctx, r.ID, time.Second); err != nil || ok != want {
				t.Fatalf("restore claim %d = %v, %v; want %v", i, ok, err, want)
			}
		}
	})
}

// TestBackupMetaMigration stores backups as the schema before 0007 had
// them and checks that the migration derives their levels and sessions
// from their parent chains.
func TestBackupMetaMigration(t *testing.T) {
	for _, d := range []metadb.Dialect{metadb.SQLite, metadb.Postgres} {
		t.Run(string(d), func(t *testing.T) {
			ctx := context.Background()
			db, err := metadb.Open(ctx, metadb.Options{URL: metadbtest.URL(t, d)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			if err := metadb.MigrateUpTo(ctx, db, 4); err != nil {
				t.Fatal(err)
			}
			now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
			// full ← inc1 ← inc2; full2 (a full_scan with a parent); orphan (its
			// parent was forgotten) ← after; failed (no snapshot).
			rows := []struct {
				id, parent, snapshot string
				full                 bool
			}{
				{"full", "", "s-full", false},
				{"inc1", "full", "s-inc1", false},
				{"inc2", "inc1", "s-inc2", false},
				{"full2", "inc2", "s-full2", true},
				{"orphan", "gone", "s-orphan", false},
				{"after", "orphan", "s-after", false},
				{"failed", "inc2", "", false},
			}
			for _, r := range rows {
				state := coffer.JobSucceeded
				if r.snapshot == "" {
					state = coffer.JobFailed
				}
				if err := metadb.Exec(ctx, db, `INSERT INTO backups (id, client_id, state, snapshot_id, parent_id, full_scan,
					created_at, updated_at) VALUES ($1, 'c', $2, $3, $4, $5, $6, $6)`, r.id, state, r.snapshot, r.parent, r.full, now); err != nil {
					t.Fatal(err)
				}
			}
			if err := db.Migrate(ctx, nil); err != nil {
				t.Fatal(err)
			}
			want := map[string]coffer.BackupMeta{
				"full": {Level: 0, Session: "full"}, "inc1": {Level: 1, Session: "full"}, "inc2": {Level: 2, Session: "full"},
				"full2": {Level: 0, Session: "full2"}, "orphan": {Level: 1}, "after": {Level: 2}, "failed": {},
			}
			for id, w := range want {
				b, err := db.GetBackup(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				if b.Meta != w {
					t.Errorf("%s: meta %+v, want %+v", id, b.Meta, w)
				}
			}
		})
	}
}
