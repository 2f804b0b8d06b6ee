package metadb_test

import (
	"context"
	"fmt"
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

func newBackup(t *testing.T, db *metadb.DB, b coffer.Backup) *coffer.Backup {
	t.Helper()
	if err := db.CreateBackup(context.Background(), &b); err != nil {
		t.Fatalf("create backup: %v", err)
	}
	return &b
}

func TestBackupLifecycle(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		clock := newJobClock(db)
		created := stored(clock.Now())
		b := newBackup(t, db, coffer.Backup{ClientID: "client-1", PlanID: "plan-1", RepositoryID: "repo-1",
			Trigger: coffer.TriggerSchedule, Paths: []string{"/home/u/docs", "/etc"}, Exclude: []string{"*.tmp", "/home/u/.cache"},
			Full: true, OneFS: true, HostName: "web1", CreatedBy: "user-1"})
		want := &coffer.Backup{ID: b.ID, ClientID: "client-1", PlanID: "plan-1", RepositoryID: "repo-1",
			Trigger: coffer.TriggerSchedule, State: coffer.JobQueued, Paths: []string{"/home/u/docs", "/etc"},
			Exclude: []string{"*.tmp", "/home/u/.cache"}, Full: true, OneFS: true, HostName: "web1", CreatedBy: "user-1",
			CreatedAt: created, UpdatedAt: created}
		if diff := cmp.Diff(want, b); diff != "" {
			t.Errorf("created backup (-want +got):\n%s", diff)
		}
		got, err := db.GetBackup(ctx, b.ID)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("GetBackup (-want +got):\n%s", diff)
		}
		_, err = db.GetBackup(ctx, "nope")
		wantCode(t, err, "backup_not_found")

		// Only its own client starts it, once.
		_, err = db.StartBackup(ctx, b.ID, "client-2", "sess-1", "")
		wantCode(t, err, "backup_not_found")
		_, err = db.StartBackup(ctx, "nope", "client-1", "sess-1", "")
		wantCode(t, err, "backup_not_found")
		_, err = db.UpdateBackupProgress(ctx, b.ID, coffer.BackupStats{Files: 1})
		wantCode(t, err, "backup_not_running")
		started := clock.Add(time.Second)
		run, err := db.StartBackup(ctx, b.ID, "client-1", "sess-1", "")
		if err != nil {
			t.Fatal(err)
		}
		want.State, want.SessionID, want.StartedAt, want.UpdatedAt = coffer.JobRunning, "sess-1", &started, started
		if diff := cmp.Diff(want, run); diff != "" {
			t.Errorf("started backup (-want +got):\n%s", diff)
		}
		_, err = db.StartBackup(ctx, b.ID, "client-1", "sess-2", "repo-2")
		wantCode(t, err, "backup_not_queued")
		if !coffer.IsKind(err, coffer.KindConflict) {
			t.Errorf("starting a running backup is %v, want a conflict", coffer.ErrorKind(err))
		}

		progress := coffer.BackupStats{Files: 10, Dirs: 2, ReadBytes: 1 << 20, TotalFiles: 100, TotalBytes: 1 << 30}
		now := clock.Add(time.Second)
		p, err := db.UpdateBackupProgress(ctx, b.ID, progress)
		if err != nil {
			t.Fatal(err)
		}
		want.Stats, want.UpdatedAt = progress, now
		if diff := cmp.Diff(want, p); diff != "" {
			t.Errorf("backup after progress (-want +got):\n%s", diff)
		}

		final := coffer.BackupStats{Files: 100, Dirs: 20, Symlinks: 3, Others: 1, FilesNew: 50, FilesChanged: 25,
			FilesUnchanged: 25, Excluded: 4, ErrorCount: 2, LogicalBytes: 1 << 30, ReadBytes: 1 << 29, AddedBytes: 12345,
			AddedRawBytes: 23456, UploadedBytes: 34567, DataBlobs: 77, TreeBlobs: 21, TotalFiles: 100, TotalBytes: 1 << 30}
		errs := []coffer.PathError{{Path: "home/u/docs/locked", Message: "permission denied"}, {Path: "etc/ünïcode \"q\"", Message: "gone"}}
		now = clock.Add(time.Second)
		done, err := db.FinishBackup(ctx, b.ID, metadb.BackupFinish{State: coffer.JobPartial, SnapshotID: "snap-1",
			RootTree: "abcd", ParentID: "backup-0", Stats: final, Errors: errs})
		if err != nil {
			t.Fatal(err)
		}
		want.State, want.SnapshotID, want.RootTree, want.ParentID, want.Stats, want.Errors = coffer.JobPartial, "snap-1", "abcd", "backup-0", final, errs
		want.FinishedAt, want.UpdatedAt = &now, now
		if diff := cmp.Diff(want, done); diff != "" {
			t.Errorf("finished backup (-want +got):\n%s", diff)
		}
		got, err = db.GetBackup(ctx, b.ID)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("finished backup read back (-want +got):\n%s", diff)
		}

		// A finished backup changes no more.
		_, err = db.FinishBackup(ctx, b.ID, metadb.BackupFinish{State: coffer.JobFailed, Error: "late"})
		wantCode(t, err, "backup_finished")
		_, err = db.UpdateBackupProgress(ctx, b.ID, progress)
		wantCode(t, err, "backup_not_running")
		_, err = db.RequestBackupCancel(ctx, b.ID)
		wantCode(t, err, "backup_finished")
		_, err = db.StartBackup(ctx, b.ID, "client-1", "sess-1", "")
		wantCode(t, err, "backup_not_queued")
		_, err = db.FinishBackup(ctx, "nope", metadb.BackupFinish{State: coffer.JobFailed})
		wantCode(t, err, "backup_not_found")
		_, err = db.RequestBackupCancel(ctx, "nope")
		wantCode(t, err, "backup_not_found")
		_, err = db.FinishBackup(ctx, b.ID, metadb.BackupFinish{State: coffer.JobRunning})
		wantCode(t, err, "invalid_state")
	})
}

