package indextest

import (
	"context"
	"errors"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/google/go-cmp/cmp"
)

func testEmpty(t *testing.T, ix repository.Index, _ *Clock) {
	ctx := t.Context()
	a, b := BlobID(1), BlobID(2)
	if m := lookup(t, ix); len(m) != 0 {
		t.Errorf("Lookup(nil) = %v, want nothing", m)
	}
	if m := lookup(t, ix, a, b); len(m) != 0 {
		t.Errorf("Lookup on an empty index = %v, want nothing", m)
	}
	missing, err := ix.Missing(ctx, []blob.ID{a, b})
	if err != nil || !slices.Equal(missing, []blob.ID{a, b}) {
		t.Errorf("Missing on an empty index = %v, %v; want both ids", shorts(missing), err)
	}
	if missing, err := ix.Missing(ctx, nil); err != nil || len(missing) != 0 {
		t.Errorf("Missing(nil) = %v, %v; want nothing", missing, err)
	}
	if p := allPacks(t, ix); len(p) != 0 {
		t.Errorf("Packs = %v, want none", p)
	}
	if b := allBlobs(t, ix); len(b) != 0 {
		t.Errorf("Blobs = %v, want none", b)
	}
	if pb, err := ix.PackBlobs(ctx, PackID("nope")); err != nil || len(pb) != 0 {
		t.Errorf("PackBlobs of an unknown pack = %v, %v; want nothing", pb, err)
	}
	if s, err := ix.Snapshots(ctx); err != nil || len(s) != 0 {
		t.Errorf("Snapshots = %v, %v; want none", s, err)
	}
	if _, err := ix.Snapshot(ctx, "nope"); !errors.Is(err, repository.ErrSnapshotNotFound) {
		t.Errorf("Snapshot of an unknown id: %v, want ErrSnapshotNotFound", err)
	}
	deleteBlobs(t, ix, []blob.ID{a}, math.MaxInt64, 0)
	if ok, err := ix.DeletePack(ctx, PackID("nope")); ok || err != nil {
		t.Errorf("DeletePack of an unknown pack = %v, %v; want false, nil", ok, err)
	}
	if err := ix.DeleteSnapshot(ctx, "nope"); err != nil {
		t.Errorf("DeleteSnapshot of an unknown id: %v", err)
	}
	if err := ix.EndGC(ctx, "nobody"); err != nil {
		t.Errorf("EndGC without a lease: %v", err)
	}
}

func testAddPackAndLookup(t *testing.T, ix repository.Index, c *Clock) {
	ctx := t.Context()
	ids := BlobIDs(0, 10)
	entries := Entries(ids...)
	// The extremes of the pack format's uint32 fields survive the trip.
	entries[9].Offset, entries[9].Length, entries[9].RawLength = math.MaxUint32, math.MaxUint32, math.MaxUint32
	info := Info(PackID("p1"), entries, time.Date(2026, 1, 2, 3, 4, 5, 6000, time.FixedZone("east", 3600)))
	info.Size = math.MaxInt64
	if err := ix.AddPack(ctx, info, entries); err != nil {
		t.Fatal(err)
	}

	want := make(map[blob.ID]repository.Location)
	for _, e := range entries {
		want[e.ID] = loc(info.ID, e)
	}
	got := lookup(t, ix, append(BlobIDs(100, 103), ids...)...)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Lookup (-want +got):\n%s", diff)
	}

	// A pack added without a time is stamped with the index's clock.
	empty := repository.PackInfo{ID: PackID("empty"), Size: 12}
	if err := ix.AddPack(ctx, empty, nil); err != nil {
		t.Fatalf("AddPack of a pack with no entries: %v", err)
	}
	empty.AddedAt = c.Now()
	wantPacks := []repository.PackInfo{info, empty}
	slices.SortFunc(wantPacks, func(a, b repository.PackInfo) int { return slices.Compare(a.ID[:], b.ID[:]) })
	if diff := cmp.Diff(wantPacks, allPacks(t, ix)); diff != "" {
		t.Errorf("Packs (-want +got):\n%s", diff)
	}

	rows := allBlobs(t, ix)
	if len(rows) != len(ids) {
		t.Fatalf("Blobs listed %d rows, want %d", len(rows), len(ids))
	}
	epoch := rows[ids[0]].Touched
	for _, e := range entries {
		r := rows[e.ID]
		if r.ID != e.ID || r.Location != loc(info.ID, e) || r.Touched != epoch {
			t.Errorf("Blobs row %s = %+v, want %+v touched at %d like the others", e.ID.Short(), r, loc(info.ID, e), epoch)
		}
	}
}

