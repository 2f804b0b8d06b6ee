package indextest

import (
	"errors"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/pack"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/google/go-cmp/cmp"
)

func testGCLease(t *testing.T, ix repository.Index, c *Clock) {
	ctx := t.Context()
	wantRunning := func(owner string) {
		t.Helper()
		if _, err := ix.BeginGC(ctx, owner, time.Minute); !errors.Is(err, repository.ErrGCRunning) {
			t.Errorf("BeginGC(%s) while another holds a live lease: %v, want ErrGCRunning", owner, err)
		}
	}

	a1, err := ix.BeginGC(ctx, "A", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	wantRunning("B")
	// The holder may begin again (a retry); each BeginGC advances the epoch.
	a2, err := ix.BeginGC(ctx, "A", time.Minute)
	if err != nil {
		t.Fatalf("the holder beginning again: %v", err)
	}
	if a2 <= a1 {
		t.Errorf("second BeginGC bound = %d, want more than %d", a2, a1)
	}
	// A refused BeginGC leaves the epoch alone.
	wantRunning("B")
	if err := ix.EndGC(ctx, "A"); err != nil {
		t.Fatal(err)
	}
	if s := beginSession(t, ix, time.Minute); s.Epoch != a2 {
		t.Errorf("epoch after a refused BeginGC = %d, want %d", s.Epoch, a2)
	}

	// EndGC by someone who does not hold the lease does not release it.
	beginGC(t, ix, "A")
	endGC(t, ix, "B")
	wantRunning("C")

	// The lease lasts its ttl (counted from the last BeginGC), then anyone
	// may take it over.
	if _, err := ix.BeginGC(ctx, "A", time.Minute); err != nil {
		t.Fatal(err)
	}
	c.Advance(59 * time.Second)
	wantRunning("B")
	c.Advance(2 * time.Second)
	if _, err := ix.BeginGC(ctx, "B", time.Minute); err != nil {
		t.Fatalf("BeginGC after the holder's lease ran out: %v", err)
	}
	wantRunning("A")
	endGC(t, ix, "A") // A's lease is gone: this must not release B's
	wantRunning("A")
	endGC(t, ix, "B")
	beginGC(t, ix, "A")
	endGC(t, ix, "A")

	if _, err := ix.BeginGC(ctx, "", time.Minute); err == nil {
		t.Error("BeginGC with an empty owner succeeded")
	}
}

func testDeleteBlobs(t *testing.T, ix repository.Index, _ *Clock) {
	ctx := t.Context()
	ids := BlobIDs(0, 6)
	a, b, cc, d, e, absent := ids[0], ids[1], ids[2], ids[3], ids[4], ids[5]
	AddPack(t, ix, "p1", a, b, cc, d)
	bound := beginGC(t, ix, "gc")
	if missing, err := ix.Missing(ctx, []blob.ID{b}); err != nil || len(missing) != 0 {
		t.Fatalf("Missing(b) = %v, %v", shorts(missing), err)
	}
	AddPack(t, ix, "p2", e)

	// Only rows touched before bound go: b (touched by Missing) and e
	// (written) were touched at bound itself.
	deleteBlobs(t, ix, []blob.ID{a, b, e, absent, a}, bound, 1)
	got := lookup(t, ix, ids...)
	if _, ok := got[a]; ok || len(got) != 4 {
		t.Errorf("after DeleteBlobs: %d of b, c, d, e indexed and a indexed = %v; want 4 and false", len(got), ok)
	}
	deleteBlobs(t, ix, []blob.ID{cc, d}, bound, 2)
	deleteBlobs(t, ix, []blob.ID{e}, bound, 0)
	deleteBlobs(t, ix, []blob.ID{e}, bound+1, 1)
	endGC(t, ix, "gc")
	if rows := allBlobs(t, ix); len(rows) != 1 || rows[b].ID != b {
		t.Errorf("Blobs after the deletes = %v, want only b", rows)
	}
}

func testMoveBlobs(t *testing.T, ix repository.Index, _ *Clock) {
	ctx := t.Context()
	ids := BlobIDs(0, 5)
	a, b, cc, d, e := ids[0], ids[1], ids[2], ids[3], ids[4]
	p1, e1 := AddPack(t, ix, "p1", a, b, cc, d)
	p3, e3 := AddPack(t, ix, "p3", e)
	bound := beginGC(t, ix, "gc")
	if _, err := ix.Missing(ctx, []blob.ID{a, b, cc, e}); err != nil {
		t.Fatal(err)
	}
	deleteBlobs(t, ix, []blob.ID{d}, bound, 1)

	// Repack a, b and d (deleted meanwhile: not to be revived) out of p1,
	// and e, which is not in p1 and must stay where it is.
	e2 := Entries(a, e, b, d)
	p2 := Info(PackID("p2"), e2, time.Time{})
	if err := ix.AddPack(ctx, p2, e2[:3]); err != nil {
		t.Fatal(err)
	}
	if err := ix.MoveBlobs(ctx, p1.ID, p2, e2); err != nil {
		t.Fatal(err)
	}
	endGC(t, ix, "gc")
	want := map[blob.ID]repository.Location{
		a:  loc(p2.ID, e2[0]),
		b:  loc(p2.ID, e2[2]),
		cc: loc(p1.ID, e1[2]),
		e:  loc(p3.ID, e3[0]),
	}
	if diff := cmp.Diff(want, lookup(t, ix, ids...)); diff != "" {
		t.Errorf("Lookup after MoveBlobs (-want +got):\n%s", diff)
	}
	for _, tc := range []struct {
		pack pack.ID
		want []blob.ID
	}{{p1.ID, []blob.ID{cc}}, {p2.ID, []blob.ID{a, b}}, {p3.ID, []blob.ID{e}}} {
		rows, err := ix.PackBlobs(ctx, tc.pack)
		if err != nil {
			t.Fatal(err)
		}
		var got []blob.ID
		for _, r := range rows {
			got = append(got, r.ID)
		}
		if !cmp.Equal(shorts(got), shorts(tc.want)) {
			t.Errorf("PackBlobs(%s) = %v, want %v", tc.pack.String()[:12], shorts(got), shorts(tc.want))
		}
	}
}

func testDeletePack(t *testing.T, ix repository.Index, _ *Clock) {
	ctx := t.Context()
	a, b, cc := BlobID(1), BlobID(2), BlobID(3)
	p1, _ := AddPack(t, ix, "p1", a, b)
	empty, _ := AddPack(t, ix, "empty")
	p3, _ := AddPack(t, ix, "p3", cc)

	deletePack := func(id pack.ID, want bool) {
		t.Helper()
		ok, err := ix.DeletePack(ctx, id)
		if err != nil || ok != want {
			t.Errorf("DeletePack(%s) = %v, %v; want %v", id.String()[:12], ok, err, want)
		}
	}
	deletePack(p1.ID, false) // rows point at it
	deletePack(empty.ID, true)
	deletePack(empty.ID, false)
	deletePack(PackID("unknown"), false)

	bound := beginGC(t, ix, "gc")
	deleteBlobs(t, ix, []blob.ID{a}, bound, 1)
	deletePack(p1.ID, false) // b still points at it
	deleteBlobs(t, ix, []blob.ID{b}, bound, 1)
	deletePack(p1.ID, true)

	// A pack emptied by a move can go; the pack the rows moved to cannot.
	p4, e4 := AddPack(t, ix, "p4", cc)
	if err := ix.MoveBlobs(ctx, p3.ID, p4, e4); err != nil {
		t.Fatal(err)
	}
	deletePack(p4.ID, false)
	deletePack(p3.ID, true)
	endGC(t, ix, "gc")

	if packs := allPacks(t, ix); len(packs) != 1 || packs[0].ID != p4.ID {
		t.Errorf("Packs = %v, want only p4", packs)
	}
}
