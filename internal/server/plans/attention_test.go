package plans_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/cofferhq/coffer/internal/server/plans"
)

// attentionEnv is a store with a clock the test moves and a service
// judging plans by it.
type attentionEnv struct {
	t   *testing.T
	db  *metadb.DB
	svc *plans.Service
	now time.Time
}

func newAttentionEnv(t *testing.T, db *metadb.DB) *attentionEnv {
	e := &attentionEnv{t: t, db: db, now: time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)} // a Monday
	db.Now = func() time.Time { return e.now }
	e.svc = plans.New(plans.Options{Store: db, Now: func() time.Time { return e.now }})
	return e
}

func (e *attentionEnv) plan(name, schedule string, enabled bool) *coffer.Plan {
	e.t.Helper()
	p := &coffer.Plan{Name: name, ClientID: "c1", Schedule: schedule, Include: []string{"/srv"}, Enabled: enabled}
	if err := e.db.CreatePlan(context.Background(), p); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// backup stores a backup of p that ended in state at the current time.
func (e *attentionEnv) backup(p *coffer.Plan, state coffer.JobState, msg string) *coffer.Backup {
	e.t.Helper()
	ctx := context.Background()
	b := &coffer.Backup{ClientID: p.ClientID, PlanID: p.ID, State: coffer.JobRunning, Paths: p.Include}
	if err := e.db.CreateBackup(ctx, b); err != nil {
		e.t.Fatal(err)
	}
	if state == coffer.JobRunning {
		return b
	}
	done, err := e.db.FinishBackup(ctx, b.ID, metadb.BackupFinish{State: state, Error: msg})
	if err != nil {
		e.t.Fatal(err)
	}
	return done
}

// fire records that the scheduler handled p's fire now, moving its next
// fire time to next.
func (e *attentionEnv) fire(p *coffer.Plan, next time.Time, outcome coffer.FireOutcome, backupID, msg string) {
	e.t.Helper()
	ctx := context.Background()
	k := metadb.ScheduleKeyOf(p)
	if _, err := e.db.SetPlanSchedule(ctx, k, &next); err != nil {
		e.t.Fatal(err)
	}
	if err := e.db.RecordFire(ctx, k, metadb.FireRecord{At: e.now, Outcome: outcome, BackupID: backupID, Message: msg}); err != nil {
		e.t.Fatal(err)
	}
}

func TestAttention(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newAttentionEnv(t, db)
		start := e.now
		e.now = start.Add(-5 * time.Hour) // plans created 5 hours ago
		healthy := e.plan("healthy", "0 0 * * * ?", true)
		failing := e.plan("failing", "@daily", true)
		partial := e.plan("partial", "", true)
		overdue := e.plan("overdue", "0 0 * * * ?", true)
		waiting := e.plan("waiting", "0 0 * * * ?", true)
		stale := e.plan("stale", "0 0 * * * ?", true)
		weekdays := e.plan("weekdays", "0 0 2 ? * MON-FRI", true)
		neverOK := e.plan("never", "@hourly", true)
		fireFailed := e.plan("fire failed", "@hourly", true)
		disabled := e.plan("disabled", "@hourly", false)
		e.backup(disabled, coffer.JobFailed, "ignored while disabled")

		// Friday 02:00 the weekdays plan succeeded; the stale one last did
		// three hours before now.
		e.now = start.Add(-3*24*time.Hour - 10*time.Hour)
		if e.now.Weekday() != time.Friday || e.now.Hour() != 2 {
			t.Fatalf("the weekdays plan's last success is %v, want a Friday at 02:00", e.now)
		}
		e.backup(weekdays, coffer.JobSucceeded, "")
		e.now = start.Add(-3 * time.Hour)
		e.backup(stale, coffer.JobSucceeded, "")
		e.now = start.Add(-90 * time.Minute)
		queued := &coffer.Backup{ClientID: "c1", PlanID: waiting.ID, State: coffer.JobQueued, Paths: []string{"/srv"}}
		if err := db.CreateBackup(context.Background(), queued); err != nil {
			t.Fatal(err)
		}
		e.now = start.Add(-10 * time.Minute)
		e.backup(healthy, coffer.JobFailed, "first one failed")
		e.backup(healthy, coffer.JobSucceeded, "")
		e.backup(failing, coffer.JobSucceeded, "")
		e.backup(failing, coffer.JobFailed, "disk full")
		e.backup(partial, coffer.JobPartial, "")
		e.backup(overdue, coffer.JobSucceeded, "")
		e.backup(neverOK, coffer.JobCanceled, "")
		e.now = start
		e.fire(healthy, start.Add(time.Hour), coffer.FireOutcomeFired, "", "")
		e.fire(failing, start.Add(12*time.Hour), coffer.FireOutcomeFired, "", "")
		e.fire(overdue, start.Add(-2*time.Hour), coffer.FireOutcomeFired, "", "")
		e.fire(waiting, start.Add(time.Hour), coffer.FireOutcomeFired, queued.ID, "queued")
		e.fire(stale, start.Add(time.Hour), coffer.FireOutcomeFired, "", "")
		e.fire(weekdays, start.Add(14*time.Hour), coffer.FireOutcomeFired, "", "")
		e.fire(neverOK, start.Add(time.Hour), coffer.FireOutcomeFired, "", "")
		e.fire(fireFailed, start.Add(time.Hour), coffer.FireOutcomeFailed, "", "client c1 was deleted")

		got, err := e.svc.Attention(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		reasons := map[string]string{}
		var order []string
		for _, a := range got {
			reasons[a.Plan.Name] = a.Reason + ": " + a.Message
			order = append(order, a.Plan.Name)
		}
		want := map[string]string{
			"failing":     plans.ReasonFailed + ": The last backup failed: disk full.",
			"fire failed": plans.ReasonFireFail + ": The last scheduled run could not start: client c1 was deleted.",
			"partial":     plans.ReasonPartial + ": The last backup could not read some files.",
			"overdue":     plans.ReasonOverdue + ": It was due at",
			"waiting":     plans.ReasonWaiting + ": Its backup has waited since",
			"stale":       plans.ReasonStale + ": No successful backup since",
			"never":       plans.ReasonStale + ": No backup of it has succeeded yet.",
		}
		for name, prefix := range want {
			if !strings.HasPrefix(reasons[name], prefix) {
				t.Errorf("%s: %q, want it to start %q", name, reasons[name], prefix)
			}
		}
		for _, name := range []string{"healthy", "weekdays", "disabled"} {
			if r, ok := reasons[name]; ok {
				t.Errorf("%s needs no attention, got %q", name, r)
			}
		}
		if len(order) != len(want) || order[0] != "failing" || order[1] != "fire failed" || order[2] != "partial" {
			t.Errorf("order = %v, want the failing plans first", order)
		}
	})
}
