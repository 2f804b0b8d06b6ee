package storage_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/pack"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/cofferhq/coffer/internal/server/storage"
)

// waitJob polls job id until it is no longer running and returns it.
func (e *env) waitJob(id string) *coffer.RepositoryJob {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		j, err := e.db.GetRepositoryJob(context.Background(), id)
		if err != nil {
			e.t.Fatal(err)
		}
		if j.State != coffer.JobRunning {
			return j
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("job %s still running after 30 s", id)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestVerifyJobs(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		dir := e.dir()
		r := e.createLocal("checked", dir)
		repo, err := e.svc.Repos().Get(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		snap, _ := repotest.WriteSnapshot(t, repo, repotest.Files{"a": repotest.Random(1, 3000), "b": repotest.Random(2, 3000)})

		// A structure check of a sound repository.
		j, err := e.svc.Verify(ctx, e.admin, r.ID, false, 0)
		if err != nil {
			t.Fatal(err)
		}
		if j.State != coffer.JobRunning || j.Kind != coffer.JobVerify || j.ID == "" {
			t.Errorf("started: %+v", j)
		}
		done := e.waitJob(j.ID)
		got, _ := e.svc.GetRepository(ctx, r.ID)
		if done.State != coffer.JobSucceeded || got.LastVerify == nil || !got.LastVerify.OK || got.LastVerify.JobID != j.ID ||
			got.LastVerify.Verify.Mode != "structure" || got.LastVerify.Verify.Snapshots != 1 || got.LastVerify.Summary == "" {
			t.Fatalf("after verify: %+v %+v", done, got.LastVerify)
		}
		if ev := e.events.last(t, storage.EventVerifyOK); ev.Level != coffer.LevelSuccess || ev.Actor != "root" || ev.Audience != coffer.RoleViewer {
			t.Errorf("event: %+v", ev)
		}

		// Damage: a pack goes missing; a data check names it and the snapshot.
		var packs []string
		filepath.WalkDir(filepath.Join(dir, "packs"), func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				packs = append(packs, p)
			}
			return nil
		})
		if len(packs) == 0 {
			t.Fatal("no packs")
		}
		os.Remove(packs[0])
		j, err = e.svc.Verify(ctx, e.admin, r.ID, true, 100)
		if err != nil {
			t.Fatal(err)
		}
		e.waitJob(j.ID)
		got, _ = e.svc.GetRepository(ctx, r.ID)
		v := got.LastVerify
		if v.OK || v.Error != "" || v.Verify.Mode != "data" || v.Verify.Problems == 0 || v.Verify.ProblemKinds["missing_pack"] == 0 ||
			len(v.Verify.DamagedPacks) == 0 || !slices.Contains(v.Verify.AffectedSnapshots, snap) {
			t.Errorf("damaged verify: %+v %+v", v, v.Verify)
		}
		if ev := e.events.last(t, storage.EventVerifyDamaged); ev.Level != coffer.LevelError {
			t.Errorf("damage event: %+v", ev)
		}

		// Bad requests.
		_, err = e.svc.Verify(ctx, e.admin, r.ID, false, 10)
		wantCode(t, err, "invalid_sample")
		_, err = e.svc.Verify(ctx, e.admin, r.ID, true, 101)
		wantCode(t, err, "invalid_sample")
		_, err = e.svc.Verify(ctx, e.admin, "nope", false, 0)
		wantCode(t, err, "repository_not_found")
	})
}

