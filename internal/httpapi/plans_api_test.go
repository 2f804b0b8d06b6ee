package httpapi

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/cofferhq/coffer/internal/server/agents"
	"github.com/cofferhq/coffer/internal/server/plans"
	"github.com/danielgtaylor/huma/v2"
)

// planRunner stands in for the backups service: it records the plans run
// and returns a queued backup of each.
type planRunner struct {
	mu  sync.Mutex
	ran []string
}

func (r *planRunner) RunPlan(_ context.Context, p *coffer.Principal, pl *coffer.Plan) (*coffer.Backup, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ran = append(r.ran, pl.ID)
	return &coffer.Backup{ID: "backup-1", PlanID: pl.ID, ClientID: pl.ClientID, RepositoryID: pl.RepositoryID,
		Trigger: coffer.TriggerManual, State: coffer.JobQueued, Paths: pl.Include, Exclude: pl.Exclude, CreatedBy: p.UserID}, nil
}

type planFixture struct {
	*agentFixture
	runner *planRunner
}

func newPlanFixture(t testing.TB, db *metadb.DB) *planFixture {
	t.Helper()
	pf := &planFixture{agentFixture: &agentFixture{}, runner: &planRunner{}}
	pf.fixture = newFixtureWith(t, db, func(f *fixture, o *Options) {
		pf.agents = agents.New(agents.Options{Store: db, Events: f.hub})
		o.Agents = pf.agents
		o.Plans = plans.New(plans.Options{Store: db, Clients: pf.agents, Backups: pf.runner, Events: f.hub,
			DefaultRepositoryID: "repo-1"})
	})
	return pf
}

func TestPlansAPI(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newPlanFixture(t, db)
		client, _ := f.enroll("web")
		body := map[string]any{"name": "nightly", "client_id": client, "schedule": "0 30 2 * * ?", "timezone": "Europe/Berlin",
			"include": []string{"/etc", "/srv"}, "exclude": []string{"*.tmp"},
			"retention": map[string]any{"keep_last": 3, "keep_within": "720h"}}

		f.do("POST", "/api/v1/plans", "viewer", body).WantError(403, "forbidden")
		r := f.do("POST", "/api/v1/plans", "operator", body).Want(201)
		id := r.Str("plan", "id")
		plan := r.JSON["plan"].(map[string]any)
		if plan["enabled"] != true || plan["compression"] != "fastest" || plan["repository_id"] != "repo-1" ||
			plan["created_by"] != f.userID("operator") || plan["start_at"] != nil {
			t.Errorf("created: %s", r.Body)
		}
		if ret := plan["retention"].(map[string]any); ret["keep_within"] != "720h" || ret["keep_last"] != float64(3) || ret["keep_daily"] != float64(0) {
			t.Errorf("retention: %v", ret)
		}
		f.do("POST", "/api/v1/plans", "operator", body).WantError(409, "plan_name_taken")

		// Read as a viewer.
		if got := f.do("GET", "/api/v1/plans/"+id, "viewer", nil).Want(200); got.Str("plan", "schedule") != "0 30 2 * * ?" {
			t.Errorf("get: %s", got.Body)
		}
		f.do("GET", "/api/v1/plans/nope", "viewer", nil).WantError(404, "plan_not_found")
		list := f.do("GET", "/api/v1/plans?client_id="+client+"&enabled=true&name=NIGHT", "viewer", nil).Want(200)
		if items := list.JSON["items"].([]any); len(items) != 1 || list.JSON["pagination"].(map[string]any)["total"] != float64(1) {
			t.Errorf("list: %s", list.Body)
		}
		if list := f.do("GET", "/api/v1/plans?enabled=false", "viewer", nil).Want(200); len(list.JSON["items"].([]any)) != 0 {
			t.Errorf("list disabled: %s", list.Body)
		}

		// Preview in the plan's zone.
		sched := f.do("GET", "/api/v1/plans/"+id+"/schedule?count=3&from=2026-03-27T12:00:00Z", "viewer", nil).Want(200)
		times, _ := sched.JSON["times"].([]any)
		if sched.JSON["timezone"] != "Europe/Berlin" || len(times) != 3 || times[0] != "2026-03-28T02:30:00+01:00" {
			t.Errorf("schedule: %s", sched.Body)
		}
		f.do("GET", "/api/v1/plans/"+id+"/schedule?count=101", "viewer", nil).WantError(400, "invalid_request")

		// Full replace: disable, manual only.
		body["schedule"], body["enabled"], body["group"] = "", false, "web"
		delete(body, "retention")
		u := f.do("PUT", "/api/v1/plans/"+id, "operator", body).Want(200)
		if u.JSON["plan"].(map[string]any)["enabled"] != false || u.Str("plan", "group") != "web" ||
			u.JSON["plan"].(map[string]any)["retention"].(map[string]any)["keep_within"] != "0s" {
			t.Errorf("put: %s", u.Body)
		}
		if s := f.do("GET", "/api/v1/plans/"+id+"/schedule", "viewer", nil).Want(200); len(s.JSON["times"].([]any)) != 0 {
			t.Errorf("manual plan schedule: %s", s.Body)
		}

		// Run now: disabled plans run by hand too.
		f.do("POST", "/api/v1/plans/"+id+"/run", "viewer", nil).WantError(403, "forbidden")
		run := f.do("POST", "/api/v1/plans/"+id+"/run", "operator", nil).Want(201)
		if run.Str("backup", "plan_id") != id || run.Str("backup", "state") != "queued" || !slices.Equal(f.runner.ran, []string{id}) {
			t.Errorf("run: %s", run.Body)
		}

		// Commands: admins only; an operator may edit the rest.
		body["pre_commands"] = []string{"pg_dump -f /srv/db.sql"}
		f.do("PUT", "/api/v1/plans/"+id, "operator", body).WantError(403, "commands_need_admin")
		f.do("PUT", "/api/v1/plans/"+id, "admin", body).Want(200)
		body["exclude"] = []string{"*.log"}
		if r := f.do("PUT", "/api/v1/plans/"+id, "operator", body).Want(200); r.JSON["plan"].(map[string]any)["pre_commands"].([]any)[0] != "pg_dump -f /srv/db.sql" {
			t.Errorf("operator edit: %s", r.Body)
		}

		f.do("DELETE", "/api/v1/plans/"+id, "viewer", nil).WantError(403, "forbidden")
		if d := f.do("DELETE", "/api/v1/plans/"+id, "operator", nil).Want(200); d.JSON["success"] != true {
			t.Errorf("delete: %s", d.Body)
		}
		f.do("GET", "/api/v1/plans/"+id, "admin", nil).WantError(404, "plan_not_found")
		f.do("DELETE", "/api/v1/plans/"+id, "operator", nil).WantError(404, "plan_not_found")

		// Audit events.
		ev, err := db.ListEvents(context.Background(), metadb.EventQuery{Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		var codes []string
		for _, e := range ev {
			if strings.HasPrefix(e.Code, "plan.") {
				codes = append(codes, e.Code)
			}
		}
		slices.Sort(codes)
		if want := []string{"plan.created", "plan.deleted", "plan.updated", "plan.updated", "plan.updated"}; !slices.Equal(codes, want) {
			t.Errorf("events = %v, want %v", codes, want)
		}
	})
}

