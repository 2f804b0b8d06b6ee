package metadb_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/google/go-cmp/cmp"
)

func newRestore(t *testing.T, db *metadb.DB, r coffer.Restore) *coffer.Restore {
	t.Helper()
	if err := db.CreateRestore(context.Background(), &r); err != nil {
		t.Fatalf("create restore: %v", err)
	}
	return &r
}

func restoreIDs(rs []coffer.Restore) []string {
	var ids []string
	for _, r := range rs {
		ids = append(ids, r.ID)
	}
	return ids
}

func TestRestoreLifecycle(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		clock := newJobClock(db)
		created := stored(clock.Now())
		r := newRestore(t, db, coffer.Restore{BackupID: "b1", SourceClientID: "src", TargetClientID: "dst",
			Paths: []string{"home/u/docs", "etc/hosts"}, Destination: "/tmp/restore", Overwrite: coffer.OverwriteIfNewer,
			CreatedBy: "user-1"})
		want := &coffer.Restore{ID: r.ID, BackupID: "b1", SourceClientID: "src", TargetClientID: "dst",
			Paths: []string{"home/u/docs", "etc/hosts"}, Destination: "/tmp/restore", Overwrite: coffer.OverwriteIfNewer,
			State: coffer.JobQueued, CreatedBy: "user-1", CreatedAt: created, UpdatedAt: created}
		if diff := cmp.Diff(want, r); diff != "" {
			t.Errorf("created restore (-want +got):\n%s", diff)
		}
		got, err := db.GetRestore(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("GetRestore (-want +got):\n%s", diff)
		}
		_, err = db.GetRestore(ctx, "nope")
		wantCode(t, err, "restore_not_found")

		// Only the target starts it (the source is not the one writing).
		_, err = db.StartRestore(ctx, r.ID, "src")
		wantCode(t, err, "restore_not_found")
		_, err = db.StartRestore(ctx, "nope", "dst")
		wantCode(t, err, "restore_not_found")
		_, err = db.UpdateRestoreProgress(ctx, r.ID, coffer.RestoreStats{Files: 1})
		wantCode(t, err, "restore_not_running")
		started := clock.Add(time.Second)
		run, err := db.StartRestore(ctx, r.ID, "dst")
		if err != nil {
			t.Fatal(err)
		}
		want.State, want.StartedAt, want.UpdatedAt = coffer.JobRunning, &started, started
		if diff := cmp.Diff(want, run); diff != "" {
			t.Errorf("started restore (-want +got):\n%s", diff)
		}
		_, err = db.StartRestore(ctx, r.ID, "dst")
		wantCode(t, err, "restore_not_queued")

		progress := coffer.RestoreStats{Files: 5, Bytes: 500, TotalFiles: 10, TotalBytes: 1000}
		now := clock.Add(time.Second)
		p, err := db.UpdateRestoreProgress(ctx, r.ID, progress)
		if err != nil {
			t.Fatal(err)
		}
		want.Stats, want.UpdatedAt = progress, now
		if diff := cmp.Diff(want, p); diff != "" {
			t.Errorf("restore after progress (-want +got):\n%s", diff)
		}

		final := coffer.RestoreStats{Files: 9, Dirs: 3, Symlinks: 1, Links: 2, Others: 1, Skipped: 1, Bytes: 999,
			ErrorCount: 1, TotalFiles: 10, TotalBytes: 1000}
		errs := []coffer.PathError{{Path: "home/u/docs/x", Message: "read-only file system"}}
		now = clock.Add(time.Second)
		done, err := db.FinishRestore(ctx, r.ID, metadb.RestoreFinish{State: coffer.JobPartial, Stats: final, Errors: errs})
		if err != nil {
			t.Fatal(err)
		}
		want.State, want.Stats, want.Errors, want.FinishedAt, want.UpdatedAt = coffer.JobPartial, final, errs, &now, now
		if diff := cmp.Diff(want, done); diff != "" {
			t.Errorf("finished restore (-want +got):\n%s", diff)
		}
		if got, err := db.GetRestore(ctx, r.ID); err != nil || !cmp.Equal(want, got) {
			t.Errorf("finished restore read back: %v\n%s", err, cmp.Diff(want, got))
		}

		_, err = db.FinishRestore(ctx, r.ID, metadb.RestoreFinish{State: coffer.JobFailed})
		wantCode(t, err, "restore_finished")
		_, err = db.UpdateRestoreProgress(ctx, r.ID, progress)
		wantCode(t, err, "restore_not_running")
		_, err = db.RequestRestoreCancel(ctx, r.ID)
		wantCode(t, err, "restore_finished")
		_, err = db.RequestRestoreCancel(ctx, "nope")
		wantCode(t, err, "restore_not_found")
		_, err = db.FinishRestore(ctx, r.ID, metadb.RestoreFinish{State: coffer.JobQueued})
		wantCode(t, err, "invalid_state")
		if err := db.CreateRestore(ctx, &coffer.Restore{BackupID: "b", State: coffer.JobFailed}); err == nil {
			t.Error("a restore was created in a final state")
		}

		// Created running (by the target's agent); a failure without
		// statistics keeps the progress report's.
		r2 := newRestore(t, db, coffer.Restore{BackupID: "b1", SourceClientID: "src", TargetClientID: "src", State: coffer.JobRunning})
		if r2.StartedAt == nil {
			t.Error("a restore created running has no started_at")
		}
		if _, err := db.UpdateRestoreProgress(ctx, r2.ID, progress); err != nil {
			t.Fatal(err)
		}
		f, err := db.FinishRestore(ctx, r2.ID, metadb.RestoreFinish{State: coffer.JobFailed, Error: "destination missing"})
		if err != nil || f.Stats != progress || f.Error != "destination missing" || f.Errors != nil {
			t.Errorf("failed restore = %+v, %v", f, err)
		}
	})
}

