package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/google/go-cmp/cmp"
)

// enrollAgent enrolls a state directory as client name with the CLI and
// returns the directory and the client's id.
func enrollAgent(t *testing.T, s *server, admin, name string) (stateDir, clientID string) {
	t.Helper()
	secret := s.call(http.MethodPost, "/api/v1/enrollment-tokens", admin, map[string]any{"name": name}).Want(http.StatusCreated).Str("secret")
	stateDir = filepath.Join(t.TempDir(), "state")
	if out, stderr, code := run(t, "agent", "enroll", "--server", s.URL, "--token", secret, "--state-dir", stateDir); code != 0 {
		t.Fatalf("agent enroll exited %d\nstdout: %s\nstderr: %s", code, out, stderr)
	}
	r := s.call(http.MethodGet, "/api/v1/clients?name="+name, admin, nil).Want(http.StatusOK)
	items, _ := r.JSON["items"].([]any)
	if len(items) != 1 {
		t.Fatalf("%d clients named %s", len(items), name)
	}
	return stateDir, items[0].(map[string]any)["id"].(string)
}

// waitClientOnline waits for the client named name to come online and
// returns its id.
func waitClientOnline(t *testing.T, s *server, token, name string) string {
	t.Helper()
	var id string
	waitUntil(t, time.Minute, func() (bool, string) {
		r := s.call(http.MethodGet, "/api/v1/clients?name="+url.QueryEscape(name), token, nil).Want(http.StatusOK)
		items, _ := r.JSON["items"].([]any)
		if len(items) != 1 {
			return false, fmt.Sprintf("%d clients named %s", len(items), name)
		}
		c := items[0].(map[string]any)
		id, _ = c["id"].(string)
		return c["status"] == "online", fmt.Sprintf("client %s is %v", name, c["status"])
	})
	return id
}

// startOnlineAgent enrolls an agent as client name, runs it, and returns
// the client's id once the server has it online.
func startOnlineAgent(t *testing.T, s *server, admin, name string) string {
	t.Helper()
	stateDir, _ := enrollAgent(t, s, admin, name)
	startAgent(t, stateDir)
	return waitClientOnline(t, s, admin, name)
}

// TestRestoreToAnotherAgent backs up a tree on one machine's agent and
// restores it through the server onto a second agent, which is not running
// when the restore is asked for: the restore waits, queued, and runs when
// that agent connects.
func TestRestoreToAnotherAgent(t *testing.T) {
	s := startServer(t, metadb.SQLite, startOptions{args: []string{"--admin-password", "admin-password"}})
	admin := s.login("admin", "admin-password")
	stateA, clientA := enrollAgent(t, s, admin, "e2e-source")
	stateB, clientB := enrollAgent(t, s, admin, "e2e-target")
	startAgent(t, stateA)

	src := filepath.Join(t.TempDir(), "src")
	xattrs := makeEdgeTree(t, src)
	want := fsManifest(t, src)
	b := s.call(http.MethodPost, "/api/v1/clients/"+clientA+"/backups", admin, map[string]any{"paths": []string{src}}).
		Want(http.StatusCreated).Str("backup", "id")
	if job := s.waitJob(t, admin, "backup", b); job["state"] != "succeeded" {
		t.Fatalf("backup on agent A ended %v: %v %v", job["state"], job["error"], job["errors"])
	}

	// Agent B's daemon is not running: the restore waits for it.
	dst := filepath.Join(t.TempDir(), "restored")
	r := s.call(http.MethodPost, "/api/v1/restores", admin, map[string]any{"backup_id": b, "target_client_id": clientB,
		"destination": dst}).Want(http.StatusCreated)
	id := r.Str("restore", "id")
	if r.Str("restore", "state") != "queued" || r.Str("restore", "source_client_id") != clientA || r.Str("restore", "target_client_id") != clientB {
		t.Fatalf("restore: %s", r.Body)
	}
	if st := s.call(http.MethodGet, "/api/v1/restores/"+id, admin, nil).Want(http.StatusOK).Str("restore", "state"); st != "queued" {
		t.Fatalf("restore to an agent that is not running is %s, want queued", st)
	}
	if _, err := os.Stat(dst); err == nil {
		t.Fatal("the destination exists before agent B ran")
	}

	startAgent(t, stateB)
	job := s.waitJob(t, admin, "restore", id)
	if job["state"] != "succeeded" {
		t.Fatalf("restore on agent B ended %v: %v %v", job["state"], job["error"], job["errors"])
	}
	got := fsManifest(t, filepath.Join(dst, src))
	if !xattrs {
		t.Log("this file system refuses user xattrs: not compared")
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("the tree restored on agent B differs (-source +restored):\n%s", diff)
	}
}

