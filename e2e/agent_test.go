package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/engine/blobstore/s3/s3test"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/google/go-cmp/cmp"
)

// agentProc is a running `coffer agent run`.
type agentProc struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	out    bytes.Buffer
	exited chan struct{}
}

func (a *agentProc) Output() string { a.mu.Lock(); defer a.mu.Unlock(); return a.out.String() }

// startAgent runs `coffer agent run` on stateDir, with extra flags.
func startAgent(t *testing.T, stateDir string, extra ...string) *agentProc {
	t.Helper()
	a := &agentProc{exited: make(chan struct{})}
	a.cmd = exec.Command(binary, append([]string{"agent", "run", "--state-dir", stateDir, "--log-level", "debug"}, extra...)...)
	a.cmd.Env = cleanEnv()
	a.cmd.Stdout = syncWriter{&a.mu, &a.out}
	a.cmd.Stderr = syncWriter{&a.mu, &a.out}
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { a.cmd.Wait(); close(a.exited) }()
	t.Cleanup(func() {
		a.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-a.exited:
		case <-time.After(30 * time.Second):
			a.cmd.Process.Kill()
			<-a.exited
		}
		if t.Failed() {
			t.Logf("agent output:\n%s", a.Output())
		}
	})
	return a
}

// waitUntil polls cond until it holds or the deadline passes; what describes
// the last state for the failure message.
func waitUntil(t *testing.T, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var what string
	for time.Now().Before(deadline) {
		var ok bool
		if ok, what = cond(); ok {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("gave up after %v: %s", timeout, what)
}

// waitJob polls a backup or restore until it reaches a final state and
// returns its record.
func (s *server) waitJob(t *testing.T, token, kind, id string) map[string]any {
	t.Helper()
	var job map[string]any
	waitUntil(t, 3*time.Minute, func() (bool, string) {
		r := s.call(http.MethodGet, "/api/v1/"+kind+"s/"+id, token, nil).Want(http.StatusOK)
		job, _ = r.JSON[kind].(map[string]any)
		switch job["state"] {
		case "succeeded", "partial", "failed", "canceled":
			return true, ""
		}
		return false, fmt.Sprintf("%s %s is %v", kind, id, job["state"])
	})
	return job
}

// cli runs a coffer CLI command with --json and returns its JSON lines
// and exit code.
func cli(t *testing.T, args ...string) (lines []map[string]any, stderr string, code int) {
	t.Helper()
	out, stderr, code := run(t, args...)
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("coffer %v printed a line that is not JSON: %q (%v)\nstderr: %s", args, sc.Text(), err, stderr)
		}
		lines = append(lines, m)
	}
	return lines, stderr, code
}

// TestAgentBackupAndRestore is the whole path a user takes: enroll a
// machine's agent, back up a tree full of edge cases from the server and
// from the machine's CLI, mutate it, and restore both backups — one
// through the server, one from the CLI — exactly as they were. It runs on
// SQLite with a local repository and on PostgreSQL with S3.
func TestAgentBackupAndRestore(t *testing.T) {
	for _, tc := range []struct {
		name string
		d    metadb.Dialect
		s3   bool
	}{{"sqlite-local", metadb.SQLite, false}, {"postgres-s3", metadb.Postgres, true}} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.d == metadb.Postgres {
				metadbtest.RequirePostgres(t)
			}
			o := startOptions{args: []string{"--admin-password", "admin-password"}}
			if tc.s3 {
				srv := s3test.Require(t)
				o.args = append(o.args, "--repository-url", "s3://"+srv.Endpoint+"/"+srv.Bucket(t)+"/coffer?tls=false")
				o.env = []string{"COFFER_S3_ACCESS_KEY=" + srv.AccessKey, "COFFER_S3_SECRET_KEY=" + srv.SecretKey}
			}
			s := startServer(t, tc.d, o)
			testAgentBackupAndRestore(t, s)
		})
	}
}

