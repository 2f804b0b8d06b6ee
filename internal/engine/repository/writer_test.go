package repository_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/blobstore/mem"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/repository/memindex"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
	"github.com/google/go-cmp/cmp"
)

func TestSnapshotRoundTrip(t *testing.T) {
	for _, encrypted := range []bool{false, true} {
		t.Run(fmt.Sprintf("encrypted=%v", encrypted), func(t *testing.T) {
			r := repotest.New(t, repotest.Options{Encrypted: encrypted})
			files := repotest.Files{
				"a.txt":           []byte("hello"),
				"dir/big.bin":     repotest.Random(1, 3<<20),
				"dir/sub/empty":   {},
				"dir/sub/text":    bytes.Repeat([]byte("compressible line\n"), 50000),
				"empty-dir/":      nil,
				"dir/copy-of-big": repotest.Random(1, 3<<20),
			}
			id, _ := repotest.WriteSnapshot(t, r, files)
			got := repotest.ReadFiles(t, r, id)
			if diff := cmp.Diff(files, got, cmp.Comparer(bytes.Equal)); diff != "" {
				t.Fatalf("snapshot read back differs (-want +got):\n%s", diff)
			}
			// The duplicate file added no blobs.
			var packBytes int64
			r.Index().Packs(context.Background(), func(p repository.PackInfo) error { packBytes += p.Size; return nil })
			if packBytes > 5<<20 {
				t.Errorf("packs hold %d bytes: duplicate content was stored twice", packBytes)
			}
			snaps, err := r.Snapshots(context.Background())
			if err != nil || len(snaps) != 1 || snaps[0].ID != id {
				t.Fatalf("Snapshots = %v, %v; want just %s", snaps, err, id)
			}
			// The manifest object authenticates and matches the index.
			manifest, _, err := r.ReadSnapshotObject(context.Background(), id)
			if err != nil || !bytes.Equal(manifest, snaps[0].Manifest) {
				t.Fatalf("ReadSnapshotObject = %v; manifest equal: %v", err, bytes.Equal(manifest, snaps[0].Manifest))
			}
		})
	}
}

// TestWriterConcurrentSaves saves the same and different blobs from many
// goroutines: everything is readable, and each id has one index row (a
// blob saved again after its pack was indexed is a harmless duplicate).
func TestWriterConcurrentSaves(t *testing.T) {
	r := repotest.New(t, repotest.Options{})
	ctx := context.Background()
	w, err := r.NewWriter(ctx, repository.WriterOptions{Uploads: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	chunks := make([][]byte, 40)
	for i := range chunks {
		chunks[i] = repotest.Random(uint64(i), 100<<10)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range chunks {
				c := chunks[(i+g*5)%len(chunks)]
				if _, err := w.Save(ctx, blob.Data, r.BlobID(c), c, blob.Fastest); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if st := w.Stats(); st.Blobs < len(chunks) || st.Packs < 3 {
		t.Errorf("stats %+v: want at least %d blobs in several packs", st, len(chunks))
	}
	rows := 0
	r.Index().Blobs(ctx, func(repository.IndexedBlob) error { rows++; return nil })
	if rows != len(chunks) {
		t.Errorf("%d index rows, want %d", rows, len(chunks))
	}
	for _, c := range chunks {
		got, err := r.LoadBlob(ctx, blob.Data, r.BlobID(c), nil)
		if err != nil || !bytes.Equal(got, c) {
			t.Fatalf("LoadBlob: %v (equal %v)", err, bytes.Equal(got, c))
		}
	}
	missing, err := w.Missing(ctx, []blob.ID{r.BlobID(chunks[0]), r.BlobID([]byte("absent"))})
	if err != nil || len(missing) != 1 || missing[0] != r.BlobID([]byte("absent")) {
		t.Fatalf("Missing = %v, %v", missing, err)
	}
}

// TestWriterUploadFailure: a pack that cannot be stored fails the writer
// with an error naming it, and nothing of it is indexed.
func TestWriterUploadFailure(t *testing.T) {
	boom := errors.New("disk full")
	backend := mem.New(mem.Options{Name: "failing", BeforeOp: func(op mem.Op, name string) error {
		if op == mem.OpPut && name != repository.ConfigName {
			return boom
		}
		return nil
	}})
	r := repotest.New(t, repotest.Options{Backend: backend, Index: memindex.New(memindex.Options{})})
	ctx := context.Background()
	w, err := r.NewWriter(ctx, repository.WriterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	c := repotest.Random(7, 1000)
	if _, err := w.Save(ctx, blob.Data, r.BlobID(c), c, blob.Fastest); err != nil {
		t.Fatal(err)
	}
	err = w.Flush(ctx)
	if !errors.Is(err, boom) {
		t.Fatalf("Flush = %v, want the backend's error", err)
	}
	if _, err := r.LoadBlob(ctx, blob.Data, r.BlobID(c), nil); !errors.Is(err, repository.ErrNotIndexed) {
		t.Fatalf("LoadBlob after a failed upload = %v, want ErrNotIndexed", err)
	}
}

// TestWritersReusePackBuffers runs writers one after another, as the
// server does with one writer per upload request, each saving a little and
// flushing. A writer that kept an empty pack buffer after its Flush would
// drop it at Close, and every request would allocate (and zero) a new one.
func TestWritersReusePackBuffers(t *testing.T) {
	const packSize, rounds = 8 << 20, 20
	r := repotest.New(t, repotest.Options{PackSize: packSize})
	ctx := context.Background()
	round := func(i int) {
		w, err := r.NewWriter(ctx, repository.WriterOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		data := repotest.Random(uint64(i), 4<<10)
		if _, err := w.Save(ctx, blob.Data, r.Codec().ID(data), data, blob.Off); err != nil {
			t.Fatal(err)
		}
		if err := w.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	round(-1) // the first writer allocates its buffers
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range rounds {
		round(i)
	}
	runtime.ReadMemStats(&after)
	// The race detector drops a quarter of sync.Pool puts on purpose, so
	// allow for some new buffers, just not one a round.
	if perRound := (after.TotalAlloc - before.TotalAlloc) / rounds; perRound > packSize/2 {
		t.Errorf("each writer allocated %d bytes: want the pack buffers reused (pack size %d)", perRound, packSize)
	}
}
