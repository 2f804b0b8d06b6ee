package backups

import (
	"context"
	"errors"
	"fmt"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/tree"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/protocol"
)

// StartBackup starts a backup for clientID's agent: the queued backup
// req.BackupID (whose other fields must be empty), or an ad-hoc backup of
// req.Paths that it creates, running, with trigger manual. It opens the
// backup's index write session and returns the job with what the agent
// needs to make blobs. Starting a backup that is already running for this
// client returns it again, so a retried request is harmless.
func (s *Service) StartBackup(ctx context.Context, clientID string, req protocol.StartBackupRequest) (*protocol.StartBackupResponse, error) {
	var b *coffer.Backup
	var err error
	if req.BackupID != "" {
		b, err = s.startQueued(ctx, clientID, req)
	} else {
		b, err = s.startAdHoc(ctx, clientID, req)
	}
	if err != nil {
		return nil, err
	}
	repo, err := s.repoOf(ctx, b)
	if err != nil {
		return nil, err
	}
	if err := s.admit(ctx, b, 0); err != nil {
		return nil, err
	}
	resp := &protocol.StartBackupResponse{Backup: Job(b), Repository: s.params(repo)}
	if err := s.withPlan(ctx, b, resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// Job is a backup as its agent needs it.
func Job(b *coffer.Backup) protocol.BackupJob {
	return protocol.BackupJob{ID: b.ID, State: b.State, Paths: orEmpty(b.Paths), Exclude: orEmpty(b.Exclude),
		Full: b.Full, OneFileSystem: b.OneFS, PlanID: b.PlanID}
}

func orEmpty[T any](xs []T) []T {
	if xs == nil {
		return []T{}
	}
	return xs
}

func (s *Service) startQueued(ctx context.Context, clientID string, req protocol.StartBackupRequest) (*coffer.Backup, error) {
	if len(req.Paths) > 0 || len(req.Exclude) > 0 || req.Full || req.OneFileSystem {
		return nil, coffer.Errorf(coffer.KindInvalid, "backup_fields_with_id",
			"a queued backup brings its own paths and options: send only backup_id, or no backup_id for an ad-hoc backup")
	}
	b, err := s.agentBackup(ctx, clientID, req.BackupID)
	if err != nil {
		return nil, err
	}
	switch b.State {
	case coffer.JobRunning:
		s.renew(ctx, b)
		return b, nil
	case coffer.JobQueued:
	default:
		return nil, notQueued(b)
	}
	repo, err := s.repoOf(ctx, b)
	if err != nil {
		return nil, err
	}
	sess, err := repo.Index().BeginSession(ctx, s.sessionTTL)
	if err != nil {
		return nil, fmt.Errorf("start backup %s: %w", b.ID, err)
	}
	started, err := s.store.StartBackup(ctx, b.ID, clientID, sess.ID, repo.Config().ID)
	if err != nil {
		repo.Index().EndSession(context.WithoutCancel(ctx), sess)
		// Two starts raced and the other won: answer as for a retry.
		if coffer.IsKind(err, coffer.KindConflict) {
			if again, gerr := s.agentBackup(ctx, clientID, b.ID); gerr == nil && again.State == coffer.JobRunning {
				return again, nil
			}
		}
		return nil, err
	}
	s.markRenewed(started.ID)
	s.publish(ctx, agentActor(clientID), started, EventStarted, coffer.LevelInfo, "Backup started",
		fmt.Sprintf("The %s started.", what(started)))
	return started, nil
}

func notQueued(b *coffer.Backup) error {
	return coffer.Errorf(coffer.KindConflict, "backup_not_queued",
		"backup %s is %s: only a queued backup can be started", b.ID, b.State).With("state", string(b.State))
}

func (s *Service) startAdHoc(ctx context.Context, clientID string, req protocol.StartBackupRequest) (*coffer.Backup, error) {
	if err := validatePaths(req.Paths); err != nil {
		return nil, err
	}
	if err := validateExcludes(req.Exclude); err != nil {
		return nil, err
	}
	host := req.Hostname
	if host == "" {
		c, err := s.clients.GetClient(ctx, clientID)
		if err != nil {
			return nil, err
		}
		host = c.Hostname
	}
	repo := s.repos.Default()
	sess, err := repo.Index().BeginSession(ctx, s.sessionTTL)
	if err != nil {
		return nil, fmt.Errorf("start backup: %w", err)
	}
	b := &coffer.Backup{ClientID: clientID, RepositoryID: repo.Config().ID, Trigger: coffer.TriggerManual,
		State: coffer.JobRunning, Paths: req.Paths, Exclude: orEmpty(req.Exclude), Full: req.Full, OneFS: req.OneFileSystem,
		HostName: host, SessionID: sess.ID}
	if err := s.store.CreateBackup(ctx, b); err != nil {
		repo.Index().EndSession(context.WithoutCancel(ctx), sess)
		return nil, err
	}
	s.markRenewed(b.ID)
	s.publish(ctx, agentActor(clientID), b, EventStarted, coffer.LevelInfo, "Backup started",
		fmt.Sprintf("The %s started from the machine.", what(b)))
	return b, nil
}

func (s *Service) markRenewed(id string) {
	s.mu.Lock()
	s.renewed[id] = s.now()
	s.mu.Unlock()
}

// parseIDs parses hex blob ids; a bad one is 400 "invalid_blob_id".
func parseIDs(hexIDs []string) ([]blob.ID, error) {
	ids := make([]blob.ID, len(hexIDs))
	for i, h := range hexIDs {
		id, err := blob.ParseID(h)
		if err != nil {
			return nil, coffer.Errorf(coffer.KindInvalid, "invalid_blob_id",
				"blob id %d %q is not 64 hex digits", i, truncate(h)).With("index", i)
		}
		ids[i] = id
	}
	return ids, nil
}

// CheckBlobs returns which of req.IDs the repository lacks, in request
// order. The others are touched, and the backup's session keeps them from
// garbage collection until it commits or fails.
func (s *Service) CheckBlobs(ctx context.Context, clientID string, req protocol.CheckBlobsRequest) (*protocol.CheckBlobsResponse, error) {
	if len(req.IDs) > s.maxCheck {
		return nil, coffer.Errorf(coffer.KindTooLarge, "too_many_ids", "%d ids exceed the limit of %d a request: split them",
			len(req.IDs), s.maxCheck).With("limit", s.maxCheck)
	}
	ids, err := parseIDs(req.IDs)
	if err != nil {
		return nil, err
	}
	b, err := s.runningBackup(ctx, clientID, req.BackupID)
	if err != nil {
		return nil, err
	}
	s.renew(ctx, b)
	repo, err := s.repoOf(ctx, b)
	if err != nil {
		return nil, err
	}
	missing, err := repo.Index().Missing(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("check blobs of backup %s: %w", b.ID, err)
	}
	out := make([]string, len(missing))
	for i, id := range missing {
		out[i] = id.String()
	}
	return &protocol.CheckBlobsResponse{Missing: out}, nil
}

// Progress records a running backup's progress and tells the agent
// whether to stop: someone canceled it, or it already ended on the server
// (failed for going stale, say). It publishes no event.
func (s *Service) Progress(ctx context.Context, clientID, backupID string, p protocol.BackupProgress) (*protocol.ProgressResponse, error) {
	b, err := s.agentBackup(ctx, clientID, backupID)
	if err != nil {
		return nil, err
	}
	if b.State.Final() {
		return &protocol.ProgressResponse{Message: fmt.Sprintf("Backup %s already ended (%s): stop it.", b.ID, b.State),
			Cancel: true}, nil
	}
	if b.State != coffer.JobRunning {
		return nil, notRunning(b)
	}
	b, err = s.store.UpdateBackupProgress(ctx, backupID, p.Stats)
	if err != nil {
		if coffer.IsKind(err, coffer.KindConflict) {
			// It ended between the two queries.
			return &protocol.ProgressResponse{Message: fmt.Sprintf("Backup %s already ended: stop it.", backupID), Cancel: true}, nil
		}
		return nil, err
	}
	s.renew(ctx, b)
	s.publishProgress(ctx, clientID, b)
	if b.CancelRequested {
		return &protocol.ProgressResponse{Message: "The backup was canceled: stop it and report it canceled.", Success: true, Cancel: true}, nil
	}
	return &protocol.ProgressResponse{Message: "Progress recorded.", Success: true}, nil
}

// Commit writes the snapshot of a running backup whose blobs are all
// stored, and marks the backup succeeded, or partial when the agent
// reported entries it could not back up. When the repository lacks blobs
// the snapshot references, it fails with coffer.KindConflict
// "missing_blobs" listing up to 1000 of them (metadata
// protocol.MissingBlobsMetadataKey) and the backup stays running: upload
// them and commit again. Committing again a backup that already succeeded
// with the same root tree returns it.
func (s *Service) Commit(ctx context.Context, clientID, backupID string, req protocol.CommitRequest) (*coffer.Backup, error) {
	root, err := blob.ParseID(req.RootTree)
	if err != nil {
		return nil, coffer.Errorf(coffer.KindInvalid, "invalid_root_tree", "root_tree %q is not 64 hex digits", truncate(req.RootTree)).
			With("field", "root_tree")
	}
	b, err := s.agentBackup(ctx, clientID, backupID)
	if err != nil {
		return nil, err
	}
	if committed(b, root) {
		return b, nil
	}
	if b.State != coffer.JobRunning {
		return nil, notRunning(b)
	}
	s.renew(ctx, b)
	repo, err := s.repoOf(ctx, b)
	if err != nil {
		return nil, err
	}
	// The agent's start time, else the server's: either is the same on a
	// retry, so a retried commit makes the same snapshot id.
	started := req.StartedAt
	if started.IsZero() && b.StartedAt != nil {
		started = *b.StartedAt
	}
	if started.IsZero() {
		started = b.CreatedAt
	}
	snap := &tree.Snapshot{Version: tree.SnapshotVersion, Time: started.UTC(), Tree: root, Hostname: b.HostName,
		Paths: b.Paths, ClientID: b.ClientID, PlanID: b.PlanID, BackupID: b.ID, Stats: snapshotStats(req.Stats)}
	parent, err := s.parent(ctx, clientID, req.ParentID, snap)
	if err != nil {
		return nil, err
	}
	var parentID string
	if parent != nil {
		parentID = parent.ID
	}
	snapID, err := s.commitSnapshot(ctx, repo, snap)
	if err != nil {
		return nil, err
	}
	state := coffer.JobSucceeded
	if len(req.Errors) > 0 || req.Stats.ErrorCount > 0 {
		state = coffer.JobPartial
	}
	done, err := s.store.FinishBackup(ctx, b.ID, metadb.BackupFinish{State: state, SnapshotID: snapID, RootTree: root.String(),
		ParentID: parentID, Stats: req.Stats, Errors: req.Errors,
		Meta: s.commitMeta(ctx, b, req.ParentID, parent), RetentionDue: b.PlanID != ""})
	if err != nil {
		return s.finishFailed(ctx, repo, b.ID, root, snapID, err)
	}
	s.endSession(ctx, done)
	s.publishFinished(ctx, agentActor(clientID), done)
	s.retentionDue(done)
	return done, nil
}

// committed reports whether b already succeeded with root tree root.
func committed(b *coffer.Backup, root blob.ID) bool {
	return (b.State == coffer.JobSucceeded || b.State == coffer.JobPartial) && b.RootTree == root.String()
}

// parent sets snap.Parent to the snapshot of the backup parentID, when
// that backup is clientID's and committed, and returns it (nil when it
// does not qualify: the parent is a hint, not worth failing a backup for).
func (s *Service) parent(ctx context.Context, clientID, parentID string, snap *tree.Snapshot) (*coffer.Backup, error) {
	if parentID == "" {
		return nil, nil
	}
	p, err := s.store.GetBackup(ctx, parentID)
	if coffer.IsKind(err, coffer.KindNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if p.ClientID != clientID || p.SnapshotID == "" {
		return nil, nil
	}
	snap.Parent = p.SnapshotID
	return p, nil
}

// commitSnapshot writes and records the snapshot manifest.
func (s *Service) commitSnapshot(ctx context.Context, repo *repository.Repository, snap *tree.Snapshot) (string, error) {
	w, err := repo.NewWriter(ctx, repository.WriterOptions{Uploads: 1})
	if err != nil {
		return "", fmt.Errorf("commit backup %s: %w", snap.BackupID, err)
	}
	defer w.Close()
	id, err := w.Commit(ctx, snap)
	var missing *repository.MissingBlobsError
	if errors.As(err, &missing) {
		ids := make([]string, min(len(missing.IDs), 1000))
		for i := range ids {
			ids[i] = missing.IDs[i].String()
		}
		return "", coffer.Errorf(coffer.KindConflict, "missing_blobs",
			"%d blobs the backup references are not in the repository: upload them and commit again (or run the backup again with full)",
			len(missing.IDs)).With(protocol.MissingBlobsMetadataKey, ids).With("count", len(missing.IDs))
	}
	if err != nil {
		return "", fmt.Errorf("commit backup %s: %w", snap.BackupID, err)
	}
	return id, nil
}

// finishFailed handles a FinishBackup refused after the snapshot was
// committed. A concurrent commit of the same tree (a retry) already
// finished the backup: that is success. Otherwise the backup ended
// meanwhile (canceled, or failed as stale) and the snapshot, which no
// backup record claims, is forgotten again.
func (s *Service) finishFailed(ctx context.Context, repo *repository.Repository, id string, root blob.ID, snapID string, err error) (*coffer.Backup, error) {
	if !coffer.IsKind(err, coffer.KindConflict) {
		return nil, err
	}
	b, gerr := s.store.GetBackup(ctx, id)
	if gerr != nil {
		return nil, errors.Join(err, gerr)
	}
	if committed(b, root) && b.SnapshotID == snapID {
		return b, nil
	}
	if ferr := repo.ForgetSnapshot(context.WithoutCancel(ctx), snapID); ferr != nil {
		s.log.Error("forget the snapshot of a backup that ended while it committed", "backup_id", id, "snapshot", snapID, "err", ferr)
	}
	return nil, notRunning(b)
}

func snapshotStats(st coffer.BackupStats) tree.SnapshotStats {
	return tree.SnapshotStats{Files: st.Files, Dirs: st.Dirs, Symlinks: st.Symlinks, Others: st.Others,
		Bytes: st.LogicalBytes, DataBlobs: st.DataBlobs, TreeBlobs: st.TreeBlobs, AddedBytes: st.AddedBytes}
}

// Fail ends a backup of clientID that the agent gave up on (failed) or
// stopped because it was canceled (canceled), with the reason and the
// entries it could not back up. Failing it again with the same state is
// harmless.
func (s *Service) Fail(ctx context.Context, clientID, backupID string, req protocol.FailRequest) (*coffer.Backup, error) {
	if req.State != coffer.JobFailed && req.State != coffer.JobCanceled {
		return nil, coffer.Errorf(coffer.KindInvalid, "invalid_state", "state %q is not failed or canceled", req.State).
			With("field", "state")
	}
	b, err := s.agentBackup(ctx, clientID, backupID)
	if err != nil {
		return nil, err
	}
	if b.State.Final() {
		if b.State == req.State {
			return b, nil
		}
		return nil, notRunning(b)
	}
	reason := req.Error
	if reason == "" {
		reason = "the agent reported no reason"
		if req.State == coffer.JobCanceled {
			reason = "canceled"
		}
	}
	done, err := s.store.FinishBackup(ctx, b.ID, metadb.BackupFinish{State: req.State, Stats: b.Stats, Errors: req.Errors, Error: reason,
		Meta: s.finishMeta(ctx, b)})
	if err != nil {
		if coffer.IsKind(err, coffer.KindConflict) {
			if again, gerr := s.store.GetBackup(ctx, b.ID); gerr == nil && again.State == req.State {
				return again, nil
			}
		}
		return nil, err
	}
	s.endSession(ctx, done)
	s.publishFinished(ctx, agentActor(clientID), done)
	return done, nil
}

// Backups lists clientID's backups, newest first, after the keyset
// position after (nil: from the newest).
func (s *Service) Backups(ctx context.Context, clientID string, after *metadb.Keyset, limit int) ([]coffer.Backup, error) {
	return s.store.ListBackups(ctx, metadb.BackupFilter{ClientID: clientID, After: after, Limit: limit})
}

// Tree lists the directory at path p in backup backupID of clientID (a
// file's path lists that file alone).
func (s *Service) Tree(ctx context.Context, clientID, backupID, p string) ([]protocol.TreeEntry, error) {
	b, err := s.agentBackup(ctx, clientID, backupID)
	if err != nil {
		return nil, err
	}
	return s.tree(ctx, b, p)
}
