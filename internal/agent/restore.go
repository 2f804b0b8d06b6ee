package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/restorer"
	"github.com/cofferhq/coffer/internal/protocol"
)

// RestoreRequest says which restore to run: the queued restore RestoreID
// (the server knows the rest), or, without it, a restore of BackupID (a
// backup of this client) to Destination on this machine.
type RestoreRequest struct {
	RestoreID   string
	BackupID    string
	Paths       []string // in the backup, slash-separated from its root; none: everything
	Destination string   // made absolute
	Overwrite   coffer.Overwrite
}

// RestoreProgress is a running restore's progress, for the CLI.
type RestoreProgress struct {
	Stats       coffer.RestoreStats
	CurrentPath string
	Elapsed     time.Duration
}

// RestoreResult is how a restore ended: succeeded, partial (Errors lists
// the entries not restored), failed or canceled.
type RestoreResult struct {
	RestoreID string
	State     coffer.JobState
	Stats     coffer.RestoreStats
	Errors    []coffer.PathError
	Duration  time.Duration
}

// Restore runs one restore to its end and records the outcome on the
// server. Every blob is checked against its id before it is written. A
// restore that did not succeed or end partial returns an error along with
// its result. onProgress, when set, is called a few times a second from
// another goroutine.
func (a *Agent) Restore(ctx context.Context, req RestoreRequest, onProgress func(RestoreProgress)) (*RestoreResult, error) {
	start := time.Now()
	res := &RestoreResult{RestoreID: req.RestoreID, State: coffer.JobFailed}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	finish := func(err error) (*RestoreResult, error) {
		res.Duration = time.Since(start)
		return res, err
	}

	sreq := protocol.StartRestoreRequest{RestoreID: req.RestoreID}
	if req.RestoreID != "" {
		done, err := a.jobs.add(req.RestoreID, cancel)
		if err != nil {
			return finish(fmt.Errorf("restore %s: %w", req.RestoreID, err))
		}
		defer done()
	} else {
		if req.BackupID == "" || req.Destination == "" {
			return finish(errNoRestore)
		}
		dest, err := filepath.Abs(req.Destination)
		if err != nil {
			return finish(fmt.Errorf("destination %q: %w", req.Destination, err))
		}
		sreq = protocol.StartRestoreRequest{BackupID: req.BackupID, Paths: req.Paths, Destination: dest, Overwrite: req.Overwrite}
	}
	started, err := a.api.StartRestore(ctx, sreq)
	if err != nil {
		a.log.Warn("could not start the restore", "restore_id", req.RestoreID, "err", err)
		return finish(fmt.Errorf("start the restore: %w", err))
	}
	id := started.Restore.ID
	res.RestoreID = id
	if req.RestoreID == "" {
		done, err := a.jobs.add(id, cancel)
		if err != nil {
			return finish(fmt.Errorf("restore %s: %w", id, err))
		}
		defer done()
	}
	log := a.log.With("restore_id", id)
	log.Info("restore started", "backup_id", started.Restore.BackupID, "paths", started.Restore.Paths,
		"destination", started.Restore.Destination, "overwrite", started.Restore.Overwrite)

	err = a.runRestore(ctx, cancel, started, res, onProgress, start)
	if err == nil {
		res.Duration = time.Since(start)
		log.Info("restore finished", "state", res.State, "files", res.Stats.Files, "bytes", res.Stats.Bytes,
			"errors", len(res.Errors), "duration", res.Duration.Round(time.Millisecond))
		return res, nil
	}
	res.State, err = recordFailure(ctx, log, "restore", id, err, res.Errors, a.api.FailRestore)
	return finish(err)
}

// errNoRestore is returned when a restore is asked for without its subject.
var errNoRestore = errors.New("give a restore id, or a backup id and a destination")

