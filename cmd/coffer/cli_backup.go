package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/agent"
)

type backupCmd struct {
	stateDirFlag
	workersFlag
	Paths         []string `arg:"" name:"path" sep:"none" help:"Files and directories to back up; relative paths are taken from the current directory."`
	Exclude       []string `help:"Leave out what matches this gitignore-style pattern, matched against absolute paths (repeatable): *.tmp, /home/*/.cache/, **/node_modules/." placeholder:"PATTERN" short:"e" sep:"none"`
	Full          bool     `help:"Read every file again instead of trusting the change cache (size, times, inode) of the previous backup."`
	OneFileSystem bool     `help:"Do not descend into other file systems (mount points) below the given paths." short:"x"`
	JSON          bool     `help:"Print JSON lines on stdout instead: progress objects, then the summary."`
}

// Help is the text after the flags in "coffer backup --help".
func (backupCmd) Help() string {
	return `The backup runs on this machine as its enrolled agent (see "coffer agent enroll") and appears in the server's history like any other. Ctrl-C cancels it; the server records it as canceled.

Exit codes: 0 the backup succeeded; 3 it finished but some entries could not be read (listed in the summary: the backup is partial); 1 it failed or was canceled, or could not start.`
}

// Run backs up the paths and prints the summary.
func (c *backupCmd) Run(g *globals) error {
	mode := chooseOutput(c.JSON, os.Stderr)
	view := startProgress(mode, progressWriter(mode, g))
	defer view.finish()
	a, err := c.openAgent(view.logger(g.logger), c.Workers)
	if err != nil {
		return err
	}
	ctx, stop := jobContext(func() { view.notice("Canceling the backup… (Ctrl-C again quits at once)") })
	defer stop()
	req := agent.BackupRequest{Paths: c.Paths, Exclude: c.Exclude, Full: c.Full, OneFileSystem: c.OneFileSystem}
	return runBackup(ctx, a, req, view, g.stdout, mode == outputJSON)
}

// progressWriter is where the live progress goes: the terminal's stderr,
// or stdout for JSON lines.
func progressWriter(mode outputMode, g *globals) io.Writer {
	if mode == outputJSON {
		return g.stdout
	}
	return os.Stderr
}

// backupRunner is the part of *agent.Agent the backup command uses.
type backupRunner interface {
	Backup(ctx context.Context, req agent.BackupRequest, onProgress func(agent.Progress)) (*agent.BackupResult, error)
}

// runBackup runs the backup, showing progress on view, and reports its
// outcome on out: a summary, or a JSON line. The returned error carries
// the exit code.
func runBackup(ctx context.Context, a backupRunner, req agent.BackupRequest, view *progressView, out io.Writer, jsonOut bool) error {
	res, err := a.Backup(ctx, req, func(p agent.Progress) { view.update(backupProgress(p)) })
	view.finish()
	if res == nil || res.BackupID == "" { // it never started: there is nothing to sum up
		if err == nil {
			err = fmt.Errorf("the agent returned no backup")
		}
		return describeError(err)
	}
	s := newBackupSummary(res, failureText(ctx, "backup", res.BackupID, err))
	if jsonOut {
		if err := writeJSONLine(out, s); err != nil {
			return err
		}
	} else {
		s.writeText(out)
	}
	return s.exit()
}

// backupProgress turns the agent's report into the display's terms. The
// bytes done are an estimate that only grows: the size of the files
// finished (read, or found unchanged), or the bytes read when that is more
// — as it is while a large file is read, since a file counts as finished
// only at its end.
func backupProgress(p agent.Progress) jobProgress {
	st := p.Stats
	done := max(st.LogicalBytes, st.ReadBytes)
	note := ""
	if st.AddedBytes > 0 {
		note = "added " + formatBytes(st.AddedBytes)
	}
	return jobProgress{Files: st.Files, TotalFiles: st.TotalFiles, Bytes: done, TotalBytes: st.TotalBytes,
		Note: progressNote(note, st.ErrorCount), CurrentPath: p.CurrentPath, Elapsed: p.Elapsed, Stats: st}
}

// backupSummary is a backup's outcome: the last JSON line of --json, and
// the figures of the text summary.
type backupSummary struct {
	Type            string             `json:"type"` // "summary"
	BackupID        string             `json:"backup_id"`
	State           coffer.JobState    `json:"state"`
	Stats           coffer.BackupStats `json:"stats"`
	DedupRatio      *float64           `json:"dedup_ratio"` // null when there is none (no data, or nothing added)
	Errors          []coffer.PathError `json:"errors"`
	Error           string             `json:"error,omitempty"` // why it failed or was canceled
	DurationSeconds float64            `json:"duration_seconds"`

	duration time.Duration
}

func newBackupSummary(res *agent.BackupResult, failure string) *backupSummary {
	s := &backupSummary{Type: "summary", BackupID: res.BackupID, State: res.State, Stats: res.Stats,
		Errors: res.Errors, Error: failure, DurationSeconds: res.Duration.Seconds(), duration: res.Duration}
	if s.Errors == nil {
		s.Errors = []coffer.PathError{}
	}
	if r, ok := dedupRatio(res.Stats.LogicalBytes, res.Stats.AddedBytes); ok {
		s.DedupRatio = &r
	}
	return s
}

// exit is the command's outcome: nil for success, else the exit code.
func (s *backupSummary) exit() error {
	return jobExit("backup", s.BackupID, s.State)
}

// writeText prints the summary for a person.
func (s *backupSummary) writeText(w io.Writer) {
	st := s.Stats
	row := writeSummaryHead(w, "Backup "+s.BackupID, s.State, s.duration, s.Error)
	row("Files", "%s: %s new, %s changed, %s unchanged", formatCount(st.Files),
		formatCount(st.FilesNew), formatCount(st.FilesChanged), formatCount(st.FilesUnchanged))
	row("Directories", "%s", formatCount(st.Dirs))
	if st.Symlinks > 0 {
		row("Symlinks", "%s", formatCount(st.Symlinks))
	}
	if st.Others > 0 {
		row("Special", "%s (devices, fifos, sockets)", formatCount(st.Others))
	}
	if st.Excluded > 0 {
		row("Excluded", "%s", formatCount(st.Excluded))
	}
	row("Size", "%s", formatBytes(st.LogicalBytes))
	row("Read", "%s", formatBytes(st.ReadBytes))
	row("Added", "%s stored (%s before compression), %s data and %s tree blobs", formatBytes(st.AddedBytes),
		formatBytes(st.AddedRawBytes), formatCount(st.DataBlobs), formatCount(st.TreeBlobs))
	row("Dedup ratio", "%s", formatDedup(st.LogicalBytes, st.AddedBytes))
	errCount := max(st.ErrorCount, uint64(len(s.Errors)))
	row("Errors", "%s", formatCount(errCount))
	if errCount > 0 {
		writePathErrors(w, s.Errors, errCount)
	}
	if s.State == coffer.JobPartial {
		fmt.Fprintln(w, "\nThe backup is partial: the entries above are missing from it or were stored as read while they changed.")
	}
}
