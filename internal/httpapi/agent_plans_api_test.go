package httpapi

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/cofferhq/coffer/internal/protocol"
	"github.com/cofferhq/coffer/internal/server/agents"
	"github.com/cofferhq/coffer/internal/server/plans"
	"github.com/cofferhq/coffer/internal/server/restores"
)

// TestAgentPlansAPI checks GET /api/v1/agent/plans: an agent sees its own
// client's enabled plans, with what it needs to show them, and nothing of
// other clients; users cannot call it.
func TestAgentPlansAPI(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		now := time.Date(2026, 3, 27, 12, 0, 0, 0, time.UTC)
		pf := &planFixture{agentFixture: &agentFixture{}, runner: &planRunner{}}
		pf.fixture = newFixtureWith(t, db, func(f *fixture, o *Options) {
			pf.agents = agents.New(agents.Options{Store: db, Events: f.hub})
			o.Agents = pf.agents
			o.Plans = plans.New(plans.Options{Store: db, Clients: pf.agents, Backups: pf.runner, Events: f.hub,
				DefaultRepositoryID: "repo-1"})
			o.Now = func() time.Time { return now }
		})
		f := pf
		alpha, alphaKey := f.enroll("alpha")
		beta, betaKey := f.enroll("beta")
		_, gammaKey := f.enroll("gamma")
		create := func(body map[string]any) string {
			t.Helper()
			return f.do("POST", "/api/v1/plans", "admin", body).Want(201).Str("plan", "id")
		}
		nightly := create(map[string]any{"name": "b nightly", "client_id": alpha, "group": "db", "schedule": "0 30 2 * * ?",
			"timezone": "Europe/Berlin", "include": []string{"/srv", "/etc"}, "exclude": []string{"*.tmp"},
			"pre_commands": []string{"pg_dump -f /srv/db.sql"}, "post_commands": []string{"rm /srv/db.sql"},
			"retention": map[string]any{"keep_daily": 7, "keep_within": "720h"}, "compression": "best", "full_every": 5,
			"one_file_system": true})
		manual := create(map[string]any{"name": "a manual", "client_id": alpha, "include": []string{"/home"}})
		create(map[string]any{"name": "c disabled", "client_id": alpha, "include": []string{"/var"}, "enabled": false})
		betaPlan := create(map[string]any{"name": "beta plan", "client_id": beta, "include": []string{"/"}})

		r := f.do("GET", "/api/v1/agent/plans", alphaKey, nil).Want(200)
		items, _ := r.JSON["items"].([]any)
		if len(items) != 2 || r.JSON["total"] != float64(2) {
			t.Fatalf("alpha's plans: %s", r.Body)
		}
		first, second := items[0].(map[string]any), items[1].(map[string]any)
		if first["id"] != manual || first["schedule"] != "" || first["next_run_at"] != nil || first["compression"] != "fastest" ||
			fmt.Sprint(first["pre_commands"]) != "[]" {
			t.Errorf("manual plan: %v", first)
		}
		want := map[string]any{"id": nightly, "name": "b nightly", "group": "db", "repository_id": "repo-1",
			"schedule": "0 30 2 * * ?", "timezone": "Europe/Berlin", "next_run_at": "2026-03-28T01:30:00Z",
			"include": "[/srv /etc]", "exclude": "[*.tmp]", "pre_commands": "[pg_dump -f /srv/db.sql]",
			"post_commands": "[rm /srv/db.sql]", "compression": "best", "full_every": "5", "one_file_system": "true"}
		for k, v := range want {
			if got := fmt.Sprint(second[k]); got != fmt.Sprint(v) {
				t.Errorf("nightly %s = %s, want %v", k, got, v)
			}
		}
		ret, _ := second["retention"].(map[string]any)
		if ret["keep_daily"] != float64(7) || ret["keep_within"] != "720h" || ret["keep_last"] != float64(0) {
			t.Errorf("nightly retention: %v", ret)
		}
		if _, ok := second["enabled"]; ok {
			t.Errorf("agent plans carry enabled (they all are): %v", second)
		}

		// Each agent sees its own client's plans only.
		r = f.do("GET", "/api/v1/agent/plans", betaKey, nil).Want(200)
		if items, _ := r.JSON["items"].([]any); len(items) != 1 || items[0].(map[string]any)["id"] != betaPlan {
			t.Errorf("beta's plans: %s", r.Body)
		}
		r = f.do("GET", "/api/v1/agent/plans", gammaKey, nil).Want(200)
		if items, ok := r.JSON["items"].([]any); !ok || len(items) != 0 || r.JSON["total"] != float64(0) {
			t.Errorf("gamma's plans: %s", r.Body)
		}

		// Enabling a plan shows it; users and strangers are refused.
		f.do("PUT", "/api/v1/plans/"+betaPlan, "admin", map[string]any{"name": "beta plan", "client_id": beta,
			"include": []string{"/"}, "enabled": false}).Want(200)
		if r := f.do("GET", "/api/v1/agent/plans", betaKey, nil).Want(200); len(r.JSON["items"].([]any)) != 0 {
			t.Errorf("beta's plans after disabling its plan: %s", r.Body)
		}
		for _, role := range []string{"viewer", "operator", "admin"} {
			f.do("GET", "/api/v1/agent/plans", role, nil).WantError(403, "forbidden")
		}
		f.do("GET", "/api/v1/agent/plans", "", nil).WantError(401, "authentication_required")
		f.do("GET", "/api/v1/agent/plans", protocol.CredentialPrefix+"nope", nil).WantError(401, "invalid_token")
		// A deleted client's credential stops working.
		f.do("DELETE", "/api/v1/clients/"+alpha, "admin", nil).Want(200)
		f.do("GET", "/api/v1/agent/plans", alphaKey, nil).WantError(401, "invalid_token")
	})
}

