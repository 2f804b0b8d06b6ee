package httpapi

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"html"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/cofferhq/coffer/internal/protocol"
	"github.com/cofferhq/coffer/internal/server/plans"
)

// uiBackupsFixture is the browse fixture with the plans service, UI
// sessions of every role, and a plan of the operator's client.
type uiBackupsFixture struct {
	*browseFixture
	sessions map[string]*http.Cookie // role → session cookie
	planID   string
}

func newUIBackupsFixture(t *testing.T, db *metadb.DB) *uiBackupsFixture {
	t.Helper()
	bf := newBrowseFixture(t, db, func(bf *backupFixture, f *fixture, o *Options) {
		o.Plans = plans.New(plans.Options{Store: db, Clients: bf.agents, Backups: bf.backups, Events: f.hub,
			DefaultRepositoryID: bf.repo.Config().ID})
	})
	f := &uiBackupsFixture{browseFixture: bf, sessions: map[string]*http.Cookie{}}
	for _, role := range []string{"admin", "operator", "operator2", "viewer"} {
		f.sessions[role] = f.uiSignIn(role, role+"-password")
	}
	f.planID = f.do("POST", "/api/v1/plans", "operator", map[string]any{"name": "nightly & more", "client_id": f.clientID,
		"include": []string{"/srv"}}).Want(201).Str("plan", "id")
	return f
}

// get fetches a UI page as role.
func (f *uiBackupsFixture) page(role, path string) *uiReply {
	f.t.Helper()
	return f.uiDo("GET", path, []*http.Cookie{f.sessions[role]}, nil)
}

// post submits a UI form as role, with the session's CSRF token unless
// token is false.
func (f *uiBackupsFixture) post(role, path string, token bool) *uiReply {
	f.t.Helper()
	form := url.Values{}
	if token {
		m := hiddenToken.FindStringSubmatch(f.page(role, "/backups").Body)
		if m == nil {
			f.t.Fatalf("no CSRF token on /backups for %s", role)
		}
		form.Set(csrfField, m[1])
	}
	return f.uiDo("POST", path, []*http.Cookie{f.sessions[role]}, form)
}

// runPlan queues a backup of the plan, starts it as its agent would and
// commits dir with errs, which makes it partial.
func (f *uiBackupsFixture) runPlan(dir string, errs []coffer.PathError) string {
	f.t.Helper()
	id := f.do("POST", "/api/v1/plans/"+f.planID+"/run", "operator", nil).Want(201).Str("backup", "id")
	if _, err := f.backups.StartBackup(context.Background(), f.clientID, protocol.StartBackupRequest{BackupID: id}); err != nil {
		f.t.Fatal(err)
	}
	f.commitStarted(id, dir, protocol.CommitRequest{Errors: errs, Stats: coffer.BackupStats{Files: 1, ErrorCount: uint64(len(errs))}})
	return id
}

// queueAdHoc queues an ad-hoc backup of the operator's client.
func (f *uiBackupsFixture) queueAdHoc() string {
	f.t.Helper()
	return f.do("POST", "/api/v1/clients/"+f.clientID+"/backups", "operator", map[string]any{"paths": []string{"/etc"}}).
		Want(201).Str("backup", "id")
}

var (
	backupRowID = regexp.MustCompile(`<tr data-backup-id="([^"]+)"`)
	entryPath   = regexp.MustCompile(`<li data-path="([^"]*)"`)
)

// link returns the unescaped href of the first <a> with class or id sel
// ("class=download", "id=browse") in body, "" without one.
func link(body, sel string) string {
	links := linksOf(body, sel)
	if len(links) == 0 {
		return ""
	}
	return links[0]
}

func linksOf(body, sel string) []string {
	attr, val, _ := strings.Cut(sel, "=")
	want := regexp.MustCompile(`\s` + attr + `="` + regexp.QuoteMeta(val) + `"`)
	var out []string
	for _, m := range anchor.FindAllStringSubmatch(body, -1) {
		if h := href.FindStringSubmatch(m[1]); h != nil && want.MatchString(m[1]) {
			out = append(out, html.UnescapeString(h[1]))
		}
	}
	return out
}

var (
	anchor = regexp.MustCompile(`<a( [^>]*)>`)
	href   = regexp.MustCompile(`\shref="([^"]*)"`)
)