func TestOneJobOfAKindAtATime(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		release := make(chan struct{})
		started := make(chan struct{}, 1)
		e := newEnv(t, db, func(o *storage.Options) {
			o.Verify = func(ctx context.Context, r *repository.Repository, vo repository.VerifyOptions) (*repository.VerifyReport, error) {
				started <- struct{}{}
				select {
				case <-release:
					return r.Verify(ctx, vo)
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
		})
		ctx := context.Background()
		id := e.def.Config().ID
		j, err := e.svc.Verify(ctx, e.admin, id, false, 0)
		if err != nil {
			t.Fatal(err)
		}
		<-started
		_, err = e.svc.Verify(ctx, e.admin, id, true, 0)
		if ce := wantCode(t, err, "repository_job_running"); ce.Meta["job_id"] != j.ID {
			t.Errorf("conflict: %v", ce.Meta)
		}
		if running, err := e.svc.RunningJobs(ctx, ""); err != nil || len(running) != 1 || running[0].ID != j.ID {
			t.Errorf("running: %+v %v", running, err)
		}
		// A GC may run beside a verify.
		gc, err := e.svc.GC(ctx, e.admin, id, true)
		if err != nil {
			t.Fatal(err)
		}
		if g := e.waitJob(gc.ID); g.State != coffer.JobSucceeded || g.Result.GC == nil || !g.Result.GC.DryRun {
			t.Errorf("dry run: %+v %+v", g, g.Result)
		}
		close(release)
		e.waitJob(j.ID)
		if _, err := e.svc.Verify(ctx, e.admin, id, false, 0); err != nil {
			t.Errorf("a verify after the last one ended: %v", err)
		}
		<-started
	})
}

func TestGCHonoursAnotherCollectorsLease(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		id := e.def.Config().ID
		// Another replica's collection holds the engine's lease.
		if _, err := db.Index(id).BeginGC(ctx, "job:on-another-replica", time.Hour); err != nil {
			t.Fatal(err)
		}
		j, err := e.svc.GC(ctx, e.admin, id, false)
		if err != nil {
			t.Fatal(err)
		}
		done := e.waitJob(j.ID)
		if done.State != coffer.JobFailed || !strings.Contains(done.Result.Error, "already running") {
			t.Errorf("GC under another's lease: %+v %+v", done, done.Result)
		}
		if ev := e.events.last(t, storage.EventGCFailed); ev.Level != coffer.LevelWarning {
			t.Errorf("event: %+v", ev)
		}
		if err := db.Index(id).EndGC(ctx, "job:on-another-replica"); err != nil {
			t.Fatal(err)
		}
		j, err = e.svc.GC(ctx, e.admin, id, false)
		if err != nil {
			t.Fatal(err)
		}
		if done := e.waitJob(j.ID); done.State != coffer.JobSucceeded {
			t.Errorf("GC once the lease is free: %+v", done.Result)
		}
		r, _ := e.svc.GetRepository(ctx, id)
		if r.LastGC == nil || r.LastGC.JobID != j.ID || !r.LastGC.OK || r.LastGC.GC.DryRun {
			t.Errorf("last GC: %+v", r.LastGC)
		}
		if ev := e.events.last(t, storage.EventGCOK); ev.Level != coffer.LevelSuccess {
			t.Errorf("event: %+v", ev)
		}
	})
}

func TestStaleAndStoppedJobs(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		blocked := make(chan struct{}, 1)
		e := newEnv(t, db, func(o *storage.Options) {
			o.GC = func(ctx context.Context, _ *repository.Repository, _ repository.GCOptions) (*repository.GCReport, error) {
				blocked <- struct{}{}
				<-ctx.Done()
				return nil, ctx.Err()
			}
		})
		ctx := context.Background()
		id := e.def.Config().ID

		// A job whose replica died: it goes stale and fails, once.
		dead := &coffer.RepositoryJob{RepositoryID: id, Kind: coffer.JobVerify}
		if err := db.CreateRepositoryJob(ctx, dead); err != nil {
			t.Fatal(err)
		}
		if err := e.svc.Maintain(ctx); err != nil {
			t.Fatal(err)
		}
		if j, _ := db.GetRepositoryJob(ctx, dead.ID); j.State != coffer.JobRunning {
			t.Fatalf("failed before it went stale: %+v", j)
		}
		e.clock.Add(11 * time.Minute)
		if err := e.svc.Maintain(ctx); err != nil {
			t.Fatal(err)
		}
		r, _ := e.svc.GetRepository(ctx, id)
		if r.LastVerify == nil || r.LastVerify.JobID != dead.ID || !strings.Contains(r.LastVerify.Error, "heartbeat") {
			t.Errorf("stale job result: %+v", r.LastVerify)
		}
		if ev := e.events.last(t, storage.EventVerifyFailed); ev.Level != coffer.LevelError {
			t.Errorf("event: %+v", ev)
		}

		// A job running when the server stops ends failed.
		j, err := e.svc.GC(ctx, e.admin, id, false)
		if err != nil {
			t.Fatal(err)
		}
		<-blocked
		e.svc.Close()
		got, _ := db.GetRepositoryJob(ctx, j.ID)
		if got.State != coffer.JobFailed || got.Result.Error != "the server stopped while it ran" {
			t.Errorf("stopped job: %+v %+v", got, got.Result)
		}
		_, err = e.svc.GC(ctx, e.admin, id, false)
		wantCode(t, err, "server_stopping")
	})
}

