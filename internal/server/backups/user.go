package backups

import (
	"context"
	"fmt"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/protocol"
)

// Get returns backup id.
func (s *Service) Get(ctx context.Context, id string) (*coffer.Backup, error) {
	return s.store.GetBackup(ctx, id)
}

// List returns backups matching f, newest first (see metadb.BackupFilter).
func (s *Service) List(ctx context.Context, f metadb.BackupFilter) ([]coffer.Backup, error) {
	return s.store.ListBackups(ctx, f)
}

// CountByState counts the backups created at or after since, by state.
func (s *Service) CountByState(ctx context.Context, since time.Time) (map[coffer.JobState]int, error) {
	return s.store.CountBackupsByState(ctx, since)
}

// AdHoc is a backup a person asks a client to run now.
type AdHoc struct {
	Paths         []string // absolute paths on the client
	Exclude       []string // gitignore-style patterns
	Full          bool     // re-read every file
	OneFileSystem bool
}

// RunAdHoc queues a backup of req.Paths on client clientID and sends its
// agent the command to run it. The trigger is api for an API token and
// manual otherwise. An unknown client is coffer.KindNotFound
// "client_not_found"; p must be allowed to act on the client
// (coffer.Principal.MayOperate: "client_not_owned" for an operator who
// does not own it).
func (s *Service) RunAdHoc(ctx context.Context, p *coffer.Principal, clientID string, req AdHoc) (*coffer.Backup, error) {
	if err := validatePaths(req.Paths); err != nil {
		return nil, err
	}
	if err := validateExcludes(req.Exclude); err != nil {
		return nil, err
	}
	c, err := s.clients.GetClient(ctx, clientID)
	if err != nil {
		return nil, err
	}
	if err := p.MayOperate(c); err != nil {
		return nil, err
	}
	return s.queue(ctx, p, c, "", "", req)
}

// mayOperate checks that p may act on client id (coffer.Principal.MayOperate).
// A client deleted since its backups ran has no owner any more: only
// admins act on them.
func (s *Service) mayOperate(ctx context.Context, p *coffer.Principal, id string) error {
	return coffer.MayOperateClient(ctx, s.clients, p, id)
}

// RunPlan queues a backup of plan now, as its "run now" does: the plan's
// include paths, excludes and one_file_system setting, on its client. The
// caller has checked that p may act on the plan's client (the plans
// service does).
// With full_every N, a backup is full (every file re-read, the change
// cache ignored) when none of the plan's last N-1 finished backups was.
// A plan runs one backup at a time: while one is queued or running, this
// is coffer.KindConflict "plan_backup_active" naming it (metadata
// backup_id).
func (s *Service) RunPlan(ctx context.Context, p *coffer.Principal, plan *coffer.Plan) (*coffer.Backup, error) {
	full, err := s.fullDue(ctx, plan)
	if err != nil {
		return nil, err
	}
	c, err := s.clients.GetClient(ctx, plan.ClientID)
	if err != nil {
		return nil, err
	}
	return s.queue(ctx, p, c, plan.ID, plan.RepositoryID, AdHoc{Paths: plan.Include, Exclude: plan.Exclude, Full: full,
		OneFileSystem: plan.OneFileSystem})
}

// FirePlan queues a backup of plan because its schedule fired: as RunPlan,
// with trigger schedule and no creator, the server the actor of its
// events. Its errors are RunPlan's: "plan_backup_active" while a backup of
// the plan is queued or running, "client_not_found" once its client was
// deleted.
func (s *Service) FirePlan(ctx context.Context, plan *coffer.Plan) (*coffer.Backup, error) {
	return s.RunPlan(ctx, nil, plan)
}

// fullDue reports whether plan's next backup must re-read every file.
func (s *Service) fullDue(ctx context.Context, plan *coffer.Plan) (bool, error) {
	switch {
	case plan.FullEvery <= 0:
		return false, nil
	case plan.FullEvery == 1:
		return true, nil // every backup is full (and Limit 0 below would mean no limit)
	}
	recent, err := s.store.ListBackups(ctx, metadb.BackupFilter{PlanID: plan.ID,
		States: []coffer.JobState{coffer.JobSucceeded, coffer.JobPartial}, Limit: plan.FullEvery - 1})
	if err != nil {
		return false, err
	}
	for _, b := range recent {
		if b.Full {
			return false, nil
		}
	}
	return true, nil
}

