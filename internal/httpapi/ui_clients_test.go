package httpapi

import (
	"context"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/cofferhq/coffer/internal/protocol"
	"github.com/cofferhq/coffer/internal/server/agents"
	"github.com/cofferhq/coffer/internal/server/backups"
	"github.com/cofferhq/coffer/internal/server/plans"
)

// uiClientsFixture is the API fixture with the agents, plans and backups
// services, and a UI session for each of admin, operator, viewer and
// stranger (an operator who owns no client).
type uiClientsFixture struct {
	*agentFixture
	sess map[string]*http.Cookie
}

func newUIClientsFixture(t *testing.T, db *metadb.DB, opts agents.Options) *uiClientsFixture {
	t.Helper()
	uf := &uiClientsFixture{agentFixture: &agentFixture{}, sess: map[string]*http.Cookie{}}
	uf.fixture = newFixtureWith(t, db, func(f *fixture, o *Options) {
		opts.Store, opts.Events = db, f.hub
		uf.agents = agents.New(opts)
		o.Agents, o.PlanFirings = uf.agents, db
		o.Plans = plans.New(plans.Options{Store: db, Clients: uf.agents, Backups: &planRunner{}, Events: f.hub,
			DefaultRepositoryID: "repo-1"})
		o.Backups = backups.New(backups.Options{Store: db, Events: f.hub, Commands: uf.agents, Clients: uf.agents})
	})
	uf.stranger()
	for _, u := range []string{"admin", "operator", "viewer", "stranger"} {
		uf.sess[u] = uf.uiSignIn(u, u+"-password")
	}
	return uf
}

// get sends a GET as user's session.
func (f *uiClientsFixture) get(user, path string, headers ...string) *uiReply {
	f.t.Helper()
	return f.uiDo("GET", path, []*http.Cookie{f.sess[user]}, nil, headers...)
}

// post sends a form as user's session with the session's CSRF token.
func (f *uiClientsFixture) post(user, path string, form url.Values, headers ...string) *uiReply {
	f.t.Helper()
	form.Set(csrfField, csrfToken(f.sess[user].Value))
	return f.uiDo("POST", path, []*http.Cookie{f.sess[user]}, form, headers...)
}

// want fails the test unless the reply has status and contains (or, for
// entries starting with "!", lacks) each string.
func want(t *testing.T, what string, r *uiReply, status int, checks ...string) {
	t.Helper()
	if r.StatusCode != status {
		t.Fatalf("%s: status %d, want %d\n%s", what, r.StatusCode, status, r.Body)
	}
	for _, c := range checks {
		if lack, ok := strings.CutPrefix(c, "!"); ok {
			if strings.Contains(r.Body, lack) {
				t.Errorf("%s has %q:\n%s", what, lack, r.Body)
			}
		} else if !strings.Contains(r.Body, c) {
			t.Errorf("%s lacks %q:\n%s", what, c, r.Body)
		}
	}
}

func (f *uiClientsFixture) createPlan(name, client string, include ...string) string {
	f.t.Helper()
	return f.do("POST", "/api/v1/plans", "admin", map[string]any{"name": name, "client_id": client, "schedule": "0 30 2 * * ?",
		"include": include}).Want(201).Str("plan", "id")
}

func (f *uiClientsFixture) planIncludes(id string) []string {
	f.t.Helper()
	var out []string
	for _, p := range f.do("GET", "/api/v1/plans/"+id, "admin", nil).Want(200).JSON["plan"].(map[string]any)["include"].([]any) {
		out = append(out, p.(string))
	}
	return out
}

