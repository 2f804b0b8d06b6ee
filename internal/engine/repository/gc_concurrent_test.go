package repository_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/blobstore/mem"
	"github.com/cofferhq/coffer/internal/engine/pack"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/repository/memindex"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
	"github.com/cofferhq/coffer/internal/engine/tree"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
)

// TestGCConcurrentWithBackups is the collector's acceptance test: backups
// commit and forget snapshots while two collectors (as on two servers, one
// holding the lease at a time) collect and repack, and afterwards every
// snapshot still committed reads back whole. No committed snapshot may
// lose a blob, and no commit may fail: every writer's session stays live.
func TestGCConcurrentWithBackups(t *testing.T) {
	t.Run("memindex", func(t *testing.T) {
		idx := memindex.New(memindex.Options{})
		testGCConcurrent(t, func(string) (repository.Index, repository.Index) { return idx, idx })
	})
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		other := metadbtest.OpenSame(t, db)
		testGCConcurrent(t, func(repoID string) (repository.Index, repository.Index) {
			return db.Index(repoID), other.Index(repoID)
		})
	})
}

const (
	gcWriters   = 3
	gcMinRounds = 6 // per writer; more while no collection has swept
	gcMaxRounds = 40
)

// gcTally adds up what the collectors did while backups ran.
type gcTally struct {
	runs, refused, deletedBlobs, deletedPacks, repacked, kept atomic.Int64
}

func (g *gcTally) add(rep *repository.GCReport) {
	g.runs.Add(1)
	g.deletedBlobs.Add(int64(rep.DeletedBlobs))
	g.deletedPacks.Add(int64(rep.DeletedPacks))
	g.repacked.Add(int64(rep.RepackedPacks))
	g.kept.Add(int64(rep.KeptTouched))
}

// swept reports whether the collectors have deleted blobs and packs and
// repacked one, all while backups ran.
func (g *gcTally) swept() bool {
	return g.deletedBlobs.Load() > 0 && g.deletedPacks.Load() > 0 && g.repacked.Load() > 0
}

// gcExpected keeps the files of every committed snapshot not forgotten.
type gcExpected struct {
	mu    sync.Mutex
	files map[string]repotest.Files
}

func (e *gcExpected) set(id string, f repotest.Files) {
	e.mu.Lock()
	e.files[id] = f
	e.mu.Unlock()
}

func (e *gcExpected) get(id string) repotest.Files {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.files[id]
}

func (e *gcExpected) remove(id string) {
	e.mu.Lock()
	delete(e.files, id)
	e.mu.Unlock()
}