func TestRestoreCancel(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		clock := newJobClock(db)
		queued := newRestore(t, db, coffer.Restore{BackupID: "b", SourceClientID: "c", TargetClientID: "c"})
		now := clock.Add(time.Second)
		c, err := db.RequestRestoreCancel(ctx, queued.ID)
		if err != nil {
			t.Fatal(err)
		}
		if c.State != coffer.JobCanceled || c.CancelRequested || c.Error != "canceled before it started" || c.FinishedAt == nil || !c.FinishedAt.Equal(now) {
			t.Errorf("canceled queued restore = %+v", c)
		}
		_, err = db.StartRestore(ctx, queued.ID, "c")
		wantCode(t, err, "restore_not_queued")

		running := newRestore(t, db, coffer.Restore{BackupID: "b", SourceClientID: "c", TargetClientID: "c"})
		if _, err := db.StartRestore(ctx, running.ID, "c"); err != nil {
			t.Fatal(err)
		}
		c, err = db.RequestRestoreCancel(ctx, running.ID)
		if err != nil || c.State != coffer.JobRunning || !c.CancelRequested || c.FinishedAt != nil {
			t.Fatalf("cancel of a running restore = %+v, %v", c, err)
		}
		p, err := db.UpdateRestoreProgress(ctx, running.ID, coffer.RestoreStats{Files: 1})
		if err != nil || !p.CancelRequested {
			t.Fatalf("progress after cancel = %+v, %v", p, err)
		}
		if f, err := db.FinishRestore(ctx, running.ID, metadb.RestoreFinish{State: coffer.JobCanceled}); err != nil || f.State != coffer.JobCanceled {
			t.Fatalf("finish canceled = %+v, %v", f, err)
		}
	})
}