// entry returns the <li> of the browser entry at path p.
func entry(t *testing.T, body, p string) string {
	t.Helper()
	for _, m := range entryPath.FindAllStringSubmatchIndex(body, -1) {
		if html.UnescapeString(body[m[2]:m[3]]) == p {
			end := strings.Index(body[m[0]:], "</li>")
			return body[m[0] : m[0]+end]
		}
	}
	t.Fatalf("no entry %q in\n%s", p, body)
	return ""
}

func rowIDs(body string) []string {
	var ids []string
	for _, m := range backupRowID.FindAllStringSubmatch(body, -1) {
		ids = append(ids, m[1])
	}
	return ids
}

func TestUIBackupsList(t *testing.T) {
	t.Parallel()
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newUIBackupsFixture(t, db)
		dir := t.TempDir()
		put(t, dir, "a.txt", []byte("a"))
		planned := f.runPlan(dir, nil)
		adhoc := f.commitDir(dir)
		queued := f.queueAdHoc()

		r := f.page("viewer", "/backups")
		if r.StatusCode != 200 || !strings.Contains(r.Body, `id="backups-table"`) || !strings.Contains(r.Body, `sse-connect="/ui/events?after=`) {
			t.Fatalf("/backups: %d\n%s", r.StatusCode, r.Body)
		}
		if ids := rowIDs(r.Body); !slices.Equal(ids, []string{queued, adhoc, planned}) {
			t.Fatalf("rows = %v, want %v", ids, []string{queued, adhoc, planned})
		}
		for _, want := range []string{`href="/backups/` + planned + `"`, `href="/clients/` + f.clientID + `">web</a>`,
			`href="/plans/` + f.planID + `">nightly &amp; more</a>`, `<span class="muted">ad hoc</span>`,
			`id="job-backup-` + queued + `" sse-swap="job-backup-` + queued + `"`, `data-state="queued"`,
			`<option value="` + f.planID + `">nightly &amp; more</option>`, `<label for="filter-since">`} {
			if !strings.Contains(r.Body, want) {
				t.Errorf("/backups lacks %q", want)
			}
		}

		day := func(d int) string { return time.Now().UTC().AddDate(0, 0, d).Format(dateLayout) }
		for query, want := range map[string][]string{
			"state=queued":                          {queued},
			"state=succeeded":                       {adhoc, planned},
			"plan=" + f.planID:                      {planned},
			"client=" + f.clientID:                  {queued, adhoc, planned},
			"client=nope":                           nil,
			"since=" + day(1):                       nil,
			"since=" + day(-1) + "&until=" + day(0): {queued, adhoc, planned},
			"until=" + day(-1):                      nil,
			"trigger=schedule":                      nil, // none was fired by a schedule
		} {
			r := f.page("viewer", "/backups?"+query)
			if r.StatusCode != 200 || !slices.Equal(rowIDs(r.Body), want) {
				t.Errorf("%s: %d rows %v, want %v", query, r.StatusCode, rowIDs(r.Body), want)
			}
			if want == nil && !strings.Contains(r.Body, "No backups match.") {
				t.Errorf("%s: no empty row", query)
			}
		}
		// The form shows the filter it applied.
		r = f.page("viewer", "/backups?plan="+f.planID+"&state=succeeded")
		if !strings.Contains(r.Body, `<option value="`+f.planID+`" selected>`) || !strings.Contains(r.Body, `<option value="succeeded" selected>`) {
			t.Errorf("filter not shown as selected:\n%s", r.Body)
		}

		// Bad input: the field says what is wrong and keeps what was typed.
		r = f.page("viewer", "/backups?since=2024-13-01&until=yesterday&state=lost&trigger=lost")
		for _, want := range []string{`value="2024-13-01" aria-invalid="true" aria-describedby="filter-since-error"`,
			`id="filter-since-error">Enter a date as YYYY-MM-DD`, `value="yesterday" aria-invalid="true"`,
			`id="filter-state" name="state" aria-invalid="true" aria-describedby="filter-state-error"`,
			`id="filter-trigger" name="trigger" aria-invalid="true"`, `role="alert"`} {
			if !strings.Contains(r.Body, want) {
				t.Errorf("bad filter page lacks %q", want)
			}
		}
		if r.StatusCode != http.StatusBadRequest || strings.Contains(r.Body, `id="backups-table"`) {
			t.Errorf("bad filter: %d", r.StatusCode)
		}
		r = f.page("viewer", "/backups?since="+day(0)+"&until="+day(-1))
		if r.StatusCode != http.StatusBadRequest || !strings.Contains(r.Body, "on or after the From date") {
			t.Errorf("until before since: %d", r.StatusCode)
		}
		for _, q := range []string{"page_size=0", "page_size=x", "cursor=garbage"} {
			if r := f.page("viewer", "/backups?"+q); r.StatusCode != http.StatusBadRequest || !strings.Contains(r.Body, `role="alert"`) {
				t.Errorf("%s: %d\n%s", q, r.StatusCode, r.Body)
			}
		}

		// Pages: Older continues where the page ended, Newest goes back.
		r = f.page("viewer", "/backups?page_size=2&client="+f.clientID)
		first := rowIDs(r.Body)
		older := link(r.Body, `rel=next`)
		if len(first) != 2 || older == "" || link(r.Body, "rel=first") != "" {
			t.Fatalf("page 1: %v, older %q", first, older)
		}
		r = f.page("viewer", older)
		second := rowIDs(r.Body)
		if len(second) != 1 || slices.Contains(first, second[0]) || !slices.Equal(append(first, second...), []string{queued, adhoc, planned}) ||
			link(r.Body, "rel=next") != "" || link(r.Body, "rel=first") != "/backups?client="+f.clientID+"&page_size=2" {
			t.Fatalf("page 2: %v after %v; links %q %q", second, first, link(r.Body, "rel=next"), link(r.Body, "rel=first"))
		}
	})
}

