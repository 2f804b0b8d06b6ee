package repository

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/blobstore"
	"github.com/cofferhq/coffer/internal/engine/pack"
)

// GCOptions configure a garbage collection.
type GCOptions struct {
	// DryRun reports what would be reclaimed and changes nothing.
	DryRun bool
	// RepackBelow: a pack whose live bytes are less than this fraction of
	// its size is rewritten with only its live blobs (0 means the default,
	// 0.5; a negative value never repacks; 1 repacks every pack with any
	// garbage).
	RepackBelow float64
	// OrphanGrace: a pack object in storage that the index does not know is
	// deleted once it is older than this (default 24 h, at least
	// 2×MaxIndexDelay). A writer indexes a pack within MaxIndexDelay of
	// storing it or not at all, so the grace covers writers in between.
	// Snapshot manifests missing from the index and older than this stop GC
	// altogether: the index is not the whole truth (see GC).
	OrphanGrace time.Duration
	// Owner identifies this collector in the GC lease (default "gc").
	Owner string
	// Lease is how long the GC lease lasts (default 6 h); another collector
	// may start once it runs out.
	Lease time.Duration
	// Now returns the current time (default time.Now).
	Now func() time.Time
}

func (o *GCOptions) defaults() {
	if o.RepackBelow == 0 {
		o.RepackBelow = 0.5
	}
	if o.OrphanGrace <= 0 {
		o.OrphanGrace = 24 * time.Hour
	}
	o.OrphanGrace = max(o.OrphanGrace, 2*MaxIndexDelay)
	if o.Owner == "" {
		o.Owner = "gc"
	}
	if o.Lease <= 0 {
		o.Lease = 6 * time.Hour
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// GCReport says what a garbage collection found and did. In a dry run the
// counts of deleted and repacked things are what would have happened.
type GCReport struct {
	DryRun    bool `json:"dry_run"`
	Snapshots int  `json:"snapshots"`

	LiveBlobs    int `json:"live_blobs"`    // reachable from a snapshot
	DeadBlobs    int `json:"dead_blobs"`    // unreachable
	KeptTouched  int `json:"kept_touched"`  // unreachable but touched by a running backup: kept
	DeletedBlobs int `json:"deleted_blobs"` // index rows removed

	DeletedPacks  int   `json:"deleted_packs"` // packs with no live blob, removed
	RepackedPacks int   `json:"repacked_packs"`
	MovedBlobs    int   `json:"moved_blobs"`   // live blobs copied out of repacked packs
	WrittenBytes  int64 `json:"written_bytes"` // bytes of the new packs
	OrphanPacks   int   `json:"orphan_packs"`  // unindexed pack objects removed

	// ReclaimedBytes is storage freed (net of the new packs).
	ReclaimedBytes int64         `json:"reclaimed_bytes"`
	Duration       time.Duration `json:"duration_ns"`
}

// GC removes what no committed snapshot needs. It marks every blob
// reachable from the committed snapshots, then sweeps the others that no
// running backup has touched since the collection began (see Index), deletes
// packs left without live blobs, repacks mostly-dead packs, and removes pack
// objects the index never learnt of. Backups may run and commit throughout:
// no committed snapshot ever loses a blob. Only one GC runs at a time per
// repository (ErrGCRunning).
//
// If marking fails — a snapshot reaches a blob that is missing or damaged —
// GC stops before deleting anything: run Verify. It also refuses to run when
// storage holds snapshot manifests older than OrphanGrace that the index
// does not know (ErrIndexIncomplete): the database is older than the
// repository, or was lost, and sweeping by it would destroy the snapshots it
// lacks. Rebuild the index first.
func (r *Repository) GC(ctx context.Context, o GCOptions) (*GCReport, error) {
	o.defaults()
	start := o.Now()
	rep := &GCReport{DryRun: o.DryRun}
	bound, err := r.index.BeginGC(ctx, o.Owner, o.Lease)
	if err != nil {
		return nil, fmt.Errorf("gc %s: %w", r.Location(), err)
	}
	defer r.index.EndGC(context.WithoutCancel(ctx), o.Owner)
	leaseCtx, stop := r.holdGCLease(ctx, o)
	defer stop()
	rep, err = r.collect(leaseCtx, o, rep, bound)
	// stop waits for a renewal in flight, so a lease lost at any point
	// before this line is reported, even when the work finished first.
	stop()
	if cause := context.Cause(leaseCtx); cause != nil && !errors.Is(cause, context.Canceled) && err == nil {
		err = fmt.Errorf("gc %s: %w", r.Location(), cause)
	}
	if err != nil {
		return rep, err
	}
	rep.Duration = o.Now().Sub(start)
	return rep, nil
}

// collect is GC's work under the lease.
func (r *Repository) collect(ctx context.Context, o GCOptions, rep *GCReport, bound int64) (*GCReport, error) {

	// Listed after BeginGC: every commit that saw the old epoch is in it.
	snaps, err := r.index.Snapshots(ctx)
	if err != nil {
		return rep, fmt.Errorf("gc %s: list snapshots: %w", r.Location(), err)
	}
	if err := r.checkManifestsIndexed(ctx, o, snaps); err != nil {
		return rep, fmt.Errorf("gc %s: %w", r.Location(), err)
	}
	live, err := r.mark(ctx, rep, snaps)
	if err != nil {
		return rep, fmt.Errorf("gc %s: mark: %w (nothing was deleted)", r.Location(), err)
	}
	sw := &sweep{repo: r, opts: o, rep: rep, bound: bound, live: live}
	if err := sw.run(ctx); err != nil {
		if ctx.Err() != nil {
			err = errors.Join(err, context.Cause(ctx))
		}
		return rep, fmt.Errorf("gc %s: %w", r.Location(), err)
	}
	return rep, nil
}

// holdGCLease renews the GC lease every third of its length until stop is
// called, and cancels the returned context if the lease is lost. Renewing
// is beginning again under the same owner: that advances the epoch too,
// which is harmless, since the collection keeps the bound it started with.
func (r *Repository) holdGCLease(ctx context.Context, o GCOptions) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(o.Lease / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				if _, err := r.index.BeginGC(ctx, o.Owner, o.Lease); err != nil {
					cancel(fmt.Errorf("renew the GC lease: %w", err))
					return
				}
			}
		}
	}()
	var once sync.Once
	return ctx, func() {
		once.Do(func() {
			close(done)
			<-stopped
			cancel(nil)
		})
	}
}

