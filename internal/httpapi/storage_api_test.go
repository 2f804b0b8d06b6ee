package httpapi

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/engine/blobstore/local"
	"github.com/cofferhq/coffer/internal/engine/blobstore/s3/s3test"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/cofferhq/coffer/internal/server/agents"
	"github.com/cofferhq/coffer/internal/server/plans"
	"github.com/cofferhq/coffer/internal/server/storage"
)

// newStorageService returns a storage service whose default repository is
// a fresh local one, with its record.
func newStorageService(t testing.TB, db *metadb.DB, events storage.Publisher) *storage.Service {
	t.Helper()
	return newStorageServiceWith(t, db, events, nil)
}

// newStorageServiceWith is newStorageService with options changed by set
// (nil: none), e.g. a Verify that blocks.
func newStorageServiceWith(t testing.TB, db *metadb.DB, events storage.Publisher, set func(*storage.Options)) *storage.Service {
	t.Helper()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "default")
	b, err := local.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	master := repotest.MasterKey()
	index := func(id string) repository.Index { return db.Index(id) }
	def, _, err := repository.OpenOrInit(ctx, b, index, repository.InitOptions{MasterKey: master, Encrypted: true})
	if err != nil {
		t.Fatal(err)
	}
	opts := storage.Options{Store: db, Default: def, MasterKey: master, Index: index, Events: events}
	if set != nil {
		set(&opts)
	}
	svc, err := storage.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		svc.Close()
		svc.Repos().Close()
	})
	if _, err := svc.EnsureDefault(ctx, storage.Location{Path: dir}); err != nil {
		t.Fatal(err)
	}
	return svc
}

type storageFixture struct {
	*agentFixture
	storage *storage.Service
}

func newStorageFixture(t testing.TB, db *metadb.DB) *storageFixture {
	t.Helper()
	return newStorageFixtureWith(t, db, nil)
}

// newStorageFixtureWith is newStorageFixture with the storage service's
// options changed by set.
func newStorageFixtureWith(t testing.TB, db *metadb.DB, set func(*storage.Options)) *storageFixture {
	t.Helper()
	sf := &storageFixture{agentFixture: &agentFixture{}}
	sf.fixture = newFixtureWith(t, db, func(f *fixture, o *Options) {
		sf.agents = agents.New(agents.Options{Store: db, Events: f.hub})
		sf.storage = newStorageServiceWith(t, db, f.hub, set)
		o.Agents, o.Storage = sf.agents, sf.storage
		o.Plans = plans.New(plans.Options{Store: db, Clients: sf.agents, Backups: &planRunner{}, Events: f.hub,
			DefaultRepositoryID: sf.storage.Repos().DefaultID(), Repositories: sf.storage})
	})
	return sf
}

