package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/blobstore/s3/s3test"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/cofferhq/coffer/internal/server/storage"
)

// uiBrowser is a signed-in browser: its session cookie and CSRF token,
// and the flash message cookie a form action left for the next page.
type uiBrowser struct {
	f     *fixture
	sess  *http.Cookie
	csrf  string
	flash *http.Cookie
}

// uiAs signs user in (password user-password, as the fixture makes them).
func (f *fixture) uiAs(user string) *uiBrowser {
	f.t.Helper()
	sess := f.uiSignIn(user, user+"-password")
	m := hiddenToken.FindStringSubmatch(f.uiDo("GET", "/", []*http.Cookie{sess}, nil).Body)
	if m == nil {
		f.t.Fatalf("no CSRF token for %s", user)
	}
	return &uiBrowser{f: f, sess: sess, csrf: m[1]}
}

// get loads a page.
func (u *uiBrowser) get(path string, headers ...string) *uiReply {
	u.f.t.Helper()
	cookies := []*http.Cookie{u.sess}
	if u.flash != nil {
		cookies, u.flash = append(cookies, u.flash), nil
	}
	return u.f.uiDo("GET", path, cookies, nil, headers...)
}

// post submits a form with the session's CSRF token.
func (u *uiBrowser) post(path string, form url.Values) *uiReply {
	u.f.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	form.Set(csrfField, u.csrf)
	r := u.f.uiDo("POST", path, []*http.Cookie{u.sess}, form)
	u.flash = r.cookie(flashCookie)
	return r
}

// wantRedirect checks a form action succeeded: 303 to target.
func (r *uiReply) wantRedirect(t *testing.T, target string) {
	t.Helper()
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != target {
		t.Fatalf("want 303 to %s, got %d %q\n%s", target, r.StatusCode, r.Header.Get("Location"), r.Body)
	}
}

// want checks the status and that the body holds every string of has.
func (r *uiReply) want(t *testing.T, status int, has ...string) *uiReply {
	t.Helper()
	if r.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d\n%s", r.Request.Method, r.Request.URL.Path, r.StatusCode, status, r.Body)
	}
	for _, s := range has {
		if !strings.Contains(r.Body, s) {
			t.Errorf("%s %s lacks %q\n%s", r.Request.Method, r.Request.URL.Path, s, r.Body)
		}
	}
	return r
}

// wantNot checks the body holds none of the strings.
func (r *uiReply) wantNot(t *testing.T, not ...string) *uiReply {
	t.Helper()
	for _, s := range not {
		if strings.Contains(r.Body, s) {
			t.Errorf("%s %s holds %q", r.Request.Method, r.Request.URL.Path, s)
		}
	}
	return r
}

// backUp stores a snapshot of files in the default repository and records
// it as a succeeded backup of client: what an agent's backup leaves.
func (f *storageFixture) backUp(client string, files repotest.Files) {
	f.t.Helper()
	ctx := context.Background()
	snap, root := repotest.WriteSnapshot(f.t, f.storage.Repos().Default(), files)
	b := &coffer.Backup{ClientID: client, RepositoryID: f.storage.Repos().DefaultID(), Trigger: coffer.TriggerManual,
		State: coffer.JobRunning, Paths: []string{"/"}}
	if err := f.db.CreateBackup(ctx, b); err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.db.FinishBackup(ctx, b.ID, metadb.BackupFinish{State: coffer.JobSucceeded, SnapshotID: snap,
		RootTree: root.String()}); err != nil {
		f.t.Fatal(err)
	}
}

