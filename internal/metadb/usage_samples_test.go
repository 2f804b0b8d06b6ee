package metadb_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/engine/repository/indextest"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/google/go-cmp/cmp"
)

func TestUsageSamplesOnePerHour(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		newRepository(t, db, "repo-a", "a")
		hour := time.Date(2026, 3, 14, 9, 0, 0, 0, time.UTC)
		// Writers racing for the same hour: exactly one stores its sample.
		var wins atomic.Int32
		codes := race(8, func(i int) error {
			ok, err := db.RecordUsageSample(ctx, metadb.UsageSample{RepositoryID: "repo-a",
				TakenAt: hour.Add(time.Duration(i) * time.Minute), StoredBytes: int64(100 + i), BlobBytes: 90, LogicalBytes: 1000}, false)
			if ok {
				wins.Add(1)
			}
			return err
		})
		if codes[""] != 8 || wins.Load() != 1 {
			t.Fatalf("8 racing writers: errors %v, %d stored; want no errors, one stored", codes, wins.Load())
		}
		got, err := db.UsageHistory(ctx, hour, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 {
			t.Fatalf("samples after 8 racing writers = %+v, want one", got)
		}
		first := got[0]

		// A later sample of the same hour is not kept, unless it replaces.
		if ok, err := db.RecordUsageSample(ctx, metadb.UsageSample{RepositoryID: "repo-a", TakenAt: hour.Add(50 * time.Minute),
			StoredBytes: 1}, false); ok || err != nil {
			t.Fatalf("second sample of the hour: stored %v, %v", ok, err)
		}
		if h, _ := db.UsageHistory(ctx, hour, time.Hour); !cmp.Equal(h, []metadb.UsageSample{first}) {
			t.Fatalf("history after a second sample = %+v, want %+v", h, first)
		}
		after := metadb.UsageSample{RepositoryID: "repo-a", TakenAt: hour.Add(55 * time.Minute), StoredBytes: 40, BlobBytes: 35,
			LogicalBytes: 900}
		if ok, err := db.RecordUsageSample(ctx, after, true); !ok || err != nil {
			t.Fatalf("replacing sample: stored %v, %v", ok, err)
		}
		if h, _ := db.UsageHistory(ctx, hour, time.Hour); !cmp.Equal(h, []metadb.UsageSample{after}) {
			t.Fatalf("history after replacing = %+v, want %+v", h, after)
		}
		// A repository without a record takes no sample, without error.
		if ok, err := db.RecordUsageSample(ctx, metadb.UsageSample{RepositoryID: "gone", TakenAt: hour}, false); ok || err != nil {
			t.Fatalf("sample of a missing repository: stored %v, %v", ok, err)
		}
		sampled, err := db.SampledRepositories(ctx, hour.Add(59*time.Minute))
		if err != nil || !cmp.Equal(sampled, map[string]bool{"repo-a": true}) {
			t.Fatalf("sampled repositories this hour = %v, %v", sampled, err)
		}
		if sampled, _ := db.SampledRepositories(ctx, hour.Add(time.Hour)); len(sampled) != 0 {
			t.Fatalf("sampled repositories next hour = %v, want none", sampled)
		}
	})
}

func TestUsageHistorySteps(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		newRepository(t, db, "repo-a", "a")
		newRepository(t, db, "repo-b", "b")
		day := time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC)
		for h := range 48 {
			for _, id := range []string{"repo-a", "repo-b"} {
				if _, err := db.RecordUsageSample(ctx, metadb.UsageSample{RepositoryID: id, TakenAt: day.Add(time.Duration(h)*time.Hour + time.Minute),
					StoredBytes: int64(h), BlobBytes: int64(h / 2), LogicalBytes: int64(2 * h)}, false); err != nil {
					t.Fatal(err)
				}
			}
		}
		// By 6 hours over the second day: the last sample of each step.
		got, err := db.UsageHistory(ctx, day.Add(24*time.Hour), 6*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		var want []metadb.UsageSample
		for _, id := range []string{"repo-a", "repo-b"} {
			for _, h := range []int{29, 35, 41, 47} {
				want = append(want, metadb.UsageSample{RepositoryID: id, TakenAt: day.Add(time.Duration(h)*time.Hour + time.Minute),
					StoredBytes: int64(h), BlobBytes: int64(h / 2), LogicalBytes: int64(2 * h)})
			}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("history by 6 hours (-want +got):\n%s", diff)
		}

		// Pruning drops the samples before a time, and deleting a
		// repository its samples.
		n, err := db.DeleteUsageSamplesBefore(ctx, day.Add(24*time.Hour))
		if err != nil || n != 48 {
			t.Fatalf("pruned %d samples, %v; want 48", n, err)
		}
		all, err := db.UsageHistory(ctx, day, time.Hour)
		if err != nil || len(all) != 48 || all[0].TakenAt.Before(day.Add(24*time.Hour)) {
			t.Fatalf("history after pruning: %d samples from %v, %v", len(all), all[0].TakenAt, err)
		}
		if _, err := db.DeleteRepository(ctx, "repo-b"); err != nil {
			t.Fatal(err)
		}
		all, err = db.UsageHistory(ctx, day, time.Hour)
		if err != nil || len(all) != 24 || all[0].RepositoryID != "repo-a" {
			t.Fatalf("history after deleting repo-b: %d samples, %v", len(all), err)
		}
	})
}

