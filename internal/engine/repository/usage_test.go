package repository_test

import (
	"context"
	"errors"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/blobstore"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
	"github.com/cofferhq/coffer/internal/engine/tree"
	"github.com/google/go-cmp/cmp"
)

// usageLab is a repository of three snapshots that share files:
//
//	s0: shared/a.bin (A), one/b.bin (B), same.txt, solo.bin (E)
//	s1: shared/a.bin (A), two/c.bin (C), same.txt
//	s2: one/b.bin (B), three/d.bin (D)
//
// so that s0 shares A and same.txt with s1, B and the tree of one/ with
// s2, and holds E and its root tree alone.
type usageLab struct {
	r     *repository.Repository
	snaps []string
	files []repotest.Files
}

func newUsageLab(t *testing.T, encrypted bool) *usageLab {
	t.Helper()
	a, b, c, d, e := repotest.Random(51, 900<<10), repotest.Random(52, 700<<10), repotest.Random(53, 600<<10),
		repotest.Random(54, 400<<10), repotest.Random(55, 300<<10)
	l := &usageLab{r: repotest.New(t, repotest.Options{Encrypted: encrypted}), files: []repotest.Files{
		{"shared/a.bin": a, "one/b.bin": b, "same.txt": []byte("same"), "solo.bin": e},
		{"shared/a.bin": a, "two/c.bin": c, "same.txt": []byte("same")},
		{"one/b.bin": b, "three/d.bin": d},
	}}
	for _, files := range l.files {
		id, _ := repotest.WriteSnapshot(t, l.r, files)
		l.snaps = append(l.snaps, id)
	}
	return l
}

// logical is the size of snapshot i's files.
func (l *usageLab) logical(i int) int64 {
	var n int64
	for _, content := range l.files[i] {
		n += int64(len(content))
	}
	return n
}

