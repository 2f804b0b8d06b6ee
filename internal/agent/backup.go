package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/apiclient"
	"github.com/cofferhq/coffer/internal/engine/archiver"
	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/protocol"
)

// BackupRequest says which backup to run: the queued backup BackupID (the
// server knows its paths), or, without BackupID, an ad-hoc backup of
// Paths (made absolute) that the server records like any other.
type BackupRequest struct {
	BackupID      string
	Paths         []string
	Exclude       []string // gitignore-style patterns
	Full          bool     // read every file, ignoring the change cache
	OneFileSystem bool     // do not cross into other file systems
}

// Progress is a running backup's progress, for the CLI.
type Progress struct {
	Stats       coffer.BackupStats
	CurrentPath string
	Elapsed     time.Duration
}

// BackupResult is how a backup ended. State is succeeded, partial (Errors
// lists what could not be stored), failed or canceled.
type BackupResult struct {
	BackupID string
	State    coffer.JobState
	Stats    coffer.BackupStats
	Errors   []coffer.PathError
	Duration time.Duration
}

// Backup runs one backup to its end and records the outcome on the
// server: a commit (succeeded or partial), or a failure (failed, or
// canceled when ctx ends or the server cancels it). A backup that did
// not succeed or end partial returns an error along with its result.
// onProgress, when set, is called a few times a second from another
// goroutine.
func (a *Agent) Backup(ctx context.Context, req BackupRequest, onProgress func(Progress)) (*BackupResult, error) {
	start := time.Now()
	res := &BackupResult{BackupID: req.BackupID, State: coffer.JobFailed}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	finish := func(err error) (*BackupResult, error) {
		res.Duration = time.Since(start)
		return res, err
	}

	sreq := protocol.StartBackupRequest{BackupID: req.BackupID}
	if req.BackupID != "" {
		done, err := a.jobs.add(req.BackupID, cancel)
		if err != nil {
			return finish(fmt.Errorf("backup %s: %w", req.BackupID, err))
		}
		defer done()
	} else {
		paths, err := absPaths(req.Paths)
		if err != nil {
			return finish(err)
		}
		host, _ := os.Hostname()
		sreq = protocol.StartBackupRequest{Paths: paths, Exclude: req.Exclude, Full: req.Full, OneFileSystem: req.OneFileSystem, Hostname: host}
	}
	started, err := a.api.StartBackup(ctx, sreq)
	if err != nil {
		a.log.Warn("could not start the backup", "backup_id", req.BackupID, "err", err)
		return finish(fmt.Errorf("start the backup: %w", err))
	}
	id := started.Backup.ID
	res.BackupID = id
	if req.BackupID == "" {
		done, err := a.jobs.add(id, cancel)
		if err != nil {
			return finish(fmt.Errorf("backup %s: %w", id, err))
		}
		defer done()
	}
	log := a.log.With("backup_id", id)
	log.Info("backup started", "paths", started.Backup.Paths, "full", started.Backup.Full, "repository", started.Repository.ID)

	hooks := a.newHooks(started.Backup, log)
	err = a.runBackup(ctx, cancel, started, hooks, res, onProgress, start)
	if err == nil {
		res.Duration = time.Since(start)
		log.Info("backup finished", "state", res.State, "files", res.Stats.Files, "files_new", res.Stats.FilesNew,
			"files_changed", res.Stats.FilesChanged, "read_bytes", res.Stats.ReadBytes, "added_bytes", res.Stats.AddedBytes,
			"errors", len(res.Errors), "duration", res.Duration.Round(time.Millisecond))
		return res, nil
	}

	// Record the failure, even though ctx may be canceled.
	res.State, err = recordFailure(ctx, log, "backup", id, err, res.Errors, a.api.FailBackup)
	a.cleanup(ctx, hooks, res.State)
	return finish(err)
}

// chunkMemory is the archiver's budget of file chunks in flight. The
// agent runs under a tight soft memory limit (cmd/coffer), where every MiB
// of live heap makes the collector run more often: with 16 MiB instead of
// 32 a first backup of the 1 GiB reference corpus took about 10 % less
// CPU (7 alternating runs; peak RSS unchanged at 116–119 MiB), and four of
// the largest chunks still fit.
const chunkMemory = 16 << 20

// lookups is how many "which blobs are missing" requests a backup keeps
// in flight: each is a round trip to the server, and one at a time they
// held up the readers of an incremental backup (1.48 s against 1.31 s
// with four, for the reference corpus).
const lookups = 4