func TestListRestores(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		clock := newJobClock(db)
		var all []coffer.Restore
		for i := range 17 {
			if i%3 == 0 && i > 0 {
				clock.Add(time.Second)
			}
			r := newRestore(t, db, coffer.Restore{BackupID: []string{"b1", "b2"}[i%2],
				SourceClientID: []string{"a", "b", "c"}[i%3], TargetClientID: []string{"a", "b", "c", "d"}[i%4]})
			if i%4 == 1 {
				if _, err := db.StartRestore(ctx, r.ID, r.TargetClientID); err != nil {
					t.Fatal(err)
				}
			}
			got, err := db.GetRestore(ctx, r.ID)
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, *got)
		}
		sorted := slices.Clone(all)
		slices.SortFunc(sorted, func(a, b coffer.Restore) int {
			if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
				return c
			}
			return strings.Compare(b.ID, a.ID)
		})
		for _, tc := range []struct {
			name string
			f    metadb.RestoreFilter
			keep func(coffer.Restore) bool
		}{
			{"all", metadb.RestoreFilter{}, func(coffer.Restore) bool { return true }},
			{"backup", metadb.RestoreFilter{BackupID: "b2"}, func(r coffer.Restore) bool { return r.BackupID == "b2" }},
			{"client is source or target", metadb.RestoreFilter{ClientID: "c"},
				func(r coffer.Restore) bool { return r.SourceClientID == "c" || r.TargetClientID == "c" }},
			{"target only", metadb.RestoreFilter{ClientID: "d"}, func(r coffer.Restore) bool { return r.TargetClientID == "d" }},
			{"states", metadb.RestoreFilter{States: []coffer.JobState{coffer.JobRunning}},
				func(r coffer.Restore) bool { return r.State == coffer.JobRunning }},
			{"backup and client", metadb.RestoreFilter{BackupID: "b1", ClientID: "a"},
				func(r coffer.Restore) bool {
					return r.BackupID == "b1" && (r.SourceClientID == "a" || r.TargetClientID == "a")
				}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				var want []string
				for _, r := range sorted {
					if tc.keep(r) {
						want = append(want, r.ID)
					}
				}
				if len(want) == 0 {
					t.Fatal("the case selects nothing")
				}
				for _, size := range []int{0, 1, 2, 3, 5} {
					var got []string
					f := tc.f
					f.Limit = size
					for range 30 {
						page, err := db.ListRestores(ctx, f)
						if err != nil {
							t.Fatal(err)
						}
						got = append(got, restoreIDs(page)...)
						if size == 0 || len(page) < size {
							break
						}
						last := page[len(page)-1]
						f.After = &metadb.Keyset{CreatedAt: last.CreatedAt, ID: last.ID}
					}
					if diff := cmp.Diff(want, got); diff != "" {
						t.Errorf("pages of %d (-want +got):\n%s", size, diff)
					}
				}
			})
		}
	})
}

func TestFailStaleRestores(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		other := metadbtest.OpenSame(t, db)
		clock := newJobClock(db, other)
		t0 := stored(clock.Now())
		var stale []string
		for range 4 {
			stale = append(stale, newRestore(t, db, coffer.Restore{BackupID: "b", TargetClientID: "c", State: coffer.JobRunning}).ID)
		}
		queued := newRestore(t, db, coffer.Restore{BackupID: "b", TargetClientID: "c"})
		fresh := newRestore(t, db, coffer.Restore{BackupID: "b", TargetClientID: "c", State: coffer.JobRunning})
		clock.Add(10 * time.Minute)
		if _, err := db.UpdateRestoreProgress(ctx, fresh.ID, coffer.RestoreStats{Files: 1}); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var got []coffer.Restore
		race(4, func(i int) error {
			failed, err := []*metadb.DB{db, other}[i%2].FailStaleRestores(ctx, t0.Add(time.Minute), "the agent went away")
			mu.Lock()
			defer mu.Unlock()
			got = append(got, failed...)
			if err != nil {
				t.Error(err)
			}
			return err
		})
		ids := restoreIDs(got)
		slices.Sort(ids)
		slices.Sort(stale)
		if diff := cmp.Diff(stale, ids); diff != "" {
			t.Errorf("failed restores (-want +got):\n%s", diff)
		}
		for _, r := range got {
			if r.State != coffer.JobFailed || r.Error != "the agent went away" || r.FinishedAt == nil {
				t.Errorf("stale restore after the sweep: %+v", r)
			}
		}
		for _, id := range []string{queued.ID, fresh.ID} {
			if r, err := db.GetRestore(ctx, id); err != nil || r.State == coffer.JobFailed {
				t.Errorf("restore %s after the sweep: %+v, %v", id, r, err)
			}
		}
	})
}
