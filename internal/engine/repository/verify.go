package repository

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/blobstore"
	"github.com/cofferhq/coffer/internal/engine/pack"
	"github.com/cofferhq/coffer/internal/engine/tree"
	"golang.org/x/sync/errgroup"
)

// VerifyOptions configure Verify.
type VerifyOptions struct {
	// Data also reads every byte of the packs, re-hashes them against
	// their names and decodes (authenticates, decompresses, re-hashes)
	// every indexed blob: level "data". Otherwise Verify checks the
	// structure only and reads no blob content except trees.
	Data bool
	// SamplePercent, with Data, reads only this percentage of the packs,
	// chosen at random (0 or 100: all). The others get the structure check.
	SamplePercent float64
	// Concurrency is how many packs are checked at once (default 2). A
	// data check holds one whole pack in memory per worker.
	Concurrency int
	// Progress, when set, is called as the check advances; calls are
	// serialized.
	Progress func(VerifyProgress)
	// Rand returns a uniform random number in [0, n) for the sampling;
	// default math/rand/v2.Int64N. Tests pass a seeded one.
	Rand func(n int64) int64
}

// VerifyProgress tells how far a Verify is.
type VerifyProgress struct {
	Phase     string `json:"phase"` // "manifests", "packs", "trees", "attribution"
	PacksDone int    `json:"packs_done"`
	Packs     int    `json:"packs"`
	BytesRead int64  `json:"bytes_read"`
	Problems  int    `json:"problems"`
}

// The levels of a VerifyReport.
const (
	VerifyStructure = "structure"
	VerifyData      = "data"
)

// ProblemKind says what is wrong; its values are stable machine codes.
type ProblemKind string

// The kinds of problem, pack-level first.
const (
	ProblemMissingPack   ProblemKind = "missing_pack"   // indexed, not in storage
	ProblemPackSize      ProblemKind = "pack_size"      // in storage with another size than indexed
	ProblemPackHash      ProblemKind = "pack_hash"      // its bytes do not hash to its name (data level)
	ProblemTrailer       ProblemKind = "trailer"        // footer or trailer unreadable: an index rebuild would lose the pack
	ProblemIndexMismatch ProblemKind = "index_mismatch" // the index and the pack's trailer disagree
	ProblemMissingBlob   ProblemKind = "missing_blob"   // referenced or indexed, but its bytes are not in storage
	ProblemCorruptBlob   ProblemKind = "corrupt_blob"   // its bytes do not decode to it
	ProblemUnreadable    ProblemKind = "unreadable"     // storage refuses to read the object
	ProblemManifest      ProblemKind = "manifest"       // a snapshot manifest object is missing, damaged or differs from the index
)

var problemOrder = []ProblemKind{ProblemMissingPack, ProblemPackSize, ProblemPackHash, ProblemTrailer,
	ProblemIndexMismatch, ProblemMissingBlob, ProblemCorruptBlob, ProblemUnreadable, ProblemManifest}

// VerifyReport is what Verify found. It is meant to be shown as is, as
// JSON or through Summary.
type VerifyReport struct {
	Level        string          `json:"level"` // VerifyStructure or VerifyData
	Snapshots    int             `json:"snapshots"`
	Packs        int             `json:"packs"`         // indexed packs checked
	PacksRead    int             `json:"packs_read"`    // of which read whole (data level)
	Blobs        int             `json:"blobs"`         // distinct blobs reachable from the snapshots
	BlobsDecoded int             `json:"blobs_decoded"` // indexed blobs decoded from whole packs
	CheckedBytes int64           `json:"checked_bytes"` // bytes read from storage and checked
	Problems     []VerifyProblem `json:"problems"`
	OK           bool            `json:"ok"`
}

// VerifyProblem is one thing wrong. Pack, Blob and Snapshot name the object
// at fault; Affected says which snapshots and paths lose content through it
// (for blob problems; empty when no snapshot references the blob).
type VerifyProblem struct {
	Kind     ProblemKind `json:"kind"`
	Pack     string      `json:"pack,omitempty"` // object name
	Blob     string      `json:"blob,omitempty"`
	BlobType string      `json:"blob_type,omitempty"`
	Snapshot string      `json:"snapshot,omitempty"`
	Detail   string      `json:"detail"`
	Affected []Affected  `json:"affected,omitempty"`
}

