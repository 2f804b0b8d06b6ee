package metadb_test

import (
	"context"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/pack"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/google/go-cmp/cmp"
)

func newEndpoint(t *testing.T, db *metadb.DB, name string) *coffer.Endpoint {
	t.Helper()
	e := &coffer.Endpoint{DisplayName: name, URL: "s3.example.net:9000", HTTPS: true, Type: coffer.EndpointMinIO,
		Region: "eu-1", Addressing: coffer.AddressingPath}
	if err := db.CreateEndpoint(context.Background(), e); err != nil {
		t.Fatalf("create endpoint %s: %v", name, err)
	}
	return e
}

func newRepository(t *testing.T, db *metadb.DB, id, name string) *coffer.Repository {
	t.Helper()
	r := &coffer.Repository{ID: id, Name: name, Kind: coffer.RepositoryLocal, Path: "/srv/" + name, Encrypted: true,
		Chunker: coffer.ChunkerParams{Algorithm: "fastcdc-v1.0.0", Min: 1, Avg: 2, Max: 4}}
	if err := db.CreateRepository(context.Background(), r); err != nil {
		t.Fatalf("create repository %s: %v", name, err)
	}
	return r
}

func TestEndpoints(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		clock := newJobClock(db)
		now := clock.Add(0)
		e := newEndpoint(t, db, "Lab MinIO")
		want := coffer.Endpoint{ID: e.ID, DisplayName: "Lab MinIO", URL: "s3.example.net:9000", HTTPS: true, Type: coffer.EndpointMinIO,
			Region: "eu-1", Addressing: coffer.AddressingPath, CreatedAt: now, UpdatedAt: now}
		got, err := db.GetEndpoint(ctx, e.ID)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(&want, got); diff != "" {
			t.Errorf("stored endpoint (-want +got):\n%s", diff)
		}
		wantCode(t, db.CreateEndpoint(ctx, &coffer.Endpoint{DisplayName: "LAB minio", URL: "x:1", Type: coffer.EndpointS3,
			Addressing: coffer.AddressingPath}), "endpoint_name_taken")
		_, err = db.GetEndpoint(ctx, "nope")
		wantCode(t, err, "endpoint_not_found")

		later := clock.Add(time.Minute)
		got.DisplayName, got.URL, got.HTTPS, got.Type, got.Addressing = "AWS", "s3.amazonaws.com", false, coffer.EndpointAWS, coffer.AddressingVirtual
		if err := db.UpdateEndpoint(ctx, got); err != nil {
			t.Fatal(err)
		}
		if got.UpdatedAt != later || got.CreatedAt != now || got.DisplayName != "AWS" || got.Type != coffer.EndpointAWS {
			t.Errorf("updated endpoint: %+v", got)
		}
		other := newEndpoint(t, db, "b-other")
		other.DisplayName = "aws"
		wantCode(t, db.UpdateEndpoint(ctx, other), "endpoint_name_taken")
		wantCode(t, db.UpdateEndpoint(ctx, &coffer.Endpoint{ID: "nope", DisplayName: "x", Type: coffer.EndpointS3,
			Addressing: coffer.AddressingPath}), "endpoint_not_found")

		list, total, err := db.ListEndpoints(ctx, metadb.EndpointFilter{Limit: 1, Offset: 1})
		if err != nil || total != 2 || len(list) != 1 || list[0].DisplayName != "b-other" {
			t.Errorf("list page 2: %v %d %v", list, total, err)
		}

		// An endpoint in use stays.
		r := &coffer.Repository{ID: "r1", Name: "bucket", Kind: coffer.RepositoryS3, EndpointID: e.ID, Bucket: "b", Prefix: "p",
			Credentials: []byte("sealed")}
		if err := db.CreateRepository(ctx, r); err != nil {
			t.Fatal(err)
		}
		_, err = db.DeleteEndpoint(ctx, e.ID)
		wantCode(t, err, "endpoint_in_use")
		wantCode(t, db.CreateRepository(ctx, &coffer.Repository{ID: "r2", Name: "x", Kind: coffer.RepositoryS3, EndpointID: "nope"}),
			"endpoint_not_found")
		if _, err := db.DeleteRepository(ctx, "r1"); err != nil {
			t.Fatal(err)
		}
		if del, err := db.DeleteEndpoint(ctx, e.ID); err != nil || del.ID != e.ID {
			t.Fatalf("delete endpoint: %v %v", del, err)
		}
		_, err = db.DeleteEndpoint(ctx, e.ID)
		wantCode(t, err, "endpoint_not_found")
	})
}

