package repository_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/blobstore"
	"github.com/cofferhq/coffer/internal/engine/blobstore/local"
	"github.com/cofferhq/coffer/internal/engine/blobstore/mem"
	"github.com/cofferhq/coffer/internal/engine/chunker"
	"github.com/cofferhq/coffer/internal/engine/pack"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/repository/memindex"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
	"github.com/cofferhq/coffer/internal/engine/tree"
	"github.com/google/go-cmp/cmp/cmpopts"

	gocmp "github.com/google/go-cmp/cmp"
)

// vfLab is a repository of three snapshots whose files are known, for
// tests that damage it and check what the damage is reported (or read) as.
//
//	snapshot 0: docs/a.bin (A), docs/b.bin (B), small.txt
//	snapshot 1: docs/a.bin (A), other/c.bin (C), small.txt (other content)
//	snapshot 2: copy/a-again.bin (A), other/c.bin (C), deep/x/y/z.bin (E), empty/
//
// With 64–256 KiB chunks and 1 MiB packs that makes several packs, some
// holding only data blobs; "other" is the same tree in snapshots 1 and 2.
type vfLab struct {
	t     *testing.T
	r     *repository.Repository
	raw   blobstore.Backend // storage itself, for damaging it
	log   *vfReadLog        // what the repository reads through
	idx   *memindex.Index
	key   []byte // the master key
	snaps []string
	files []repotest.Files
	// dirs says where each tree blob is a directory: the root "/" or "dir/".
	dirs   map[blob.ID][]vfPlace
	chunks map[string][]blob.ID // content → its data blobs
}

type vfPlace struct{ snap, path string }

func newVFLab(t *testing.T, encrypted bool) *vfLab {
	t.Helper()
	return newVFLabOn(t, mem.New(mem.Options{Name: t.Name()}), encrypted)
}

