package httpapi

import (
	"bytes"
	"context"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/cofferhq/coffer/internal/server/agents"
	"github.com/cofferhq/coffer/internal/server/backups"
	"github.com/cofferhq/coffer/internal/server/repos"
	"github.com/cofferhq/coffer/internal/server/restores"
)

// newUIRestoreFixture is the restore fixture (clients alpha and beta,
// owned by "operator", and a committed backup of alpha holding
// home/u/big.bin, home/u/notes.txt and etc/hostname) with the backups
// service too, which the wizard browses backups with. No agent runs, so
// both clients are offline.
func newUIRestoreFixture(t testing.TB, db *metadb.DB) *restoreFixture {
	t.Helper()
	ctx := context.Background()
	rf := &restoreFixture{repo: repotest.New(t, repotest.Options{Encrypted: true})}
	rf.fixture = newFixtureWith(t, db, func(f *fixture, o *Options) {
		ag := agents.New(agents.Options{Store: db, Events: f.hub})
		set := repos.New(rf.repo, nil)
		o.Agents = ag
		o.Backups = backups.New(backups.Options{Store: db, Repos: set, Events: f.hub, Commands: ag, Clients: ag})
		o.Restores = restores.New(restores.Options{Store: db, Repos: set, Events: f.hub, Commands: ag, Clients: ag})
	})
	rf.alpha, rf.alphaKey = rf.enrollClient("alpha")
	rf.beta, rf.betaKey = rf.enrollClient("beta")
	if _, err := db.MarkClientsOffline(ctx, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	_, rf.root = repotest.WriteSnapshot(t, rf.repo, repotest.Files{
		"home/u/big.bin":   repotest.Random(7, 40<<10),
		"home/u/notes.txt": bytes.Repeat([]byte("restore me "), 300),
		"etc/hostname":     []byte("alpha\n"),
	})
	b := &coffer.Backup{ClientID: rf.alpha, Trigger: coffer.TriggerManual, State: coffer.JobRunning, Paths: []string{"/"}}
	if err := db.CreateBackup(ctx, b); err != nil {
		t.Fatal(err)
	}
	if _, err := db.FinishBackup(ctx, b.ID, metadb.BackupFinish{State: coffer.JobSucceeded, RootTree: rf.root.String(),
		SnapshotID: "snap-1"}); err != nil {
		t.Fatal(err)
	}
	rf.backupID = b.ID
	return rf
}

var hiddenInput = regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`)

// formOf returns the hidden fields of the form with id in page.
func formOf(t *testing.T, page, id string) url.Values {
	t.Helper()
	start := strings.Index(page, `id="`+id+`"`)
	if start < 0 {
		t.Fatalf("no form #%s in\n%s", id, page)
	}
	form := page[start:]
	form = form[:strings.Index(form, "</form>")]
	v := url.Values{}
	for _, m := range hiddenInput.FindAllStringSubmatch(form, -1) {
		v.Add(m[1], html.UnescapeString(m[2]))
	}
	return v
}

// step submits the wizard's GET form id on page with the fields set added
// to its hidden ones, and wants status back.
func (f *restoreFixture) step(t *testing.T, sess *http.Cookie, page, id string, set url.Values, status int) string {
	t.Helper()
	v := formOf(t, page, id)
	for k, vals := range set {
		v[k] = append(v[k], vals...)
	}
	r := f.uiDo("GET", "/restores/new?"+v.Encode(), []*http.Cookie{sess}, nil)
	if r.StatusCode != status {
		t.Fatalf("GET /restores/new?%s: %d, want %d\n%s", v.Encode(), r.StatusCode, status, r.Body)
	}
	return r.Body
}

func TestUIRestoreWizard(t *testing.T) {
	t.Parallel()
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newUIRestoreFixture(t, db)
		sess := f.uiSignIn("operator", "operator-password")
		bid := f.backupID

		// Step backup: the operator's clients, the first one's backups.
		r := f.uiDo("GET", "/restores/new", []*http.Cookie{sess}, nil)
		if r.StatusCode != 200 {
			t.Fatalf("GET /restores/new: %d\n%s", r.StatusCode, r.Body)
		}
		wantIn(t, "step backup", r.Body, `id="restore-step-backup"`, `id="restore-client"`, `>alpha (offline)</option>`,
			`>beta (offline)</option>`, `name="backup" value="`+bid+`" id="backup-`+bid+`"`, `id="restore-next"`,
			`aria-current="step">Backup</li>`)
		// Next without choosing a backup says so, in place.
		page := f.step(t, sess, r.Body, "restore-step-backup", url.Values{"client": {f.alpha}, "step": {"paths"}}, 400)
		wantIn(t, "no backup chosen", page, `id="restore-step-backup"`, `<p class="field-error" id="backup-error">Choose the backup to restore.</p>`)

		// Step paths: the backup's root, carried as a hidden field.
		page = f.step(t, sess, r.Body, "restore-step-backup", url.Values{"client": {f.alpha}, "backup": {bid}, "step": {"paths"}}, 200)
		wantIn(t, "step paths", page, `id="restore-step-paths"`, `<input type="hidden" name="backup" value="`+bid+`">`,
			`id="restore-whole"`, `name="path" value="/etc" id="tree-0"`, `name="path" value="/home" id="tree-1"`,
			`name="browse" value="/home"`, `value="target" id="restore-next"`)
		// Open /home with /etc checked: /etc is kept, chosen.
		page = f.step(t, sess, page, "restore-step-paths", url.Values{"path": {"/etc"}, "browse": {"/home"}}, 200)
		wantIn(t, "/home opened", page, `name="path" value="/etc" id="chosen-0" checked`, `name="path" value="/home/u" id="tree-0"`,
			`aria-current="location">home</button>`)
		// Open u, check notes.txt, type a path that does not exist: the step stays, keeping all three.
		page = f.step(t, sess, page, "restore-step-paths", url.Values{"path": {"/etc"}, "browse": {"/home/u"}}, 200)
		wantIn(t, "/home/u opened", page, `name="path" value="/home/u/notes.txt" id="tree-1"`, `>40.0 KiB<`)
		bad := f.step(t, sess, page, "restore-step-paths", url.Values{"path": {"/etc", "/home/u/notes.txt", "/nope"},
			"step": {"target"}}, 400)
		wantIn(t, "missing path", bad, `id="restore-step-paths"`, `The backup has nothing at /nope`,
			`value="/etc" id="chosen-0" checked`, `value="/home/u/notes.txt" id="chosen-1" checked`, `value="/nope" id="chosen-2" checked`)
		page = f.step(t, sess, page, "restore-step-paths", url.Values{"path": {"/etc", "/home/u/notes.txt"}, "step": {"target"}}, 200)

		// Step target: the operator's clients, the backup's own chosen; Back keeps the paths.
		wantIn(t, "step target", page, `id="restore-step-target"`, `<select id="restore-target" name="target"`,
			`value="`+f.alpha+`" selected>alpha (offline), the backup's own client`, `value="`+f.beta+`">beta (offline)`,
			`<input type="hidden" name="path" value="/etc">`, `<input type="hidden" name="path" value="/home/u/notes.txt">`,
			`id="restore-target-offline"`, "fails if it has not started within 7 days")
		back := regexp.MustCompile(`href="([^"]+)" id="restore-back"`).FindStringSubmatch(page)
		if back == nil {
			t.Fatal("no Back link")
		}
		r = f.uiDo("GET", html.UnescapeString(back[1]), []*http.Cookie{sess}, nil)
		wantIn(t, "back to paths", r.Body, `id="restore-step-paths"`, `value="/etc" id="chosen-0" checked`,
			`value="/home/u/notes.txt" id="chosen-1" checked`)

		// Step destination, to beta; a relative path is refused in place, keeping every choice.
		page = f.step(t, sess, page, "restore-step-target", url.Values{"target": {f.beta}, "step": {"destination"}}, 200)
		wantIn(t, "step destination", page, `id="restore-step-destination"`, `<h2>Where on beta?</h2>`,
			`<input type="hidden" name="target" value="`+f.beta+`">`, `id="restore-destination"`)
		bad = f.step(t, sess, page, "restore-step-destination", url.Values{"destination": {"srv/restore"}, "step": {"overwrite"}}, 400)
		wantIn(t, "relative destination", bad, `id="restore-step-destination"`, `value="srv/restore"`, `aria-invalid="true"`,
			`aria-describedby="destination-error restore-destination-hint"`,
			`<p class="field-error" id="destination-error">The destination is not an absolute path`,
			`<input type="hidden" name="target" value="`+f.beta+`">`, `<input type="hidden" name="path" value="/etc">`,
			`<input type="hidden" name="backup" value="`+bid+`">`)

		// Step overwrite: skip by default, every policy explained.
		page = f.step(t, sess, page, "restore-step-destination", url.Values{"destination": {"/srv/restore/"}, "step": {"overwrite"}}, 200)
		wantIn(t, "step overwrite", page, `id="restore-step-overwrite"`, `value="skip" id="restore-overwrite-skip" aria-describedby="restore-overwrite-skip-hint" checked`,
			`id="restore-overwrite-overwrite"`, `id="restore-overwrite-if-newer"`, `id="restore-overwrite-rename"`, "NAME.restored-1",
			`<input type="hidden" name="destination" value="/srv/restore/">`)

		// Confirm: everything, and a POST form with the session's token.
		page = f.step(t, sess, page, "restore-step-overwrite", url.Values{"overwrite": {"rename"}, "step": {"confirm"}}, 200)
		wantIn(t, "confirm", page, `id="restore-summary"`, `<span class="mono">/srv/restore</span>`, `beta (offline)`,
			`<li class="mono">/etc</li>`, `<li class="mono">/home/u/notes.txt</li>`, "Keep both:",
			`id="restore-example">/srv/restore/etc</span>`, `<form method="post" action="/restores" id="restore-step-confirm">`,
			`id="restore-confirm"`)
		form := formOf(t, page, "restore-step-confirm")
		if form.Get("csrf_token") == "" {
			t.Fatalf("the confirm form has no token: %v", form)
		}
		done := f.uiDo("POST", "/restores", []*http.Cookie{sess}, form)
		loc := done.Header.Get("Location")
		if done.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/restores/") || done.cookie(flashCookie) == nil {
			t.Fatalf("POST /restores: %d %v\n%s", done.StatusCode, done.Header, done.Body)
		}
		got, err := f.api.opts.Restores.Get(context.Background(), strings.TrimPrefix(loc, "/restores/"))
		if err != nil {
			t.Fatal(err)
		}
		if got.BackupID != bid || got.TargetClientID != f.beta || got.Destination != "/srv/restore" ||
			got.Overwrite != coffer.OverwriteRename || !slices.Equal(got.Paths, []string{"etc", "home/u/notes.txt"}) ||
			got.CreatedBy != f.userID("operator") || got.State != coffer.JobQueued {
			t.Errorf("created restore = %+v", got)
		}
		// The restore's page shows the flash once.
		detail := f.uiDo("GET", loc, []*http.Cookie{sess, done.cookie(flashCookie)}, nil)
		wantIn(t, "after create", detail.Body, `id="flash"`, "beta is offline, so it starts when its agent connects")
	})
}

