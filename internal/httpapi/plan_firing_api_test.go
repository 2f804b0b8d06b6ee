package httpapi

import (
	"context"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/blobstore/mem"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/cofferhq/coffer/internal/server/agents"
	"github.com/cofferhq/coffer/internal/server/backups"
	"github.com/cofferhq/coffer/internal/server/plans"
	"github.com/cofferhq/coffer/internal/server/repos"
)

// TestPlanFiringOverHTTP: a plan's get and list show the scheduler's
// state of it, read-only.
func TestPlanFiringOverHTTP(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		pf := &planFixture{agentFixture: &agentFixture{}, runner: &planRunner{}}
		pf.fixture = newFixtureWith(t, db, func(f *fixture, o *Options) {
			pf.agents = agents.New(agents.Options{Store: db, Events: f.hub})
			o.Agents, o.PlanFirings = pf.agents, db
			o.Plans = plans.New(plans.Options{Store: db, Clients: pf.agents, Backups: pf.runner, Events: f.hub,
				DefaultRepositoryID: "repo-1"})
		})
		client, _ := pf.enroll("web")
		body := map[string]any{"name": "nightly", "client_id": client, "schedule": "0 30 2 * * ?", "include": []string{"/etc"}}
		r := pf.do("POST", "/api/v1/plans", "operator", body).Want(201)
		id := r.Str("plan", "id")
		plan := r.JSON["plan"].(map[string]any)
		for _, k := range []string{"next_fire_at", "last_fired_at"} {
			if v, ok := plan[k]; !ok || v != nil {
				t.Fatalf("new plan %s = %v (present %v), want null", k, v, ok)
			}
		}
		if plan["last_fire_outcome"] != "" {
			t.Fatalf("new plan last_fire_outcome = %v", plan["last_fire_outcome"])
		}

		// What the scheduler stores shows on get and list.
		p, err := db.GetPlan(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		next := time.Date(2026, 3, 15, 2, 30, 0, 0, time.UTC)
		fired := time.Date(2026, 3, 14, 2, 30, 0, 250_000_000, time.UTC)
		if _, err := db.SetPlanSchedule(ctx, metadb.ScheduleKeyOf(p), &next); err != nil {
			t.Fatal(err)
		}
		if err := db.RecordFire(ctx, metadb.ScheduleKeyOf(p), metadb.FireRecord{At: fired, Outcome: coffer.FireOutcomeSkipped,
			BackupID: "b-1"}); err != nil {
			t.Fatal(err)
		}
		got := pf.do("GET", "/api/v1/plans/"+id, "viewer", nil).Want(200)
		if got.Str("plan", "next_fire_at") != "2026-03-15T02:30:00Z" || got.Str("plan", "last_fired_at") != "2026-03-14T02:30:00.25Z" ||
			got.Str("plan", "last_fire_outcome") != "skipped" {
			t.Fatalf("get: %s", got.Body)
		}
		pf.do("POST", "/api/v1/plans", "operator", map[string]any{"name": "other", "client_id": client, "include": []string{"/srv"}}).Want(201)
		list := pf.do("GET", "/api/v1/plans", "viewer", nil).Want(200)
		items := list.JSON["items"].([]any)
		if len(items) != 2 {
			t.Fatalf("list: %s", list.Body)
		}
		for _, it := range items {
			m := it.(map[string]any)
			want := map[string]any{"next_fire_at": nil, "last_fire_outcome": ""}
			if m["id"] == id {
				want = map[string]any{"next_fire_at": "2026-03-15T02:30:00Z", "last_fire_outcome": "skipped"}
			}
			for k, v := range want {
				if m[k] != v {
					t.Errorf("list item %v: %s = %v, want %v", m["name"], k, m[k], v)
				}
			}
		}

		// Changed, the plan shows no next fire time until the scheduler
		// computes it afresh; the last fire stays.
		body["schedule"] = "0 0 3 * * ?"
		pf.do("PUT", "/api/v1/plans/"+id, "operator", body).Want(200)
		got = pf.do("GET", "/api/v1/plans/"+id, "viewer", nil).Want(200)
		if got.JSON["plan"].(map[string]any)["next_fire_at"] != nil || got.Str("plan", "last_fire_outcome") != "skipped" {
			t.Fatalf("get after a change: %s", got.Body)
		}
		// Read-only: a request may not set them.
		body["next_fire_at"] = "2030-01-01T00:00:00Z"
		pf.do("PUT", "/api/v1/plans/"+id, "operator", body).WantError(400, "invalid_request")
	})
}

// TestRunPlanOneAtATime: "run now" refuses a second backup of a plan while
// one is queued or running.
func TestRunPlanOneAtATime(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		repo, _, err := repository.OpenOrInit(context.Background(), mem.New(mem.Options{Name: t.Name()}),
			func(id string) repository.Index { return db.Index(id) },
			repository.InitOptions{MasterKey: repotest.MasterKey(), Encrypted: true, Chunker: repotest.SmallChunks, PackSize: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(repo.Close)
		bf := &backupFixture{repo: repo}
		bf.fixture = newFixtureWith(t, db, func(f *fixture, o *Options) {
			bf.agents = agents.New(agents.Options{Store: db, Events: f.hub})
			bf.backups = backups.New(backups.Options{Store: db, Repos: repos.New(repo, nil), Events: f.hub, Commands: bf.agents,
				Clients: bf.agents})
			o.Agents, o.Backups = bf.agents, bf.backups
			o.Plans = plans.New(plans.Options{Store: db, Clients: bf.agents, Backups: bf.backups, Events: f.hub,
				DefaultRepositoryID: repo.Config().ID})
		})
		client := bf.enrollBackupAgent("web")
		id := bf.do("POST", "/api/v1/plans", "operator", map[string]any{"name": "p", "client_id": client,
			"include": []string{"/etc"}}).Want(201).Str("plan", "id")

		first := bf.do("POST", "/api/v1/plans/"+id+"/run", "operator", nil).Want(201).Str("backup", "id")
		r := bf.do("POST", "/api/v1/plans/"+id+"/run", "admin", nil).WantError(409, "plan_backup_active")
		if r.JSON["metadata"].(map[string]any)["backup_id"] != first {
			t.Fatalf("conflict does not name the active backup: %s", r.Body)
		}
		bf.do("POST", "/api/v1/agent/backups", "web", map[string]any{"backup_id": first}).Want(201)
		bf.do("POST", "/api/v1/plans/"+id+"/run", "operator", nil).WantError(409, "plan_backup_active")
		bf.do("POST", "/api/v1/agent/backups/"+first+"/fail", "web", map[string]any{"state": "failed", "error": "disk on fire"}).Want(200)
		if second := bf.do("POST", "/api/v1/plans/"+id+"/run", "operator", nil).Want(201).Str("backup", "id"); second == first {
			t.Fatal("the same backup twice")
		}
	})
}