// reach returns the blobs the snapshots reach and their stored sizes, as
// the index reports them.
func (l *usageLab) reach(t *testing.T, ids ...string) map[blob.ID]int64 {
	t.Helper()
	ctx := context.Background()
	seen := map[blob.ID]struct{}{}
	for _, id := range ids {
		snap, err := l.r.LoadSnapshot(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.r.Reach(ctx, []blob.ID{snap.Tree}, seen, func(blob.Type, blob.ID) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	list := slices.Collect(maps.Keys(seen))
	locs, err := l.r.Locate(ctx, list)
	if err != nil || len(locs) != len(list) {
		t.Fatalf("locate %d blobs: %d found, %v", len(list), len(locs), err)
	}
	out := map[blob.ID]int64{}
	for id, loc := range locs {
		out[id] = int64(loc.Length)
	}
	return out
}

// want computes the usage of snapshots set (indexes into l.snaps) from the
// blobs each side reaches, with only the snapshots live still committed.
func (l *usageLab) want(t *testing.T, live []int, set ...int) *repository.SetUsage {
	t.Helper()
	var in, out []string
	u := &repository.SetUsage{Snapshots: len(set)}
	for _, i := range live {
		if slices.Contains(set, i) {
			in = append(in, l.snaps[i])
			u.LogicalBytes += l.logical(i)
		} else {
			out = append(out, l.snaps[i])
		}
	}
	outside := l.reach(t, out...)
	for id, n := range l.reach(t, in...) {
		if _, ok := outside[id]; ok {
			u.SharedBlobs++
			u.SharedBytes += n
		} else {
			u.UniqueBlobs++
			u.UniqueBytes += n
		}
	}
	return u
}

func (l *usageLab) ids(set ...int) []string {
	var out []string
	for _, i := range set {
		out = append(out, l.snaps[i])
	}
	return out
}

func TestUsageSets(t *testing.T) {
	for _, encrypted := range []bool{false, true} {
		t.Run(vfEncName(encrypted), func(t *testing.T) {
			l := newUsageLab(t, encrypted)
			ctx := context.Background()
			everyone := []int{0, 1, 2}
			for _, set := range [][]int{{0}, {1}, {2}, {0, 1}, {0, 2}, {0, 1, 2}, {}} {
				got, err := l.r.SetUsage(ctx, l.ids(set...))
				if err != nil {
					t.Fatal(err)
				}
				if d := cmp.Diff(l.want(t, everyone, set...), got); d != "" {
					t.Errorf("usage of %v (-want +got):\n%s", set, d)
				}
			}

			// s0 alone holds E's chunks and its root tree; the rest is shared.
			got, err := l.r.SetUsage(ctx, l.ids(0, 0))
			if err != nil {
				t.Fatal(err)
			}
			vl := &vfLab{t: t, r: l.r, chunks: map[string][]blob.ID{}}
			if n := len(vl.chunksOf(l.files[0]["solo.bin"])) + 1; got.UniqueBlobs != n || got.Snapshots != 1 || got.SharedBytes == 0 {
				t.Errorf("usage of s0 = %+v; want %d unique blobs, some shared, one snapshot", got, n)
			}

			groups, err := l.r.GroupUsage(ctx, map[string][]string{"first": l.ids(0), "second": l.ids(1), "none": nil})
			if err != nil {
				t.Fatal(err)
			}
			wantGroups := map[string]*repository.SetUsage{"first": l.want(t, everyone, 0), "second": l.want(t, everyone, 1), "none": {}}
			if d := cmp.Diff(wantGroups, groups); d != "" {
				t.Errorf("group usage (-want +got):\n%s", d)
			}

			if _, err := l.r.SetUsage(ctx, []string{l.snaps[0], "no-such-snapshot"}); !errors.Is(err, repository.ErrSnapshotNotFound) {
				t.Errorf("unknown snapshot: %v", err)
			}
			if _, err := l.r.GroupUsage(ctx, map[string][]string{"x": l.ids(0, 1), "y": l.ids(1)}); err == nil {
				t.Error("overlapping sets: no error")
			}
		})
	}
}

// usageStorage sums the pack objects in storage.
func usageStorage(t *testing.T, b blobstore.Backend) (packs int, size int64) {
	t.Helper()
	for _, n := range repotest.Objects(t, b, "packs/") {
		packs++
		size += n
	}
	return packs, size
}

func TestUsageForgetAndGC(t *testing.T) {
	l := newUsageLab(t, true)
	ctx := context.Background()
	before, err := l.r.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	all := l.reach(t, l.snaps...)
	var blobBytes int64
	for _, n := range all {
		blobBytes += n
	}
	packs, stored := usageStorage(t, l.r.Backend())
	logical := l.logical(0) + l.logical(1) + l.logical(2)
	want := &repository.Usage{StoredBytes: stored, Packs: packs, Blobs: len(all), BlobBytes: blobBytes,
		LogicalBytes: logical, Snapshots: 3, DedupRatio: float64(logical) / float64(blobBytes)}
	if d := cmp.Diff(want, before); d != "" {
		t.Errorf("usage (-want +got):\n%s", d)
	}

	freed, err := l.r.SetUsage(ctx, l.ids(0))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.r.ForgetSnapshot(ctx, l.snaps[0]); err != nil {
		t.Fatal(err)
	}
	// No repacking: it re-encodes blobs, which changes their sizes.
	rep, err := l.r.GC(ctx, repository.GCOptions{RepackBelow: -1})
	if err != nil {
		t.Fatal(err)
	}
	if rep.DeletedBlobs != freed.UniqueBlobs {
		t.Errorf("GC deleted %d blobs; SetUsage said forgetting s0 frees %d", rep.DeletedBlobs, freed.UniqueBlobs)
	}
	after, err := l.r.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	packs, stored = usageStorage(t, l.r.Backend())
	logical -= l.logical(0)
	want = &repository.Usage{StoredBytes: stored, Packs: packs, Blobs: before.Blobs - freed.UniqueBlobs,
		BlobBytes: before.BlobBytes - freed.UniqueBytes, LogicalBytes: logical, Snapshots: 2,
		DedupRatio: float64(logical) / float64(before.BlobBytes-freed.UniqueBytes)}
	if d := cmp.Diff(want, after); d != "" {
		t.Errorf("usage after GC (-want +got):\n%s", d)
	}
	if stored != before.StoredBytes-rep.ReclaimedBytes {
		t.Errorf("storage holds %d bytes; %d before, %d reclaimed", stored, before.StoredBytes, rep.ReclaimedBytes)
	}
	for _, set := range [][]int{{1}, {2}, {1, 2}} {
		got, err := l.r.SetUsage(ctx, l.ids(set...))
		if err != nil {
			t.Fatal(err)
		}
		w := l.want(t, []int{1, 2}, set...)
		if d := cmp.Diff(w, got); d != "" {
			t.Errorf("usage of %v after GC (-want +got):\n%s", set, d)
		}
	}
}

func TestUsageLogicalFromStats(t *testing.T) {
	r := repotest.New(t, repotest.Options{})
	ctx := context.Background()
	walked, _ := repotest.WriteSnapshot(t, r, repotest.Files{"a": []byte("12345"), "d/b": []byte("123"), "d/e/": nil})
	w, err := r.NewWriter(ctx, repository.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	root, err := repotest.StoreTree(ctx, r, w, repotest.Files{"x": []byte("1234567")})
	if err != nil {
		t.Fatal(err)
	}
	stated, err := w.Commit(ctx, &tree.Snapshot{Version: tree.SnapshotVersion, Time: time.Now().UTC(), Tree: root,
		Hostname: "test", Paths: []string{"/"}, Stats: tree.SnapshotStats{Files: 1, Bytes: 12345}})
	if err != nil {
		t.Fatal(err)
	}
	u, err := r.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if u.LogicalBytes != 8+12345 || u.Snapshots != 2 {
		t.Errorf("usage = %+v; want 8 bytes walked plus 12345 from the stats", u)
	}
	for id, want := range map[string]int64{walked: 8, stated: 12345} {
		s, err := r.SetUsage(ctx, []string{id})
		if err != nil || s.LogicalBytes != want {
			t.Errorf("logical bytes of %s = %v, %v; want %d", id, s, err, want)
		}
	}
}