func TestBackupCreateAndFinishDetails(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		clock := newJobClock(db)

		// Created running (the agent started it): started now.
		run := newBackup(t, db, coffer.Backup{ClientID: "c", State: coffer.JobRunning, Trigger: coffer.TriggerManual})
		if run.StartedAt == nil || !run.StartedAt.Equal(stored(clock.Now())) {
			t.Errorf("a backup created running has started_at %v, want now", run.StartedAt)
		}
		if err := db.CreateBackup(ctx, &coffer.Backup{ClientID: "c", State: coffer.JobSucceeded}); err == nil {
			t.Error("a backup was created in a final state")
		}

		// Empty lists read back empty; a start without a repository keeps it.
		q := newBackup(t, db, coffer.Backup{ClientID: "c", RepositoryID: "repo-a"})
		s, err := db.StartBackup(ctx, q.ID, "c", "sess", "")
		if err != nil {
			t.Fatal(err)
		}
		if s.RepositoryID != "repo-a" || s.Paths != nil || s.Errors != nil {
			t.Errorf("started backup: repository %q, paths %v, errors %v", s.RepositoryID, s.Paths, s.Errors)
		}
		q2 := newBackup(t, db, coffer.Backup{ClientID: "c"})
		if s, err := db.StartBackup(ctx, q2.ID, "c", "sess", "repo-b"); err != nil || s.RepositoryID != "repo-b" {
			t.Errorf("StartBackup with a repository = %+v, %v", s, err)
		}

		// A failure without statistics keeps the last progress report's.
		progress := coffer.BackupStats{Files: 3, ReadBytes: 300}
		if _, err := db.UpdateBackupProgress(ctx, s.ID, progress); err != nil {
			t.Fatal(err)
		}
		f, err := db.FinishBackup(ctx, s.ID, metadb.BackupFinish{State: coffer.JobFailed, Error: "disk full"})
		if err != nil {
			t.Fatal(err)
		}
		if f.Stats != progress || f.Error != "disk full" || f.State != coffer.JobFailed || f.SnapshotID != "" {
			t.Errorf("failed backup = %+v", f)
		}
		// A queued backup may finish at once (the server refused it).
		q3 := newBackup(t, db, coffer.Backup{ClientID: "c"})
		if f, err := db.FinishBackup(ctx, q3.ID, metadb.BackupFinish{State: coffer.JobFailed, Error: "no repository"}); err != nil || f.FinishedAt == nil {
			t.Errorf("finishing a queued backup = %+v, %v", f, err)
		}
	})
}

