//go:build linux

package archiver

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/internal/benchcorpus"
	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/chunker"
)

// The archiver benchmarks measure the walk, read, chunk and hash stages
// on the reference corpus (benchcorpus), apart from the repository: the
// saver already holds every blob, so nothing is compressed or stored.
// BenchmarkIngestCorpus in internal/engine/repository measures a whole
// backup.
//
//	go test -run '^$' -bench Archive -benchtime 3x ./internal/engine/archiver/
//
// The corpus (COFFER_BENCH_SIZE bytes, with a K, M or G suffix or none:
// 1 GiB by default, 64 MiB with -short) is generated once into os.TempDir
// and shared with the repository's benchmarks. Metrics: cpu-s (CPU
// seconds, steadier than MB/s on a shared machine).

// BenchmarkArchiveHashOnly backs the corpus up into a saver that has every
// blob already: the first (untimed) run fills it.
func BenchmarkArchiveHashOnly(b *testing.B) {
	benchArchive(b, false)
}

// BenchmarkArchiveCached backs the corpus up with a change cache that knows
// every file: walk, stat and tree encoding only.
func BenchmarkArchiveCached(b *testing.B) {
	benchArchive(b, true)
}

func benchArchive(b *testing.B, cached bool) {
	dir, size := benchCorpus(b)
	s := &haveAll{}
	codec, err := blob.NewCodec(blob.Keys{IDKey: [32]byte{7}})
	if err != nil {
		b.Fatal(err)
	}
	defer codec.Close()
	o := DefaultOptions(codec)
	o.Chunker = chunker.DefaultParams()
	cache := newBenchCache()
	if cached {
		o.OnFile = cache.record
	}
	a, err := New(o)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	root, st, err := a.Archive(ctx, s, dir) // fills the saver (and the cache)
	if err != nil || len(st.Errors) > 0 {
		b.Fatalf("backup: %v %v", err, st.Errors)
	}
	if cached {
		o.OnFile, o.Cache = nil, cache
		if a, err = New(o); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cpu := cpuTime()
		got, st, err := a.Archive(ctx, s, dir)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		b.ReportMetric((cpuTime() - cpu).Seconds(), "cpu-s")
		if got != root || len(st.Errors) > 0 {
			b.Fatalf("root %s, first %s; errors %v", got.Short(), root.Short(), st.Errors)
		}
		b.StartTimer()
	}
}

// haveAll is a Saver that holds every blob once it has been saved.
type haveAll struct{ m sync.Map }

func (s *haveAll) Missing(ctx context.Context, ids []blob.ID) ([]blob.ID, error) {
	var out []blob.ID
	for _, id := range ids {
		if _, ok := s.m.Load(id); !ok {
			out = append(out, id)
		}
	}
	return out, nil
}

func (s *haveAll) Save(ctx context.Context, t blob.Type, id blob.ID, plaintext []byte, level blob.Compression) (bool, error) {
	_, loaded := s.m.LoadOrStore(id, struct{}{})
	return !loaded, nil
}

// benchCache is a ChangeCache in a map, filled by OnFile.
type benchCache struct {
	mu sync.Mutex
	m  map[string]benchEntry
}

type benchEntry struct {
	st      FileStat
	content []blob.ID
}

func newBenchCache() *benchCache { return &benchCache{m: map[string]benchEntry{}} }

func (c *benchCache) record(p string, st FileStat, content []blob.ID) {
	c.mu.Lock()
	c.m[p] = benchEntry{st, content}
	c.mu.Unlock()
}

func (c *benchCache) Lookup(p string, st FileStat) ([]blob.ID, CacheState) {
	c.mu.Lock()
	e, ok := c.m[p]
	c.mu.Unlock()
	switch {
	case !ok:
		return nil, CacheMiss
	case e.st != st:
		return nil, CacheChanged
	}
	return e.content, CacheUnchanged
}

const envBenchSize = "COFFER_BENCH_SIZE"

var corpusMu sync.Mutex

// benchCorpus returns the corpus directory and its file bytes, generating
// it once (the same cache directory as the repository's benchmarks).
func benchCorpus(b *testing.B) (string, int64) {
	size := int64(1 << 30)
	if testing.Short() {
		size = 64 << 20
	}
	if s := os.Getenv(envBenchSize); s != "" {
		shift := 0
		switch {
		case strings.HasSuffix(s, "K"):
			shift = 10
		case strings.HasSuffix(s, "M"):
			shift = 20
		case strings.HasSuffix(s, "G"):
			shift = 30
		}
		n, err := strconv.ParseInt(strings.TrimRight(s, "KMG"), 10, 64)
		if err != nil || n <= 0 {
			b.Fatalf("%s=%q: want a number of bytes, with a K, M or G suffix or none", envBenchSize, s)
		}
		size = n << shift
	}
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("coffer-bench-corpus-%d-seed1", size))
	corpusMu.Lock()
	defer corpusMu.Unlock()
	if _, err := os.Stat(dir + ".complete"); err != nil {
		if err := os.RemoveAll(dir); err != nil {
			b.Fatal(err)
		}
		if err := benchcorpus.Generate(dir, size, 1); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(dir+".complete", nil, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	var n int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		fi, err := d.Info()
		if err == nil {
			n += fi.Size()
		}
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return dir, n
}

// cpuTime returns the CPU time (user and system) the process used so far.
func cpuTime() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
