package metadb_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/google/go-cmp/cmp"
)

// schedPlan returns a minimal plan of client on schedule.
func schedPlan(name, clientID, schedule string) *coffer.Plan {
	return &coffer.Plan{Name: name, ClientID: clientID, Schedule: schedule, Include: []string{"/srv"}, Enabled: true}
}

func unscheduled(t *testing.T, db *metadb.DB) []string {
	t.Helper()
	keys, err := db.UnscheduledPlans(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, k := range keys {
		ids = append(ids, k.PlanID)
	}
	return ids
}

func firing(t *testing.T, db *metadb.DB, id string) coffer.PlanFiring {
	t.Helper()
	f, err := db.PlanFirings(context.Background(), []string{id, "no-such-plan"})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := f["no-such-plan"]; ok || len(f) > 1 {
		t.Fatalf("firings of one plan and a missing one: %v", f)
	}
	return f[id]
}

func TestPlanScheduleSync(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		clock := newJobClock(db)
		start := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
		a := schedPlan("a", "client-1", "0 0 * * * ?")
		a.StartAt, a.Timezone = &start, "Europe/Berlin"
		createPlan(t, db, a)
		b := createPlan(t, db, schedPlan("b", "client-1", ""))
		if got := unscheduled(t, db); !cmp.Equal(got, sortedIDs(a.ID, b.ID)) {
			t.Fatalf("unscheduled = %v, want both plans", got)
		}
		keys, _ := db.UnscheduledPlans(ctx, 1)
		if len(keys) != 1 {
			t.Fatalf("limit 1: %d keys", len(keys))
		}
		ka := metadb.ScheduleKeyOf(a)
		if !ka.Matches(a) || ka.StartAt == nil || !ka.StartAt.Equal(start) || ka.Timezone != "Europe/Berlin" {
			t.Fatalf("key of a = %+v", ka)
		}

		next := clock.Add(time.Hour)
		for _, tc := range []struct {
			k    metadb.ScheduleKey
			next *time.Time
			want bool
		}{{ka, &next, true}, {ka, nil, false}, {metadb.ScheduleKeyOf(b), nil, true}} {
			if set, err := db.SetPlanSchedule(ctx, tc.k, tc.next); err != nil || set != tc.want {
				t.Fatalf("SetPlanSchedule(%s) = %v, %v; want %v", tc.k.PlanID, set, err, tc.want)
			}
		}
		if got := unscheduled(t, db); len(got) != 0 {
			t.Fatalf("unscheduled after setting both = %v", got)
		}
		if f := firing(t, db, a.ID); f.NextFireAt == nil || !f.NextFireAt.Equal(next) || f.LastFiredAt != nil || f.LastOutcome != "" {
			t.Fatalf("firing of a = %+v", f)
		}

		// Changing what is not part of the key changes nothing.
		a.Name, a.Include = "a2", []string{"/home"}
		if err := db.UpdatePlan(ctx, a); err != nil {
			t.Fatal(err)
		}
		if got := unscheduled(t, db); len(got) != 0 {
			t.Fatalf("unscheduled after a rename = %v", got)
		}
		// Each part of the key does; until it is set again, the plan has
		// no next fire time to show.
		end := start.Add(48 * time.Hour)
		for i, edit := range []func(p *coffer.Plan){
			func(p *coffer.Plan) { p.Schedule = "0 30 * * * ?" },
			func(p *coffer.Plan) { p.Timezone = "UTC" },
			func(p *coffer.Plan) { p.StartAt = nil },
			func(p *coffer.Plan) { p.EndAt = &end },
			func(p *coffer.Plan) { p.Enabled = false },
			func(p *coffer.Plan) { p.ClientID = "client-2" },
		} {
			edit(a)
			if err := db.UpdatePlan(ctx, a); err != nil {
				t.Fatal(err)
			}
			if got := unscheduled(t, db); !cmp.Equal(got, []string{a.ID}) {
				t.Fatalf("edit %d: unscheduled = %v", i, got)
			}
			if f := firing(t, db, a.ID); f.NextFireAt != nil {
				t.Fatalf("edit %d: a stale state shows a next fire time: %+v", i, f)
			}
			if set, err := db.SetPlanSchedule(ctx, metadb.ScheduleKeyOf(a), &next); err != nil || !set {
				t.Fatalf("edit %d: SetPlanSchedule = %v, %v", i, set, err)
			}
			if f := firing(t, db, a.ID); f.NextFireAt == nil || !f.NextFireAt.Equal(next) {
				t.Fatalf("edit %d: firing = %+v", i, f)
			}
		}

		// A key read before an edit may still be written (by a slow
		// replica): the plan then shows up as unscheduled again.
		old := metadb.ScheduleKeyOf(a)
		a.Schedule = "@hourly"
		if err := db.UpdatePlan(ctx, a); err != nil {
			t.Fatal(err)
		}
		if set, err := db.SetPlanSchedule(ctx, metadb.ScheduleKeyOf(a), &next); err != nil || !set {
			t.Fatalf("set current key = %v, %v", set, err)
		}
		if set, err := db.SetPlanSchedule(ctx, old, &next); err != nil || !set {
			t.Fatalf("set stale key = %v, %v", set, err)
		}
		if got := unscheduled(t, db); !cmp.Equal(got, []string{a.ID}) {
			t.Fatalf("after a stale write: unscheduled = %v", got)
		}

		// A deleted plan's state goes with it; setting it is a no-op.
		if _, err := db.DeletePlan(ctx, b.ID); err != nil {
			t.Fatal(err)
		}
		if set, err := db.SetPlanSchedule(ctx, metadb.ScheduleKeyOf(b), nil); err != nil || set {
			t.Fatalf("SetPlanSchedule of a deleted plan = %v, %v", set, err)
		}
		if f, err := db.PlanFirings(ctx, []string{b.ID}); err != nil || len(f) != 0 {
			t.Fatalf("firing of a deleted plan = %v, %v", f, err)
		}
		if f, err := db.PlanFirings(ctx, nil); err != nil || len(f) != 0 {
			t.Fatalf("firings of no plans = %v, %v", f, err)
		}
	})
}