// TestRestoreToOfflineClient checks that a restore to a client whose agent
// is offline waits, queued, and starts when the agent connects: the
// restore command is held for it.
func TestRestoreToOfflineClient(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newRestoreFixture(t, db, restores.Options{})
		ctx := context.Background()
		if _, err := db.MarkClientsOffline(ctx, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if st := f.do("GET", "/api/v1/clients/"+f.beta, "viewer", nil).Want(200).Str("client", "status"); st != "offline" {
			t.Fatalf("beta is %s, want offline", st)
		}
		id := f.do("POST", "/api/v1/restores", "operator", map[string]any{"backup_id": f.backupID, "destination": "/srv/r",
			"target_client_id": f.beta}).Want(201).Str("restore", "id")
		for range 2 {
			if r := f.do("GET", "/api/v1/restores/"+id, "viewer", nil).Want(200); r.Str("restore", "state") != "queued" ||
				r.JSON["restore"].(map[string]any)["started_at"] != nil {
				t.Fatalf("restore to an offline client: %s", r.Body)
			}
		}
		// The agent comes back: its stream brings the restore, which it starts.
		st := openAgentStream(t, f.ts.URL, f.betaKey)
		cmd := nextCommand(t, st)
		if cmd.Kind != protocol.CommandRestore || cmd.Restore == nil || cmd.Restore.RestoreID != id {
			t.Fatalf("first command: %+v", cmd)
		}
		start := f.do("POST", "/api/v1/agent/restores", f.betaKey, map[string]any{"restore_id": id}).Want(201)
		if start.Str("restore", "state") != "running" || start.Str("restore", "destination") != "/srv/r" {
			t.Fatalf("start: %s", start.Body)
		}
		if r := f.do("GET", "/api/v1/restores/"+id, "viewer", nil).Want(200); r.Str("restore", "state") != "running" {
			t.Fatalf("after the agent started it: %s", r.Body)
		}
	})
}
