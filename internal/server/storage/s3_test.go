package storage_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/blobstore/s3/s3test"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/cofferhq/coffer/internal/server/storage"
	"github.com/minio/minio-go/v7"
)

// TestS3Repository runs a repository's life on the real S3-compatible
// test server: create, use, bad credentials, a missing bucket, a foreign
// prefix, an unreachable endpoint, credential rotation and an endpoint
// change.
func TestS3Repository(t *testing.T) {
	srv := s3test.Require(t)
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		bucket := srv.Bucket(t)
		ep, err := e.svc.CreateEndpoint(ctx, e.admin, storage.EndpointSpec{DisplayName: "versity", URL: srv.Endpoint})
		if err != nil {
			t.Fatal(err)
		}
		good := &storage.Credentials{AccessKey: srv.AccessKey, SecretKey: srv.SecretKey}
		spec := func(name, bucket, prefix string, c *storage.Credentials) storage.RepositorySpec {
			return storage.RepositorySpec{Name: name, Kind: coffer.RepositoryS3, EndpointID: ep.ID, Bucket: bucket, Prefix: prefix, Credentials: c}
		}
		r, err := e.svc.CreateRepository(ctx, e.admin, spec("offsite", bucket, "/coffer//one/", good))
		if err != nil {
			t.Fatal(err)
		}
		if r.Prefix != "coffer/one" || r.Bucket != bucket || len(r.Credentials) == 0 || bytes.Contains(r.Credentials, []byte(srv.SecretKey)) {
			t.Errorf("created: %+v", r)
		}
		repo, err := e.svc.Repos().Get(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		snap, _ := repotest.WriteSnapshot(t, repo, repotest.Files{"a": repotest.Random(3, 5000)})
		if got := repotest.ReadFiles(t, repo, snap); !bytes.Equal(got["a"], repotest.Random(3, 5000)) {
			t.Error("read back other bytes")
		}
		// Nothing but the repository under the prefix: the probe is gone.
		for obj := range srv.Client(t).ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: "coffer/one/locks/", Recursive: true}) {
			t.Errorf("left behind: %s", obj.Key)
		}

		// Wrong credentials, a missing bucket, a foreign prefix.
		bad := &storage.Credentials{AccessKey: srv.AccessKey, SecretKey: "not-the-secret"}
		_, err = e.svc.CreateRepository(ctx, e.admin, spec("bad", bucket, "two", bad))
		if ce := wantCode(t, err, "storage_access_denied"); ce.Kind != coffer.KindInvalid || !strings.Contains(ce.Detail, "credentials") {
			t.Errorf("wrong secret: %v", ce)
		}
		_, err = e.svc.CreateRepository(ctx, e.admin, spec("nobucket", "coffer-no-such-bucket", "", good))
		wantCode(t, err, "bucket_not_found")
		if _, err := srv.Client(t).PutObject(ctx, bucket, "theirs/data.txt", strings.NewReader("x"), 1, minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
		_, err = e.svc.CreateRepository(ctx, e.admin, spec("foreign", bucket, "theirs", good))
		wantCode(t, err, "repository_prefix_not_empty")
		_, err = e.svc.CreateRepository(ctx, e.admin, spec("whole bucket", bucket, "", good))
		wantCode(t, err, "repository_prefix_not_empty")
		// The same prefix again is the same repository.
		_, err = e.svc.CreateRepository(ctx, e.admin, spec("twice", bucket, "coffer/one", good))
		wantCode(t, err, "repository_exists")

		// A server that is not there, and one that speaks another protocol.
		down, err := e.svc.CreateEndpoint(ctx, e.admin, storage.EndpointSpec{DisplayName: "down", URL: "127.0.0.1:1"})
		if err != nil {
			t.Fatal(err)
		}
		_, err = e.svc.CreateRepository(ctx, e.admin, storage.RepositorySpec{Name: "down", Kind: coffer.RepositoryS3,
			EndpointID: down.ID, Bucket: bucket, Credentials: good})
		if ce := wantCode(t, err, "storage_unreachable"); ce.Kind != coffer.KindUnavailable {
			t.Errorf("unreachable: %v", ce)
		}
		tlsEP, err := e.svc.CreateEndpoint(ctx, e.admin, storage.EndpointSpec{DisplayName: "tls", URL: srv.Endpoint, HTTPS: true})
		if err != nil {
			t.Fatal(err)
		}
		_, err = e.svc.CreateRepository(ctx, e.admin, storage.RepositorySpec{Name: "tls", Kind: coffer.RepositoryS3,
			EndpointID: tlsEP.ID, Bucket: bucket, Prefix: "three", Credentials: good})
		if ce := wantCode(t, err, "storage_unusable"); !strings.Contains(ce.Detail, "TLS") {
			t.Errorf("https against http: %v", ce)
		}

		// Rotation: a wrong secret is refused and changes nothing; the right one is stored.
		upd := storage.RepositorySpec{Name: "offsite", Credentials: bad}
		_, err = e.svc.UpdateRepository(ctx, e.admin, r.ID, upd)
		wantCode(t, err, "storage_access_denied")
		if got, _ := e.svc.GetRepository(ctx, r.ID); !bytes.Equal(got.Credentials, r.Credentials) {
			t.Error("refused credentials were stored")
		}
		upd.Credentials = good
		rotated, err := e.svc.UpdateRepository(ctx, e.admin, r.ID, upd)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(rotated.Credentials, r.Credentials) {
			t.Error("credentials were not sealed afresh")
		}
		if ev := e.events.last(t, storage.EventUpdated); !strings.Contains(ev.Message, "credentials") {
			t.Errorf("rotation event: %s", ev.Message)
		}
		if _, err := e.svc.Repos().Get(ctx, r.ID); err != nil {
			t.Fatalf("reopen after rotation: %v", err)
		}

		// Moving the endpoint somewhere its repositories are not is refused.
		_, err = e.svc.UpdateEndpoint(ctx, e.admin, ep.ID, storage.EndpointSpec{DisplayName: "versity", URL: "127.0.0.1:1"})
		if ce := wantCode(t, err, "storage_unreachable"); ce.Meta["repository_id"] != r.ID {
			t.Errorf("endpoint move: %v", ce.Meta)
		}
		if got, _ := e.svc.GetEndpoint(ctx, ep.ID); got.URL != srv.Endpoint {
			t.Errorf("refused endpoint change was stored: %+v", got)
		}
		if _, err := e.svc.UpdateEndpoint(ctx, e.admin, ep.ID, storage.EndpointSpec{DisplayName: "versity", URL: srv.Endpoint, Region: "us-east-1"}); err != nil {
			t.Fatalf("endpoint change that reaches its repositories: %v", err)
		}
		_, err = e.svc.DeleteEndpoint(ctx, e.admin, ep.ID)
		wantCode(t, err, "endpoint_in_use")
		e.events.noSecrets(t, srv.SecretKey, "not-the-secret")
	})
}

