package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/agent"
)

type restoreCmd struct {
	stateDirFlag
	workersFlag
	BackupID  string   `arg:"" name:"backup-id" help:"The backup to restore (see \"coffer backups\")."`
	Target    string   `help:"Directory to restore into; relative paths are taken from the current directory. The backup's absolute layout is recreated below it." required:"" placeholder:"DIR" short:"t"`
	Path      []string `help:"Restore only this path of the backup and what is below it, e.g. home/alice/docs (repeatable; a leading / is ignored). Default: everything." placeholder:"PATH" short:"p" sep:"none"`
	Overwrite string   `help:"What to do with an entry that already exists at the target: keep it (skip), replace it (overwrite), replace it if the backup's copy is newer (if-newer), or restore beside it as NAME.restored-N (rename)." enum:"skip,overwrite,if-newer,rename" default:"skip"`
	JSON      bool     `help:"Print JSON lines on stdout instead: progress objects, then the summary."`
}

// Help is the text after the flags in "coffer restore --help".
func (restoreCmd) Help() string {
	return `Restores a backup of this machine into --target on this machine, as its enrolled agent (see "coffer agent enroll"). Restoring home/alice/docs to /tmp/r writes /tmp/r/home/alice/docs/…; nothing is ever written outside the target. Every file's content is checked against the backup. Ctrl-C cancels the restore.

Exit codes: 0 the restore succeeded; 3 it finished but some entries could not be restored (listed in the summary); 1 it failed or was canceled, or could not start.`
}

// Run restores the backup and prints the summary.
func (c *restoreCmd) Run(g *globals) error {
	req, err := c.request()
	if err != nil {
		return err
	}
	mode := chooseOutput(c.JSON, os.Stderr)
	view := startProgress(mode, progressWriter(mode, g))
	defer view.finish()
	a, err := c.openAgent(view.logger(g.logger), c.Workers)
	if err != nil {
		return err
	}
	ctx, stop := jobContext(func() { view.notice("Canceling the restore… (Ctrl-C again quits at once)") })
	defer stop()
	return runRestore(ctx, a, req, view, g.stdout, mode == outputJSON)
}

// request checks the command line and builds the agent's request: an
// absolute target, and paths in the backup's slash-separated form.
func (c *restoreCmd) request() (agent.RestoreRequest, error) {
	if c.Target == "" {
		return agent.RestoreRequest{}, fmt.Errorf("--target is empty: name the directory to restore into")
	}
	target, err := filepath.Abs(c.Target)
	if err != nil {
		return agent.RestoreRequest{}, fmt.Errorf("--target %q: %w", c.Target, err)
	}
	paths, err := backupPaths(c.Path)
	if err != nil {
		return agent.RestoreRequest{}, err
	}
	return agent.RestoreRequest{BackupID: c.BackupID, Paths: paths, Destination: target, Overwrite: coffer.Overwrite(c.Overwrite)}, nil
}

// backupPaths puts paths inside a backup in their canonical form: slash-
// separated, relative to the backup's root, clean. The root itself (/ or
// .) stands for everything, which is no path at all.
func backupPaths(in []string) ([]string, error) {
	var out []string
	for _, p := range in {
		clean, err := backupPath(p)
		if err != nil {
			return nil, err
		}
		if clean == "" {
			return nil, nil
		}
		out = append(out, clean)
	}
	return out, nil
}

// backupPath is one path inside a backup, canonical; "" is the root.
func backupPath(p string) (string, error) {
	if p == "" {
		return "", fmt.Errorf("an empty path was given: name a path in the backup, e.g. home/alice/docs, or / for everything")
	}
	clean := strings.TrimLeft(path.Clean("/"+p), "/")
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return "", fmt.Errorf("path %q goes up with ..: paths in a backup start at its root, e.g. home/alice/docs", p)
		}
	}
	return clean, nil
}

// restoreRunner is the part of *agent.Agent the restore command uses.
type restoreRunner interface {
	Restore(ctx context.Context, req agent.RestoreRequest, onProgress func(agent.RestoreProgress)) (*agent.RestoreResult, error)
}