// runRestore writes a started restore's entries and records its end.
func (a *Agent) runRestore(ctx context.Context, cancel context.CancelCauseFunc, started *protocol.StartRestoreResponse,
	res *RestoreResult, onProgress func(RestoreProgress), start time.Time) error {
	job := started.Restore
	if !filepath.IsAbs(job.Destination) {
		return fmt.Errorf("the destination %q is not an absolute path", job.Destination)
	}
	root, err := blob.ParseID(job.RootTree)
	if err != nil {
		return fmt.Errorf("the server sent root tree %q: %w", job.RootTree, err)
	}
	policy, err := overwritePolicy(job.Overwrite)
	if err != nil {
		return err
	}
	codec, err := codecFor(started.Repository)
	if err != nil {
		return err
	}
	defer codec.Close()
	if err := os.MkdirAll(job.Destination, 0o700); err != nil {
		return fmt.Errorf("create the destination: %w", err)
	}
	prog := &restorer.Progress{}
	r, err := restorer.New(&remoteRepo{api: a.api, restoreID: job.ID, codec: codec, maxRead: started.Repository.MaxUploadBytes},
		restorer.Options{Workers: a.opts.Workers, Overwrite: policy, Progress: prog})
	if err != nil {
		return err
	}
	live := func() coffer.RestoreStats {
		return coffer.RestoreStats{Files: prog.Files.Load(), Dirs: prog.Dirs.Load(), Bytes: prog.Bytes.Load(), ErrorCount: prog.Errors.Load()}
	}
	report := func(ctx context.Context) (*protocol.ProgressResponse, error) {
		return a.api.RestoreProgress(ctx, job.ID, protocol.RestoreProgress{Stats: live(), CurrentPath: truncate(prog.CurrentPath(), 4096)})
	}
	var local func()
	if onProgress != nil {
		local = func() {
			onProgress(RestoreProgress{Stats: live(), CurrentPath: prog.CurrentPath(), Elapsed: time.Since(start)})
		}
	}
	log := a.log.With("restore_id", job.ID)
	stop := a.monitor(ctx, cancel, log, report, local)
	st, err := r.RestorePaths(ctx, root, job.Paths, job.Destination)
	stop()
	res.Stats = restoreStats(st)
	res.Errors = entryErrors(st.Errors)
	logPathErrors(log, "could not restore a path", res.Errors)
	if err != nil {
		return err
	}
	fin, err := a.api.FinishRestore(ctx, job.ID, protocol.FinishRestoreRequest{Stats: res.Stats, Errors: res.Errors})
	if err != nil {
		return fmt.Errorf("record the restore's end: %w", err)
	}
	res.State = coffer.JobSucceeded
	if len(res.Errors) > 0 {
		res.State = coffer.JobPartial
	}
	if fin != nil && fin.State.Final() {
		res.State = fin.State
	}
	return nil
}

// overwritePolicy maps the wire policy to the restorer's.
func overwritePolicy(o coffer.Overwrite) (restorer.Overwrite, error) {
	switch o {
	case coffer.OverwriteAlways, "":
		return restorer.OverwriteAlways, nil
	case coffer.OverwriteSkip:
		return restorer.OverwriteSkip, nil
	case coffer.OverwriteIfNewer:
		return restorer.OverwriteIfNewer, nil
	case coffer.OverwriteRename:
		return restorer.OverwriteRename, nil
	}
	return 0, fmt.Errorf("unknown overwrite policy %q: use overwrite, skip, if-newer or rename", o)
}

func restoreStats(st restorer.Stats) coffer.RestoreStats {
	return coffer.RestoreStats{Files: st.Files, Dirs: st.Dirs, Symlinks: st.Symlinks, Links: st.Links, Others: st.Others,
		Skipped: st.Skipped + st.Kept, Bytes: st.Bytes, ErrorCount: uint64(len(st.Errors))}
}

func entryErrors(errs []restorer.EntryError) []coffer.PathError {
	out := make([]coffer.PathError, 0, min(len(errs), maxPathErrors))
	for _, e := range firstN(errs, maxPathErrors) {
		out = append(out, coffer.PathError{Path: e.Path, Message: truncate(e.Err.Error(), 4096)})
	}
	return out
}