// TestS3DefaultRepository records a default repository on S3: an endpoint
// for its server, its credentials sealed, and followed when they change.
func TestS3DefaultRepository(t *testing.T) {
	srv := s3test.Require(t)
	db := metadbtest.Open(t, metadb.SQLite)
	ctx := context.Background()
	cfg := srv.Config(srv.Bucket(t), "default")
	loc := storage.Location{S3: &cfg}
	b, err := storage.OpenBackend(ctx, loc)
	if err != nil {
		t.Fatal(err)
	}
	master := repotest.MasterKey()
	def, _, err := repository.OpenOrInit(ctx, b, func(id string) repository.Index { return db.Index(id) },
		repository.InitOptions{MasterKey: master, Encrypted: true})
	if err != nil {
		t.Fatal(err)
	}
	events := &recorder{}
	svc, err := storage.New(storage.Options{Store: db, Default: def, MasterKey: master, Events: events,
		Index: func(id string) repository.Index { return db.Index(id) }})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Repos().Close()
	r, err := svc.EnsureDefault(ctx, loc)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := db.GetEndpoint(ctx, r.EndpointID)
	if err != nil {
		t.Fatal(err)
	}
	if r.Kind != coffer.RepositoryS3 || r.Bucket != cfg.Bucket || r.Prefix != "default" || !r.IsDefault || len(r.Credentials) == 0 ||
		ep.URL != srv.Endpoint || ep.HTTPS || ep.Addressing != coffer.AddressingPath {
		t.Errorf("default record %+v on %+v", r, ep)
	}
	// New credentials in the environment are stored at the next start.
	cfg.SecretKey = "rotated-secret"
	r2, err := svc.EnsureDefault(ctx, loc)
	if err != nil || bytes.Equal(r2.Credentials, r.Credentials) {
		t.Errorf("credentials not followed: %v", err)
	}
	if _, err := svc.EnsureDefault(ctx, loc); err != nil {
		t.Fatal(err)
	}
	if n := len(events.codes()); n != 3 { // endpoint and repository created, credentials updated once
		t.Errorf("events %v", events.codes())
	}
	// Its credentials cannot be changed through the API.
	_, err = svc.UpdateRepository(ctx, nil, r.ID, storage.RepositorySpec{Name: "Default", Credentials: &storage.Credentials{AccessKey: "a", SecretKey: "b"}})
	wantCode(t, err, "default_repository_credentials")
	events.noSecrets(t, srv.SecretKey, "rotated-secret")
}

// TestRefreshFollowsS3Changes: an S3 repository open here is reopened by
// the maintenance once another replica edits its endpoint, and stays
// open while nothing changed.
func TestRefreshFollowsS3Changes(t *testing.T) {
	srv := s3test.Require(t)
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		other := newReplica(t, e)
		ctx := context.Background()
		ep, err := e.svc.CreateEndpoint(ctx, e.admin, storage.EndpointSpec{DisplayName: "versity", URL: srv.Endpoint})
		if err != nil {
			t.Fatal(err)
		}
		r, err := e.svc.CreateRepository(ctx, e.admin, storage.RepositorySpec{Name: "offsite", Kind: coffer.RepositoryS3,
			EndpointID: ep.ID, Bucket: srv.Bucket(t), Credentials: &storage.Credentials{AccessKey: srv.AccessKey, SecretKey: srv.SecretKey}})
		if err != nil {
			t.Fatal(err)
		}
		before, err := e.svc.Repos().Get(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.svc.Maintain(ctx); err != nil {
			t.Fatal(err)
		}
		if again, err := e.svc.Repos().Get(ctx, r.ID); err != nil || again != before {
			t.Fatalf("an unchanged S3 repository was reopened (%v)", err)
		}
		if _, err := other.svc.UpdateEndpoint(ctx, other.admin, ep.ID, storage.EndpointSpec{DisplayName: "versity",
			URL: srv.Endpoint, Region: "us-east-1"}); err != nil {
			t.Fatal(err)
		}
		if err := e.svc.Maintain(ctx); err != nil {
			t.Fatal(err)
		}
		after, err := e.svc.Repos().Get(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		if after == before {
			t.Error("the repository kept its old endpoint settings after another replica changed them")
		}
	})
}