func TestUIClientsList(t *testing.T) {
	t.Parallel()
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		var skew atomic.Int64
		f := newUIClientsFixture(t, db, agents.Options{Now: func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }})
		web, webCredential := f.enroll("web")
		dbID, _ := f.enroll("db")
		skew.Store(int64(time.Hour))
		if err := f.agents.Maintain(context.Background()); err != nil {
			t.Fatal(err)
		}
		hb := map[string]any{"running_jobs": []string{}}
		for k, v := range testMachine {
			hb[k] = v
		}
		f.do("POST", "/api/v1/agent/heartbeat", webCredential, hb).Want(200)

		r := f.get("viewer", "/clients")
		want(t, "viewer's list", r, 200, `href="/clients/`+web+`"`, `href="/clients/`+dbID+`"`, `data-status="online"`,
			`data-status="offline"`, "web-1", "linux/amd64, agent 1.2.3", "operator", `<th scope="col">Status</th>`,
			`aria-current="page">Clients`, "!enroll-link", "!style=", "!<script>")
		if strings.Index(r.Body, ">db</a>") > strings.Index(r.Body, ">web</a>") {
			t.Error("the list is not ordered by name")
		}
		want(t, "operator's list", f.get("operator", "/clients"), 200, `id="enroll-link" href="/clients/enroll"`)

		for query, shown := range map[string][]string{
			"?status=online":          {web},
			"?status=offline":         {dbID},
			"?name=DB":                {dbID},
			"?name=we&status=online":  {web},
			"?name=we&status=offline": nil,
			"?status=bogus":           {web, dbID}, // an unknown status filters nothing
		} {
			r := f.get("viewer", "/clients"+query)
			for _, id := range []string{web, dbID} {
				if has := strings.Contains(r.Body, `data-client-id="`+id+`"`); has != slices.Contains(shown, id) {
					t.Errorf("%s: client %s shown %v", query, id, has)
				}
			}
			if len(shown) == 0 && !strings.Contains(r.Body, "No client matches the filter.") {
				t.Errorf("%s: no empty message:\n%s", query, r.Body)
			}
		}
		r = f.get("viewer", "/clients?name=we&status=online")
		want(t, "filtered list", r, 200, `name="name" value="we"`, `<option value="online" selected>`, `id="filter-clear"`)
		want(t, "a page past the end", f.get("viewer", "/clients?page=3"), 200, `rel="prev"`, "Page 3 of 1", "past the end", "!client-row")
	})
}

