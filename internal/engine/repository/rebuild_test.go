package repository_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/blobstore"
	"github.com/cofferhq/coffer/internal/engine/blobstore/mem"
	"github.com/cofferhq/coffer/internal/engine/pack"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/repository/memindex"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
	"github.com/cofferhq/coffer/internal/engine/tree"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// commitAt stores files and commits them as a snapshot taken at when.
func commitAt(t *testing.T, r *repository.Repository, files repotest.Files, when time.Time) string {
	t.Helper()
	ctx := context.Background()
	w, err := r.NewWriter(ctx, repository.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	root, err := repotest.StoreTree(ctx, r, w, files)
	if err != nil {
		t.Fatal(err)
	}
	id, err := w.Commit(ctx, &tree.Snapshot{Version: tree.SnapshotVersion, Time: when, Tree: root, Hostname: "test", Paths: []string{"/"}})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// state is everything an index says about a repository, minus the times
// it stamps itself.
type state struct {
	Packs     []repository.PackInfo
	Blobs     []repository.IndexedBlob
	Snapshots []repository.SnapshotInfo
	Files     map[string]repotest.Files
}

func stateOf(t *testing.T, r *repository.Repository) state {
	t.Helper()
	ctx := context.Background()
	var s state
	idx := r.Index()
	if err := idx.Packs(ctx, func(p repository.PackInfo) error { s.Packs = append(s.Packs, p); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := idx.Blobs(ctx, func(b repository.IndexedBlob) error { s.Blobs = append(s.Blobs, b); return nil }); err != nil {
		t.Fatal(err)
	}
	snaps, err := r.Snapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.Snapshots = snaps
	s.Files = map[string]repotest.Files{}
	for _, sn := range snaps {
		s.Files[sn.ID] = repotest.ReadFiles(t, r, sn.ID)
	}
	return s
}

// contentOnly compares what the rebuilt index must reproduce: locations,
// pack sizes and snapshots, not when rows were added or touched.
var contentOnly = cmp.Options{
	cmpopts.IgnoreFields(repository.PackInfo{}, "AddedAt"),
	cmpopts.IgnoreFields(repository.IndexedBlob{}, "Touched"),
	sameBytes,
}

// sameBytes compares byte slices whole: element by element, megabytes of
// file content take cmp minutes.
var sameBytes = cmp.Comparer(bytes.Equal)

// sampleFiles are three snapshots' worth of files: several packs (1 MiB
// packs), shared content, an empty directory.
func writeSamples(t *testing.T, r *repository.Repository) []string {
	shared := repotest.Random(1, 700<<10)
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	return []string{
		commitAt(t, r, repotest.Files{"etc/hosts": []byte("127.0.0.1 localhost\n"), "var/big": shared, "home/": nil}, base),
		commitAt(t, r, repotest.Files{"etc/hosts": []byte("127.0.0.1 localhost\n"), "var/big": shared,
			"var/other": repotest.Random(2, 1500<<10)}, base.Add(time.Hour)),
		commitAt(t, r, repotest.Files{"a/b/c/deep": repotest.Random(3, 300<<10), "a/copy": shared, "empty": {}}, base.Add(2*time.Hour)),
	}
}

func TestRebuild(t *testing.T) {
	for _, encrypted := range []bool{false, true} {
		t.Run(vfEncName(encrypted), func(t *testing.T) {
			ctx := context.Background()
			backend, key := mem.New(mem.Options{Name: t.Name()}), repotest.MasterKey()
			a := repotest.New(t, repotest.Options{Backend: backend, MasterKey: key, Encrypted: encrypted})
			ids := writeSamples(t, a)
			want := stateOf(t, a)
			if len(want.Packs) < 3 || len(want.Snapshots) != len(ids) {
				t.Fatalf("the sample made %d packs and %d snapshots", len(want.Packs), len(want.Snapshots))
			}

			b, err := repository.Open(ctx, backend, memindex.New(memindex.Options{}), key)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			rep, err := b.Rebuild(ctx, repository.RebuildOptions{Concurrency: 3})
			if err != nil {
				t.Fatal(err)
			}
			wantRep := &repository.RebuildReport{Packs: len(want.Packs), PacksAdded: len(want.Packs), BlobsAdded: len(want.Blobs),
				Snapshots: len(ids), SnapshotsAdded: len(ids)}
			if d := cmp.Diff(wantRep, rep, cmpopts.IgnoreFields(repository.RebuildReport{}, "Duration"), cmpopts.EquateEmpty()); d != "" {
				t.Errorf("report (-want +got):\n%s", d)
			}
			if !rep.Clean() {
				t.Error("a clean rebuild is not Clean")
			}
			got := stateOf(t, b)
			if d := cmp.Diff(want, got, contentOnly); d != "" {
				t.Errorf("rebuilt index differs (-want +got):\n%s", d)
			}
			for _, p := range got.Packs {
				info, err := backend.Stat(ctx, p.ID.Name())
				if err != nil || !p.AddedAt.Equal(info.ModTime.UTC().Truncate(time.Microsecond)) {
					t.Errorf("pack %s added at %v, stored at %v (%v)", p.ID, p.AddedAt, info.ModTime, err)
				}
			}

			// Again: nothing to add, and no row changes, not even a touch.
			rep, err = b.Rebuild(ctx, repository.RebuildOptions{})
			if err != nil {
				t.Fatal(err)
			}
			wantRep = &repository.RebuildReport{Packs: len(want.Packs), PacksIndexed: len(want.Packs), Snapshots: len(ids), SnapshotsIndexed: len(ids)}
			if d := cmp.Diff(wantRep, rep, cmpopts.IgnoreFields(repository.RebuildReport{}, "Duration"), cmpopts.EquateEmpty()); d != "" {
				t.Errorf("second report (-want +got):\n%s", d)
			}
			if d := cmp.Diff(got, stateOf(t, b), sameBytes); d != "" {
				t.Errorf("the second rebuild changed the index (-before +after):\n%s", d)
			}

			// The rebuilt repository takes new backups that dedup against
			// the old ones.
			again := commitAt(t, b, repotest.Files{"var/big": want.Files[ids[0]]["var/big"]}, time.Now().UTC())
			if files := repotest.ReadFiles(t, b, again); !bytes.Equal(files["var/big"], want.Files[ids[0]]["var/big"]) {
				t.Error("a backup after the rebuild reads back wrong")
			}
		})
	}
}

// TestRebuildPartialIndex: an index that already holds part of the
// repository (the database restored from an older copy) gets the rest.
func TestRebuildPartialIndex(t *testing.T) {
	ctx := context.Background()
	backend, key := mem.New(mem.Options{Name: t.Name()}), repotest.MasterKey()
	a := repotest.New(t, repotest.Options{Backend: backend, MasterKey: key})
	shared := repotest.Random(10, 900<<10)
	first := commitAt(t, a, repotest.Files{"x": shared}, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))

	// The older copy of the database: it knows only the first snapshot.
	old := memindex.New(memindex.Options{})
	b, err := repository.Open(ctx, backend, old, key)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.Rebuild(ctx, repository.RebuildOptions{}); err != nil {
		t.Fatal(err)
	}
	partial := stateOf(t, b)

	commitAt(t, a, repotest.Files{"x": shared, "y": repotest.Random(11, 1200<<10)}, time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC))
	want := stateOf(t, a)
	rep, err := b.Rebuild(ctx, repository.RebuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.PacksIndexed != len(partial.Packs) || rep.PacksAdded != len(want.Packs)-len(partial.Packs) ||
		rep.BlobsAdded != len(want.Blobs)-len(partial.Blobs) || rep.SnapshotsIndexed != 1 || rep.SnapshotsAdded != 1 || !rep.Clean() {
		t.Errorf("report = %+v (the old index had %d packs, the repository has %d)", rep, len(partial.Packs), len(want.Packs))
	}
	if d := cmp.Diff(want, stateOf(t, b), contentOnly); d != "" {
		t.Errorf("rebuilt index differs (-want +got):\n%s", d)
	}
	if _, ok := want.Files[first]; !ok {
		t.Error("the first snapshot is gone")
	}
}

// TestRebuildDuplicates: a blob stored in two packs (two writers raced) is
// indexed once and counted as a duplicate.
func TestRebuildDuplicates(t *testing.T) {
	ctx := context.Background()
	backend, key := mem.New(mem.Options{Name: t.Name()}), repotest.MasterKey()
	a := repotest.New(t, repotest.Options{Backend: backend, MasterKey: key})
	x, y, z := repotest.Random(40, 100<<10), repotest.Random(41, 100<<10), repotest.Random(42, 100<<10)
	for _, blobs := range [][][]byte{{x, y}, {x, z}} {
		w, err := a.NewWriter(ctx, repository.WriterOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range blobs {
			if _, err := w.Save(ctx, blob.Data, a.BlobID(b), b, blob.Fastest); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		w.Close()
	}
	if n := len(repotest.Objects(t, backend, "packs/")); n != 2 {
		t.Fatalf("%d packs, want 2", n)
	}
	b, err := repository.Open(ctx, backend, memindex.New(memindex.Options{}), key)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	rep, err := b.Rebuild(ctx, repository.RebuildOptions{Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	if rep.PacksAdded != 2 || rep.BlobsAdded != 3 || rep.DuplicateBlobs != 1 || !rep.Clean() {
		t.Errorf("report = %+v, want 2 packs, 3 blobs, 1 duplicate", rep)
	}
	for _, want := range [][]byte{x, y, z} {
		got, err := b.LoadBlob(ctx, blob.Data, b.BlobID(want), nil)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("load blob after the rebuild: %v", err)
		}
	}
}

func put(t *testing.T, b blobstore.Backend, name string, data []byte) {
	t.Helper()
	if err := b.Put(context.Background(), name, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
}

func skippedIDs(rep *repository.RebuildReport) []string {
	var ids []string
	for _, s := range rep.SkippedSnapshots {
		ids = append(ids, s.ID)
	}
	slices.Sort(ids)
	return ids
}

// TestRebuildDamage: a pack with a damaged trailer is reported and skipped,
// and so is every snapshot that needs it, a manifest whose tree was never
// stored (left by a crash), and a manifest that does not authenticate. The
// rest is rebuilt.
func TestRebuildDamage(t *testing.T) {
	ctx := context.Background()
	backend, key := mem.New(mem.Options{Name: t.Name()}), repotest.MasterKey()
	a := repotest.New(t, repotest.Options{Backend: backend, MasterKey: key, Encrypted: true})
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	keep := commitAt(t, a, repotest.Files{"kept/file": repotest.Random(20, 600<<10), "kept/small": []byte("hello")}, base)
	keepFiles := repotest.ReadFiles(t, a, keep)

	before := repotest.Objects(t, backend, "packs/")
	lostFiles := repotest.Files{"lost/one": repotest.Random(21, 1100<<10), "lost/two": repotest.Random(22, 900<<10)}
	lost := commitAt(t, a, lostFiles, base.Add(time.Hour))
	// The same tree again, later: it needs the damaged pack just as much,
	// though its trees were all walked (and found) for the first one.
	lostAgain := commitAt(t, a, lostFiles, base.Add(2*time.Hour))

	// Damage a pack of the second backup that holds data blobs only, so
	// those snapshots' trees stay readable and only their data is lost.
	var victim pack.ID
	for name := range repotest.Objects(t, backend, "packs/") {
		if _, ok := before[name]; ok {
			continue
		}
		id, err := pack.ParseName(name)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := a.Index().PackBlobs(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(rows, func(b repository.IndexedBlob) bool { return b.Type == blob.Tree }) {
			victim = id
		}
	}
	if victim == (pack.ID{}) {
		t.Fatal("the second backup made no pack of data blobs only")
	}
	repotest.Replace(t, backend, victim.Name(), func(b []byte) []byte {
		b[len(b)-pack.FooterSize-10] ^= 1 // inside the sealed trailer
		return b
	})
	put(t, backend, "packs/zz/not-a-pack", []byte("stray"))

	// A manifest whose tree was never stored, as a crash between writing
	// the manifest and storing its blobs would leave.
	orphanTree := a.BlobID([]byte("a tree that was never stored"))
	manifest, err := (&tree.Snapshot{Version: tree.SnapshotVersion, Time: base.Add(3 * time.Hour), Tree: orphanTree,
		Hostname: "test", Paths: []string{"/"}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	crashed := a.BlobID(manifest).String()
	put(t, backend, repository.SnapshotPrefix+crashed, a.Codec().Seal(nil, "snapshot v1", manifest))

	// A manifest changed in storage.
	tampered := commitAt(t, a, repotest.Files{"t": []byte("tampered")}, base.Add(4*time.Hour))
	repotest.Replace(t, backend, repository.SnapshotPrefix+tampered, func(b []byte) []byte { b[len(b)/2] ^= 1; return b })

	b, err := repository.Open(ctx, backend, memindex.New(memindex.Options{}), key)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for run := range 2 {
		rep, err := b.Rebuild(ctx, repository.RebuildOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Clean() {
			t.Fatal("a damaged repository rebuilt Clean")
		}
		var damaged []string
		for _, d := range rep.DamagedPacks {
			damaged = append(damaged, d.Name)
		}
		if want := []string{victim.Name(), "packs/zz/not-a-pack"}; !slices.Equal(damaged, want) {
			t.Errorf("run %d: damaged packs %v, want %v", run, rep.DamagedPacks, want)
		}
		if len(rep.DamagedPacks) > 0 && !strings.Contains(rep.DamagedPacks[0].Reason, "corrupt pack") {
			t.Errorf("run %d: reason %q", run, rep.DamagedPacks[0].Reason)
		}
		want := []string{lost, lostAgain, crashed, tampered}
		slices.Sort(want)
		if got := skippedIDs(rep); !slices.Equal(got, want) {
			t.Errorf("run %d: skipped %v, want %v", run, rep.SkippedSnapshots, want)
		}
		for _, s := range rep.SkippedSnapshots {
			var wantReason string
			switch s.ID {
			case lost, lostAgain:
				wantReason = "data blobs are in no readable pack"
			case crashed:
				wantReason = "its trees cannot all be read"
			case tampered:
				wantReason = "read snapshot manifest"
			}
			if !strings.Contains(s.Reason, wantReason) {
				t.Errorf("run %d: snapshot %s skipped for %q, want %q", run, s.ID, s.Reason, wantReason)
			}
		}
		if rep.Snapshots != 5 || rep.SnapshotsAdded+rep.SnapshotsIndexed != 1 {
			t.Errorf("run %d: report %+v", run, rep)
		}
	}
	snaps, err := b.Snapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps) != 1 || snaps[0].ID != keep {
		t.Fatalf("rebuilt %d snapshots, want only %s", len(snaps), keep)
	}
	if d := cmp.Diff(keepFiles, repotest.ReadFiles(t, b, keep), sameBytes); d != "" {
		t.Errorf("the intact snapshot reads differently (-want +got):\n%s", d)
	}
}

// TestRebuildStopsOnStorageFailure: a transient storage failure ends the
// rebuild with an error instead of marking packs damaged.
func TestRebuildStopsOnStorageFailure(t *testing.T) {
	ctx := context.Background()
	var failing atomic.Bool
	backend := mem.New(mem.Options{Name: t.Name(), BeforeOp: func(op mem.Op, name string) error {
		if failing.Load() && op == mem.OpOpen && strings.HasPrefix(name, "packs/") {
			return blobstore.Transient(errors.New("connection reset"))
		}
		return nil
	}})
	key := repotest.MasterKey()
	a := repotest.New(t, repotest.Options{Backend: backend, MasterKey: key})
	repotest.WriteSnapshot(t, a, repotest.Files{"f": repotest.Random(30, 400<<10)})
	b, err := repository.Open(ctx, backend, memindex.New(memindex.Options{}), key)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	failing.Store(true)
	rep, err := b.Rebuild(ctx, repository.RebuildOptions{})
	if err == nil || !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("rebuild = %v, want the storage error", err)
	}
	if rep != nil && len(rep.DamagedPacks) > 0 {
		t.Errorf("a transient failure marked packs damaged: %v", rep.DamagedPacks)
	}
	failing.Store(false)
	if rep, err := b.Rebuild(ctx, repository.RebuildOptions{}); err != nil || !rep.Clean() || rep.SnapshotsAdded != 1 {
		t.Errorf("rebuild after the failure = %+v, %v", rep, err)
	}
}

// TestRebuildMetadb rebuilds a repository written through one database's
// index into another, empty database, on SQLite and PostgreSQL.
func TestRebuildMetadb(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		backend, key := mem.New(mem.Options{Name: t.Name()}), repotest.MasterKey()
		cfg, _, err := repository.Init(ctx, backend, repository.InitOptions{MasterKey: key, Encrypted: true,
			Chunker: repotest.SmallChunks, PackSize: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		a := repotest.New(t, repotest.Options{Backend: backend, MasterKey: key, Index: db.Index(cfg.ID)})
		ids := writeSamples(t, a)
		want := stateOf(t, a)

		fresh := metadbtest.Open(t, db.Dialect())
		b, err := repository.Open(ctx, backend, fresh.Index(cfg.ID), key)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		rep, err := b.Rebuild(ctx, repository.RebuildOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !rep.Clean() || rep.PacksAdded != len(want.Packs) || rep.SnapshotsAdded != len(ids) {
			t.Errorf("report = %+v", rep)
		}
		got := stateOf(t, b)
		if d := cmp.Diff(want, got, contentOnly); d != "" {
			t.Errorf("rebuilt index differs (-want +got):\n%s", d)
		}
		if rep, err := b.Rebuild(ctx, repository.RebuildOptions{}); err != nil || rep.PacksAdded+rep.SnapshotsAdded != 0 {
			t.Errorf("second rebuild = %+v, %v", rep, err)
		}
		if d := cmp.Diff(got, stateOf(t, b), sameBytes); d != "" {
			t.Errorf("the second rebuild changed the index (-before +after):\n%s", d)
		}
	})
}