func TestUIRestoreWizardEntries(t *testing.T) {
	t.Parallel()
	f := newUIRestoreFixture(t, metadbtest.Open(t, metadb.SQLite))
	sess := f.uiSignIn("operator", "operator-password")
	get := func(path string, status int) string {
		t.Helper()
		r := f.uiDo("GET", path, []*http.Cookie{sess}, nil)
		if r.StatusCode != status {
			t.Fatalf("GET %s: %d, want %d\n%s", path, r.StatusCode, status, r.Body)
		}
		return r.Body
	}
	// From a backup's page.
	page := get("/restores/new?backup="+f.backupID, 200)
	wantIn(t, "?backup=", page, `id="restore-step-paths"`, `id="restore-whole"`)
	// "Restore from here" in the backup browser: the path is chosen, its directory listed.
	page = get("/restores/new?backup="+f.backupID+"&path=home/u", 200)
	wantIn(t, "?backup=&path=", page, `value="/home/u" id="chosen-0" checked`, `aria-current="location">home</button>`,
		`<span class="name mono">u/</span><span class="muted">chosen</span>`)
	page = get("/restores/new?backup="+f.backupID+"&path=/", 200)
	wantIn(t, "path=/", page, `id="restore-whole"`)
	// A later step without a destination shows that step's problem.
	page = get("/restores/new?backup="+f.backupID+"&step=confirm", 400)
	wantIn(t, "confirm too early", page, `id="restore-step-destination"`, "Enter the directory on the target machine")
	// A backup that does not exist, or cannot be restored.
	page = get("/restores/new?backup=01NOPE&step=target", 400)
	wantIn(t, "unknown backup", page, `id="restore-step-backup"`, "There is no backup with id 01NOPE")
	running := &coffer.Backup{ClientID: f.alpha, Trigger: coffer.TriggerManual, State: coffer.JobRunning, Paths: []string{"/"}}
	if err := f.db.CreateBackup(context.Background(), running); err != nil {
		t.Fatal(err)
	}
	page = get("/restores/new?backup="+running.ID, 400)
	wantIn(t, "running backup", page, `id="restore-step-backup"`, "is running: only a backup that finished succeeded or partial")
	wantNotIn(t, "step backup", page, `value="`+running.ID+`"`)
	// Bad paths and policies stay on their step.
	page = get("/restores/new?backup="+f.backupID+"&path=/home/../etc&step=target", 400)
	wantIn(t, "dotdot path", page, `id="restore-step-paths"`, "is not clean")
	page = get("/restores/new?backup="+f.backupID+"&destination=/r&overwrite=clobber&step=confirm", 400)
	wantIn(t, "bad policy", page, `id="restore-step-overwrite"`, "Choose one of the policies below.")
}