func TestUIStoragePages(t *testing.T) {
	t.Parallel()
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newStorageFixture(t, db)
		defID := f.storage.Repos().DefaultID()
		client, _ := f.enroll("web")
		f.backUp(client, repotest.Files{"a.txt": repotest.Random(1, 300<<10), "b.txt": repotest.Random(2, 200<<10)})
		f.backUp(client, repotest.Files{"a.txt": repotest.Random(1, 300<<10)}) // all deduplicated
		admin, viewer := f.uiAs("admin"), f.uiAs("viewer")

		// A quota the stored bytes fill to more than 80 %.
		usage, err := f.storage.Usage(context.Background(), defID)
		if err != nil || usage.StoredBytes == 0 {
			t.Fatalf("usage: %v %v", usage, err)
		}
		quota := usage.StoredBytes * 10 / 9 // 90 %
		q, unit := quotaValue(quota)
		admin.post("/storage/repositories/"+defID, url.Values{"name": {"main"}, "quota": {q}, "quota_unit": {unit}}).
			wantRedirect(t, "/storage/repositories/"+defID)
		if r, _ := f.storage.GetRepository(context.Background(), defID); r.Name != "main" || r.QuotaBytes < quota-1<<20 {
			t.Fatalf("after edit: %+v", r)
		}

		// Before the first hourly sample: stored bytes (live), no logical
		// bytes or ratio, and where to find them.
		list := viewer.get("/storage").want(t, 200, `id="storage-repositories"`, `data-repository-id="`+defID+`"`,
			`<td class="num">`+humanBytes(usage.StoredBytes)+`</td>`,
			`<meter class="quota" min="0" max="100" low="80" high="95" optimum="0" value="9`, humanBytes(usage.StoredBytes)+" of ",
			`href="/storage/repositories/`+defID+`"`, ">default<", `id="storage-endpoints"`,
			`id="storage-usage-hint"`, "measured hourly", "— means not measured yet", "own page shows them as of now",
			`<td class="num" aria-describedby="storage-usage-hint">—<span class="visually-hidden"> not measured yet</span></td>`)
		list.wantNot(t, `id="new-repository"`, `id="new-endpoint"`, "/edit", humanBytes(usage.LogicalBytes), `class="as-of"`)
		if !regexp.MustCompile(`\(9\d\.\d %\)`).MatchString(list.Body) {
			t.Errorf("quota text lacks the percentage:\n%s", list.Body)
		}
		admin.get("/storage").want(t, 200, `id="new-repository"`, `id="new-endpoint"`)

		// The hourly sample brings them, saying when it was taken.
		if err := f.storage.SampleUsage(context.Background()); err != nil {
			t.Fatal(err)
		}
		latest, err := f.storage.LatestUsage(context.Background())
		sample, ok := latest[defID]
		if err != nil || !ok || sample.LogicalBytes != usage.LogicalBytes || sample.BlobBytes != usage.BlobBytes {
			t.Fatalf("latest usage = %+v, %v; want %+v", latest, err, usage.Usage)
		}
		list = viewer.get("/storage").want(t, 200, `<td class="num">`+humanBytes(usage.StoredBytes)+`</td>`,
			`<td class="num">`+humanBytes(usage.LogicalBytes)+` <span class="as-of">as of <time datetime="`+
				sample.TakenAt.UTC().Format(time.RFC3339)+`">`,
			fmt.Sprintf(`<td class="num">%.2f×</td>`, usage.DedupRatio), "measured hourly")
		list.wantNot(t, "not measured yet")

		detail := viewer.get("/storage/repositories/"+defID).want(t, 200, `id="stored-bytes">`+humanBytes(usage.StoredBytes),
			`id="dedup-ratio">`, `meter class="quota"`, `id="usage-clients"`, ">web</a>", `href="/clients/`+client+`"`,
			"Ad-hoc backups (no plan)", `id="last-verify"`, "never verified", `id="repository-jobs"`)
		detail.wantNot(t, `id="verify-button"`, `id="gc-button"`, `id="delete-repository"`, `id="edit-repository"`)
		admin.get("/storage/repositories/"+defID).want(t, 200, `id="verify-button"`, `id="gc-button"`, `id="edit-repository"`,
			"it cannot be deleted").wantNot(t, `id="delete-repository"`)
		viewer.get("/storage/repositories/nope").want(t, 404)

		// New data: the stored bytes follow at once, the logical bytes and
		// ratio stay the sample's until the next one.
		f.backUp(client, repotest.Files{"c.txt": repotest.Random(3, 100<<10)})
		now, err := f.storage.Usage(context.Background(), defID)
		if err != nil || now.StoredBytes <= usage.StoredBytes || now.LogicalBytes == usage.LogicalBytes {
			t.Fatalf("usage after another backup: %+v, %v", now, err)
		}
		viewer.get("/storage").want(t, 200, `<td class="num">`+humanBytes(now.StoredBytes)+`</td>`,
			`<td class="num">`+humanBytes(usage.LogicalBytes)+` <span class="as-of">`).
			wantNot(t, humanBytes(now.LogicalBytes))

		// Viewers and operators get no forms and cannot post.
		for _, u := range []*uiBrowser{viewer, f.uiAs("operator")} {
			u.get("/storage/repositories/new").want(t, 403, "manage permission")
			u.get("/storage/endpoints/new").want(t, 403)
			u.post("/storage/repositories/"+defID+"/verify", nil).want(t, 403)
			u.post("/storage/repositories/"+defID+"/gc", nil).want(t, 403)
			u.post("/storage/repositories/"+defID, url.Values{"name": {"hijacked"}}).want(t, 403)
			u.post("/storage/endpoints", url.Values{"display_name": {"x"}, "url": {"h:1"}}).want(t, 403)
		}
		// Without the CSRF token nothing happens either.
		r := f.uiDo("POST", "/storage/repositories/"+defID+"/gc", []*http.Cookie{admin.sess}, url.Values{})
		r.want(t, 403, "security token")
		if jobs, _ := f.storage.RunningJobs(context.Background(), defID); len(jobs) != 0 {
			t.Errorf("a GC started without the token: %v", jobs)
		}
	})
}