func TestRepositories(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		clock := newJobClock(db)
		now := clock.Add(0)
		e := newEndpoint(t, db, "ceph")
		r := &coffer.Repository{ID: "cfg-1", Name: "Offsite", Kind: coffer.RepositoryS3, EndpointID: e.ID, Bucket: "backups",
			Prefix: "coffer/one", Credentials: []byte{0, 1, 2, 255}, QuotaBytes: 1 << 40, Encrypted: true, IsDefault: true,
			Chunker: coffer.ChunkerParams{Algorithm: "fastcdc-v1.0.0", Min: 256 << 10, Avg: 1 << 20, Max: 4 << 20}}
		if err := db.CreateRepository(ctx, r); err != nil {
			t.Fatal(err)
		}
		want := *r
		want.IsDefault = false // SetDefaultRepository decides
		want.CreatedAt, want.UpdatedAt = now, now
		got, err := db.GetRepository(ctx, "cfg-1")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(&want, got); diff != "" {
			t.Errorf("stored repository (-want +got):\n%s", diff)
		}
		wantCode(t, db.CreateRepository(ctx, &coffer.Repository{ID: "cfg-1", Name: "again", Kind: coffer.RepositoryLocal}), "repository_exists")
		wantCode(t, db.CreateRepository(ctx, &coffer.Repository{ID: "cfg-2", Name: "OFFSITE", Kind: coffer.RepositoryLocal}), "repository_name_taken")
		_, err = db.GetRepository(ctx, "nope")
		wantCode(t, err, "repository_not_found")

		// The default: one at a time.
		local := newRepository(t, db, "cfg-local", "local")
		for _, id := range []string{"cfg-1", "cfg-local"} {
			if err := db.SetDefaultRepository(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
		wantCode(t, db.SetDefaultRepository(ctx, "nope"), "repository_not_found")
		list, total, err := db.ListRepositories(ctx, metadb.RepositoryFilter{})
		if err != nil || total != 2 || list[0].ID != "cfg-local" || !list[0].IsDefault || list[1].IsDefault {
			t.Fatalf("list: %+v %d %v", list, total, err)
		}
		if list, total, _ := db.ListRepositories(ctx, metadb.RepositoryFilter{EndpointID: e.ID}); total != 1 || list[0].ID != "cfg-1" {
			t.Errorf("list by endpoint: %+v", list)
		}
		if list, total, _ := db.ListRepositories(ctx, metadb.RepositoryFilter{Kind: coffer.RepositoryLocal, Limit: 5}); total != 1 || list[0].ID != "cfg-local" {
			t.Errorf("list by kind: %+v", list)
		}

		// Update: name, quota, credentials; nothing else.
		later := clock.Add(time.Minute)
		got.Name, got.QuotaBytes, got.Credentials, got.Bucket = "Offsite 2", 5, nil, "other"
		if err := db.UpdateRepository(ctx, got); err != nil {
			t.Fatal(err)
		}
		if got.Name != "Offsite 2" || got.QuotaBytes != 5 || got.Credentials != nil || got.Bucket != "backups" || got.UpdatedAt != later {
			t.Errorf("updated: %+v", got)
		}
		got.Name = "LOCAL"
		wantCode(t, db.UpdateRepository(ctx, got), "repository_name_taken")
		wantCode(t, db.UpdateRepository(ctx, &coffer.Repository{ID: "nope", Name: "x"}), "repository_not_found")

		// Quota levels move once.
		if ok, err := db.SetRepositoryQuotaLevel(ctx, "cfg-1", 0, 80); !ok || err != nil {
			t.Fatalf("level 0→80: %v %v", ok, err)
		}
		if ok, err := db.SetRepositoryQuotaLevel(ctx, "cfg-1", 0, 80); ok || err != nil {
			t.Fatalf("level 0→80 again: %v %v", ok, err)
		}
		if r, _ := db.GetRepository(ctx, "cfg-1"); r.QuotaLevel != 80 {
			t.Errorf("quota level %d", r.QuotaLevel)
		}

		// Deleting: not the default; not while backups or plans use it.
		_, err = db.DeleteRepository(ctx, local.ID)
		wantCode(t, err, "repository_is_default")
		b := &coffer.Backup{ClientID: "c1", PlanID: "p1", RepositoryID: "cfg-1", State: coffer.JobRunning}
		if err := db.CreateBackup(ctx, b); err != nil {
			t.Fatal(err)
		}
		pl := fullPlan("uses it", "")
		pl.RepositoryID = "cfg-1"
		createPlan(t, db, pl)
		_, err = db.DeleteRepository(ctx, "cfg-1")
		wantCode(t, err, "repository_in_use")
		if ce := err.(*coffer.Error); ce.Meta["backups"] != 1 || ce.Meta["plans"] != 1 {
			t.Errorf("in use metadata: %v", ce.Meta)
		}
		if _, err := db.FinishBackup(ctx, b.ID, metadb.BackupFinish{State: coffer.JobSucceeded, SnapshotID: "snap-1"}); err != nil {
			t.Fatal(err)
		}
		owners, err := db.RepositorySnapshots(ctx, "cfg-1")
		if err != nil || len(owners) != 1 || owners[0] != (metadb.SnapshotOwner{BackupID: b.ID, ClientID: "c1", PlanID: "p1", SnapshotID: "snap-1"}) {
			t.Errorf("snapshots: %+v %v", owners, err)
		}
		if _, err := db.DeletePlan(ctx, pl.ID); err != nil {
			t.Fatal(err)
		}
		_, err = db.DeleteRepository(ctx, "cfg-1")
		wantCode(t, err, "repository_in_use")
		if _, err := db.SQL().ExecContext(ctx, `DELETE FROM backups WHERE id = $1`, b.ID); err != nil {
			t.Fatal(err)
		}
		if del, err := db.DeleteRepository(ctx, "cfg-1"); err != nil || del.Name != "Offsite 2" {
			t.Fatalf("delete: %v %v", del, err)
		}
		_, err = db.DeleteRepository(ctx, "cfg-1")
		wantCode(t, err, "repository_not_found")
	})
}