func TestUIRestoreWizardRefusals(t *testing.T) {
	t.Parallel()
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newUIRestoreFixture(t, db)
		// beta now belongs to no one: only admins act on it.
		f.do("PATCH", "/api/v1/clients/"+f.beta, "admin", map[string]any{"owner_id": ""}).Want(200)
		op := f.uiSignIn("operator", "operator-password")
		token := hiddenToken.FindStringSubmatch(f.uiDo("GET", "/restores", []*http.Cookie{op}, nil).Body)[1]
		valid := url.Values{"backup": {f.backupID}, "target": {f.alpha}, "destination": {"/r"}, "overwrite": {"skip"},
			"csrf_token": {token}}

		// The operator is not offered beta, and choosing it anyway is refused with the reason.
		page := f.uiDo("GET", "/restores/new?backup="+f.backupID+"&step=target", []*http.Cookie{op}, nil).Body
		wantNotIn(t, "target step", page, `value="`+f.beta+`"`)
		r := f.uiDo("GET", "/restores/new?backup="+f.backupID+"&target="+f.beta+"&step=destination", []*http.Cookie{op}, nil)
		if r.StatusCode != 400 {
			t.Errorf("target beta: %d", r.StatusCode)
		}
		wantIn(t, "target beta", r.Body, `id="restore-step-target"`, `<p class="field-error" id="target-error">Client beta belongs to another user`)
		form := url.Values{}
		for k, v := range valid {
			form[k] = v
		}
		form.Set("target", f.beta)
		r = f.uiDo("POST", "/restores", []*http.Cookie{op}, form)
		wantIn(t, "POST to beta", r.Body, "Client beta belongs to another user")
		if r.StatusCode != 400 {
			t.Errorf("POST to beta: %d", r.StatusCode)
		}
		// Nor may an operator who owns neither client restore the backup at all.
		f.do("POST", "/api/v1/users", "admin", map[string]any{"username": "operator2", "password": "operator2-password",
			"role": "operator"}).Want(201)
		op2 := f.uiSignIn("operator2", "operator2-password")
		r = f.uiDo("GET", "/restores/new?backup="+f.backupID, []*http.Cookie{op2}, nil)
		wantIn(t, "operator2", r.Body, `id="restore-step-backup"`, "Client alpha belongs to another user",
			"You may not restore from any client")

		// Viewers may not start the wizard or post it.
		viewer := f.uiSignIn("viewer", "viewer-password")
		vtoken := hiddenToken.FindStringSubmatch(f.uiDo("GET", "/restores", []*http.Cookie{viewer}, nil).Body)[1]
		if r := f.uiDo("GET", "/restores/new", []*http.Cookie{viewer}, nil); r.StatusCode != 403 {
			t.Errorf("viewer GET /restores/new: %d", r.StatusCode)
		}
		form = url.Values{}
		for k, v := range valid {
			form[k] = v
		}
		form.Set("csrf_token", vtoken)
		if r := f.uiDo("POST", "/restores", []*http.Cookie{viewer}, form); r.StatusCode != 403 || !strings.Contains(r.Body, "operate permission") {
			t.Errorf("viewer POST /restores: %d\n%s", r.StatusCode, r.Body)
		}
		// Without the form's token nothing happens.
		form.Del("csrf_token")
		if r := f.uiDo("POST", "/restores", []*http.Cookie{op}, form); r.StatusCode != 403 || !strings.Contains(r.Body, "security token") {
			t.Errorf("POST /restores without token: %d\n%s", r.StatusCode, r.Body)
		}
		if list, err := f.api.opts.Restores.List(context.Background(), metadb.RestoreFilter{}); err != nil || len(list) != 0 {
			t.Errorf("restores after refusals: %d, %v", len(list), err)
		}
		// The valid form works.
		if r := f.uiDo("POST", "/restores", []*http.Cookie{op}, valid); r.StatusCode != http.StatusSeeOther {
			t.Errorf("valid POST: %d\n%s", r.StatusCode, r.Body)
		}
	})
}

