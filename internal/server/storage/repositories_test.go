package storage_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/blobstore/local"
	"github.com/cofferhq/coffer/internal/engine/chunker"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/cofferhq/coffer/internal/server/storage"
)

func TestDefaultRepositoryRecord(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		id := e.def.Config().ID
		r, err := e.svc.GetRepository(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		want := chunker.Params{Min: r.Chunker.Min, Avg: r.Chunker.Avg, Max: r.Chunker.Max}
		if !r.IsDefault || r.Kind != coffer.RepositoryLocal || r.Path != e.defDir || !r.Encrypted || r.Name != "Default" ||
			want != e.def.Config().ChunkerParams() || r.Chunker.Algorithm != chunker.Algorithm {
			t.Errorf("default record: %+v", r)
		}
		// Again (a restart, another replica): nothing new.
		if _, err := e.svc.EnsureDefault(ctx, storage.Location{Path: e.defDir}); err != nil {
			t.Fatal(err)
		}
		if list, total, _ := e.svc.ListRepositories(ctx, metadb.RepositoryFilter{}); total != 1 || list[0].ID != id {
			t.Errorf("after a second start: %+v", list)
		}
		if got := e.events.codes(); !slices.Equal(got, []string{storage.EventCreated}) {
			t.Errorf("events: %v", got)
		}
		_, err = e.svc.DeleteRepository(ctx, e.admin, id)
		wantCode(t, err, "repository_is_default")
		// The set serves it without the opener.
		if got, err := e.svc.Repos().Get(ctx, id); err != nil || got != e.def {
			t.Errorf("set: %v %v", got, err)
		}
	})
}

func TestCreateLocalRepository(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		dir := e.dir()
		r, err := e.svc.CreateRepository(ctx, e.admin, storage.RepositorySpec{Name: "Second", Kind: coffer.RepositoryLocal,
			Path: dir + "/./", QuotaBytes: 1 << 30})
		if err != nil {
			t.Fatal(err)
		}
		if r.Path != dir || !r.Encrypted || r.QuotaBytes != 1<<30 || r.IsDefault || r.Chunker.Avg != chunker.DefaultParams().Avg {
			t.Errorf("created: %+v", r)
		}
		// The record's id is the config's, and the set opens it.
		repo, err := e.svc.Repos().Get(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		if repo.Config().ID != r.ID || !exists(filepath.Join(dir, "config")) || exists(filepath.Join(dir, "locks", "coffer-probe")) {
			t.Errorf("opened %s at %s", repo.Config().ID, repo.Location())
		}
		probes, _ := os.ReadDir(filepath.Join(dir, "locks"))
		if len(probes) != 0 {
			t.Errorf("the probe object stayed: %v", probes)
		}
		repotest.WriteSnapshot(t, repo, repotest.Files{"a.txt": []byte("hello")})
		if ev := e.events.last(t, storage.EventCreated); ev.ActorID != e.admin.UserID || ev.Actor != "root" || ev.Resource.ID != r.ID ||
			ev.Audience != coffer.RoleAdmin {
			t.Errorf("event: %+v", ev)
		}

		// Unencrypted on request.
		plain, err := e.svc.CreateRepository(ctx, e.admin, storage.RepositorySpec{Name: "plain", Kind: coffer.RepositoryLocal,
			Path: e.dir(), Encrypted: new(false)})
		if err != nil || plain.Encrypted {
			t.Fatalf("unencrypted: %+v %v", plain, err)
		}

		// Bad input.
		for _, tc := range []struct {
			spec storage.RepositorySpec
			code string
		}{
			{storage.RepositorySpec{Name: "", Kind: coffer.RepositoryLocal, Path: e.dir()}, "invalid_name"},
			{storage.RepositorySpec{Name: "x", Kind: coffer.RepositoryLocal, Path: "relative/dir"}, "invalid_path"},
			{storage.RepositorySpec{Name: "x", Kind: coffer.RepositoryLocal, Path: e.dir(), Bucket: "b"}, "invalid_location"},
			{storage.RepositorySpec{Name: "x", Kind: "ftp", Path: e.dir()}, "invalid_kind"},
			{storage.RepositorySpec{Name: "x", Kind: coffer.RepositoryLocal, Path: e.dir(), QuotaBytes: -1}, "invalid_quota"},
			{storage.RepositorySpec{Name: "x", Kind: coffer.RepositoryS3, EndpointID: "nope", Bucket: "bucket"}, "unknown_endpoint"},
			{storage.RepositorySpec{Name: "x", Kind: coffer.RepositoryS3, Bucket: "bucket"}, "endpoint_required"},
			{storage.RepositorySpec{Name: "SECOND", Kind: coffer.RepositoryLocal, Path: e.dir()}, "repository_name_taken"},
		} {
			_, err := e.svc.CreateRepository(ctx, e.admin, tc.spec)
			wantCode(t, err, tc.code)
		}

		// A directory holding something else is refused, and left alone.
		foreign := e.dir()
		os.MkdirAll(foreign, 0o700)
		os.WriteFile(filepath.Join(foreign, "notes.txt"), []byte("mine"), 0o600)
		_, err = e.svc.CreateRepository(ctx, e.admin, storage.RepositorySpec{Name: "foreign", Kind: coffer.RepositoryLocal, Path: foreign})
		ce := wantCode(t, err, "repository_prefix_not_empty")
		if ce.Kind != coffer.KindConflict || exists(filepath.Join(foreign, "config")) || exists(filepath.Join(foreign, "locks")) {
			t.Errorf("foreign directory: %v", err)
		}
		// A file where the directory should be.
		_, err = e.svc.CreateRepository(ctx, e.admin, storage.RepositorySpec{Name: "file", Kind: coffer.RepositoryLocal,
			Path: filepath.Join(foreign, "notes.txt")})
		wantCode(t, err, "storage_unusable")
	})
}

