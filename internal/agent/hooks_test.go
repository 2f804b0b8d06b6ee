package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/protocol"
)

// fastRunner is a commandRunner whose waits suit tests.
var fastRunner = commandRunner{killGrace: 200 * time.Millisecond, waitDelay: 200 * time.Millisecond}

// alive reports whether process pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return syscall.Kill(pid, 0) == nil
	}
	// pid (comm) state …: the state follows the last ')'.
	s := string(b)
	rest := s[strings.LastIndexByte(s, ')')+1:]
	return !strings.HasPrefix(strings.TrimSpace(rest), "Z")
}

// readPid waits for a command to write its background child's pid.
func readPid(t *testing.T, path string) int {
	t.Helper()
	var pid int
	waitFor(t, "the pid file "+path, func() bool {
		b, err := os.ReadFile(path)
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	})
	return pid
}

func TestCommandRunner(t *testing.T) {
	ctx := context.Background()
	env := commandEnv([]string{"PATH=" + os.Getenv("PATH"), "HOME=/root", "COFFER_ENROLL_TOKEN=secret", "LC_ALL=C", "AWS_SECRET=x"},
		"client-1", protocol.BackupJob{ID: "b-1", PlanID: "p-1"}, "pre", "")

	t.Run("success", func(t *testing.T) {
		r := fastRunner.run(ctx, `echo "$COFFER_BACKUP_ID $COFFER_PLAN_ID $COFFER_CLIENT_ID $COFFER_COMMAND_PHASE"; `+
			`echo "token=${COFFER_ENROLL_TOKEN-unset} aws=${AWS_SECRET-unset} lc=$LC_ALL state=${COFFER_BACKUP_STATE-unset}"; pwd; echo warn >&2`,
			env, time.Minute)
		if r.failed() || r.exitCode != 0 {
			t.Fatalf("failed: %s", r.Error())
		}
		want := "b-1 p-1 client-1 pre\ntoken=unset aws=unset lc=C state=unset\n/\n"
		if r.stdout != want || r.stderr != "warn\n" {
			t.Errorf("stdout %q (want %q), stderr %q", r.stdout, want, r.stderr)
		}
	})

	t.Run("exit status", func(t *testing.T) {
		r := fastRunner.run(ctx, `echo out; echo "pg_dump: connection refused" >&2; exit 3`, env, time.Minute)
		r.phase, r.index, r.count = "pre", 2, 3
		if !r.failed() || r.exitCode != 3 {
			t.Fatalf("result %+v", r)
		}
		msg := r.Error()
		for _, want := range []string{"pre-command 2 of 3", "exited with status 3", "pg_dump: connection refused"} {
			if !strings.Contains(msg, want) {
				t.Errorf("message %q lacks %q", msg, want)
			}
		}
		// Without stderr, the message quotes stdout.
		r = fastRunner.run(ctx, `echo only stdout; false`, env, time.Minute)
		r.phase, r.index, r.count = "post", 1, 1
		if msg := r.Error(); !strings.Contains(msg, "status 1") || !strings.Contains(msg, "stdout ends with: only stdout") {
			t.Errorf("message %q", msg)
		}
	})

	t.Run("output bounded", func(t *testing.T) {
		// 1 MiB on each stream, ending with a marker.
		r := fastRunner.run(ctx, `head -c 1048576 /dev/zero | tr '\0' x; echo END-OUT; head -c 1048576 /dev/zero | tr '\0' y >&2; echo END-ERR >&2; exit 1`,
			env, time.Minute)
		if len(r.stdout) > commandOutputTail+len("…") || len(r.stderr) > commandOutputTail+len("…") {
			t.Errorf("kept %d and %d bytes, want at most %d", len(r.stdout), len(r.stderr), commandOutputTail)
		}
		if !strings.HasPrefix(r.stdout, "…x") || !strings.HasSuffix(r.stdout, "xEND-OUT\n") || !strings.HasSuffix(r.stderr, "yEND-ERR\n") {
			t.Errorf("tails: %q … %q", r.stdout[:10], r.stderr[len(r.stderr)-10:])
		}
		r.phase, r.index, r.count = "pre", 1, 1
		if msg := r.Error(); len(msg) > commandMessageTail+300 || !strings.HasSuffix(msg, "END-ERR") {
			t.Errorf("message of %d bytes ends %q", len(msg), msg[max(0, len(msg)-20):])
		}
	})

	t.Run("timeout kills the process group", func(t *testing.T) {
		pidFile := filepath.Join(t.TempDir(), "pid")
		r := fastRunner.run(ctx, `sleep 600 & echo $! > `+pidFile+`; wait`, env, 300*time.Millisecond)
		r.phase, r.index, r.count = "pre", 1, 1
		if !r.failed() || !r.timedOut || r.canceled {
			t.Fatalf("result %+v", r)
		}
		if msg := r.Error(); !strings.Contains(msg, "ran longer than its timeout of 300ms and was killed") {
			t.Errorf("message %q", msg)
		}
		pid := readPid(t, pidFile)
		waitFor(t, "the background sleep to die", func() bool { return !alive(pid) })
	})

	t.Run("a command ignoring SIGTERM gets SIGKILL", func(t *testing.T) {
		pidFile := filepath.Join(t.TempDir(), "pid")
		r := fastRunner.run(ctx, `trap "" TERM; (trap "" TERM; sleep 600) & echo $! > `+pidFile+`; wait; wait`, env, 200*time.Millisecond)
		if !r.timedOut || r.signal != "killed" {
			t.Fatalf("result %+v", r)
		}
		pid := readPid(t, pidFile)
		waitFor(t, "the background subshell to die", func() bool { return !alive(pid) })
	})

	t.Run("cancel kills the process group", func(t *testing.T) {
		pidFile := filepath.Join(t.TempDir(), "pid")
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan commandResult)
		go func() { done <- fastRunner.run(cctx, `sleep 600 & echo $! > `+pidFile+`; wait`, env, time.Hour) }()
		pid := readPid(t, pidFile)
		cancel()
		r := <-done
		r.phase, r.index, r.count = "post", 1, 2
		if !r.canceled || r.timedOut || !strings.Contains(r.Error(), "was stopped: the backup was canceled") {
			t.Fatalf("result %+v: %s", r, r.Error())
		}
		waitFor(t, "the background sleep to die", func() bool { return !alive(pid) })
		// A context already done runs nothing.
		if r := fastRunner.run(cctx, `touch `+pidFile+`.not`, env, time.Hour); !r.canceled {
			t.Errorf("result %+v", r)
		}
		if _, err := os.Stat(pidFile + ".not"); err == nil {
			t.Error("a command ran after its context ended")
		}
	})

	t.Run("a background process holding the output", func(t *testing.T) {
		// The command exits at once; what it left running keeps stdout
		// open, which must not hold up the backup beyond the wait delay.
		pidFile := filepath.Join(t.TempDir(), "pid")
		r := fastRunner.run(ctx, `sleep 600 & echo $! > `+pidFile+`; echo started`, env, time.Minute)
		if r.failed() || r.stdout != "started\n" {
			t.Fatalf("result %+v", r)
		}
		syscall.Kill(readPid(t, pidFile), syscall.SIGKILL)
	})
}

