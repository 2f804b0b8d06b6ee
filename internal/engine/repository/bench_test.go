package repository_test

import (
	"bufio"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/internal/benchcorpus"
	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/chunker"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/tree"
	"github.com/cofferhq/coffer/internal/metadb"
)

// The corpus benchmarks measure a whole backup and a whole restore of the
// reference corpus (benchcorpus: ~16k files, 48 % in four large files) on
// a local repository indexed in SQLite, the embedded default:
//
//	go test -run '^$' -bench Corpus -benchtime 1x -count 3 ./internal/engine/repository/
//
// COFFER_BENCH_CORPUS names a directory to back up instead; otherwise a
// corpus of COFFER_BENCH_SIZE bytes (default 1 GiB, 64 MiB with -short) is
// generated once into a cache directory under os.TempDir and reused.
// Restores go to a fresh directory under COFFER_BENCH_RESTORE_DIR (default
// os.TempDir): pointing it at a tmpfs separates the restorer's cost from
// the file system's (creating a file costs 5 µs on tmpfs and 30–300 µs of
// CPU on the ext4 of the project's machines).
// MB/s is of the corpus's file bytes. Metrics: dedup (file bytes per
// plaintext byte stored), ratio (plaintext per stored byte after
// compression), repo-MiB (pack bytes), cpu-s (CPU seconds, user and
// system: steadier than MB/s on a shared machine, and cpu-s/GOMAXPROCS
// bounds the wall time), peak-RSS-MiB (VmHWM: process-wide, so it includes
// whatever ran before in the same process).
const (
	EnvBenchCorpus     = "COFFER_BENCH_CORPUS"
	EnvBenchSize       = "COFFER_BENCH_SIZE"
	EnvBenchRestoreDir = "COFFER_BENCH_RESTORE_DIR"
)

func BenchmarkIngestCorpus(b *testing.B) {
	dir, size := benchCorpus(b)
	ctx := context.Background()
	b.SetBytes(size)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		repo, cleanup := benchRepo(b)
		cpu := cpuTime()
		b.StartTimer()
		_, stats, errs, err := backupCorpus(ctx, repo, dir)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		b.ReportMetric((cpuTime() - cpu).Seconds(), "cpu-s")
		if len(errs) > 0 {
			b.Fatalf("backup errors: %v", errs)
		}
		ws := repoStats(b, repo)
		b.ReportMetric(float64(stats.Bytes)/float64(ws.raw), "dedup")
		b.ReportMetric(float64(ws.raw)/float64(stats.AddedBytes), "ratio")
		b.ReportMetric(float64(ws.packBytes)/(1<<20), "repo-MiB")
		b.ReportMetric(peakRSS(b), "peak-RSS-MiB")
		cleanup()
		b.StartTimer()
	}
}

func BenchmarkRestoreCorpus(b *testing.B) {
	ctx := context.Background()
	repo, id, size := storedCorpus(b)
	b.SetBytes(size)
	b.ResetTimer()
	parent := os.Getenv(EnvBenchRestoreDir)
	for i := 0; i < b.N; i++ {
		dst, err := os.MkdirTemp(parent, "coffer-bench-restore-")
		if err != nil {
			b.Fatal(err)
		}
		cpu := cpuTime()
		st, err := restoreCorpus(ctx, repo, id, dst)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		b.ReportMetric((cpuTime() - cpu).Seconds(), "cpu-s")
		if len(st.Errors) > 0 {
			b.Fatalf("restore errors: %v", st.Errors)
		}
		if err := os.RemoveAll(dst); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(peakRSS(b), "peak-RSS-MiB")
		b.StartTimer()
	}
}

// storedCorpus backs the corpus up into a fresh benchRepo, removed when the
// benchmark ends, and returns it with the snapshot id and the corpus size.
func storedCorpus(b *testing.B) (*repository.Repository, string, int64) {
	dir, size := benchCorpus(b)
	repo, cleanup := benchRepo(b)
	b.Cleanup(cleanup)
	id, _, errs, err := backupCorpus(context.Background(), repo, dir)
	if err != nil || len(errs) > 0 {
		b.Fatalf("backup: %v %v", err, errs)
	}
	return repo, id, size
}

// benchRepo creates a local repository in a fresh directory with a fresh
// SQLite index, and a function removing both.
func benchRepo(b *testing.B) (*repository.Repository, func()) {
	dir, err := os.MkdirTemp("", "coffer-bench-repo-")
	if err != nil {
		b.Fatal(err)
	}
	db, err := metadb.Open(context.Background(), metadb.Options{URL: "sqlite://" + filepath.Join(dir, "coffer.db")})
	if err != nil {
		b.Fatal(err)
	}
	if err := db.Migrate(context.Background(), nil); err != nil {
		b.Fatal(err)
	}
	backend := openLocal(b, filepath.Join(dir, "repo"))
	repo := openCorpusRepo(b, backend, db, false, chunker.Params{})
	return repo, func() {
		db.Close()
		os.RemoveAll(dir)
	}
}