func TestUIBackupDetail(t *testing.T) {
	t.Parallel()
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newUIBackupsFixture(t, db)
		dir := t.TempDir()
		put(t, dir, "a.txt", []byte("a"))
		errs := []coffer.PathError{{Path: "/srv/locked <db>", Message: "permission denied"}}
		planned := f.runPlan(dir, errs)
		queued := f.queueAdHoc()

		r := f.page("operator", "/backups/"+planned)
		b, err := f.backups.Get(context.Background(), planned)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{planned, b.SnapshotID, b.RootTree, f.repo.Config().ID, "nightly &amp; more",
			`href="/clients/` + f.clientID + `">web</a>`, "<code>/srv</code>", "0 (full)", "zstd", "yes (AES-256-GCM)",
			"web.example", `data-state="partial"`, `id="backup-progress"`, `id="job-backup-` + planned + `"`,
			"<code>/srv/locked &lt;db&gt;</code>", "permission denied", `id="backup-stats"`, "by operator",
			`id="browse" href="/backups/` + planned + `/browse?path=%2F"`, `sse-connect="/ui/events?after=`} {
			if !strings.Contains(r.Body, want) {
				t.Errorf("detail lacks %q", want)
			}
		}
		if got := link(r.Body, "id=restore"); got != "/restores/new?backup="+planned {
			t.Errorf("restore link %q", got)
		}
		for _, id := range []string{`id="cancel"`, `id="forget"`, `id="reload-details"`, `data-reload-when-done`} {
			if strings.Contains(r.Body, id) {
				t.Errorf("the operator's page of a finished backup has %s", id)
			}
		}
		if r := f.page("admin", "/backups/"+planned); !strings.Contains(r.Body, `id="forget"`) || !strings.Contains(r.Body, "cannot be undone") {
			t.Error("the admin's page has no forget button with its warning")
		}
		// A queued backup: no browse; cancel for who may operate its client.
		r = f.page("operator", "/backups/"+queued)
		if !strings.Contains(r.Body, `id="cancel"`) || !strings.Contains(r.Body, `id="reload-details"`) ||
			!strings.Contains(r.Body, `data-reload-when-done`) || strings.Contains(r.Body, `id="browse"`) ||
			strings.Contains(r.Body, `id="forget"`) {
			t.Errorf("queued backup page:\n%s", r.Body)
		}
		for _, role := range []string{"viewer", "operator2"} {
			for _, page := range []string{queued, planned} {
				body := f.page(role, "/backups/"+page).Body
				for _, id := range []string{`id="cancel"`, `id="forget"`, `id="restore"`} {
					if strings.Contains(body, id) {
						t.Errorf("%s sees %s on %s", role, id, page)
					}
				}
			}
		}
		if r := f.page("viewer", "/backups/nope"); r.StatusCode != http.StatusNotFound {
			t.Errorf("unknown backup: %d", r.StatusCode)
		}

		// Refusals leave the backup queued.
		for _, c := range []struct {
			role, path string
			token      bool
			status     int
			says       string
		}{
			{"viewer", "/cancel", true, 403, "operate permission"},
			{"operator2", "/cancel", true, 403, "own"},
			{"operator", "/cancel", false, 403, "security token"},
			{"operator", "/forget", true, 403, "manage permission"},
			{"admin", "/forget", false, 403, "security token"},
			{"admin", "/forget", true, 409, "cancel it first"},
		} {
			r := f.post(c.role, "/backups/"+queued+c.path, c.token)
			if r.StatusCode != c.status || !strings.Contains(r.Body, c.says) {
				t.Errorf("%s POST %s (token %v): %d, want %d saying %q\n%s", c.role, c.path, c.token, r.StatusCode, c.status, c.says, r.Body)
			}
		}
		if b, _ := f.backups.Get(context.Background(), queued); b.State != coffer.JobQueued {
			t.Fatalf("after refusals the backup is %s", b.State)
		}

		// The owner cancels; the page says so once.
		r = f.post("operator", "/backups/"+queued+"/cancel", true)
		if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/backups/"+queued {
			t.Fatalf("cancel: %d %v", r.StatusCode, r.Header)
		}
		page := f.uiDo("GET", "/backups/"+queued, []*http.Cookie{f.sessions["operator"], r.cookie(flashCookie)}, nil)
		if !strings.Contains(page.Body, `id="flash">Backup canceled.`) || !strings.Contains(page.Body, `data-state="canceled"`) ||
			strings.Contains(page.Body, `id="cancel"`) {
			t.Errorf("after cancel:\n%s", page.Body)
		}

		// An admin forgets the finished backup.
		r = f.post("admin", "/backups/"+planned+"/forget", true)
		if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/backups" {
			t.Fatalf("forget: %d %v\n%s", r.StatusCode, r.Header, r.Body)
		}
		if r := f.page("admin", "/backups/"+planned); r.StatusCode != http.StatusNotFound {
			t.Errorf("forgotten backup: %d", r.StatusCode)
		}
	})
}

