package backups

import (
	"context"
	"fmt"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
)

// The event codes of forgetting backups.
const (
	// EventForgotten: a person forgot a backup (an audit event, with the actor).
	EventForgotten = "backup.forgotten"
	// EventRetentionForgotten: a plan's retention let a backup go; the
	// message names the rule.
	EventRetentionForgotten = "retention.forgotten"
)

// Forget forgets backup id on behalf of p, who must hold the manage
// permission: its snapshot goes from its repository — the data is freed by
// the next garbage collection, unless other snapshots share it — and its
// record from the history. Records of restores made from it stay.
//
// A queued or running backup is coffer.KindConflict "backup_active"
// (cancel it first); one a queued or running restore reads is
// "backup_restoring". Forgetting is allowed whatever the plan's retention
// or hold says: an admin's decision overrides it.
func (s *Service) Forget(ctx context.Context, p *coffer.Principal, id string) (*coffer.Backup, error) {
	if p == nil || !p.Can(coffer.PermManage) {
		return nil, coffer.Errorf(coffer.KindForbidden, "manage_required",
			"forgetting a backup needs the manage permission (an admin account)")
	}
	b, err := s.store.GetBackup(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := s.forgettable(ctx, b); err != nil {
		return nil, err
	}
	done, err := s.forget(ctx, b)
	if err != nil {
		return nil, err
	}
	s.log.Info("backup forgotten", "backup_id", done.ID, "snapshot", done.SnapshotID, "user", p.Username)
	s.publish(ctx, userActor(p), done, EventForgotten, coffer.LevelInfo, "Backup forgotten",
		fmt.Sprintf("The %s (%s) was forgotten by %s. %s", what(done), done.State, actorName(p), freed(done)))
	return done, nil
}

// freed says what became of a forgotten backup's data.
func freed(b *coffer.Backup) string {
	if b.SnapshotID == "" {
		return "It held no data: only its record went."
	}
	return "Its data is freed at the next garbage collection, unless other backups share it."
}

func actorName(p *coffer.Principal) string {
	if p.Username != "" {
		return p.Username
	}
	return "user " + p.UserID
}

// forgettable refuses a backup that may not be forgotten now: one that
// has not ended, or that a restore reads.
func (s *Service) forgettable(ctx context.Context, b *coffer.Backup) error {
	if !b.State.Final() {
		return coffer.Errorf(coffer.KindConflict, "backup_active",
			"backup %s is %s: cancel it first (POST /api/v1/backups/%s/cancel), then forget it", b.ID, b.State, b.ID).
			With("state", string(b.State))
	}
	if b.SnapshotID == "" {
		return nil
	}
	rs, err := s.store.ListRestores(ctx, metadb.RestoreFilter{BackupID: b.ID,
		States: []coffer.JobState{coffer.JobQueued, coffer.JobRunning}, Limit: 1})
	if err != nil {
		return err
	}
	if len(rs) > 0 {
		return coffer.Errorf(coffer.KindConflict, "backup_restoring",
			"backup %s is being restored (restore %s is %s): wait for the restore to end or cancel it, then forget the backup",
			b.ID, rs[0].ID, rs[0].State).With("restore_id", rs[0].ID)
	}
	return nil
}

// forget removes finished backup b: first its snapshot (so that a failure
// leaves a record that can be forgotten again, never a snapshot no record
// claims), then its record. Of concurrent forgets of one backup, one gets
// the record; the others get "backup_not_found". A backup whose
// repository no longer exists loses its record only.
func (s *Service) forget(ctx context.Context, b *coffer.Backup) (*coffer.Backup, error) {
	if b.SnapshotID != "" {
		repo, err := s.repos.Get(ctx, b.RepositoryID)
		switch {
		case coffer.ErrorCode(err) == "repository_not_found":
			s.log.Warn("forget a backup whose repository is gone: only its record is deleted",
				"backup_id", b.ID, "repository_id", b.RepositoryID)
		case err != nil:
			return nil, fmt.Errorf("forget backup %s: %w", b.ID, err)
		default:
			if err := repo.ForgetSnapshot(ctx, b.SnapshotID); err != nil {
				return nil, fmt.Errorf("forget backup %s: %w", b.ID, err)
			}
		}
	}
	return s.store.DeleteBackup(ctx, b.ID)
}