// waitRepository polls repository id until done holds for it.
func (f *storageFixture) waitRepository(id string, done func(repo map[string]any) bool) map[string]any {
	f.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		repo := f.do("GET", "/api/v1/repositories/"+id, "viewer", nil).Want(200).JSON["repository"].(map[string]any)
		if done(repo) {
			return repo
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("repository %s: condition not met within 30 s: %v", id, repo)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func resultOf(repo map[string]any, key string) map[string]any {
	m, _ := repo[key].(map[string]any)
	return m
}

func TestRepositoriesAPI(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newStorageFixture(t, db)
		defID := f.storage.Repos().DefaultID()

		// Out of the box: the default local repository.
		list := f.do("GET", "/api/v1/repositories", "viewer", nil).Want(200)
		items := list.JSON["items"].([]any)
		if len(items) != 1 || list.JSON["pagination"].(map[string]any)["total"] != 1.0 {
			t.Fatalf("list: %s", list.Body)
		}
		def := items[0].(map[string]any)
		if def["id"] != defID || def["is_default"] != true || def["kind"] != "local" || def["has_secret"] != false ||
			def["encrypted"] != true || def["last_verify"] != nil || len(def["running_jobs"].([]any)) != 0 {
			t.Errorf("default repository: %v", def)
		}
		f.do("DELETE", "/api/v1/repositories/"+defID, "admin", nil).WantError(409, "repository_is_default")

		// Create: admins only.
		dir := filepath.Join(t.TempDir(), "second")
		body := map[string]any{"name": "second", "kind": "local", "path": dir, "quota_bytes": 1 << 30}
		f.do("POST", "/api/v1/repositories", "operator", body).WantError(403, "forbidden")
		r := f.do("POST", "/api/v1/repositories", "admin", body).Want(201)
		repo := r.JSON["repository"].(map[string]any)
		id := repo["id"].(string)
		if repo["path"] != dir || repo["quota_bytes"] != float64(1<<30) || repo["encrypted"] != true || repo["is_default"] != false ||
			repo["chunker"].(map[string]any)["avg"] != float64(1<<20) || len(id) != 32 {
			t.Errorf("created: %s", r.Body)
		}
		if _, err := os.Stat(filepath.Join(dir, "config")); err != nil {
			t.Errorf("no config written: %v", err)
		}
		f.do("POST", "/api/v1/repositories", "admin", body).WantError(409, "repository_exists")
		if got := f.do("GET", "/api/v1/repositories/"+id, "viewer", nil).Want(200); got.Str("repository", "name") != "second" {
			t.Errorf("get: %s", got.Body)
		}
		f.do("GET", "/api/v1/repositories/nope", "viewer", nil).WantError(404, "repository_not_found")
		if l := f.do("GET", "/api/v1/repositories?kind=local&page_size=1&page=2", "viewer", nil).Want(200); len(l.JSON["items"].([]any)) != 1 {
			t.Errorf("page 2: %s", l.Body)
		}

		// Bad input.
		foreign := filepath.Join(t.TempDir(), "foreign")
		os.MkdirAll(foreign, 0o700)
		os.WriteFile(filepath.Join(foreign, "photo.jpg"), []byte("x"), 0o600)
		r = f.do("POST", "/api/v1/repositories", "admin", map[string]any{"name": "f", "kind": "local", "path": foreign}).
			WantError(409, "repository_prefix_not_empty")
		if !strings.Contains(r.Str("detail"), "holds objects but no Coffer repository") {
			t.Errorf("detail: %s", r.Body)
		}
		f.do("POST", "/api/v1/repositories", "admin", map[string]any{"name": "x", "path": t.TempDir()}).WantError(400, "kind_required")
		f.do("POST", "/api/v1/repositories", "admin", map[string]any{"name": "x", "kind": "s3", "endpoint_id": "nope", "bucket": "bucket"}).
			WantError(400, "unknown_endpoint")
		f.do("POST", "/api/v1/repositories", "admin", map[string]any{"name": "x", "kind": "local", "path": "rel"}).WantError(400, "invalid_path")
		f.do("POST", "/api/v1/repositories", "admin", map[string]any{"name": "x", "kind": "nfs", "path": "/x"}).WantError(400, "invalid_request")
		f.do("POST", "/api/v1/repositories", "admin", map[string]any{"name": "x", "kind": "local", "path": "/x", "quota_bytes": -1}).
			WantError(400, "invalid_request")
		f.do("POST", "/api/v1/repositories", "admin", map[string]any{"name": "x", "kind": "local", "path": "/x", "colour": "red"}).
			WantError(400, "invalid_request")

		// Update.
		up := f.do("PUT", "/api/v1/repositories/"+id, "admin", map[string]any{"name": "renamed", "kind": "local", "path": dir}).Want(200)
		if up.Str("repository", "name") != "renamed" || up.JSON["repository"].(map[string]any)["quota_bytes"] != 0.0 {
			t.Errorf("update: %s", up.Body)
		}
		f.do("PUT", "/api/v1/repositories/"+id, "admin", map[string]any{"name": "x", "path": "/elsewhere"}).WantError(400, "repository_immutable")
		f.do("PUT", "/api/v1/repositories/"+id, "admin", map[string]any{"name": "x", "encrypted": false}).WantError(400, "repository_immutable")
		f.do("PUT", "/api/v1/repositories/"+id, "admin", map[string]any{"name": "x", "access_key": "a", "secret_key": "b"}).
			WantError(400, "credentials_for_local")
		f.do("PUT", "/api/v1/repositories/"+id, "operator", map[string]any{"name": "x"}).WantError(403, "forbidden")
		f.do("PUT", "/api/v1/repositories/nope", "admin", map[string]any{"name": "x"}).WantError(404, "repository_not_found")

		// Usage, for viewers too.
		u := f.do("GET", "/api/v1/repositories/"+id+"/usage", "viewer", nil).Want(200).JSON["usage"].(map[string]any)
		if u["repository_id"] != id || u["stored_bytes"] != 0.0 || u["dedup_ratio"] != 0.0 || len(u["clients"].([]any)) != 0 {
			t.Errorf("usage: %v", u)
		}
		f.do("GET", "/api/v1/repositories/nope/usage", "viewer", nil).WantError(404, "repository_not_found")

		// Verify and GC: background jobs with results on the repository.
		f.do("POST", "/api/v1/repositories/"+id+"/verify", "operator", nil).WantError(403, "forbidden")
		f.do("POST", "/api/v1/repositories/"+id+"/verify", "admin", map[string]any{"mode": "structure", "sample_percent": 10}).
			WantError(400, "invalid_sample")
		v := f.do("POST", "/api/v1/repositories/"+id+"/verify", "admin", map[string]any{"mode": "data", "sample_percent": 50}).Want(202)
		job := v.Str("job_id")
		if v.JSON["success"] != true || job == "" || v.Str("message") == "" {
			t.Fatalf("verify: %s", v.Body)
		}
		repo = f.waitRepository(id, func(r map[string]any) bool { return resultOf(r, "last_verify")["job_id"] == job })
		if lv := resultOf(repo, "last_verify"); lv["ok"] != true || resultOf(lv, "verify")["mode"] != "data" ||
			resultOf(lv, "verify")["sample_percent"] != 50.0 {
			t.Errorf("last verify: %v", lv)
		}
		g := f.do("POST", "/api/v1/repositories/"+id+"/gc", "admin", map[string]any{"dry_run": true}).Want(202)
		job = g.Str("job_id")
		repo = f.waitRepository(id, func(r map[string]any) bool { return resultOf(r, "last_gc")["job_id"] == job })
		if lg := resultOf(repo, "last_gc"); lg["ok"] != true || resultOf(lg, "gc")["dry_run"] != true {
			t.Errorf("last gc: %v", lg)
		}
		job = f.do("POST", "/api/v1/repositories/"+id+"/gc", "admin", nil).Want(202).Str("job_id")
		f.waitRepository(id, func(r map[string]any) bool { return resultOf(r, "last_gc")["job_id"] == job })
		f.do("POST", "/api/v1/repositories/nope/gc", "admin", nil).WantError(404, "repository_not_found")

		// Plans name existing repositories; a repository in use is kept.
		client, _ := f.enroll("web")
		plan := map[string]any{"name": "into second", "client_id": client, "include": []string{"/srv"}, "repository_id": id}
		planID := f.do("POST", "/api/v1/plans", "operator", plan).Want(201).Str("plan", "id")
		plan["name"], plan["repository_id"] = "nowhere", "no-such-repository"
		f.do("POST", "/api/v1/plans", "operator", plan).WantError(400, "unknown_repository")
		del := f.do("DELETE", "/api/v1/repositories/"+id, "admin", nil).WantError(409, "repository_in_use")
		meta := del.JSON["metadata"].(map[string]any)
		if meta["plans"] != 1.0 || meta["backups"] != 0.0 || !strings.Contains(del.Str("detail"), "delete its plans or move them") {
			t.Errorf("in use: %s", del.Body)
		}
		f.do("DELETE", "/api/v1/plans/"+planID, "operator", nil).Want(200)
		f.do("DELETE", "/api/v1/repositories/"+id, "operator", nil).WantError(403, "forbidden")
		d := f.do("DELETE", "/api/v1/repositories/"+id, "admin", nil).Want(200)
		if d.JSON["success"] != true || d.Str("id") != id || !strings.Contains(d.Str("message"), "data was kept") {
			t.Errorf("delete: %s", d.Body)
		}
		f.do("GET", "/api/v1/repositories/"+id, "viewer", nil).WantError(404, "repository_not_found")
		if _, err := os.Stat(filepath.Join(dir, "config")); err != nil {
			t.Errorf("the data went with the record: %v", err)
		}
	})
}