func TestUIBackupBrowse(t *testing.T) {
	t.Parallel()
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newUIBackupsFixture(t, db)
		dir := t.TempDir()
		const odd = "we ird?#&ü" // a directory
		oddFile := "fi le #1?&=+%20ü.txt"
		content := []byte("the content of an oddly named file\n")
		put(t, dir, "a.txt", []byte("a"))
		put(t, dir, "zdir/b.txt", []byte("b"))
		put(t, dir, odd+"/"+oddFile, content)
		if err := os.Symlink("a.txt", filepath.Join(dir, "link")); err != nil {
			t.Fatal(err)
		}
		id := f.commitDir(dir)

		r := f.page("operator", "/backups/"+id+"/browse")
		if r.StatusCode != 200 {
			t.Fatalf("browse: %d\n%s", r.StatusCode, r.Body)
		}
		var paths []string
		for _, m := range entryPath.FindAllStringSubmatch(r.Body, -1) {
			paths = append(paths, html.UnescapeString(m[1]))
		}
		if want := []string{"/" + odd, "/zdir", "/a.txt", "/link"}; !slices.Equal(paths, want) {
			t.Fatalf("entries = %q, want %q", paths, want)
		}
		if li := entry(t, r.Body, "/link"); !strings.Contains(li, `<code class="link-target">a.txt</code>`) || strings.Contains(li, `class="download"`) {
			t.Errorf("symlink entry: %s", li)
		}
		if li := entry(t, r.Body, "/a.txt"); !strings.Contains(li, "-rw-r--r--") || !strings.Contains(li, "1 B") {
			t.Errorf("file entry: %s", li)
		}
		if !strings.Contains(r.Body, "drwxr-xr-x") || link(r.Body, "id=download-dir-tar") != "/api/v1/backups/"+id+"/archive?format=tar&path=%2F" {
			t.Errorf("root page: %s", r.Body)
		}

		// No page of the area has inline styles or scripts (the CSP forbids them).
		for _, page := range []string{"/backups", "/backups/" + id, "/backups/" + id + "/browse", "/backups/" + id + "/versions?path=a.txt"} {
			r := f.page("admin", page)
			if r.StatusCode != 200 || r.Header.Get("Content-Security-Policy") != uiCSP || strings.Contains(r.Body, "style=") ||
				regexp.MustCompile(`<script>|<script [^>]*>[^<]| on[a-z]+=`).MatchString(r.Body) {
				t.Errorf("%s: %d, inline styles or scripts", page, r.StatusCode)
			}
		}

		// Into the odd directory, by its link.
		open := link(entry(t, r.Body, "/"+odd), "class=open-dir")
		if u, err := url.Parse(open); err != nil || u.Path != "/backups/"+id+"/browse" || u.Query().Get("path") != "/"+odd {
			t.Fatalf("open-dir link %q: %v", open, err)
		}
		r = f.page("operator", open)
		p := "/" + odd + "/" + oddFile
		li := entry(t, r.Body, p)
		if !strings.Contains(r.Body, `<span aria-current="location">`+html.EscapeString(odd)+`</span>`) {
			t.Errorf("breadcrumbs lack the directory:\n%s", r.Body)
		}
		// Every link carries the path exactly.
		for class, want := range map[string]string{
			"download":     "/api/v1/backups/" + id + "/file",
			"versions":     "/backups/" + id + "/versions",
			"restore-here": "/restores/new",
		} {
			u, err := url.Parse(link(li, "class="+class))
			if err != nil || u.Path != want || u.Fragment != "" || u.Query().Get("path") != p {
				t.Errorf("%s link of %q = %v (%v)", class, p, u, err)
			}
		}
		if !strings.Contains(li, `class="download" href=`) || !regexp.MustCompile(`class="download" href="[^"]*" download`).MatchString(li) {
			t.Errorf("download link lacks the download attribute: %s", li)
		}
		// The download link works with the session cookie alone.
		dl := f.page("operator", link(li, "class=download"))
		if dl.StatusCode != 200 || dl.Body != string(content) {
			t.Fatalf("download %s: %d %q", link(li, "class=download"), dl.StatusCode, dl.Body)
		}
		// So does the directory's tar.
		root := f.page("operator", "/backups/"+id+"/browse")
		tarURL := link(entry(t, root.Body, "/"+odd), "class=download-tar")
		resp := f.page("operator", tarURL)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-tar" {
			t.Fatalf("tar %s: %d", tarURL, resp.StatusCode)
		}
		if got := tarFile(t, []byte(resp.Body), odd+"/"+oddFile); !bytes.Equal(got, content) {
			t.Errorf("tar holds %q", got)
		}
		if zip := link(entry(t, root.Body, "/"+odd), "class=download-zip"); !strings.Contains(zip, "format=zip") {
			t.Errorf("zip link %q", zip)
		} else if r := f.page("operator", zip); r.StatusCode != 200 || r.Header.Get("Content-Type") != "application/zip" {
			t.Errorf("zip: %d", r.StatusCode)
		}
		// A file's path shows its directory.
		r = f.page("operator", "/backups/"+id+"/browse?path="+url.QueryEscape(p))
		if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != open {
			t.Errorf("file path: %d %q, want %q", r.StatusCode, r.Header.Get("Location"), open)
		}

		// Who sees what: downloads and restores need operate on the client.
		for _, role := range []string{"viewer", "operator2"} {
			body := f.page(role, "/backups/"+id+"/browse").Body
			for _, class := range []string{"download", "download-tar", "download-zip", "restore-here"} {
				if len(linksOf(body, "class="+class)) != 0 {
					t.Errorf("%s sees %s links", role, class)
				}
			}
			if len(linksOf(body, "class=versions")) != 4 || strings.Contains(body, `id="download-dir-tar"`) {
				t.Errorf("%s: versions links or a folder download", role)
			}
			if r := f.page(role, link(li, "class=download")); r.StatusCode != http.StatusForbidden {
				t.Errorf("%s downloads: %d", role, r.StatusCode)
			}
		}

		if r := f.page("viewer", "/backups/"+id+"/browse?path=/nope"); r.StatusCode != http.StatusNotFound {
			t.Errorf("missing path: %d", r.StatusCode)
		}
		if r := f.page("viewer", "/backups/"+f.queueAdHoc()+"/browse"); r.StatusCode != http.StatusConflict || !strings.Contains(r.Body, "no snapshot") {
			t.Errorf("queued backup: %d\n%s", r.StatusCode, r.Body)
		}
	})
}