func TestRepositoryStoredBytes(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		if n, err := db.RepositoryStoredBytes(ctx, "empty"); n != 0 || err != nil {
			t.Fatalf("unknown repository: %d %v", n, err)
		}
		for i, size := range []int64{100, 250} {
			id := pack.ID{byte(i + 1)}
			if err := db.Index("a").AddPack(ctx, repository.PackInfo{ID: id, Size: size, AddedAt: time.Now()}, nil); err != nil {
				t.Fatal(err)
			}
		}
		if err := db.Index("b").AddPack(ctx, repository.PackInfo{ID: pack.ID{9}, Size: 7, AddedAt: time.Now()}, nil); err != nil {
			t.Fatal(err)
		}
		if n, err := db.RepositoryStoredBytes(ctx, "a"); n != 350 || err != nil {
			t.Errorf("stored bytes of a: %d %v", n, err)
		}
	})
}

func TestRepositoryJobs(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		clock := newJobClock(db)
		start := clock.Add(0)
		newRepository(t, db, "r1", "one")
		j := &coffer.RepositoryJob{RepositoryID: "r1", Kind: coffer.JobVerify, VerifyData: true, SamplePercent: 12.5, CreatedBy: "u1"}
		if err := db.CreateRepositoryJob(ctx, j); err != nil {
			t.Fatal(err)
		}
		if j.ID == "" || j.State != coffer.JobRunning || j.HeartbeatAt != start {
			t.Fatalf("created job: %+v", j)
		}
		err := db.CreateRepositoryJob(ctx, &coffer.RepositoryJob{RepositoryID: "r1", Kind: coffer.JobVerify})
		wantCode(t, err, "repository_job_running")
		if err.(*coffer.Error).Meta["job_id"] != j.ID {
			t.Errorf("conflict names %v, want %s", err.(*coffer.Error).Meta, j.ID)
		}
		wantCode(t, db.CreateRepositoryJob(ctx, &coffer.RepositoryJob{RepositoryID: "nope", Kind: coffer.JobGC}), "repository_not_found")
		gc := &coffer.RepositoryJob{RepositoryID: "r1", Kind: coffer.JobGC, DryRun: true}
		if err := db.CreateRepositoryJob(ctx, gc); err != nil {
			t.Fatalf("a GC beside a verify: %v", err)
		}
		_, err = db.DeleteRepository(ctx, "r1")
		wantCode(t, err, "repository_job_running")
		if running, err := db.RunningRepositoryJobs(ctx, "r1"); err != nil || len(running) != 2 {
			t.Fatalf("running: %v %v", running, err)
		}

		// The verify finishes; its result lands on the repository.
		beat := clock.Add(time.Minute)
		if err := db.HeartbeatRepositoryJob(ctx, j.ID); err != nil {
			t.Fatal(err)
		}
		res := &coffer.MaintenanceResult{JobID: j.ID, OK: true, Summary: "fine", StartedAt: start, FinishedAt: beat,
			Verify: &coffer.VerifySummary{Mode: "data", SamplePercent: 12.5, Packs: 3}}
		done, err := db.FinishRepositoryJob(ctx, j.ID, coffer.JobSucceeded, res)
		if err != nil {
			t.Fatal(err)
		}
		if done.State != coffer.JobSucceeded || done.HeartbeatAt != beat || done.FinishedAt == nil || !cmp.Equal(done.Result, res) {
			t.Errorf("finished job: %+v", done)
		}
		r, _ := db.GetRepository(ctx, "r1")
		if !cmp.Equal(r.LastVerify, res) || r.LastGC != nil {
			t.Errorf("repository after verify: %+v %+v", r.LastVerify, r.LastGC)
		}
		_, err = db.FinishRepositoryJob(ctx, j.ID, coffer.JobFailed, res)
		wantCode(t, err, "repository_job_finished")
		wantCode(t, db.HeartbeatRepositoryJob(ctx, j.ID), "repository_job_finished")
		_, err = db.FinishRepositoryJob(ctx, "nope", coffer.JobFailed, res)
		wantCode(t, err, "repository_job_not_found")

		// The GC's replica died: it goes stale and fails.
		clock.Add(10 * time.Minute)
		stale, err := db.FailStaleRepositoryJobs(ctx, clock.Now().Add(-5*time.Minute), "its server stopped")
		if err != nil || len(stale) != 1 || stale[0].ID != gc.ID || stale[0].State != coffer.JobFailed {
			t.Fatalf("stale: %+v %v", stale, err)
		}
		r, _ = db.GetRepository(ctx, "r1")
		if r.LastGC == nil || r.LastGC.JobID != gc.ID || r.LastGC.Error != "its server stopped" || r.LastGC.OK {
			t.Errorf("last GC after the failure: %+v", r.LastGC)
		}
		if again, err := db.FailStaleRepositoryJobs(ctx, clock.Now(), "x"); err != nil || len(again) != 0 {
			t.Errorf("failed again: %v %v", again, err)
		}
		got, err := db.GetRepositoryJob(ctx, gc.ID)
		if err != nil || got.State != coffer.JobFailed || !got.DryRun {
			t.Errorf("job: %+v %v", got, err)
		}
		// A repository's jobs go with it.
		if _, err := db.DeleteRepository(ctx, "r1"); err != nil {
			t.Fatal(err)
		}
		_, err = db.GetRepositoryJob(ctx, gc.ID)
		wantCode(t, err, "repository_job_not_found")
	})
}