func TestPlansAPIBadInput(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newPlanFixture(t, db)
		client, _ := f.enroll("web")
		base := func() map[string]any {
			return map[string]any{"name": "p", "client_id": client, "include": []string{"/etc"}}
		}
		for _, tc := range []struct {
			edit   func(map[string]any)
			status int
			code   string
			field  string
		}{
			{func(b map[string]any) { b["schedule"] = "0 0 25 * * ?" }, 400, "invalid_schedule", "body.schedule"},
			{func(b map[string]any) { b["timezone"] = "Nowhere/Atlantis" }, 400, "invalid_timezone", "body.timezone"},
			{func(b map[string]any) { b["client_id"] = "nope" }, 404, "client_not_found", "body.client_id"},
			{func(b map[string]any) { b["repository_id"] = "elsewhere" }, 400, "unknown_repository", "body.repository_id"},
			{func(b map[string]any) { b["start_at"], b["end_at"] = "2026-02-01T00:00:00Z", "2026-01-01T00:00:00Z" }, 400, "invalid_window", "body.end_at"},
			{func(b map[string]any) { b["include"] = []string{"relative/path"} }, 400, "invalid_path", "body.include"},
			{func(b map[string]any) { b["retention"] = map[string]any{"keep_within": "a month"} }, 400, "invalid_retention", "body.retention.keep_within"},
			{func(b map[string]any) { b["post_commands"] = []string{"reboot"} }, 403, "commands_need_admin", ""},
			{func(b map[string]any) { b["bogus"] = true }, 400, "invalid_request", ""},
			{func(b map[string]any) { b["compression"] = "max" }, 400, "invalid_request", ""},
		} {
			b := base()
			tc.edit(b)
			r := f.do("POST", "/api/v1/plans", "operator", b).WantError(tc.status, tc.code)
			if tc.field != "" && r.JSON["metadata"].(map[string]any)["field"] != tc.field {
				t.Errorf("%s: metadata %v, want field %s", tc.code, r.JSON["metadata"], tc.field)
			}
		}
		// The invalid schedule says which cron field and why.
		b := base()
		b["schedule"] = "0 0 25 * * ?"
		r := f.do("POST", "/api/v1/plans", "operator", b).WantError(400, "invalid_schedule")
		if md := r.JSON["metadata"].(map[string]any); md["schedule_field"] != "hours" || md["value"] != "25" ||
			!strings.Contains(r.Str("detail"), "hours") {
			t.Errorf("invalid_schedule: %s", r.Body)
		}
	})
}

