package restores

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/protocol"
)

// Request asks for a restore.
type Request struct {
	BackupID string
	// TargetClientID is the client that writes the files; "" means the
	// client the backup is of.
	TargetClientID string
	// Paths inside the backup, slash-separated, relative to its root (a
	// leading "/" is ignored); none means everything.
	Paths []string
	// Destination is an absolute directory on the target.
	Destination string
	// Overwrite is the policy for entries that exist; "" means
	// coffer.OverwriteSkip: a restore destroys nothing unless asked to.
	Overwrite coffer.Overwrite
}

// Create queues a restore and orders the target client's agent to run it.
// The backup must have finished succeeded or partial (conflict
// "backup_not_restorable"); the target must be an enrolled client
// ("client_not_found"). p must be allowed to act on both the backup's
// client and the target (coffer.Principal.MayOperate: forbidden
// "client_not_owned" for an operator who does not own one of them).
func (s *Service) Create(ctx context.Context, p *coffer.Principal, req Request) (*coffer.Restore, error) {
	paths, err := cleanPaths(req.Paths)
	if err != nil {
		return nil, err
	}
	dest, err := cleanDestination(req.Destination)
	if err != nil {
		return nil, err
	}
	ow, err := overwritePolicy(req.Overwrite)
	if err != nil {
		return nil, err
	}
	b, err := s.restorableBackup(ctx, req.BackupID)
	if err != nil {
		return nil, err
	}
	target := req.TargetClientID
	if target == "" {
		target = b.ClientID
	}
	tc, err := s.clients.GetClient(ctx, target)
	if err != nil {
		return nil, err
	}
	if err := s.mayOperate(ctx, p, b.ClientID); err != nil {
		return nil, err
	}
	if err := p.MayOperate(tc); err != nil {
		return nil, err
	}
	r := &coffer.Restore{BackupID: b.ID, SourceClientID: b.ClientID, TargetClientID: target, Paths: paths,
		Destination: dest, Overwrite: ow, State: coffer.JobQueued}
	if p != nil {
		r.CreatedBy = p.UserID
	}
	if err := s.store.CreateRestore(ctx, r); err != nil {
		return nil, err
	}
	cmd := protocol.Command{Kind: protocol.CommandRestore, Restore: &protocol.RestoreCommand{RestoreID: r.ID}}
	if _, err := s.commands.Enqueue(ctx, target, cmd); err != nil {
		s.log.Error("queue restore command", "restore_id", r.ID, "client_id", target, "err", err)
		if failed, ferr := s.store.FinishRestore(context.WithoutCancel(ctx), r.ID, metadb.RestoreFinish{State: coffer.JobFailed,
			Error: "the server could not queue the restore for the client's agent"}); ferr != nil {
			s.log.Error("fail unqueued restore", "restore_id", r.ID, "err", ferr)
		} else {
			s.finished(ctx, p, failed)
		}
		return nil, err
	}
	s.publish(ctx, p, r, coffer.LevelInfo, "restore.requested", "Restore requested",
		"Restore "+r.ID+" of backup "+b.ID+" to "+dest+" on client "+target+" was queued.")
	return r, nil
}

// Get returns one restore ("restore_not_found").
func (s *Service) Get(ctx context.Context, id string) (*coffer.Restore, error) {
	return s.store.GetRestore(ctx, id)
}

// List returns restores, newest first (see metadb.RestoreFilter).
func (s *Service) List(ctx context.Context, f metadb.RestoreFilter) ([]coffer.Restore, error) {
	return s.store.ListRestores(ctx, f)
}

