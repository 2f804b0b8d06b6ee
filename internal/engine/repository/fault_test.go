package repository_test

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/blobstore"
	"github.com/cofferhq/coffer/internal/engine/blobstore/mem"
	"github.com/cofferhq/coffer/internal/engine/blobstore/retry"
	"github.com/cofferhq/coffer/internal/engine/pack"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
	"github.com/google/go-cmp/cmp"
)

// plain returns the plaintext of every data blob of the lab's files,
// chunked here.
func (l *vfLab) plain() map[blob.ID][]byte {
	out := map[blob.ID][]byte{}
	for _, files := range l.files {
		for _, content := range files {
			for _, chunk := range l.chunk(content) {
				out[l.r.BlobID(chunk)] = chunk
			}
		}
	}
	return out
}

// loadFails checks that loading blob id fails with an error matching want
// and naming the blob (and its pack, unless p is zero).
func (l *vfLab) loadFails(t blob.Type, id blob.ID, p pack.ID, want error) {
	l.t.Helper()
	got, err := l.r.LoadBlob(context.Background(), t, id, nil)
	if !errors.Is(err, want) || got != nil {
		l.t.Errorf("load %s blob %s: %d bytes, %v; want no bytes and %v", t, id.Short(), len(got), err, want)
		return
	}
	if !strings.Contains(err.Error(), id.String()) || (p != pack.ID{} && !strings.Contains(err.Error(), p.Name())) {
		l.t.Errorf("load %s blob %s: error %q does not name the blob and its pack %s", t, id.Short(), err, p.Name())
	}
}

// readsBack checks every data blob and snapshot: a read either returns
// exactly what was stored or fails; it fails (with an error matching want)
// exactly for the blobs in bad and the snapshots holding them. Snapshots
// in badSnaps fail too, whatever their blobs.
func (l *vfLab) readsBack(bad map[blob.ID]bool, want error, badSnaps ...int) {
	l.t.Helper()
	ctx := context.Background()
	for id, plain := range l.plain() {
		got, err := l.r.LoadBlob(ctx, blob.Data, id, nil)
		switch {
		case bad[id] && (!errors.Is(err, want) || got != nil):
			l.t.Errorf("blob %s: %d bytes, %v; want %v", id.Short(), len(got), err, want)
		case !bad[id] && err != nil:
			l.t.Errorf("undamaged blob %s: %v", id.Short(), err)
		case !bad[id] && !bytes.Equal(got, plain):
			l.t.Errorf("blob %s: wrong bytes", id.Short())
		}
	}
	l.readBlobsBack(bad, want)
	for i, snap := range l.snaps {
		damaged := false
		for id := range bad {
			damaged = damaged || l.affectsSnapshot(id, snap)
		}
		for _, b := range badSnaps {
			damaged = damaged || b == i
		}
		files, err := repotest.LoadFiles(ctx, l.r, snap)
		if damaged {
			if !errors.Is(err, want) {
				l.t.Errorf("snapshot %d: %v; want %v", i, err, want)
			}
			continue
		}
		if err != nil {
			l.t.Errorf("undamaged snapshot %d: %v", i, err)
			continue
		}
		if d := cmp.Diff(l.files[i], files, vfNilIsEmpty); d != "" {
			l.t.Errorf("snapshot %d read back wrong (-want +got):\n%s", i, d)
		}
	}
}

// readBlobsBack is readsBack's check of the data blobs through ReadBlobs,
// the batched reader: it must fail exactly the blobs in bad, with an error
// matching want, and return the others exactly. A blob the index lacks
// cannot be requested; it must be in bad.
func (l *vfLab) readBlobsBack(bad map[blob.ID]bool, want error) {
	l.t.Helper()
	ctx := context.Background()
	plain := l.plain()
	ids := slices.Collect(maps.Keys(plain))
	locs, err := l.r.Locate(ctx, ids)
	if err != nil {
		l.t.Fatal(err)
	}
	var reqs []repository.BlobRequest
	for _, id := range ids {
		if loc, ok := locs[id]; ok {
			reqs = append(reqs, repository.BlobRequest{ID: id, Loc: loc})
		} else if !bad[id] {
			l.t.Errorf("undamaged blob %s is not indexed", id.Short())
		}
	}
	calls := 0
	err = l.r.ReadBlobs(ctx, blob.Data, reqs, func(i int, got []byte, err error) error {
		calls++
		id := reqs[i].ID
		switch {
		case bad[id] && (!errors.Is(err, want) || got != nil):
			l.t.Errorf("ReadBlobs: blob %s: %d bytes, %v; want %v", id.Short(), len(got), err, want)
		case !bad[id] && err != nil:
			l.t.Errorf("ReadBlobs: undamaged blob %s: %v", id.Short(), err)
		case !bad[id] && !bytes.Equal(got, plain[id]):
			l.t.Errorf("ReadBlobs: blob %s: wrong bytes", id.Short())
		}
		return nil
	})
	if err != nil || calls != len(reqs) {
		l.t.Errorf("ReadBlobs: %d calls for %d requests, %v", calls, len(reqs), err)
	}
}

