// Package scheduler fires backup plans on their schedules. The server is
// the source of truth for schedules (DESIGN §6): agents only run the
// backups it queues.
//
// Each plan's firing state lives in the metadata database (see
// metadb.ClaimDueFires): when it fires next, computed from its schedule,
// time zone, start_at/end_at window and enabled flag, and what came of its
// last fire. A tick first gives new and edited plans their next fire time,
// counted from now (so enabling a plan or widening its window never fires
// what was missed), then claims the plans that are due and fires them:
//
//   - Claiming moves a plan's next fire time to the first one after now, in
//     the transaction that claims it. A plan whose fire times passed while
//     no server ran fires once when one is back, not once per missed time,
//     and no fire time is claimed twice, by a restarted server or by two
//     servers sharing one PostgreSQL.
//   - A fire queues the plan's backup (trigger schedule). Its agent gets the
//     command when it is connected, or when it connects again, so an
//     offline client's fire waits as a queued backup and runs once.
//   - A plan runs one backup at a time: a fire while one is queued or
//     running is skipped and recorded in the plan's state; the first skip
//     for that backup is also an event (plan.fire_skipped), the next ones
//     are not, so that a long backup of a frequent plan does not flood the
//     event stream.
//   - A plan whose client was deleted fails its fire once (event
//     plan.fire_failed) and fires no more until it names another client.
//   - A claimed fire is lost, never doubled, if the server dies before it
//     queues the backup: the plan fires again at its next time.
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/schedule"
	"github.com/cofferhq/coffer/internal/server/health"
)

// Store is the part of the metadata store the scheduler uses
// (*metadb.DB). GetPlan fails with coffer.KindNotFound "plan_not_found".
type Store interface {
	UnscheduledPlans(ctx context.Context, limit int) ([]metadb.ScheduleKey, error)
	SetPlanSchedule(ctx context.Context, k metadb.ScheduleKey, next *time.Time) (bool, error)
	ClaimDueFires(ctx context.Context, now time.Time, limit int, advance func(metadb.ScheduleKey) *time.Time) ([]metadb.DueFire, error)
	RecordFire(ctx context.Context, k metadb.ScheduleKey, r metadb.FireRecord) error
	GetPlan(ctx context.Context, id string) (*coffer.Plan, error)
}

// Backups queues plans' backups (the backups service).
type Backups interface {
	// FirePlan queues a backup of plan with trigger schedule. It fails with
	// coffer.KindConflict "plan_backup_active" (metadata backup_id) while
	// one of the plan's backups is queued or running, and with
	// coffer.KindNotFound "client_not_found" when its client is gone.
	FirePlan(ctx context.Context, plan *coffer.Plan) (*coffer.Backup, error)
}

// Publisher records events.
type Publisher = coffer.Publisher

// The event codes of the scheduler.
const (
	EventFired       = "plan.fired"        // info: the plan's backup was queued
	EventFireSkipped = "plan.fire_skipped" // warning: a backup of the plan was still queued or running
	EventFireFailed  = "plan.fire_failed"  // error: the backup could not be queued
)

// DefaultInterval is how often Run ticks when given no interval.
const DefaultInterval = time.Second

// EndAtGrace is how late after a plan's end_at its last fire may still be
// handled. A fire time inside the window that comes due while no server
// runs, and is claimed only later than this after end_at, is dropped: the
// window bounds when the plan may fire.
const EndAtGrace = time.Minute

// Options configure a Scheduler. Zero values take the documented defaults.
type Options struct {
	Store   Store
	Backups Backups
	Events  Publisher
	Logger  *slog.Logger
	// Now returns the current time (default time.Now).
	Now func() time.Time
	// Batch is how many plans one transaction claims (default 100); a
	// tick claims batches until none is due.
	Batch int
	// HealthyWithin is how recent the last successful tick must be for
	// Healthy to report the scheduler working (default 30 s).
	HealthyWithin time.Duration
}

// Scheduler fires due plans. Its methods are safe for concurrent use;
// several Schedulers, in one process or in several sharing a database,
// never fire a plan's fire time twice.
type Scheduler struct {
	store         Store
	backups       Backups
	events        Publisher
	log           *slog.Logger
	now           func() time.Time
	batch         int
	healthyWithin time.Duration

	mu       sync.Mutex
	started  time.Time // when Run began (zero: not running)
	lastOK   time.Time // end of the last successful tick
	lastErr  error     // the last tick's error (nil: it succeeded)
	failures int       // ticks failed in a row
}

// New returns a Scheduler.
func New(opts Options) *Scheduler {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Batch <= 0 {
		opts.Batch = 100
	}
	if opts.HealthyWithin <= 0 {
		opts.HealthyWithin = 30 * time.Second
	}
	return &Scheduler{store: opts.Store, backups: opts.Backups, events: opts.Events, log: opts.Logger, now: opts.Now,
		batch: opts.Batch, healthyWithin: opts.HealthyWithin}
}

