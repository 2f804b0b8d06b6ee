package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/metadb"
)

// TestSecondRepository backs a plan up into a second local repository
// created through the API, and shows that a repository holding backups
// cannot be deleted.
func TestSecondRepository(t *testing.T) {
	dialects(t, func(t *testing.T, d metadb.Dialect) {
		s := startServer(t, d, startOptions{args: []string{"--admin-password", "admin-password"}})
		admin := s.login("admin", "admin-password")

		// Out of the box: the default repository in the data directory.
		list := s.call(http.MethodGet, "/api/v1/repositories", admin, nil).Want(http.StatusOK)
		items := anySlice(list.JSON["items"])
		if len(items) != 1 || items[0].(map[string]any)["is_default"] != true ||
			items[0].(map[string]any)["path"] != filepath.Join(s.DataDir, "repository") {
			t.Fatalf("repositories of a fresh server: %s", list.Body)
		}

		dir := filepath.Join(t.TempDir(), "second")
		r := s.call(http.MethodPost, "/api/v1/repositories", admin, map[string]any{"name": "second", "kind": "local", "path": dir}).
			Want(http.StatusCreated)
		repoID := r.Str("repository", "id")

		// An agent, and a plan of its files into the second repository.
		clientID := startOnlineAgent(t, s, admin, "storage-box")
		src := filepath.Join(t.TempDir(), "src")
		if err := os.MkdirAll(src, 0o755); err != nil {
			t.Fatal(err)
		}
		for i := range 5 {
			if err := os.WriteFile(filepath.Join(src, fmt.Sprintf("f%d", i)), pseudoRandom(64<<10, uint64(i)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		plan := s.call(http.MethodPost, "/api/v1/plans", admin, map[string]any{"name": "into second", "client_id": clientID,
			"include": []string{src}, "repository_id": repoID}).Want(http.StatusCreated)
		planID := plan.Str("plan", "id")
		if plan.Str("plan", "repository_id") != repoID {
			t.Fatalf("plan: %s", plan.Body)
		}
		ran := s.call(http.MethodPost, "/api/v1/plans/"+planID+"/run", admin, nil).Want(http.StatusCreated)
		job := s.waitJob(t, admin, "backup", ran.Str("backup", "id"))
		if job["state"] != "succeeded" || job["repository_id"] != repoID {
			t.Fatalf("the plan's backup: %v", job)
		}
		if snaps, err := os.ReadDir(filepath.Join(dir, "snapshots")); err != nil || len(snaps) != 1 {
			t.Errorf("%d snapshots in the second repository, want 1 (%v)", len(snaps), err)
		}
		if _, err := os.Stat(filepath.Join(s.DataDir, "repository", "config")); err != nil {
			t.Fatalf("the default repository is not where the test looks: %v", err)
		}
		if snaps, err := os.ReadDir(filepath.Join(s.DataDir, "repository", "snapshots")); (err != nil && !os.IsNotExist(err)) || len(snaps) != 0 {
			t.Errorf("the backup went to the default repository too: %d snapshots (%v)", len(snaps), err)
		}
		usage := s.call(http.MethodGet, "/api/v1/repositories/"+repoID+"/usage", admin, nil).Want(http.StatusOK).JSON["usage"].(map[string]any)
		clients := anySlice(usage["clients"])
		if usage["snapshots"] != 1.0 || len(clients) != 1 || clients[0].(map[string]any)["client_id"] != clientID ||
			clients[0].(map[string]any)["unique_bytes"].(float64) < 5*64<<10 {
			t.Errorf("usage: %v", usage)
		}

		// A verify of it runs in the server, through the repository's record.
		verify := s.call(http.MethodPost, "/api/v1/repositories/"+repoID+"/verify", admin, map[string]any{"mode": "data"}).
			Want(http.StatusAccepted).Str("job_id")
		waitUntil(t, time.Minute, func() (bool, string) {
			repo := s.call(http.MethodGet, "/api/v1/repositories/"+repoID, admin, nil).Want(http.StatusOK).JSON["repository"].(map[string]any)
			last, _ := repo["last_verify"].(map[string]any)
			return last["job_id"] == verify && last["ok"] == true, fmt.Sprintf("last verify %v", last)
		})

		// Holding a backup and a plan, it cannot be deleted.
		del := s.call(http.MethodDelete, "/api/v1/repositories/"+repoID, admin, nil).WantError(http.StatusConflict, "repository_in_use")
		meta := del.JSON["metadata"].(map[string]any)
		if meta["backups"] != 1.0 || meta["plans"] != 1.0 || !strings.Contains(del.Str("detail"), "1 backup records and 1 plans") ||
			!strings.Contains(del.Str("detail"), "forget") {
			t.Errorf("deleting a repository in use: %s", del.Body)
		}
		s.call(http.MethodGet, "/api/v1/repositories/"+repoID, admin, nil).Want(http.StatusOK)
	})
}