// shellWords splits a command line as a POSIX shell does for the forms
// the enroll command uses: words separated by spaces, single quotes.
func shellWords(t *testing.T, line string) []string {
	t.Helper()
	var words []string
	var cur strings.Builder
	inWord, quoted := false, false
	for i := 0; i < len(line); i++ {
		ch := line[i]
		switch {
		case quoted && ch == '\'':
			quoted = false
		case quoted:
			cur.WriteByte(ch)
		case ch == '\'':
			quoted, inWord = true, true
		case ch == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
			inWord = true
		case ch == ' ':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case ch == '\n' || ch == '"' || ch == '$' || ch == '`':
			t.Fatalf("command line has %q: %q", ch, line)
		default:
			cur.WriteByte(ch)
			inWord = true
		}
	}
	if quoted {
		t.Fatalf("unterminated quote in %q", line)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

var enrollCommandRE = regexp.MustCompile(`<pre id="enroll-command">([^<]*)</pre>`)

func TestUIClientEnroll(t *testing.T) {
	t.Parallel()
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newUIClientsFixture(t, db, agents.Options{})
		want(t, "enroll form", f.get("operator", "/clients/enroll"), 200, `id="enroll-name" name="name"`,
			`id="enroll-ttl" name="ttl"`, `id="enroll-create"`, `name="csrf_token"`, "!enroll-command")

		r := f.post("operator", "/clients/enroll", url.Values{"name": {"web 'one'"}, "ttl": {"900"}})
		want(t, "enroll answer", r, 200, `data-copy="#enroll-command"`, "coffer agent run", "systemctl enable --now coffer-agent",
			"expires", "in 15 min 0 s")
		if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("Cache-Control %q", cc)
		}
		m := enrollCommandRE.FindStringSubmatch(r.Body)
		if m == nil {
			t.Fatalf("no command:\n%s", r.Body)
		}
		line := html.UnescapeString(m[1])
		words := shellWords(t, line)
		if len(words) != 8 || !strings.HasPrefix(words[0], "COFFER_ENROLL_TOKEN=cfr_e_") ||
			!slices.Equal(words[1:], []string{"coffer", "agent", "enroll", "--server", f.ts.URL, "--name", "web 'one'"}) {
			t.Fatalf("command %q = %q", line, words)
		}
		token := strings.TrimPrefix(words[0], "COFFER_ENROLL_TOKEN=")

		// The token shows nowhere else, and only the command line carries it.
		if strings.Count(r.Body, token) != 1 {
			t.Errorf("the answer has the token %d times", strings.Count(r.Body, token))
		}
		body := map[string]any{"token": token}
		for k, v := range testMachine {
			body[k] = v
		}
		enrolled := f.do("POST", "/api/v1/agent/enroll", "", body).Want(201)
		if enrolled.Str("client", "name") != "web 'one'" {
			t.Errorf("enrolled as %q", enrolled.Str("client", "name"))
		}
		id := enrolled.Str("client", "id")
		for _, p := range []string{"/clients/enroll", "/clients", "/clients/" + id, "/"} {
			for _, user := range []string{"operator", "admin"} {
				if r := f.get(user, p); strings.Contains(r.Body, token) || strings.Contains(r.Body, "enroll-command") {
					t.Errorf("%s's %s shows the token:\n%s", user, p, r.Body)
				}
			}
		}

		// Without a name the command leaves --name out: the client takes its hostname.
		r = f.post("admin", "/clients/enroll", url.Values{"name": {""}, "ttl": {""}})
		want(t, "nameless enroll", r, 200, "enrolled under its hostname")
		if m := enrollCommandRE.FindStringSubmatch(r.Body); m == nil || len(shellWords(t, html.UnescapeString(m[1]))) != 6 {
			t.Errorf("nameless command: %v", m)
		}

		// Bad input stays in the form, with the error next to its field.
		r = f.post("operator", "/clients/enroll", url.Values{"name": {"bad\x01name"}, "ttl": {"3600"}})
		want(t, "bad name", r, 400, `id="enroll-name-error"`, "control characters", `aria-invalid="true"`,
			`value="bad`, `<option value="3600" selected>`, "!enroll-command")
		r = f.post("operator", "/clients/enroll", url.Values{"name": {"kept"}, "ttl": {"5"}})
		want(t, "bad ttl", r, 400, `id="enroll-ttl-error"`, "Choose one of the offered lifetimes.", `value="kept"`, "!enroll-command")

		// A viewer neither sees nor uses it; a form without its token changes nothing.
		want(t, "viewer's form", f.get("viewer", "/clients/enroll"), 403, "Not allowed", "!enroll-name")
		want(t, "viewer's enroll", f.post("viewer", "/clients/enroll", url.Values{"name": {"x"}}), 403, "!enroll-command")
		r = f.uiDo("POST", "/clients/enroll", []*http.Cookie{f.sess["operator"]}, url.Values{"name": {"x"}})
		want(t, "enroll without CSRF token", r, 403, "security token", "!enroll-command")
	})
}

func TestUIClientDetail(t *testing.T) {
	t.Parallel()
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newUIClientsFixture(t, db, agents.Options{})
		web, credential := f.enroll("web")
		plan := f.createPlan("nightly", web, "/etc", "/srv")
		b := &coffer.Backup{ClientID: web, PlanID: plan, Trigger: coffer.TriggerSchedule, Paths: []string{"/etc"}}
		if err := db.CreateBackup(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		f.shipLines(credential, map[string]any{"time": time.Now().UTC().Format(time.RFC3339Nano), "level": "warn",
			"message": "cannot read /etc/shadow", "backup_id": b.ID, "attrs": map[string]any{"err": "permission denied"}})

		page := "/clients/" + web
		common := []string{`<dl class="details" id="client-details">`, "web-1", "1.2.3", `id="client-owner-name">operator`,
			`href="/plans/` + plan + `"`, "nightly", "<code>0 30 2 * * ?</code>", `href="/backups/` + b.ID + `"`,
			`id="job-backup-` + b.ID + `"`, `sse-swap="job-backup-` + b.ID + `"`, `sse-connect="/ui/events?after=`,
			`href="/backups?client=` + web + `"`, `class="log-line"`, "cannot read /etc/shadow", "permission denied",
			`id="client-logs"`, `id="client-log-tail"`, `hx-trigger="every 3s"`, "!style=", "!<script>"}
		admin := f.get("admin", page)
		want(t, "admin's page", admin, 200, append(common, `id="client-settings"`, `id="client-owner"`, `id="delete-client"`,
			`id="browse-files"`, `id="new-plan-link" href="/plans/new?client=`+web+`"`, "Its backups and restores stay in the history")...)
		if !regexp.MustCompile(`<option value="` + f.userID("operator") + `" selected>operator \(operator\)`).MatchString(admin.Body) {
			t.Errorf("the owner is not selected:\n%s", admin.Body)
		}
		want(t, "owner's page", f.get("operator", page), 200, append(common, `id="client-settings"`, `id="browse-files"`,
			`id="new-plan-link"`, "!client-owner\"", "!delete-client")...)
		for _, user := range []string{"viewer", "stranger"} {
			want(t, user+"'s page", f.get(user, page), 200, append(common, "!client-settings", "!delete-client", "!browse-files",
				"!new-plan-link", "!add-to-plan")...)
		}
		want(t, "unknown client", f.get("viewer", "/clients/nope"), 404, "Not Found")
	})
}