// runBackup archives, uploads and commits a started backup, filling res.
func (a *Agent) runBackup(ctx context.Context, cancel context.CancelCauseFunc, started *protocol.StartBackupResponse,
	hooks *backupHooks, res *BackupResult, onProgress func(Progress), start time.Time) error {
	job, params := started.Backup, started.Repository
	if hooks.hasCommands() && a.opts.RefuseCommands {
		return errCommandsRefused
	}
	if len(job.Paths) == 0 {
		return errors.New("the backup has no paths")
	}
	codec, err := codecFor(params)
	if err != nil {
		return err
	}
	defer codec.Close()
	cp, err := chunkerParams(params)
	if err != nil {
		return err
	}
	level := blob.Fastest
	if params.Compression != "" {
		if level, err = blob.ParseCompression(params.Compression); err != nil {
			return fmt.Errorf("the server sent compression %q: %w", params.Compression, err)
		}
	}
	log := a.log.With("backup_id", job.ID)
	if err := a.runPre(ctx, cancel, job.ID, hooks); err != nil {
		return err
	}
	cachePath := cacheFile(a.opts.StateDir, params.ID, job.Paths)
	var parent *changeCache
	if !job.Full {
		parent, err = loadCache(cachePath, params.ID, job.Paths)
		if err != nil {
			log.Warn("ignoring the change cache: every file is read", "cache", cachePath, "err", err)
			parent = nil
		}
	}
	switch {
	case job.Full:
		log.Info("full backup: every file is read")
	case parent != nil:
		log.Info("unchanged files are taken from the previous backup", "parent_backup", parent.backupID)
	default:
		log.Info("no previous backup of these paths here: every file is read")
	}

	var postErrs []coffer.PathError // the post commands that failed, once they ran
	for attempt := 1; ; attempt++ {
		rec := newCacheRecorder()
		prog := &archiver.Progress{}
		u := newUploader(ctx, a.api, job.ID, codec, params, a.uploads)
		o := archiver.Options{Codec: codec, Chunker: cp, Compression: level, SkipIncompressible: true,
			Workers: a.opts.Workers, Savers: a.opts.Workers, MemoryLimit: chunkMemory, BatchSize: 1024, Queries: lookups,
			Exclude: job.Exclude, OneFileSystem: job.OneFileSystem, OnFile: rec.record, Progress: prog}
		if parent != nil {
			o.Cache = parent
		}
		arch, err := archiver.New(o)
		if err != nil {
			u.Close()
			return err
		}
		report := func(ctx context.Context) (*protocol.ProgressResponse, error) {
			return a.api.BackupProgress(ctx, job.ID, protocol.BackupProgress{Stats: progressStats(prog, u), CurrentPath: truncate(prog.CurrentPath(), 4096)})
		}
		var local func()
		if onProgress != nil {
			local = func() {
				onProgress(Progress{Stats: progressStats(prog, u), CurrentPath: prog.CurrentPath(), Elapsed: time.Since(start)})
			}
		}
		stop := a.monitor(ctx, cancel, log, report, local)
		root, st, err := arch.ArchivePaths(ctx, u, job.Paths)
		if err == nil {
			err = u.Flush(ctx)
		}
		u.Close()
		stop()
		res.Stats = backupStats(st, u)
		res.Errors = fileErrors(st.Errors)
		log.Info("backup scanned", "files_found", prog.FoundFiles.Load(), "bytes_found", prog.FoundBytes.Load(),
			"dirs", st.Dirs, "excluded", st.Excluded, "errors", len(st.Errors))
		logPathErrors(log, "could not back up a path", res.Errors)
		if err != nil {
			return err
		}
		if attempt == 1 {
			if postErrs, err = a.runPost(ctx, cancel, job.ID, hooks, res); err != nil {
				return err
			}
		}
		if len(postErrs) > 0 { // first, so that the limit never drops them
			res.Errors = append(slices.Clone(postErrs), firstN(res.Errors, maxPathErrors-len(postErrs))...)
			res.Stats.ErrorCount += uint64(len(postErrs))
		}
		commit := protocol.CommitRequest{RootTree: root.String(), Stats: res.Stats, Errors: res.Errors, StartedAt: start.UTC()}
		if parent != nil {
			commit.ParentID = parent.backupID
		}
		b, err := a.api.Commit(ctx, job.ID, commit)
		if apiclient.IsCode(err, "missing_blobs") && attempt == 1 {
			log.Warn("the repository lacks blobs the change cache promised: backing up again, reading every file", "err", err)
			parent = nil
			continue
		}
		if err != nil {
			return fmt.Errorf("commit: %w", err)
		}
		res.State = b.State
		if !res.State.Final() {
			res.State = coffer.JobSucceeded
			if len(res.Errors) > 0 {
				res.State = coffer.JobPartial
			}
		}
		if res.State == coffer.JobSucceeded || res.State == coffer.JobPartial {
			if err := saveCache(cachePath, params.ID, job.Paths, job.ID, rec.entries); err != nil {
				log.Warn("could not save the change cache: the next backup reads every file", "cache", cachePath, "err", err)
			}
		}
		return nil
	}
}