// Cancel cancels a restore: a queued one at once; a running one is marked
// cancel_requested and its agent is told to stop (over its command stream,
// and in the answer to its next progress report). A finished restore is a
// conflict ("restore_finished"). p must be allowed to act on the target
// client, which runs the restore (coffer.Principal.MayOperate).
func (s *Service) Cancel(ctx context.Context, p *coffer.Principal, id string) (*coffer.Restore, error) {
	r, err := s.store.GetRestore(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := s.mayOperate(ctx, p, r.TargetClientID); err != nil {
		return nil, err
	}
	r, err = s.store.RequestRestoreCancel(ctx, id)
	if err != nil {
		return nil, err
	}
	if r.State == coffer.JobCanceled {
		s.publish(ctx, p, r, coffer.LevelWarning, "restore.canceled", "Restore canceled",
			"Restore "+r.ID+" of backup "+r.BackupID+" was canceled before it started.")
		return r, nil
	}
	cmd := protocol.Command{Kind: protocol.CommandCancel, Cancel: &protocol.CancelCommand{JobID: r.ID}}
	if _, err := s.commands.Enqueue(ctx, r.TargetClientID, cmd); err != nil {
		// The agent still learns it from its next progress report.
		s.log.Warn("queue cancel command", "restore_id", r.ID, "client_id", r.TargetClientID, "err", err)
	}
	s.publish(ctx, p, r, coffer.LevelInfo, "restore.cancel_requested", "Restore cancel requested",
		"The agent of client "+r.TargetClientID+" was asked to stop restore "+r.ID+".")
	return r, nil
}

// mayOperate checks that p may act on client id (coffer.Principal.MayOperate).
// A client deleted since (its backups and restores stay) has no owner any
// more: only admins act on them.
func (s *Service) mayOperate(ctx context.Context, p *coffer.Principal, id string) error {
	return coffer.MayOperateClient(ctx, s.clients, p, id)
}

// restorableBackup returns backup id if a restore can read it.
func (s *Service) restorableBackup(ctx context.Context, id string) (*coffer.Backup, error) {
	if id == "" {
		return nil, coffer.Errorf(coffer.KindInvalid, "backup_id_required", "name the backup to restore (backup_id)").
			With("field", "body.backup_id")
	}
	b, err := s.store.GetBackup(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := checkRestorable(b); err != nil {
		return nil, err
	}
	return b, nil
}

func checkRestorable(b *coffer.Backup) error {
	if (b.State != coffer.JobSucceeded && b.State != coffer.JobPartial) || b.RootTree == "" {
		return coffer.Errorf(coffer.KindConflict, "backup_not_restorable",
			"backup %s is %s: only a backup that finished succeeded or partial can be restored", b.ID, b.State).
			With("state", string(b.State))
	}
	return nil
}

// cleanPaths checks and normalizes the paths of a restore: slash-separated,
// relative to the backup's root (a leading "/" is dropped), no ".."
// components, no NUL. A path naming the root means everything (nil).
func cleanPaths(in []string) ([]string, error) {
	if len(in) > MaxPaths {
		return nil, coffer.Errorf(coffer.KindInvalid, "too_many_paths",
			"a restore takes at most %d paths, not %d: restore a common parent instead", MaxPaths, len(in)).
			With("limit", MaxPaths)
	}
	var out []string
	all := false
	for _, p := range in {
		bad := func(why string) error {
			return coffer.Errorf(coffer.KindInvalid, "invalid_path", "path %q %s", p, why).With("field", "body.paths")
		}
		switch {
		case p == "":
			return nil, bad("is empty: name a path inside the backup, e.g. home/user/docs")
		case len(p) > MaxPathLength:
			return nil, bad(fmt.Sprintf("is longer than %d bytes: restore a parent directory instead", MaxPathLength))
		case strings.ContainsRune(p, 0):
			return nil, bad("contains a NUL byte")
		case slices.Contains(strings.Split(p, "/"), ".."):
			return nil, bad("contains a \"..\" component: paths must stay inside the backup")
		}
		c := strings.TrimPrefix(path.Clean("/"+p), "/")
		if c == "" {
			all = true // the root: everything
		} else if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	if all {
		return nil, nil
	}
	return out, nil
}

// cleanDestination checks the destination directory: absolute, no NUL;
// it is returned cleaned.
func cleanDestination(d string) (string, error) {
	bad := func(why string) error {
		return coffer.Errorf(coffer.KindInvalid, "invalid_destination", "destination %q %s", d, why).
			With("field", "body.destination")
	}
	switch {
	case d == "":
		return "", coffer.Errorf(coffer.KindInvalid, "invalid_destination",
			"name the directory to restore into (destination), an absolute path on the target machine").
			With("field", "body.destination")
	case len(d) > MaxPathLength:
		return "", bad(fmt.Sprintf("is longer than %d bytes: choose a shorter directory", MaxPathLength))
	case strings.ContainsRune(d, 0):
		return "", bad("contains a NUL byte")
	case !strings.HasPrefix(d, "/"):
		return "", bad("is not absolute: give the full path of a directory on the target machine")
	}
	return path.Clean(d), nil
}

func overwritePolicy(o coffer.Overwrite) (coffer.Overwrite, error) {
	if o == "" {
		return coffer.OverwriteSkip, nil
	}
	if !slices.Contains(coffer.Overwrites, o) {
		return "", coffer.Errorf(coffer.KindInvalid, "invalid_overwrite",
			"overwrite policy %q is not valid: use overwrite, skip, if-newer or rename", o).With("field", "body.overwrite")
	}
	return o, nil
}