func TestUIClientUpdateDelete(t *testing.T) {
	t.Parallel()
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newUIClientsFixture(t, db, agents.Options{})
		web, _ := f.enroll("web")
		page := "/clients/" + web
		name := func() string {
			c, err := f.agents.GetClient(context.Background(), web)
			if err != nil {
				t.Fatal(err)
			}
			return c.Name + " owned by " + c.OwnerID
		}
		operatorID, strangerID := f.userID("operator"), f.userID("stranger")

		r := f.post("operator", page, url.Values{"name": {"web-renamed"}})
		if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != page || r.cookie(flashCookie) == nil {
			t.Fatalf("rename: %d %v\n%s", r.StatusCode, r.Header, r.Body)
		}
		if got := name(); got != "web-renamed owned by "+operatorID {
			t.Errorf("after rename: %s", got)
		}
		// Refused: the owner by an operator, renames by others, an empty name, no CSRF token.
		want(t, "operator assigns owner", f.post("operator", page, url.Values{"name": {"web-renamed"}, "owner": {strangerID}}),
			403, "Only an admin may assign")
		want(t, "stranger renames", f.post("stranger", page, url.Values{"name": {"mine"}}), 403, "belongs to another user")
		want(t, "viewer renames", f.post("viewer", page, url.Values{"name": {"mine"}}), 403, "Not allowed")
		want(t, "empty name", f.post("operator", page, url.Values{"name": {" "}}), 400, `id="client-name-error"`,
			"cannot be empty", `aria-invalid="true"`, `id="client-name" name="name" value=" "`)
		r = f.uiDo("POST", page, []*http.Cookie{f.sess["operator"]}, url.Values{"name": {"csrf"}})
		want(t, "rename without CSRF token", r, 403, "security token")
		if got := name(); got != "web-renamed owned by "+operatorID {
			t.Errorf("after refusals: %s", got)
		}

		// The admin assigns the owner; an owner that is no user shows at the field.
		if r := f.post("admin", page, url.Values{"name": {"web-renamed"}, "owner": {strangerID}}); r.StatusCode != http.StatusSeeOther {
			t.Fatalf("assign owner: %d\n%s", r.StatusCode, r.Body)
		}
		if got := name(); got != "web-renamed owned by "+strangerID {
			t.Errorf("after assigning: %s", got)
		}
		want(t, "unknown owner", f.post("admin", page, url.Values{"name": {"web-renamed"}, "owner": {"nobody"}}), 400,
			`id="client-owner-error"`, "That user does not exist")

		// Deleting is for admins; the backups stay.
		b := &coffer.Backup{ClientID: web, Trigger: coffer.TriggerManual, Paths: []string{"/etc"}}
		if err := db.CreateBackup(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		want(t, "operator deletes", f.post("stranger", page+"/delete", url.Values{}), 403, "Not allowed")
		want(t, "delete without CSRF token", f.uiDo("POST", page+"/delete", []*http.Cookie{f.sess["admin"]}, url.Values{}), 403)
		r = f.post("admin", page+"/delete", url.Values{})
		if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/clients" {
			t.Fatalf("delete: %d %v", r.StatusCode, r.Header)
		}
		if _, err := f.agents.GetClient(context.Background(), web); !coffer.IsKind(err, coffer.KindNotFound) {
			t.Errorf("client after delete: %v", err)
		}
		if _, err := db.GetBackup(context.Background(), b.ID); err != nil {
			t.Errorf("backup after delete: %v", err)
		}
		flash := f.uiDo("GET", "/clients", []*http.Cookie{f.sess["admin"], r.cookie(flashCookie)}, nil)
		want(t, "list after delete", flash, 200, "Its backups stay in the history", "No client is enrolled yet.")
	})
}

