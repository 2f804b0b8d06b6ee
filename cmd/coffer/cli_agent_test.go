package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kong"
	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/agent"
	"github.com/cofferhq/coffer/internal/apiclient"
	"github.com/cofferhq/coffer/internal/protocol"
	"github.com/google/go-cmp/cmp"
)

func TestAgentCommandLine(t *testing.T) {
	c, cmd, err := parse(t, "agent", "enroll", "--server", "https://coffer.example.com", "--token", "cfr_e_x", "--name", "web-1", "--state-dir", "/srv/agent")
	if err != nil || cmd != "agent enroll" {
		t.Fatalf("agent enroll = %q, %v", cmd, err)
	}
	e := c.Agent.Enroll
	if e.Server != "https://coffer.example.com" || e.Token != "cfr_e_x" || e.Name != "web-1" || e.dir() != "/srv/agent" {
		t.Errorf("flags not applied: %+v", e)
	}
	if _, _, err := parse(t, "agent", "enroll", "--server", "https://x"); err == nil || !strings.Contains(err.Error(), "--token") {
		t.Errorf("enroll without a token: %v", err)
	}
	if _, cmd, err := parse(t, "agent", "run"); err != nil || cmd != "agent run" {
		t.Errorf("agent run = %q, %v", cmd, err)
	}

	// The token and the state directory come from the environment too.
	cleanEnv(t)
	t.Setenv("COFFER_ENROLL_TOKEN", "cfr_e_env")
	t.Setenv("COFFER_SERVER", "http://127.0.0.1:8080")
	t.Setenv("COFFER_STATE_DIR", "/var/lib/other")
	var env cli
	p, err := newParser(&env)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Parse([]string{"agent", "enroll"}); err != nil {
		t.Fatal(err)
	}
	if env.Agent.Enroll.Token != "cfr_e_env" || env.Agent.Enroll.Server != "http://127.0.0.1:8080" || env.Agent.Enroll.dir() != "/var/lib/other" {
		t.Errorf("environment not applied: %+v", env.Agent.Enroll)
	}
	if _, err := p.Parse([]string{"backups"}); err != nil || env.Backups.dir() != "/var/lib/other" || env.Backups.Limit != 20 {
		t.Errorf("backups: %v, %+v", err, env.Backups)
	}
}

func TestBackupCommandLine(t *testing.T) {
	c, cmd, err := parse(t, "backup", "docs", "/etc", "--exclude", "*.tmp", "-e", "{a,b}.log", "--full", "-x", "--json", "--workers", "3")
	if err != nil || cmd != "backup <path>" {
		t.Fatalf("backup = %q, %v", cmd, err)
	}
	b := c.Backup
	if diff := cmp.Diff([]string{"docs", "/etc"}, b.Paths); diff != "" {
		t.Errorf("paths (-want +got):\n%s", diff)
	}
	// Commas belong to the pattern: kong must not split them.
	if diff := cmp.Diff([]string{"*.tmp", "{a,b}.log"}, b.Exclude); diff != "" {
		t.Errorf("exclude (-want +got):\n%s", diff)
	}
	if !b.Full || !b.OneFileSystem || !b.JSON || b.Workers != 3 {
		t.Errorf("flags not applied: %+v", b)
	}
	if _, _, err := parse(t, "backup"); err == nil {
		t.Error("backup without a path was accepted")
	}
}