func TestBackupCancel(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		clock := newJobClock(db)

		queued := newBackup(t, db, coffer.Backup{ClientID: "c"})
		now := clock.Add(time.Second)
		c, err := db.RequestBackupCancel(ctx, queued.ID)
		if err != nil {
			t.Fatal(err)
		}
		if c.State != coffer.JobCanceled || c.CancelRequested || c.Error != "canceled before it started" ||
			c.FinishedAt == nil || !c.FinishedAt.Equal(now) || !c.UpdatedAt.Equal(now) {
			t.Errorf("canceled queued backup = %+v", c)
		}
		_, err = db.StartBackup(ctx, queued.ID, "c", "s", "")
		wantCode(t, err, "backup_not_queued")
		_, err = db.RequestBackupCancel(ctx, queued.ID)
		wantCode(t, err, "backup_finished")

		running := newBackup(t, db, coffer.Backup{ClientID: "c"})
		started := clock.Add(time.Second)
		if _, err := db.StartBackup(ctx, running.ID, "c", "s", ""); err != nil {
			t.Fatal(err)
		}
		clock.Add(time.Second)
		c, err = db.RequestBackupCancel(ctx, running.ID)
		if err != nil {
			t.Fatal(err)
		}
		if c.State != coffer.JobRunning || !c.CancelRequested || c.FinishedAt != nil || !c.UpdatedAt.Equal(started) {
			t.Errorf("cancel of a running backup = %+v; want running, cancel requested, updated_at unchanged", c)
		}
		// Asking twice is fine; the agent sees it in its progress answer.
		if _, err := db.RequestBackupCancel(ctx, running.ID); err != nil {
			t.Fatal(err)
		}
		p, err := db.UpdateBackupProgress(ctx, running.ID, coffer.BackupStats{Files: 1})
		if err != nil || !p.CancelRequested {
			t.Fatalf("progress after cancel = %+v, %v; want cancel requested", p, err)
		}
		f, err := db.FinishBackup(ctx, running.ID, metadb.BackupFinish{State: coffer.JobCanceled, Error: "canceled by alice"})
		if err != nil || f.State != coffer.JobCanceled || !f.CancelRequested {
			t.Fatalf("finish canceled = %+v, %v", f, err)
		}
	})
}

func TestBackupTransitionRaces(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		other := metadbtest.OpenSame(t, db)
		newJobClock(db, other)
		replicas := []*metadb.DB{db, other}

		// Many starts of one backup: one wins.
		b := newBackup(t, db, coffer.Backup{ClientID: "c"})
		codes := race(8, func(i int) error {
			_, err := replicas[i%2].StartBackup(context.Background(), b.ID, "c", fmt.Sprint("s", i), "")
			return err
		})
		if codes[""] != 1 || codes["backup_not_queued"] != 7 {
			t.Errorf("concurrent starts: %v; want one success", codes)
		}
		// Many finishes of one backup: one wins.
		codes = race(8, func(i int) error {
			_, err := replicas[i%2].FinishBackup(context.Background(), b.ID, metadb.BackupFinish{State: coffer.JobSucceeded})
			return err
		})
		if codes[""] != 1 || codes["backup_finished"] != 7 {
			t.Errorf("concurrent finishes: %v; want one success", codes)
		}
		// A start racing a cancel of a queued backup: either the start
		// wins and the cancel is a request, or the cancel wins and the
		// start is refused.
		for range 5 {
			b := newBackup(t, db, coffer.Backup{ClientID: "c"})
			var canceled *coffer.Backup
			codes := race(2, func(i int) error {
				if i == 0 {
					_, err := db.StartBackup(context.Background(), b.ID, "c", "s", "")
					return err
				}
				var err error
				canceled, err = other.RequestBackupCancel(context.Background(), b.ID)
				return err
			})
			got, err := db.GetBackup(context.Background(), b.ID)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case codes[""] == 2 && got.State == coffer.JobRunning && got.CancelRequested && canceled.CancelRequested:
			case codes["backup_not_queued"] == 1 && got.State == coffer.JobCanceled && !got.CancelRequested:
			default:
				t.Errorf("start vs cancel: %v, backup %+v", codes, got)
			}
		}
	})
}

// race runs fn(0..n-1) at once and counts the error codes ("" for success).
func race(n int, fn func(i int) error) map[string]int {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(i)
		}()
	}
	wg.Wait()
	codes := map[string]int{}
	for _, err := range errs {
		codes[coffer.ErrorCode(err)]++
	}
	return codes
}

