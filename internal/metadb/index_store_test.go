package metadb_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/repository/indextest"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/google/go-cmp/cmp"
)

// TestIndexRepositoriesIsolated: two repositories in one database share
// tables but nothing else — rows, ids, snapshots, sessions, the GC lease and
// the epoch are each repository's own.
func TestIndexRepositoriesIsolated(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := t.Context()
		a, b := db.Index(repositoryID(t)), db.Index(repositoryID(t))
		x, y := indextest.BlobID(1), indextest.BlobID(2)
		pa, ea := indextest.AddPack(t, a, "p1", x, y)
		snap := indextest.Snapshot("s1", time.Date(2026, 4, 5, 6, 7, 8, 0, time.UTC), x)
		if missing, err := a.CommitSnapshot(ctx, snap, []blob.ID{x, y}); err != nil || len(missing) > 0 {
			t.Fatalf("commit in a: %v, %v", missing, err)
		}
		sa, err := a.BeginSession(ctx, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.BeginGC(ctx, "gc-a", time.Hour); err != nil {
			t.Fatal(err)
		}

		// b sees none of a's rows.
		if got, err := b.Lookup(ctx, []blob.ID{x, y}); err != nil || len(got) != 0 {
			t.Errorf("b.Lookup of a's blobs = %v, %v", got, err)
		}
		if missing, err := b.Missing(ctx, []blob.ID{x, y}); err != nil || len(missing) != 2 {
			t.Errorf("b.Missing of a's blobs = %v, %v; want both", missing, err)
		}
		if rows, err := b.PackBlobs(ctx, pa.ID); err != nil || len(rows) != 0 {
			t.Errorf("b.PackBlobs of a's pack = %v, %v", rows, err)
		}
		count := 0
		if err := b.Packs(ctx, func(repository.PackInfo) error { count++; return nil }); err != nil || count != 0 {
			t.Errorf("b.Packs listed %d packs (%v), want none", count, err)
		}
		if err := b.Blobs(ctx, func(repository.IndexedBlob) error { count++; return nil }); err != nil || count != 0 {
			t.Errorf("b.Blobs listed %d blobs (%v), want none", count, err)
		}
		if s, err := b.Snapshots(ctx); err != nil || len(s) != 0 {
			t.Errorf("b.Snapshots = %v, %v", s, err)
		}
		if _, err := b.Snapshot(ctx, "s1"); !errors.Is(err, repository.ErrSnapshotNotFound) {
			t.Errorf("b.Snapshot(s1): %v, want ErrSnapshotNotFound", err)
		}
		if missing, err := b.CommitSnapshot(ctx, snap, []blob.ID{x}); err != nil || len(missing) != 1 {
			t.Errorf("b.CommitSnapshot with a's blob = %v, %v; want it missing", missing, err)
		}

		// b's writes and deletes leave a alone, even with the same ids.
		bound, err := b.BeginGC(ctx, "gc-b", time.Hour)
		if err != nil {
			t.Fatalf("b.BeginGC while a's GC runs: %v", err)
		}
		if s, err := b.BeginSession(ctx, time.Hour); err != nil || s.Epoch != bound {
			t.Errorf("b's session epoch = %d (%v), want b's bound %d: a's older session must not lower it", s.Epoch, err, bound)
		}
		if n, err := b.DeleteBlobs(ctx, []blob.ID{x, y}, bound+100); err != nil || n != 0 {
			t.Errorf("b.DeleteBlobs of a's blobs = %d, %v", n, err)
		}
		if ok, err := b.DeletePack(ctx, pa.ID); err != nil || ok {
			t.Errorf("b.DeletePack of a's pack = %v, %v", ok, err)
		}
		pb, eb := indextest.AddPack(t, b, "p1", y) // same pack id, same blob id
		if err := b.MoveBlobs(ctx, pa.ID, pb, eb); err != nil {
			t.Fatal(err)
		}
		if err := b.DeleteSnapshot(ctx, "s1"); err != nil {
			t.Fatal(err)
		}
		if err := b.EndSession(ctx, sa); err != nil {
			t.Fatal(err)
		}
		if err := b.EndGC(ctx, "gc-a"); err != nil {
			t.Fatal(err)
		}

		want := map[blob.ID]repository.Location{
			x: {Pack: pa.ID, Type: ea[0].Type, Offset: ea[0].Offset, Length: ea[0].Length, RawLength: ea[0].RawLength},
			y: {Pack: pa.ID, Type: ea[1].Type, Offset: ea[1].Offset, Length: ea[1].Length, RawLength: ea[1].RawLength},
		}
		got, err := a.Lookup(ctx, []blob.ID{x, y})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("a's blobs after b's writes (-want +got):\n%s", diff)
		}
		if gotB, err := b.Lookup(ctx, []blob.ID{y}); err != nil || gotB[y].Offset != eb[0].Offset {
			t.Errorf("b.Lookup(y) = %v, %v; want b's own location", gotB, err)
		}
		if _, err := a.Snapshot(ctx, "s1"); err != nil {
			t.Errorf("a's snapshot after b deleted its own s1: %v", err)
		}
		// a's lease and session survived b's EndGC and EndSession.
		if _, err := a.BeginGC(ctx, "other", time.Hour); !errors.Is(err, repository.ErrGCRunning) {
			t.Errorf("a.BeginGC by another owner after b.EndGC(gc-a): %v, want ErrGCRunning", err)
		}
		if got, err := a.BeginGC(ctx, "gc-a", time.Hour); err != nil || got != sa.Epoch {
			t.Errorf("a's bound = %d (%v), want its session's epoch %d", got, err, sa.Epoch)
		}
	})
}