func testGCConcurrent(t *testing.T, indexes func(repoID string) (repository.Index, repository.Index)) {
	ctx := context.Background()
	rng := gcRNG(t)
	seed := rng.Uint64()

	// Two Repository values on one backend and one database, as two server
	// replicas hold them. The index needs the repository's id first.
	backend := mem.New(mem.Options{Name: t.Name()})
	key := repotest.MasterKey()
	cfg, _, err := repository.Init(ctx, backend, repository.InitOptions{MasterKey: key, Chunker: repotest.SmallChunks, PackSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	ixA, ixB := indexes(cfg.ID)
	repos := []*repository.Repository{
		repotest.New(t, repotest.Options{Backend: backend, Index: ixA, MasterKey: key}),
		repotest.New(t, repotest.Options{Backend: backend, Index: ixB, MasterKey: key}),
	}

	// A pool of file contents that snapshots share, within and across
	// writers: 4 KiB to 300 KiB, so one to a few chunks each.
	pool := make([][]byte, 16)
	for i := range pool {
		pool[i] = gcRandom(rng, 4<<10+rng.IntN(296<<10))
	}

	expected := &gcExpected{files: map[string]repotest.Files{}}
	var tally gcTally
	g, gctx := errgroup.WithContext(ctx)
	writersDone := make(chan struct{})
	var writers sync.WaitGroup
	for i := range gcWriters {
		writers.Add(1)
		g.Go(func() error {
			defer writers.Done()
			w := &gcBackup{id: i, r: repos[i%2], pool: pool, expected: expected,
				rng: rand.New(rand.NewPCG(seed, uint64(i)))}
			return w.run(gctx, &tally)
		})
	}
	g.Go(func() error {
		writers.Wait()
		close(writersDone)
		return nil
	})
	for i, r := range repos {
		g.Go(func() error { return gcCollect(gctx, r, fmt.Sprintf("gc-%d", i), writersDone, &tally) })
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	t.Logf("while backups ran: %d collections (%d refused the lease), %d blobs and %d packs deleted, %d packs repacked, %d blobs kept as touched",
		tally.runs.Load(), tally.refused.Load(), tally.deletedBlobs.Load(), tally.deletedPacks.Load(), tally.repacked.Load(), tally.kept.Load())

	r := repos[0]
	gcVerifyAll(t, r, expected)
	// With no backup running, a collection takes every dead blob, and the
	// next finds nothing; every stored pack is indexed and vice versa.
	rep := gcRun(t, r, repository.GCOptions{RepackBelow: 0.9})
	t.Logf("final collection: %+v", rep)
	if rep := gcRun(t, r, repository.GCOptions{RepackBelow: 0.9}); rep.DeadBlobs != 0 || rep.DeletedPacks != 0 || rep.RepackedPacks != 0 {
		t.Errorf("a second collection with no backups running still found work: %+v", rep)
	}
	stored := repotest.Objects(t, backend, "packs/")
	state := gcStateOf(t, r)
	for _, p := range state.Packs {
		if _, ok := stored[p.ID.Name()]; !ok {
			t.Errorf("indexed pack %s is not stored", p.ID)
		}
		delete(stored, p.ID.Name())
	}
	for name := range stored {
		t.Errorf("stored pack %s is not indexed", name)
	}
	gcVerifyAll(t, r, expected)
}

// gcVerifyAll restores every snapshot the test expects and checks that the
// index lists exactly those.
func gcVerifyAll(t *testing.T, r *repository.Repository, expected *gcExpected) {
	t.Helper()
	ctx := context.Background()
	snaps, err := r.Snapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, s := range snaps {
		listed[s.ID] = true
		if expected.get(s.ID) == nil {
			t.Errorf("snapshot %s is listed but was forgotten or never committed", s.ID)
		}
	}
	expected.mu.Lock()
	defer expected.mu.Unlock()
	if len(expected.files) == 0 {
		t.Fatal("no snapshot left to restore")
	}
	for id, want := range expected.files {
		if !listed[id] {
			t.Errorf("committed snapshot %s is not listed", id)
			continue
		}
		got, err := repotest.LoadFiles(ctx, r, id)
		if err != nil {
			t.Errorf("restore snapshot %s: %v", id, err)
			continue
		}
		if diff := gcDiffFiles(want, got); diff != "" {
			t.Errorf("snapshot %s restored differently:\n%s", id, diff)
		}
	}
}

// gcCollect runs collections until the writers are done. Another
// collector holding the lease is the only error it expects.
func gcCollect(ctx context.Context, r *repository.Repository, owner string, done <-chan struct{}, tally *gcTally) error {
	for {
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			return nil
		default:
		}
		rep, err := r.GC(ctx, repository.GCOptions{Owner: owner, RepackBelow: 0.9})
		switch {
		case errors.Is(err, repository.ErrGCRunning):
			tally.refused.Add(1)
			time.Sleep(time.Millisecond) // let the holder work; not a timing assumption
		case err != nil:
			return fmt.Errorf("%s: %w", owner, err)
		default:
			tally.add(rep)
		}
	}
}

// gcBackup is one writer's loop: back up a random selection of shared and
// new files, forget some of its older snapshots, now and then restore one.
type gcBackup struct {
	id       int
	r        *repository.Repository
	pool     [][]byte
	expected *gcExpected
	rng      *rand.Rand
	mine     []string // its snapshots not forgotten, oldest first
}

func (b *gcBackup) run(ctx context.Context, tally *gcTally) error {
	for round := 0; ; round++ {
		if round >= gcMinRounds && tally.swept() {
			return nil
		}
		if round >= gcMaxRounds {
			return fmt.Errorf("writer %d: %d rounds and the collectors have not yet deleted blobs and packs and repacked a pack", b.id, round)
		}
		files := b.files(round)
		id, err := b.backup(ctx, files)
		if err != nil {
			return fmt.Errorf("writer %d round %d: %w", b.id, round, err)
		}
		b.expected.set(id, files)
		b.mine = append(b.mine, id)
		if len(b.mine) > 1 && b.rng.IntN(2) == 0 {
			i := b.rng.IntN(len(b.mine) - 1) // never the newest
			old := b.mine[i]
			b.mine = append(b.mine[:i], b.mine[i+1:]...)
			b.expected.remove(old)
			if err := b.r.ForgetSnapshot(ctx, old); err != nil {
				return fmt.Errorf("writer %d: %w", b.id, err)
			}
		}
		if round%3 == 2 {
			// Restore while collectors repack: readers follow moved blobs.
			id := b.mine[b.rng.IntN(len(b.mine))]
			got, err := repotest.LoadFiles(ctx, b.r, id)
			if err != nil {
				return fmt.Errorf("writer %d: restore snapshot %s during GC: %w", b.id, id, err)
			}
			if diff := gcDiffFiles(b.expected.get(id), got); diff != "" {
				return fmt.Errorf("writer %d: snapshot %s restored differently during GC:\n%s", b.id, id, diff)
			}
		}
	}
}

// files picks two to six files of the pool (shared with other snapshots)
// and up to two new ones (garbage once their snapshot is forgotten).
func (b *gcBackup) files(round int) repotest.Files {
	f := repotest.Files{}
	for range 2 + b.rng.IntN(5) {
		i := b.rng.IntN(len(b.pool))
		f[fmt.Sprintf("pool/p%02d", i)] = b.pool[i]
	}
	for j := range b.rng.IntN(3) {
		f[fmt.Sprintf("new/w%d-r%d-%d", b.id, round, j)] = gcRandom(b.rng, 4<<10+b.rng.IntN(296<<10))
	}
	return f
}

func (b *gcBackup) backup(ctx context.Context, files repotest.Files) (string, error) {
	w, err := b.r.NewWriter(ctx, repository.WriterOptions{})
	if err != nil {
		return "", err
	}
	defer w.Close()
	root, err := repotest.StoreTree(ctx, b.r, w, files)
	if err != nil {
		return "", err
	}
	return w.Commit(ctx, &tree.Snapshot{Version: 1, Time: time.Now().UTC(), Tree: root,
		Hostname: fmt.Sprintf("writer-%d", b.id), Paths: []string{"/"}})
}

// Packs are named by the hash of their bytes, and in an unencrypted
// repository the same blobs written in the same order make the same pack.
// A writer whose Put finds the object already there takes it as stored.
// These tests have a writer re-create a pack at the moment GC deletes it.
func TestGCPackRecreatedWhileDeleted(t *testing.T) {
	for _, encrypted := range []bool{false, true} {
		t.Run(gcEncName(encrypted), func(t *testing.T) {
			ctx := context.Background()
			files := repotest.Files{"f": gcRandom(gcRNG(t), 40<<10)}
			var hook atomic.Pointer[func(mem.Op, string) error]
			b := mem.New(mem.Options{Name: t.Name(), BeforeOp: func(op mem.Op, name string) error {
				if h := hook.Load(); h != nil {
					return (*h)(op, name)
				}
				return nil
			}})
			r := repotest.New(t, repotest.Options{Backend: b, Encrypted: encrypted})
			s1, root := repotest.WriteSnapshot(t, r, files)
			locs, err := r.Locate(ctx, []blob.ID{root})
			if err != nil {
				t.Fatal(err)
			}
			p := locs[root].Pack
			gcForget(t, r, s1)

			// While GC deletes the emptied pack's object (its row is gone),
			// a backup stores the same files again and commits.
			var s2 string
			var werr error
			var once sync.Once
			h := func(op mem.Op, name string) error {
				if op == mem.OpDelete && name == p.Name() {
					once.Do(func() { s2, werr = gcWriteSnapshot(ctx, r, files) })
				}
				return nil
			}
			hook.Store(&h)
			rep := gcRun(t, r, repository.GCOptions{})
			hook.Store(nil)
			if werr != nil {
				t.Fatalf("the concurrent backup failed: %v", werr)
			}
			if s2 == "" {
				t.Fatalf("GC did not delete pack %s (report %+v): the scenario did not happen", p, rep)
			}
			got, err := repotest.LoadFiles(ctx, r, s2)
			if err != nil {
				t.Fatalf("snapshot committed during GC cannot be read: %v", err)
			}
			if diff := gcDiffFiles(files, got); diff != "" {
				t.Errorf("snapshot read back differently:\n%s", diff)
			}
		})
	}
}

func TestGCOrphanRecreatedWhileSwept(t *testing.T) {
	for _, encrypted := range []bool{false, true} {
		t.Run(gcEncName(encrypted), func(t *testing.T) {
			ctx := context.Background()
			files := repotest.Files{"f": gcRandom(gcRNG(t), 40<<10)}
			storeClock := newGCClock()
			var hook atomic.Pointer[func(mem.Op, string) error]
			b := mem.New(mem.Options{Name: t.Name(), Now: storeClock.Now, BeforeOp: func(op mem.Op, name string) error {
				if h := hook.Load(); h != nil {
					return (*h)(op, name)
				}
				return nil
			}})
			idx := &gcFlakyIndex{Index: memindex.New(memindex.Options{})}
			r := repotest.New(t, repotest.Options{Backend: b, Index: idx, Encrypted: encrypted})

			// Two days ago a backup stored its pack and died before
			// indexing it.
			storeClock.Add(-48 * time.Hour)
			idx.failAddPack.Store(true)
			if _, err := gcWriteSnapshot(ctx, r, files); err == nil {
				t.Fatal("backup whose index fails committed")
			}
			idx.failAddPack.Store(false)
			storeClock.Add(48 * time.Hour)
			orphans := repotest.Objects(t, b, "packs/")
			if len(orphans) != 1 {
				t.Fatalf("%d orphan packs, want 1", len(orphans))
			}

			// Its retry runs while GC looks for orphans.
			var s2 string
			var werr error
			var once sync.Once
			h := func(op mem.Op, name string) error {
				if op == mem.OpList && name == "packs/" {
					once.Do(func() { s2, werr = gcWriteSnapshot(ctx, r, files) })
				}
				return nil
			}
			hook.Store(&h)
			rep := gcRun(t, r, repository.GCOptions{})
			hook.Store(nil)
			if werr != nil || s2 == "" {
				t.Fatalf("the concurrent backup failed: %v", werr)
			}
			if rep.OrphanPacks != 1 {
				t.Errorf("GC removed %d orphans, want 1", rep.OrphanPacks)
			}
			got, err := repotest.LoadFiles(ctx, r, s2)
			if err != nil {
				t.Fatalf("snapshot committed during GC cannot be read: %v", err)
			}
			if diff := gcDiffFiles(files, got); diff != "" {
				t.Errorf("snapshot read back differently:\n%s", diff)
			}
		})
	}
}

func gcEncName(encrypted bool) string {
	if encrypted {
		return "encrypted"
	}
	return "unencrypted"
}

// gcFlakyIndex fails AddPack while failAddPack is set.
type gcFlakyIndex struct {
	repository.Index
	failAddPack atomic.Bool
}

func (f *gcFlakyIndex) AddPack(ctx context.Context, p repository.PackInfo, entries []pack.Entry) error {
	if f.failAddPack.Load() {
		return errors.New("injected index failure")
	}
	return f.Index.AddPack(ctx, p, entries)
}

// gcWriteSnapshot is repotest.WriteSnapshot returning its error, for use
// inside a backend hook, where t.Fatal would unwind the collector.
func gcWriteSnapshot(ctx context.Context, r *repository.Repository, files repotest.Files) (string, error) {
	w, err := r.NewWriter(ctx, repository.WriterOptions{})
	if err != nil {
		return "", err
	}
	defer w.Close()
	root, err := repotest.StoreTree(ctx, r, w, files)
	if err != nil {
		return "", err
	}
	return w.Commit(ctx, &tree.Snapshot{Version: 1, Time: time.Now().UTC(), Tree: root, Hostname: "test", Paths: []string{"/"}})
}