var vfNilIsEmpty = cmp.Comparer(func(a, b []byte) bool { return bytes.Equal(a, b) })

func (l *vfLab) affectsSnapshot(id blob.ID, snap string) bool {
	for _, a := range l.affected(id) {
		if a.Snapshot == snap {
			return true
		}
	}
	return false
}

func TestFaultReads(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name string
		run  func(t *testing.T, l *vfLab)
	}{
		{"data blob bit flipped", func(t *testing.T, l *vfLab) {
			id := l.chunksOf(l.files[0]["docs/b.bin"])[0]
			p := l.flipBlob(id)
			l.loadFails(blob.Data, id, p, blob.ErrCorrupt)
			l.readsBack(map[blob.ID]bool{id: true}, blob.ErrCorrupt)
		}},
		{"pack deleted", func(t *testing.T, l *vfLab) {
			p := l.dataPack()
			if err := l.raw.Delete(ctx, p.ID.Name()); err != nil {
				t.Fatal(err)
			}
			bad := map[blob.ID]bool{}
			for _, b := range l.rows(p.ID) {
				l.loadFails(blob.Data, b.ID, p.ID, blobstore.ErrNotFound)
				bad[b.ID] = true
			}
			l.readsBack(bad, blobstore.ErrNotFound)
		}},
		{"pack truncated", func(t *testing.T, l *vfLab) {
			p := l.dataPack()
			half := p.Size / 2
			repotest.Replace(t, l.raw, p.ID.Name(), func(b []byte) []byte { return b[:half] })
			bad := map[blob.ID]bool{}
			for _, b := range l.rows(p.ID) {
				if int64(b.Offset)+int64(b.Length) > half {
					l.loadFails(blob.Data, b.ID, p.ID, blobstore.ErrRange)
					bad[b.ID] = true
				}
			}
			if len(bad) == 0 || len(bad) == len(l.rows(p.ID)) {
				t.Fatalf("%d of %d blobs cut off: want some", len(bad), len(l.rows(p.ID)))
			}
			l.readsBack(bad, blobstore.ErrRange)
		}},
		{"tree bit flipped", func(t *testing.T, l *vfLab) {
			id := l.treeAt(1, "other/")
			p := l.flipBlob(id)
			l.loadFails(blob.Tree, id, p, blob.ErrCorrupt)
			if _, err := l.r.LoadTree(ctx, id); !errors.Is(err, blob.ErrCorrupt) {
				t.Errorf("load tree: %v", err)
			}
			_, err := repotest.LoadFiles(ctx, l.r, l.snaps[2])
			if err == nil || !strings.Contains(err.Error(), id.String()) {
				t.Errorf("read snapshot 2: %v; want an error naming tree %s", err, id)
			}
			l.readsBack(nil, blob.ErrCorrupt, 1, 2)
		}},
		{"trailer bit flipped", func(t *testing.T, l *vfLab) {
			// Reads go by the index: a damaged trailer costs only the
			// ability to rebuild the index from this pack.
			for _, p := range l.packs() {
				start := l.trailerStart(p.ID.Name())
				l.flip(p.ID.Name(), start+(p.Size-pack.FooterSize-start)/2)
			}
			l.readsBack(nil, nil)
		}},
		{"manifest deleted", func(t *testing.T, l *vfLab) {
			name := repository.SnapshotPrefix + l.snaps[1]
			if err := l.raw.Delete(ctx, name); err != nil {
				t.Fatal(err)
			}
			_, _, err := l.r.ReadSnapshotObject(ctx, l.snaps[1])
			if !errors.Is(err, blobstore.ErrNotFound) || !strings.Contains(err.Error(), name) {
				t.Errorf("read manifest: %v; want not found, naming %s", err, name)
			}
			l.readsBack(nil, nil) // the index keeps the manifest
		}},
		{"manifest bit flipped", func(t *testing.T, l *vfLab) {
			name := repository.SnapshotPrefix + l.snaps[0]
			l.flip(name, 30)
			if _, snap, err := l.r.ReadSnapshotObject(ctx, l.snaps[0]); !errors.Is(err, blob.ErrAuth) || snap != nil ||
				!strings.Contains(err.Error(), name) {
				t.Errorf("read manifest: %v, %v; want authentication failure naming %s", snap, err, name)
			}
			l.readsBack(nil, nil)
		}},
		{"index points beside a blob", func(t *testing.T, l *vfLab) {
			id := l.chunksOf(l.files[1]["other/c.bin"])[1]
			loc := l.locate(id)
			err := l.idx.MoveBlobs(ctx, loc.Pack, repository.PackInfo{ID: loc.Pack}, []pack.Entry{
				{Type: blob.Data, ID: id, Offset: loc.Offset + 3, Length: loc.Length - 3, RawLength: loc.RawLength}})
			if err != nil {
				t.Fatal(err)
			}
			l.loadFails(blob.Data, id, loc.Pack, blob.ErrCorrupt)
			l.readsBack(map[blob.ID]bool{id: true}, blob.ErrCorrupt)
		}},
		{"blob read as the other type", func(t *testing.T, l *vfLab) {
			data := l.chunksOf(l.files[0]["small.txt"])[0]
			l.loadFails(blob.Tree, data, pack.ID{}, blob.ErrCorrupt)
			if _, err := l.r.LoadTree(ctx, data); !errors.Is(err, blob.ErrCorrupt) {
				t.Errorf("load data blob as a tree: %v", err)
			}
			root := l.treeAt(0, "/")
			l.loadFails(blob.Data, root, pack.ID{}, blob.ErrCorrupt)
		}},
		{"blob not indexed", func(t *testing.T, l *vfLab) {
			id := l.chunksOf(l.files[2]["deep/x/y/z.bin"])[0]
			if n, err := l.idx.DeleteBlobs(ctx, []blob.ID{id}, math.MaxInt64); n != 1 || err != nil {
				t.Fatalf("delete row: %d, %v", n, err)
			}
			l.loadFails(blob.Data, id, pack.ID{}, repository.ErrNotIndexed)
			l.readsBack(map[blob.ID]bool{id: true}, repository.ErrNotIndexed)
		}},
	}
	for _, encrypted := range []bool{false, true} {
		for _, c := range cases {
			t.Run(vfEncName(encrypted)+"/"+c.name, func(t *testing.T) {
				t.Parallel()
				l := newVFLab(t, encrypted)
				c.run(t, l)
			})
		}
	}
}