// TestSchedulePreviewAPI previews an unsaved schedule: the next times in
// its zone, the errors saving a plan with it would give, nothing stored.
func TestSchedulePreviewAPI(t *testing.T) {
	f := newPlanFixture(t, metadbtest.Open(t, metadb.SQLite))
	r := f.do("POST", "/api/v1/plans/schedule-preview", "viewer", map[string]any{"schedule": "0 30 2 * * ?",
		"timezone": "Europe/Berlin", "count": 3, "from": "2026-03-27T12:00:00Z"}).Want(200)
	// 02:30 does not exist on 29 March in Berlin (clocks go from 2 to 3):
	// that day's run is at 03:30.
	want := []any{"2026-03-28T02:30:00+01:00", "2026-03-29T03:30:00+02:00", "2026-03-30T02:30:00+02:00"}
	if r.Str("timezone") != "Europe/Berlin" || !slices.Equal(r.JSON["times"].([]any), want) {
		t.Errorf("preview = %s, want %v", r.Body, want)
	}
	if r := f.do("POST", "/api/v1/plans/schedule-preview", "viewer", map[string]any{"schedule": "@daily"}).Want(200); len(r.JSON["times"].([]any)) != 5 {
		t.Errorf("default count: %s", r.Body)
	}
	if r := f.do("POST", "/api/v1/plans/schedule-preview", "viewer", map[string]any{"schedule": ""}).Want(200); len(r.JSON["times"].([]any)) != 0 {
		t.Errorf("an empty schedule: %s", r.Body)
	}
	bad := f.do("POST", "/api/v1/plans/schedule-preview", "viewer", map[string]any{"schedule": "0 0 25 * * ?"}).WantError(400, "invalid_schedule")
	if bad.JSON["metadata"].(map[string]any)["schedule_field"] != "hours" {
		t.Errorf("invalid_schedule: %s", bad.Body)
	}
	f.do("POST", "/api/v1/plans/schedule-preview", "viewer", map[string]any{"schedule": "@daily", "timezone": "Mars/Olympus"}).
		WantError(400, "invalid_timezone")
	f.do("POST", "/api/v1/plans/schedule-preview", "viewer", map[string]any{"schedule": "@daily", "count": 101}).
		WantError(400, "invalid_request")
	f.do("POST", "/api/v1/plans/schedule-preview", "", map[string]any{"schedule": "@daily"}).WantError(401, "authentication_required")
}

// TestPlanRoutesDocumented holds the plan routes against the OpenAPI
// document and their access levels (api_test.go checks a server without them).
func TestPlanRoutesDocumented(t *testing.T) {
	f := newPlanFixture(t, metadbtest.Open(t, metadb.SQLite))
	doc := f.do("GET", "/api/v1/openapi.json", "", nil).Want(200)
	var documented []string
	for path, item := range doc.JSON["paths"].(map[string]any) {
		for method := range item.(map[string]any) {
			documented = append(documented, strings.ToUpper(method)+" "+path)
		}
	}
	registered := f.api.Patterns()
	slices.Sort(documented)
	slices.Sort(registered)
	if !slices.Equal(documented, registered) {
		t.Errorf("document and routes differ:\ndocumented: %v\nregistered: %v", documented, registered)
	}
	want := map[string]string{"GET /api/v1/plans": "read", "POST /api/v1/plans": "operate", "GET /api/v1/plans/{id}": "read",
		"PUT /api/v1/plans/{id}": "operate", "DELETE /api/v1/plans/{id}": "operate", "POST /api/v1/plans/{id}/run": "operate",
		"GET /api/v1/plans/{id}/schedule": "read", "POST /api/v1/plans/schedule-preview": "read"}
	got := map[string]string{}
	for path, item := range f.api.OpenAPI().Paths {
		if !strings.HasPrefix(path, "/api/v1/plans") {
			continue
		}
		for method, op := range map[string]*huma.Operation{"GET": item.Get, "POST": item.Post, "PUT": item.Put,
			"PATCH": item.Patch, "DELETE": item.Delete} {
			if op != nil {
				got[method+" "+path], _ = op.Extensions["x-coffer-permission"].(string)
			}
		}
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s requires %q, want %q", k, got[k], v)
		}
		if !slices.Contains(documented, k) {
			t.Errorf("%s is not documented", k)
		}
	}
	if len(got) != len(want) {
		t.Errorf("plan routes = %v", got)
	}
	// Without a plans service the routes are left out.
	if plain := newFixture(t, metadbtest.Open(t, metadb.SQLite)); slices.ContainsFunc(plain.api.Patterns(),
		func(p string) bool { return strings.Contains(p, "/plans") }) {
		t.Error("plan routes registered without a plans service")
	}
}