// ErrIndexIncomplete marks a GC refused because the index lacks snapshots
// that storage holds.
var ErrIndexIncomplete = errors.New("the index lacks snapshots the repository holds")

// checkManifestsIndexed refuses GC when an old manifest is not indexed. A
// young one may be a commit in progress (its blobs are protected by its
// writer's session); an old one means the index is stale or was lost — or
// is the leftover of a commit interrupted between writing its manifest and
// recording it, which rebuild-index reports as incomplete.
func (r *Repository) checkManifestsIndexed(ctx context.Context, o GCOptions, snaps []SnapshotInfo) error {
	known := make(map[string]bool, len(snaps))
	for _, s := range snaps {
		known[s.ID] = true
	}
	cutoff := o.Now().Add(-o.OrphanGrace)
	var unknown []string
	err := r.backend.List(ctx, SnapshotPrefix, func(oi blobstore.ObjectInfo) error {
		id := oi.Name[len(SnapshotPrefix):]
		if !known[id] && oi.ModTime.Before(cutoff) {
			unknown = append(unknown, id)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list snapshot manifests: %w", err)
	}
	if len(unknown) > 0 {
		return fmt.Errorf("%w: %d snapshot manifests in storage are not in the index (first: %s); the database is older than the repository or was lost: run `coffer server rebuild-index` before collecting garbage (a manifest it reports as incomplete is the leftover of an interrupted commit and may be deleted)",
			ErrIndexIncomplete, len(unknown), unknown[0])
	}
	return nil
}

// mark returns every blob reachable from a committed snapshot.
func (r *Repository) mark(ctx context.Context, rep *GCReport, snaps []SnapshotInfo) (map[blob.ID]struct{}, error) {
	rep.Snapshots = len(snaps)
	roots := make([]blob.ID, len(snaps))
	for i, s := range snaps {
		roots[i] = s.Tree
	}
	live := map[blob.ID]struct{}{}
	err := r.Reach(ctx, roots, live, func(blob.Type, blob.ID) error { return nil })
	return live, err
}

type sweep struct {
	repo  *Repository
	opts  GCOptions
	rep   *GCReport
	bound int64
	live  map[blob.ID]struct{}

	packs map[pack.ID]*packUse
}

// packUse is what the sweep knows of one indexed pack.
type packUse struct {
	info      PackInfo
	keptBytes int64 // stored bytes of the rows that stay
	kept      int   // rows that stay
	dead      int   // rows to delete
}

// garbage reports whether the pack holds anything no row keeps: rows to
// delete, or copies of blobs indexed in another pack (a writer that lost a
// race to store them).
func (u *packUse) garbage() bool { return u.dead > 0 || u.kept < u.info.Blobs }

func (s *sweep) run(ctx context.Context) error {
	idx := s.repo.index
	s.packs = map[pack.ID]*packUse{}
	err := idx.Packs(ctx, func(p PackInfo) error {
		s.packs[p.ID] = &packUse{info: p}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list packs: %w", err)
	}
	var doomed []blob.ID
	err = idx.Blobs(ctx, func(b IndexedBlob) error {
		u := s.packs[b.Pack]
		if u == nil { // indexed after we listed the packs: not ours to judge
			return nil
		}
		if _, ok := s.live[b.ID]; ok {
			s.rep.LiveBlobs++
			u.keptBytes += int64(b.Length)
			u.kept++
			return nil
		}
		s.rep.DeadBlobs++
		if b.Touched >= s.bound {
			s.rep.KeptTouched++
			u.keptBytes += int64(b.Length)
			u.kept++
			return nil
		}
		u.dead++
		doomed = append(doomed, b.ID)
		return nil
	})
	if err != nil {
		return fmt.Errorf("list blobs: %w", err)
	}
	if s.opts.DryRun {
		s.rep.DeletedBlobs = len(doomed)
		s.plan()
		return s.orphans(ctx)
	}
	n, err := idx.DeleteBlobs(ctx, doomed, s.bound)
	s.rep.DeletedBlobs = n
	if err != nil {
		return fmt.Errorf("delete index rows: %w", err)
	}
	if err := s.packsAfterDelete(ctx); err != nil {
		return err
	}
	return s.orphans(ctx)
}

// plan fills a dry run's report from the first listing.
func (s *sweep) plan() {
	for _, u := range s.packs {
		switch {
		case u.keptBytes == 0:
			s.rep.DeletedPacks++
			s.rep.ReclaimedBytes += u.info.Size
		case u.garbage() && s.shouldRepack(u.info, u.keptBytes):
			s.rep.RepackedPacks++
			s.rep.MovedBlobs += u.kept
			s.rep.ReclaimedBytes += u.info.Size - u.keptBytes
		}
	}
}

func (s *sweep) shouldRepack(p PackInfo, kept int64) bool {
	return p.Size > 0 && s.opts.RepackBelow > 0 && float64(kept) < s.opts.RepackBelow*float64(p.Size)
}

// packsAfterDelete looks again at every pack that had garbage (rows that
// survived the conditional delete stay) and removes or repacks it.
func (s *sweep) packsAfterDelete(ctx context.Context) error {
	var repack []packRows
	for id, u := range s.packs {
		if !u.garbage() {
			continue
		}
		rows, err := s.repo.index.PackBlobs(ctx, id)
		if err != nil {
			return fmt.Errorf("list blobs of pack %s: %w", id, err)
		}
		if len(rows) == 0 {
			if err := s.deletePack(ctx, u.info); err != nil {
				return err
			}
			continue
		}
		var kept int64
		for _, b := range rows {
			kept += int64(b.Length)
		}
		if s.shouldRepack(u.info, kept) {
			repack = append(repack, packRows{u.info, rows})
		}
	}
	return s.repack(ctx, repack)
}

// deletePack removes a pack's row (if still empty) and then its object.
func (s *sweep) deletePack(ctx context.Context, p PackInfo) error {
	ok, err := s.repo.index.DeletePack(ctx, p.ID)
	if err != nil {
		return fmt.Errorf("delete pack %s from the index: %w", p.ID, err)
	}
	if !ok {
		return nil // a blob row appeared meanwhile; the pack stays
	}
	if err := s.repo.backend.Delete(ctx, p.ID.Name()); err != nil {
		// The row is gone, so the object is now an orphan the next GC
		// removes.
		return fmt.Errorf("delete pack %s: %w", p.ID.Name(), err)
	}
	s.rep.DeletedPacks++
	s.rep.ReclaimedBytes += p.Size
	return nil
}

// packRows is a pack and the index rows that still point into it.
type packRows struct {
	info PackInfo
	rows []IndexedBlob
}

// repack copies the live blobs of packs into new packs, points their rows
// at the new packs, and deletes the old ones. Every copied blob is read and
// authenticated first: damage is never copied into a new pack.
func (s *sweep) repack(ctx context.Context, packs []packRows) error {
	if len(packs) == 0 {
		return nil
	}
	origin := map[blob.ID]pack.ID{}
	var mu sync.Mutex
	var moveErr error
	w, err := s.repo.NewWriter(ctx, WriterOptions{OnPack: func(to PackInfo, entries []pack.Entry) {
		byOrigin := map[pack.ID][]pack.Entry{}
		mu.Lock()
		for _, e := range entries {
			byOrigin[origin[e.ID]] = append(byOrigin[origin[e.ID]], e)
		}
		mu.Unlock()
		for from, es := range byOrigin {
			if err := s.repo.index.MoveBlobs(ctx, from, to, es); err != nil {
				mu.Lock()
				moveErr = errors.Join(moveErr, fmt.Errorf("point blobs of pack %s at pack %s: %w", from, to.ID, err))
				mu.Unlock()
			}
		}
	}})
	if err != nil {
		return err
	}
	defer w.Close()
	for _, p := range packs {
		mu.Lock()
		for _, b := range p.rows {
			origin[b.ID] = p.info.ID
		}
		mu.Unlock()
		// ReadBlobs reads one type at a time, in as few ranged reads as
		// the rows' offsets allow.
		for _, t := range []blob.Type{blob.Data, blob.Tree} {
			var reqs []BlobRequest
			for _, b := range p.rows {
				if b.Type == t {
					reqs = append(reqs, BlobRequest{ID: b.ID, Loc: b.Location})
				}
			}
			err := s.repo.ReadBlobs(ctx, t, reqs, func(i int, plain []byte, err error) error {
				if err != nil {
					return fmt.Errorf("repack: %w (run verify; the pack is left as it is)", err)
				}
				if _, err := w.Save(ctx, t, reqs[i].ID, plain, blob.Default); err != nil {
					return fmt.Errorf("repack pack %s: %w", p.info.ID, err)
				}
				s.rep.MovedBlobs++
				return nil
			})
			if err != nil {
				return err
			}
		}
	}
	if err := w.Flush(ctx); err != nil {
		return fmt.Errorf("repack: %w", err)
	}
	mu.Lock()
	err = moveErr
	mu.Unlock()
	if err != nil {
		return err
	}
	st := w.Stats()
	s.rep.WrittenBytes += st.PackBytes
	s.rep.ReclaimedBytes -= st.PackBytes
	for _, p := range packs {
		before := s.rep.DeletedPacks
		if err := s.deletePack(ctx, p.info); err != nil {
			return err
		}
		if s.rep.DeletedPacks > before {
			s.rep.DeletedPacks--
			s.rep.RepackedPacks++
		}
	}
	return nil
}

// orphans deletes pack objects the index does not know once they are older
// than the grace period: leftovers of writers that stopped between storing
// a pack and indexing it, or of a GC that stopped between removing a pack's
// row and its object.
func (s *sweep) orphans(ctx context.Context) error {
	// A fresh listing, not s.packs: the orphan test must see every pack
	// indexed up to now, not only those indexed before the sweep began.
	known := map[pack.ID]bool{}
	err := s.repo.index.Packs(ctx, func(p PackInfo) error {
		known[p.ID] = true
		return nil
	})
	if err != nil {
		return fmt.Errorf("list packs: %w", err)
	}
	cutoff := s.opts.Now().Add(-s.opts.OrphanGrace)
	var old []blobstore.ObjectInfo
	err = s.repo.backend.List(ctx, "packs/", func(o blobstore.ObjectInfo) error {
		id, err := pack.ParseName(o.Name)
		if err != nil || known[id] || !o.ModTime.Before(cutoff) {
			return nil
		}
		old = append(old, o)
		return nil
	})
	if err != nil {
		return fmt.Errorf("list pack objects: %w", err)
	}
	for _, o := range old {
		s.rep.OrphanPacks++
		s.rep.ReclaimedBytes += o.Size
		if s.opts.DryRun {
			continue
		}
		if err := s.repo.backend.Delete(ctx, o.Name); err != nil {
			return fmt.Errorf("delete orphan pack %s: %w", o.Name, err)
		}
	}
	return nil
}