func TestTailBuffer(t *testing.T) {
	b := &tailBuffer{max: 8}
	b.Write([]byte("abc"))
	if b.String() != "abc" {
		t.Fatalf("%q", b.String())
	}
	b.Write([]byte("defghij"))
	if b.String() != "…cdefghij" {
		t.Fatalf("%q", b.String())
	}
	b.Write([]byte("0123456789ABC"))
	if b.String() != "…6789ABC" && b.String() != "…56789ABC" {
		t.Fatalf("%q", b.String())
	}
	// A cut inside a character does not leave half of it.
	u := &tailBuffer{max: 5}
	u.Write([]byte("ééé")) // 6 bytes
	if s := u.String(); s != "…éé" {
		t.Fatalf("%q", s)
	}
}

// queueWithCommands queues a backup of paths with commands.
func (s *fakeServer) queueWithCommands(pre, post []string, timeoutSeconds int, paths ...string) string {
	id := s.queue(paths...)
	s.mu.Lock()
	defer s.mu.Unlock()
	j := &s.backups[id].job
	j.PlanID, j.PreCommands, j.PostCommands, j.CommandTimeoutSeconds = "plan-1", pre, post, timeoutSeconds
	return id
}

func TestBackupRunsCommands(t *testing.T) {
	s := newFakeServer(t)
	a := s.agent(t)
	a.commands = fastRunner
	src, out := t.TempDir(), t.TempDir()
	n := makeTree(t, src)
	dump := filepath.Join(src, "dump.sql")
	id := s.queueWithCommands(
		[]string{`echo "dump of $COFFER_BACKUP_ID" > ` + dump, `echo second >> ` + dump},
		[]string{`rm ` + dump, `echo "$COFFER_BACKUP_STATE $COFFER_COMMAND_PHASE" > ` + filepath.Join(out, "state")},
		0, src)
	res, err := a.Backup(context.Background(), BackupRequest{BackupID: id}, nil)
	if err != nil || res.State != coffer.JobSucceeded {
		t.Fatalf("%+v %v", res, err)
	}
	// The pre commands' file is in the backup; the post commands removed it.
	if res.Stats.Files != uint64(n+1) {
		t.Errorf("backed up %d files, want %d (the tree and the dump)", res.Stats.Files, n+1)
	}
	if _, err := os.Stat(dump); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the post-command did not remove the dump: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(out, "state")); string(b) != "succeeded post\n" {
		t.Errorf("post-command saw %q", b)
	}
	if b := s.backup(id); b.state != coffer.JobSucceeded || len(b.commit.Errors) != 0 {
		t.Errorf("server's record: %+v", b)
	}
}