func TestAttachRepository(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		dir := e.dir()
		r := e.createLocal("first", dir)

		// The same location again: attached, so refused as the same repository.
		_, err := e.svc.CreateRepository(ctx, e.admin, storage.RepositorySpec{Name: "again", Kind: coffer.RepositoryLocal, Path: dir})
		wantCode(t, err, "repository_exists")
		_, err = e.svc.CreateRepository(ctx, e.admin, storage.RepositorySpec{Name: "default again", Kind: coffer.RepositoryLocal, Path: e.defDir})
		wantCode(t, err, "repository_exists")

		// Deleting keeps the data; attaching it again finds the same repository.
		if _, err := e.svc.DeleteRepository(ctx, e.admin, r.ID); err != nil {
			t.Fatal(err)
		}
		if !exists(filepath.Join(dir, "config")) {
			t.Fatal("deleting the record removed the data")
		}
		_, err = e.svc.Repos().Get(ctx, r.ID)
		wantCode(t, err, "repository_not_found")
		_, err = e.svc.CreateRepository(ctx, e.admin, storage.RepositorySpec{Name: "back", Kind: coffer.RepositoryLocal, Path: dir,
			Encrypted: new(false)})
		wantCode(t, err, "repository_encryption_mismatch")
		back, err := e.svc.CreateRepository(ctx, e.admin, storage.RepositorySpec{Name: "back", Kind: coffer.RepositoryLocal, Path: dir})
		if err != nil || back.ID != r.ID || !back.Encrypted {
			t.Fatalf("attached: %+v %v", back, err)
		}
		if ev := e.events.last(t, storage.EventCreated); ev.Level != coffer.LevelInfo {
			t.Errorf("attach event: %+v", ev)
		}

		// A repository another server's master key made.
		other := e.dir()
		b, err := local.New(other)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := repository.Init(ctx, b, repository.InitOptions{MasterKey: repotest.MasterKey(), Encrypted: true}); err != nil {
			t.Fatal(err)
		}
		_, err = e.svc.CreateRepository(ctx, e.admin, storage.RepositorySpec{Name: "theirs", Kind: coffer.RepositoryLocal, Path: other})
		if ce := wantCode(t, err, "repository_key_mismatch"); ce.Kind != coffer.KindConflict {
			t.Errorf("kind %s", ce.Kind)
		}
		// A config that is not Coffer's.
		junk := e.dir()
		os.MkdirAll(junk, 0o700)
		os.WriteFile(filepath.Join(junk, "config"), []byte("[core]\nbare = true\n"), 0o600)
		_, err = e.svc.CreateRepository(ctx, e.admin, storage.RepositorySpec{Name: "junk", Kind: coffer.RepositoryLocal, Path: junk})
		wantCode(t, err, "repository_config_invalid")
	})
}