// Affected lists what one snapshot loses through a damaged blob: files
// whose content it holds, and directories ("docs/", the root "/") whose
// tree it is, with everything below them.
type Affected struct {
	Snapshot  string   `json:"snapshot"`
	Paths     []string `json:"paths,omitempty"`
	MorePaths int      `json:"more_paths,omitempty"` // paths left out beyond maxAffectedPaths
}

// maxAffectedPaths bounds the paths listed per blob and snapshot: a damaged
// chunk that thousands of files share should not make the report huge.
const maxAffectedPaths = 1000

// Verify checks the repository against its index and reports every problem
// it finds; see VerifyOptions for the two levels. Damage goes into the
// report. Verify returns an error only when it cannot go on: the index
// fails, the context ends, or storage keeps failing transiently.
//
// The structure level checks that every blob reachable from a committed
// snapshot is indexed (reading and authenticating every tree on the way),
// that every indexed pack is in storage with its indexed size and a
// readable trailer that agrees with the index, and that every snapshot's
// manifest object authenticates and matches the index. The data level
// adds, for every (sampled) pack, one sequential read of the whole pack,
// its hash, and the decoding of each indexed blob in it.
//
// Once the damage is known, Verify walks the snapshots that reach it to
// name the files and directories it affects.
func (r *Repository) Verify(ctx context.Context, o VerifyOptions) (*VerifyReport, error) {
	if o.Concurrency <= 0 {
		o.Concurrency = 2
	}
	if o.Rand == nil {
		o.Rand = rand.Int64N
	}
	v := &verifier{r: r, o: o, rep: &VerifyReport{Level: VerifyStructure, Problems: []VerifyProblem{}},
		problems: map[problemKey]*verifyProblem{}}
	if o.Data {
		v.rep.Level = VerifyData
	}
	snaps, err := r.index.Snapshots(ctx)
	if err != nil {
		return nil, fmt.Errorf("verify %s: list snapshots: %w", r.Location(), err)
	}
	v.rep.Snapshots = len(snaps)
	steps := []func(context.Context, []SnapshotInfo) error{v.manifests, v.packs, v.trees, v.attribute}
	for _, step := range steps {
		if err := step(ctx, snaps); err != nil {
			return nil, fmt.Errorf("verify %s: %w", r.Location(), err)
		}
	}
	v.finish()
	return v.rep, nil
}

type verifier struct {
	r *Repository
	o VerifyOptions

	mu        sync.Mutex
	rep       *VerifyReport
	problems  map[problemKey]*verifyProblem
	packsDone int
}

type problemKey struct {
	kind     ProblemKind
	pack     string
	blob     blob.ID
	snapshot string
}

type verifyProblem struct {
	VerifyProblem
	blob    blob.ID
	hasBlob bool
}

// readProblem classifies an error reading a blob or a pack.
func readProblem(err error) ProblemKind {
	switch {
	case errors.Is(err, blobstore.ErrNotFound), errors.Is(err, blobstore.ErrRange):
		return ProblemMissingBlob
	case errors.Is(err, blob.ErrCorrupt), errors.Is(err, tree.ErrCorrupt), errors.Is(err, blob.ErrAuth):
		return ProblemCorruptBlob
	}
	return ProblemUnreadable
}

// add records a problem, once per kind and object.
func (v *verifier) add(p VerifyProblem) { v.record(verifyProblem{VerifyProblem: p}) }

// addBlob records a problem of blob id of type t, in pack p (zero: none).
func (v *verifier) addBlob(kind ProblemKind, t blob.Type, id blob.ID, p pack.ID, detail string) {
	vp := verifyProblem{VerifyProblem: VerifyProblem{Kind: kind, Blob: id.String(), BlobType: t.String(), Detail: detail},
		blob: id, hasBlob: true}
	if p != (pack.ID{}) {
		vp.Pack = p.Name()
	}
	v.record(vp)
}