// TestFaultFlakyBackend writes and reads through a backend that fails now
// and then the way networks do — operations refused, uploads whose
// response is lost, downloads cut short — behind the retry decorator.
func TestFaultFlakyBackend(t *testing.T) {
	var ops, reads, puts, injected atomic.Int64
	flaky := func(n *atomic.Int64, every int64, what string) error {
		if n.Add(1)%every == 0 {
			injected.Add(1)
			return blobstore.Transient(errors.New(what))
		}
		return nil
	}
	raw := mem.New(mem.Options{
		BeforeOp:   func(mem.Op, string) error { return flaky(&ops, 3, "connection reset") },
		AfterPut:   func(string) error { return flaky(&puts, 2, "response lost") },
		BeforeRead: func(string, int64) error { return flaky(&reads, 4, "connection dropped") },
	})
	var retries atomic.Int64
	b := retry.New(raw, retry.Options{
		MaxAttempts: 20,
		Sleep:       func(ctx context.Context, _ time.Duration) error { return ctx.Err() },
		OnRetry:     func(string, string, int, time.Duration, error) { retries.Add(1) },
	})
	r := repotest.New(t, repotest.Options{Backend: b, Encrypted: true})
	shared := repotest.Random(31, 900<<10)
	want := []repotest.Files{
		{"a/shared.bin": shared, "a/one.bin": repotest.Random(32, 1200<<10), "note": []byte("first")},
		{"a/shared.bin": shared, "b/two.bin": repotest.Random(33, 700<<10), "empty/": nil},
	}
	var ids []string
	for _, files := range want {
		id, _ := repotest.WriteSnapshot(t, r, files)
		ids = append(ids, id)
	}
	for i, id := range ids {
		if d := cmp.Diff(want[i], repotest.ReadFiles(t, r, id), vfNilIsEmpty); d != "" {
			t.Errorf("snapshot %d read back wrong (-want +got):\n%s", i, d)
		}
	}
	rep, err := r.Verify(context.Background(), repository.VerifyOptions{Data: true})
	if err != nil || !rep.OK {
		t.Fatalf("verify: %v\n%s", err, rep.Summary())
	}
	if injected.Load() < 10 || retries.Load() < injected.Load() || puts.Load() < 4 || reads.Load() < 8 {
		t.Errorf("%d failures injected (ops %d, puts %d, reads %d), %d retries: the test did not exercise the retries",
			injected.Load(), ops.Load(), puts.Load(), reads.Load(), retries.Load())
	}
}
