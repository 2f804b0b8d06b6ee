package indextest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"golang.org/x/sync/errgroup"
)

// testConcurrency runs backups (Missing, AddPack, CommitSnapshot, some in a
// session, some not, some deleting older snapshots) while two collectors
// take turns at GC (BeginGC, mark from the listed snapshots, DeleteBlobs,
// repack with MoveBlobs, DeletePack). Then it checks the invariant: every
// ref of every committed snapshot is still indexed. Writers in a session
// must never see a commit refused, since what they were told or wrote is
// protected; writers without one may, and store the missing blobs again.
// After deleting a snapshot, a writer reuses some of its blobs (garbage
// that Missing may report present) and waits for a collector to sweep
// between storing its blobs and committing.
func testConcurrency(t *testing.T, ix repository.Index, _ *Clock) {
	const (
		writers   = 6
		rounds    = 12
		minGC     = 4 // GC rounds that must overlap the writers
		maxRounds = 400
	)
	h := &harness{ix: ix, refs: make(map[string][]blob.ID), committed: make(map[string]bool), recycle: make(map[int][]blob.ID)}
	g, ctx := errgroup.WithContext(t.Context())
	var writing sync.WaitGroup
	for w := range writers {
		writing.Add(1)
		g.Go(func() error {
			defer writing.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for r := 0; r < rounds || (h.gcRounds.Load() < minGC && r < maxRounds); r++ {
				if err := h.backup(ctx, rng, w, r); err != nil {
					return fmt.Errorf("writer %d round %d: %w", w, r, err)
				}
			}
			return nil
		})
	}
	done := make(chan struct{})
	g.Go(func() error {
		writing.Wait()
		close(done)
		return nil
	})
	for _, owner := range []string{"collector-1", "collector-2"} {
		g.Go(func() error {
			for {
				select {
				case <-done:
					return nil
				case <-ctx.Done():
					return nil
				default:
				}
				if err := h.collect(ctx, owner); err != nil {
					return fmt.Errorf("%s: %w", owner, err)
				}
			}
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if n := h.gcRounds.Load(); n < minGC {
		t.Fatalf("only %d GC rounds ran while the writers did, want %d", n, minGC)
	}

	// A last GC with nothing running removes all garbage: what stays
	// indexed is exactly what the committed snapshots reference.
	ctx = t.Context()
	if err := h.collect(ctx, "final"); err != nil {
		t.Fatal(err)
	}
	snaps := snapshots(t, ix)
	live := make(map[blob.ID]bool)
	listed := make(map[string]bool)
	for _, s := range snaps {
		listed[s.ID] = true
		for _, id := range h.refs[s.ID] {
			live[id] = true
		}
	}
	for id, ok := range h.committed {
		if ok && !listed[id] {
			t.Errorf("snapshot %s was committed and never deleted, but Snapshots does not list it", id)
		}
	}
	var refs []blob.ID
	for id := range live {
		refs = append(refs, id)
	}
	if got := lookup(t, ix, refs...); len(got) != len(refs) {
		for _, id := range refs {
			if _, ok := got[id]; !ok {
				t.Errorf("blob %s is referenced by a committed snapshot but not indexed", id.Short())
			}
		}
	}
	rows := allBlobs(t, ix)
	for id := range rows {
		if !live[id] {
			t.Errorf("blob %s survived a GC with nothing running, referenced by no snapshot", id.Short())
		}
	}
	t.Logf("%d snapshots, %d live blobs, %d GC rounds, %d rows deleted, %d packs moved, %d refused commits",
		len(snaps), len(rows), h.gcRounds.Load(), h.deleted.Load(), h.moved.Load(), h.refused.Load())
	if h.deleted.Load() == 0 {
		t.Error("no GC round deleted anything, although writers deleted snapshots")
	}
}

type harness struct {
	ix repository.Index

	mu        sync.Mutex
	refs      map[string][]blob.ID // snapshot id → refs, recorded before committing
	committed map[string]bool      // committed and not deleted since
	recycle   map[int][]blob.ID    // writer → its blobs of the snapshot it just deleted

	holders  atomic.Int32 // collectors between BeginGC and EndGC
	gcRounds atomic.Int64
	swept    atomic.Int64 // DeleteBlobs calls by collectors
	deleted  atomic.Int64
	moved    atomic.Int64
	refused  atomic.Int64
}

// backup is round r of writer w: half of its blobs are shared with the
// other writers, half its own, some of those recycled.
func (h *harness) backup(ctx context.Context, rng *rand.Rand, w, r int) error {
	const perRound, pool = 24, 48
	sessioned := (w+r)%2 == 0
	var s repository.Session
	if sessioned {
		var err error
		if s, err = h.ix.BeginSession(ctx, time.Hour); err != nil {
			return err
		}
		defer h.ix.EndSession(context.WithoutCancel(ctx), s)
	}
	ids := make([]blob.ID, 0, perRound)
	for range perRound / 2 {
		ids = append(ids, BlobID(1_000_000+rng.IntN(pool)))
	}
	for i := range perRound / 2 {
		ids = append(ids, BlobID(w*100_000+r*100+i))
	}
	// Reuse the blobs of the snapshot this writer deleted last round:
	// garbage that Missing may still report present.
	h.mu.Lock()
	n := copy(ids[perRound-perRound/4:], h.recycle[w])
	h.recycle[w] = nil
	h.mu.Unlock()
	reused := n > 0
	swept := h.swept.Load()
	missing, err := h.ix.Missing(ctx, ids)
	if err != nil {
		return err
	}
	if err := h.store(ctx, fmt.Sprintf("w%d-r%d-0", w, r), missing); err != nil {
		return err
	}
	if reused {
		// Let a collector sweep between what this backup was told or
		// stored and its commit: the window the contract is about.
		for deadline := time.Now().Add(200 * time.Millisecond); h.swept.Load() == swept && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
	}

	snap := Snapshot(fmt.Sprintf("w%d-r%d", w, r), time.Date(2026, 1, 1, 0, w, r, 0, time.UTC), ids[0])
	h.mu.Lock()
	h.refs[snap.ID] = ids
	h.mu.Unlock()
	for attempt := 1; ; attempt++ {
		missing, err := h.ix.CommitSnapshot(ctx, snap, ids)
		if err != nil {
			return err
		}
		if len(missing) == 0 {
			break
		}
		if sessioned {
			return fmt.Errorf("commit of %s in a session refused: %v deleted although the session was told they were present or stored them", snap.ID, shorts(missing))
		}
		h.refused.Add(1)
		if attempt == 50 {
			return fmt.Errorf("commit of %s still refused after %d attempts", snap.ID, attempt)
		}
		if err := h.store(ctx, fmt.Sprintf("w%d-r%d-%d", w, r, attempt), missing); err != nil {
			return err
		}
	}
	h.mu.Lock()
	h.committed[snap.ID] = true
	h.mu.Unlock()

	if r >= 2 && r%3 == 0 {
		old := fmt.Sprintf("w%d-r%d", w, r-2)
		h.mu.Lock()
		h.committed[old] = false
		h.recycle[w] = h.refs[old][perRound/2:]
		h.mu.Unlock()
		if err := h.ix.DeleteSnapshot(ctx, old); err != nil {
			return err
		}
	}
	return nil
}

// store writes ids (once each) in a new pack.
func (h *harness) store(ctx context.Context, name string, ids []blob.ID) error {
	if len(ids) == 0 {
		return nil
	}
	ids = slices.Clone(ids)
	slices.SortFunc(ids, func(a, b blob.ID) int { return slices.Compare(a[:], b[:]) })
	ids = slices.Compact(ids)
	entries := Entries(ids...)
	return h.ix.AddPack(ctx, Info(PackID(name), entries, time.Time{}), entries)
}

// collect is one GC round: it returns nil without doing anything when the
// other collector holds the lease.
func (h *harness) collect(ctx context.Context, owner string) error {
	bound, err := h.ix.BeginGC(ctx, owner, time.Hour)
	if errors.Is(err, repository.ErrGCRunning) {
		time.Sleep(time.Millisecond)
		return nil
	}
	if err != nil {
		return err
	}
	if n := h.holders.Add(1); n != 1 {
		return fmt.Errorf("%d collectors hold the GC lease at once", n)
	}
	if err := h.sweep(ctx, owner, bound); err != nil {
		return err
	}
	h.holders.Add(-1)
	h.gcRounds.Add(1)
	return h.ix.EndGC(ctx, owner)
}

func (h *harness) sweep(ctx context.Context, owner string, bound int64) error {
	snaps, err := h.ix.Snapshots(ctx)
	if err != nil {
		return err
	}
	marked := make(map[blob.ID]bool)
	h.mu.Lock()
	for _, s := range snaps {
		refs, ok := h.refs[s.ID]
		if !ok {
			h.mu.Unlock()
			return fmt.Errorf("Snapshots lists %s, which no writer committed", s.ID)
		}
		for _, id := range refs {
			marked[id] = true
		}
	}
	h.mu.Unlock()

	var garbage []blob.ID
	err = h.ix.Blobs(ctx, func(b repository.IndexedBlob) error {
		if !marked[b.ID] && b.Touched < bound {
			garbage = append(garbage, b.ID)
		}
		return nil
	})
	if err != nil {
		return err
	}
	n, err := h.ix.DeleteBlobs(ctx, garbage, bound)
	if err != nil {
		return err
	}
	h.deleted.Add(int64(n))
	h.swept.Add(1)

	// Drop emptied packs, and repack the first pack with live rows.
	var packs []repository.PackInfo
	if err := h.ix.Packs(ctx, func(p repository.PackInfo) error { packs = append(packs, p); return nil }); err != nil {
		return err
	}
	repacked := false
	for _, p := range packs {
		rows, err := h.ix.PackBlobs(ctx, p.ID)
		if err != nil {
			return err
		}
		if len(rows) > 0 {
			if repacked {
				continue
			}
			repacked = true
			entries := Entries(packEntriesIDs(rows)...)
			to := Info(PackID(fmt.Sprintf("%s-%d-repack", owner, h.gcRounds.Load())), entries, time.Time{})
			if err := h.ix.AddPack(ctx, to, entries); err != nil {
				return err
			}
			if err := h.ix.MoveBlobs(ctx, p.ID, to, entries); err != nil {
				return err
			}
			h.moved.Add(1)
		}
		// Only the lease holder moves or deletes rows, and writers never
		// add to an existing pack: nothing can point at p any more.
		ok, err := h.ix.DeletePack(ctx, p.ID)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("DeletePack %s refused, though no row points at it", p.ID.String()[:12])
		}
	}
	return nil
}

func packEntriesIDs(rows []repository.IndexedBlob) []blob.ID {
	ids := make([]blob.ID, len(rows))
	for i, r := range rows {
		ids[i] = r.ID
	}
	return ids
}
