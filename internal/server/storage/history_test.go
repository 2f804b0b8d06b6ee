package storage_test

import (
	"context"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
)

func TestUsageSamples(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		// Start 10 minutes into an hour, so that a minute later is the same hour.
		now := e.clock.Now()
		e.clock.Add(now.Truncate(time.Hour).Add(70 * time.Minute).Sub(now))
		r := e.createLocal("sampled", e.dir())
		repo, err := e.svc.Repos().Get(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		repotest.WriteSnapshot(t, repo, repotest.Files{"a": repotest.Random(1, 20_000)})
		history := func() map[string][]metadb.UsageSample {
			t.Helper()
			all, err := e.svc.UsageHistory(ctx, e.clock.Now().Add(-500*24*time.Hour), time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			out := map[string][]metadb.UsageSample{}
			for _, s := range all {
				out[s.RepositoryID] = append(out[s.RepositoryID], s)
			}
			return out
		}
		stored := func() int64 {
			t.Helper()
			n, err := db.RepositoryStoredBytes(ctx, r.ID)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}

		// Maintenance samples every repository once an hour.
		if err := e.svc.Maintain(ctx); err != nil {
			t.Fatal(err)
		}
		h := history()
		if len(h) != 2 || len(h[r.ID]) != 1 {
			t.Fatalf("samples after maintenance: %+v, want one of each of 2 repositories", h)
		}
		first := h[r.ID][0]
		u, err := repo.Usage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if first.StoredBytes != stored() || first.StoredBytes == 0 || first.LogicalBytes != 20_000 ||
			first.BlobBytes != u.BlobBytes || first.BlobBytes == 0 {
			t.Errorf("sample = %+v, want %d stored bytes, %d blob bytes and 20000 logical", first, stored(), u.BlobBytes)
		}
		latest, err := e.svc.LatestUsage(ctx)
		if err != nil || len(latest) != 2 || latest[r.ID] != first {
			t.Errorf("latest usage = %+v, %v; want 2 repositories, %s's %+v", latest, err, r.ID, first)
		}
		all, err := e.svc.StoredBytes(ctx)
		if err != nil || all[r.ID] != first.StoredBytes {
			t.Errorf("stored bytes of all repositories = %v, %v; want %d for %s", all, err, first.StoredBytes, r.ID)
		}
		repotest.WriteSnapshot(t, repo, repotest.Files{"b": repotest.Random(2, 20_000)})
		e.clock.Add(time.Minute)
		if err := e.svc.Maintain(ctx); err != nil {
			t.Fatal(err)
		}
		if h := history(); len(h[r.ID]) != 1 || h[r.ID][0] != first {
			t.Fatalf("samples after maintenance in the same hour: %+v, want the first only", h[r.ID])
		}

		// A garbage collection refreshes the hour's sample.
		j, err := e.svc.GC(ctx, e.admin, r.ID, false)
		if err != nil {
			t.Fatal(err)
		}
		e.waitJob(j.ID)
		// The sample is refreshed before the job shows as finished.
		h = history()
		if len(h[r.ID]) != 1 || h[r.ID][0].StoredBytes != stored() || h[r.ID][0].LogicalBytes != 40_000 ||
			h[r.ID][0].BlobBytes <= first.BlobBytes {
			t.Fatalf("sample after GC = %+v, want %d stored bytes, more blob bytes than %d and 40000 logical", h[r.ID],
				stored(), first.BlobBytes)
		}
		if latest, err := e.svc.LatestUsage(ctx); err != nil || latest[r.ID] != h[r.ID][0] {
			t.Errorf("latest usage after GC = %+v, %v; want %+v", latest[r.ID], err, h[r.ID][0])
		}

		// The next hour takes new samples; 400 days on, the old ones go.
		e.clock.Add(time.Hour)
		if err := e.svc.Maintain(ctx); err != nil {
			t.Fatal(err)
		}
		if h := history(); len(h[r.ID]) != 2 {
			t.Fatalf("samples an hour later: %+v, want 2", h[r.ID])
		}
		if latest, err := e.svc.LatestUsage(ctx); err != nil || !latest[r.ID].TakenAt.Equal(e.clock.Now().Truncate(time.Microsecond)) {
			t.Errorf("latest usage an hour later = %+v, %v; want this hour's", latest[r.ID], err)
		}
		e.clock.Add(401 * 24 * time.Hour)
		if err := e.svc.Maintain(ctx); err != nil {
			t.Fatal(err)
		}
		if h := history(); len(h[r.ID]) != 1 || !h[r.ID][0].TakenAt.Equal(e.clock.Now().Truncate(time.Microsecond)) {
			t.Fatalf("samples 401 days later: %+v, want only today's", h[r.ID])
		}
	})
}