func TestCollectDue(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db, func(o *storage.Options) { o.GCInterval = 24 * time.Hour })
		ctx := context.Background()
		second := e.createLocal("second", e.dir())
		gcs := func() int {
			n := 0
			for _, c := range e.events.codes() {
				if c == storage.EventGCOK {
					n++
				}
			}
			return n
		}
		e.svc.CollectDue(ctx)
		if n := gcs(); n != 0 {
			t.Fatalf("collected new repositories: %d", n)
		}
		e.clock.Add(25 * time.Hour)
		e.svc.CollectDue(ctx)
		if n := gcs(); n != 2 {
			t.Fatalf("%d collections after a day, want 2: %v", n, e.events.codes())
		}
		r, _ := e.svc.GetRepository(ctx, second.ID)
		if r.LastGC == nil || !r.LastGC.OK {
			t.Errorf("last GC: %+v", r.LastGC)
		}
		e.clock.Add(time.Hour)
		e.svc.CollectDue(ctx)
		if n := gcs(); n != 2 {
			t.Errorf("collected again an hour later: %d", n)
		}
		e.clock.Add(24 * time.Hour)
		e.svc.CollectDue(ctx)
		if n := gcs(); n != 4 {
			t.Errorf("%d collections after two days, want 4", n)
		}
	})
}

func TestQuota(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		r, err := e.svc.CreateRepository(ctx, e.admin, storage.RepositorySpec{Name: "small", Kind: coffer.RepositoryLocal,
			Path: e.dir(), QuotaBytes: 1000})
		if err != nil {
			t.Fatal(err)
		}
		addPack := func(n byte, size int64) {
			t.Helper()
			if err := db.Index(r.ID).AddPack(ctx, repository.PackInfo{ID: pack.ID{n}, Size: size, AddedAt: e.clock.Now()}, nil); err != nil {
				t.Fatal(err)
			}
		}
		warnings := func() []string {
			var out []string
			for _, c := range e.events.codes() {
				if strings.HasPrefix(c, "repository.quota") {
					out = append(out, c)
				}
			}
			return out
		}
		if err := e.svc.Admit(ctx, r.ID, 0); err != nil {
			t.Fatal(err)
		}
		if err := e.svc.Admit(ctx, r.ID, 900); err != nil {
			t.Fatal(err)
		}
		// What this replica admitted counts before the index shows it.
		err = e.svc.Admit(ctx, r.ID, 200)
		ce := wantCode(t, err, "quota_exceeded")
		if ce.Kind != coffer.KindConflict || ce.Meta["quota_bytes"] != int64(1000) || !strings.Contains(ce.Detail, "raise the repository's quota") {
			t.Errorf("refusal: %v %v", ce, ce.Meta)
		}

		// 85 %: one warning, however often it is checked.
		addPack(1, 850)
		e.clock.Add(11 * time.Second)
		if err := e.svc.Admit(ctx, r.ID, 10); err != nil {
			t.Fatal(err)
		}
		e.clock.Add(11 * time.Second)
		e.svc.Admit(ctx, r.ID, 10)
		if got := warnings(); !slices.Equal(got, []string{storage.EventQuotaWarning}) {
			t.Fatalf("after 85%%: %v", got)
		}
		ev := e.events.last(t, storage.EventQuotaWarning)
		if ev.Level != coffer.LevelWarning || !strings.Contains(ev.Title, "80%") || !strings.Contains(ev.Message, "850 B") {
			t.Errorf("warning: %+v", ev)
		}
		// 100 %: a second warning (95 %), and a starting backup is refused.
		addPack(2, 150)
		e.clock.Add(11 * time.Second)
		wantCode(t, e.svc.Admit(ctx, r.ID, 0), "quota_exceeded")
		if got := warnings(); len(got) != 2 || !strings.Contains(e.events.last(t, storage.EventQuotaWarning).Title, "95%") {
			t.Fatalf("after 100%%: %v", got)
		}
		if got, _ := e.svc.GetRepository(ctx, r.ID); got.QuotaLevel != coffer.QuotaWarnHigh {
			t.Errorf("level %d", got.QuotaLevel)
		}
		// Raising the quota takes effect at once and resets the level.
		if _, err := e.svc.UpdateRepository(ctx, e.admin, r.ID, storage.RepositorySpec{Name: "small", QuotaBytes: 10000}); err != nil {
			t.Fatal(err)
		}
		if err := e.svc.Admit(ctx, r.ID, 5000); err != nil {
			t.Fatal(err)
		}
		if got := warnings(); len(got) != 3 || got[2] != storage.EventQuotaBelowWarning {
			t.Errorf("after raising: %v", got)
		}
		// No quota, no record: everything goes.
		if err := e.svc.Admit(ctx, e.def.Config().ID, 1<<50); err != nil {
			t.Errorf("default repository without quota: %v", err)
		}
		if err := e.svc.Admit(ctx, "unknown", 1<<50); err != nil {
			t.Errorf("unknown repository: %v", err)
		}
	})
}

