package backups

import (
	"context"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/cofferhq/coffer/internal/protocol"
)

// TestFirePlan: a scheduled fire queues the plan's backup with trigger
// schedule and no creator; a plan runs one backup at a time, fired or run
// by hand.
func TestFirePlan(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		plan := &coffer.Plan{ID: "plan-1", ClientID: e.client.ID, Include: []string{"/srv"}, FullEvery: 2}
		b, err := e.svc.FirePlan(ctx, plan)
		if err != nil {
			t.Fatal(err)
		}
		if b.Trigger != coffer.TriggerSchedule || b.CreatedBy != "" || b.PlanID != plan.ID || b.State != coffer.JobQueued || !b.Full {
			t.Fatalf("fired backup = %+v", b)
		}
		sent := e.cmds.sent()
		if len(sent) != 1 || sent[0].clientID != e.client.ID || sent[0].cmd.Kind != protocol.CommandBackup ||
			sent[0].cmd.Backup.BackupID != b.ID {
			t.Fatalf("commands = %+v", sent)
		}
		if ev := e.events.events[len(e.events.events)-1]; ev.Code != EventQueued || ev.Actor != "system" || ev.ActorID != "" {
			t.Fatalf("queued event = %+v", ev)
		}

		// While it is queued or running, neither a fire nor "run now" queues another.
		_, err = e.svc.FirePlan(ctx, plan)
		if ce := wantCode(t, err, "plan_backup_active"); ce.Kind != coffer.KindConflict || ce.Meta["backup_id"] != b.ID {
			t.Fatalf("second fire: %v %v", ce, ce.Meta)
		}
		if _, err := db.StartBackup(ctx, b.ID, e.client.ID, "", e.repo.Config().ID); err != nil {
			t.Fatal(err)
		}
		_, err = e.svc.RunPlan(ctx, e.admin, plan)
		wantCode(t, err, "plan_backup_active")
		if n := len(e.cmds.sent()); n != 1 {
			t.Fatalf("%d commands sent, want 1: a refused backup must not reach the agent", n)
		}
		// Another plan, and ad-hoc backups of the same client, go ahead.
		if _, err := e.svc.RunPlan(ctx, e.admin, &coffer.Plan{ID: "plan-2", ClientID: e.client.ID, Include: []string{"/srv"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.svc.RunAdHoc(ctx, e.admin, e.client.ID, AdHoc{Paths: []string{"/srv"}}); err != nil {
			t.Fatal(err)
		}

		if _, err := db.FinishBackup(ctx, b.ID, metadb.BackupFinish{State: coffer.JobSucceeded}); err != nil {
			t.Fatal(err)
		}
		next, err := e.svc.RunPlan(ctx, e.admin, plan)
		if err != nil {
			t.Fatal(err)
		}
		if next.Trigger != coffer.TriggerManual || next.Full {
			t.Fatalf("run now after the fire = %+v", next)
		}
	})
}

// TestQueuedBackupsExpire: a queued backup waits for its offline agent
// (Maintain leaves it alone) until QueuedTTL, then fails.
func TestQueuedBackupsExpire(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		e.svc = New(Options{Store: db, Repos: e.svc.repos, Events: e.events, Commands: e.cmds, Clients: db, Now: e.clock.Now,
			QueuedTTL: 48 * time.Hour})
		b, err := e.svc.FirePlan(ctx, &coffer.Plan{ID: "plan-1", ClientID: e.client.ID, Include: []string{"/srv"}})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range []time.Duration{11 * time.Minute, 24 * time.Hour, 23 * time.Hour} {
			e.clock.Add(d)
			if err := e.svc.Maintain(ctx); err != nil {
				t.Fatal(err)
			}
			if got := e.backup(b.ID); got.State != coffer.JobQueued {
				t.Fatalf("after %v: backup %s is %s, want queued", d, b.ID, got.State)
			}
		}
		e.clock.Add(time.Hour + time.Second)
		if err := e.svc.Maintain(ctx); err != nil {
			t.Fatal(err)
		}
		got := e.backup(b.ID)
		if got.State != coffer.JobFailed || got.Error == "" {
			t.Fatalf("backup queued past the TTL = %+v", got)
		}
		if codes := e.events.codes(); codes[len(codes)-1] != EventFailed {
			t.Fatalf("events = %v", codes)
		}
		// The plan may queue again.
		if _, err := e.svc.FirePlan(ctx, &coffer.Plan{ID: "plan-1", ClientID: e.client.ID, Include: []string{"/srv"}}); err != nil {
			t.Fatal(err)
		}
	})
}