var pollerRE = regexp.MustCompile(`id="client-log-tail" hx-get="([^"]+)"`)

// poller returns the live tail's URL in a page or tail answer.
func poller(t *testing.T, body string) string {
	t.Helper()
	m := pollerRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no live tail poller:\n%s", body)
	}
	return html.UnescapeString(m[1])
}

func logLinesOf(body string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`<li class="log-line"[^>]*>.*?<span class="message">([^<]*)`).FindAllStringSubmatch(body, -1) {
		out = append(out, html.UnescapeString(m[1]))
	}
	return out
}

func TestUIClientLogTail(t *testing.T) {
	t.Parallel()
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newUIClientsFixture(t, db, agents.Options{})
		web, credential := f.enroll("web")
		t0 := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
		line := func(s int, level, msg string) map[string]any {
			return map[string]any{"time": t0.Add(time.Duration(s) * time.Second).Format(time.RFC3339Nano), "level": level, "message": msg}
		}
		f.shipLines(credential, line(0, "info", "one"), line(1, "debug", "two"), line(2, "warn", "three"))

		page := f.get("viewer", "/clients/"+web)
		if got := logLinesOf(page.Body); !slices.Equal(got, []string{"one", "two", "three"}) {
			t.Fatalf("page lines %q", got)
		}
		tail := poller(t, page.Body)
		htmx := []string{"HX-Request", "true"}
		if r := f.get("viewer", tail, htmx...); r.StatusCode != http.StatusNoContent {
			t.Fatalf("tail without news: %d\n%s", r.StatusCode, r.Body)
		}
		f.shipLines(credential, line(3, "info", "four"), line(4, "error", "five"))
		r := f.get("viewer", tail, htmx...)
		want(t, "tail", r, 200, `hx-swap-oob="true"`, `hx-trigger="every 3s"`, "!<html")
		if got := logLinesOf(r.Body); !slices.Equal(got, []string{"four", "five"}) {
			t.Errorf("tail lines %q", got)
		}
		next := poller(t, r.Body)
		if next == tail {
			t.Error("the tail's cursor did not move")
		}
		if r := f.get("viewer", next, htmx...); r.StatusCode != http.StatusNoContent {
			t.Errorf("tail after catching up: %d\n%s", r.StatusCode, r.Body)
		}

		// The level filter holds for the page and the tail.
		page = f.get("viewer", "/clients/"+web+"?log_level=warn")
		if got := logLinesOf(page.Body); !slices.Equal(got, []string{"three", "five"}) {
			t.Errorf("warn page lines %q", got)
		}
		tail = poller(t, page.Body)
		f.shipLines(credential, line(5, "info", "six"), line(6, "warn", "seven"))
		if got := logLinesOf(f.get("viewer", tail, htmx...).Body); !slices.Equal(got, []string{"seven"}) {
			t.Errorf("warn tail lines %q", got)
		}

		// A tail that cannot go on stops polling (286) and says why.
		want(t, "bad cursor", f.get("viewer", "/ui/clients/"+web+"/logs?after=garbage", htmx...), statusStopPolling,
			`class="log-notice"`, "Reload the page")
		want(t, "unknown client", f.get("viewer", "/ui/clients/nope/logs", htmx...), statusStopPolling, "client")

		// Older pages page back, without a live tail.
		var many []map[string]any
		for i := range clientLogPage + 5 {
			many = append(many, line(10+i, "info", fmt.Sprintf("line %03d", i)))
		}
		f.shipLines(credential, many...)
		page = f.get("viewer", "/clients/"+web)
		got := logLinesOf(page.Body)
		if len(got) != clientLogPage || got[len(got)-1] != fmt.Sprintf("line %03d", clientLogPage+4) {
			t.Fatalf("newest page: %d lines, last %q", len(got), got[len(got)-1])
		}
		m := regexp.MustCompile(`<a href="([^"]+)" id="log-older"`).FindStringSubmatch(page.Body)
		if m == nil {
			t.Fatalf("no link to older lines:\n%s", page.Body)
		}
		older := f.get("viewer", html.UnescapeString(m[1]))
		want(t, "older page", older, 200, `id="log-newest"`, "!client-log-tail")
		if got := logLinesOf(older.Body); len(got) != 12 || got[0] != "one" || got[11] != "line 004" {
			t.Errorf("older page lines %q", got)
		}
	})
}