// Run ticks every interval (DefaultInterval when 0 or less) until ctx
// ends, and returns nil then. A failed tick is logged and retried at the
// next one.
func (s *Scheduler) Run(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		interval = DefaultInterval
	}
	s.mu.Lock()
	s.started = s.now()
	s.mu.Unlock()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := s.Tick(ctx); err != nil && ctx.Err() == nil {
			s.logFailure(err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// logFailure logs the first of a run of failed ticks as a warning and the
// rest at debug level, so that a database outage does not flood the log.
func (s *Scheduler) logFailure(err error) {
	s.mu.Lock()
	n := s.failures
	s.mu.Unlock()
	if n == 1 {
		s.log.Warn("scheduler tick failed; retrying every tick", "err", err)
	} else {
		s.log.Debug("scheduler tick failed", "failures", n, "err", err)
	}
}

// Tick gives new and edited plans their next fire time, then claims and
// fires every plan that is due now.
func (s *Scheduler) Tick(ctx context.Context) error {
	now := s.now()
	err := s.sync(ctx, now)
	if err == nil {
		err = s.fireDue(ctx, now)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.lastErr = err
		s.failures++
		return err
	}
	if s.failures > 0 {
		s.log.Info("scheduler ticks again", "after_failures", s.failures)
	}
	s.lastOK, s.lastErr, s.failures = s.now(), nil, 0
	return nil
}

// sync computes the next fire time of the plans that are new or whose
// schedule inputs changed, from now.
func (s *Scheduler) sync(ctx context.Context, now time.Time) error {
	for {
		keys, err := s.store.UnscheduledPlans(ctx, s.batch)
		if err != nil {
			return err
		}
		for _, k := range keys {
			next := s.nextFire(k, now)
			set, err := s.store.SetPlanSchedule(ctx, k, next)
			if err != nil {
				return err
			}
			if set {
				s.log.Debug("plan scheduled", "plan_id", k.PlanID, "next_fire_at", next)
			}
		}
		if len(keys) < s.batch {
			return nil
		}
	}
}

// nextFire returns the first fire time of plan k after now, inside its
// window, or nil if it will not fire.
func (s *Scheduler) nextFire(k metadb.ScheduleKey, now time.Time) *time.Time {
	if !k.Enabled || k.Schedule == "" {
		return nil
	}
	loc := time.UTC
	if k.Timezone != "" {
		l, err := time.LoadLocation(k.Timezone)
		if err != nil {
			s.log.Error("plan has a time zone this server does not know; it will not fire", "plan_id", k.PlanID,
				"timezone", k.Timezone, "err", err)
			return nil
		}
		loc = l
	}
	sched, err := schedule.Parse(k.Schedule, loc)
	if err != nil {
		s.log.Error("plan has a schedule this server cannot parse; it will not fire", "plan_id", k.PlanID,
			"schedule", k.Schedule, "err", err)
		return nil
	}
	times := sched.NextN(now, 1, schedule.Window{Start: k.StartAt, End: k.EndAt})
	if len(times) == 0 {
		return nil
	}
	t := times[0].UTC()
	return &t
}

// fireDue claims the due plans a batch at a time and fires them.
func (s *Scheduler) fireDue(ctx context.Context, now time.Time) error {
	for {
		due, err := s.store.ClaimDueFires(ctx, now, s.batch, func(k metadb.ScheduleKey) *time.Time { return s.nextFire(k, now) })
		if err != nil {
			return err
		}
		var errs []error
		for _, d := range due {
			// A claimed fire is the only chance of its fire time: finish it
			// even while the server shuts down.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			errs = append(errs, s.fire(fctx, d, now))
			cancel()
		}
		if err := errors.Join(errs...); err != nil {
			return err
		}
		if len(due) < s.batch || ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// fire queues the backup of one claimed fire and records what came of it.
func (s *Scheduler) fire(ctx context.Context, d metadb.DueFire, now time.Time) error {
	log := s.log.With("plan_id", d.Key.PlanID, "due_at", d.DueAt)
	plan, err := s.store.GetPlan(ctx, d.Key.PlanID)
	if coffer.ErrorCode(err) == "plan_not_found" {
		log.Info("plan deleted before its fire; not fired")
		return nil
	}
	if err != nil {
		return fmt.Errorf("read plan %s to fire it: %w", d.Key.PlanID, err)
	}
	if !d.Key.Matches(plan) {
		// Edited since: the next tick computes its fire times afresh.
		log.Info("plan changed before its fire; not fired")
		return nil
	}
	if plan.EndAt != nil && now.After(plan.EndAt.Add(EndAtGrace)) {
		log.Info("plan's window ended before its fire was handled; not fired", "end_at", plan.EndAt)
		return nil
	}
	rec := metadb.FireRecord{At: now}
	ev := &coffer.Event{Resource: coffer.ResourceRef{Type: "plan", ID: plan.ID}, Actor: "system", Audience: coffer.RoleViewer}
	due := d.DueAt.UTC().Format(time.RFC3339)
	b, err := s.backups.FirePlan(ctx, plan)
	var ce *coffer.Error
	errors.As(err, &ce)
	switch {
	case err == nil:
		rec.Outcome, rec.BackupID = coffer.FireOutcomeFired, b.ID
		rec.Message = fmt.Sprintf("Fired (due %s): backup %s queued.", due, b.ID)
		ev.Level, ev.Code, ev.Title = coffer.LevelInfo, EventFired, "Plan fired"
		ev.Message = fmt.Sprintf("%s fired (due %s): backup %s is queued for its client.", describe(plan), due, b.ID)
		log.Info("plan fired", "backup_id", b.ID)
	case ce != nil && ce.Code == "plan_backup_active":
		active, _ := ce.Meta["backup_id"].(string)
		rec.Outcome, rec.BackupID = coffer.FireOutcomeSkipped, active
		rec.Message = fmt.Sprintf("Skipped (due %s): backup %s was still queued or running.", due, active)
		if d.LastOutcome == coffer.FireOutcomeSkipped && d.LastBackupID == active {
			// Already reported for this backup: record the skip quietly.
			ev = nil
			log.Debug("plan fire skipped again: its backup is still active", "backup_id", active)
			break
		}
		ev.Level, ev.Code, ev.Title = coffer.LevelWarning, EventFireSkipped, "Plan fire skipped"
		ev.Message = fmt.Sprintf("%s was due at %s but its backup %s has not finished (a plan runs one backup at a time): "+
			"this fire is skipped, and so are its fires until that backup ends.", describe(plan), due, active)
		log.Warn("plan fire skipped: its backup is still active", "backup_id", active)
	case ce != nil && ce.Code == "client_not_found":
		rec.Outcome, rec.Stop = coffer.FireOutcomeFailed, true
		rec.Message = fmt.Sprintf("Not fired at %s: its client %s was deleted. It fires again once it names another client.",
			due, plan.ClientID)
		ev.Level, ev.Code, ev.Title = coffer.LevelError, EventFireFailed, "Plan fire failed"
		ev.Message = fmt.Sprintf("%s was due at %s but its client %s was deleted: it will not fire until it is given another client.",
			describe(plan), due, plan.ClientID)
		log.Warn("plan fire failed: its client was deleted; the plan stops firing", "client_id", plan.ClientID)
	default:
		why := "the server could not queue its backup (see the server log)"
		if ce != nil && ce.Kind != coffer.KindInternal {
			why = ce.Detail
		}
		rec.Outcome = coffer.FireOutcomeFailed
		rec.Message = fmt.Sprintf("Not fired at %s: %s.", due, why)
		ev.Level, ev.Code, ev.Title = coffer.LevelError, EventFireFailed, "Plan fire failed"
		ev.Message = fmt.Sprintf("%s was due at %s but did not fire: %s.", describe(plan), due, why)
		log.Error("plan fire failed", "err", err)
	}
	if ev != nil {
		s.publish(ctx, ev)
	}
	return s.store.RecordFire(ctx, d.Key, rec)
}

// publish records an event; a failure to record it is logged.
func (s *Scheduler) publish(ctx context.Context, e *coffer.Event) {
	coffer.Record(ctx, s.events, s.log, nil, e)
}

// describe names a plan in event messages.
func describe(p *coffer.Plan) string {
	return fmt.Sprintf("Plan “%s” (%s)", p.Name, p.ID)
}

// Healthy reports whether the scheduler works, for the health report: nil
// when it runs and a tick succeeded within HealthyWithin (or it started
// less than that ago), a health.DegradedError when the last tick failed
// after a recent success, and an error when no tick succeeded for
// HealthyWithin. The messages say what is wrong without internals (those
// are logged).
func (s *Scheduler) Healthy(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	switch {
	case s.started.IsZero():
		return errors.New("the scheduler is not running: plans do not fire")
	case !s.lastOK.IsZero() && now.Sub(s.lastOK) <= s.healthyWithin:
		if s.lastErr != nil {
			return &health.DegradedError{Reason: fmt.Sprintf("the scheduler's last %d ticks failed; it retries every tick", s.failures)}
		}
		return nil
	case s.lastOK.IsZero() && now.Sub(s.started) <= s.healthyWithin:
		return nil // starting up
	case s.lastOK.IsZero():
		return fmt.Errorf("the scheduler has not completed a tick since it started %s ago: plans do not fire",
			now.Sub(s.started).Round(time.Second))
	}
	return fmt.Errorf("the scheduler's last successful tick was %s ago: plans do not fire", now.Sub(s.lastOK).Round(time.Second))
}