func TestBackupPreCommandFails(t *testing.T) {
	s := newFakeServer(t)
	a := s.agent(t)
	a.commands = fastRunner
	src, out := t.TempDir(), t.TempDir()
	makeTree(t, src)
	id := s.queueWithCommands(
		[]string{`true`, `echo "cannot lock the database" >&2; exit 4`, `touch ` + filepath.Join(out, "third")},
		[]string{`echo "$COFFER_BACKUP_STATE" > ` + filepath.Join(out, "cleanup")}, 0, src)
	res, err := a.Backup(context.Background(), BackupRequest{BackupID: id}, nil)
	if err == nil || res.State != coffer.JobFailed {
		t.Fatalf("%+v %v", res, err)
	}
	b := s.backup(id)
	for _, want := range []string{"pre-command 2 of 3", "exited with status 4", "cannot lock the database"} {
		if b.state != coffer.JobFailed || !strings.Contains(b.fail.Error, want) {
			t.Errorf("server's record %q (%s) lacks %q", b.fail.Error, b.state, want)
		}
	}
	if s.uploads.Load() != 0 || b.snapshots != 0 {
		t.Errorf("the backup went on after its pre-command failed: %d uploads, %d snapshots", s.uploads.Load(), b.snapshots)
	}
	if _, err := os.Stat(filepath.Join(out, "third")); err == nil {
		t.Error("the pre-command after the failed one ran")
	}
	// The post commands clean up.
	if c, _ := os.ReadFile(filepath.Join(out, "cleanup")); string(c) != "failed\n" {
		t.Errorf("cleanup saw %q", c)
	}
}

func TestBackupPreCommandTimeout(t *testing.T) {
	s := newFakeServer(t)
	a := s.agent(t)
	a.commands = fastRunner
	src := t.TempDir()
	makeTree(t, src)
	id := s.queueWithCommands([]string{`echo waiting >&2; sleep 600`}, nil, 1, src)
	res, err := a.Backup(context.Background(), BackupRequest{BackupID: id}, nil)
	if err == nil || res.State != coffer.JobFailed {
		t.Fatalf("%+v %v", res, err)
	}
	if b := s.backup(id); !strings.Contains(b.fail.Error, "pre-command 1 of 1") ||
		!strings.Contains(b.fail.Error, "ran longer than its timeout of 1s") || !strings.Contains(b.fail.Error, "waiting") {
		t.Errorf("server's record: %q", b.fail.Error)
	}
}