// queue records a queued backup of client c (for plan planID, or ad hoc)
// into repository repositoryID ("" for the default one) and orders its
// agent to run it. p is nil when a plan's schedule fired.
func (s *Service) queue(ctx context.Context, p *coffer.Principal, c *coffer.Client, planID, repositoryID string, req AdHoc) (*coffer.Backup, error) {
	repo, err := s.repos.Get(ctx, repositoryID)
	if err != nil {
		return nil, err
	}
	repositoryID = repo.Config().ID
	trigger, createdBy := coffer.TriggerSchedule, ""
	if p != nil {
		trigger, createdBy = coffer.TriggerManual, p.UserID
		if p.Kind == coffer.PrincipalAPIToken {
			trigger = coffer.TriggerAPI
		}
	}
	b := &coffer.Backup{ClientID: c.ID, PlanID: planID, RepositoryID: repositoryID, Trigger: trigger, State: coffer.JobQueued,
		Paths: req.Paths, Exclude: orEmpty(req.Exclude), Full: req.Full, OneFS: req.OneFileSystem, HostName: c.Hostname,
		CreatedBy: createdBy}
	if err := s.store.CreateBackup(ctx, b); err != nil {
		return nil, err
	}
	if _, err := s.commands.Enqueue(ctx, c.ID, protocol.Command{Kind: protocol.CommandBackup,
		Backup: &protocol.BackupCommand{BackupID: b.ID}}); err != nil {
		// Without its command the backup would wait forever.
		reason := "the server could not queue the command for the agent"
		if failed, ferr := s.store.FinishBackup(context.WithoutCancel(ctx), b.ID, metadb.BackupFinish{State: coffer.JobFailed, Error: reason}); ferr != nil {
			s.log.Error("fail a backup whose command was not queued", "backup_id", b.ID, "err", ferr)
		} else {
			s.publishFinished(ctx, userActor(p), failed)
		}
		return nil, fmt.Errorf("queue backup %s for client %s: %w", b.ID, c.ID, err)
	}
	s.publish(ctx, userActor(p), b, EventQueued, coffer.LevelInfo, "Backup queued", fmt.Sprintf("The %s was queued.", what(b)))
	return b, nil
}

// Cancel cancels backup id: a queued backup ends at once; a running one is
// marked, and its agent is told to stop (it learns it from its command
// stream, or else from its next progress report) and then reports it
// canceled. A backup that already ended is coffer.KindConflict
// "backup_finished". p must be allowed to act on the backup's client
// (coffer.Principal.MayOperate).
func (s *Service) Cancel(ctx context.Context, p *coffer.Principal, id string) (*coffer.Backup, error) {
	b, err := s.store.GetBackup(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := s.mayOperate(ctx, p, b.ClientID); err != nil {
		return nil, err
	}
	b, err = s.store.RequestBackupCancel(ctx, id)
	if err != nil {
		return nil, err
	}
	switch {
	case b.State == coffer.JobCanceled:
		s.endSession(ctx, b)
		s.publish(ctx, userActor(p), b, EventCanceled, coffer.LevelWarning, "Backup canceled",
			fmt.Sprintf("The %s was canceled before it started.", what(b)))
	case b.State == coffer.JobRunning && b.CancelRequested:
		if _, err := s.commands.Enqueue(ctx, b.ClientID, protocol.Command{Kind: protocol.CommandCancel,
			Cancel: &protocol.CancelCommand{JobID: b.ID}}); err != nil {
			s.log.Warn("queue cancel command; the agent learns of the cancel at its next progress report",
				"backup_id", b.ID, "client_id", b.ClientID, "err", err)
		}
		s.publish(ctx, userActor(p), b, EventCancelRequested, coffer.LevelInfo, "Backup cancel requested",
			fmt.Sprintf("Cancel of the %s was requested; the agent stops it.", what(b)))
	}
	return b, nil
}

// Maintain fails running backups whose agent has not reported progress
// for StaleAfter, ending their write sessions, and backups that waited
// queued for QueuedTTL (a queued backup of an offline client waits for it
// until then). The server calls it periodically (every minute or so);
// several replicas may.
func (s *Service) Maintain(ctx context.Context) error {
	now := s.now()
	s.pruneRenewals(now)
	reason := fmt.Sprintf("the agent sent no progress for %v: it stopped, crashed or lost its connection", s.staleAfter)
	stale, err := s.store.FailStaleBackups(ctx, now.Add(-s.staleAfter), reason)
	if err != nil {
		return fmt.Errorf("fail stale backups: %w", err)
	}
	for i := range stale {
		b := &stale[i]
		s.log.Warn("backup failed: no progress", "backup_id", b.ID, "client_id", b.ClientID)
		s.endSession(ctx, b)
		s.publishFinished(ctx, systemActor, b)
	}
	reason = fmt.Sprintf("the client's agent did not start it within %v of it being queued: it was offline or lost the command", s.queuedTTL)
	expired, err := s.store.FailQueuedBackups(ctx, now.Add(-s.queuedTTL), reason)
	if err != nil {
		return fmt.Errorf("fail expired queued backups: %w", err)
	}
	for i := range expired {
		s.log.Warn("backup failed: never started", "backup_id", expired[i].ID, "client_id", expired[i].ClientID)
		s.publishFinished(ctx, systemActor, &expired[i])
	}
	return nil
}
