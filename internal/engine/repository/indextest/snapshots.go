package indextest

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// Snapshot returns a snapshot record whose fields derive from id and t.
func Snapshot(id string, t time.Time, tree blob.ID) repository.SnapshotInfo {
	return repository.SnapshotInfo{ID: id, Time: t, Tree: tree, Manifest: []byte(`{"id":"` + id + `"}`)}
}

func snapshots(t testing.TB, ix repository.Index) []repository.SnapshotInfo {
	t.Helper()
	s, err := ix.Snapshots(context.Background())
	if err != nil {
		t.Fatalf("Snapshots: %v", err)
	}
	return s
}

func testCommitSnapshotMissing(t *testing.T, ix repository.Index, _ *Clock) {
	ctx := t.Context()
	a, b, m1, m2 := BlobID(1), BlobID(2), BlobID(3), BlobID(4)
	AddPack(t, ix, "p1", a, b)
	snap := Snapshot("s1", time.Date(2026, 5, 6, 7, 8, 9, 10000, time.UTC), a)

	missing, err := ix.CommitSnapshot(ctx, snap, []blob.ID{a, m1, b, m2, m1})
	if err != nil {
		t.Fatal(err)
	}
	if want := []blob.ID{m1, m2}; !slices.Equal(missing, want) {
		t.Errorf("CommitSnapshot missing = %v, want %v (input order, each once)", shorts(missing), shorts(want))
	}
	if s := snapshots(t, ix); len(s) != 0 {
		t.Errorf("a snapshot with missing refs was recorded: %v", s)
	}
	if _, err := ix.Snapshot(ctx, snap.ID); !errors.Is(err, repository.ErrSnapshotNotFound) {
		t.Errorf("Snapshot of a refused commit: %v, want ErrSnapshotNotFound", err)
	}

	// The writer stores what was missing and commits again.
	AddPack(t, ix, "p2", m1, m2)
	missing, err = ix.CommitSnapshot(ctx, snap, []blob.ID{a, m1, b, m2, m1})
	if err != nil || len(missing) != 0 {
		t.Fatalf("CommitSnapshot with every ref indexed = %v, %v", shorts(missing), err)
	}
	got, err := ix.Snapshot(ctx, snap.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(snap, got); diff != "" {
		t.Errorf("Snapshot (-want +got):\n%s", diff)
	}
}

func testCommitSnapshot(t *testing.T, ix repository.Index, _ *Clock) {
	ctx := t.Context()
	a, b, c := BlobID(1), BlobID(2), BlobID(3)
	AddPack(t, ix, "p1", a, b, c)
	bound := beginGC(t, ix, "gc")

	// Committing touches every ref, so a GC that began before the commit
	// does not delete them.
	s1 := Snapshot("s1", time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC), a)
	if missing, err := ix.CommitSnapshot(ctx, s1, []blob.ID{a, b, a}); err != nil || len(missing) != 0 {
		t.Fatalf("CommitSnapshot = %v, %v", shorts(missing), err)
	}
	for _, id := range []blob.ID{a, b} {
		if got := touched(t, ix, id); got != bound {
			t.Errorf("ref %s touched at %d, want the current epoch %d", id.Short(), got, bound)
		}
	}
	deleteBlobs(t, ix, []blob.ID{a, b, c}, bound, 1)
	endGC(t, ix, "gc")

	// Committing the same id again is not an error and records it once.
	again := s1
	again.Manifest = []byte(`{"again":true}`)
	if missing, err := ix.CommitSnapshot(ctx, again, []blob.ID{a}); err != nil || len(missing) != 0 {
		t.Fatalf("CommitSnapshot of an existing id = %v, %v", shorts(missing), err)
	}
	// A snapshot may reference nothing (an empty backup's root is its tree).
	s2 := Snapshot("s2", s1.Time.Add(time.Second), a)
	s2.Manifest = nil
	if missing, err := ix.CommitSnapshot(ctx, s2, nil); err != nil || len(missing) != 0 {
		t.Fatalf("CommitSnapshot without refs = %v, %v", shorts(missing), err)
	}
	got := snapshots(t, ix)
	if len(got) != 2 || got[0].ID != "s1" || got[1].ID != "s2" {
		t.Fatalf("Snapshots = %v, want s1 once, then s2", got)
	}
	if diff := cmp.Diff([]repository.SnapshotInfo{s1, s2}, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("Snapshots (-want +got; the first commit of an id is kept):\n%s", diff)
	}
}

func testSnapshots(t *testing.T, ix repository.Index, _ *Clock) {
	ctx := t.Context()
	t1 := time.Date(2026, 7, 1, 0, 0, 0, 1000, time.UTC)
	t2 := t1.Add(time.Microsecond)
	east := time.FixedZone("east", 5*3600)
	unindexed := BlobID(99)
	add := []repository.SnapshotInfo{
		Snapshot("c", t1, unindexed),
		Snapshot("a", t2.In(east), unindexed),
		Snapshot("b", t1.In(east), unindexed),
	}
	for _, s := range add {
		if err := ix.AddSnapshot(ctx, s); err != nil {
			t.Fatalf("AddSnapshot %s (refs are not checked): %v", s.ID, err)
		}
	}
	want := []repository.SnapshotInfo{add[2], add[0], add[1]} // by time, then id
	if diff := cmp.Diff(want, snapshots(t, ix)); diff != "" {
		t.Errorf("Snapshots (-want +got):\n%s", diff)
	}
	if err := ix.AddSnapshot(ctx, add[0]); err != nil {
		t.Errorf("AddSnapshot of an existing id: %v", err)
	}
	got, err := ix.Snapshot(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(add[1], got); diff != "" {
		t.Errorf("Snapshot(a) (-want +got):\n%s", diff)
	}
	got.Manifest[0] = 'X'
	if again, _ := ix.Snapshot(ctx, "a"); !cmp.Equal(add[1], again) {
		t.Error("changing a returned manifest changed the stored snapshot")
	}

	if err := ix.DeleteSnapshot(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if _, err := ix.Snapshot(ctx, "c"); !errors.Is(err, repository.ErrSnapshotNotFound) {
		t.Errorf("Snapshot of a deleted snapshot: %v, want ErrSnapshotNotFound", err)
	}
	if err := ix.DeleteSnapshot(ctx, "c"); err != nil {
		t.Errorf("deleting a deleted snapshot: %v", err)
	}
	if diff := cmp.Diff([]repository.SnapshotInfo{add[2], add[1]}, snapshots(t, ix)); diff != "" {
		t.Errorf("Snapshots after a delete (-want +got):\n%s", diff)
	}
}