// newVFLabOn makes the lab's repository on raw.
func newVFLabOn(t *testing.T, raw blobstore.Backend, encrypted bool) *vfLab {
	t.Helper()
	l := &vfLab{t: t, raw: raw, log: &vfReadLog{Backend: raw}, idx: memindex.New(memindex.Options{}),
		key: repotest.MasterKey(), dirs: map[blob.ID][]vfPlace{}, chunks: map[string][]blob.ID{}}
	l.r = repotest.New(t, repotest.Options{Backend: l.log, Index: l.idx, MasterKey: l.key, Encrypted: encrypted})
	a, b, c, e := repotest.Random(71, 1536<<10), repotest.Random(72, 1<<20), repotest.Random(73, 700<<10), repotest.Random(74, 500<<10)
	l.files = []repotest.Files{
		{"docs/a.bin": a, "docs/b.bin": b, "small.txt": []byte("hello")},
		{"docs/a.bin": a, "other/c.bin": c, "small.txt": []byte("hello again")},
		{"copy/a-again.bin": a, "other/c.bin": c, "deep/x/y/z.bin": e, "empty/": nil},
	}
	ctx := context.Background()
	for _, files := range l.files {
		id, root := repotest.WriteSnapshot(t, l.r, files)
		l.snaps = append(l.snaps, id)
		l.dirs[root] = append(l.dirs[root], vfPlace{id, "/"})
		err := l.r.Walk(ctx, root, func(p string, n *tree.Node) error {
			if n.Type == tree.Dir {
				l.dirs[n.Subtree] = append(l.dirs[n.Subtree], vfPlace{id, p + "/"})
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	l.log.reset()
	return l
}

// chunksOf returns the data blobs of content, chunked here rather than
// read from the trees.
func (l *vfLab) chunksOf(content []byte) []blob.ID {
	if ids, ok := l.chunks[string(content)]; ok {
		return ids
	}
	var ids []blob.ID
	for _, chunk := range l.chunk(content) {
		ids = append(ids, l.r.BlobID(chunk))
	}
	l.chunks[string(content)] = ids
	return ids
}

// chunk splits content as the repository's chunker does.
func (l *vfLab) chunk(content []byte) [][]byte {
	c, err := chunker.New(bytes.NewReader(content), l.r.Config().ChunkerParams())
	if err != nil {
		l.t.Fatal(err)
	}
	var chunks [][]byte
	for {
		chunk, err := c.Next()
		if err == io.EOF {
			return chunks
		}
		if err != nil {
			l.t.Fatal(err)
		}
		chunks = append(chunks, bytes.Clone(chunk))
	}
}

// affected is what a damaged blob should be reported to affect: the files
// holding it and the directories it is the tree of, per snapshot.
func (l *vfLab) affected(id blob.ID) []repository.Affected {
	var out []repository.Affected
	for i, snap := range l.snaps {
		var paths []string
		for p, content := range l.files[i] {
			if !strings.HasSuffix(p, "/") && slices.Contains(l.chunksOf(content), id) {
				paths = append(paths, p)
			}
		}
		for _, d := range l.dirs[id] {
			if d.snap == snap {
				paths = append(paths, d.path)
			}
		}
		if len(paths) > 0 {
			slices.Sort(paths)
			out = append(out, repository.Affected{Snapshot: snap, Paths: paths})
		}
	}
	return out
}

func (l *vfLab) locate(id blob.ID) repository.Location {
	l.t.Helper()
	locs, err := l.r.Locate(context.Background(), []blob.ID{id})
	if err != nil || len(locs) != 1 {
		l.t.Fatalf("locate %s: %v, %v", id, locs, err)
	}
	return locs[id]
}

func (l *vfLab) flip(name string, off int64) {
	repotest.Replace(l.t, l.raw, name, func(b []byte) []byte { b[off] ^= 0x10; return b })
}

// flipBlob flips a bit in the middle of a stored blob and returns its pack.
func (l *vfLab) flipBlob(id blob.ID) pack.ID {
	loc := l.locate(id)
	l.flip(loc.Pack.Name(), int64(loc.Offset)+int64(loc.Length)/2)
	return loc.Pack
}

// treeAt returns the tree blob of directory dir ("other/") of snapshot i.
func (l *vfLab) treeAt(i int, dir string) blob.ID {
	for id, places := range l.dirs {
		if slices.Contains(places, vfPlace{l.snaps[i], dir}) {
			return id
		}
	}
	l.t.Fatalf("no directory %s in snapshot %d", dir, i)
	return blob.ID{}
}

func (l *vfLab) packs() []repository.PackInfo {
	var out []repository.PackInfo
	err := l.idx.Packs(context.Background(), func(p repository.PackInfo) error { out = append(out, p); return nil })
	if err != nil {
		l.t.Fatal(err)
	}
	return out
}

func (l *vfLab) rows(p pack.ID) []repository.IndexedBlob {
	rows, err := l.idx.PackBlobs(context.Background(), p)
	if err != nil {
		l.t.Fatal(err)
	}
	return rows
}

// dataPack returns a pack holding only data blobs, at least two of them.
func (l *vfLab) dataPack() repository.PackInfo {
	for _, p := range l.packs() {
		rows := l.rows(p.ID)
		if len(rows) >= 2 && !slices.ContainsFunc(rows, func(b repository.IndexedBlob) bool { return b.Type != blob.Data }) {
			return p
		}
	}
	l.t.Fatal("no pack holds only data blobs")
	return repository.PackInfo{}
}

// trailerStart returns where pack p's sealed trailer begins.
func (l *vfLab) trailerStart(name string) int64 {
	ctx := context.Background()
	fi, err := l.raw.Stat(ctx, name)
	if err != nil {
		l.t.Fatal(err)
	}
	footer, err := blobstore.ReadRange(ctx, l.raw, name, fi.Size-pack.FooterSize, pack.FooterSize)
	if err != nil {
		l.t.Fatal(err)
	}
	n, err := pack.TrailerLength(footer, fi.Size)
	if err != nil {
		l.t.Fatal(err)
	}
	return fi.Size - pack.FooterSize - int64(n)
}

func (l *vfLab) verify(o repository.VerifyOptions) *repository.VerifyReport {
	l.t.Helper()
	l.log.reset()
	rep, err := l.r.Verify(context.Background(), o)
	if err != nil {
		l.t.Fatalf("verify: %v", err)
	}
	return rep
}

// vfKey identifies a problem.
type vfKey struct {
	Kind     repository.ProblemKind
	Pack     string
	Blob     string
	Snapshot string
}

func vfPackProblem(k repository.ProblemKind, p pack.ID) vfKey { return vfKey{Kind: k, Pack: p.Name()} }

func vfBlobProblem(k repository.ProblemKind, p pack.ID, id blob.ID) vfKey {
	key := vfKey{Kind: k, Blob: id.String()}
	if p != (pack.ID{}) {
		key.Pack = p.Name()
	}
	return key
}

// check compares the report's problems with want, and the snapshots and
// paths each blob problem names with what the lab knows the blob is.
func (l *vfLab) check(rep *repository.VerifyReport, want []vfKey) {
	l.t.Helper()
	var got []vfKey
	for _, p := range rep.Problems {
		got = append(got, vfKey{p.Kind, p.Pack, p.Blob, p.Snapshot})
		if p.Blob == "" {
			continue
		}
		id, err := blob.ParseID(p.Blob)
		if err != nil {
			l.t.Fatal(err)
		}
		gotAff := slices.Clone(p.Affected)
		for i := range gotAff {
			gotAff[i].Paths = slices.Sorted(slices.Values(gotAff[i].Paths))
		}
		if d := gocmp.Diff(l.affected(id), gotAff, cmpopts.EquateEmpty()); d != "" {
			l.t.Errorf("%s %s affects (-want +got):\n%s", p.Kind, id.Short(), d)
		}
	}
	less := func(a, b vfKey) int {
		return cmp.Or(strings.Compare(string(a.Kind), string(b.Kind)), strings.Compare(a.Pack, b.Pack),
			strings.Compare(a.Blob, b.Blob), strings.Compare(a.Snapshot, b.Snapshot))
	}
	slices.SortFunc(got, less)
	want = slices.Clone(want)
	slices.SortFunc(want, less)
	if d := gocmp.Diff(want, got, cmpopts.EquateEmpty()); d != "" {
		l.t.Errorf("%s problems (-want +got):\n%s\n%s", rep.Level, d, rep.Summary())
	}
	if rep.OK != (len(want) == 0) {
		l.t.Errorf("OK = %v with %d problems", rep.OK, len(got))
	}
}

// vfReadLog records the reads of the backend it wraps and can fail them.
type vfReadLog struct {
	blobstore.Backend
	mu    sync.Mutex
	opens []vfOpen
	fail  atomic.Pointer[error] // returned by Open when set
}

type vfOpen struct {
	name           string
	offset, length int64
}

func (b *vfReadLog) Open(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	if err := b.fail.Load(); err != nil {
		return nil, *err
	}
	b.mu.Lock()
	b.opens = append(b.opens, vfOpen{name, offset, length})
	b.mu.Unlock()
	return b.Backend.Open(ctx, name, offset, length)
}

func (b *vfReadLog) reset() {
	b.mu.Lock()
	b.opens = nil
	b.mu.Unlock()
}

// wholeReads counts the reads of entire pack objects, by pack.
func (l *vfLab) wholeReads() map[string]int {
	l.log.mu.Lock()
	defer l.log.mu.Unlock()
	out := map[string]int{}
	for _, o := range l.log.opens {
		if !strings.HasPrefix(o.name, "packs/") {
			continue
		}
		fi, err := l.raw.Stat(context.Background(), o.name)
		if err != nil {
			l.t.Fatal(err)
		}
		if o.offset == 0 && (o.length == fi.Size || o.length < 0) {
			out[o.name]++
		}
	}
	return out
}

// checkNoDataRead fails unless every pack read since the last verify was
// of a footer or trailer, or of exactly one tree blob.
func (l *vfLab) checkNoDataRead() {
	l.t.Helper()
	trees := map[vfOpen]bool{}
	for _, p := range l.packs() {
		for _, b := range l.rows(p.ID) {
			if b.Type == blob.Tree {
				trees[vfOpen{p.ID.Name(), int64(b.Offset), int64(b.Length)}] = true
			}
		}
	}
	l.log.mu.Lock()
	opens := slices.Clone(l.log.opens)
	l.log.mu.Unlock()
	tails := 0
	for _, o := range opens {
		if !strings.HasPrefix(o.name, "packs/") || trees[o] {
			continue
		}
		if o.offset < l.trailerStart(o.name) {
			l.t.Errorf("structure check read %s [%d, +%d): blob data", o.name, o.offset, o.length)
		}
		tails++
	}
	if tails == 0 {
		l.t.Error("structure check read no trailer")
	}
}

func vfEncName(encrypted bool) string {
	if encrypted {
		return "encrypted"
	}
	return "plain"
}

func TestVerifyClean(t *testing.T) {
	for _, encrypted := range []bool{false, true} {
		t.Run(vfEncName(encrypted), func(t *testing.T) {
			l := newVFLab(t, encrypted)
			packs := l.packs()
			var stored []string
			err := l.raw.List(context.Background(), "packs/", func(o blobstore.ObjectInfo) error {
				stored = append(stored, o.Name)
				return nil
			})
			if err != nil || len(stored) != len(packs) || len(packs) < 4 {
				t.Fatalf("%d packs in storage, %d indexed (%v): want the same, and several", len(stored), len(packs), err)
			}
			reachable := map[blob.ID]struct{}{}
			var roots []blob.ID
			for _, s := range l.snaps {
				snap, err := l.r.LoadSnapshot(context.Background(), s)
				if err != nil {
					t.Fatal(err)
				}
				roots = append(roots, snap.Tree)
			}
			if err := l.r.Reach(context.Background(), roots, reachable, func(blob.Type, blob.ID) error { return nil }); err != nil {
				t.Fatal(err)
			}
			indexed := 0
			if err := l.idx.Blobs(context.Background(), func(repository.IndexedBlob) error { indexed++; return nil }); err != nil {
				t.Fatal(err)
			}

			rep := l.verify(repository.VerifyOptions{})
			l.check(rep, nil)
			l.checkNoDataRead()
			if rep.Level != repository.VerifyStructure || rep.Snapshots != 3 || rep.Packs != len(packs) ||
				rep.PacksRead != 0 || rep.Blobs != len(reachable) || rep.BlobsDecoded != 0 || rep.CheckedBytes == 0 {
				t.Errorf("structure report = %+v; want 3 snapshots, %d packs, %d blobs", rep, len(packs), len(reachable))
			}

			var progress []repository.VerifyProgress
			rep = l.verify(repository.VerifyOptions{Data: true, Concurrency: 3,
				Progress: func(p repository.VerifyProgress) { progress = append(progress, p) }})
			l.check(rep, nil)
			var size int64
			for _, p := range packs {
				size += p.Size
			}
			if rep.Level != repository.VerifyData || rep.PacksRead != len(packs) || rep.BlobsDecoded != indexed ||
				rep.CheckedBytes < size || rep.Blobs != len(reachable) {
				t.Errorf("data report = %+v; want %d packs read, %d blobs decoded, at least %d bytes", rep, len(packs), indexed, size)
			}
			reads := l.wholeReads()
			if len(reads) != len(packs) || slices.ContainsFunc(slices.Collect(maps.Values(reads)), func(n int) bool { return n != 1 }) {
				t.Errorf("whole-pack reads = %v; want each of %d packs once", reads, len(packs))
			}
			last := progress[len(progress)-1]
			if last.PacksDone != len(packs) || last.Packs != len(packs) || last.Problems != 0 {
				t.Errorf("last progress = %+v", last)
			}
			if !strings.Contains(rep.Summary(), "no problems found") {
				t.Errorf("summary = %q", rep.Summary())
			}
			if js, _ := json.Marshal(rep); !bytes.Contains(js, []byte(`"problems":[]`)) || !bytes.Contains(js, []byte(`"ok":true`)) {
				t.Errorf("JSON = %s", js)
			}
		})
	}
}

// vfCase damages a fresh lab and says what each level must report.
type vfCase struct {
	name   string
	damage func(l *vfLab) (structure, data []vfKey)
}

var vfCases = []vfCase{
	{"data blob bit flipped", func(l *vfLab) ([]vfKey, []vfKey) {
		// A's first chunk is in all three snapshots, once as a copy.
		id := l.chunksOf(l.files[0]["docs/a.bin"])[0]
		p := l.flipBlob(id)
		// The structure level reads no blob data, so it cannot see this.
		return nil, []vfKey{vfPackProblem(repository.ProblemPackHash, p), vfBlobProblem(repository.ProblemCorruptBlob, p, id)}
	}},
	{"tree bit flipped", func(l *vfLab) ([]vfKey, []vfKey) {
		id := l.treeAt(1, "other/")
		p := l.flipBlob(id)
		bad := vfBlobProblem(repository.ProblemCorruptBlob, p, id)
		return []vfKey{bad}, []vfKey{bad, vfPackProblem(repository.ProblemPackHash, p)}
	}},
	{"pack deleted", func(l *vfLab) ([]vfKey, []vfKey) {
		p := l.dataPack()
		if err := l.raw.Delete(context.Background(), p.ID.Name()); err != nil {
			l.t.Fatal(err)
		}
		want := []vfKey{vfPackProblem(repository.ProblemMissingPack, p.ID)}
		for _, b := range l.rows(p.ID) {
			want = append(want, vfBlobProblem(repository.ProblemMissingBlob, p.ID, b.ID))
		}
		return want, want
	}},
	{"pack truncated", func(l *vfLab) ([]vfKey, []vfKey) {
		p := l.dataPack()
		half := p.Size / 2
		repotest.Replace(l.t, l.raw, p.ID.Name(), func(b []byte) []byte { return b[:half] })
		want := []vfKey{vfPackProblem(repository.ProblemPackSize, p.ID), vfPackProblem(repository.ProblemTrailer, p.ID)}
		for _, b := range l.rows(p.ID) {
			if int64(b.Offset)+int64(b.Length) > half {
				want = append(want, vfBlobProblem(repository.ProblemMissingBlob, p.ID, b.ID))
			}
		}
		return want, want
	}},
	{"trailer bit flipped", func(l *vfLab) ([]vfKey, []vfKey) {
		p := l.packs()[0]
		start := l.trailerStart(p.ID.Name())
		l.flip(p.ID.Name(), start+(p.Size-pack.FooterSize-start)/2)
		bad := vfPackProblem(repository.ProblemTrailer, p.ID)
		return []vfKey{bad}, []vfKey{bad, vfPackProblem(repository.ProblemPackHash, p.ID)}
	}},
	{"footer bit flipped", func(l *vfLab) ([]vfKey, []vfKey) {
		p := l.packs()[1]
		l.flip(p.ID.Name(), p.Size-2) // in the magic
		bad := vfPackProblem(repository.ProblemTrailer, p.ID)
		return []vfKey{bad}, []vfKey{bad, vfPackProblem(repository.ProblemPackHash, p.ID)}
	}},
	{"manifest deleted", func(l *vfLab) ([]vfKey, []vfKey) {
		if err := l.raw.Delete(context.Background(), repository.SnapshotPrefix+l.snaps[1]); err != nil {
			l.t.Fatal(err)
		}
		want := []vfKey{{Kind: repository.ProblemManifest, Snapshot: l.snaps[1]}}
		return want, want
	}},
	{"manifest bit flipped", func(l *vfLab) ([]vfKey, []vfKey) {
		l.flip(repository.SnapshotPrefix+l.snaps[2], 20)
		want := []vfKey{{Kind: repository.ProblemManifest, Snapshot: l.snaps[2]}}
		return want, want
	}},
	{"index points beside a blob", func(l *vfLab) ([]vfKey, []vfKey) {
		id := l.chunksOf(l.files[0]["docs/b.bin"])[1]
		loc := l.locate(id)
		err := l.idx.MoveBlobs(context.Background(), loc.Pack, repository.PackInfo{ID: loc.Pack}, []pack.Entry{
			{Type: blob.Data, ID: id, Offset: loc.Offset + 1, Length: loc.Length, RawLength: loc.RawLength}})
		if err != nil {
			l.t.Fatal(err)
		}
		bad := vfBlobProblem(repository.ProblemIndexMismatch, loc.Pack, id)
		return []vfKey{bad}, []vfKey{bad, vfBlobProblem(repository.ProblemCorruptBlob, loc.Pack, id)}
	}},
	{"blob not indexed", func(l *vfLab) ([]vfKey, []vfKey) {
		// Only the sweep of a GC deletes rows; here one goes behind the
		// snapshots' back, as a damaged database would.
		id := l.chunksOf(l.files[2]["deep/x/y/z.bin"])[0]
		if n, err := l.idx.DeleteBlobs(context.Background(), []blob.ID{id}, math.MaxInt64); n != 1 || err != nil {
			l.t.Fatalf("delete row: %d, %v", n, err)
		}
		want := []vfKey{vfBlobProblem(repository.ProblemMissingBlob, pack.ID{}, id)}
		return want, want
	}},
}

func TestVerifyDamage(t *testing.T) {
	for _, encrypted := range []bool{false, true} {
		for _, c := range vfCases {
			t.Run(vfEncName(encrypted)+"/"+c.name, func(t *testing.T) {
				t.Parallel()
				l := newVFLab(t, encrypted)
				wantStructure, wantData := c.damage(l)
				l.check(l.verify(repository.VerifyOptions{}), wantStructure)
				l.check(l.verify(repository.VerifyOptions{Data: true}), wantData)
			})
		}
	}
}

func TestVerifyReportNamesFiles(t *testing.T) {
	l := newVFLab(t, true)
	id := l.chunksOf(l.files[0]["docs/a.bin"])[0]
	l.flipBlob(id)
	rep := l.verify(repository.VerifyOptions{Data: true})
	js, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"kind":"corrupt_blob"`, `"blob":"` + id.String() + `"`, `"blob_type":"data"`,
		`{"snapshot":"` + l.snaps[2] + `","paths":["copy/a-again.bin"]}`, `"ok":false`} {
		if !bytes.Contains(js, []byte(want)) {
			t.Errorf("JSON lacks %s:\n%s", want, js)
		}
	}
	sum := rep.Summary()
	for _, want := range []string{"2 problems", "pack_hash", "corrupt_blob: data blob " + id.String(),
		"snapshot " + l.snaps[0] + ": docs/a.bin", "snapshot " + l.snaps[2] + ": copy/a-again.bin"} {
		if !strings.Contains(sum, want) {
			t.Errorf("summary lacks %q:\n%s", want, sum)
		}
	}
}

func TestVerifySample(t *testing.T) {
	l := newVFLab(t, false)
	packs := l.packs()
	half := int(math.Ceil(float64(len(packs)) / 2))
	damaged := l.flipBlob(l.chunksOf(l.files[1]["other/c.bin"])[0]).Name()
	var first map[string]int
	for seed := range uint64(6) {
		rng := rand.New(rand.NewPCG(seed, 1))
		rep := l.verify(repository.VerifyOptions{Data: true, SamplePercent: 50, Rand: rng.Int64N})
		reads := l.wholeReads()
		if rep.PacksRead != half || len(reads) != half || rep.Packs != len(packs) {
			t.Errorf("seed %d: read %d packs whole (%d by the log) of %d; want %d", seed, rep.PacksRead, len(reads), len(packs), half)
		}
		for name, n := range reads {
			if n != 1 {
				t.Errorf("seed %d: read %s whole %d times", seed, name, n)
			}
		}
		found := slices.ContainsFunc(rep.Problems, func(p repository.VerifyProblem) bool {
			return p.Kind == repository.ProblemPackHash && p.Pack == damaged
		})
		if read := reads[damaged] > 0; found != read {
			t.Errorf("seed %d: damaged pack read whole: %v, damage found: %v", seed, read, found)
		}
		if seed == 0 {
			first = reads
		}
	}
	rng := rand.New(rand.NewPCG(0, 1))
	l.verify(repository.VerifyOptions{Data: true, SamplePercent: 50, Rand: rng.Int64N})
	if d := gocmp.Diff(first, l.wholeReads()); d != "" {
		t.Errorf("the same seed sampled other packs (-first +again):\n%s", d)
	}
	for _, pct := range []float64{0, 100, 150} {
		if rep := l.verify(repository.VerifyOptions{Data: true, SamplePercent: pct}); rep.PacksRead != len(packs) {
			t.Errorf("SamplePercent %v read %d of %d packs", pct, rep.PacksRead, len(packs))
		}
	}
}

// vfFailingIndex fails PackBlobs, as a database that went away would.
type vfFailingIndex struct{ repository.Index }

func (vfFailingIndex) PackBlobs(context.Context, pack.ID) ([]repository.IndexedBlob, error) {
	return nil, errors.New("database is down")
}

func TestVerifyCannotRun(t *testing.T) {
	l := newVFLab(t, false)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if rep, err := l.r.Verify(ctx, repository.VerifyOptions{Data: true}); !errors.Is(err, context.Canceled) || rep != nil {
		t.Errorf("cancelled: %v, %v; want context.Canceled and no report", rep, err)
	}

	r, err := repository.Open(context.Background(), l.log, vfFailingIndex{l.idx}, l.key)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if rep, err := r.Verify(context.Background(), repository.VerifyOptions{}); err == nil || !strings.Contains(err.Error(), "database is down") || rep != nil {
		t.Errorf("index down: %v, %v; want its error and no report", rep, err)
	}

	down := blobstore.Transient(errors.New("connection refused"))
	l.log.fail.Store(&down)
	if rep, err := l.r.Verify(context.Background(), repository.VerifyOptions{}); !errors.Is(err, down) || rep != nil {
		t.Errorf("storage down: %v, %v; want its error and no report", rep, err)
	}
}

func TestVerifyWrongMasterKey(t *testing.T) {
	for _, encrypted := range []bool{false, true} {
		t.Run(vfEncName(encrypted), func(t *testing.T) {
			l := newVFLab(t, encrypted)
			ctx := context.Background()
			r, err := repository.Open(ctx, l.raw, l.idx, repotest.MasterKey())
			if err == nil {
				r.Close()
				t.Fatal("opened the repository with another master key")
			}
			if !strings.Contains(err.Error(), "master key") || !strings.Contains(err.Error(), l.raw.Location()) {
				t.Errorf("error = %v; want it to say the master key is wrong, and where", err)
			}
			r, err = repository.Open(ctx, l.raw, l.idx, l.key)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if rep, err := r.Verify(ctx, repository.VerifyOptions{Data: true}); err != nil || !rep.OK {
				t.Errorf("with the right key: %v, %v", rep, err)
			}
		})
	}
}

// TestVerifyLocalBitRot damages a pack file on disk, behind the backend's
// back, the way a failing disk would.
func TestVerifyLocalBitRot(t *testing.T) {
	dir := t.TempDir()
	b, err := local.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	l := newVFLabOn(t, b, true)
	id := l.chunksOf(l.files[2]["other/c.bin"])[2]
	loc := l.locate(id)
	f, err := os.OpenFile(filepath.Join(dir, filepath.FromSlash(loc.Pack.Name())), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	one := make([]byte, 1)
	off := int64(loc.Offset) + int64(loc.Length)/3
	if _, err := f.ReadAt(one, off); err != nil {
		t.Fatal(err)
	}
	one[0] ^= 0x01
	if _, err := f.WriteAt(one, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	l.check(l.verify(repository.VerifyOptions{}), nil)
	l.check(l.verify(repository.VerifyOptions{Data: true}), []vfKey{
		vfPackProblem(repository.ProblemPackHash, loc.Pack), vfBlobProblem(repository.ProblemCorruptBlob, loc.Pack, id)})
	if _, err := l.r.LoadBlob(context.Background(), blob.Data, id, nil); !errors.Is(err, blob.ErrCorrupt) {
		t.Errorf("load the damaged blob: %v", err)
	}
}

// TestVerifySplitDirectory damages a directory stored as several part
// trees: a damaged part loses (some of) the directory, a damaged chunk in a
// later part one file.
func TestVerifySplitDirectory(t *testing.T) {
	ctx := context.Background()
	raw := mem.New(mem.Options{})
	l := &vfLab{t: t, raw: raw, log: &vfReadLog{Backend: raw}, idx: memindex.New(memindex.Options{})}
	l.r = repotest.New(t, repotest.Options{Backend: l.log, Index: l.idx})
	w, err := l.r.NewWriter(ctx, repository.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	save := func(typ blob.Type, b []byte) blob.ID {
		id := l.r.Codec().IDOf(typ, b)
		if _, err := w.Save(ctx, typ, id, b, blob.Fastest); err != nil {
			t.Fatal(err)
		}
		return id
	}
	encode := func(tr *tree.Tree) []byte {
		b, err := tr.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	var nodes []tree.Node
	content := map[string]blob.ID{}
	for i := range 40 {
		name := "f" + string(rune('a'+i/10)) + string(rune('0'+i%10))
		data := []byte("the content of " + name)
		content[name] = save(blob.Data, data)
		nodes = append(nodes, tree.Node{Name: name, Type: tree.File, Mode: 0o644, ModTime: time.Unix(1, 0).UTC(),
			Size: uint64(len(data)), Content: []blob.ID{content[name]}})
	}
	parts, err := tree.Split(nodes, 600)
	if err != nil || len(parts) < 3 {
		t.Fatalf("split into %d parts: %v", len(parts), err)
	}
	var partIDs []blob.ID
	for _, p := range parts {
		partIDs = append(partIDs, save(blob.Tree, encode(p)))
	}
	big := save(blob.Tree, encode(&tree.Tree{Parts: partIDs}))
	root := save(blob.Tree, encode(&tree.Tree{Nodes: []tree.Node{
		{Name: "big", Type: tree.Dir, Mode: 0o755, ModTime: time.Unix(1, 0).UTC(), Subtree: big}}}))
	snap, err := w.Commit(ctx, &tree.Snapshot{Version: tree.SnapshotVersion, Time: time.Now().UTC(), Tree: root,
		Hostname: "test", Paths: []string{"/"}})
	if err != nil {
		t.Fatal(err)
	}

	lastPart := parts[len(parts)-1]
	file := lastPart.Nodes[len(lastPart.Nodes)-1].Name
	damagedPart, damagedFile := partIDs[1], content[file]
	pp, fp := l.flipBlob(damagedPart), l.flipBlob(damagedFile)
	rep := l.verify(repository.VerifyOptions{Data: true})
	want := map[string][]repository.Affected{
		damagedPart.String(): {{Snapshot: snap, Paths: []string{"big/"}}},
		damagedFile.String(): {{Snapshot: snap, Paths: []string{"big/" + file}}},
	}
	got := map[string][]repository.Affected{}
	for _, p := range rep.Problems {
		if p.Kind == repository.ProblemCorruptBlob {
			got[p.Blob] = p.Affected
		}
	}
	if d := gocmp.Diff(want, got); d != "" {
		t.Errorf("corrupt blobs and what they affect (-want +got):\n%s\n%s", d, rep.Summary())
	}
	for _, p := range []pack.ID{pp, fp} {
		if !slices.ContainsFunc(rep.Problems, func(vp repository.VerifyProblem) bool {
			return vp.Kind == repository.ProblemPackHash && vp.Pack == p.Name()
		}) {
			t.Errorf("no pack_hash problem for %s:\n%s", p.Name(), rep.Summary())
		}
	}
}