func testAddPackTwice(t *testing.T, ix repository.Index, _ *Clock) {
	ids := BlobIDs(0, 3)
	info, entries := AddPack(t, ix, "p1", ids...)
	if err := ix.AddPack(t.Context(), info, entries); err != nil {
		t.Fatalf("adding a pack again: %v", err)
	}
	if p := allPacks(t, ix); len(p) != 1 || p[0].ID != info.ID {
		t.Errorf("Packs after adding one pack twice = %v, want it once", p)
	}
	rows := allBlobs(t, ix)
	if len(rows) != len(ids) {
		t.Errorf("Blobs after adding one pack twice: %d rows, want %d", len(rows), len(ids))
	}
	for _, e := range entries {
		if rows[e.ID].Location != loc(info.ID, e) {
			t.Errorf("blob %s at %+v, want %+v", e.ID.Short(), rows[e.ID].Location, loc(info.ID, e))
		}
	}
}

func testAddPackDuplicateBlob(t *testing.T, ix repository.Index, _ *Clock) {
	a, b, c := BlobID(1), BlobID(2), BlobID(3)
	p1, e1 := AddPack(t, ix, "p1", a, b)
	bound := beginGC(t, ix, "gc")
	endGC(t, ix, "gc")

	// A second writer stored b too: the first location stays, and the
	// second AddPack counts as a touch.
	p2, e2 := AddPack(t, ix, "p2", b, c)
	want := map[blob.ID]repository.Location{a: loc(p1.ID, e1[0]), b: loc(p1.ID, e1[1]), c: loc(p2.ID, e2[1])}
	if diff := cmp.Diff(want, lookup(t, ix, a, b, c)); diff != "" {
		t.Errorf("Lookup after a duplicate AddPack (-want +got):\n%s", diff)
	}
	if got := touched(t, ix, b); got != bound {
		t.Errorf("duplicate blob touched at %d, want the current epoch %d", got, bound)
	}
	if got := touched(t, ix, a); got >= bound {
		t.Errorf("blob a touched at %d, want before %d (nothing touched it since the GC began)", got, bound)
	}
	deleteBlobs(t, ix, []blob.ID{a, b}, bound, 1)
	if _, ok := lookup(t, ix, b)[b]; !ok {
		t.Error("the duplicate blob was deleted although AddPack touched it after BeginGC")
	}
	pb, err := ix.PackBlobs(t.Context(), p2.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(pb) != 1 || pb[0].ID != c {
		t.Errorf("PackBlobs of the second pack = %v, want only its new blob", pb)
	}
}

func testMissing(t *testing.T, ix repository.Index, _ *Clock) {
	ctx := t.Context()
	ids := BlobIDs(0, 6)
	AddPack(t, ix, "p1", ids[1], ids[3], ids[5])

	// Input order, and an id asked twice is answered twice.
	q := []blob.ID{ids[4], ids[0], ids[1], ids[2], ids[3], ids[0], ids[5]}
	missing, err := ix.Missing(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	if want := []blob.ID{ids[4], ids[0], ids[2], ids[0]}; !slices.Equal(missing, want) {
		t.Errorf("Missing = %v, want %v", shorts(missing), shorts(want))
	}

	// A blob Missing reported present after BeginGC survives that GC.
	bound := beginGC(t, ix, "gc")
	if missing, err := ix.Missing(ctx, []blob.ID{ids[1], ids[2]}); err != nil || !slices.Equal(missing, []blob.ID{ids[2]}) {
		t.Fatalf("Missing = %v, %v; want only the absent id", shorts(missing), err)
	}
	if got := touched(t, ix, ids[1]); got != bound {
		t.Errorf("blob reported present touched at %d, want the current epoch %d", got, bound)
	}
	deleteBlobs(t, ix, []blob.ID{ids[1], ids[3]}, bound, 1)
	got := lookup(t, ix, ids[1], ids[3])
	if _, ok := got[ids[1]]; !ok {
		t.Error("a blob Missing reported present after BeginGC was deleted")
	}
	if _, ok := got[ids[3]]; ok {
		t.Error("an untouched blob survived DeleteBlobs")
	}
	endGC(t, ix, "gc")
	if missing, err := ix.Missing(ctx, []blob.ID{ids[3]}); err != nil || !slices.Equal(missing, []blob.ID{ids[3]}) {
		t.Errorf("Missing after the delete = %v, %v; want the deleted id", shorts(missing), err)
	}
}

// testLargeBatches passes more ids than fit as parameters in one SQL
// statement on either database (SQLite: 32766, PostgreSQL: 65535), and adds
// a pack whose entries need more (five values each).
func testLargeBatches(t *testing.T, ix repository.Index, _ *Clock) {
	ctx := t.Context()
	const stored, asked = 13200, 66000 // 13200 entries: 66000 values
	present := BlobIDs(0, stored)
	info, entries := AddPack(t, ix, "big", present...)

	// Every fifth id asked about is stored, the others are not.
	var mixed, absent []blob.ID
	for i := range asked {
		if i%5 == 2 {
			mixed = append(mixed, present[i/5])
		} else {
			a := BlobID(stored + i)
			mixed = append(mixed, a)
			absent = append(absent, a)
		}
	}

	// The listings read more rows than fit in one page of the database's.
	rows := allBlobs(t, ix)
	if len(rows) != stored {
		t.Errorf("Blobs listed %d rows, want %d", len(rows), stored)
	}
	for i, e := range entries {
		if r := rows[e.ID]; r.Location != loc(info.ID, e) {
			t.Errorf("Blobs row %d = %+v, want %+v", i, r.Location, loc(info.ID, e))
			break
		}
	}

	got := lookup(t, ix, mixed...)
	if len(got) != stored {
		t.Fatalf("Lookup found %d of %d ids", len(got), stored)
	}
	for i := 0; i < stored; i += 999 {
		if got[present[i]] != loc(info.ID, entries[i]) {
			t.Errorf("Lookup %s = %+v, want %+v", present[i].Short(), got[present[i]], loc(info.ID, entries[i]))
		}
	}

	missing, err := ix.Missing(ctx, mixed)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(missing, absent) {
		t.Errorf("Missing returned %d ids, want the %d absent ones in input order", len(missing), len(absent))
	}

	snap := repository.SnapshotInfo{ID: "big", Time: time.Date(2026, 2, 3, 4, 5, 6, 0, time.UTC), Tree: present[0]}
	missing, err = ix.CommitSnapshot(ctx, snap, mixed)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(missing, absent) {
		t.Errorf("CommitSnapshot reported %d missing ids, want the %d absent ones", len(missing), len(absent))
	}
	bound := beginGC(t, ix, "gc")
	if missing, err := ix.CommitSnapshot(ctx, snap, present); err != nil || len(missing) != 0 {
		t.Fatalf("CommitSnapshot of %d indexed refs = %d missing, %v", stored, len(missing), err)
	}
	deleteBlobs(t, ix, present, bound, 0) // all touched by the commit
	endGC(t, ix, "gc")
	bound = beginGC(t, ix, "gc")
	// Missing touches rows last touched before the current epoch too.
	if missing, err := ix.Missing(ctx, mixed); err != nil || !slices.Equal(missing, absent) {
		t.Fatalf("Missing after BeginGC returned %d ids (%v), want the %d absent ones", len(missing), err, len(absent))
	}
	deleteBlobs(t, ix, mixed, bound, 0) // all touched by Missing
	endGC(t, ix, "gc")
	bound = beginGC(t, ix, "gc")
	deleteBlobs(t, ix, mixed, bound, stored)
	if got := lookup(t, ix, present...); len(got) != 0 {
		t.Errorf("Lookup after deleting everything found %d ids", len(got))
	}
}

func testPackBlobs(t *testing.T, ix repository.Index, _ *Clock) {
	ids := BlobIDs(0, 40)
	entries := Entries(ids...)
	slices.Reverse(entries) // a trailer need not be in offset order
	info := Info(PackID("p1"), Entries(ids...), time.Time{})
	if err := ix.AddPack(t.Context(), info, entries); err != nil {
		t.Fatal(err)
	}
	AddPack(t, ix, "p2", BlobIDs(40, 50)...)

	got, err := ix.PackBlobs(t.Context(), info.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := Entries(ids...)
	if len(got) != len(want) {
		t.Fatalf("PackBlobs listed %d blobs, want %d", len(got), len(want))
	}
	for i, e := range want {
		if got[i].ID != e.ID || got[i].Location != loc(info.ID, e) {
			t.Errorf("PackBlobs[%d] = %s %+v, want %s %+v (offset order)", i, got[i].ID.Short(), got[i].Location, e.ID.Short(), loc(info.ID, e))
		}
		if got[i].Touched != got[0].Touched {
			t.Errorf("PackBlobs[%d] touched at %d, the first at %d: one AddPack, one epoch", i, got[i].Touched, got[0].Touched)
		}
	}
}

func testListingsStop(t *testing.T, ix repository.Index, _ *Clock) {
	AddPack(t, ix, "p1", BlobIDs(0, 3)...)
	AddPack(t, ix, "p2", BlobIDs(3, 6)...)
	calls := 0
	err := ix.Packs(t.Context(), func(repository.PackInfo) error { calls++; return errStop })
	if !errors.Is(err, errStop) || calls != 1 {
		t.Errorf("Packs with a failing fn: %v after %d calls, want fn's error after 1", err, calls)
	}
	calls = 0
	err = ix.Blobs(t.Context(), func(repository.IndexedBlob) error { calls++; return errStop })
	if !errors.Is(err, errStop) || calls != 1 {
		t.Errorf("Blobs with a failing fn: %v after %d calls, want fn's error after 1", err, calls)
	}
}

func testCancelledContext(t *testing.T, ix repository.Index, _ *Clock) {
	AddPack(t, ix, "p1", BlobIDs(0, 3)...)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	id := BlobID(0)
	checks := map[string]error{}
	_, checks["Lookup"] = ix.Lookup(ctx, []blob.ID{id})
	_, checks["Missing"] = ix.Missing(ctx, []blob.ID{id})
	checks["AddPack"] = ix.AddPack(ctx, Info(PackID("p2"), nil, time.Time{}), nil)
	_, checks["CommitSnapshot"] = ix.CommitSnapshot(ctx, repository.SnapshotInfo{ID: "s"}, []blob.ID{id})
	_, checks["BeginGC"] = ix.BeginGC(ctx, "gc", time.Hour)
	_, checks["DeleteBlobs"] = ix.DeleteBlobs(ctx, []blob.ID{id}, math.MaxInt64)
	for name, err := range checks {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context: %v, want context.Canceled", name, err)
		}
	}
	if got := lookup(t, ix, id); len(got) != 1 {
		t.Error("a call with a cancelled context deleted a blob")
	}
	if s := snapshots(t, ix); len(s) != 0 {
		t.Error("a call with a cancelled context committed a snapshot")
	}
}