// listDirAnswer is what the test agent answers to a listing of /etc.
var listDirAnswer = map[string]any{"path": "/etc", "entries": []map[string]any{
	{"name": "hosts", "type": "file", "size": 2048, "mtime": "2024-05-01T12:00:00Z"},
	{"name": "ssl", "type": "dir", "size": 0, "mtime": "2024-05-01T12:00:00Z"},
	{"name": "a b&c", "type": "dir", "size": 0, "mtime": "2024-05-01T12:00:00Z"},
	{"name": "../escape", "type": "file", "size": 1, "mtime": "2024-05-01T12:00:00Z"},
}}

// browse asks for a listing as user and answers it as the agent on st.
func (f *uiClientsFixture) browse(t *testing.T, st *rawStream, credential, user, path string) *uiReply {
	t.Helper()
	got := make(chan *uiReply, 1)
	go func() { got <- f.get(user, path, "HX-Request", "true") }()
	cmd := nextCommand(t, st)
	if cmd.Kind != protocol.CommandListDir || cmd.ListDir.Path != "/etc" {
		t.Fatalf("command = %+v", cmd)
	}
	f.do("POST", "/api/v1/agent/fs/"+cmd.ID, credential, listDirAnswer).Want(200)
	return <-got
}

func TestUIClientFiles(t *testing.T) {
	t.Parallel()
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newUIClientsFixture(t, db, agents.Options{})
		web, credential := f.enroll("web")
		plan := f.createPlan("nightly", web, "/srv")
		st := openAgentStream(t, f.ts.URL, credential)
		base := "/ui/clients/" + web + "/files?path=%2Fetc%2F"

		r := f.browse(t, st, credential, "operator", base)
		want(t, "listing", r, 200, `<div class="fs-browser" data-path="/etc">`,
			`<li data-path="/etc/ssl" data-type="dir">`, `class="linklike open-dir" hx-get="/ui/clients/`+web+`/files?path=%2Fetc%2Fssl"`,
			`<li data-path="/etc/a b&amp;c" data-type="dir">`, `path=%2Fetc%2Fa&#43;b%26c`,
			`<li data-path="/etc/hosts" data-type="file">`, "2.0 KiB", `hx-target="closest .fs-browser"`,
			`hx-get="/ui/clients/`+web+`/files?path=%2F"`, // the breadcrumb up
			`action="/clients/`+web+`/files/include"`, `<option value="`+plan+`">nightly</option>`, `class="small add-to-plan"`,
			`name="path" value="/etc/hosts"`, "!escape", "!pick-path", "!<html")
		if strings.Index(r.Body, `data-path="/etc/hosts"`) < strings.Index(r.Body, `data-path="/etc/ssl"`) {
			t.Error("directories do not come first")
		}

		r = f.browse(t, st, credential, "admin", base+"&pick=1")
		want(t, "pick listing", r, 200, `<button type="button" class="small pick-path" data-path="/etc/hosts" hx-get="/ui/plans/include-row?path=%2Fetc%2Fhosts" hx-target="#include-list" hx-swap="beforeend"`,
			`data-path="/etc/a b&amp;c" hx-get="/ui/plans/include-row?path=%2Fetc%2Fa&#43;b%26c"`,
			`hx-get="/ui/clients/`+web+`/files?path=%2Fetc%2Fssl&amp;pick=1"`, "!add-to-plan", "!<form")

		// Those who may not operate the client are refused before the agent is asked.
		want(t, "viewer", f.get("viewer", base, "HX-Request", "true"), 403, "operate permission")
		want(t, "stranger", f.get("stranger", base, "HX-Request", "true"), 403, "belongs to another user", `id="file-browser-error"`)
		want(t, "relative path", f.get("operator", "/ui/clients/"+web+"/files?path=etc", "HX-Request", "true"), 400,
			"give an absolute path", "Try again")
	})
}