func TestLatestUsageSamples(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		newRepository(t, db, "repo-a", "a")
		newRepository(t, db, "repo-b", "b")
		newRepository(t, db, "repo-c", "c") // never sampled
		got, err := db.LatestUsageSamples(ctx)
		if err != nil || len(got) != 0 {
			t.Fatalf("latest samples without any = %v, %v", got, err)
		}
		day := time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC)
		sample := func(id string, h int) metadb.UsageSample {
			return metadb.UsageSample{RepositoryID: id, TakenAt: day.Add(time.Duration(h)*time.Hour + 7*time.Minute),
				StoredBytes: int64(1000 + h), BlobBytes: int64(800 + h), LogicalBytes: int64(5000 + h)}
		}
		// Recorded out of order: the newest is the latest hour's, not the
		// last recorded.
		for _, x := range []struct {
			id string
			h  int
		}{{"repo-a", 30}, {"repo-a", 2}, {"repo-a", 29}, {"repo-b", 5}, {"repo-b", 4}} {
			if _, err := db.RecordUsageSample(ctx, sample(x.id, x.h), false); err != nil {
				t.Fatal(err)
			}
		}
		want := map[string]metadb.UsageSample{"repo-a": sample("repo-a", 30), "repo-b": sample("repo-b", 5)}
		got, err = db.LatestUsageSamples(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("latest samples (-want +got):\n%s", diff)
		}

		// A sample replaced after a garbage collection is the newest.
		gc := sample("repo-b", 5)
		gc.TakenAt, gc.StoredBytes, gc.BlobBytes = gc.TakenAt.Add(30*time.Minute), 600, 500
		if ok, err := db.RecordUsageSample(ctx, gc, true); !ok || err != nil {
			t.Fatalf("replacing sample: stored %v, %v", ok, err)
		}
		want["repo-b"] = gc
		if got, err = db.LatestUsageSamples(ctx); err != nil || !cmp.Equal(got, want) {
			t.Errorf("latest samples after a replace = %+v, %v; want %+v", got, err, want)
		}
	})
}

func TestStoredBytesByRepository(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		newRepository(t, db, "repo-a", "a")
		newRepository(t, db, "repo-b", "b")
		got, err := db.StoredBytesByRepository(ctx)
		if err != nil || len(got) != 0 {
			t.Fatalf("stored bytes of empty repositories = %v, %v", got, err)
		}
		ix := db.Index("repo-a")
		indextest.AddPack(t, ix, "p1", indextest.BlobID(1), indextest.BlobID(2))
		indextest.AddPack(t, ix, "p2", indextest.BlobID(3))
		indextest.AddPack(t, db.Index("repo-b"), "p3", indextest.BlobID(4))
		got, err = db.StoredBytesByRepository(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]int64{}
		for _, id := range []string{"repo-a", "repo-b"} {
			if want[id], err = db.RepositoryStoredBytes(ctx, id); err != nil || want[id] == 0 {
				t.Fatalf("stored bytes of %s = %d, %v", id, want[id], err)
			}
		}
		if !cmp.Equal(got, want) {
			t.Errorf("stored bytes by repository = %v, want %v (one at a time)", got, want)
		}
	})
}
