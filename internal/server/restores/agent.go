package restores

import (
	"context"
	"fmt"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/protocol"
	"github.com/cofferhq/coffer/internal/server/backups"
)

// agentClient returns the client an agent principal speaks for. Agent
// methods take the client from the credential, never from the request.
func agentClient(p *coffer.Principal) (string, error) {
	if p == nil || p.Kind != coffer.PrincipalAgent || p.ClientID == "" {
		return "", coffer.Errorf(coffer.KindForbidden, "forbidden", "only an enrolled client's agent may do this")
	}
	return p.ClientID, nil
}

// ownRestore returns restore id if it targets client; a restore of another
// client is "restore_not_found", as if it did not exist.
func (s *Service) ownRestore(ctx context.Context, client, id string) (*coffer.Restore, error) {
	notFound := coffer.Errorf(coffer.KindNotFound, "restore_not_found", "no restore with id %q for this client", id)
	if id == "" {
		return nil, notFound
	}
	r, err := s.store.GetRestore(ctx, id)
	if coffer.IsKind(err, coffer.KindNotFound) || (err == nil && r.TargetClientID != client) {
		return nil, notFound
	}
	return r, err
}

// StartRestore starts a restore on the calling agent's machine: with
// RestoreID the restore the server queued for this client (starting it
// again while it runs returns it again, so a retried request is harmless);
// without, an ad-hoc restore of BackupID — a backup of this client — to
// Destination (the CLI on the machine).
func (s *Service) StartRestore(ctx context.Context, p *coffer.Principal, req protocol.StartRestoreRequest) (*protocol.StartRestoreResponse, error) {
	client, err := agentClient(p)
	if err != nil {
		return nil, err
	}
	var r *coffer.Restore
	var b *coffer.Backup
	if req.RestoreID != "" {
		r, b, err = s.startQueued(ctx, p, client, req)
	} else {
		r, b, err = s.startAdHoc(ctx, p, client, req)
	}
	if err != nil {
		return nil, err
	}
	paths := r.Paths
	if paths == nil {
		paths = []string{}
	}
	repo, err := s.repos.Get(ctx, b.RepositoryID)
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", r.ID, err)
	}
	return &protocol.StartRestoreResponse{
		Restore: protocol.RestoreJob{ID: r.ID, BackupID: r.BackupID, State: r.State, RootTree: b.RootTree,
			Paths: paths, Destination: r.Destination, Overwrite: r.Overwrite},
		Repository: backups.RepositoryParams(repo, blob.Default, s.maxRead, MaxLocateIDs),
	}, nil
}

func (s *Service) startQueued(ctx context.Context, p *coffer.Principal, client string, req protocol.StartRestoreRequest) (*coffer.Restore, *coffer.Backup, error) {
	if req.BackupID != "" || len(req.Paths) > 0 || req.Destination != "" || req.Overwrite != "" {
		return nil, nil, coffer.Errorf(coffer.KindInvalid, "invalid_request",
			"with restore_id, send no other field: the queued restore says what to restore and where")
	}
	r, err := s.ownRestore(ctx, client, req.RestoreID)
	if err != nil {
		return nil, nil, err
	}
	b, err := s.store.GetBackup(ctx, r.BackupID)
	if err == nil {
		err = checkRestorable(b)
	}
	if err != nil {
		if r.State == coffer.JobQueued {
			s.fail(ctx, p, r, "its backup can no longer be restored")
		}
		return nil, nil, err
	}
	if r.State == coffer.JobRunning {
		return r, b, nil // a retried start
	}
	if r, err = s.store.StartRestore(ctx, r.ID, client); err != nil {
		return nil, nil, err
	}
	s.started(ctx, p, r)
	return r, b, nil
}

func (s *Service) startAdHoc(ctx context.Context, p *coffer.Principal, client string, req protocol.StartRestoreRequest) (*coffer.Restore, *coffer.Backup, error) {
	paths, err := cleanPaths(req.Paths)
	if err != nil {
		return nil, nil, err
	}
	dest, err := cleanDestination(req.Destination)
	if err != nil {
		return nil, nil, err
	}
	ow, err := overwritePolicy(req.Overwrite)
	if err != nil {
		return nil, nil, err
	}
	if req.BackupID == "" {
		return nil, nil, coffer.Errorf(coffer.KindInvalid, "backup_id_required",
			"send restore_id (a queued restore) or backup_id (a backup of this client to restore here)").
			With("field", "body.backup_id")
	}
	b, err := s.store.GetBackup(ctx, req.BackupID)
	if coffer.IsKind(err, coffer.KindNotFound) || (err == nil && b.ClientID != client) {
		return nil, nil, coffer.Errorf(coffer.KindNotFound, "backup_not_found",
			"no backup with id %q of this client: list them with `coffer backups`", req.BackupID)
	}
	if err != nil {
		return nil, nil, err
	}
	if err := checkRestorable(b); err != nil {
		return nil, nil, err
	}
	r := &coffer.Restore{BackupID: b.ID, SourceClientID: client, TargetClientID: client, Paths: paths,
		Destination: dest, Overwrite: ow, State: coffer.JobRunning}
	if err := s.store.CreateRestore(ctx, r); err != nil {
		return nil, nil, err
	}
	s.started(ctx, p, r)
	return r, b, nil
}

func (s *Service) started(ctx context.Context, p *coffer.Principal, r *coffer.Restore) {
	s.log.Info("restore started", "restore_id", r.ID, "backup_id", r.BackupID, "client_id", r.TargetClientID)
	s.publish(ctx, p, r, coffer.LevelInfo, "restore.started", "Restore started",
		"Client "+r.TargetClientID+" started restoring backup "+r.BackupID+" to "+r.Destination+".")
}