func sortedIDs(ids ...string) []string {
	if ids[0] > ids[1] {
		ids[0], ids[1] = ids[1], ids[0]
	}
	return ids
}

func TestClaimDueFires(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		clock := newJobClock(db)
		now := clock.Add(0)
		var plans []*coffer.Plan
		for i, due := range []time.Duration{-time.Hour, -time.Second, 0, time.Second} {
			p := createPlan(t, db, schedPlan(fmt.Sprint("p", i), "client-1", "* * * * * ?"))
			next := now.Add(due)
			if _, err := db.SetPlanSchedule(ctx, metadb.ScheduleKeyOf(p), &next); err != nil {
				t.Fatal(err)
			}
			plans = append(plans, p)
		}
		manual := createPlan(t, db, schedPlan("manual", "client-1", ""))
		if _, err := db.SetPlanSchedule(ctx, metadb.ScheduleKeyOf(manual), nil); err != nil {
			t.Fatal(err)
		}

		moved := now.Add(time.Minute)
		var advanced []string
		advance := func(k metadb.ScheduleKey) *time.Time { advanced = append(advanced, k.PlanID); return &moved }
		due, err := db.ClaimDueFires(ctx, now, 2, advance)
		if err != nil {
			t.Fatal(err)
		}
		if len(due) != 2 || due[0].Key.PlanID != plans[0].ID || due[1].Key.PlanID != plans[1].ID ||
			!due[0].DueAt.Equal(now.Add(-time.Hour)) || !due[0].Key.Matches(plans[0]) || !due[0].Next.Equal(moved) {
			t.Fatalf("first batch = %+v, want p0 and p1, earliest first", due)
		}
		due, err = db.ClaimDueFires(ctx, now, 2, func(metadb.ScheduleKey) *time.Time { return nil })
		if err != nil || len(due) != 1 || due[0].Key.PlanID != plans[2].ID || due[0].Next != nil {
			t.Fatalf("second batch = %+v, %v; want p2 (due exactly now) and no next time", due, err)
		}
		if due, err := db.ClaimDueFires(ctx, now, 2, advance); err != nil || len(due) != 0 {
			t.Fatalf("third batch = %+v, %v; want none", due, err)
		}
		if len(advanced) != 2 {
			t.Fatalf("advance called for %v", advanced)
		}
		if f := firing(t, db, plans[0].ID); f.NextFireAt == nil || !f.NextFireAt.Equal(moved) {
			t.Fatalf("p0 after the claim: %+v", f)
		}
		if f := firing(t, db, plans[2].ID); f.NextFireAt != nil {
			t.Fatalf("p2 after the claim: %+v", f)
		}

		// Record outcomes.
		at := clock.Add(time.Second)
		k0 := metadb.ScheduleKeyOf(plans[0])
		if err := db.RecordFire(ctx, k0, metadb.FireRecord{At: at, Outcome: coffer.FireOutcomeFired, BackupID: "b-1",
			Message: "fired"}); err != nil {
			t.Fatal(err)
		}
		want := coffer.PlanFiring{PlanID: plans[0].ID, NextFireAt: &moved, LastFiredAt: &at, LastOutcome: coffer.FireOutcomeFired,
			LastBackupID: "b-1", LastMessage: "fired"}
		if diff := cmp.Diff(want, firing(t, db, plans[0].ID)); diff != "" {
			t.Fatalf("firing after a fire (-want +got):\n%s", diff)
		}
		// Stop clears the next fire time, unless the plan moved to
		// another client meanwhile.
		if err := db.RecordFire(ctx, k0, metadb.FireRecord{At: at, Outcome: coffer.FireOutcomeFailed, Stop: true}); err != nil {
			t.Fatal(err)
		}
		if f := firing(t, db, plans[0].ID); f.NextFireAt != nil || f.LastOutcome != coffer.FireOutcomeFailed || f.LastBackupID != "" {
			t.Fatalf("firing after a stop: %+v", f)
		}
		k3 := metadb.ScheduleKeyOf(plans[3])
		plans[3].ClientID = "client-2"
		if err := db.UpdatePlan(ctx, plans[3]); err != nil {
			t.Fatal(err)
		}
		if _, err := db.SetPlanSchedule(ctx, metadb.ScheduleKeyOf(plans[3]), &moved); err != nil {
			t.Fatal(err)
		}
		if err := db.RecordFire(ctx, k3, metadb.FireRecord{At: at, Outcome: coffer.FireOutcomeFailed, Stop: true}); err != nil {
			t.Fatal(err)
		}
		if f := firing(t, db, plans[3].ID); f.NextFireAt == nil || !f.NextFireAt.Equal(moved) {
			t.Fatalf("a stop for the old client cleared the new client's schedule: %+v", f)
		}
		// Recording the fire of a deleted plan is no error.
		if _, err := db.DeletePlan(ctx, plans[1].ID); err != nil {
			t.Fatal(err)
		}
		if err := db.RecordFire(ctx, metadb.ScheduleKeyOf(plans[1]), metadb.FireRecord{At: at, Outcome: coffer.FireOutcomeFired}); err != nil {
			t.Fatal(err)
		}
	})
}

