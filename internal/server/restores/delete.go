package restores

import (
	"context"

	"github.com/cofferhq/coffer"
)

// Delete deletes the record of a finished restore from the history, on
// behalf of p, who must be allowed to operate its target client
// (coffer.Principal.MayOperate; only admins may delete the restores of a
// client that no longer exists). A queued or running restore is
// coffer.KindConflict "restore_active": cancel it first. The files it
// wrote stay where they are.
func (s *Service) Delete(ctx context.Context, p *coffer.Principal, id string) (*coffer.Restore, error) {
	r, err := s.store.GetRestore(ctx, id)
	if err != nil {
		return nil, err
	}
	target, err := s.clients.GetClient(ctx, r.TargetClientID)
	if coffer.IsKind(err, coffer.KindNotFound) {
		target, err = &coffer.Client{ID: r.TargetClientID, Name: r.TargetClientID}, nil // owned by no one
	}
	if err != nil {
		return nil, err
	}
	if p == nil {
		return nil, coffer.Errorf(coffer.KindForbidden, "operate_required", "deleting a restore needs the operate permission")
	}
	if err := p.MayOperate(target); err != nil {
		return nil, err
	}
	if !r.State.Final() {
		return nil, coffer.Errorf(coffer.KindConflict, "restore_active",
			"restore %s is %s: cancel it first (POST /api/v1/restores/%s/cancel), then delete it", r.ID, r.State, r.ID).
			With("state", string(r.State))
	}
	done, err := s.store.DeleteRestore(ctx, id)
	if err != nil {
		return nil, err
	}
	s.log.Info("restore record deleted", "restore_id", done.ID, "user", p.Username)
	who := p.Username
	if who == "" {
		who = "user " + p.UserID
	}
	s.publish(ctx, p, done, coffer.LevelInfo, "restore.deleted", "Restore deleted",
		"The record of restore "+done.ID+" ("+string(done.State)+") of backup "+done.BackupID+" to "+done.Destination+
			" on client "+done.TargetClientID+" was deleted by "+who+".")
	return done, nil
}