func TestAttachWarnsOfAMissingIndex(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		// A repository written by another server that shares the master key.
		dir := e.dir()
		b, err := local.New(dir)
		if err != nil {
			t.Fatal(err)
		}
		repo := repotest.New(t, repotest.Options{Backend: b, MasterKey: e.master, Encrypted: true})
		repotest.WriteSnapshot(t, repo, repotest.Files{"f": repotest.Random(1, 1000)})
		r := e.createLocal("elsewhere", dir)
		if r.ID != repo.Config().ID {
			t.Fatalf("attached %s, want %s", r.ID, repo.Config().ID)
		}
		if ev := e.events.last(t, storage.EventCreated); ev.Level != coffer.LevelWarning {
			t.Errorf("attaching a repository whose packs the index lacks: %+v", ev)
		}
	})
}

func TestUpdateAndDeleteRepository(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		dir := e.dir()
		r := e.createLocal("mine", dir)
		before, err := e.svc.Repos().Get(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		up, err := e.svc.UpdateRepository(ctx, e.admin, r.ID, storage.RepositorySpec{Name: "renamed", QuotaBytes: 5 << 20,
			Kind: coffer.RepositoryLocal, Path: dir + "/", Encrypted: new(true)})
		if err != nil {
			t.Fatal(err)
		}
		if up.Name != "renamed" || up.QuotaBytes != 5<<20 || up.Path != dir {
			t.Errorf("updated: %+v", up)
		}
		if ev := e.events.last(t, storage.EventUpdated); ev.Message == "" || ev.Actor != "root" {
			t.Errorf("update event: %+v", ev)
		}
		// Reopened after the change.
		after, err := e.svc.Repos().Get(ctx, r.ID)
		if err != nil || after == before {
			t.Errorf("not reopened after an update: %v", err)
		}
		for _, tc := range []struct {
			spec storage.RepositorySpec
			code string
		}{
			{storage.RepositorySpec{Name: "x", Path: e.dir()}, "repository_immutable"},
			{storage.RepositorySpec{Name: "x", Kind: coffer.RepositoryS3}, "repository_immutable"},
			{storage.RepositorySpec{Name: "x", Encrypted: new(false)}, "repository_immutable"},
			{storage.RepositorySpec{Name: "x", Bucket: "b"}, "repository_immutable"},
			{storage.RepositorySpec{Name: "x", Credentials: &storage.Credentials{AccessKey: "a", SecretKey: "s"}}, "credentials_for_local"},
			{storage.RepositorySpec{Name: "Default"}, "repository_name_taken"},
			{storage.RepositorySpec{Name: "x", QuotaBytes: -5}, "invalid_quota"},
		} {
			_, err := e.svc.UpdateRepository(ctx, e.admin, r.ID, tc.spec)
			wantCode(t, err, tc.code)
		}
		_, err = e.svc.UpdateRepository(ctx, e.admin, "nope", storage.RepositorySpec{Name: "x"})
		wantCode(t, err, "repository_not_found")

		// In use by a backup record: refused; then deleted, data kept.
		b := &coffer.Backup{ClientID: "c1", RepositoryID: r.ID, State: coffer.JobQueued}
		if err := db.CreateBackup(ctx, b); err != nil {
			t.Fatal(err)
		}
		_, err = e.svc.DeleteRepository(ctx, e.admin, r.ID)
		if ce := wantCode(t, err, "repository_in_use"); ce.Meta["backups"] != 1 || ce.Meta["plans"] != 0 {
			t.Errorf("in use: %v", ce.Meta)
		}
		if _, err := db.SQL().ExecContext(ctx, `DELETE FROM backups WHERE id = $1`, b.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := e.svc.DeleteRepository(ctx, e.admin, r.ID); err != nil {
			t.Fatal(err)
		}
		if ev := e.events.last(t, storage.EventDeleted); ev.Resource.ID != r.ID {
			t.Errorf("delete event: %+v", ev)
		}
		if !exists(filepath.Join(dir, "config")) {
			t.Error("the data went with the record")
		}
	})
}

