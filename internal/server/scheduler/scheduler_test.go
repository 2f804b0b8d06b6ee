package scheduler_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/cofferhq/coffer/internal/protocol"
	"github.com/cofferhq/coffer/internal/server/health"
	"github.com/cofferhq/coffer/internal/server/scheduler"
	"github.com/oklog/ulid/v2"
)

// TestCatchUpOnce: a plan whose fire times passed while no scheduler ran
// fires once, not once per missed time, and a restarted scheduler does
// not fire it again.
func TestCatchUpOnce(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		p := e.plan("hourly", "0 * * * * ?") // every minute, on the minute
		e.tick(nil, t0)
		e.wantNext(p, at(t0.Truncate(time.Minute).Add(time.Minute)))
		e.tick(nil, t0.Add(30*time.Second))
		if bs := e.backupsOf(p); len(bs) != 0 {
			t.Fatalf("fired before its time: %+v", bs)
		}

		// Down for ten fire times.
		back := t0.Add(10 * time.Minute)
		e.tick(nil, back)
		bs := e.backupsOf(p)
		if len(bs) != 1 {
			t.Fatalf("%d backups after ten missed fire times, want 1", len(bs))
		}
		b := bs[0]
		if b.Trigger != coffer.TriggerSchedule || b.CreatedBy != "" || b.State != coffer.JobQueued || b.ClientID != e.client.ID ||
			b.Paths[0] != "/srv/hourly" {
			t.Fatalf("fired backup = %+v", b)
		}
		next := back.Truncate(time.Minute).Add(time.Minute)
		e.wantNext(p, &next)
		f := e.firing(p)
		if f.LastOutcome != coffer.FireOutcomeFired || f.LastBackupID != b.ID || f.LastFiredAt == nil || !f.LastFiredAt.Equal(back) {
			t.Fatalf("firing after the catch-up = %+v", f)
		}
		fired := e.events.with(scheduler.EventFired)
		if len(fired) != 1 || fired[0].Level != coffer.LevelInfo || fired[0].Resource != (coffer.ResourceRef{Type: "plan", ID: p.ID}) ||
			!mentions(fired[0], b.ID, "09:01:00Z") || fired[0].Actor != "system" {
			t.Fatalf("plan.fired events = %+v", fired)
		}
		e.finish(b.ID)

		// The same tick again, or a restarted scheduler, fires nothing more.
		e.tick(nil, back)
		e.tick(e.newScheduler(db), back.Add(time.Second))
		if bs := e.backupsOf(p); len(bs) != 1 {
			t.Fatalf("%d backups after re-ticking, want 1", len(bs))
		}
		// The restarted one fires the next time, once.
		restarted := e.newScheduler(db)
		e.tick(restarted, next)
		e.tick(restarted, next.Add(time.Second))
		e.tick(nil, next.Add(2*time.Second))
		if bs := e.backupsOf(p); len(bs) != 2 {
			t.Fatalf("%d backups after the next fire time, want 2", len(bs))
		}
	})
}

// TestSkipWhileActive: while a plan's backup is queued (its agent is
// offline) or running, its fires are skipped and recorded, and reported
// once; the queued backup's command waits for the agent; after a long
// absence the plan has still one backup.
func TestSkipWhileActive(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		e := newEnv(t, db)
		p := e.plan("often", "* * * * * ?") // every second
		e.tick(nil, t0)
		e.tick(nil, t0.Add(time.Second))
		bs := e.backupsOf(p)
		if len(bs) != 1 {
			t.Fatalf("%d backups, want 1", len(bs))
		}
		first := bs[0].ID
		cmds, err := db.PendingCommands(ctx, e.client.ID, 0)
		if err != nil || len(cmds) != 1 || cmds[0].Kind != protocol.CommandBackup {
			t.Fatalf("pending commands of the offline client = %+v, %v", cmds, err)
		}

		// Queued, then running: every due fire is skipped.
		for i := 2; i <= 4; i++ {
			e.tick(nil, t0.Add(time.Duration(i)*time.Second))
		}
		if _, err := db.StartBackup(ctx, first, e.client.ID, "", ""); err != nil {
			t.Fatal(err)
		}
		e.tick(nil, t0.Add(5*time.Second))
		// Away for an hour: one more skip, not 3600.
		e.tick(nil, t0.Add(time.Hour))
		// Each skip is recorded on the plan; the first one for the backup
		// is an event.
		skipped := e.events.with(scheduler.EventFireSkipped)
		if len(skipped) != 1 {
			t.Fatalf("%d plan.fire_skipped events, want 1", len(skipped))
		}
		for _, ev := range skipped {
			if ev.Level != coffer.LevelWarning || !mentions(ev, first) || ev.Resource.ID != p.ID {
				t.Fatalf("skip event = %+v", ev)
			}
		}
		f := e.firing(p)
		if f.LastOutcome != coffer.FireOutcomeSkipped || f.LastBackupID != first || !f.LastFiredAt.Equal(t0.Add(time.Hour)) {
			t.Fatalf("firing after skips = %+v", f)
		}
		if bs := e.backupsOf(p); len(bs) != 1 {
			t.Fatalf("%d backups while one was active, want 1", len(bs))
		}

		// Once it ends, the next fire queues the next backup.
		if _, err := db.FinishBackup(ctx, first, metadb.BackupFinish{State: coffer.JobSucceeded}); err != nil {
			t.Fatal(err)
		}
		e.tick(nil, t0.Add(time.Hour+time.Second))
		if bs := e.backupsOf(p); len(bs) != 2 || bs[1].State != coffer.JobQueued {
			t.Fatalf("backups after the first ended: %+v", bs)
		}
		if f := e.firing(p); f.LastOutcome != coffer.FireOutcomeFired {
			t.Fatalf("firing = %+v", f)
		}
		// A skip for that one is reported anew.
		e.tick(nil, t0.Add(time.Hour+2*time.Second))
		e.tick(nil, t0.Add(time.Hour+3*time.Second))
		skipped = e.events.with(scheduler.EventFireSkipped)
		if len(skipped) != 2 || !mentions(skipped[1], e.backupsOf(p)[1].ID) {
			t.Fatalf("skip events = %+v", skipped)
		}
	})
}