// TestClaimDueFiresConcurrently: callers racing over the same due plans
// claim each once.
func TestClaimDueFiresConcurrently(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		clock := newJobClock(db)
		now := clock.Add(0)
		const n = 40
		for i := range n {
			p := createPlan(t, db, schedPlan(fmt.Sprint("p", i), "client-1", "* * * * * ?"))
			due := now.Add(-time.Duration(i) * time.Second)
			if _, err := db.SetPlanSchedule(ctx, metadb.ScheduleKeyOf(p), &due); err != nil {
				t.Fatal(err)
			}
		}
		later := now.Add(time.Hour)
		var mu sync.Mutex
		claims := map[string]int{}
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for {
					due, err := db.ClaimDueFires(ctx, now, 3, func(metadb.ScheduleKey) *time.Time { return &later })
					if err != nil {
						t.Error(err)
						return
					}
					if len(due) == 0 {
						return
					}
					mu.Lock()
					for _, d := range due {
						claims[d.Key.PlanID]++
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if len(claims) != n {
			t.Fatalf("%d plans claimed, want %d", len(claims), n)
		}
		for id, c := range claims {
			if c != 1 {
				t.Errorf("plan %s claimed %d times", id, c)
			}
		}
	})
}

// TestOnePlanBackupAtATime: a plan has at most one queued or running
// backup; ad-hoc backups are not limited.
func TestOnePlanBackupAtATime(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		newJobClock(db)
		c := enrollTestClient(t, db, "", "web")
		first := &coffer.Backup{ClientID: c.ID, PlanID: "plan-1", Paths: []string{"/srv"}}
		if err := db.CreateBackup(ctx, first); err != nil {
			t.Fatal(err)
		}
		for _, state := range []coffer.JobState{coffer.JobQueued, coffer.JobRunning} {
			err := db.CreateBackup(ctx, &coffer.Backup{ClientID: c.ID, PlanID: "plan-1", State: state})
			ce := wantConflict(t, err, "plan_backup_active")
			if ce.Meta["backup_id"] != first.ID || ce.Meta["plan_id"] != "plan-1" {
				t.Fatalf("conflict metadata = %v", ce.Meta)
			}
		}
		if _, err := db.StartBackup(ctx, first.ID, c.ID, "", ""); err != nil {
			t.Fatal(err)
		}
		err := db.CreateBackup(ctx, &coffer.Backup{ClientID: c.ID, PlanID: "plan-1"})
		if ce := wantConflict(t, err, "plan_backup_active"); ce.Meta["state"] != coffer.JobRunning {
			t.Fatalf("conflict metadata = %v", ce.Meta)
		}
		// Other plans and ad-hoc backups are not held up.
		for _, plan := range []string{"plan-2", "", ""} {
			if err := db.CreateBackup(ctx, &coffer.Backup{ClientID: c.ID, PlanID: plan}); err != nil {
				t.Fatalf("backup of plan %q: %v", plan, err)
			}
		}
		if _, err := db.FinishBackup(ctx, first.ID, metadb.BackupFinish{State: coffer.JobSucceeded}); err != nil {
			t.Fatal(err)
		}
		if err := db.CreateBackup(ctx, &coffer.Backup{ClientID: c.ID, PlanID: "plan-1"}); err != nil {
			t.Fatalf("backup of a plan whose backup finished: %v", err)
		}
	})
}