func TestUIStorageAsOf(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 14, 15, 30, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		t    time.Time
		want string
	}{
		{"this hour", time.Date(2026, 3, 14, 15, 2, 9, 0, time.UTC), "15:02 UTC"},
		{"yesterday in UTC, given in another zone", time.Date(2026, 3, 14, 1, 0, 0, 0, time.FixedZone("X", 3*3600)), "2026-03-13 22:00 UTC"},
		{"yesterday", time.Date(2026, 3, 13, 23, 0, 0, 0, time.UTC), "2026-03-13 23:00 UTC"},
		{"a year before", time.Date(2025, 3, 14, 15, 0, 0, 0, time.UTC), "2025-03-14 15:00 UTC"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := asOf(tc.t, now); got != tc.want {
				t.Errorf("asOf(%v) = %q, want %q", tc.t, got, tc.want)
			}
		})
	}
}

func TestUIStorageForms(t *testing.T) {
	t.Parallel()
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newStorageFixture(t, db)
		admin := f.uiAs("admin")
		admin.get("/storage/endpoints/new").want(t, 200, `id="endpoint-form"`, `name="https" value="on" checked`)

		// Bad endpoint input: the field says what is wrong, the input stays.
		r := admin.post("/storage/endpoints", url.Values{"display_name": {"Lab MinIO"}, "url": {"https://minio.lab"},
			"type": {"minio"}, "region": {"eu-1"}, "addressing": {"path"}})
		r.want(t, 400, `id="endpoint-url-error"`, `aria-describedby="endpoint-url-hint endpoint-url-error"`,
			`value="Lab MinIO"`, `value="https://minio.lab"`, `<option value="minio" selected>`, `value="eu-1"`,
			`<option value="path" selected>`)
		if strings.Count(r.Body, `aria-invalid="true"`) != 1 {
			t.Errorf("want one invalid field:\n%s", r.Body)
		}
		admin.post("/storage/endpoints", url.Values{"display_name": {"Lab MinIO"}, "url": {"minio.lab:9000"}, "type": {"minio"}}).
			wantRedirect(t, "/storage")
		eps, _, _ := f.storage.ListEndpoints(context.Background(), metadb.EndpointFilter{})
		if len(eps) != 1 || eps[0].HTTPS || eps[0].Addressing != coffer.AddressingPath {
			t.Fatalf("endpoints: %+v", eps)
		}
		ep := eps[0].ID
		admin.get("/storage").want(t, 200, "Endpoint Lab MinIO created.", `data-endpoint-id="`+ep+`"`, "http://minio.lab:9000", "path-style")
		admin.post("/storage/endpoints", url.Values{"display_name": {"lab minio"}, "url": {"other:1"}}).
			want(t, 409, `id="endpoint-name-error"`, `value="lab minio"`)
		admin.get("/storage/endpoints/"+ep+"/edit").want(t, 200, `value="Lab MinIO"`, `value="minio.lab:9000"`, `id="delete-endpoint"`)
		admin.post("/storage/endpoints/"+ep, url.Values{"display_name": {"Lab"}, "url": {"minio.lab:9000"}, "https": {"on"},
			"type": {"minio"}}).wantRedirect(t, "/storage")
		if e, _ := f.storage.GetEndpoint(context.Background(), ep); e.DisplayName != "Lab" || !e.HTTPS {
			t.Errorf("after edit: %+v", e)
		}

		// Repositories: bad input shows on the fields and keeps the rest.
		admin.get("/storage/repositories/new").want(t, 200, `id="kind-local" name="kind" value="local" checked`,
			`name="encrypted" value="on" checked`, `<option value="`+ep+`">Lab (minio.lab:9000)</option>`)
		r = admin.post("/storage/repositories", url.Values{"name": {"second"}, "kind": {"local"}, "path": {"relative/dir"},
			"quota": {"ten"}, "quota_unit": {"GiB"}, "encrypted": {"on"}})
		r.want(t, 400, `id="repository-quota-error"`, `value="second"`, `value="relative/dir"`, `value="ten"`)
		r = admin.post("/storage/repositories", url.Values{"name": {"second"}, "kind": {"local"}, "path": {"relative/dir"},
			"quota": {"2"}, "quota_unit": {"GiB"}})
		r.want(t, 400, `id="repository-path-error"`, "absolute", `value="relative/dir"`, `<option value="GiB" selected>`)
		r.wantNot(t, `name="encrypted" value="on" checked`) // unticked stays unticked
		r = admin.post("/storage/repositories", url.Values{"name": {"offsite"}, "kind": {"s3"}, "bucket": {"b"}})
		r.want(t, 400, `id="repository-endpoint-error"`, `id="kind-s3" name="kind" value="s3" checked`)

		dir := filepath.Join(t.TempDir(), "second")
		r = admin.post("/storage/repositories", url.Values{"name": {"second"}, "kind": {"local"}, "path": {dir},
			"quota": {"1.5"}, "quota_unit": {"GiB"}, "encrypted": {"on"}})
		loc := r.Header.Get("Location")
		if r.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/storage/repositories/") {
			t.Fatalf("create: %d %q\n%s", r.StatusCode, loc, r.Body)
		}
		id := strings.TrimPrefix(loc, "/storage/repositories/")
		repo, err := f.storage.GetRepository(context.Background(), id)
		if err != nil || repo.QuotaBytes != 3<<29 || !repo.Encrypted || repo.Path != dir {
			t.Fatalf("created: %+v %v", repo, err)
		}
		admin.get(loc).want(t, 200, "Repository second created.", dir, `id="delete-repository"`)
		admin.get(loc+"/edit").want(t, 200, `value="1.5"`, `<option value="GiB" selected>`, dir).
			wantNot(t, `name="access_key"`, `name="path"`)
		admin.post(loc, url.Values{"name": {""}, "quota": {"-1"}, "quota_unit": {"GiB"}}).want(t, 400, `id="repository-quota-error"`)
		admin.post(loc, url.Values{"name": {""}, "quota": {"1"}, "quota_unit": {"GiB"}}).want(t, 400, `id="repository-name-error"`)

		// A repository in use is kept, saying why; an endpoint likewise.
		client, _ := f.enroll("web")
		f.do("POST", "/api/v1/plans", "operator", map[string]any{"name": "into second", "client_id": client,
			"include": []string{"/srv"}, "repository_id": id}).Want(201)
		admin.post(loc+"/delete", nil).want(t, 409, `id="delete-error"`, "delete its plans or move them", "<details class=\"confirm\" open>")
		if _, err := f.storage.GetRepository(context.Background(), id); err != nil {
			t.Errorf("the repository in use went: %v", err)
		}
		f.uiAs("operator").post(loc+"/delete", nil).want(t, 403)

		// A repository record on the endpoint (reaching S3 is not the point here).
		if err := f.db.CreateRepository(context.Background(), &coffer.Repository{ID: "0123456789abcdef0123456789abcdef",
			Name: "on lab", Kind: coffer.RepositoryS3, EndpointID: ep, Bucket: "b"}); err != nil {
			t.Fatal(err)
		}
		admin.post("/storage/endpoints/"+ep+"/delete", nil).want(t, 409, `id="delete-error"`, `value="Lab"`)
		admin.post("/storage/endpoints/nope/delete", nil).want(t, 404)
	})
}