// TestDisabledPlans: a disabled plan, or one run by hand only, never
// fires; enabling it counts its fire times from then, without catching up.
func TestDisabledPlans(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		off := e.plan("off", "0 * * * * ?", func(p *coffer.Plan) { p.Enabled = false })
		manual := e.plan("manual", "")
		e.tick(nil, t0)
		e.wantNext(off, nil)
		e.wantNext(manual, nil)
		e.tick(nil, t0.Add(time.Hour))
		if n := len(e.backupsOf(off)) + len(e.backupsOf(manual)); n != 0 {
			t.Fatalf("%d backups of plans that do not fire", n)
		}

		// Enabled at 10:00:30.5: the next fire is 10:01, nothing before.
		off.Enabled = true
		e.update(off)
		e.tick(nil, t0.Add(time.Hour+30*time.Second))
		next := t0.Truncate(time.Minute).Add(61 * time.Minute)
		e.wantNext(off, &next)
		if n := len(e.backupsOf(off)); n != 0 {
			t.Fatalf("%d backups when enabled, want 0", n)
		}
		e.tick(nil, next)
		if n := len(e.backupsOf(off)); n != 1 {
			t.Fatalf("%d backups at the first fire time after enabling, want 1", n)
		}

		// Disabled between its fire times: it stops.
		off.Enabled = false
		e.update(off)
		e.tick(nil, next.Add(2*time.Minute))
		if n := len(e.backupsOf(off)); n != 1 {
			t.Fatalf("%d backups after disabling, want 1", n)
		}
		e.wantNext(off, nil)
	})
}

// TestWindow: a plan fires only within start_at/end_at (both inclusive);
// a fire time claimed long after end_at, once the server is back, is
// dropped.
func TestWindow(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		start, end := t0.Truncate(time.Minute).Add(30*time.Minute), t0.Truncate(time.Minute).Add(32*time.Minute)
		w := e.plan("window", "0 * * * * ?", func(p *coffer.Plan) { p.StartAt, p.EndAt = &start, &end })
		e.tick(nil, t0)
		e.wantNext(w, &start)
		e.tick(nil, start.Add(-time.Second))
		if n := len(e.backupsOf(w)); n != 0 {
			t.Fatalf("%d backups before start_at", n)
		}
		for i, tick := range []time.Time{start, start.Add(time.Minute), end} {
			e.tick(nil, tick.Add(time.Millisecond))
			bs := e.backupsOf(w)
			if len(bs) != i+1 {
				t.Fatalf("tick %d: %d backups, want %d", i, len(bs), i+1)
			}
			e.finish(bs[i].ID)
		}
		e.wantNext(w, nil)
		e.tick(nil, end.Add(time.Hour))
		if n := len(e.backupsOf(w)); n != 3 {
			t.Fatalf("%d backups after end_at, want 3", n)
		}

		// Missed inside the window, handled well after it (the server was
		// down): not fired.
		start2, end2 := end.Add(time.Hour), end.Add(time.Hour+2*time.Minute)
		late := e.plan("late", "0 * * * * ?", func(p *coffer.Plan) { p.StartAt, p.EndAt = &start2, &end2 })
		e.tick(nil, end.Add(time.Hour-time.Second))
		e.wantNext(late, &start2)
		e.tick(nil, end2.Add(scheduler.EndAtGrace+time.Second))
		if n := len(e.backupsOf(late)); n != 0 {
			t.Fatalf("%d backups of a fire handled after end_at, want 0", n)
		}
		e.wantNext(late, nil)
	})
}