func testAgentBackupAndRestore(t *testing.T, s *server) {
	admin := s.login("admin", "admin-password")

	// Enroll.
	tok := s.call(http.MethodPost, "/api/v1/enrollment-tokens", admin, map[string]any{"name": "e2e-box"}).Want(http.StatusCreated)
	secret := tok.Str("secret")
	stateDir := filepath.Join(t.TempDir(), "state")
	if out, stderr, code := run(t, "agent", "enroll", "--server", s.URL, "--token", secret, "--state-dir", stateDir); code != 0 {
		t.Fatalf("agent enroll exited %d\nstdout: %s\nstderr: %s", code, out, stderr)
	}
	if _, stderr, code := run(t, "agent", "enroll", "--server", s.URL, "--token", secret, "--state-dir", t.TempDir()); code == 0 || !strings.Contains(stderr, "enrollment_token_used") {
		t.Fatalf("a used token enrolled again (exit %d): %s", code, stderr)
	}
	st, err := os.Stat(filepath.Join(stateDir, "state.json"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("state.json: %v, mode %v; want 0600", err, st.Mode())
	}
	startAgent(t, stateDir)
	var clientID string
	waitUntil(t, time.Minute, func() (bool, string) {
		r := s.call(http.MethodGet, "/api/v1/clients?name=e2e-box", admin, nil).Want(http.StatusOK)
		items, _ := r.JSON["items"].([]any)
		if len(items) != 1 {
			return false, fmt.Sprintf("%d clients named e2e-box", len(items))
		}
		c := items[0].(map[string]any)
		clientID, _ = c["id"].(string)
		return c["status"] == "online", fmt.Sprintf("client status %v", c["status"])
	})
	c := s.call(http.MethodGet, "/api/v1/clients/"+clientID, admin, nil).Want(http.StatusOK).JSON["client"].(map[string]any)
	if host, _ := os.Hostname(); c["hostname"] != host || c["os"] != "linux" || c["agent_version"] == "" {
		t.Errorf("client record %v: want hostname %q, os linux, an agent version", c, host)
	}

	// The tree, and a directory whose files vanish while backup 1 runs.
	src := filepath.Join(t.TempDir(), "src")
	xattrs := makeEdgeTree(t, src)
	churn := filepath.Join(src, "churn")
	if err := os.MkdirAll(churn, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 400 {
		os.WriteFile(filepath.Join(churn, fmt.Sprintf("f%03d", i)), pseudoRandom(4<<10, uint64(i)), 0o644)
	}
	want1 := fsManifest(t, src, "churn")
	// The archiver does not trust its change cache for files changed in
	// the last 2 s before it read them (a second write within the file
	// system's timestamp granularity would go unnoticed): let the tree age,
	// so that backup 2 can show unchanged files being skipped.
	time.Sleep(2100 * time.Millisecond)

	// Backup 1: from the server, run by the agent.
	b := s.call(http.MethodPost, "/api/v1/clients/"+clientID+"/backups", admin, map[string]any{"paths": []string{src}}).Want(http.StatusCreated)
	backup1 := b.Str("backup", "id")
	stopChurn := make(chan struct{})
	churned := make(chan struct{})
	go func() {
		defer close(churned)
		r := rand.New(rand.NewPCG(1, 2))
		for {
			select {
			case <-stopChurn:
				return
			case <-time.After(time.Millisecond):
				os.Remove(filepath.Join(churn, fmt.Sprintf("f%03d", r.IntN(400))))
			}
		}
	}()
	job1 := s.waitJob(t, admin, "backup", backup1)
	close(stopChurn)
	<-churned
	if job1["state"] != "succeeded" && job1["state"] != "partial" {
		t.Fatalf("backup 1 ended %v: %v", job1["state"], job1["error"])
	}
	for _, e := range anySlice(job1["errors"]) {
		if p, _ := e.(map[string]any)["path"].(string); !strings.Contains(p, "churn/") {
			t.Errorf("backup 1 reports an error outside the churning directory: %v", e)
		}
	}
	if job1["state"] == "partial" && len(anySlice(job1["errors"])) == 0 {
		t.Error("backup 1 is partial but lists no errors")
	}

	// Backup 2: after a day's changes, from the CLI on the machine.
	os.RemoveAll(churn)
	mutateEdgeTree(t, src)
	want2 := fsManifest(t, src)
	lines, stderr, code := cli(t, "backup", "--json", "--state-dir", stateDir, src)
	if code != 0 || len(lines) == 0 {
		t.Fatalf("coffer backup exited %d: %s", code, stderr)
	}
	sum := lines[len(lines)-1]
	backup2, _ := sum["backup_id"].(string)
	if sum["type"] != "summary" || backup2 == "" || sum["state"] != "succeeded" {
		t.Fatalf("coffer backup summary: %v", sum)
	}
	stats, _ := sum["stats"].(map[string]any)
	if stats["files_unchanged"] == float64(0) {
		t.Errorf("the second backup re-read every file (stats %v): the change cache did not work", stats)
	}
	job2 := s.call(http.MethodGet, "/api/v1/backups/"+backup2, admin, nil).Want(http.StatusOK).JSON["backup"].(map[string]any)
	if job2["client_id"] != clientID || job2["state"] != "succeeded" {
		t.Fatalf("the CLI backup in the server's history: %v", job2)
	}

	// Listing from the CLI.
	lines, stderr, code = cli(t, "backups", "--json", "--state-dir", stateDir)
	if code != 0 || !strings.Contains(fmt.Sprint(lines), backup1) || !strings.Contains(fmt.Sprint(lines), backup2) {
		t.Fatalf("coffer backups (exit %d) does not list both backups: %v\n%s", code, lines, stderr)
	}
	if out, stderr, code := run(t, "ls", "--state-dir", stateDir, backup2, src+"/unicode"); code != 0 || !strings.Contains(out, "日本語のファイル.txt") {
		t.Fatalf("coffer ls (exit %d): %s\n%s", code, out, stderr)
	}

	// Restore 1 through the server, restore 2 from the CLI.
	dst1, dst2 := filepath.Join(t.TempDir(), "r1"), filepath.Join(t.TempDir(), "r2")
	r := s.call(http.MethodPost, "/api/v1/restores", admin, map[string]any{"backup_id": backup1, "destination": dst1}).Want(http.StatusCreated)
	rjob := s.waitJob(t, admin, "restore", r.Str("restore", "id"))
	if rjob["state"] != "succeeded" {
		t.Fatalf("restore 1 ended %v: %v %v", rjob["state"], rjob["error"], rjob["errors"])
	}
	lines, stderr, code = cli(t, "restore", "--json", "--state-dir", stateDir, backup2, "--target", dst2)
	if code != 0 || len(lines) == 0 || lines[len(lines)-1]["restore_id"] == "" {
		t.Fatalf("coffer restore exited %d: %v\n%s", code, lines, stderr)
	}
	got1 := fsManifest(t, filepath.Join(dst1, src), "churn")
	got2 := fsManifest(t, filepath.Join(dst2, src))
	if !xattrs {
		t.Log("this file system refuses user xattrs: not compared")
	}
	for name, pair := range map[string][2]map[string]fsEntry{"backup 1": {want1, got1}, "backup 2": {want2, got2}} {
		if diff := cmp.Diff(pair[0], pair[1]); diff != "" {
			t.Errorf("%s restored differently (-source +restored):\n%s", name, diff)
		}
	}

	// A plan of the same tree, run now from the server.
	plan := s.call(http.MethodPost, "/api/v1/plans", admin, map[string]any{"name": "e2e plan", "client_id": clientID,
		"include": []string{src}, "exclude": []string{"*.tmp"}, "schedule": "0 30 2 * * ?", "timezone": "Europe/Berlin",
		"retention": map[string]any{"keep_daily": 7}}).Want(http.StatusCreated)
	planID := plan.Str("plan", "id")
	times := s.call(http.MethodGet, "/api/v1/plans/"+planID+"/schedule?count=3", admin, nil).Want(http.StatusOK)
	if n := len(anySlice(times.JSON["times"])); n != 3 || times.JSON["timezone"] != "Europe/Berlin" {
		t.Fatalf("schedule preview: %v", times.JSON)
	}
	ran := s.call(http.MethodPost, "/api/v1/plans/"+planID+"/run", admin, nil).Want(http.StatusCreated)
	pjob := s.waitJob(t, admin, "backup", ran.Str("backup", "id"))
	if pjob["state"] != "succeeded" || pjob["plan_id"] != planID {
		t.Fatalf("the plan's backup: %v", pjob)
	}

	// Deleting the client revokes its credential at once.
	s.call(http.MethodDelete, "/api/v1/clients/"+clientID, admin, nil).Want(http.StatusOK)
	if _, stderr, code := run(t, "backups", "--state-dir", stateDir); code == 0 || !strings.Contains(stderr, "invalid_token") {
		t.Fatalf("coffer backups after the client was deleted: exit %d, %s", code, stderr)
	}
	// Its backups stay in the history.
	s.call(http.MethodGet, "/api/v1/backups/"+backup1, admin, nil).Want(http.StatusOK)
}

func anySlice(v any) []any { s, _ := v.([]any); return s }
