package backups

import (
	"context"
	"fmt"

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
// "client_not_found".
func (s *Service) RunAdHoc(ctx context.Context, p *coffer.Principal, clientID string, req AdHoc) (*coffer.Backup, error) {
	if err := validatePaths(req.Paths); err != nil {
		return nil, err
	}
	if err := validateExcludes(req.Exclude); err != nil {
		return nil, err
	}
	return s.queue(ctx, p, clientID, "", "", req)
}

// RunPlan queues a backup of plan now, as its "run now" does: the plan's
// include paths, excludes and one_file_system setting, on its client.
// With full_every N, a backup is full (every file re-read, the change
// cache ignored) when none of the plan's last N-1 finished backups was.
func (s *Service) RunPlan(ctx context.Context, p *coffer.Principal, plan *coffer.Plan) (*coffer.Backup, error) {
	full, err := s.fullDue(ctx, plan)
	if err != nil {
		return nil, err
	}
	return s.queue(ctx, p, plan.ClientID, plan.ID, plan.RepositoryID, AdHoc{Paths: plan.Include, Exclude: plan.Exclude, Full: full,
		OneFileSystem: plan.OneFileSystem})
}

// fullDue reports whether plan's next backup must re-read every file.
func (s *Service) fullDue(ctx context.Context, plan *coffer.Plan) (bool, error) {
	if plan.FullEvery <= 0 {
		return false, nil
	}
	recent, err := s.store.ListBackups(ctx, metadb.BackupFilter{PlanID: plan.ID,
		States: []coffer.JobState{coffer.JobSucceeded, coffer.JobPartial}, Limit: plan.FullEvery - 1})
	if err != nil {
		return false, err
	}
	if plan.FullEvery == 1 {
		return true, nil
	}
	for _, b := range recent {
		if b.Full {
			return false, nil
		}
	}
	return true, nil
}

// queue records a queued backup of clientID (for plan planID, or ad hoc)
// into repository repositoryID ("" for the default one) and orders its
// agent to run it.
func (s *Service) queue(ctx context.Context, p *coffer.Principal, clientID, planID, repositoryID string, req AdHoc) (*coffer.Backup, error) {
	c, err := s.clients.GetClient(ctx, clientID)
	if err != nil {
		return nil, err
	}
	repo, err := s.repos.Get(ctx, repositoryID)
	if err != nil {
		return nil, err
	}
	repositoryID = repo.Config().ID
	trigger := coffer.TriggerManual
	if p.Kind == coffer.PrincipalAPIToken {
		trigger = coffer.TriggerAPI
	}
	b := &coffer.Backup{ClientID: c.ID, PlanID: planID, RepositoryID: repositoryID, Trigger: trigger, State: coffer.JobQueued,
		Paths: req.Paths, Exclude: orEmpty(req.Exclude), Full: req.Full, OneFS: req.OneFileSystem, HostName: c.Hostname,
		CreatedBy: p.UserID}
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
// "backup_finished".
func (s *Service) Cancel(ctx context.Context, p *coffer.Principal, id string) (*coffer.Backup, error) {
	b, err := s.store.RequestBackupCancel(ctx, id)
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
// for StaleAfter, ending their write sessions. The server calls it
// periodically (every minute or so); several replicas may.
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
	return nil
}
