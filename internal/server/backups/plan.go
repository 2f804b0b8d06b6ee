package backups

import (
	"context"
	"fmt"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/protocol"
)

// withPlan completes the start of a plan's backup with what the plan says
// at the time the agent starts it: its pre and post commands (with the
// command timeout) and its compression level ("" keeps the server's
// default). A backup whose plan was deleted meanwhile, or now belongs to
// another client, runs as it was queued, without commands: they were
// written for a plan that no longer describes this backup.
func (s *Service) withPlan(ctx context.Context, b *coffer.Backup, resp *protocol.StartBackupResponse) error {
	if b.PlanID == "" || s.plans == nil {
		return nil
	}
	pl, err := s.plans.GetPlan(ctx, b.PlanID)
	if coffer.IsKind(err, coffer.KindNotFound) {
		s.log.Warn("the plan of a backup was deleted: running the backup without its commands",
			"backup_id", b.ID, "plan_id", b.PlanID)
		return nil
	}
	if err != nil {
		return fmt.Errorf("start backup %s: read its plan: %w", b.ID, err)
	}
	if pl.ClientID != b.ClientID {
		s.log.Warn("the plan of a backup now belongs to another client: running the backup without its commands",
			"backup_id", b.ID, "plan_id", pl.ID, "client_id", b.ClientID, "plan_client_id", pl.ClientID)
		return nil
	}
	job := &resp.Backup
	job.PreCommands, job.PostCommands = pl.PreCommands, pl.PostCommands
	if len(pl.PreCommands) > 0 || len(pl.PostCommands) > 0 {
		timeout := s.cmdTimeout
		if pl.CommandTimeout > 0 {
			timeout = pl.CommandTimeout
		}
		job.CommandTimeoutSeconds = max(1, int(timeout.Seconds()))
	}
	if _, err := blob.ParseCompression(pl.Compression); pl.Compression != "" && err != nil {
		// Plans are validated when stored: this is a plan written by a
		// newer server. Its backup still runs, at the default level.
		s.log.Warn("a plan names an unknown compression level: using the server's default",
			"backup_id", b.ID, "plan_id", pl.ID, "compression", pl.Compression, "default", s.compression)
	}
	resp.Repository.Compression = s.planCompression(pl).String()
	return nil
}