func TestRestoreCommandLine(t *testing.T) {
	c, cmd, err := parse(t, "restore", "01JBACKUP", "--target", "out", "--path", "/home/a,b", "-p", "etc", "--overwrite", "if-newer")
	if err != nil || cmd != "restore <backup-id>" {
		t.Fatalf("restore = %q, %v", cmd, err)
	}
	r := c.Restore
	if r.BackupID != "01JBACKUP" || r.Target != "out" || r.Overwrite != "if-newer" || !slices.Equal(r.Path, []string{"/home/a,b", "etc"}) {
		t.Errorf("flags not applied: %+v", r)
	}
	if c, _, _ := parse(t, "restore", "01JBACKUP", "--target", "/x"); c.Restore.Overwrite != "skip" {
		t.Errorf("default overwrite policy %q, want skip", c.Restore.Overwrite)
	}
	if _, _, err := parse(t, "restore", "01JBACKUP"); err == nil || !strings.Contains(err.Error(), "--target") {
		t.Errorf("restore without --target: %v", err)
	}
	if _, _, err := parse(t, "restore", "01JBACKUP", "--target", "/x", "--overwrite", "always"); err == nil {
		t.Error("an unknown overwrite policy was accepted")
	}
}

func TestListCommandLine(t *testing.T) {
	c, cmd, err := parse(t, "backups", "--limit", "5", "--json")
	if err != nil || cmd != "backups" || c.Backups.Limit != 5 || !c.Backups.JSON {
		t.Errorf("backups = %q, %v, %+v", cmd, err, c.Backups)
	}
	c, cmd, err = parse(t, "ls", "01JBACKUP", "/home/alice", "--json")
	if err != nil || cmd != "ls <backup-id> <path>" || c.Ls.BackupID != "01JBACKUP" || c.Ls.Path != "/home/alice" || !c.Ls.JSON {
		t.Errorf("ls = %q, %v, %+v", cmd, err, c.Ls)
	}
	if c, cmd, err := parse(t, "ls", "01JBACKUP"); err != nil || cmd != "ls <backup-id>" || c.Ls.Path != "" {
		t.Errorf("ls without a path = %q, %v", cmd, err)
	}
}

// helpOf returns what "coffer ARGS --help" prints.
func helpOf(t *testing.T, args ...string) string {
	t.Helper()
	cleanEnv(t)
	var out bytes.Buffer
	var c cli
	exited := false
	p, err := newParser(&c, kong.Writers(&out, &out), kong.Exit(func(int) { exited = true }))
	if err != nil {
		t.Fatal(err)
	}
	p.Parse(append(args, "--help"))
	if !exited {
		t.Fatalf("%s --help did not exit", strings.Join(args, " "))
	}
	return out.String()
}

func TestAgentSideHelp(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"agent", "enroll"}, []string{"--server", "--token", "--name", "COFFER_ENROLL_TOKEN", "POST /api/v1/enrollment-tokens"}},
		{[]string{"agent", "run"}, nil},
		{[]string{"backup"}, []string{"--exclude", "gitignore-style", "--full", "--one-file-system", "--json", "Exit codes: 0", "3 it finished", "1 it failed"}},
		{[]string{"restore"}, []string{"--target", "--path", "--overwrite", "if-newer", "rename", "Exit codes: 0", "3 it finished"}},
		{[]string{"backups"}, []string{"--limit", "--json"}},
		{[]string{"ls"}, []string{"<backup-id>", "[<path>]", "--json"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out := helpOf(t, tc.args...)
			for _, want := range append(tc.want, "--state-dir", "COFFER_STATE_DIR") {
				if !strings.Contains(out, want) {
					t.Errorf("help lacks %q:\n%s", want, out)
				}
			}
		})
	}
	top := helpOf(t)
	for _, want := range []string{"agent enroll", "agent run", "backup", "restore", "backups", "ls"} {
		if !strings.Contains(top, "  "+want+" ") {
			t.Errorf("coffer --help does not list %q:\n%s", want, top)
		}
	}
}

// TestRestoreRequestPaths: the target is made absolute, paths in the
// backup canonical.
func TestRestoreRequestPaths(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	cwd, err := os.Getwd() // dir with symlinks the way the process sees it
	if err != nil {
		t.Fatal(err)
	}
	r := restoreCmd{BackupID: "01JB", Target: "out", Path: []string{"/home/u/docs", "etc//ssh/"}, Overwrite: "rename"}
	req, err := r.request()
	if err != nil {
		t.Fatal(err)
	}
	wantReq := agent.RestoreRequest{BackupID: "01JB", Destination: filepath.Join(cwd, "out"), Paths: []string{"home/u/docs", "etc/ssh"}, Overwrite: coffer.OverwriteRename}
	if diff := cmp.Diff(wantReq, req); diff != "" {
		t.Errorf("restore request (-want +got):\n%s", diff)
	}
}

