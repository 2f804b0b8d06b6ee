package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/metadb"
)

// TestScheduledPlan: a plan on "0/2 * * * * ?" fires on its own, every
// two seconds, and its agent runs the backups; the server reports the
// scheduler healthy and the plan's next and last fire.
func TestScheduledPlan(t *testing.T) {
	dialects(t, func(t *testing.T, d metadb.Dialect) {
		s := startServer(t, d, startOptions{args: []string{"--admin-password", "admin-password"}})
		admin := s.login("admin", "admin-password")

		clientID := startOnlineAgent(t, s, admin, "sched-box")

		src := filepath.Join(t.TempDir(), "src")
		if err := os.MkdirAll(filepath.Join(src, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		for i := range 5 {
			if err := os.WriteFile(filepath.Join(src, "sub", fmt.Sprintf("f%d.txt", i)), pseudoRandom(8<<10, uint64(i)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		planID := s.call(http.MethodPost, "/api/v1/plans", admin, map[string]any{"name": "every two seconds", "client_id": clientID,
			"include": []string{src}, "schedule": "0/2 * * * * ?"}).Want(http.StatusCreated).Str("plan", "id")

		// At least two scheduled backups succeed (a fire while one runs is
		// skipped, so there may be gaps).
		var succeeded int
		waitUntil(t, 3*time.Minute, func() (bool, string) {
			items := anySlice(s.call(http.MethodGet, "/api/v1/backups?plan_id="+planID, admin, nil).Want(http.StatusOK).JSON["items"])
			succeeded = 0
			for _, it := range items {
				b := it.(map[string]any)
				if b["trigger"] != "schedule" || b["created_by"] != "" {
					t.Fatalf("a backup of the plan not started by the schedule: %v", b)
				}
				switch b["state"] {
				case "succeeded":
					succeeded++
				case "failed", "partial", "canceled":
					t.Fatalf("scheduled backup ended %v: %v", b["state"], b["error"])
				}
			}
			return succeeded >= 2, fmt.Sprintf("%d of %d scheduled backups succeeded", succeeded, len(items))
		})

		plan := s.call(http.MethodGet, "/api/v1/plans/"+planID, admin, nil).Want(http.StatusOK).JSON["plan"].(map[string]any)
		if plan["next_fire_at"] == nil || plan["last_fired_at"] == nil || (plan["last_fire_outcome"] != "fired" && plan["last_fire_outcome"] != "skipped") {
			t.Errorf("plan firing state: next %v, last %v, outcome %v", plan["next_fire_at"], plan["last_fired_at"], plan["last_fire_outcome"])
		}
		health := s.call(http.MethodGet, "/api/v1/health", admin, nil).Want(http.StatusOK)
		var schedStatus any
		for _, c := range anySlice(health.JSON["components"]) {
			if c := c.(map[string]any); c["name"] == "scheduler" {
				schedStatus = c["status"]
			}
		}
		if schedStatus != "ok" {
			t.Errorf("scheduler health %v: %s", schedStatus, health.Body)
		}
		events := s.call(http.MethodGet, "/api/v1/events/history?page_size=500", admin, nil).Want(http.StatusOK)
		fired := 0
		for _, e := range anySlice(events.JSON["items"]) {
			if e.(map[string]any)["code"] == "plan.fired" {
				fired++
			}
		}
		if fired < 2 {
			t.Errorf("%d plan.fired events, want at least 2", fired)
		}

		// Disabled, it stops: its state says it will not fire.
		s.call(http.MethodPut, "/api/v1/plans/"+planID, admin, map[string]any{"name": "every two seconds", "client_id": clientID,
			"include": []string{src}, "schedule": "0/2 * * * * ?", "enabled": false}).Want(http.StatusOK)
		waitUntil(t, time.Minute, func() (bool, string) {
			p := s.call(http.MethodGet, "/api/v1/plans/"+planID, admin, nil).Want(http.StatusOK).JSON["plan"].(map[string]any)
			return p["next_fire_at"] == nil, fmt.Sprintf("next_fire_at %v", p["next_fire_at"])
		})
	})
}
