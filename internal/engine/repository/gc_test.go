package repository_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/blobstore"
	"github.com/cofferhq/coffer/internal/engine/pack"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/repository/memindex"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
	"github.com/cofferhq/coffer/internal/engine/tree"
)

// gcRandom returns n incompressible bytes, so that stored sizes do not
// depend on the compression level.
func gcRandom(rng *rand.Rand, n int) []byte {
	b := make([]byte, n+7)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], rng.Uint64())
	}
	return b[:n:n]
}

func gcRNG(t testing.TB) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	t.Logf("random seed %d", seed)
	return rand.New(rand.NewPCG(seed, seed>>1|1))
}

// gcClock is a time source tests move by hand.
type gcClock struct {
	mu sync.Mutex
	t  time.Time
}

func newGCClock() *gcClock { return &gcClock{t: time.Now()} }

func (c *gcClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *gcClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func (c *gcClock) Add(d time.Duration) { c.Set(c.Now().Add(d)) }

// gcIndexState is everything an Index says about a repository.
type gcIndexState struct {
	Blobs     []repository.IndexedBlob
	Packs     []repository.PackInfo
	Snapshots []repository.SnapshotInfo
}

func gcStateOf(t testing.TB, r *repository.Repository) gcIndexState {
	t.Helper()
	ctx := context.Background()
	var s gcIndexState
	idx := r.Index()
	if err := idx.Blobs(ctx, func(b repository.IndexedBlob) error { s.Blobs = append(s.Blobs, b); return nil }); err != nil {
		t.Fatalf("list blobs: %v", err)
	}
	if err := idx.Packs(ctx, func(p repository.PackInfo) error { s.Packs = append(s.Packs, p); return nil }); err != nil {
		t.Fatalf("list packs: %v", err)
	}
	snaps, err := idx.Snapshots(ctx)
	if err != nil {
		t.Fatalf("list snapshots: %v", err)
	}
	s.Snapshots = snaps
	return s
}

// gcObjects lists every object of the repository's backend: name → size.
// gcReachable returns the blobs a snapshot reaches.
func gcReachable(t testing.TB, r *repository.Repository, snapIDs ...string) map[blob.ID]struct{} {
	t.Helper()
	ctx := context.Background()
	seen := map[blob.ID]struct{}{}
	for _, id := range snapIDs {
		snap, err := r.LoadSnapshot(ctx, id)
		if err != nil {
			t.Fatalf("load snapshot %s: %v", id, err)
		}
		if err := r.Reach(ctx, []blob.ID{snap.Tree}, seen, func(blob.Type, blob.ID) error { return nil }); err != nil {
			t.Fatalf("reach snapshot %s: %v", id, err)
		}
	}
	return seen
}

func gcRun(t testing.TB, r *repository.Repository, o repository.GCOptions) *repository.GCReport {
	t.Helper()
	rep, err := r.GC(context.Background(), o)
	if err != nil {
		t.Fatalf("gc: %v", err)
	}
	return rep
}

func gcForget(t testing.TB, r *repository.Repository, id string) {
	t.Helper()
	if err := r.ForgetSnapshot(context.Background(), id); err != nil {
		t.Fatalf("forget %s: %v", id, err)
	}
}

func gcCheckFiles(t testing.TB, r *repository.Repository, snapID string, want repotest.Files) {
	t.Helper()
	got := repotest.ReadFiles(t, r, snapID)
	if diff := gcDiffFiles(want, got); diff != "" {
		t.Errorf("snapshot %s read back differently:\n%s", snapID, diff)
	}
}

// gcDiffFiles says how got differs from want, by path (cmp.Diff is too
// slow on megabytes under the race detector).
func gcDiffFiles(want, got repotest.Files) string {
	var d []string
	for p, w := range want {
		g, ok := got[p]
		switch {
		case !ok:
			d = append(d, fmt.Sprintf("%s: missing", p))
		case !bytes.Equal(w, g):
			d = append(d, fmt.Sprintf("%s: %d bytes differ from the %d written", p, len(g), len(w)))
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			d = append(d, fmt.Sprintf("%s: not written", p))
		}
	}
	slices.Sort(d)
	return strings.Join(d, "\n")
}

// gcIgnoreDuration compares reports without their timing.
var gcIgnoreDuration = cmpopts.IgnoreFields(repository.GCReport{}, "Duration")

// gcSharedScenario commits snapshot a (files under shared/) and snapshot b
// (the same files plus b/…, which fill packs of their own), and returns
// them with the files of a.
func gcSharedScenario(t testing.TB, r *repository.Repository, rng *rand.Rand) (a, b string, filesA repotest.Files) {
	t.Helper()
	filesA = repotest.Files{
		"shared/x":   gcRandom(rng, 200<<10),
		"shared/y":   gcRandom(rng, 100<<10),
		"shared/z/":  nil,
		"shared/w/v": gcRandom(rng, 5<<10),
	}
	filesB := repotest.Files{
		"b/1": gcRandom(rng, 700<<10),
		"b/2": gcRandom(rng, 900<<10),
		"b/3": gcRandom(rng, 300<<10),
	}
	for p, c := range filesA {
		filesB[p] = c
	}
	a, _ = repotest.WriteSnapshot(t, r, filesA)
	b, _ = repotest.WriteSnapshot(t, r, filesB)
	return a, b, filesA
}

func TestGCForgetSharedSnapshot(t *testing.T) {
	ctx := context.Background()
	r := repotest.New(t, repotest.Options{})
	a, b, filesA := gcSharedScenario(t, r, gcRNG(t))
	gcForget(t, r, b)

	before := gcStateOf(t, r)
	live := gcReachable(t, r, a)
	// What the collector should do, worked out from the index.
	packs := map[pack.ID]repository.PackInfo{}
	for _, p := range before.Packs {
		packs[p.ID] = p
	}
	liveIn, deadIn := map[pack.ID]int{}, map[pack.ID]int{}
	want := repository.GCReport{Snapshots: 1}
	for _, bl := range before.Blobs {
		if _, ok := live[bl.ID]; ok {
			want.LiveBlobs++
			liveIn[bl.Pack]++
		} else {
			want.DeadBlobs++
			deadIn[bl.Pack]++
		}
	}
	want.DeletedBlobs = want.DeadBlobs
	var doomedPacks []pack.ID
	for id, p := range packs {
		if liveIn[id] > 0 && deadIn[id] > 0 {
			t.Fatalf("pack %s mixes live and dead blobs: the scenario is not what this test needs", id)
		}
		if liveIn[id] == 0 {
			doomedPacks = append(doomedPacks, id)
			want.DeletedPacks++
			want.ReclaimedBytes += p.Size
		}
	}
	if want.LiveBlobs != len(live) || want.DeadBlobs < 5 || want.DeletedPacks < 2 {
		t.Fatalf("scenario: %d live blobs indexed of %d reachable, %d dead, %d packs to delete; want all reachable indexed, ≥5 dead, ≥2 packs",
			want.LiveBlobs, len(live), want.DeadBlobs, want.DeletedPacks)
	}
	objsBefore := repotest.Objects(t, r.Backend(), "")

	rep := gcRun(t, r, repository.GCOptions{})
	if diff := cmp.Diff(&want, rep, gcIgnoreDuration); diff != "" {
		t.Errorf("report (-want +got):\n%s", diff)
	}

	after := gcStateOf(t, r)
	for _, bl := range after.Blobs {
		if _, ok := live[bl.ID]; !ok {
			t.Errorf("blob %s only the forgotten snapshot used is still indexed", bl.ID.Short())
		}
	}
	if len(after.Blobs) != len(live) {
		t.Errorf("%d blobs indexed after GC, want the %d that snapshot %s reaches", len(after.Blobs), len(live), a)
	}
	objsAfter := repotest.Objects(t, r.Backend(), "")
	for _, id := range doomedPacks {
		if _, ok := objsAfter[id.Name()]; ok {
			t.Errorf("pack %s lost all its blobs but is still stored", id)
		}
		delete(objsBefore, id.Name())
	}
	delete(objsBefore, repository.SnapshotPrefix+b) // forgotten before GC
	if diff := cmp.Diff(objsBefore, objsAfter); diff != "" {
		t.Errorf("GC removed or added other objects (-want +got):\n%s", diff)
	}
	if got := len(after.Packs); got != len(before.Packs)-len(doomedPacks) {
		t.Errorf("%d packs indexed after GC, want %d", got, len(before.Packs)-len(doomedPacks))
	}
	gcCheckFiles(t, r, a, filesA)

	// A second collection finds nothing to do.
	rep = gcRun(t, r, repository.GCOptions{})
	if rep.DeletedBlobs != 0 || rep.DeletedPacks != 0 || rep.RepackedPacks != 0 || rep.ReclaimedBytes != 0 {
		t.Errorf("second GC did something: %+v", rep)
	}
	if _, err := r.LoadBlob(ctx, blob.Data, r.BlobID(filesA["shared/w/v"]), nil); err != nil {
		t.Errorf("load a live blob: %v", err)
	}
}

// gcRepackScenario commits a snapshot of ten 48 KiB files (one chunk each,
// all in one pack), then a snapshot of one of them, and forgets the first:
// its pack keeps one live blob in ten.
func gcRepackScenario(t testing.TB, r *repository.Repository, rng *rand.Rand) (old pack.ID, keep string, kept repotest.Files) {
	t.Helper()
	files := repotest.Files{}
	for i := range 10 {
		files[string(rune('a'+i))] = gcRandom(rng, 48<<10)
	}
	s1, root := repotest.WriteSnapshot(t, r, files)
	kept = repotest.Files{"dir/a-again": files["a"]}
	keep, _ = repotest.WriteSnapshot(t, r, kept)
	gcForget(t, r, s1)
	locs, err := r.Locate(context.Background(), []blob.ID{root, r.BlobID(files["a"])})
	if err != nil {
		t.Fatal(err)
	}
	if locs[root].Pack != locs[r.BlobID(files["a"])].Pack {
		t.Fatalf("the first snapshot is not in one pack")
	}
	return locs[root].Pack, keep, kept
}

func TestGCRepack(t *testing.T) {
	ctx := context.Background()
	t.Run("minority live", func(t *testing.T) {
		r := repotest.New(t, repotest.Options{})
		old, keep, kept := gcRepackScenario(t, r, gcRNG(t))
		id := r.BlobID(kept["dir/a-again"])
		before, err := r.Locate(ctx, []blob.ID{id})
		if err != nil {
			t.Fatal(err)
		}

		rep := gcRun(t, r, repository.GCOptions{})
		if rep.RepackedPacks != 1 || rep.MovedBlobs != 1 || rep.DeletedPacks != 0 || rep.DeletedBlobs != 10 {
			t.Errorf("report %+v: want 1 pack repacked, 1 blob moved, 10 blobs deleted, no pack deleted", rep)
		}
		if rep.WrittenBytes <= 0 || rep.ReclaimedBytes <= 0 {
			t.Errorf("report %+v: want written and reclaimed bytes", rep)
		}
		after, err := r.Locate(ctx, []blob.ID{id})
		if err != nil {
			t.Fatal(err)
		}
		if after[id].Pack == old || after[id].Pack == (pack.ID{}) {
			t.Errorf("live blob still in pack %s after repacking (was %s)", after[id].Pack, before[id].Pack)
		}
		if _, err := r.Backend().Stat(ctx, old.Name()); !errors.Is(err, blobstore.ErrNotFound) {
			t.Errorf("repacked pack still stored: stat says %v", err)
		}
		if _, err := r.Backend().Stat(ctx, after[id].Pack.Name()); err != nil {
			t.Errorf("new pack: %v", err)
		}
		for _, p := range gcStateOf(t, r).Packs {
			if p.ID == old {
				t.Errorf("repacked pack %s still indexed", old)
			}
		}
		got, err := r.ReadBlob(ctx, blob.Data, id, after[id], nil)
		if err != nil || !bytes.Equal(got, kept["dir/a-again"]) {
			t.Errorf("read the moved blob at its new location: %v", err)
		}
		gcCheckFiles(t, r, keep, kept)
	})
	for _, below := range []float64{-1} {
		t.Run(fmt.Sprintf("RepackBelow=%v", below), func(t *testing.T) {
			r := repotest.New(t, repotest.Options{})
			old, keep, kept := gcRepackScenario(t, r, gcRNG(t))
			rep := gcRun(t, r, repository.GCOptions{RepackBelow: below})
			// GCOptions documents "a negative value never repacks".
			if rep.RepackedPacks != 0 || rep.MovedBlobs != 0 || rep.WrittenBytes != 0 {
				t.Errorf("RepackBelow %v repacked: %+v", below, rep)
			}
			if rep.DeletedBlobs != 10 {
				t.Errorf("deleted %d blobs, want 10", rep.DeletedBlobs)
			}
			id := r.BlobID(kept["dir/a-again"])
			locs, err := r.Locate(ctx, []blob.ID{id})
			if err != nil {
				t.Fatal(err)
			}
			if locs[id].Pack != old {
				t.Errorf("live blob moved to pack %s", locs[id].Pack)
			}
			gcCheckFiles(t, r, keep, kept)
		})
	}
}

func TestGCDryRun(t *testing.T) {
	ctx := context.Background()
	// Orphans count in both runs: the clock is past the grace of every
	// object, and nothing writes meanwhile.
	later := func() time.Time { return time.Now().Add(48 * time.Hour) }
	cases := []struct {
		name  string
		setup func(t *testing.T, r *repository.Repository) (keep string, files repotest.Files)
	}{
		{"delete packs", func(t *testing.T, r *repository.Repository) (string, repotest.Files) {
			a, b, files := gcSharedScenario(t, r, gcRNG(t))
			gcForget(t, r, b)
			return a, files
		}},
		{"repack", func(t *testing.T, r *repository.Repository) (string, repotest.Files) {
			_, keep, files := gcRepackScenario(t, r, gcRNG(t))
			return keep, files
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := repotest.New(t, repotest.Options{})
			keep, files := c.setup(t, r)
			orphan := gcStoreOrphan(t, r, gcRNG(t))

			state, objs := gcStateOf(t, r), repotest.Objects(t, r.Backend(), "")
			dry := gcRun(t, r, repository.GCOptions{DryRun: true, RepackBelow: 0.5, Now: later})
			if diff := cmp.Diff(state, gcStateOf(t, r)); diff != "" {
				t.Errorf("dry run changed the index (-before +after):\n%s", diff)
			}
			if diff := cmp.Diff(objs, repotest.Objects(t, r.Backend(), "")); diff != "" {
				t.Errorf("dry run changed storage (-before +after):\n%s", diff)
			}
			if !dry.DryRun || dry.DeletedBlobs == 0 || dry.OrphanPacks != 1 {
				t.Errorf("dry run report %+v: want DryRun, blobs to delete and one orphan", dry)
			}

			// The bytes a repack keeps, to account for the new pack below.
			var keptInRepacked int64
			repacked := map[pack.ID]bool{}
			live := gcReachable(t, r, keep)
			for _, b := range state.Blobs {
				if _, ok := live[b.ID]; !ok {
					repacked[b.Pack] = true
				}
			}
			for _, b := range state.Blobs {
				if _, ok := live[b.ID]; ok && repacked[b.Pack] {
					keptInRepacked += int64(b.Length)
				}
			}

			done := gcRun(t, r, repository.GCOptions{RepackBelow: 0.5, Now: later})
			if _, err := r.Backend().Stat(ctx, orphan.Name()); !errors.Is(err, blobstore.ErrNotFound) {
				t.Errorf("orphan pack: stat says %v after GC, want not found", err)
			}
			// A dry run cannot know the size of the packs a repack writes:
			// it counts the live bytes of the repacked packs as what stays,
			// while the real run counts the new packs, whose headers and
			// trailers make them larger. Everything else is the same.
			wantReclaimed := done.ReclaimedBytes + done.WrittenBytes - keptInRepacked
			if done.RepackedPacks == 0 {
				wantReclaimed = done.ReclaimedBytes
			}
			want := *done
			want.DryRun = true
			want.ReclaimedBytes = wantReclaimed
			want.WrittenBytes = 0 // not estimated
			if diff := cmp.Diff(&want, dry, gcIgnoreDuration); diff != "" {
				t.Errorf("dry run report differs from what the real run did (-real, adjusted +dry):\n%s", diff)
			}
			gcCheckFiles(t, r, keep, files)
		})
	}
}

// gcStoreOrphan stores a pack the index never learns of and returns its id.
func gcStoreOrphan(t testing.TB, r *repository.Repository, rng *rand.Rand) pack.ID {
	t.Helper()
	plain := gcRandom(rng, 10<<10)
	id := r.BlobID(plain)
	stored, err := r.Codec().Encode(nil, blob.Data, id, plain, blob.Fastest)
	if err != nil {
		t.Fatal(err)
	}
	w := pack.NewWriter(r.Codec(), 1<<20)
	if _, err := w.Add(blob.Data, id, stored, len(plain)); err != nil {
		t.Fatal(err)
	}
	p := w.Finish()
	if err := r.Backend().Put(context.Background(), p.ID.Name(), bytes.NewReader(p.Data), int64(len(p.Data))); err != nil {
		t.Fatal(err)
	}
	return p.ID
}

func TestGCOrphanPacks(t *testing.T) {
	ctx := context.Background()
	rng := gcRNG(t)
	r := repotest.New(t, repotest.Options{})
	files := repotest.Files{"f": gcRandom(rng, 300<<10)}
	snap, _ := repotest.WriteSnapshot(t, r, files)
	orphan := gcStoreOrphan(t, r, rng)
	size := repotest.Objects(t, r.Backend(), "packs/")[orphan.Name()]
	indexed := repotest.Objects(t, r.Backend(), "packs/")
	delete(indexed, orphan.Name())

	at := func(d time.Duration) func() time.Time { return func() time.Time { return time.Now().Add(d) } }
	steps := []struct {
		name  string
		opts  repository.GCOptions
		keeps bool
	}{
		{"young", repository.GCOptions{}, true},
		{"just under the default grace", repository.GCOptions{Now: at(23 * time.Hour)}, true},
		{"under a longer grace", repository.GCOptions{Now: at(30 * time.Hour), OrphanGrace: 48 * time.Hour}, true},
		{"past the default grace", repository.GCOptions{Now: at(25 * time.Hour)}, false},
	}
	for _, s := range steps {
		rep := gcRun(t, r, s.opts)
		_, err := r.Backend().Stat(ctx, orphan.Name())
		switch {
		case s.keeps && (err != nil || rep.OrphanPacks != 0):
			t.Errorf("%s: orphan not kept (stat: %v, report %+v)", s.name, err, rep)
		case !s.keeps && (!errors.Is(err, blobstore.ErrNotFound) || rep.OrphanPacks != 1 || rep.ReclaimedBytes != size):
			t.Errorf("%s: orphan of %d bytes not deleted (stat: %v, report %+v)", s.name, size, err, rep)
		}
	}
	// Indexed packs are as old, and stay.
	after := repotest.Objects(t, r.Backend(), "packs/")
	if diff := cmp.Diff(indexed, after); diff != "" {
		t.Errorf("indexed packs changed (-before +after):\n%s", diff)
	}
	gcCheckFiles(t, r, snap, files)
}

func TestGCSparesBlobsTouchedByRunningWriter(t *testing.T) {
	ctx := context.Background()
	rng := gcRNG(t)
	r := repotest.New(t, repotest.Options{})
	// Both below the chunker's minimum, so each is one blob whose id is
	// BlobID of the content.
	old := repotest.Files{"a": gcRandom(rng, 60<<10), "b": gcRandom(rng, 30<<10)}
	s1, root1 := repotest.WriteSnapshot(t, r, old)
	// A collection while the snapshot lives advances the epoch past the
	// one its blobs were touched at; a session that began at that epoch
	// would spare them all.
	if rep := gcRun(t, r, repository.GCOptions{}); rep.DeletedBlobs != 0 {
		t.Fatalf("GC deleted %d blobs of a live snapshot", rep.DeletedBlobs)
	}

	w, err := r.NewWriter(ctx, repository.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if w != nil {
			w.Close()
		}
	}()
	gcForget(t, r, s1)
	// The running backup is told a and b are stored (Missing touches them),
	// and writes c and its own root tree.
	files := repotest.Files{"a": old["a"], "b": old["b"], "c": gcRandom(rng, 20<<10)}
	root2, err := repotest.StoreTree(ctx, r, w, files)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	touched := len(gcStateOf(t, r).Blobs) - 1 // all but the first root tree

	for i := range 2 { // the second GC runs at a later epoch
		rep := gcRun(t, r, repository.GCOptions{RepackBelow: 1})
		wantDeleted := 0
		if i == 0 {
			wantDeleted = 1
		}
		if rep.DeletedBlobs != wantDeleted || rep.KeptTouched != touched || rep.LiveBlobs != 0 {
			t.Errorf("GC %d: report %+v: want %d deleted (the old root tree), %d kept as touched", i+1, rep, wantDeleted, touched)
		}
	}
	locs, err := r.Locate(ctx, []blob.ID{root1, r.BlobID(old["a"]), r.BlobID(old["b"]), root2})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := locs[root1]; ok {
		t.Errorf("the forgotten snapshot's root tree, which no one touched, is still indexed")
	}
	if len(locs) != 3 {
		t.Errorf("blobs the running backup relies on were deleted: %d of 3 left", len(locs))
	}

	snap, err := w.Commit(ctx, &tree.Snapshot{Version: 1, Time: time.Now().UTC(), Tree: root2, Hostname: "h", Paths: []string{"/"}})
	if err != nil {
		t.Fatalf("commit: %v", err)
	}
	gcCheckFiles(t, r, snap, files)
	if err := w.Close(); err != nil {
		t.Errorf("close writer: %v", err)
	}
	w = nil
	if rep := gcRun(t, r, repository.GCOptions{}); rep.DeletedBlobs != 0 || rep.LiveBlobs != touched {
		t.Errorf("GC after the commit: %+v, want nothing deleted and %d live", rep, touched)
	}
	gcCheckFiles(t, r, snap, files)
}

func TestGCCommitAfterBlobsCollected(t *testing.T) {
	ctx := context.Background()
	// Each case builds the new root from the forgotten snapshot's nodes
	// without asking Missing, and says which blobs the commit must name.
	cases := []struct {
		name string
		root func(dir []tree.Node, dirID blob.ID) (tree.Node, []blob.ID)
	}{
		{"data blobs", func(dir []tree.Node, _ blob.ID) (tree.Node, []blob.ID) {
			return dir[0], dir[0].Content
		}},
		{"subtree", func(_ []tree.Node, dirID blob.ID) (tree.Node, []blob.ID) {
			return tree.Node{Name: "d", Type: tree.Dir, Mode: 0o755, ModTime: time.Unix(1, 0).UTC(), Subtree: dirID}, []blob.ID{dirID}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rng := gcRNG(t)
			clk := newGCClock()
			r := repotest.New(t, repotest.Options{Index: memindex.New(memindex.Options{Now: clk.Now})})
			s1, root1 := repotest.WriteSnapshot(t, r, repotest.Files{"d/a": gcRandom(rng, 200<<10)})
			top, err := r.LoadDir(ctx, root1)
			if err != nil {
				t.Fatal(err)
			}
			dir, err := r.LoadDir(ctx, top[0].Subtree)
			if err != nil {
				t.Fatal(err)
			}

			w, err := r.NewWriter(ctx, repository.WriterOptions{SessionTTL: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			gcForget(t, r, s1)
			clk.Add(2 * time.Hour) // the session lapses, so GC no longer spares its epoch
			if rep := gcRun(t, r, repository.GCOptions{}); rep.DeletedBlobs != len(dir[0].Content)+2 {
				t.Fatalf("GC deleted %d blobs, want all of the forgotten snapshot's", rep.DeletedBlobs)
			}
			snapsBefore := repotest.Objects(t, r.Backend(), repository.SnapshotPrefix)

			node, want := c.root(dir, top[0].Subtree)
			enc, err := (&tree.Tree{Nodes: []tree.Node{node}}).Encode()
			if err != nil {
				t.Fatal(err)
			}
			rootID := r.TreeID(enc)
			if _, err := w.Save(ctx, blob.Tree, rootID, enc, blob.Fastest); err != nil {
				t.Fatal(err)
			}
			_, err = w.Commit(ctx, &tree.Snapshot{Version: 1, Time: time.Now().UTC(), Tree: rootID, Hostname: "h", Paths: []string{"/"}})
			var missing *repository.MissingBlobsError
			if !errors.As(err, &missing) {
				t.Fatalf("commit: %v, want a *MissingBlobsError", err)
			}
			if diff := cmp.Diff(want, missing.IDs, cmpopts.SortSlices(func(a, b blob.ID) bool { return bytes.Compare(a[:], b[:]) < 0 })); diff != "" {
				t.Errorf("missing blobs (-want +got):\n%s", diff)
			}
			if snaps, err := r.Snapshots(ctx); err != nil || len(snaps) != 0 {
				t.Errorf("snapshots after the refused commit: %d (%v), want none", len(snaps), err)
			}
			if diff := cmp.Diff(snapsBefore, repotest.Objects(t, r.Backend(), repository.SnapshotPrefix)); diff != "" {
				t.Errorf("manifest objects after the refused commit (-before +after):\n%s", diff)
			}
		})
	}
}

func TestGCLease(t *testing.T) {
	ctx := context.Background()
	rng := gcRNG(t)
	clk := newGCClock()
	idx := memindex.New(memindex.Options{Now: clk.Now})
	r := repotest.New(t, repotest.Options{Index: idx})
	s1, _ := repotest.WriteSnapshot(t, r, repotest.Files{"a": gcRandom(rng, 50<<10)})
	gcForget(t, r, s1)

	if _, err := idx.BeginGC(ctx, "other server", time.Hour); err != nil {
		t.Fatal(err)
	}
	state, objs := gcStateOf(t, r), repotest.Objects(t, r.Backend(), "")
	if _, err := r.GC(ctx, repository.GCOptions{}); !errors.Is(err, repository.ErrGCRunning) {
		t.Fatalf("GC while another holds the lease: %v, want ErrGCRunning", err)
	}
	if diff := cmp.Diff(state, gcStateOf(t, r)); diff != "" {
		t.Errorf("a refused GC changed the index:\n%s", diff)
	}
	if diff := cmp.Diff(objs, repotest.Objects(t, r.Backend(), "")); diff != "" {
		t.Errorf("a refused GC changed storage:\n%s", diff)
	}

	clk.Add(2 * time.Hour) // the other lease ran out
	if rep := gcRun(t, r, repository.GCOptions{}); rep.DeletedBlobs != 2 || rep.DeletedPacks != 1 {
		t.Errorf("GC after the lease ran out: %+v, want 2 blobs and 1 pack deleted", rep)
	}
	// GC released its lease.
	if _, err := idx.BeginGC(ctx, "other server", time.Hour); err != nil {
		t.Errorf("begin another GC after GC ended: %v", err)
	}
}

func TestGCMarkFailureDeletesNothing(t *testing.T) {
	ctx := context.Background()
	rng := gcRNG(t)
	r := repotest.New(t, repotest.Options{})
	s1, _ := repotest.WriteSnapshot(t, r, repotest.Files{"a": gcRandom(rng, 300<<10)})
	_, root2 := repotest.WriteSnapshot(t, r, repotest.Files{"b": gcRandom(rng, 300<<10)})
	gcForget(t, r, s1)
	locs, err := r.Locate(ctx, []blob.ID{root2})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Backend().Delete(ctx, locs[root2].Pack.Name()); err != nil {
		t.Fatal(err)
	}

	state, objs := gcStateOf(t, r), repotest.Objects(t, r.Backend(), "")
	later := func() time.Time { return time.Now().Add(48 * time.Hour) }
	_, err = r.GC(ctx, repository.GCOptions{RepackBelow: 1, Now: later})
	if !errors.Is(err, blobstore.ErrNotFound) {
		t.Errorf("GC with a snapshot's root tree gone: %v, want an error matching blobstore.ErrNotFound", err)
	}
	if diff := cmp.Diff(state, gcStateOf(t, r)); diff != "" {
		t.Errorf("a failed mark changed the index:\n%s", diff)
	}
	if diff := cmp.Diff(objs, repotest.Objects(t, r.Backend(), "")); diff != "" {
		t.Errorf("a failed mark changed storage:\n%s", diff)
	}
}

// Two backups that store the same new blob at once both write it; the index
// keeps the first copy, and the second is dead weight in its pack, which GC
// should reclaim like any garbage (see Index).
func TestGCReclaimsDuplicateCopies(t *testing.T) {
	ctx := context.Background()
	rng := gcRNG(t)
	r := repotest.New(t, repotest.Options{})
	big := gcRandom(rng, 60<<10) // one chunk
	files1 := repotest.Files{"x": big}
	files2 := repotest.Files{"x": big, "y": gcRandom(rng, 4<<10)}
	w1, err := r.NewWriter(ctx, repository.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w1.Close()
	w2, err := r.NewWriter(ctx, repository.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	// Both ask Missing before either has indexed anything.
	root1, err := repotest.StoreTree(ctx, r, w1, files1)
	if err != nil {
		t.Fatal(err)
	}
	root2, err := repotest.StoreTree(ctx, r, w2, files2)
	if err != nil {
		t.Fatal(err)
	}
	snap := func(w *repository.Writer, root blob.ID) string {
		id, err := w.Commit(ctx, &tree.Snapshot{Version: 1, Time: time.Now().UTC(), Tree: root, Hostname: "h", Paths: []string{"/"}})
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	s1, s2 := snap(w1, root1), snap(w2, root2)
	locs, err := r.Locate(ctx, []blob.ID{r.BlobID(big), root2})
	if err != nil {
		t.Fatal(err)
	}
	p2 := locs[root2].Pack
	if locs[r.BlobID(big)].Pack == p2 {
		t.Fatal("the second backup's copy was indexed: the scenario did not happen")
	}
	var size int64
	for _, p := range gcStateOf(t, r).Packs {
		if p.ID == p2 {
			size = p.Size
		}
	}
	rows, err := r.Index().PackBlobs(ctx, p2)
	if err != nil {
		t.Fatal(err)
	}
	var live int64
	for _, b := range rows {
		live += int64(b.Length)
	}
	if live*4 > size {
		t.Fatalf("pack %s: %d of %d bytes live; the test needs under a quarter", p2, live, size)
	}

	rep := gcRun(t, r, repository.GCOptions{RepackBelow: 0.5})
	if rep.RepackedPacks != 1 || rep.DeletedBlobs != 0 {
		t.Errorf("GC: %+v; want the pack holding the unindexed copy (%d of %d bytes live) repacked", rep, live, size)
	}
	if _, err := r.Backend().Stat(ctx, p2.Name()); !errors.Is(err, blobstore.ErrNotFound) {
		t.Errorf("pack %s with %d of %d bytes live is still stored (stat: %v)", p2, live, size, err)
	}
	gcCheckFiles(t, r, s1, files1)
	gcCheckFiles(t, r, s2, files2)
}