func TestUsage(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		r, err := e.svc.CreateRepository(ctx, e.admin, storage.RepositorySpec{Name: "used", Kind: coffer.RepositoryLocal,
			Path: e.dir(), QuotaBytes: 1 << 30})
		if err != nil {
			t.Fatal(err)
		}
		repo, err := e.svc.Repos().Get(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		shared := repotest.Random(9, 50_000)
		snapA, _ := repotest.WriteSnapshot(t, repo, repotest.Files{"own": repotest.Random(1, 20_000), "shared": shared})
		snapB, _ := repotest.WriteSnapshot(t, repo, repotest.Files{"mine": repotest.Random(2, 30_000), "shared": shared})
		record := func(client, plan, snap string) {
			t.Helper()
			b := &coffer.Backup{ClientID: client, PlanID: plan, RepositoryID: r.ID, State: coffer.JobRunning}
			if err := db.CreateBackup(ctx, b); err != nil {
				t.Fatal(err)
			}
			if _, err := db.FinishBackup(ctx, b.ID, metadb.BackupFinish{State: coffer.JobSucceeded, SnapshotID: snap}); err != nil {
				t.Fatal(err)
			}
		}
		record("client-a", "plan-a", snapA)
		record("client-b", "", snapB)
		record("client-b", "", "forgotten-snapshot")
		u, err := e.svc.Usage(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		if u.Snapshots != 2 || u.StoredBytes == 0 || u.QuotaBytes != 1<<30 || u.DedupRatio <= 0 || u.LogicalBytes < 100_000 {
			t.Errorf("totals: %+v", u.Usage)
		}
		if len(u.Clients) != 2 || u.Clients[0].ID != "client-a" || u.Clients[1].ID != "client-b" {
			t.Fatalf("clients: %+v", u.Clients)
		}
		a, b := u.Clients[0], u.Clients[1]
		if a.Snapshots != 1 || a.UniqueBytes < 20_000 || a.SharedBytes < 50_000 || b.UniqueBytes < 30_000 || b.SharedBytes != a.SharedBytes {
			t.Errorf("split by client: %+v / %+v", a.SetUsage, b.SetUsage)
		}
		if len(u.Plans) != 2 || u.Plans[0].ID != "" || u.Plans[1].ID != "plan-a" || u.Plans[1].UniqueBytes != a.UniqueBytes {
			t.Errorf("split by plan: %+v", u.Plans)
		}
		_, err = e.svc.Usage(ctx, "nope")
		wantCode(t, err, "repository_not_found")
	})
}