func TestListBackups(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		clock := newJobClock(db)
		start := stored(clock.Now())
		var all []coffer.Backup
		active := map[string]string{} // plan → its queued or running backup: a plan has one at a time
		for i := range 23 {
			if i%4 == 0 && i > 0 {
				clock.Add(time.Minute) // groups of four share created_at
			}
			plan := []string{"p1", "p2", ""}[i%3]
			if id := active[plan]; id != "" {
				if _, err := db.FinishBackup(ctx, id, metadb.BackupFinish{State: coffer.JobSucceeded}); err != nil {
					t.Fatal(err)
				}
				delete(active, plan)
			}
			b := newBackup(t, db, coffer.Backup{ClientID: []string{"c1", "c2"}[i%2], PlanID: plan,
				Trigger: []coffer.BackupTrigger{coffer.TriggerSchedule, coffer.TriggerManual, coffer.TriggerAPI, coffer.TriggerManual}[i%4]})
			if plan != "" && i%5 != 2 {
				active[plan] = b.ID
			}
			switch i % 5 {
			case 1:
				if _, err := db.StartBackup(ctx, b.ID, b.ClientID, "s", ""); err != nil {
					t.Fatal(err)
				}
			case 2:
				if _, err := db.RequestBackupCancel(ctx, b.ID); err != nil {
					t.Fatal(err)
				}
			}
			all = append(all, coffer.Backup{ID: b.ID})
		}
		for i := range all {
			got, err := db.GetBackup(ctx, all[i].ID)
			if err != nil {
				t.Fatal(err)
			}
			all[i] = *got
		}
		newestFirst := func(keep func(coffer.Backup) bool) []string {
			var ids []string
			for _, b := range all {
				if keep(b) {
					ids = append(ids, b.ID)
				}
			}
			slices.SortFunc(ids, func(a, b string) int {
				ba, bb := all[slices.IndexFunc(all, func(x coffer.Backup) bool { return x.ID == a })],
					all[slices.IndexFunc(all, func(x coffer.Backup) bool { return x.ID == b })]
				if c := bb.CreatedAt.Compare(ba.CreatedAt); c != 0 {
					return c
				}
				return strings.Compare(b, a)
			})
			return ids
		}
		for _, tc := range []struct {
			name string
			f    metadb.BackupFilter
			keep func(coffer.Backup) bool
		}{
			{"all", metadb.BackupFilter{}, func(coffer.Backup) bool { return true }},
			{"client", metadb.BackupFilter{ClientID: "c2"}, func(b coffer.Backup) bool { return b.ClientID == "c2" }},
			{"plan", metadb.BackupFilter{PlanID: "p1"}, func(b coffer.Backup) bool { return b.PlanID == "p1" }},
			{"ad hoc of a client", metadb.BackupFilter{ClientID: "c1", AdHoc: true},
				func(b coffer.Backup) bool { return b.ClientID == "c1" && b.PlanID == "" }},
			{"states", metadb.BackupFilter{States: []coffer.JobState{coffer.JobRunning, coffer.JobCanceled}},
				func(b coffer.Backup) bool { return b.State == coffer.JobRunning || b.State == coffer.JobCanceled }},
			{"client and state", metadb.BackupFilter{ClientID: "c1", States: []coffer.JobState{coffer.JobQueued}},
				func(b coffer.Backup) bool { return b.ClientID == "c1" && b.State == coffer.JobQueued }},
			{"finished", metadb.BackupFilter{Finished: true}, func(b coffer.Backup) bool { return b.State.Final() }},
			{"trigger", metadb.BackupFilter{Trigger: coffer.TriggerManual}, func(b coffer.Backup) bool { return b.Trigger == coffer.TriggerManual }},
			{"client and trigger", metadb.BackupFilter{ClientID: "c1", Trigger: coffer.TriggerAPI},
				func(b coffer.Backup) bool { return b.ClientID == "c1" && b.Trigger == coffer.TriggerAPI }},
			{"since until", metadb.BackupFilter{Since: start.Add(time.Minute), Until: start.Add(4 * time.Minute)},
				func(b coffer.Backup) bool {
					return !b.CreatedAt.Before(start.Add(time.Minute)) && b.CreatedAt.Before(start.Add(4*time.Minute))
				}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				want := newestFirst(tc.keep)
				if len(want) == 0 {
					t.Fatal("the case selects nothing")
				}
				unpaged, err := db.ListBackups(ctx, tc.f)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(want, backupIDs(unpaged)); diff != "" {
					t.Errorf("unpaged (-want +got):\n%s", diff)
				}
				for _, size := range []int{1, 3, 4, 7} {
					var got []string
					f := tc.f
					f.Limit = size
					for range 30 {
						page, err := db.ListBackups(ctx, f)
						if err != nil {
							t.Fatal(err)
						}
						if len(page) > size {
							t.Fatalf("page of %d rows for limit %d", len(page), size)
						}
						got = append(got, backupIDs(page)...)
						if len(page) < size {
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
		// The rows read back whole.
		list, err := db.ListBackups(ctx, metadb.BackupFilter{Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		got, err := db.GetBackup(ctx, list[0].ID)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(got, &list[0]); diff != "" {
			t.Errorf("listed row differs from GetBackup (-get +list):\n%s", diff)
		}
	})
}

func backupIDs(bs []coffer.Backup) []string {
	var ids []string
	for _, b := range bs {
		ids = append(ids, b.ID)
	}
	return ids
}

func TestFailStaleBackups(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		other := metadbtest.OpenSame(t, db)
		clock := newJobClock(db, other)
		t0 := stored(clock.Now())

		var stale []string
		for range 6 {
			b := newBackup(t, db, coffer.Backup{ClientID: "c"})
			if _, err := db.StartBackup(ctx, b.ID, "c", "s", ""); err != nil {
				t.Fatal(err)
			}
			stale = append(stale, b.ID)
		}
		queued := newBackup(t, db, coffer.Backup{ClientID: "c"})
		fresh := newBackup(t, db, coffer.Backup{ClientID: "c", State: coffer.JobRunning})
		finished := newBackup(t, db, coffer.Backup{ClientID: "c", State: coffer.JobRunning})
		if _, err := db.FinishBackup(ctx, finished.ID, metadb.BackupFinish{State: coffer.JobSucceeded}); err != nil {
			t.Fatal(err)
		}
		clock.Add(10 * time.Minute)
		if _, err := db.UpdateBackupProgress(ctx, fresh.ID, coffer.BackupStats{Files: 1}); err != nil {
			t.Fatal(err)
		}
		now := clock.Add(time.Minute)

		// Two replicas sweep at once: each stale backup is failed once.
		var mu sync.Mutex
		var got []coffer.Backup
		race(4, func(i int) error {
			failed, err := []*metadb.DB{db, other}[i%2].FailStaleBackups(ctx, t0.Add(5*time.Minute), "the agent stopped reporting")
			mu.Lock()
			defer mu.Unlock()
			got = append(got, failed...)
			if err != nil {
				t.Error(err)
			}
			return err
		})
		slices.Sort(stale)
		ids := backupIDs(got)
		slices.Sort(ids)
		if diff := cmp.Diff(stale, ids); diff != "" {
			t.Errorf("failed backups (-want +got):\n%s", diff)
		}
		for _, b := range got {
			if b.State != coffer.JobFailed || b.Error != "the agent stopped reporting" || b.FinishedAt == nil || !b.FinishedAt.Equal(now) {
				t.Errorf("stale backup after the sweep: %+v", b)
			}
		}
		for _, id := range []string{queued.ID, fresh.ID, finished.ID} {
			b, err := db.GetBackup(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if b.State == coffer.JobFailed {
				t.Errorf("backup %s (%s) was failed by the sweep", id, b.Error)
			}
		}
	})
}

func TestCountBackupsByState(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		clock := newJobClock(db)
		newBackup(t, db, coffer.Backup{ClientID: "c1"}) // before the window
		clock.Add(time.Hour)
		since := clock.Now()
		for _, state := range []coffer.JobState{coffer.JobQueued, coffer.JobSucceeded, coffer.JobSucceeded, coffer.JobFailed} {
			b := newBackup(t, db, coffer.Backup{ClientID: "c1"})
			if state != coffer.JobQueued {
				if _, err := db.FinishBackup(ctx, b.ID, metadb.BackupFinish{State: state, Error: "x"}); err != nil {
					t.Fatal(err)
				}
			}
		}
		got, err := db.CountBackupsByState(ctx, since)
		if err != nil {
			t.Fatal(err)
		}
		want := map[coffer.JobState]int{coffer.JobQueued: 1, coffer.JobSucceeded: 2, coffer.JobFailed: 1}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("counts (-want +got):\n%s", diff)
		}
	})
}