func TestBackupPostCommandFails(t *testing.T) {
	s := newFakeServer(t)
	a := s.agent(t)
	a.commands = fastRunner
	src, out := t.TempDir(), t.TempDir()
	makeTree(t, src)
	id := s.queueWithCommands(nil,
		[]string{`echo "unmount failed" >&2; exit 2`, `echo "$COFFER_BACKUP_STATE" > ` + filepath.Join(out, "second")}, 0, src)
	res, err := a.Backup(context.Background(), BackupRequest{BackupID: id}, nil)
	if err != nil || res.State != coffer.JobPartial || res.Stats.ErrorCount != 1 || len(res.Errors) != 1 {
		t.Fatalf("%+v %v", res, err)
	}
	b := s.backup(id)
	if b.state != coffer.JobPartial || b.snapshots != 1 || len(b.commit.Errors) != 1 ||
		!strings.Contains(b.commit.Errors[0].Message, "post-command 1 of 2") ||
		!strings.Contains(b.commit.Errors[0].Message, "status 2") || !strings.Contains(b.commit.Errors[0].Message, "unmount failed") {
		t.Errorf("server's record: %+v", b.commit)
	}
	// The other post commands still run.
	if c, _ := os.ReadFile(filepath.Join(out, "second")); string(c) != "succeeded\n" {
		t.Errorf("the second post-command saw %q", c)
	}
}

func TestBackupRefusesCommands(t *testing.T) {
	s := newFakeServer(t)
	a := s.agent(t)
	a.opts.RefuseCommands = true
	src, out := t.TempDir(), t.TempDir()
	makeTree(t, src)
	marker := filepath.Join(out, "ran")
	id := s.queueWithCommands(nil, []string{`touch ` + marker}, 0, src)
	res, err := a.Backup(context.Background(), BackupRequest{BackupID: id}, nil)
	if err == nil || res.State != coffer.JobFailed {
		t.Fatalf("%+v %v", res, err)
	}
	want := "this agent refuses pre/post commands (--allow-commands=false): remove them from the plan or restart the agent with --allow-commands=true"
	if b := s.backup(id); b.state != coffer.JobFailed || b.fail.Error != want || b.snapshots != 0 {
		t.Errorf("server's record: %s %q", b.state, b.fail.Error)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("a refused command ran")
	}
	if s.uploads.Load() != 0 {
		t.Errorf("%d uploads for a refused backup", s.uploads.Load())
	}
	// A backup without commands still runs.
	if res, err := a.Backup(context.Background(), BackupRequest{BackupID: s.queue(src)}, nil); err != nil || res.State != coffer.JobSucceeded {
		t.Fatalf("backup without commands on a refusing agent: %+v %v", res, err)
	}
}

func TestBackupCanceledDuringPreCommand(t *testing.T) {
	s := newFakeServer(t)
	a := s.agent(t)
	a.commands = fastRunner
	src, out := t.TempDir(), t.TempDir()
	makeTree(t, src)
	pidFile := filepath.Join(out, "pid")
	id := s.queueWithCommands([]string{`sleep 600 & echo $! > ` + pidFile + `; wait`},
		[]string{`echo "$COFFER_BACKUP_STATE" > ` + filepath.Join(out, "cleanup")}, 0, src)
	done := make(chan struct{})
	var res *BackupResult
	var err error
	go func() {
		defer close(done)
		res, err = a.Backup(context.Background(), BackupRequest{BackupID: id}, nil)
	}()
	pid := readPid(t, pidFile)
	s.mu.Lock()
	s.cancel[id] = true // the progress reports during the command learn it
	s.mu.Unlock()
	<-done
	if !errors.Is(err, context.Canceled) || res.State != coffer.JobCanceled {
		t.Fatalf("%+v %v", res, err)
	}
	waitFor(t, "the pre-command's process group to die", func() bool { return !alive(pid) })
	if b := s.backup(id); b.state != coffer.JobCanceled || b.fail.Error != errCanceledOnServer.Error() {
		t.Errorf("server's record: %+v", b)
	}
	if c, _ := os.ReadFile(filepath.Join(out, "cleanup")); string(c) != "canceled\n" {
		t.Errorf("cleanup saw %q", c)
	}
}