func TestEndpointCRUD(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		ep, err := e.svc.CreateEndpoint(ctx, e.admin, storage.EndpointSpec{DisplayName: "AWS", URL: "s3.eu-west-1.amazonaws.com",
			HTTPS: true, Type: coffer.EndpointAWS})
		if err != nil {
			t.Fatal(err)
		}
		if ep.Addressing != coffer.AddressingVirtual {
			t.Errorf("aws addressing default: %s", ep.Addressing)
		}
		lab, err := e.svc.CreateEndpoint(ctx, e.admin, storage.EndpointSpec{DisplayName: "lab", URL: "10.0.0.5:9000"})
		if err != nil || lab.Type != coffer.EndpointS3 || lab.Addressing != coffer.AddressingPath || lab.HTTPS {
			t.Fatalf("defaults: %+v %v", lab, err)
		}
		for _, tc := range []struct {
			spec storage.EndpointSpec
			code string
		}{
			{storage.EndpointSpec{DisplayName: "x", URL: "https://s3.example.com"}, "invalid_endpoint_url"},
			{storage.EndpointSpec{DisplayName: "x", URL: "s3.example.com/bucket"}, "invalid_endpoint_url"},
			{storage.EndpointSpec{DisplayName: "x", URL: "host:99999"}, "invalid_endpoint_url"},
			{storage.EndpointSpec{DisplayName: "x", URL: "host:"}, "invalid_endpoint_url"},
			{storage.EndpointSpec{DisplayName: "x", URL: ""}, "invalid_endpoint_url"},
			{storage.EndpointSpec{DisplayName: "x", URL: "h", Type: "ftp"}, "invalid_endpoint_type"},
			{storage.EndpointSpec{DisplayName: "x", URL: "h", Addressing: "dns"}, "invalid_addressing"},
			{storage.EndpointSpec{DisplayName: "x", URL: "h", Region: "eu west"}, "invalid_region"},
			{storage.EndpointSpec{DisplayName: " ", URL: "h"}, "invalid_name"},
			{storage.EndpointSpec{DisplayName: "LAB", URL: "h"}, "endpoint_name_taken"},
		} {
			_, err := e.svc.CreateEndpoint(ctx, e.admin, tc.spec)
			wantCode(t, err, tc.code)
		}
		up, err := e.svc.UpdateEndpoint(ctx, e.admin, lab.ID, storage.EndpointSpec{DisplayName: "lab 2", URL: "[::1]:9000", Type: coffer.EndpointMinIO})
		if err != nil || up.URL != "[::1]:9000" || up.Type != coffer.EndpointMinIO || up.CreatedAt != lab.CreatedAt {
			t.Fatalf("update: %+v %v", up, err)
		}
		if got, _ := e.svc.GetEndpoint(ctx, lab.ID); got.DisplayName != "lab 2" {
			t.Errorf("stored: %+v", got)
		}
		if list, total, err := e.svc.ListEndpoints(ctx, metadb.EndpointFilter{}); err != nil || total != 2 || list[0].ID != ep.ID {
			t.Errorf("list: %+v %d %v", list, total, err)
		}
		if _, err := e.svc.DeleteEndpoint(ctx, e.admin, lab.ID); err != nil {
			t.Fatal(err)
		}
		want := []string{storage.EventCreated, storage.EventEndpointCreated, storage.EventEndpointCreated, storage.EventEndpointUpdated,
			storage.EventEndpointDeleted}
		if got := e.events.codes(); !slices.Equal(got, want) {
			t.Errorf("events %v, want %v", got, want)
		}
	})
}

func TestOpenRefusesAMovedRepository(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		dir := e.dir()
		r := e.createLocal("moving", dir)
		// Someone swapped the directory for another repository.
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		_, err := e.svc.Repos().Get(ctx, r.ID)
		wantCode(t, err, "repository_not_there")
		b, _ := local.New(dir)
		if _, _, err := repository.Init(ctx, b, repository.InitOptions{MasterKey: e.master}); err != nil {
			t.Fatal(err)
		}
		_, err = e.svc.Repos().Get(ctx, r.ID)
		wantCode(t, err, "repository_not_there")
	})
}

// TestRefreshFollowsOtherReplicas: a repository deleted through another
// replica is closed here by the maintenance, instead of staying usable
// until a restart.
func TestRefreshFollowsOtherReplicas(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		other := newEnv(t, db) // a second replica over the same database
		ctx := context.Background()
		r := e.createLocal("shared", e.dir())
		if _, err := e.svc.Repos().Get(ctx, r.ID); err != nil {
			t.Fatal(err)
		}
		// Unchanged: still open, not reopened.
		before, _ := e.svc.Repos().Get(ctx, r.ID)
		if err := e.svc.Maintain(ctx); err != nil {
			t.Fatal(err)
		}
		if again, err := e.svc.Repos().Get(ctx, r.ID); err != nil || again != before {
			t.Fatalf("an unchanged repository was reopened (%v)", err)
		}
		if _, err := other.svc.DeleteRepository(ctx, other.admin, r.ID); err != nil {
			t.Fatal(err)
		}
		if err := e.svc.Maintain(ctx); err != nil {
			t.Fatal(err)
		}
		_, err := e.svc.Repos().Get(ctx, r.ID)
		wantCode(t, err, "repository_not_found")
	})
}