// tarFile returns the content of the file named name in archive.
func tarFile(t *testing.T, archive []byte, name string) []byte {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			t.Fatalf("%s not in the tar", name)
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == name {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}

func TestUIBackupVersions(t *testing.T) {
	t.Parallel()
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newUIBackupsFixture(t, db)
		dir := t.TempDir()
		const name = "docs/r&d #1?.txt"
		put(t, dir, name, []byte("one"))
		first := f.commitDir(dir)
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
		second := f.commitDir(dir)
		put(t, dir, name, []byte("two!"))
		third := f.commitDir(dir)

		browse := f.page("operator", "/backups/"+first+"/browse?path=docs")
		versions := link(entry(t, browse.Body, "/"+name), "class=versions")
		r := f.page("operator", versions)
		if r.StatusCode != 200 || !slices.Equal(rowIDs(r.Body), []string{third, second, first}) {
			t.Fatalf("versions %s: %d %v\n%s", versions, r.StatusCode, rowIDs(r.Body), r.Body)
		}
		if !strings.Contains(r.Body, `data-backup-id="`+second+`" data-present="false"`) || !strings.Contains(r.Body, "absent") ||
			!strings.Contains(r.Body, "4 B") || !strings.Contains(r.Body, "3 B") {
			t.Errorf("versions page:\n%s", r.Body)
		}
		downloads := linksOf(r.Body, "class=download")
		if len(downloads) != 2 {
			t.Fatalf("downloads = %q", downloads)
		}
		for i, want := range []string{"two!", "one"} {
			if got := f.page("operator", downloads[i]); got.Body != want {
				t.Errorf("version %d: %q, want %q", i, got.Body, want)
			}
		}
		if got := linksOf(r.Body, "class=browse"); len(got) != 3 || got[0] != "/backups/"+third+"/browse?path=%2Fdocs" {
			t.Errorf("browse links = %q", got)
		}
		if body := f.page("viewer", versions).Body; len(rowIDs(body)) != 3 || len(linksOf(body, "class=download")) != 0 {
			t.Errorf("viewer's versions page: %v downloads %q", rowIDs(body), linksOf(body, "class=download"))
		}

		// Pages.
		r = f.page("viewer", versions+"&page_size=2")
		older := link(r.Body, "rel=next")
		if !slices.Equal(rowIDs(r.Body), []string{third, second}) || older == "" {
			t.Fatalf("page 1: %v, older %q", rowIDs(r.Body), older)
		}
		if r := f.page("viewer", older); !slices.Equal(rowIDs(r.Body), []string{first}) || link(r.Body, "rel=next") != "" {
			t.Errorf("page 2: %v", rowIDs(r.Body))
		}
		for path, status := range map[string]int{
			"/backups/" + first + "/versions":                    400,
			"/backups/" + first + "/versions?path=x&cursor=junk": 400,
			"/backups/nope/versions?path=x":                      404,
		} {
			if r := f.page("viewer", path); r.StatusCode != status {
				t.Errorf("%s: %d, want %d", path, r.StatusCode, status)
			}
		}
	})
}

// TestUIBackupEventStream checks the UI event stream's job frames: after
// a backup's events, the stream carries "job-backup-<id>" frames with its
// progress, the last one its final state.
func TestUIBackupEventStream(t *testing.T) {
	t.Parallel()
	f := newUIBackupsFixture(t, metadbtest.Open(t, metadb.SQLite))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", f.ts.URL+"/ui/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.AddCookie(f.sessions["viewer"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("open /ui/events: %v %v", resp, err)
	}
	defer resp.Body.Close()

	dir := t.TempDir()
	put(t, dir, "a.txt", []byte("a"))
	id := f.commitDir(dir)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	var frame []string
	for sc.Scan() {
		if l := sc.Text(); l == "event: job-backup-"+id || len(frame) > 0 {
			frame = append(frame, l)
		}
		if len(frame) > 0 && frame[len(frame)-1] == "" {
			if data := strings.Join(frame, "\n"); strings.Contains(data, `data-state="succeeded"`) {
				if !strings.Contains(data, `data: <span class="badge badge-success" data-state="succeeded">succeeded</span>`) {
					t.Errorf("frame = %q", data)
				}
				return
			}
			frame = nil
		}
	}
	t.Fatalf("no job-backup-%s frame with the final state: %v", id, sc.Err())
}