// runRestore runs the restore, showing progress on view, and reports its
// outcome on out. The returned error carries the exit code.
func runRestore(ctx context.Context, a restoreRunner, req agent.RestoreRequest, view *progressView, out io.Writer, jsonOut bool) error {
	res, err := a.Restore(ctx, req, func(p agent.RestoreProgress) { view.update(restoreProgress(p)) })
	view.finish()
	if res == nil || res.RestoreID == "" { // it never started: there is nothing to sum up
		if err == nil {
			err = fmt.Errorf("the agent returned no restore")
		}
		return describeError(err)
	}
	s := newRestoreSummary(res, req, failureText(ctx, "restore", res.RestoreID, err))
	if jsonOut {
		if err := writeJSONLine(out, s); err != nil {
			return err
		}
	} else {
		s.writeText(out)
	}
	return s.exit()
}

func restoreProgress(p agent.RestoreProgress) jobProgress {
	st := p.Stats
	note := ""
	if st.Skipped > 0 {
		note = formatCount(st.Skipped) + " skipped"
	}
	return jobProgress{Files: st.Files, TotalFiles: st.TotalFiles, Bytes: st.Bytes, TotalBytes: st.TotalBytes,
		Note: progressNote(note, st.ErrorCount), CurrentPath: p.CurrentPath, Elapsed: p.Elapsed, Stats: st}
}

// restoreSummary is a restore's outcome: the last JSON line of --json,
// and the figures of the text summary.
type restoreSummary struct {
	Type            string              `json:"type"` // "summary"
	RestoreID       string              `json:"restore_id"`
	BackupID        string              `json:"backup_id"`
	Target          string              `json:"target"`
	State           coffer.JobState     `json:"state"`
	Stats           coffer.RestoreStats `json:"stats"`
	Errors          []coffer.PathError  `json:"errors"`
	Error           string              `json:"error,omitempty"`
	DurationSeconds float64             `json:"duration_seconds"`

	overwrite coffer.Overwrite
	duration  time.Duration
}

func newRestoreSummary(res *agent.RestoreResult, req agent.RestoreRequest, failure string) *restoreSummary {
	s := &restoreSummary{Type: "summary", RestoreID: res.RestoreID, BackupID: req.BackupID, Target: req.Destination,
		State: res.State, Stats: res.Stats, Errors: res.Errors, Error: failure, DurationSeconds: res.Duration.Seconds(),
		overwrite: req.Overwrite, duration: res.Duration}
	if s.Errors == nil {
		s.Errors = []coffer.PathError{}
	}
	return s
}

func (s *restoreSummary) exit() error {
	return jobExit("restore", s.RestoreID, s.State)
}

func (s *restoreSummary) writeText(w io.Writer) {
	st := s.Stats
	row := writeSummaryHead(w, "Restore "+s.RestoreID+" of backup "+s.BackupID, s.State, s.duration, s.Error)
	row("Target", "%s", quoteName(s.Target))
	row("Files", "%s (%s)", formatCount(st.Files), formatBytes(st.Bytes))
	row("Directories", "%s", formatCount(st.Dirs))
	if st.Symlinks > 0 {
		row("Symlinks", "%s", formatCount(st.Symlinks))
	}
	if st.Links > 0 {
		row("Hard links", "%s", formatCount(st.Links))
	}
	if st.Others > 0 {
		row("Special", "%s (devices, fifos, sockets)", formatCount(st.Others))
	}
	if st.Skipped > 0 {
		row("Skipped", "%s already at the target (--overwrite %s)", formatCount(st.Skipped), s.overwrite)
	}
	errCount := max(st.ErrorCount, uint64(len(s.Errors)))
	row("Errors", "%s", formatCount(errCount))
	if errCount > 0 {
		writePathErrors(w, s.Errors, errCount)
	}
	if s.State == coffer.JobPartial {
		fmt.Fprintln(w, "\nThe restore is partial: the entries above were not restored as they are in the backup.")
	}
}