func TestEndpointsAPI(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newStorageFixture(t, db)
		body := map[string]any{"display_name": "Lab MinIO", "url": "minio.lab:9000", "type": "minio"}
		f.do("POST", "/api/v1/endpoints", "operator", body).WantError(403, "forbidden")
		r := f.do("POST", "/api/v1/endpoints", "admin", body).Want(201)
		ep := r.JSON["endpoint"].(map[string]any)
		id := ep["id"].(string)
		if ep["https"] != true || ep["addressing"] != "path" || ep["type"] != "minio" || ep["region"] != "" {
			t.Errorf("created: %s", r.Body)
		}
		f.do("POST", "/api/v1/endpoints", "admin", body).WantError(409, "endpoint_name_taken")
		f.do("POST", "/api/v1/endpoints", "admin", map[string]any{"display_name": "x", "url": "https://minio.lab"}).
			WantError(400, "invalid_endpoint_url")
		f.do("POST", "/api/v1/endpoints", "admin", map[string]any{"display_name": "x", "url": "h", "type": "gcs"}).
			WantError(400, "invalid_request")
		if got := f.do("GET", "/api/v1/endpoints/"+id, "viewer", nil).Want(200); got.Str("endpoint", "url") != "minio.lab:9000" {
			t.Errorf("get: %s", got.Body)
		}
		f.do("GET", "/api/v1/endpoints/nope", "viewer", nil).WantError(404, "endpoint_not_found")
		if l := f.do("GET", "/api/v1/endpoints", "viewer", nil).Want(200); len(l.JSON["items"].([]any)) != 1 {
			t.Errorf("list: %s", l.Body)
		}
		u := f.do("PUT", "/api/v1/endpoints/"+id, "admin", map[string]any{"display_name": "AWS", "url": "s3.amazonaws.com", "type": "aws"}).Want(200)
		if u.Str("endpoint", "addressing") != "virtual" || u.Str("endpoint", "display_name") != "AWS" {
			t.Errorf("update: %s", u.Body)
		}
		f.do("PUT", "/api/v1/endpoints/"+id, "operator", body).WantError(403, "forbidden")
		f.do("DELETE", "/api/v1/endpoints/"+id, "viewer", nil).WantError(403, "forbidden")
		f.do("DELETE", "/api/v1/endpoints/"+id, "admin", nil).Want(200)
		f.do("DELETE", "/api/v1/endpoints/"+id, "admin", nil).WantError(404, "endpoint_not_found")
	})
}