func TestBackupPaths(t *testing.T) {
	for _, tc := range []struct {
		in      []string
		want    []string
		wantErr string
	}{
		{in: []string{"/home/u", "etc/"}, want: []string{"home/u", "etc"}},
		{in: []string{"home/u", "/"}, want: nil}, // the root is everything
		{in: []string{"."}, want: nil},
		{in: []string{"a//b/./c"}, want: []string{"a/b/c"}},
		{in: []string{"home/../etc"}, wantErr: "goes up"},
		{in: []string{"../x"}, wantErr: "goes up"},
		{in: []string{""}, wantErr: "empty path"},
	} {
		t.Run(strings.Join(tc.in, ","), func(t *testing.T) {
			got, err := backupPaths(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("backupPaths(%q) = %q, %v; want an error with %q", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Errorf("backupPaths(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestExitCodes(t *testing.T) {
	for state, want := range map[coffer.JobState]int{
		coffer.JobSucceeded: 0, coffer.JobPartial: 3, coffer.JobFailed: 1, coffer.JobCanceled: 1, coffer.JobRunning: 1, "": 1,
	} {
		if got := exitCode(state); got != want {
			t.Errorf("exitCode(%q) = %d, want %d", state, got, want)
		}
		err := (&backupSummary{BackupID: "b", State: state}).exit()
		var st *exitStatus
		switch {
		case want == 0 && err != nil:
			t.Errorf("%s: exit() = %v, want nil", state, err)
		case want != 0 && (!errors.As(err, &st) || st.ExitCode() != want):
			t.Errorf("%s: exit() = %v, want exit status %d", state, err, want)
		}
	}
}

// fakeJobs is a hand-written agent for the job commands.
type fakeJobs struct {
	progress []agent.Progress
	backup   *agent.BackupResult
	restore  *agent.RestoreResult
	err      error
	got      any // the request
}

func (f *fakeJobs) Backup(_ context.Context, req agent.BackupRequest, on func(agent.Progress)) (*agent.BackupResult, error) {
	f.got = req
	for _, p := range f.progress {
		on(p)
	}
	return f.backup, f.err
}

func (f *fakeJobs) Restore(_ context.Context, req agent.RestoreRequest, on func(agent.RestoreProgress)) (*agent.RestoreResult, error) {
	f.got = req
	on(agent.RestoreProgress{Stats: coffer.RestoreStats{Files: 1}, Elapsed: time.Second})
	return f.restore, f.err
}

func pathErrors(n int) []coffer.PathError {
	out := make([]coffer.PathError, n)
	for i := range out {
		out[i] = coffer.PathError{Path: fmt.Sprintf("home/u/f%02d", i), Message: "permission denied"}
	}
	return out
}

// lastLine is the last line of JSON lines output: the summary, after any
// progress lines.
func lastLine(b []byte) []byte {
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	return lines[len(lines)-1]
}

func TestBackupJSONSummary(t *testing.T) {
	f := &fakeJobs{
		progress: []agent.Progress{{Stats: coffer.BackupStats{Files: 3, LogicalBytes: 100}, CurrentPath: "/home/u/a", Elapsed: time.Second}},
		backup: &agent.BackupResult{BackupID: "01JB", State: coffer.JobPartial, Duration: 1500 * time.Millisecond,
			Stats:  coffer.BackupStats{Files: 3, FilesNew: 3, LogicalBytes: 3000, ReadBytes: 3000, AddedBytes: 1000, ErrorCount: 1},
			Errors: pathErrors(1)},
	}
	var out bytes.Buffer
	view := startProgress(outputJSON, &out)
	err := runBackup(context.Background(), f, agent.BackupRequest{Paths: []string{"/home/u"}}, view, &out, true)
	var st *exitStatus
	if !errors.As(err, &st) || st.ExitCode() != 3 {
		t.Fatalf("partial backup: %v, want exit status 3", err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var got map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &got); err != nil {
		t.Fatalf("last line %q: %v", lines[len(lines)-1], err)
	}
	want := map[string]any{
		"type": "summary", "backup_id": "01JB", "state": "partial", "duration_seconds": 1.5, "dedup_ratio": 3.0,
		"errors": []any{map[string]any{"path": "home/u/f00", "message": "permission denied"}},
	}
	stats, _ := got["stats"].(map[string]any)
	delete(got, "stats")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("summary (-want +got):\n%s", diff)
	}
	if stats["files_new"] != 3.0 || stats["added_bytes"] != 1000.0 || stats["errors"] != 1.0 {
		t.Errorf("summary stats: %v", stats)
	}

	// A failure: the summary says why, and there is no ratio to give.
	f.backup = &agent.BackupResult{BackupID: "01JC", State: coffer.JobFailed}
	f.err = fmt.Errorf("backup 01JC failed: %w", coffer.Errorf(coffer.KindConflict, "missing_blobs", "the repository lacks blobs the snapshot needs"))
	out.Reset()
	err = runBackup(context.Background(), f, agent.BackupRequest{}, startProgress(outputJSON, &out), &out, true)
	if !errors.As(err, &st) || st.ExitCode() != 1 {
		t.Fatalf("failed backup: %v, want exit status 1", err)
	}
	var failed backupSummary
	if err := json.Unmarshal(lastLine(out.Bytes()), &failed); err != nil {
		t.Fatal(err)
	}
	if failed.State != coffer.JobFailed || failed.Error != "the repository lacks blobs the snapshot needs (code missing_blobs)" ||
		failed.DedupRatio != nil || failed.Errors == nil {
		t.Errorf("failed summary: %+v", failed)
	}

	// Ctrl-C: the summary says so.
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(errInterrupted)
	f.backup = &agent.BackupResult{BackupID: "01JD", State: coffer.JobCanceled}
	f.err = fmt.Errorf("backup 01JD canceled: %v: %w", errInterrupted, context.Canceled)
	out.Reset()
	err = runBackup(ctx, f, agent.BackupRequest{}, startProgress(outputJSON, &out), &out, true)
	if !errors.As(err, &st) || st.ExitCode() != 1 {
		t.Fatalf("canceled backup: %v, want exit status 1", err)
	}
	var canceled backupSummary
	if err := json.Unmarshal(lastLine(out.Bytes()), &canceled); err != nil {
		t.Fatal(err)
	}
	if canceled.State != coffer.JobCanceled || canceled.Error != errInterrupted.Error() {
		t.Errorf("canceled summary: %+v", canceled)
	}

	// The backup never started: no summary, the error is the command's.
	for _, res := range []*agent.BackupResult{nil, {State: coffer.JobFailed}} {
		f.backup, f.err = res, errors.New("start the backup: connection refused")
		out.Reset()
		err = runBackup(context.Background(), f, agent.BackupRequest{}, startProgress(outputJSON, &out), &out, true)
		if err == nil || errors.As(err, &st) || out.Len() != 0 {
			t.Errorf("unstarted backup: %v, output %q", err, out.String())
		}
	}
}

func TestRestoreJSONSummary(t *testing.T) {
	f := &fakeJobs{restore: &agent.RestoreResult{RestoreID: "01JR", State: coffer.JobSucceeded, Duration: 2 * time.Second,
		Stats: coffer.RestoreStats{Files: 2, Bytes: 10}}}
	var out bytes.Buffer
	req := agent.RestoreRequest{BackupID: "01JB", Destination: "/tmp/r", Overwrite: coffer.OverwriteSkip}
	if err := runRestore(context.Background(), f, req, startProgress(outputJSON, &out), &out, true); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(lastLine(out.Bytes()), &got); err != nil {
		t.Fatalf("%q: %v", out.String(), err)
	}
	want := map[string]any{"type": "summary", "restore_id": "01JR", "backup_id": "01JB", "target": "/tmp/r", "state": "succeeded",
		"duration_seconds": 2.0, "errors": []any{},
		"stats": map[string]any{"files": 2.0, "dirs": 0.0, "symlinks": 0.0, "links": 0.0, "others": 0.0, "skipped": 0.0,
			"bytes": 10.0, "errors": 0.0, "total_files": 0.0, "total_bytes": 0.0}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("summary (-want +got):\n%s", diff)
	}
}

// TestProgressJSONLine: a progress line carries the latest report, once.
func TestProgressJSONLine(t *testing.T) {
	var out bytes.Buffer
	v := &progressView{mode: outputJSON, w: &out}
	v.update(backupProgress(agent.Progress{Stats: coffer.BackupStats{Files: 1, LogicalBytes: 1 << 20}, CurrentPath: "/a", Elapsed: 2 * time.Second}))
	v.tick()
	v.tick() // nothing new: no second line
	var got map[string]any
	if err := json.Unmarshal(lastLine(out.Bytes()), &got); err != nil {
		t.Fatalf("%q: %v", out.String(), err)
	}
	stats, _ := got["stats"].(map[string]any)
	if got["type"] != "progress" || got["elapsed_seconds"] != 2.0 || got["current_path"] != "/a" ||
		got["bytes_per_second"] != float64(1<<19) || stats["files"] != 1.0 {
		t.Errorf("progress line: %v", got)
	}
}

func TestBackupSummaryText(t *testing.T) {
	s := newBackupSummary(&agent.BackupResult{BackupID: "01JB", State: coffer.JobPartial, Duration: 83 * time.Second,
		Stats: coffer.BackupStats{Files: 1234, FilesNew: 10, FilesChanged: 24, FilesUnchanged: 1200, Dirs: 56, Symlinks: 2,
			LogicalBytes: 3 << 30, ReadBytes: 200 << 20, AddedBytes: 100 << 20, AddedRawBytes: 150 << 20, DataBlobs: 40, TreeBlobs: 3, ErrorCount: 30},
		Errors: pathErrors(25)}, "")
	var out bytes.Buffer
	s.writeText(&out)
	text := out.String()
	for _, want := range []string{
		"Backup 01JB partial in 1m23s.",
		"Files        1,234: 10 new, 24 changed, 1,200 unchanged",
		"Directories  56",
		"Symlinks     2\n",
		"Size         3.0 GiB",
		"Read         200.0 MiB",
		"Added        100.0 MiB stored (150.0 MiB before compression), 40 data and 3 tree blobs",
		"Dedup ratio  30.7x",
		"Errors       30\n    home/u/f00: permission denied\n",
		"    home/u/f19: permission denied\n    … and 10 more\n",
		"The backup is partial",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("summary lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "f20") {
		t.Errorf("more than %d errors listed:\n%s", maxListedErrors, text)
	}

	s = newBackupSummary(&agent.BackupResult{BackupID: "01JC", State: coffer.JobCanceled, Duration: 500 * time.Millisecond}, "canceled by the user")
	out.Reset()
	s.writeText(&out)
	if text := out.String(); !strings.HasPrefix(text, "Backup 01JC canceled after 500ms: canceled by the user.\n") ||
		!strings.Contains(text, "Dedup ratio  n/a") || !strings.Contains(text, "Errors       0\n") {
		t.Errorf("canceled summary:\n%s", text)
	}
}

func TestRestoreSummaryText(t *testing.T) {
	s := newRestoreSummary(&agent.RestoreResult{RestoreID: "01JR", State: coffer.JobPartial, Duration: 12340 * time.Millisecond,
		Stats:  coffer.RestoreStats{Files: 3, Bytes: 2048, Dirs: 2, Links: 1, Skipped: 4, ErrorCount: 1},
		Errors: []coffer.PathError{{Path: "etc/bad\nname", Message: "open: permission denied"}}},
		agent.RestoreRequest{BackupID: "01JB", Destination: "/tmp/r", Overwrite: coffer.OverwriteSkip}, "")
	var out bytes.Buffer
	s.writeText(&out)
	for _, want := range []string{
		"Restore 01JR of backup 01JB partial in 12.3s.", "Target       /tmp/r", "Files        3 (2.0 KiB)",
		"Hard links   1\n", "Skipped      4 already at the target (--overwrite skip)",
		`    "etc/bad\nname": open: permission denied`,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out.String())
		}
	}
}

func TestFormatting(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{formatDedup(1000, 100), "10.0x"},
		{formatDedup(1000, 3), "333x"},
		{formatDedup(9, 612), "0.01x"},
		{formatDedup(1000, 0), "∞ (nothing new to store)"},
		{formatDedup(0, 0), "n/a (no file data)"},
		{formatDedup(0, 500), "n/a (no file data)"}, // only trees were added
		{formatBytes(0), "0 B"},
		{formatBytes(1023), "1023 B"},
		{formatBytes(1536), "1.5 KiB"},
		{formatBytes(5 << 40), "5.0 TiB"},
		{formatCount(0), "0"},
		{formatCount(999), "999"},
		{formatCount(1000), "1,000"},
		{formatCount(1234567), "1,234,567"},
		{formatClock(65 * time.Second), "1:05"},
		{formatClock(3725 * time.Second), "1:02:05"},
		{formatDuration(850 * time.Millisecond), "850ms"},
		{formatDuration(3723 * time.Second), "1h2m3s"},
		{modeString("dir", 0o2755), "drwxr-sr-x"},
		{modeString("file", 0o4644), "-rwSr--r--"},
		{modeString("dir", 0o1777), "drwxrwxrwt"},
		{modeString("symlink", 0o777), "lrwxrwxrwx"},
		{modeString("chardev", 0o620), "crw--w----"},
		{modeString("fifo", 0), "p---------"},
		{quoteName("plain name.txt"), "plain name.txt"},
		{quoteName("日本語"), "日本語"},
		{quoteName("a\nb"), `"a\nb"`},
		{quoteName("bad\xffutf8"), `"bad\xffutf8"`},
		{shellQuote("/var/lib/coffer-agent"), "/var/lib/coffer-agent"},
		{shellQuote("/tmp/my dir"), "'/tmp/my dir'"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestRenderStatus(t *testing.T) {
	p := jobProgress{Files: 1200, Bytes: 50 << 20, Elapsed: 10 * time.Second, Note: "added 1.0 MiB", CurrentPath: "/home/u/some/deep/file.txt"}
	line := renderStatus(p, 5<<20, 0, 200)
	for _, want := range []string{"⠋ 1,200 files  50.0 MiB  5.0 MiB/s  0:10  added 1.0 MiB  /home/u/some/deep/file.txt"} {
		if line != want {
			t.Errorf("without totals:\n got %q\nwant %q", line, want)
		}
	}
	if strings.Contains(line, "ETA") || strings.Contains(line, "%") {
		t.Errorf("an ETA without a known total: %q", line)
	}

	p.TotalFiles, p.TotalBytes = 2400, 100<<20
	line = renderStatus(p, 5<<20, 3, 200)
	for _, want := range []string{"[==========          ]  50% ", "1,200/2,400 files", "50.0 MiB/100.0 MiB", "ETA 0:10"} {
		if !strings.Contains(line, want) {
			t.Errorf("with totals: %q lacks %q", line, want)
		}
	}

	// An 80-column terminal: the note and the elapsed time make room.
	line = renderStatus(p, 5<<20, 3, 80)
	if want := "[=====     ]  50%  1,200/2,400 files  50.0 MiB/100.0 MiB  5.0 MiB/s  ETA 0:10"; line != want {
		t.Errorf("80 columns:\n got %q\nwant %q", line, want)
	}

	// A narrow terminal: the path is cut from the left, the line fits.
	for _, width := range []int{20, 60, 75} {
		line := renderStatus(p, 5<<20, 0, width)
		if n := len([]rune(line)); n >= width {
			t.Errorf("width %d: %d runes: %q", width, n, line)
		}
	}
	if line := renderStatus(p, 5<<20, 0, 130); !strings.Contains(line, "…") || !strings.HasSuffix(line, "file.txt") {
		t.Errorf("path not cut from the left: %q", line)
	}
	p.CurrentPath = "/tmp/evil\x1b[2J\nname"
	if line := renderStatus(p, 0, 0, 300); strings.ContainsAny(line, "\x1b\n") {
		t.Errorf("control characters reach the terminal: %q", line)
	}
}

func TestRateMeter(t *testing.T) {
	var m rateMeter
	if m.perSecond() != 0 {
		t.Error("a rate before any report")
	}
	m.add(500*time.Millisecond, 1000)
	if got := m.perSecond(); got != 2000 {
		t.Errorf("young job: %v B/s, want the average 2000", got)
	}
	// 10 MB/s for 10 s, then 1 MB/s: the window follows the change.
	m = rateMeter{}
	for i := 1; i <= 100; i++ {
		m.add(time.Duration(i)*100*time.Millisecond, uint64(i)*1_000_000)
	}
	for i := 1; i <= 100; i++ {
		m.add(10*time.Second+time.Duration(i)*100*time.Millisecond, 100_000_000+uint64(i)*100_000)
	}
	if got := m.perSecond(); got < 0.99e6 || got > 1.01e6 {
		t.Errorf("rate %v B/s, want about 1e6", got)
	}
	if len(m.samples) > int(rateWindow/rateStep)+2 {
		t.Errorf("%d samples kept", len(m.samples))
	}
}

// TestProgressViewLogs: a log line clears the status line first, and
// finish leaves a clean line.
func TestProgressViewLogs(t *testing.T) {
	var out bytes.Buffer
	v := &progressView{mode: outputTerminal, w: &out, width: func() int { return 80 }, stop: make(chan struct{}), done: make(chan struct{})}
	close(v.done) // no goroutine: ticks by hand
	v.update(jobProgress{Files: 1})
	v.tick()
	fmt.Fprintf(v, "level=WARN msg=x\n")
	v.tick()
	v.finish()
	want := "\r\x1b[K⠙ 1 files  0 B  0:00\r\x1b[Klevel=WARN msg=x\n\r\x1b[K⠹ 1 files  0 B  0:00\r\x1b[K"
	if out.String() != want {
		t.Errorf("terminal output\n got %q\nwant %q", out.String(), want)
	}
}

func TestWriteBackups(t *testing.T) {
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	list := []protocol.BackupSummary{
		{ID: "01JOLD", State: coffer.JobSucceeded, CreatedAt: t0, Paths: []string{"/etc"}, Stats: coffer.BackupStats{Files: 1500, LogicalBytes: 2 << 20, AddedBytes: 1 << 20}},
		{ID: "01JNEW", State: coffer.JobPartial, CreatedAt: t0.Add(time.Hour), Paths: []string{"/home/u", "/etc"}, Errors: 2, Stats: coffer.BackupStats{Files: 3}},
	}
	var out bytes.Buffer
	if err := writeBackups(&out, list, time.UTC); err != nil {
		t.Fatal(err)
	}
	want := `ID      CREATED              STATE      FILES  SIZE     ADDED    ERRORS  PATHS
01JNEW  2025-03-01 13:00:00  partial    3      0 B      0 B      2       /home/u /etc
01JOLD  2025-03-01 12:00:00  succeeded  1,500  2.0 MiB  1.0 MiB  0       /etc
`
	if diff := cmp.Diff(want, out.String()); diff != "" {
		t.Errorf("table (-want +got):\n%s", diff)
	}
	// --json: one object per line, as scripts read every --json output.
	out.Reset()
	if err := writeJSONLines(&out, list); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	for i, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil || m["id"] != list[i].ID || m["state"] != string(list[i].State) {
			t.Errorf("line %d: %q (%v)", i, l, err)
		}
	}
	if len(lines) != 2 {
		t.Errorf("%d lines for 2 backups: %q", len(lines), out.String())
	}

	out.Reset()
	writeBackups(&out, nil, time.UTC)
	if !strings.Contains(out.String(), "no backups yet") {
		t.Errorf("empty list: %q", out.String())
	}
}

func TestWriteEntries(t *testing.T) {
	mtime := time.Date(2025, 3, 1, 12, 30, 0, 0, time.UTC)
	entries := []protocol.TreeEntry{
		{Name: "bin", Type: "symlink", Mode: 0o777, Mtime: mtime, User: "root", Group: "root", Target: "usr/bin"},
		{Name: "home", Type: "dir", Mode: 0o755, Mtime: mtime, User: "root", Group: "root"},
		{Name: "new\nline", Type: "file", Mode: 0o4755, Size: 123456, Mtime: mtime, UID: 1000, GID: 1000},
	}
	var out bytes.Buffer
	if err := writeEntries(&out, entries, time.UTC); err != nil {
		t.Fatal(err)
	}
	want := `lrwxrwxrwx  root  root       0  2025-03-01 12:30  bin -> usr/bin
drwxr-xr-x  root  root       0  2025-03-01 12:30  home
-rwsr-xr-x  1000  1000  123456  2025-03-01 12:30  "new\nline"
`
	if diff := cmp.Diff(want, out.String()); diff != "" {
		t.Errorf("listing (-want +got):\n%s", diff)
	}
}

// TestNotEnrolled: a command on a machine that was never enrolled says
// how to enroll it.
func TestNotEnrolled(t *testing.T) {
	dir := t.TempDir()
	_, err := stateDirFlag{StateDir: dir}.openAgent(nil, 0)
	if err == nil || !strings.Contains(err.Error(), "coffer agent enroll --server URL --token") {
		t.Errorf("not enrolled: %v", err)
	}
}

func TestDescribeError(t *testing.T) {
	err := fmt.Errorf("start the backup: %w", coffer.Errorf(coffer.KindNotFound, "backup_not_found", "backup 01J not found"))
	if got := describeError(err).Error(); got != "start the backup: backup 01J not found (code backup_not_found)" {
		t.Errorf("describeError = %q", got)
	}
	if !errors.Is(describeError(err), err) {
		t.Error("describeError hides the cause")
	}
	// The API client's errors name their code already; a server failure
	// also gives the correlation id to find it in the server's log.
	ae := fmt.Errorf("list backups: %w", &apiclient.Error{Status: 500, Code: "internal", Detail: "internal error", CorrelationID: "01JCORR"})
	if got := describeError(ae).Error(); strings.Count(got, "internal)") != 1 || !strings.HasSuffix(got, "correlation id 01JCORR") {
		t.Errorf("describeError = %q", got)
	}
	ae = &apiclient.Error{Status: 404, Code: "backup_not_found", Detail: "no backup 01J", CorrelationID: "01JCORR"}
	if got := describeError(ae).Error(); strings.Contains(got, "01JCORR") || strings.Count(got, "backup_not_found") != 1 {
		t.Errorf("describeError = %q", got)
	}
	plain := errors.New("dial tcp: connection refused")
	if describeError(plain) != plain || describeError(nil) != nil {
		t.Error("describeError changed an error without a code")
	}
}