// progressStats are a running backup's statistics.
func progressStats(p *archiver.Progress, u *uploader) coffer.BackupStats {
	return coffer.BackupStats{
		Files: p.Files.Load(), Dirs: p.Dirs.Load(), Symlinks: p.Symlinks.Load(), Others: p.Others.Load(),
		FilesNew: p.FilesNew.Load(), FilesChanged: p.FilesChanged.Load(), FilesUnchanged: p.FilesUnchanged.Load(),
		Excluded: p.Excluded.Load(), ErrorCount: p.Errors.Load(),
		LogicalBytes: p.Bytes.Load(), ReadBytes: p.ReadBytes.Load(), AddedRawBytes: p.AddedRawBytes.Load(),
		AddedBytes: u.storedBytes.Load(), UploadedBytes: u.sentBytes.Load(),
		DataBlobs: p.DataBlobs.Load(), TreeBlobs: p.TreeBlobs.Load(),
		TotalFiles: p.FoundFiles.Load(), TotalBytes: p.FoundBytes.Load(), BrokenLinks: p.BrokenLinks.Load(),
	}
}

// backupStats are a finished backup's statistics.
func backupStats(st archiver.Stats, u *uploader) coffer.BackupStats {
	return coffer.BackupStats{
		Files: st.Files, Dirs: st.Dirs, Symlinks: st.Symlinks, Others: st.Others,
		FilesNew: st.FilesNew, FilesChanged: st.FilesChanged, FilesUnchanged: st.FilesUnchanged,
		Excluded: st.Excluded, ErrorCount: uint64(len(st.Errors)),
		LogicalBytes: st.Bytes, ReadBytes: st.ReadBytes, AddedRawBytes: st.AddedRawBytes,
		AddedBytes: u.storedBytes.Load(), UploadedBytes: u.sentBytes.Load(),
		DataBlobs: st.DataBlobs, TreeBlobs: st.TreeBlobs,
		TotalFiles: st.Files, TotalBytes: st.Bytes, BrokenLinks: st.BrokenLinks,
	}
}

func fileErrors(errs []archiver.FileError) []coffer.PathError {
	out := make([]coffer.PathError, 0, min(len(errs), maxPathErrors))
	for _, e := range firstN(errs, maxPathErrors) {
		out = append(out, coffer.PathError{Path: e.Path, Message: truncate(e.Err.Error(), 4096)})
	}
	return out
}

// absPaths makes the paths of an ad-hoc backup absolute and clean.
func absPaths(paths []string) ([]string, error) {
	if len(paths) == 0 {
		return nil, errors.New("no paths to back up: name at least one")
	}
	out := make([]string, 0, len(paths))
	for _, p := range paths {
		if p == "" { // filepath.Abs would make it the working directory
			return nil, errors.New("an empty path was given: name a file or directory to back up")
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil, fmt.Errorf("path %q: %w", p, err)
		}
		out = append(out, abs)
	}
	return out, nil
}

// maxLoggedPathErrors is how many of a job's path errors are logged one by
// one (all of them are recorded with the job).
const maxLoggedPathErrors = 100

// logPathErrors logs a job's path errors, the first maxLoggedPathErrors
// each on its line.
func logPathErrors(log *slog.Logger, msg string, errs []coffer.PathError) {
	for _, e := range firstN(errs, maxLoggedPathErrors) {
		log.Warn(msg, "path", e.Path, "err", e.Message)
	}
	if n := len(errs) - maxLoggedPathErrors; n > 0 {
		log.Warn(fmt.Sprintf("%d more paths had errors; the job's record lists them", n))
	}
}

// truncate shortens s to at most n bytes (the server's field limits),
// not splitting a character.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
