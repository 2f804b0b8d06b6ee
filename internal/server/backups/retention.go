package backups

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/retention"
	"github.com/cofferhq/coffer/internal/server/throttle"
)

// The retention runner applies each plan's retention policy (package
// retention) to the plan's finished backups and forgets those it lets go,
// with an event naming the rule. It runs
//
//   - after a backup of a plan commits: Commit marks the backup in the
//     store (in the same update that ends it) and wakes RunRetention, which
//     applies the plan's retention and clears the mark. The mark makes this
//     reliable: a mark left by a replica that stopped, or by a run that
//     failed, is picked up within RetentionPoll by any replica;
//   - every RetentionEvery (daily), for every plan, so that hold_days and
//     keep_within expire with time.
//
// Every replica may run it at once: decisions depend only on the stored
// backups and the time, forgetting a snapshot twice is harmless, and of two
// deletes of one record one wins (only it publishes the event). A stale
// view never forgets more than a fresh one: a newer backup only ever
// releases older ones.
//
// What it considers: the plan's finished backups. Succeeded and partial
// ones hold a snapshot and count for the keep rules. Failed and canceled
// ones hold none; they are history, not data, and retention.Apply lets
// them go unless held. The runner keeps those that are newer than the
// oldest backup it keeps — they explain the recent history of the plan,
// e.g. why there is no newer backup — and forgets the older ones (their
// record only). A plan whose retention sets nothing keeps everything;
// ad-hoc backups and those of deleted plans are never touched; the newest
// successful backup is always kept. A backup a restore is reading is
// skipped and tried again on the next run.

// records is the state of a Service for retention and progress events.
type records struct {
	retentionEvery time.Duration
	retentionPoll  time.Duration
	retentionKick  chan struct{} // a plan's backup committed: run the due retention
	progress       *throttle.Throttle
}

// newRecords applies the defaults of opts' RetentionEvery, RetentionPoll
// and ProgressEvery.
func newRecords(opts Options) records {
	r := records{retentionEvery: opts.RetentionEvery, retentionPoll: opts.RetentionPoll,
		retentionKick: make(chan struct{}, 1)}
	if r.retentionEvery <= 0 {
		r.retentionEvery = 24 * time.Hour
	}
	if r.retentionPoll <= 0 {
		r.retentionPoll = time.Minute
	}
	every := opts.ProgressEvery
	if every <= 0 {
		every = 5 * time.Second
	}
	r.progress = throttle.New(every)
	return r
}

// RetentionResult is what one run of a plan's retention did.
type RetentionResult struct {
	PlanID string
	// Kept lists the backups kept, Forgotten those this run forgot, newest
	// first. Skipped lists those retention let go that could not be
	// forgotten now (a restore reads them, or forgetting failed): the next
	// run tries again.
	Kept, Forgotten, Skipped []string
}