// TestClientDeleted: a plan whose client was deleted fails its fire once,
// then fires no more until it names another client.
func TestClientDeleted(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		e := newEnv(t, db)
		p := e.plan("orphan", "0 * * * * ?")
		e.tick(nil, t0)
		if _, err := db.DeleteClient(ctx, e.client.ID); err != nil {
			t.Fatal(err)
		}
		for m := 1; m <= 5; m++ {
			e.tick(nil, t0.Add(time.Duration(m)*time.Minute))
		}
		failed := e.events.with(scheduler.EventFireFailed)
		if len(failed) != 1 || failed[0].Level != coffer.LevelError || !mentions(failed[0], e.client.ID, "deleted") {
			t.Fatalf("plan.fire_failed events = %+v, want one naming the deleted client", failed)
		}
		if f := e.firing(p); f.LastOutcome != coffer.FireOutcomeFailed || f.NextFireAt != nil || !mentions(coffer.Event{Message: f.LastMessage}, "deleted") {
			t.Fatalf("firing = %+v", f)
		}
		if n := len(e.backupsOf(p)); n != 0 {
			t.Fatalf("%d backups of a deleted client's plan", n)
		}

		// Given another client, it fires again.
		other := e.enroll("host-b")
		p.ClientID = other.ID
		e.update(p)
		now := t0.Add(5*time.Minute + 10*time.Second)
		e.tick(nil, now)
		next := now.Truncate(time.Minute).Add(time.Minute)
		e.wantNext(p, &next)
		e.tick(nil, next)
		if bs := e.backupsOf(p); len(bs) != 1 || bs[0].ClientID != other.ID {
			t.Fatalf("backups after the plan moved: %+v", bs)
		}
	})
}

// hookStore runs afterClaim between a claim and its fires, and fails
// claims while claimErr is set.
type hookStore struct {
	*metadb.DB
	afterClaim func(due []metadb.DueFire)

	mu       sync.Mutex
	claimErr error
}

func (h *hookStore) failClaims(err error) {
	h.mu.Lock()
	h.claimErr = err
	h.mu.Unlock()
}

func (h *hookStore) ClaimDueFires(ctx context.Context, now time.Time, limit int, advance func(metadb.ScheduleKey) *time.Time) ([]metadb.DueFire, error) {
	h.mu.Lock()
	err := h.claimErr
	h.mu.Unlock()
	if err != nil {
		return nil, err
	}
	due, err := h.DB.ClaimDueFires(ctx, now, limit, advance)
	if err == nil && h.afterClaim != nil {
		h.afterClaim(due)
	}
	return due, err
}

// TestChangedBetweenClaimAndFire: a plan deleted or edited after its fire
// was claimed does not fire.
func TestChangedBetweenClaimAndFire(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		e := newEnv(t, db)
		gone, edited, kept := e.plan("gone", "0 * * * * ?"), e.plan("edited", "0 * * * * ?"), e.plan("kept", "0 * * * * ?")
		hooks := &hookStore{DB: db}
		s := e.newScheduler(hooks)
		e.tick(s, t0)
		hooks.afterClaim = func(due []metadb.DueFire) {
			if len(due) != 3 {
				t.Errorf("claimed %d plans, want 3", len(due))
			}
			if _, err := db.DeletePlan(ctx, gone.ID); err != nil {
				t.Error(err)
			}
			edited.Enabled = false
			if err := db.UpdatePlan(ctx, edited); err != nil {
				t.Error(err)
			}
			hooks.afterClaim = nil
		}
		e.tick(s, t0.Add(time.Minute))
		if n := len(e.backupsOf(gone)) + len(e.backupsOf(edited)); n != 0 {
			t.Fatalf("%d backups of plans changed after the claim", n)
		}
		if n := len(e.backupsOf(kept)); n != 1 {
			t.Fatalf("%d backups of the unchanged plan, want 1", n)
		}
		e.wantNext(edited, nil)
	})
}

// fireCounter is a Backups that counts fires per plan, without the
// one-backup-per-plan rule, so that a double fire would show.
type fireCounter struct {
	mu    sync.Mutex
	clock *clock
	fires map[string][]time.Time
}

func (f *fireCounter) FirePlan(_ context.Context, p *coffer.Plan) (*coffer.Backup, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fires[p.ID] = append(f.fires[p.ID], f.clock.Now())
	return &coffer.Backup{ID: ulid.Make().String(), PlanID: p.ID, State: coffer.JobQueued, Trigger: coffer.TriggerSchedule}, nil
}

