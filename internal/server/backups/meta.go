package backups

import (
	"context"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/retention"
)

// finishMeta is the metadata backup b records when its agent ends it:
// copied from its plan, its client and its repository now, so that the
// record stays true when the plan is renamed or the agent upgraded. A
// lookup that fails leaves its fields empty (and is logged): metadata is
// not worth failing a backup for.
func (s *Service) finishMeta(ctx context.Context, b *coffer.Backup) *coffer.BackupMeta {
	m := &coffer.BackupMeta{Compression: s.compression.String()}
	if repo, err := s.repos.Get(ctx, b.RepositoryID); err == nil {
		m.Encrypted = repo.Config().Encrypted
	} else {
		s.log.Warn("backup metadata: look up its repository", "backup_id", b.ID, "err", err)
	}
	if c, err := s.clients.GetClient(ctx, b.ClientID); err == nil {
		m.ClientOS, m.AgentVersion = c.OS, c.AgentVersion
	} else {
		s.log.Warn("backup metadata: look up its client", "backup_id", b.ID, "client_id", b.ClientID, "err", err)
	}
	if b.PlanID != "" {
		if pl, err := s.store.GetPlan(ctx, b.PlanID); err == nil {
			m.Name = pl.Name
			m.Compression = s.planCompression(pl).String()
		} else if !coffer.IsKind(err, coffer.KindNotFound) {
			s.log.Warn("backup metadata: look up its plan", "backup_id", b.ID, "plan_id", b.PlanID, "err", err)
		}
	}
	return m
}

// commitMeta is finishMeta for a backup that commits, with its place in
// its chain: sentParent is the backup whose change cache the agent
// trusted, parentID that backup when the server knows it as b's client's
// committed backup ("" otherwise; see parent).
func (s *Service) commitMeta(ctx context.Context, b *coffer.Backup, sentParent string, parent *coffer.Backup) *coffer.BackupMeta {
	m := s.finishMeta(ctx, b)
	m.Level, m.Session = chain(b, sentParent, parent)
	return m
}

// chain returns the level and session of b: 0 and its own id when it
// read every file; else one more than its parent's level, in its parent's
// session. A parent the server does not know (nil: forgotten meanwhile)
// still means the agent trusted a change cache: level 1 of an unknown
// session.
func chain(b *coffer.Backup, sentParent string, parent *coffer.Backup) (int, string) {
	if b.Full || sentParent == "" {
		return 0, b.ID
	}
	if parent == nil {
		return 1, ""
	}
	return parent.Meta.Level + 1, parent.Meta.Session
}

// planCompression is the compression level a backup of pl is told to
// compress blobs at (see withPlan): the plan's, else the server's default.
// The record takes the plan's level when the backup ends; a plan edited
// while its backup ran is the one case where they differ.
func (s *Service) planCompression(pl *coffer.Plan) blob.Compression {
	if pl.Compression == "" {
		return s.compression
	}
	level, err := blob.ParseCompression(pl.Compression)
	if err != nil {
		return s.compression
	}
	return level
}

// ExpiresAt returns, for each of bs, when its hold ends — it finished, and
// its plan's retention sets hold_days: retention keeps it until then (see
// retention.HoldUntil) — or nil. It follows the plan's current policy, as
// retention does. Plans are looked up once per call.
func (s *Service) ExpiresAt(ctx context.Context, bs ...*coffer.Backup) ([]*time.Time, error) {
	out := make([]*time.Time, len(bs))
	plans := map[string]*coffer.Plan{}
	for i, b := range bs {
		if b.PlanID == "" || b.FinishedAt == nil {
			continue
		}
		pl, seen := plans[b.PlanID]
		if !seen {
			var err error
			pl, err = s.store.GetPlan(ctx, b.PlanID)
			if coffer.IsKind(err, coffer.KindNotFound) {
				pl, err = nil, nil // a deleted plan holds nothing
			}
			if err != nil {
				return nil, err
			}
			plans[b.PlanID] = pl
		}
		if pl == nil {
			continue
		}
		if until, ok := retention.HoldUntil(policyOf(pl), *b.FinishedAt, planLocation(pl)); ok {
			u := until.UTC()
			out[i] = &u
		}
	}
	return out, nil
}
