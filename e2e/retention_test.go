package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/metadb"
)

// TestRetentionKeepLast runs a plan with retention keep_last=2 four times
// through the real server and agent: exactly the newest two backups remain,
// records and snapshots, the events name the rule, and the records carry
// the Freezer metadata.
func TestRetentionKeepLast(t *testing.T) {
	dialects(t, func(t *testing.T, d metadb.Dialect) {
		s := startServer(t, d, startOptions{args: []string{"--admin-password", "admin-password"}})
		admin := s.login("admin", "admin-password")

		clientID := startOnlineAgent(t, s, admin, "kept-box")

		src := filepath.Join(t.TempDir(), "src")
		if err := os.MkdirAll(filepath.Join(src, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		for name, data := range map[string]string{"a.txt": "alpha\n", "sub/b.txt": "bravo\n"} {
			if err := os.WriteFile(filepath.Join(src, name), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		for name, target := range map[string]string{"good": "a.txt", "dangling": "no-such-file"} {
			if err := os.Symlink(target, filepath.Join(src, name)); err != nil {
				t.Fatal(err)
			}
		}

		planID := s.call(http.MethodPost, "/api/v1/plans", admin, map[string]any{"name": "keep two", "client_id": clientID,
			"include": []string{src}, "retention": map[string]any{"keep_last": 2}}).Want(http.StatusCreated).Str("plan", "id")
		var runs []map[string]any
		for i := range 4 {
			if err := os.WriteFile(filepath.Join(src, "counter"), []byte(fmt.Sprint(i)), 0o644); err != nil {
				t.Fatal(err)
			}
			id := s.call(http.MethodPost, "/api/v1/plans/"+planID+"/run", admin, nil).Want(http.StatusCreated).Str("backup", "id")
			job := s.waitJob(t, admin, "backup", id)
			if job["state"] != "succeeded" {
				t.Fatalf("run %d ended %v: %v %v", i, job["state"], job["error"], job["errors"])
			}
			runs = append(runs, job)
		}

		// The Freezer metadata, as each run committed it: one chain of
		// backups trusting their predecessor's change cache.
		first := runs[0]["id"]
		for i, b := range runs {
			counts, _ := b["counts"].(map[string]any)
			if b["level"] != float64(i) || b["session"] != first || b["backup_name"] != "keep two" || b["mode"] != "fs" ||
				b["client_os"] != "linux" || b["agent_version"] == "" || b["compression_alg"] != "zstd" ||
				b["encrypted"] != true || counts["symlinks"] != float64(2) || counts["broken_links"] != float64(1) {
				t.Errorf("run %d metadata: %v", i, b)
			}
		}

		// Retention runs after each backup, asynchronously: wait for it.
		want := []string{runs[3]["id"].(string), runs[2]["id"].(string)}
		var got []string
		waitUntil(t, time.Minute, func() (bool, string) {
			items := anySlice(s.call(http.MethodGet, "/api/v1/backups?plan_id="+planID, admin, nil).Want(http.StatusOK).JSON["items"])
			got = got[:0]
			for _, it := range items {
				got = append(got, it.(map[string]any)["id"].(string))
			}
			return slices.Equal(got, want), fmt.Sprintf("the plan's backups are %v, want %v", got, want)
		})
		snaps, err := os.ReadDir(filepath.Join(s.DataDir, "repository", "snapshots"))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range snaps {
			names = append(names, e.Name())
		}
		slices.Sort(names)
		wantSnaps := []string{runs[2]["snapshot_id"].(string), runs[3]["snapshot_id"].(string)}
		slices.Sort(wantSnaps)
		if !slices.Equal(names, wantSnaps) {
			t.Errorf("snapshots in the repository: %v, want %v", names, wantSnaps)
		}
		for _, b := range runs[:2] {
			s.call(http.MethodGet, "/api/v1/backups/"+b["id"].(string), admin, nil).WantError(http.StatusNotFound, "backup_not_found")
		}
		s.call(http.MethodGet, "/api/v1/backups/"+want[1]+"/tree", admin, nil).Want(http.StatusOK)

		// Each forget has its event, naming the rule.
		hist := anySlice(s.call(http.MethodGet, "/api/v1/events/history?page_size=500", admin, nil).Want(http.StatusOK).JSON["items"])
		forgotten := map[string]string{}
		for _, it := range hist {
			e := it.(map[string]any)
			if e["code"] == "retention.forgotten" {
				res, _ := e["resource"].(map[string]any)
				forgotten[fmt.Sprint(res["id"])] = e["message"].(string)
			}
		}
		if len(forgotten) != 2 {
			t.Fatalf("retention events: %v", forgotten)
		}
		for _, b := range runs[:2] {
			if msg := forgotten[b["id"].(string)]; !strings.Contains(msg, "not kept by keep_last=2") {
				t.Errorf("the event of forgetting %s: %q", b["id"], msg)
			}
		}
	})
}