// createRestore queues a restore of the fixture's backup as role.
func (f *restoreFixture) createRestore(role, target, dest string, paths ...string) string {
	f.t.Helper()
	return f.do("POST", "/api/v1/restores", role, map[string]any{"backup_id": f.backupID, "target_client_id": target,
		"destination": dest, "paths": paths}).Want(201).Str("restore", "id")
}

func TestUIRestoresHistory(t *testing.T) {
	t.Parallel()
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newUIRestoreFixture(t, db)
		toAlpha := f.createRestore("operator", f.alpha, "/srv/a", "home/u")
		toBeta := f.createRestore("admin", f.beta, "/srv/b")
		op := f.uiSignIn("operator", "operator-password")
		viewer := f.uiSignIn("viewer", "viewer-password")

		r := f.uiDo("GET", "/restores", []*http.Cookie{op}, nil)
		if r.StatusCode != 200 {
			t.Fatalf("GET /restores: %d\n%s", r.StatusCode, r.Body)
		}
		wantIn(t, "history", r.Body, `id="restores-table"`, `<tr data-restore-id="`+toAlpha+`">`, `<tr data-restore-id="`+toBeta+`">`,
			`id="new-restore"`, `href="/backups/`+f.backupID+`"`, `alpha → beta`, `<li class="mono">/home/u</li>`,
			`/srv/b`, `sse-swap="job-restore-`+toAlpha+`"`, `sse-connect="/ui/events?after=`, `data-state="queued"`)
		if strings.Index(r.Body, toBeta) > strings.Index(r.Body, toAlpha) {
			t.Error("the history is not newest first")
		}
		vr := f.uiDo("GET", "/restores", []*http.Cookie{viewer}, nil)
		wantIn(t, "viewer history", vr.Body, `id="restores-table"`, toAlpha)
		wantNotIn(t, "viewer history", vr.Body, `id="new-restore"`)

		// Filters.
		r = f.uiDo("GET", "/restores?client="+f.beta, []*http.Cookie{op}, nil)
		wantIn(t, "beta's", r.Body, toBeta, `value="`+f.beta+`" selected`)
		wantNotIn(t, "beta's", r.Body, `data-restore-id="`+toAlpha)
		// Cancel the one to alpha; filter by state.
		f.do("POST", "/api/v1/restores/"+toAlpha+"/cancel", "operator", nil).Want(200)
		r = f.uiDo("GET", "/restores?state=canceled", []*http.Cookie{op}, nil)
		wantIn(t, "canceled", r.Body, `data-restore-id="`+toAlpha, `<option value="canceled" selected>`)
		wantNotIn(t, "canceled", r.Body, `data-restore-id="`+toBeta)
		r = f.uiDo("GET", "/restores?state=done", []*http.Cookie{op}, nil)
		if r.StatusCode != 400 || !strings.Contains(r.Body, `id="restores-state-error"`) {
			t.Errorf("bad state filter: %d\n%s", r.StatusCode, r.Body)
		}
		r = f.uiDo("GET", "/restores?state=failed", []*http.Cookie{op}, nil)
		wantIn(t, "no failed", r.Body, "No restores match these filters.")

		// Paging: 51 restores make two pages.
		for i := range restoresPageSize - 1 {
			f.createRestore("operator", f.alpha, fmt.Sprintf("/srv/p%d", i))
		}
		r = f.uiDo("GET", "/restores", []*http.Cookie{op}, nil)
		if n := strings.Count(r.Body, "<tr data-restore-id="); n != restoresPageSize {
			t.Errorf("first page: %d rows", n)
		}
		wantNotIn(t, "first page", r.Body, `data-restore-id="`+toAlpha, `rel="first"`)
		next := regexp.MustCompile(`<a href="([^"]+)" rel="next">`).FindStringSubmatch(r.Body)
		if next == nil {
			t.Fatalf("no next page link:\n%s", r.Body)
		}
		r = f.uiDo("GET", html.UnescapeString(next[1]), []*http.Cookie{op}, nil)
		if n := strings.Count(r.Body, "<tr data-restore-id="); n != 1 || !strings.Contains(r.Body, `data-restore-id="`+toAlpha) ||
			!strings.Contains(r.Body, `rel="first"`) || strings.Contains(r.Body, `rel="next"`) {
			t.Errorf("second page: %d rows\n%s", n, r.Body)
		}
	})
}