// RunRetention applies retention until ctx ends, then returns nil: every
// plan's at once and each RetentionEvery, and the due plans' when a plan's
// backup commits on this replica and each RetentionPoll. Failures are
// logged; the marks of the due plans stay until a run succeeds.
func (s *Service) RunRetention(ctx context.Context) error {
	poll := time.NewTicker(s.retentionPoll)
	defer poll.Stop()
	var lastAll time.Time
	for {
		var err error
		if now := s.now(); lastAll.IsZero() || now.Sub(lastAll) >= s.retentionEvery {
			lastAll = now
			err = s.ApplyAllRetention(ctx)
		} else {
			err = s.ApplyDueRetention(ctx)
		}
		if err != nil && ctx.Err() == nil {
			s.log.Warn("retention", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-poll.C:
		case <-s.retentionKick:
		}
	}
}

// retentionDue wakes RunRetention for a plan's backup that committed (the
// store holds its mark, so a missed wake-up only delays the run).
func (s *Service) retentionDue(b *coffer.Backup) {
	if b.PlanID == "" {
		return
	}
	select {
	case s.retentionKick <- struct{}{}:
	default:
	}
}

// ApplyDueRetention applies the retention of the plans with a backup that
// committed since their retention last ran.
func (s *Service) ApplyDueRetention(ctx context.Context) error {
	due, err := s.store.RetentionDue(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, planID := range sortedKeys(due) {
		if _, err := s.applyRetentionOf(ctx, planID, due[planID]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ApplyAllRetention applies every plan's retention.
func (s *Service) ApplyAllRetention(ctx context.Context) error {
	due, err := s.store.RetentionDue(ctx)
	if err != nil {
		return err
	}
	plans, _, err := s.store.ListPlans(ctx, metadb.PlanFilter{})
	if err != nil {
		return fmt.Errorf("retention: list plans: %w", err)
	}
	var errs []error
	for i := range plans {
		pl := &plans[i]
		if _, err := s.applyRetention(ctx, pl, due[pl.ID]); err != nil {
			errs = append(errs, err)
		}
		delete(due, pl.ID)
	}
	for _, planID := range sortedKeys(due) { // marks of plans deleted meanwhile
		if _, err := s.applyRetentionOf(ctx, planID, due[planID]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ApplyRetention applies plan planID's retention now ("plan_not_found"
// for an unknown plan).
func (s *Service) ApplyRetention(ctx context.Context, planID string) (*RetentionResult, error) {
	pl, err := s.store.GetPlan(ctx, planID)
	if err != nil {
		return nil, err
	}
	due, err := s.store.RetentionDue(ctx)
	if err != nil {
		return nil, err
	}
	return s.applyRetention(ctx, pl, due[planID])
}

// applyRetentionOf is applyRetention for a plan known by id; the marks of
// a plan that no longer exists are cleared.
func (s *Service) applyRetentionOf(ctx context.Context, planID string, due []string) (*RetentionResult, error) {
	pl, err := s.store.GetPlan(ctx, planID)
	if coffer.IsKind(err, coffer.KindNotFound) {
		return &RetentionResult{PlanID: planID}, s.store.ClearRetentionDue(ctx, due)
	}
	if err != nil {
		return nil, fmt.Errorf("retention of plan %s: %w", planID, err)
	}
	return s.applyRetention(ctx, pl, due)
}

// applyRetention applies pl's retention to its finished backups and clears
// the marks due (read before the backups are listed, so every marked
// backup is among them) when nothing was left for a later run.
func (s *Service) applyRetention(ctx context.Context, pl *coffer.Plan, due []string) (*RetentionResult, error) {
	res := &RetentionResult{PlanID: pl.ID}
	policy := policyOf(pl)
	if policy.IsZero() {
		return res, s.store.ClearRetentionDue(ctx, due)
	}
	loc := planLocation(pl)
	bs, err := s.store.ListBackups(ctx, metadb.BackupFilter{PlanID: pl.ID,
		States: []coffer.JobState{coffer.JobSucceeded, coffer.JobPartial, coffer.JobFailed, coffer.JobCanceled}})
	if err != nil {
		return nil, fmt.Errorf("retention of plan %s: %w", pl.ID, err)
	}
	byID := make(map[string]*coffer.Backup, len(bs))
	in := make([]retention.Backup, len(bs))
	for i := range bs {
		b := &bs[i]
		byID[b.ID] = b
		in[i] = retention.Backup{ID: b.ID, Time: finishedAt(b), Succeeded: hasSnapshot(b)}
	}
	decisions := retention.Apply(policy, in, s.now(), loc)
	var oldestKept *time.Time // the oldest successful backup kept
	for i := range decisions {
		if d := &decisions[i]; d.Keep && d.Backup.Succeeded {
			oldestKept = &d.Backup.Time
		}
	}
	var errs []error
	for _, d := range slices.Backward(decisions) { // oldest first
		id := d.Backup.ID
		if d.Keep || !d.Backup.Succeeded && (oldestKept == nil || d.Backup.Time.After(*oldestKept)) {
			res.Kept = append(res.Kept, id)
			continue
		}
		why := retention.Why(policy, d, loc)
		if !d.Backup.Succeeded {
			why = "it is older than every backup the plan keeps; " + why
		}
		forgotten, err := s.retentionForget(ctx, pl, byID[id], why)
		switch {
		case err != nil:
			errs = append(errs, err)
			res.Skipped = append(res.Skipped, id)
		case forgotten:
			res.Forgotten = append(res.Forgotten, id)
		default:
			res.Skipped = append(res.Skipped, id)
		}
	}
	slices.Reverse(res.Kept)
	slices.Reverse(res.Forgotten)
	slices.Reverse(res.Skipped)
	if len(res.Skipped) == 0 {
		if err := s.store.ClearRetentionDue(ctx, due); err != nil {
			errs = append(errs, err)
		}
	}
	return res, errors.Join(errs...)
}

// retentionForget forgets b, which pl's retention let go for the reason
// why, and publishes the event. It reports false, without an error, for a
// backup a restore reads (tried again on the next run); a backup another
// replica forgot first counts as forgotten, without a second event.
func (s *Service) retentionForget(ctx context.Context, pl *coffer.Plan, b *coffer.Backup, why string) (bool, error) {
	if err := s.forgettable(ctx, b); err != nil {
		if coffer.ErrorCode(err) == "backup_restoring" {
			s.log.Info("retention: backup not forgotten while a restore reads it", "backup_id", b.ID, "plan_id", pl.ID)
			return false, nil
		}
		return false, fmt.Errorf("retention of plan %s: %w", pl.ID, err)
	}
	done, err := s.forget(ctx, b)
	if coffer.IsKind(err, coffer.KindNotFound) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("retention of plan %s: %w", pl.ID, err)
	}
	s.log.Info("retention forgot a backup", "backup_id", done.ID, "plan_id", pl.ID, "why", why)
	s.publish(ctx, systemActor, done, EventRetentionForgotten, coffer.LevelInfo, "Backup forgotten by retention",
		fmt.Sprintf("The %s of plan “%s” (%s, finished %s) was forgotten by retention: %s. %s",
			what(done), pl.Name, done.State, finishedAt(done).Format(time.RFC3339), why, freed(done)))
	return true, nil
}

// policyOf is the retention policy of plan pl.
func policyOf(pl *coffer.Plan) retention.Policy {
	r := pl.Retention
	return retention.Policy{KeepLast: r.KeepLast, KeepHourly: r.KeepHourly, KeepDaily: r.KeepDaily, KeepWeekly: r.KeepWeekly,
		KeepMonthly: r.KeepMonthly, KeepYearly: r.KeepYearly, KeepWithin: r.KeepWithin, HoldDays: r.HoldDays}
}

// planLocation is the time zone pl's calendar rules count in; UTC for
// none, or for a name this server cannot load (plans are validated when
// saved, so only a server without the zone database gets there).
func planLocation(pl *coffer.Plan) *time.Location {
	if pl.Timezone == "" {
		return time.UTC
	}
	loc, err := time.LoadLocation(pl.Timezone)
	if err != nil {
		return time.UTC
	}
	return loc
}

// finishedAt is when b ended (its last update for a record without an end).
func finishedAt(b *coffer.Backup) time.Time {
	if b.FinishedAt != nil {
		return *b.FinishedAt
	}
	return b.UpdatedAt
}

// hasSnapshot reports whether b committed a snapshot.
func hasSnapshot(b *coffer.Backup) bool {
	return (b.State == coffer.JobSucceeded || b.State == coffer.JobPartial) && b.SnapshotID != ""
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