func TestUIClientFilesOffline(t *testing.T) {
	t.Parallel()
	var skew atomic.Int64
	f := newUIClientsFixture(t, metadbtest.Open(t, metadb.SQLite), agents.Options{ListDirTimeout: 50 * time.Millisecond,
		Now: func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }})
	web, _ := f.enroll("silent")
	path := "/ui/clients/" + web + "/files?path=%2Fvar"
	want(t, "no answer", f.get("operator", path, "HX-Request", "true"), http.StatusGatewayTimeout,
		`id="file-browser-error"`, "did not answer", "Try again", `hx-get="`+html.EscapeString(path)+`"`)

	skew.Store(int64(time.Hour))
	if err := f.agents.Maintain(context.Background()); err != nil {
		t.Fatal(err)
	}
	want(t, "offline", f.get("operator", path, "HX-Request", "true"), http.StatusConflict,
		`id="file-browser-error"`, "is offline", "coffer agent run", "Try again", `data-path="/var"`)
	want(t, "the page says offline", f.get("operator", "/clients/"+web), 200, `data-status="offline"`, `id="browse-files"`)
}

func TestUIClientAddInclude(t *testing.T) {
	t.Parallel()
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newUIClientsFixture(t, db, agents.Options{})
		web, _ := f.enroll("web")
		other, _ := f.enroll("other")
		plan := f.createPlan("nightly", web, "/etc")
		otherPlan := f.createPlan("theirs", other, "/etc")
		target := "/clients/" + web + "/files/include"
		htmx := []string{"HX-Request", "true"}

		r := f.post("operator", target, url.Values{"plan": {plan}, "path": {"/srv/www"}}, htmx...)
		want(t, "add", r, 200, `class="flash" role="status"`, "Added /srv/www to plan &#34;nightly&#34;.", "!<html")
		r = f.post("operator", target, url.Values{"plan": {plan}, "path": {"/srv/www"}}, htmx...)
		want(t, "add again", r, 200, "/srv/www is already in plan")
		r = f.post("operator", target, url.Values{"plan": {plan}, "path": {"/etc/ssl"}}, htmx...)
		want(t, "add inside an included folder", r, 200, "as part of /etc.")
		if got := f.planIncludes(plan); !slices.Equal(got, []string{"/etc", "/srv/www"}) {
			t.Fatalf("include = %q", got)
		}
		// Without htmx the form lands back on the client's page with a flash.
		r = f.post("admin", target, url.Values{"plan": {plan}, "path": {"/home"}})
		if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/clients/"+web || r.cookie(flashCookie) == nil {
			t.Errorf("form add: %d %v", r.StatusCode, r.Header)
		}

		for name, tc := range map[string]struct {
			user   string
			form   url.Values
			status int
			say    string
		}{
			"viewer":        {"viewer", url.Values{"plan": {plan}, "path": {"/x"}}, 403, "operate permission"},
			"stranger":      {"stranger", url.Values{"plan": {plan}, "path": {"/x"}}, 403, "belongs to another user"},
			"another's":     {"admin", url.Values{"plan": {otherPlan}, "path": {"/x"}}, 400, "backs up another client"},
			"relative path": {"operator", url.Values{"plan": {plan}, "path": {"x"}}, 400, "is not absolute"},
			"no plan":       {"operator", url.Values{"path": {"/x"}}, 400, "Choose the plan"},
			"unknown plan":  {"operator", url.Values{"plan": {"nope"}, "path": {"/x"}}, 404, "plan"},
		} {
			want(t, name, f.post(tc.user, target, tc.form, htmx...), tc.status, tc.say, `role="alert"`, "!<html")
		}
		r = f.uiDo("POST", target, []*http.Cookie{f.sess["operator"]}, url.Values{"plan": {plan}, "path": {"/x"}})
		want(t, "without CSRF token", r, 403, "security token")
		if got := f.planIncludes(plan); !slices.Equal(got, []string{"/etc", "/srv/www", "/home"}) {
			t.Errorf("include after refusals = %q", got)
		}
		if got := f.planIncludes(otherPlan); !slices.Equal(got, []string{"/etc"}) {
			t.Errorf("other plan's include = %q", got)
		}
	})
}