type packTotals struct{ raw, packBytes int64 }

// repoStats sums what the repository holds.
func repoStats(b *testing.B, repo *repository.Repository) packTotals {
	var t packTotals
	ctx := context.Background()
	err := repo.Index().Packs(ctx, func(p repository.PackInfo) error {
		t.packBytes += p.Size
		return nil
	})
	if err == nil {
		err = repo.Index().Blobs(ctx, func(ib repository.IndexedBlob) error {
			t.raw += int64(ib.RawLength)
			return nil
		})
	}
	if err != nil {
		b.Fatal(err)
	}
	return t
}

var corpusOnce sync.Map // size → *corpusResult

type corpusResult struct {
	once sync.Once
	dir  string
	size int64
	err  error
}

// benchCorpus returns the corpus directory and its file bytes.
func benchCorpus(b *testing.B) (string, int64) {
	dir := os.Getenv(EnvBenchCorpus)
	size := int64(1 << 30)
	if testing.Short() {
		size = 64 << 20
	}
	if s := os.Getenv(EnvBenchSize); s != "" {
		n, err := parseSize(s)
		if err != nil {
			b.Fatalf("%s: %v", EnvBenchSize, err)
		}
		size = n
	}
	if dir == "" {
		dir = filepath.Join(os.TempDir(), fmt.Sprintf("coffer-bench-corpus-%d-seed1", size))
	}
	v, _ := corpusOnce.LoadOrStore(dir, &corpusResult{})
	c := v.(*corpusResult)
	c.once.Do(func() {
		c.dir = dir
		if os.Getenv(EnvBenchCorpus) == "" {
			c.err = cachedCorpus(dir, size)
		}
		if c.err == nil {
			c.size, c.err = fileBytes(dir)
		}
	})
	if c.err != nil {
		b.Fatal(c.err)
	}
	return c.dir, c.size
}

// cachedCorpus generates the corpus unless a complete one is there: a
// marker file beside it records completion.
func cachedCorpus(dir string, size int64) error {
	done := dir + ".complete"
	if _, err := os.Stat(done); err == nil {
		return nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := benchcorpus.Generate(dir, size, 1); err != nil {
		return err
	}
	return os.WriteFile(done, nil, 0o644)
}

func fileBytes(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	return n, err
}

// cpuTime returns the CPU time (user and system) the process used so far:
// with other work on the machine, CPU seconds per run say more about the
// code than wall time does.
func cpuTime() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// peakRSS returns the process's peak resident set (VmHWM) in MiB.
func peakRSS(b *testing.B) float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb / 1024
		}
	}
	return 0
}

// BenchmarkReadBackCorpus reads every file of the stored corpus back
// through the engine — walk the trees, look up the blobs, read packs,
// authenticate, decompress, re-hash — on both cores, without writing files:
// the engine's read path apart from the file system's (see
// BenchmarkRestoreCorpus for a restore to disk).
func BenchmarkReadBackCorpus(b *testing.B) {
	ctx := context.Background()
	repo, id, size := storedCorpus(b)
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cpu := cpuTime()
		n, err := readBack(ctx, repo, id, runtime.GOMAXPROCS(0))
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		b.ReportMetric((cpuTime() - cpu).Seconds(), "cpu-s")
		if n != size {
			b.Fatalf("read back %d bytes of file content, the corpus has %d", n, size)
		}
		b.ReportMetric(peakRSS(b), "peak-RSS-MiB")
		b.StartTimer()
	}
}

// readBack reads the content of every file of snapshot id with workers
// goroutines, each taking a contiguous share of the files' blobs (which
// keeps the packs each one reads apart), and returns the bytes read.
func readBack(ctx context.Context, repo *repository.Repository, id string, workers int) (int64, error) {
	snap, err := repo.LoadSnapshot(ctx, id)
	if err != nil {
		return 0, err
	}
	var ids []blob.ID
	err = repo.Walk(ctx, snap.Tree, func(_ string, n *tree.Node) error {
		ids = append(ids, n.Content...)
		return nil
	})
	if err != nil {
		return 0, err
	}
	var total atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for w := range workers {
		share := ids[w*len(ids)/workers : (w+1)*len(ids)/workers]
		g.Go(func() error {
			for len(share) > 0 {
				batch := share[:min(1000, len(share))]
				share = share[len(batch):]
				locs, err := repo.Locate(gctx, batch)
				if err != nil {
					return err
				}
				reqs := make([]repository.BlobRequest, len(batch))
				for i, id := range batch {
					loc, ok := locs[id]
					if !ok {
						return fmt.Errorf("blob %s is not indexed", id)
					}
					reqs[i] = repository.BlobRequest{ID: id, Loc: loc}
				}
				err = repo.ReadBlobs(gctx, blob.Data, reqs, func(_ int, plain []byte, err error) error {
					total.Add(int64(len(plain)))
					return err
				})
				if err != nil {
					return err
				}
			}
			return nil
		})
	}
	err = g.Wait()
	return total.Load(), err
}