// TestIndexReplicas: two server replicas (two connection pools on one
// database) share one index: rows, the GC lease and sessions.
func TestIndexReplicas(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := t.Context()
		id := repositoryID(t)
		r1, r2 := db.Index(id), metadbtest.OpenSame(t, db).Index(id)
		x := indextest.BlobID(1)
		indextest.AddPack(t, r1, "p1", x)
		if got, err := r2.Lookup(ctx, []blob.ID{x}); err != nil || len(got) != 1 {
			t.Errorf("r2.Lookup of r1's blob = %v, %v", got, err)
		}
		s, err := r1.BeginSession(ctx, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r1.BeginGC(ctx, "r1", time.Hour); err != nil {
			t.Fatal(err)
		}
		if _, err := r2.BeginGC(ctx, "r2", time.Hour); !errors.Is(err, repository.ErrGCRunning) {
			t.Errorf("r2.BeginGC while r1 holds the lease: %v, want ErrGCRunning", err)
		}
		if err := r1.EndGC(ctx, "r1"); err != nil {
			t.Fatal(err)
		}
		if bound, err := r2.BeginGC(ctx, "r2", time.Hour); err != nil || bound != s.Epoch {
			t.Errorf("r2.BeginGC = %d, %v; want r1's session epoch %d", bound, err, s.Epoch)
		}
	})
}

// TestIndexLocksPostgres checks the row locks the contract relies on:
// BeginGC waits for a transaction holding the shared lock on the
// repository's epoch, and AddPack, BeginSession and CommitSnapshot take that
// lock (they wait while someone holds the lock BeginGC's UPDATE takes,
// FOR NO KEY UPDATE — which, unlike FOR UPDATE, the foreign-key checks of
// their inserts do not wait for), while Missing and Lookup do not. (On
// SQLite, every write transaction holds the database write lock from BEGIN.)
func TestIndexLocksPostgres(t *testing.T) {
	db := metadbtest.Open(t, metadb.Postgres)
	ctx := t.Context()
	id := repositoryID(t)
	ix := db.Index(id)
	x := indextest.BlobID(1)
	indextest.AddPack(t, ix, "p1", x)

	hold := func(lock string) func() {
		t.Helper()
		tx, err := db.SQL().BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		var epoch int64
		if err := tx.QueryRowContext(ctx, `SELECT epoch FROM engine_repos WHERE repository_id = $1 `+lock, id).Scan(&epoch); err != nil {
			t.Fatal(err)
		}
		return func() { tx.Rollback() }
	}
	const patience = 300 * time.Millisecond
	blocks := func(name string, lock string, call func(context.Context) error) {
		t.Helper()
		release := hold(lock)
		done := make(chan error, 1)
		go func() { done <- call(ctx) }()
		select {
		case err := <-done:
			t.Errorf("%s returned (%v) while another transaction held the epoch row %s", name, err, lock)
			release()
			return
		case <-time.After(patience):
		}
		release()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s after the lock was released: %v", name, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s still blocked after the lock was released", name)
		}
	}
	free := func(name string, call func(context.Context) error) {
		t.Helper()
		release := hold("FOR NO KEY UPDATE")
		defer release()
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := call(cctx); err != nil {
			t.Errorf("%s while the epoch row is locked: %v (it must not wait for GC)", name, err)
		}
	}

	blocks("BeginGC", "FOR SHARE", func(ctx context.Context) error {
		if _, err := ix.BeginGC(ctx, "gc", time.Hour); err != nil {
			return err
		}
		return ix.EndGC(ctx, "gc")
	})
	blocks("AddPack", "FOR NO KEY UPDATE", func(ctx context.Context) error {
		entries := indextest.Entries(indextest.BlobID(2))
		return ix.AddPack(ctx, indextest.Info(indextest.PackID("p2"), entries, time.Time{}), entries)
	})
	blocks("BeginSession", "FOR NO KEY UPDATE", func(ctx context.Context) error {
		_, err := ix.BeginSession(ctx, time.Hour)
		return err
	})
	blocks("CommitSnapshot", "FOR NO KEY UPDATE", func(ctx context.Context) error {
		snap := indextest.Snapshot("s1", time.Now(), x)
		_, err := ix.CommitSnapshot(ctx, snap, []blob.ID{x})
		return err
	})
	// A new epoch, so that Missing writes touches too.
	if _, err := ix.BeginGC(ctx, "gc", time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := ix.EndGC(ctx, "gc"); err != nil {
		t.Fatal(err)
	}
	free("Missing", func(ctx context.Context) error {
		_, err := ix.Missing(ctx, []blob.ID{x, indextest.BlobID(3)})
		return err
	})
	free("Lookup", func(ctx context.Context) error {
		_, err := ix.Lookup(ctx, []blob.ID{x})
		return err
	})
}