// fail marks r failed on the server's behalf (the agent never ran it).
func (s *Service) fail(ctx context.Context, p *coffer.Principal, r *coffer.Restore, why string) {
	done, err := s.store.FinishRestore(context.WithoutCancel(ctx), r.ID, metadb.RestoreFinish{State: coffer.JobFailed, Error: why})
	if err != nil {
		s.log.Warn("fail restore", "restore_id", r.ID, "err", err)
		return
	}
	s.finished(ctx, p, done)
}

// Progress records a running restore's progress. The answer's Cancel
// tells the agent to stop: someone canceled the restore, or it is no
// longer running on the server (it was failed for going stale).
func (s *Service) Progress(ctx context.Context, p *coffer.Principal, id string, req protocol.RestoreProgress) (*protocol.ProgressResponse, error) {
	client, err := agentClient(p)
	if err != nil {
		return nil, err
	}
	if _, err := s.ownRestore(ctx, client, id); err != nil {
		return nil, err
	}
	r, err := s.store.UpdateRestoreProgress(ctx, id, req.Stats)
	if coffer.IsKind(err, coffer.KindConflict) {
		if r, gerr := s.store.GetRestore(ctx, id); gerr == nil {
			return &protocol.ProgressResponse{Cancel: true,
				Message: fmt.Sprintf("restore %s is %s on the server: stop it", id, r.State)}, nil
		}
	}
	if err != nil {
		return nil, err
	}
	s.publishProgress(ctx, p, r)
	if r.CancelRequested {
		return &protocol.ProgressResponse{Success: true, Cancel: true, Message: "Restore canceled: stop and report it canceled."}, nil
	}
	return &protocol.ProgressResponse{Success: true, Message: "Progress recorded."}, nil
}

// Finish records that the agent completed a restore: succeeded, or
// partial when some entries could not be written (listed in Errors).
// Reporting the same outcome again returns the restore unchanged.
func (s *Service) Finish(ctx context.Context, p *coffer.Principal, id string, req protocol.FinishRestoreRequest) (*coffer.Restore, error) {
	state := coffer.JobSucceeded
	if len(req.Errors) > 0 || req.Stats.ErrorCount > 0 {
		state = coffer.JobPartial
	}
	return s.end(ctx, p, id, metadb.RestoreFinish{State: state, Stats: req.Stats, Errors: req.Errors})
}

// Fail records that a restore failed or, when the agent stopped it on
// request, was canceled.
func (s *Service) Fail(ctx context.Context, p *coffer.Principal, id string, req protocol.FailRequest) (*coffer.Restore, error) {
	if req.State != coffer.JobFailed && req.State != coffer.JobCanceled {
		return nil, coffer.Errorf(coffer.KindInvalid, "invalid_state",
			"a restore ends with state failed or canceled here, not %q (report success with /finish)", req.State).
			With("field", "body.state")
	}
	msg := req.Error
	if msg == "" {
		msg = "the agent reported the restore " + string(req.State) + " without saying why"
	}
	return s.end(ctx, p, id, metadb.RestoreFinish{State: req.State, Errors: req.Errors, Error: msg})
}

// end records a restore's outcome; a failure keeps the stats of the last
// progress report.
func (s *Service) end(ctx context.Context, p *coffer.Principal, id string, f metadb.RestoreFinish) (*coffer.Restore, error) {
	client, err := agentClient(p)
	if err != nil {
		return nil, err
	}
	cur, err := s.ownRestore(ctx, client, id)
	if err != nil {
		return nil, err
	}
	if f.State == coffer.JobFailed || f.State == coffer.JobCanceled {
		f.Stats = cur.Stats
	}
	r, err := s.store.FinishRestore(ctx, id, f)
	if coffer.IsKind(err, coffer.KindConflict) {
		if cur, gerr := s.store.GetRestore(ctx, id); gerr == nil && cur.State == f.State {
			return cur, nil // a retried report
		}
	}
	if err != nil {
		return nil, err
	}
	s.finished(ctx, p, r)
	return r, nil
}

// finished publishes the event of a restore's end.
func (s *Service) finished(ctx context.Context, p *coffer.Principal, r *coffer.Restore) {
	what := "Restore " + r.ID + " of backup " + r.BackupID + " to " + r.Destination + " on client " + r.TargetClientID
	switch r.State {
	case coffer.JobSucceeded:
		s.publish(ctx, p, r, coffer.LevelSuccess, "restore.succeeded", "Restore succeeded",
			fmt.Sprintf("%s succeeded: %d files, %d bytes.", what, r.Stats.Files, r.Stats.Bytes))
	case coffer.JobPartial:
		s.publish(ctx, p, r, coffer.LevelWarning, "restore.partial", "Restore partly succeeded",
			fmt.Sprintf("%s finished with %d entries it could not write (listed on the restore).", what,
				max(uint64(len(r.Errors)), r.Stats.ErrorCount)))
	case coffer.JobCanceled:
		s.publish(ctx, p, r, coffer.LevelWarning, "restore.canceled", "Restore canceled", what+" was canceled.")
	default:
		s.publish(ctx, p, r, coffer.LevelError, "restore.failed", "Restore failed", what+" failed: "+r.Error)
	}
	s.log.Info("restore finished", "restore_id", r.ID, "state", r.State, "client_id", r.TargetClientID)
}
