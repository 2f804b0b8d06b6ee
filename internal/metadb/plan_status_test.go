package metadb_test

import (
	"context"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
)

func TestPlanStatuses(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		clock := newJobClock(db)
		a := createPlan(t, db, schedPlan("a", "client-1", "0 0 * * * ?"))
		b := createPlan(t, db, schedPlan("b", "client-1", ""))
		off := schedPlan("off", "client-1", "@daily")
		off.Enabled = false
		createPlan(t, db, off)

		// a: succeeded, then failed; its last fire queued a backup that
		// still waits.
		clock.Add(time.Minute)
		ok := finishedBackup(t, db, a.ID, coffer.JobSucceeded, metadb.BackupFinish{SnapshotID: "s1"})
		clock.Add(time.Minute)
		failed := finishedBackup(t, db, a.ID, coffer.JobFailed, metadb.BackupFinish{Error: "disk on fire"})
		clock.Add(time.Minute)
		queued := newBackup(t, db, coffer.Backup{ClientID: "client-1", PlanID: a.ID, State: coffer.JobQueued, Paths: []string{"/"}})
		next := clock.Add(time.Hour)
		if _, err := db.SetPlanSchedule(ctx, metadb.ScheduleKeyOf(a), &next); err != nil {
			t.Fatal(err)
		}
		if err := db.RecordFire(ctx, metadb.ScheduleKeyOf(a), metadb.FireRecord{At: clock.Now(), Outcome: coffer.FireOutcomeFired,
			BackupID: queued.ID, Message: "queued"}); err != nil {
			t.Fatal(err)
		}

		got, err := db.PlanStatuses(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0].Plan.ID != a.ID || got[1].Plan.ID != b.ID {
			t.Fatalf("statuses = %+v, want the enabled plans a and b", got)
		}
		sa := got[0]
		if sa.Plan.Name != "a" || sa.Plan.Schedule != "0 0 * * * ?" || !sa.HasFiring || sa.Firing.PlanID != a.ID ||
			sa.Firing.NextFireAt == nil || !sa.Firing.NextFireAt.Equal(next) || sa.Firing.LastOutcome != coffer.FireOutcomeFired {
			t.Errorf("status of a = %+v", sa)
		}
		if lf := sa.LastFinished; lf == nil || lf.ID != failed.ID || lf.State != coffer.JobFailed || lf.Error != "disk on fire" ||
			lf.FinishedAt == nil || !lf.FinishedAt.Equal(*failed.FinishedAt) {
			t.Errorf("last finished backup of a = %+v, want %s failed", lf, failed.ID)
		}
		if sa.LastSuccessAt == nil || !sa.LastSuccessAt.Equal(*ok.FinishedAt) {
			t.Errorf("last success of a = %v, want %v", sa.LastSuccessAt, ok.FinishedAt)
		}
		if f := sa.Fired; f == nil || f.ID != queued.ID || f.State != coffer.JobQueued || f.FinishedAt != nil ||
			!f.CreatedAt.Equal(queued.CreatedAt) {
			t.Errorf("fired backup of a = %+v, want %s queued", f, queued.ID)
		}
		sb := got[1]
		if sb.HasFiring || sb.Firing.NextFireAt != nil || sb.LastFinished != nil || sb.LastSuccessAt != nil || sb.Fired != nil {
			t.Errorf("status of b, which never ran = %+v", sb)
		}

		// An edited plan's state is stale: no next fire time to judge by.
		a.Schedule = "@hourly"
		if err := db.UpdatePlan(ctx, a); err != nil {
			t.Fatal(err)
		}
		got, err = db.PlanStatuses(ctx)
		if err != nil || got[0].Firing.NextFireAt != nil || !got[0].HasFiring {
			t.Fatalf("status of an edited plan = %+v, %v", got[0], err)
		}
	})
}