func wantConflict(t *testing.T, err error, code string) *coffer.Error {
	t.Helper()
	ce, ok := err.(*coffer.Error)
	if !ok || ce.Kind != coffer.KindConflict || ce.Code != code {
		t.Fatalf("err = %v, want conflict %s", err, code)
	}
	return ce
}

func TestFailQueuedBackups(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		clock := newJobClock(db)
		c := enrollTestClient(t, db, "", "web")
		mk := func(state coffer.JobState) *coffer.Backup {
			b := &coffer.Backup{ClientID: c.ID, State: state}
			if err := db.CreateBackup(ctx, b); err != nil {
				t.Fatal(err)
			}
			return b
		}
		old1, old2, oldRunning := mk(coffer.JobQueued), mk(coffer.JobQueued), mk(coffer.JobRunning)
		cutoff := clock.Add(time.Hour)
		young := mk(coffer.JobQueued)
		failed, err := db.FailQueuedBackups(ctx, cutoff, "never started")
		if err != nil {
			t.Fatal(err)
		}
		if len(failed) != 2 || failed[0].ID != old2.ID || failed[1].ID != old1.ID {
			t.Fatalf("failed = %+v, want the two old queued backups, newest first", failed)
		}
		for _, b := range failed {
			if b.State != coffer.JobFailed || b.Error != "never started" || b.FinishedAt == nil || !b.FinishedAt.Equal(cutoff) {
				t.Fatalf("failed backup = %+v", b)
			}
		}
		for _, b := range []*coffer.Backup{oldRunning, young} {
			if got, _ := db.GetBackup(ctx, b.ID); got.State != b.State {
				t.Fatalf("backup %s is %s, want %s", b.ID, got.State, b.State)
			}
		}
		if again, err := db.FailQueuedBackups(ctx, cutoff, "x"); err != nil || len(again) != 0 {
			t.Fatalf("second sweep = %v, %v", again, err)
		}
	})
}