// TestUIStorageJobs starts a verify and a GC from the repository page: the
// page shows the running job with a poller, a second verify is refused in
// place, and the poller stops with the result once the job ends.
func TestUIStorageJobs(t *testing.T) {
	t.Parallel()
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		release := make(chan struct{})
		f := newStorageFixtureWith(t, db, func(o *storage.Options) {
			o.Verify = func(ctx context.Context, r *repository.Repository, vo repository.VerifyOptions) (*repository.VerifyReport, error) {
				select {
				case <-release:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
				return r.Verify(ctx, vo)
			}
		})
		defID := f.storage.Repos().DefaultID()
		page := "/storage/repositories/" + defID
		admin, viewer := f.uiAs("admin"), f.uiAs("viewer")

		admin.post(page+"/verify", url.Values{"mode": {"data"}, "sample_percent": {"150"}}).
			want(t, 400, `id="sample-percent-error"`, `value="150"`, `id="verify-data" checked`)
		admin.post(page+"/verify", url.Values{"mode": {"data"}, "sample_percent": {"lots"}}).want(t, 400, `id="sample-percent-error"`)
		admin.post(page+"/verify", url.Values{"mode": {"data"}, "sample_percent": {"50"}}).wantRedirect(t, page)
		admin.get(page).want(t, 200, "Verify started.", `id="running-jobs"`, `data-kind="verify"`, "(data, 50 % of the packs)",
			`hx-get="/ui/storage/repositories/`+defID+`/jobs" hx-trigger="every 3s"`)
		frag := viewer.get("/ui/storage/repositories/"+defID+"/jobs", "HX-Request", "true")
		frag.want(t, 200, `id="repository-jobs-status" data-running="1" hx-get=`).wantNot(t, "<html")

		// A second verify while one runs: the service's 409, in place.
		admin.post(page+"/verify", url.Values{"mode": {"structure"}}).want(t, 409, `role="alert"`, "verify", "running")

		close(release)
		deadline := time.Now().Add(30 * time.Second)
		for {
			frag = viewer.get("/ui/storage/repositories/"+defID+"/jobs", "HX-Request", "true")
			if strings.Contains(frag.Body, `data-running="0"`) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the verify did not end:\n%s", frag.Body)
			}
			time.Sleep(20 * time.Millisecond)
		}
		frag.want(t, 200, `data-outcome="ok"`).wantNot(t, "hx-trigger")
		viewer.get("/storage").want(t, 200, `data-outcome="ok"`)

		admin.post(page+"/gc", url.Values{"dry_run": {"on"}}).wantRedirect(t, page)
		admin.get(page).want(t, 200, "dry run")
		deadline = time.Now().Add(30 * time.Second)
		for {
			if r, _ := f.storage.GetRepository(context.Background(), defID); r.LastGC != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the GC did not end")
			}
			time.Sleep(20 * time.Millisecond)
		}
		viewer.get(page).want(t, 200, `id="last-gc"><span class="badge badge-success" data-outcome="ok">`)
		admin.post("/storage/repositories/nope/gc", nil).want(t, 404)
	})
}