func (v *verifier) record(p verifyProblem) {
	k := problemKey{kind: p.Kind, pack: p.Pack, blob: p.blob, snapshot: p.Snapshot}
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.problems[k]; !ok {
		v.problems[k] = &p
	}
}

func (v *verifier) read(n int64) {
	v.mu.Lock()
	v.rep.CheckedBytes += n
	v.mu.Unlock()
}

// progress reports the current counts to the Progress callback, one call
// at a time.
func (v *verifier) progress(phase string, packDone bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if packDone {
		v.packsDone++
	}
	if v.o.Progress != nil {
		v.o.Progress(VerifyProgress{Phase: phase, PacksDone: v.packsDone, Packs: v.rep.Packs,
			BytesRead: v.rep.CheckedBytes, Problems: len(v.problems)})
	}
}

// manifests checks that each snapshot's manifest object authenticates and
// says what the index says.
func (v *verifier) manifests(ctx context.Context, snaps []SnapshotInfo) error {
	v.progress("manifests", false)
	for _, s := range snaps {
		manifest, snap, err := v.r.ReadSnapshotObject(ctx, s.ID)
		if err != nil && stops(ctx, err) {
			return err
		}
		if errors.Is(err, blobstore.ErrNotFound) {
			// Forgotten since we listed it: the object goes first.
			if _, serr := v.r.index.Snapshot(ctx, s.ID); errors.Is(serr, ErrSnapshotNotFound) {
				continue
			} else if serr != nil {
				return fmt.Errorf("look up snapshot %s: %w", s.ID, serr)
			}
		}
		detail := ""
		switch {
		case err != nil:
			detail = err.Error()
		case !bytes.Equal(manifest, s.Manifest) || snap.Tree != s.Tree:
			detail = fmt.Sprintf("manifest %s%s differs from the index's copy", SnapshotPrefix, s.ID)
		default:
			v.read(int64(len(manifest)))
			continue
		}
		v.add(VerifyProblem{Kind: ProblemManifest, Snapshot: s.ID, Detail: detail,
			Affected: []Affected{{Snapshot: s.ID}}})
	}
	return nil
}