// TestTwoSchedulers: two schedulers over one database, each with its own
// connection pool as two server processes would have, ticking at the same
// moments of a fake clock, fire each fire time exactly once.
func TestTwoSchedulers(t *testing.T) {
	// Many plans claimed two at a time make the schedulers' claims
	// overlap: without FOR UPDATE SKIP LOCKED this fails on PostgreSQL
	// with hundreds of double fires. SQLite runs one writer at a time; its
	// variant is smaller because each of its commits is synced to disk.
	for _, tc := range []struct {
		d     metadb.Dialect
		plans int
	}{{metadb.Postgres, 40}, {metadb.SQLite, 8}} {
		d := tc.d
		t.Run(string(d), func(t *testing.T) {
			ctx := context.Background()
			url := metadbtest.URL(t, d)
			var dbs [2]*metadb.DB
			c := &clock{t: t0}
			for i := range dbs {
				db, err := metadb.Open(ctx, metadb.Options{URL: url})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { db.Close() })
				if err := db.Migrate(ctx, nil); err != nil {
					t.Fatal(err)
				}
				db.Now = c.Now
				dbs[i] = db
			}
			counter := &fireCounter{clock: c, fires: map[string][]time.Time{}}
			var scheds [2]*scheduler.Scheduler
			for i := range scheds {
				scheds[i] = scheduler.New(scheduler.Options{Store: dbs[i], Backups: counter, Now: c.Now, Batch: 2})
			}
			want := map[string]int{}
			for i := range tc.plans {
				sched, n := "* * * * * ?", 30 // every second: 09:00:01 … 09:00:30
				if i%3 == 0 {
					sched, n = "*/3 * * * * ?", 10 // 09:00:03 … 09:00:30
				}
				p := &coffer.Plan{Name: fmt.Sprint("p", i), ClientID: "client", Schedule: sched, Include: []string{"/"}, Enabled: true}
				if err := dbs[i%2].CreatePlan(ctx, p); err != nil {
					t.Fatal(err)
				}
				want[p.ID] = n
			}
			// 61 steps of 0.5 s from 09:00:00.5 to 09:00:30.5; both tick at each.
			for step := range 61 {
				c.Set(t0.Add(time.Duration(step) * 500 * time.Millisecond))
				var wg sync.WaitGroup
				for _, s := range scheds {
					wg.Go(func() {
						if err := s.Tick(ctx); err != nil {
							t.Errorf("step %d: %v", step, err)
						}
					})
				}
				wg.Wait()
			}
			for id, n := range want {
				fires := counter.fires[id]
				if len(fires) != n {
					t.Errorf("plan %s fired %d times, want %d", id, len(fires), n)
				}
				seen := map[time.Time]bool{}
				for _, f := range fires {
					if seen[f] {
						t.Errorf("plan %s fired twice at %s", id, f.Format(time.RFC3339Nano))
					}
					seen[f] = true
				}
			}
		})
	}
}

// TestRunAndHealth: Run ticks until its context ends; Healthy follows the
// ticks.
func TestRunAndHealth(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		hooks := &hookStore{DB: db}
		s := e.newScheduler(hooks)
		if err := s.Healthy(context.Background()); err == nil {
			t.Fatal("healthy before it runs")
		}
		p := e.plan("run", "0 * * * * ?")
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx, 5*time.Millisecond) }()
		waitFor(t, func() bool { return e.firing(p).NextFireAt != nil })
		e.clock.Set(t0.Add(time.Minute))
		waitFor(t, func() bool { return len(e.backupsOf(p)) == 1 })
		// The tick that queued the backup records its success when it
		// ends, a moment after the backup is visible.
		waitFor(t, func() bool { return s.Healthy(context.Background()) == nil })

		// Failing ticks after a recent success: degraded.
		hooks.failClaims(errors.New("database gone"))
		waitFor(t, func() bool {
			var de *health.DegradedError
			return errors.As(s.Healthy(context.Background()), &de)
		})
		// No success for longer than HealthyWithin: unavailable.
		e.clock.Add(time.Minute)
		waitFor(t, func() bool {
			var de *health.DegradedError
			err := s.Healthy(context.Background())
			return err != nil && !errors.As(err, &de)
		})
		hooks.failClaims(nil)
		waitFor(t, func() bool { return s.Healthy(context.Background()) == nil })
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run = %v", err)
		}
		if n := len(e.backupsOf(p)); n != 1 {
			t.Fatalf("%d backups, want 1", n)
		}
	})
}

// waitFor polls cond until it holds, failing the test after a generous
// deadline.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 30 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