// TestUIStorageSecrets checks that no storage page or form answer ever
// carries a credential: neither the one typed into a failing form nor a
// stored one.
func TestUIStorageSecrets(t *testing.T) {
	t.Parallel()
	f := newStorageFixtureWith(t, metadbtest.Open(t, metadb.SQLite), func(o *storage.Options) { o.ProbeTimeout = 5 * time.Second })
	admin := f.uiAs("admin")
	const access, secret = "AKIAUITESTACCESSKEY1", "ui-test-secret-key-do-not-show"
	admin.post("/storage/endpoints", url.Values{"display_name": {"nowhere"}, "url": {"127.0.0.1:1"}}).wantRedirect(t, "/storage")
	eps, _, _ := f.storage.ListEndpoints(context.Background(), metadb.EndpointFilter{})
	r := admin.post("/storage/repositories", url.Values{"name": {"offsite"}, "kind": {"s3"}, "endpoint_id": {eps[0].ID},
		"bucket": {"coffer-ui"}, "access_key": {access}, "secret_key": {secret}})
	if r.StatusCode < 400 {
		t.Fatalf("a repository on a closed port: %d", r.StatusCode)
	}
	r.want(t, r.StatusCode, `role="alert"`, `value="offsite"`, `value="coffer-ui"`).wantNot(t, access, secret)
	// Only one of the keys: the service's message on the field, still no secret.
	r = admin.post("/storage/repositories", url.Values{"name": {"offsite"}, "kind": {"s3"}, "endpoint_id": {eps[0].ID},
		"bucket": {"coffer-ui"}, "secret_key": {secret}})
	r.want(t, 400, `id="repository-secret-key-error"`).wantNot(t, secret)
	// A local repository takes no credentials.
	defID := f.storage.Repos().DefaultID()
	admin.post("/storage/repositories/"+defID, url.Values{"name": {"main"}, "access_key": {access}, "secret_key": {secret}}).
		want(t, 400).wantNot(t, access, secret)

	srv := s3test.Require(t)
	admin.post("/storage/endpoints", url.Values{"display_name": {"versity"}, "url": {srv.Endpoint}}).wantRedirect(t, "/storage")
	eps, _, _ = f.storage.ListEndpoints(context.Background(), metadb.EndpointFilter{})
	var ep string
	for _, e := range eps {
		if e.DisplayName == "versity" {
			ep = e.ID
		}
	}
	r = admin.post("/storage/repositories", url.Values{"name": {"offsite"}, "kind": {"s3"}, "endpoint_id": {ep},
		"bucket": {srv.Bucket(t)}, "prefix": {"ui"}, "access_key": {srv.AccessKey}, "secret_key": {srv.SecretKey}})
	loc := r.Header.Get("Location")
	if r.StatusCode != http.StatusSeeOther {
		t.Fatalf("create on S3: %d\n%s", r.StatusCode, r.Body)
	}
	for _, p := range []string{"/storage", loc, loc + "/edit", "/storage/endpoints/" + ep + "/edit",
		"/ui/storage/repositories/" + strings.TrimPrefix(loc, "/storage/repositories/") + "/jobs"} {
		admin.get(p).want(t, 200).wantNot(t, srv.SecretKey, srv.AccessKey)
	}
	admin.get(loc).want(t, 200, "stored (never shown)")
	// Saving without credentials keeps the stored ones.
	admin.post(loc, url.Values{"name": {"offsite 2"}}).wantRedirect(t, loc)
	if repo, _ := f.storage.GetRepository(context.Background(), strings.TrimPrefix(loc, "/storage/repositories/")); len(repo.Credentials) == 0 {
		t.Error("saving the form dropped the credentials")
	}
}