// TestS3RepositoriesAPI creates repositories on the real S3 test server
// through the API: credentials are write-only, wrong ones are refused
// saying so, and an endpoint in use stays.
func TestS3RepositoriesAPI(t *testing.T) {
	srv := s3test.Require(t)
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newStorageFixture(t, db)
		bucket := srv.Bucket(t)
		ep := f.do("POST", "/api/v1/endpoints", "admin", map[string]any{"display_name": "versity", "url": srv.Endpoint, "https": false}).
			Want(201).Str("endpoint", "id")
		body := map[string]any{"name": "offsite", "kind": "s3", "endpoint_id": ep, "bucket": bucket, "prefix": "coffer",
			"access_key": srv.AccessKey, "secret_key": "wrong-secret"}
		r := f.do("POST", "/api/v1/repositories", "admin", body).WantError(400, "storage_access_denied")
		if !strings.Contains(r.Str("detail"), "credentials") || strings.Contains(string(r.Body), "wrong-secret") {
			t.Errorf("wrong credentials: %s", r.Body)
		}
		body["bucket"], body["secret_key"] = "coffer-missing-bucket", srv.SecretKey
		f.do("POST", "/api/v1/repositories", "admin", body).WantError(400, "bucket_not_found")
		body["bucket"] = bucket
		r = f.do("POST", "/api/v1/repositories", "admin", body).Want(201)
		id := r.Str("repository", "id")
		for _, secret := range []string{srv.SecretKey, srv.AccessKey, "secret_key", "access_key"} {
			if strings.Contains(string(r.Body), secret) {
				t.Errorf("the response carries %q: %s", secret, r.Body)
			}
		}
		if r.JSON["repository"].(map[string]any)["has_secret"] != true || r.Str("repository", "prefix") != "coffer" {
			t.Errorf("created: %s", r.Body)
		}
		// Rotation with wrong credentials is refused; without credentials they stay.
		f.do("PUT", "/api/v1/repositories/"+id, "admin", map[string]any{"name": "offsite", "access_key": srv.AccessKey, "secret_key": "nope"}).
			WantError(400, "storage_access_denied")
		if g := f.do("PUT", "/api/v1/repositories/"+id, "admin", map[string]any{"name": "offsite 2"}).Want(200); g.JSON["repository"].(map[string]any)["has_secret"] != true {
			t.Errorf("credentials lost on update: %s", g.Body)
		}
		// The repository opens with its stored credentials.
		f.do("GET", "/api/v1/repositories/"+id+"/usage", "viewer", nil).Want(200)
		f.do("DELETE", "/api/v1/endpoints/"+ep, "admin", nil).WantError(409, "endpoint_in_use")
		events := f.do("GET", "/api/v1/events/history?page_size=500", "admin", nil).Want(200)
		if strings.Contains(string(events.Body), srv.SecretKey) || !strings.Contains(string(events.Body), "repository.created") {
			t.Errorf("event history: %s", events.Body)
		}
	})
}