// TestSchedulerMigrationFailsDuplicates: migration 0006 leaves the oldest
// active backup of each plan and fails the others, which its unique index
// would refuse. Without the index, duplicates are made, then the
// migration's statements about backups run again.
func TestSchedulerMigrationFailsDuplicates(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		clock := newJobClock(db)
		text, err := os.ReadFile(filepath.Join("migrations", string(db.Dialect()), "0006_scheduler.sql"))
		if err != nil {
			t.Fatal(err)
		}
		up, _, _ := strings.Cut(string(text), "-- +goose Down")
		var again []string
		for _, stmt := range strings.Split(up, ";") {
			if stmt = strings.TrimSpace(stmt); strings.HasPrefix(stmt, "UPDATE backups") || strings.HasPrefix(stmt, "CREATE UNIQUE INDEX backups_plan_active") {
				again = append(again, stmt)
			}
		}
		if len(again) != 2 {
			t.Fatalf("found %d of the migration's statements about backups, want 2", len(again))
		}
		if _, err := db.SQL().ExecContext(ctx, `DROP INDEX backups_plan_active`); err != nil {
			t.Fatal(err)
		}
		mk := func(plan string, state coffer.JobState) string {
			clock.Add(time.Second)
			b := &coffer.Backup{ClientID: "c1", PlanID: plan, State: state}
			if err := db.CreateBackup(ctx, b); err != nil {
				t.Fatal(err)
			}
			return b.ID
		}
		p1a, p1b, p1c := mk("p1", coffer.JobQueued), mk("p1", coffer.JobRunning), mk("p1", coffer.JobQueued)
		p2a, p2b := mk("p2", coffer.JobRunning), mk("p2", coffer.JobQueued)
		adhoc1, adhoc2 := mk("", coffer.JobQueued), mk("", coffer.JobQueued)
		for _, stmt := range again {
			if _, err := db.SQL().ExecContext(ctx, stmt); err != nil {
				t.Fatalf("%s: %v", stmt, err)
			}
		}
		for id, want := range map[string]coffer.JobState{p1a: coffer.JobQueued, p1b: coffer.JobFailed, p1c: coffer.JobFailed,
			p2a: coffer.JobRunning, p2b: coffer.JobFailed, adhoc1: coffer.JobQueued, adhoc2: coffer.JobQueued} {
			b, err := db.GetBackup(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if b.State != want || (want == coffer.JobFailed && (b.Error == "" || b.FinishedAt == nil)) {
				t.Errorf("backup of plan %q: %s %q finished %v, want %s", b.PlanID, b.State, b.Error, b.FinishedAt, want)
			}
		}
		err = db.CreateBackup(ctx, &coffer.Backup{ClientID: "c1", PlanID: "p1"})
		wantConflict(t, err, "plan_backup_active")
	})
}