// packs checks every indexed pack, reading the sampled ones whole.
func (v *verifier) packs(ctx context.Context, _ []SnapshotInfo) error {
	var packs []PackInfo
	if err := v.r.index.Packs(ctx, func(p PackInfo) error { packs = append(packs, p); return nil }); err != nil {
		return fmt.Errorf("list packs: %w", err)
	}
	v.mu.Lock()
	v.rep.Packs = len(packs)
	v.mu.Unlock()
	v.progress("packs", false)
	whole := v.sample(len(packs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(v.o.Concurrency)
	for i, p := range packs {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			if err := v.checkPack(gctx, p, whole[i]); err != nil {
				return err
			}
			v.progress("packs", true)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

// sample chooses the packs to read whole: exactly ⌈n × SamplePercent/100⌉
// of them, at random.
func (v *verifier) sample(n int) []bool {
	whole := make([]bool, n)
	if !v.o.Data {
		return whole
	}
	k := n
	if p := v.o.SamplePercent; p > 0 && p < 100 {
		k = int(math.Ceil(float64(n) * p / 100))
	}
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	for i := range k {
		j := i
		if k < n {
			j += int(v.o.Rand(int64(n - i)))
		}
		order[i], order[j] = order[j], order[i]
		whole[order[i]] = true
	}
	return whole
}

// checkPack checks one pack. Its error stops the whole check; damage is
// recorded.
func (v *verifier) checkPack(ctx context.Context, p PackInfo, whole bool) error {
	name := p.ID.Name()
	fi, err := v.r.backend.Stat(ctx, name)
	// The rows are listed after the Stat: a pack GC emptied and removed
	// since we listed it has none left.
	rows, rerr := v.r.index.PackBlobs(ctx, p.ID)
	if rerr != nil {
		return fmt.Errorf("list blobs of pack %s: %w", name, rerr)
	}
	switch {
	case err != nil && stops(ctx, err):
		return err
	case errors.Is(err, blobstore.ErrNotFound):
		if len(rows) == 0 {
			return nil
		}
		v.add(VerifyProblem{Kind: ProblemMissingPack, Pack: name,
			Detail: fmt.Sprintf("the index places %d blobs in it; %s has no such object", len(rows), v.r.Location())})
		for _, b := range rows {
			v.addBlob(ProblemMissingBlob, b.Type, b.ID, p.ID, "its pack is missing")
		}
		return nil
	case err != nil:
		v.add(VerifyProblem{Kind: ProblemUnreadable, Pack: name, Detail: err.Error()})
		return nil
	}
	size := fi.Size
	if size != p.Size {
		v.add(VerifyProblem{Kind: ProblemPackSize, Pack: name,
			Detail: fmt.Sprintf("storage has %d bytes, the index says %d", size, p.Size)})
	}
	for _, b := range rows {
		if end := int64(b.Offset) + int64(b.Length); end > size {
			kind, detail := ProblemMissingBlob, fmt.Sprintf("the pack ends at byte %d, before the blob's end at %d", size, end)
			if size == p.Size {
				kind, detail = ProblemIndexMismatch, fmt.Sprintf("the index places it at [%d, %d), past the pack's end", b.Offset, end)
			}
			v.addBlob(kind, b.Type, b.ID, p.ID, detail)
		}
	}
	var entries []pack.Entry
	// A pack grown past its indexed size is not read whole: memory stays
	// bounded by what the writer made.
	if whole && size <= p.Size && size <= pack.MaxSize {
		entries, err = v.readPack(ctx, p, size, rows)
	} else {
		entries, err = v.readTrailer(ctx, name, size)
	}
	if err != nil {
		return err
	}
	if entries != nil {
		v.compare(p, rows, entries)
	}
	return nil
}

// readTrailer reads and opens a pack's trailer by ranged reads of its
// footer and trailer alone: the structure level reads no blob data. It
// returns nil entries when the trailer is damaged (recorded).
func (v *verifier) readTrailer(ctx context.Context, name string, size int64) ([]pack.Entry, error) {
	entries, n, err := readPackTrailer(ctx, v.r.backend, v.r.codec, name, size, pack.FooterSize)
	v.read(n)
	if err != nil && stops(ctx, err) {
		return nil, err
	}
	if err != nil {
		v.add(VerifyProblem{Kind: ProblemTrailer, Pack: name, Detail: err.Error()})
		return nil, nil
	}
	return entries, nil
}

// readPack reads a whole pack once, checks its hash and trailer, and
// decodes every indexed blob in it. It returns the trailer's entries, nil
// when the trailer is damaged.
func (v *verifier) readPack(ctx context.Context, p PackInfo, size int64, rows []IndexedBlob) ([]pack.Entry, error) {
	name := p.ID.Name()
	data, err := blobstore.ReadRange(ctx, v.r.backend, name, 0, size)
	if err != nil && stops(ctx, err) {
		return nil, err
	}
	if err != nil {
		kind := ProblemUnreadable
		if errors.Is(err, blobstore.ErrNotFound) {
			kind = ProblemMissingPack
		}
		v.add(VerifyProblem{Kind: kind, Pack: name, Detail: err.Error()})
		return nil, nil
	}
	v.mu.Lock()
	v.rep.PacksRead++
	v.rep.CheckedBytes += size
	v.mu.Unlock()
	if sum := pack.Sum(data); size == p.Size && sum != p.ID {
		v.add(VerifyProblem{Kind: ProblemPackHash, Pack: name,
			Detail: fmt.Sprintf("its content hashes to %s: it was damaged after it was written", sum)})
	}
	decoded := 0
	var buf []byte
	for _, b := range rows {
		end := int64(b.Offset) + int64(b.Length)
		if end > size {
			continue // reported by checkPack
		}
		plain, err := v.r.decodeAt(b.Type, b.ID, b.Location, data[b.Offset:end], buf[:0])
		if err == nil && b.Type == blob.Tree {
			_, err = tree.Decode(plain)
		}
		if err != nil {
			v.addBlob(ProblemCorruptBlob, b.Type, b.ID, p.ID, err.Error())
			continue
		}
		buf = plain
		decoded++
	}
	v.mu.Lock()
	v.rep.BlobsDecoded += decoded
	v.mu.Unlock()
	entries, err := pack.Parse(v.r.codec, data)
	if err != nil {
		v.add(VerifyProblem{Kind: ProblemTrailer, Pack: name, Detail: err.Error()})
		return nil, nil
	}
	return entries, nil
}

// compare checks that the trailer lists every blob the index places in the
// pack, where the index places it. Trailer entries the index does not
// place here are fine: copies of blobs indexed in another pack.
func (v *verifier) compare(p PackInfo, rows []IndexedBlob, entries []pack.Entry) {
	name := p.ID.Name()
	if p.Blobs != len(entries) {
		v.add(VerifyProblem{Kind: ProblemIndexMismatch, Pack: name,
			Detail: fmt.Sprintf("the index counts %d blobs in the pack, its trailer lists %d", p.Blobs, len(entries))})
	}
	byID := make(map[blob.ID]pack.Entry, len(entries))
	for _, e := range entries {
		byID[e.ID] = e
	}
	for _, b := range rows {
		e, ok := byID[b.ID]
		switch {
		case !ok:
			v.addBlob(ProblemIndexMismatch, b.Type, b.ID, p.ID, "the index places it in this pack, whose trailer does not list it")
		case e.Type != b.Type || e.Offset != b.Offset || e.Length != b.Length || e.RawLength != b.RawLength:
			v.addBlob(ProblemIndexMismatch, b.Type, b.ID, p.ID, fmt.Sprintf(
				"the index has it as %s at %d+%d (%d raw), the trailer as %s at %d+%d (%d raw)",
				b.Type, b.Offset, b.Length, b.RawLength, e.Type, e.Offset, e.Length, e.RawLength))
		}
	}
}

// trees walks every snapshot's trees once, loading and authenticating each
// tree, and checks that every blob they reach is indexed as what it is
// referenced as. Unlike Reach it goes on past a damaged tree, and it looks
// blobs up, trees included, in batches rather than one by one.
func (v *verifier) trees(ctx context.Context, snaps []SnapshotInfo) error {
	v.progress("trees", false)
	type ref struct {
		t  blob.Type
		id blob.ID
	}
	seen := map[blob.ID]struct{}{}
	var pending []ref // reached, not looked up yet
	var stack []IndexedBlob
	lookup := func() error {
		ids := make([]blob.ID, len(pending))
		for i, p := range pending {
			ids[i] = p.id
		}
		locs, err := v.r.index.Lookup(ctx, ids)
		if err != nil {
			return fmt.Errorf("look up blobs: %w", err)
		}
		for _, p := range pending {
			if v.checkRef(p.t, p.id, locs) && p.t == blob.Tree {
				stack = append(stack, IndexedBlob{ID: p.id, Location: locs[p.id]})
			}
		}
		pending = pending[:0]
		return nil
	}
	visit := func(t blob.Type, id blob.ID) error {
		if _, ok := seen[id]; ok {
			return nil
		}
		seen[id] = struct{}{}
		pending = append(pending, ref{t, id})
		if len(pending) >= lookupBatch {
			return lookup()
		}
		return nil
	}
	for _, s := range snaps {
		if err := visit(blob.Tree, s.Tree); err != nil {
			return err
		}
	}
	for len(stack) > 0 || len(pending) > 0 {
		if len(stack) == 0 {
			if err := lookup(); err != nil {
				return err
			}
			continue
		}
		b := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		t, err := v.loadTree(ctx, b.ID, b.Location)
		if err != nil {
			return err
		}
		if t == nil {
			continue
		}
		for typ, ref := range t.Refs() {
			if err := visit(typ, ref); err != nil {
				return err
			}
		}
	}
	v.rep.Blobs = len(seen)
	return nil
}

// checkRef records a problem unless locs has id indexed as type t. It
// reports whether the blob is indexed as t.
func (v *verifier) checkRef(t blob.Type, id blob.ID, locs map[blob.ID]Location) bool {
	loc, ok := locs[id]
	switch {
	case !ok:
		v.addBlob(ProblemMissingBlob, t, id, pack.ID{}, "a snapshot references it, the index does not have it")
	case loc.Type != t:
		v.addBlob(ProblemIndexMismatch, t, id, loc.Pack,
			fmt.Sprintf("a snapshot references it as a %s blob, the index has a %s blob", t, loc.Type))
	}
	return ok && loc.Type == t
}

// loadTree loads one tree, indexed at loc, for the check: nil (and a
// recorded problem) if it cannot be loaded, an error only if the check
// must stop.
func (v *verifier) loadTree(ctx context.Context, id blob.ID, loc Location) (*tree.Tree, error) {
	buf, err := v.r.ReadBlob(ctx, blob.Tree, id, loc, nil)
	if err == nil {
		v.read(int64(loc.Length))
		var t *tree.Tree
		if t, err = tree.Decode(buf); err == nil {
			return t, nil
		}
		err = fmt.Errorf("tree %s: %w", id, err)
	}
	if stops(ctx, err) {
		return nil, err
	}
	v.addBlob(readProblem(err), blob.Tree, id, loc.Pack, err.Error())
	return nil, nil
}

// attribute names, for every damaged blob, the snapshots and paths that
// reach it. It walks only the trees that lead to damage: whether a tree
// does is worked out once per tree, however many snapshots share it.
func (v *verifier) attribute(ctx context.Context, snaps []SnapshotInfo) error {
	a := &attributor{r: v.r, damaged: map[blob.ID]struct{}{}, dirty: map[blob.ID]bool{}}
	for _, p := range v.problems {
		if p.hasBlob {
			a.damaged[p.blob] = struct{}{}
		}
	}
	if len(a.damaged) == 0 {
		return nil
	}
	v.progress("attribution", false)
	affected := map[blob.ID][]Affected{}
	for _, s := range snaps {
		a.paths = map[blob.ID]*affectedPaths{}
		if err := a.walk(ctx, s.Tree, ""); err != nil {
			return err
		}
		for id, ap := range a.paths {
			affected[id] = append(affected[id], Affected{Snapshot: s.ID, Paths: ap.paths, MorePaths: ap.more})
		}
	}
	for _, p := range v.problems {
		if p.hasBlob {
			p.Affected = affected[p.blob]
		}
	}
	return nil
}

type attributor struct {
	r       *Repository
	damaged map[blob.ID]struct{}
	dirty   map[blob.ID]bool // trees known to reach damage (or not)
	paths   map[blob.ID]*affectedPaths
}

type affectedPaths struct {
	paths []string
	more  int
}

func (a *attributor) isDamaged(id blob.ID) bool {
	_, ok := a.damaged[id]
	return ok
}

// record notes that damaged blob id affects path p of the current snapshot.
func (a *attributor) record(id blob.ID, p string) {
	ap := a.paths[id]
	if ap == nil {
		ap = &affectedPaths{}
		a.paths[id] = ap
	}
	switch {
	case len(ap.paths) > 0 && ap.paths[len(ap.paths)-1] == p: // a chunk repeated in one file
	case len(ap.paths) >= maxAffectedPaths:
		ap.more++
	default:
		ap.paths = append(ap.paths, p)
	}
}

// load loads a tree that was readable during the check. One that is not
// (any more) is nil; the error is for the index or storage failing.
func (a *attributor) load(ctx context.Context, id blob.ID) (*tree.Tree, error) {
	locs, err := a.r.Locate(ctx, []blob.ID{id})
	if err != nil {
		return nil, err
	}
	loc, ok := locs[id]
	if !ok {
		return nil, nil
	}
	buf, err := a.r.ReadBlob(ctx, blob.Tree, id, loc, nil)
	if err != nil {
		if stops(ctx, err) {
			return nil, err
		}
		return nil, nil
	}
	t, err := tree.Decode(buf)
	if err != nil {
		return nil, nil
	}
	return t, nil
}

// reaches reports whether tree id is damaged or reaches damage.
func (a *attributor) reaches(ctx context.Context, id blob.ID) (bool, error) {
	if d, ok := a.dirty[id]; ok {
		return d, nil
	}
	if a.isDamaged(id) {
		a.dirty[id] = true
		return true, nil
	}
	a.dirty[id] = false
	t, err := a.load(ctx, id)
	if t == nil {
		return false, err
	}
	for typ, ref := range t.Refs() {
		d := a.isDamaged(ref)
		if !d && typ == blob.Tree {
			if d, err = a.reaches(ctx, ref); err != nil {
				return false, err
			}
		}
		if d {
			a.dirty[id] = true
			return true, nil
		}
	}
	return false, nil
}

// walk records the damage below the directory of tree id at path dir ("" for
// the root, "docs/" below it).
func (a *attributor) walk(ctx context.Context, id blob.ID, dir string) error {
	if a.isDamaged(id) {
		a.record(id, cmp.Or(dir, "/"))
		return nil
	}
	if d, err := a.reaches(ctx, id); !d || err != nil {
		return err
	}
	t, err := a.load(ctx, id)
	if t == nil {
		return err
	}
	if err := a.nodes(ctx, t.Nodes, dir); err != nil {
		return err
	}
	for _, part := range t.Parts {
		if a.isDamaged(part) {
			a.record(part, cmp.Or(dir, "/"))
			continue
		}
		if d, err := a.reaches(ctx, part); !d || err != nil {
			if err != nil {
				return err
			}
			continue
		}
		pt, err := a.load(ctx, part)
		if err != nil {
			return err
		}
		if pt != nil {
			if err := a.nodes(ctx, pt.Nodes, dir); err != nil {
				return err
			}
		}
	}
	return nil
}

func (a *attributor) nodes(ctx context.Context, nodes []tree.Node, dir string) error {
	for i := range nodes {
		n := &nodes[i]
		switch n.Type {
		case tree.File:
			for _, c := range n.Content {
				if a.isDamaged(c) {
					a.record(c, dir+n.Name)
				}
			}
		case tree.Dir:
			if err := a.walk(ctx, n.Subtree, dir+n.Name+"/"); err != nil {
				return err
			}
		}
	}
	return nil
}

// finish puts the problems in a stable order: by kind, then object. (The
// snapshots a problem affects are in the index's order, oldest first.)
func (v *verifier) finish() {
	for _, p := range v.problems {
		v.rep.Problems = append(v.rep.Problems, p.VerifyProblem)
	}
	slices.SortFunc(v.rep.Problems, func(x, y VerifyProblem) int {
		return cmp.Or(cmp.Compare(slices.Index(problemOrder, x.Kind), slices.Index(problemOrder, y.Kind)),
			strings.Compare(x.Pack, y.Pack), strings.Compare(x.Blob, y.Blob), strings.Compare(x.Snapshot, y.Snapshot))
	})
	v.rep.OK = len(v.rep.Problems) == 0
}

// Summary describes the report in a few lines of text: the counts, then
// one line per problem and one per snapshot it affects.
func (rep *VerifyReport) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s check: %d snapshots, %d packs (%d read whole), %d blobs, %d bytes checked: ",
		rep.Level, rep.Snapshots, rep.Packs, rep.PacksRead, rep.Blobs, rep.CheckedBytes)
	if rep.OK {
		b.WriteString("no problems found\n")
		return b.String()
	}
	if len(rep.Problems) == 1 {
		b.WriteString("1 problem\n")
	} else {
		fmt.Fprintf(&b, "%d problems\n", len(rep.Problems))
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(&b, "- %s:", p.Kind)
		if p.Blob != "" {
			fmt.Fprintf(&b, " %s blob %s", p.BlobType, p.Blob)
		}
		if p.Pack != "" {
			fmt.Fprintf(&b, " in %s", p.Pack)
		}
		if p.Snapshot != "" {
			fmt.Fprintf(&b, " snapshot %s", p.Snapshot)
		}
		fmt.Fprintf(&b, ": %s\n", p.Detail)
		for _, a := range p.Affected {
			if len(a.Paths) == 0 {
				continue
			}
			fmt.Fprintf(&b, "    snapshot %s: %s", a.Snapshot, strings.Join(a.Paths, ", "))
			if a.MorePaths > 0 {
				fmt.Fprintf(&b, " and %d more", a.MorePaths)
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}