func TestUIRestoreDetail(t *testing.T) {
	t.Parallel()
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newUIRestoreFixture(t, db)
		id := f.createRestore("operator", f.alpha, "/srv/a", "home/u", "etc")
		op := f.uiSignIn("operator", "operator-password")
		viewer := f.uiSignIn("viewer", "viewer-password")
		token := hiddenToken.FindStringSubmatch(f.uiDo("GET", "/restores", []*http.Cookie{op}, nil).Body)[1]
		vtoken := hiddenToken.FindStringSubmatch(f.uiDo("GET", "/restores", []*http.Cookie{viewer}, nil).Body)[1]

		r := f.uiDo("GET", "/restores/"+id, []*http.Cookie{op}, nil)
		if r.StatusCode != 200 {
			t.Fatalf("GET /restores/%s: %d\n%s", id, r.StatusCode, r.Body)
		}
		wantIn(t, "detail", r.Body, `<div id="restore-progress"><div class="job-progress" id="job-restore-`+id+`"`,
			`sse-connect="/ui/events?after=`, `<li class="mono">/home/u</li>`, `<li class="mono">/etc</li>`,
			`<dd class="mono">/srv/a</dd>`, "Skip existing", "by operator", "alpha is offline: the restore waits queued",
			`action="/restores/`+id+`/cancel"`, `id="restore-cancel"`)
		wantNotIn(t, "queued detail", r.Body, `id="restore-delete"`)
		vr := f.uiDo("GET", "/restores/"+id, []*http.Cookie{viewer}, nil)
		wantIn(t, "viewer detail", vr.Body, `id="restore-progress"`)
		wantNotIn(t, "viewer detail", vr.Body, `id="restore-cancel"`, `id="restore-delete"`, `id="restore-again"`)
		if r := f.uiDo("GET", "/restores/01NOPE", []*http.Cookie{op}, nil); r.StatusCode != 404 {
			t.Errorf("unknown restore: %d", r.StatusCode)
		}

		// Viewers and requests without the token cannot cancel.
		if r := f.uiDo("POST", "/restores/"+id+"/cancel", []*http.Cookie{viewer}, url.Values{"csrf_token": {vtoken}}); r.StatusCode != 403 {
			t.Errorf("viewer cancel: %d", r.StatusCode)
		}
		if r := f.uiDo("POST", "/restores/"+id+"/cancel", []*http.Cookie{op}, url.Values{}); r.StatusCode != 403 ||
			!strings.Contains(r.Body, "security token") {
			t.Errorf("cancel without token: %d", r.StatusCode)
		}
		// An operator who does not own the target is told why.
		f.do("POST", "/api/v1/users", "admin", map[string]any{"username": "operator2", "password": "operator2-password",
			"role": "operator"}).Want(201)
		op2 := f.uiSignIn("operator2", "operator2-password")
		page := f.uiDo("GET", "/restores/"+id, []*http.Cookie{op2}, nil).Body
		wantNotIn(t, "operator2 detail", page, `id="restore-cancel"`)
		tok2 := hiddenToken.FindStringSubmatch(page)[1]
		r = f.uiDo("POST", "/restores/"+id+"/cancel", []*http.Cookie{op2}, url.Values{"csrf_token": {tok2}})
		if r.StatusCode != 403 || !strings.Contains(r.Body, "Client alpha belongs to another user") {
			t.Errorf("operator2 cancel: %d\n%s", r.StatusCode, r.Body)
		}

		// The owner cancels; the page then offers Delete and Restore again.
		r = f.uiDo("POST", "/restores/"+id+"/cancel", []*http.Cookie{op}, url.Values{"csrf_token": {token}})
		if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/restores/"+id {
			t.Fatalf("cancel: %d %v\n%s", r.StatusCode, r.Header, r.Body)
		}
		r = f.uiDo("GET", "/restores/"+id, []*http.Cookie{op, r.cookie(flashCookie)}, nil)
		wantIn(t, "canceled detail", r.Body, "Restore canceled.", `data-state="canceled"`, `id="restore-delete"`,
			`id="restore-again"`, `id="restore-error"`)
		wantNotIn(t, "canceled detail", r.Body, `id="restore-cancel"`)
		again := regexp.MustCompile(`href="([^"]+)" id="restore-again"`).FindStringSubmatch(r.Body)
		ag := f.uiDo("GET", html.UnescapeString(again[1]), []*http.Cookie{op}, nil)
		wantIn(t, "restore again", ag.Body, `id="restore-step-confirm"`, `<span class="mono">/srv/a</span>`, `<li class="mono">/home/u</li>`)
		// Canceling again is a conflict, said in words.
		r = f.uiDo("POST", "/restores/"+id+"/cancel", []*http.Cookie{op}, url.Values{"csrf_token": {token}})
		if r.StatusCode != 409 {
			t.Errorf("cancel twice: %d\n%s", r.StatusCode, r.Body)
		}

		// Delete: not for viewers or operator2; htmx gets HX-Redirect.
		if r := f.uiDo("POST", "/restores/"+id+"/delete", []*http.Cookie{viewer}, url.Values{"csrf_token": {vtoken}}); r.StatusCode != 403 {
			t.Errorf("viewer delete: %d", r.StatusCode)
		}
		if r := f.uiDo("POST", "/restores/"+id+"/delete", []*http.Cookie{op2}, url.Values{"csrf_token": {tok2}}); r.StatusCode != 403 {
			t.Errorf("operator2 delete: %d", r.StatusCode)
		}
		r = f.uiDo("POST", "/restores/"+id+"/delete", []*http.Cookie{op}, nil, "HX-Request", "true", csrfHeader, token)
		if r.StatusCode != http.StatusNoContent || r.Header.Get("HX-Redirect") != "/restores" {
			t.Errorf("delete: %d %v", r.StatusCode, r.Header)
		}
		if _, err := f.api.opts.Restores.Get(context.Background(), id); !coffer.IsKind(err, coffer.KindNotFound) {
			t.Errorf("restore after delete: %v", err)
		}
	})
}