// TestPlanCommands runs a plan with pre and post commands on an agent
// that allows them and on one started with --allow-commands=false, and
// shows the plans on the machine, also once the server is gone.
func TestPlanCommands(t *testing.T) {
	s := startServer(t, metadb.SQLite, startOptions{args: []string{"--admin-password", "admin-password"}})
	admin := s.login("admin", "admin-password")
	stateOn, clientOn := enrollAgent(t, s, admin, "e2e-commands")
	stateOff, clientOff := enrollAgent(t, s, admin, "e2e-no-commands")
	startAgent(t, stateOn)
	off := startAgent(t, stateOff, "--allow-commands=false")

	out := t.TempDir()
	plan := func(name, clientID, src string) string {
		t.Helper()
		if err := os.MkdirAll(src, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, "data.txt"), []byte("data\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		dump := filepath.Join(src, "dump.sql")
		return s.call(http.MethodPost, "/api/v1/plans", admin, map[string]any{"name": name, "client_id": clientID,
			"include": []string{src}, "schedule": "0 0 3 * * ?", "compression": "best",
			"pre_commands": []string{`printf 'dump of %s\n' "$COFFER_BACKUP_ID" > '` + dump + `'`},
			"post_commands": []string{`rm '` + dump + `'`,
				`echo "$COFFER_BACKUP_STATE $COFFER_PLAN_ID" > '` + filepath.Join(out, name+".state") + `'`}}).
			Want(http.StatusCreated).Str("plan", "id")
	}
	runPlan := func(id string) map[string]any {
		t.Helper()
		b := s.call(http.MethodPost, "/api/v1/plans/"+id+"/run", admin, nil).Want(http.StatusCreated).Str("backup", "id")
		return s.waitJob(t, admin, "backup", b)
	}

	// The pre-command's file is in the backup; the post-command removed it.
	srcOn := filepath.Join(t.TempDir(), "on")
	planOn := plan("with-commands", clientOn, srcOn)
	job := runPlan(planOn)
	if job["state"] != "succeeded" {
		t.Fatalf("the plan's backup ended %v: %v %v", job["state"], job["error"], job["errors"])
	}
	backupID := job["id"].(string)
	tree := s.call(http.MethodGet, "/api/v1/backups/"+backupID+"/tree?path="+srcOn, admin, nil).Want(http.StatusOK)
	sizes := map[string]float64{}
	for _, e := range anySlice(tree.JSON["items"]) {
		sizes[e.(map[string]any)["name"].(string)] = e.(map[string]any)["size"].(float64)
	}
	if want := float64(len("dump of " + backupID + "\n")); sizes["dump.sql"] != want || sizes["data.txt"] != 5 {
		t.Errorf("the backup holds %v; want dump.sql of %v bytes and data.txt", sizes, want)
	}
	if _, err := os.Stat(filepath.Join(srcOn, "dump.sql")); !os.IsNotExist(err) {
		t.Errorf("the post-command did not remove dump.sql: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(out, "with-commands.state")); string(b) != "succeeded "+planOn+"\n" {
		t.Errorf("the post-command saw %q", b)
	}

	// The agent that refuses commands fails the backup, saying so, and runs none.
	srcOff := filepath.Join(t.TempDir(), "off")
	planOff := plan("refused", clientOff, srcOff)
	job = runPlan(planOff)
	msg := "this agent refuses pre/post commands (--allow-commands=false): remove them from the plan or restart the agent with --allow-commands=true"
	if job["state"] != "failed" || job["error"] != msg {
		t.Fatalf("the plan's backup on the refusing agent: %v: %v", job["state"], job["error"])
	}
	if _, err := os.Stat(filepath.Join(srcOff, "dump.sql")); err == nil {
		t.Error("the refusing agent ran the pre-command")
	}
	if _, err := os.Stat(filepath.Join(out, "refused.state")); err == nil {
		t.Error("the refusing agent ran a post-command")
	}
	if !strings.Contains(off.Output(), "--allow-commands=false") {
		t.Errorf("the refusing agent does not say at start that it refuses commands:\n%s", off.Output())
	}

	// The machine shows its plans, and the last list once the server is gone.
	lines, stderr, code := cli(t, "agent", "plans", "--json", "--state-dir", stateOn)
	if code != 0 || len(lines) != 1 || lines[0]["id"] != planOn || lines[0]["next_run_at"] == nil ||
		len(anySlice(lines[0]["pre_commands"])) != 1 || lines[0]["compression"] != "best" {
		t.Fatalf("coffer agent plans (exit %d): %v\n%s", code, lines, stderr)
	}
	if st, err := os.Stat(filepath.Join(stateOn, "plans.json")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("plans.json: %v, %v", err, st)
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	if err := s.waitExit(time.Minute); err != nil {
		t.Fatalf("server exit: %v", err)
	}
	table, stderr, code := run(t, "agent", "plans", "--state-dir", stateOn)
	if code != 0 || !strings.Contains(table, "The server is unreachable; these are the plans it sent at") ||
		!strings.Contains(table, "with-commands") || !strings.Contains(table, "1 pre, 2 post") ||
		!strings.Contains(stderr, "the server could not be asked") {
		t.Fatalf("coffer agent plans without a server (exit %d):\n%s\n%s", code, table, stderr)
	}
}
