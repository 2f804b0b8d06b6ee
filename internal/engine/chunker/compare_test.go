package chunker

import (
	"bytes"
	"io"
	"slices"
	"sync"
	"testing"

	cdc "github.com/PlakarKorp/go-cdc-chunkers"
	jotfs "github.com/jotfs/fastcdc-go"
)

// This file compares the two FastCDC libraries considered for the package
// and the package's own cut loop (see the package documentation for the
// outcome): their speed (BenchmarkLibrary) and their behaviour
// (TestCompareLibraries). The libraries are driven directly, with the same
// parameters. PlakarKorp's is also the reference that Chunker must cut
// exactly like (TestMatchesReference, FuzzChunker).

// library splits a stream with one FastCDC implementation and calls emit
// with each chunk, which is valid only during the call.
type library struct {
	name  string
	split func(r io.Reader, p Params, emit func([]byte)) error
}

var libraries = []library{
	{"coffer", splitCoffer},
	{"plakar", splitPlakar},
	{"jotfs", splitJotfs},
}

// reference is the implementation that defines Algorithm.
var reference = libraries[1]

func splitCoffer(r io.Reader, p Params, emit func([]byte)) error {
	c, err := newChunker(r, p, make([]byte, BufferSize(p)))
	if err != nil {
		return err
	}
	return drain(c.Next, emit)
}

func splitPlakar(r io.Reader, p Params, emit func([]byte)) error {
	c, err := cdc.NewChunker(Algorithm, r, &cdc.ChunkerOpts{MinSize: p.Min, NormalSize: p.Avg, MaxSize: p.Max})
	if err != nil {
		return err
	}
	return drain(c.Next, emit)
}

func splitJotfs(r io.Reader, p Params, emit func([]byte)) error {
	c, err := jotfs.NewChunker(r, jotfs.Options{MinSize: p.Min, AverageSize: p.Avg, MaxSize: p.Max})
	if err != nil {
		return err
	}
	return drain(func() ([]byte, error) { chunk, err := c.Next(); return chunk.Data, err }, emit)
}

// drain calls next until io.EOF and emits every non-empty chunk, including
// one returned together with io.EOF (the PlakarKorp library returns a last
// chunk shorter than Min that way).
func drain(next func() ([]byte, error), emit func([]byte)) error {
	for {
		chunk, err := next()
		if len(chunk) > 0 {
			emit(chunk)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// dataKinds are the benchmark and comparison inputs, generated once.
var dataKinds = []struct {
	name string
	gen  func(n int, seed uint64) []byte
}{
	{"random", randomData},
	{"text", textData},
	{"mixed", mixedData},
}

var (
	benchDataMu sync.Mutex
	benchData   = map[string][]byte{}
)

const benchSize = 64 << 20

// sharedData returns the 64 MiB input of the named kind, generated on first use.
func sharedData(kind string) []byte {
	benchDataMu.Lock()
	defer benchDataMu.Unlock()
	if b, ok := benchData[kind]; ok {
		return b
	}
	for _, k := range dataKinds {
		if k.name == kind {
			benchData[kind] = k.gen(benchSize, 1)
			return benchData[kind]
		}
	}
	panic("unknown data kind " + kind)
}

func BenchmarkLibrary(b *testing.B) {
	p := DefaultParams()
	for _, lib := range libraries {
		for _, kind := range dataKinds {
			b.Run(lib.name+"/"+kind.name, func(b *testing.B) {
				data := sharedData(kind.name)
				b.SetBytes(int64(len(data)))
				b.ReportAllocs()
				var chunks int
				for b.Loop() {
					chunks = 0
					if err := lib.split(bytes.NewReader(data), p, func([]byte) { chunks++ }); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(len(data))/float64(chunks)/(1<<10), "KiB/chunk")
			})
		}
	}
}

// lengths returns the chunk lengths lib cuts r into.
func lengths(t testing.TB, lib library, r io.Reader, p Params) []int {
	t.Helper()
	var ls []int
	if err := lib.split(r, p, func(c []byte) { ls = append(ls, len(c)) }); err != nil {
		t.Fatalf("%s: %v", lib.name, err)
	}
	return ls
}

// chunkSet returns the chunks lib cuts data into, as a set of strings.
func chunkSet(t testing.TB, lib library, data []byte, p Params) (set map[string]bool, n int) {
	t.Helper()
	set = map[string]bool{}
	if err := lib.split(bytes.NewReader(data), p, func(c []byte) { set[string(c)] = true; n++ }); err != nil {
		t.Fatalf("%s: %v", lib.name, err)
	}
	return set, n
}

// resync reports how many of the chunks of edited are also chunks of orig,
// and the fraction of edited's bytes they cover.
func resync(t testing.TB, lib library, orig, edited []byte, p Params) (shared, total int, bytesShared float64) {
	t.Helper()
	before, _ := chunkSet(t, lib, orig, p)
	var sharedBytes int
	if err := lib.split(bytes.NewReader(edited), p, func(c []byte) {
		total++
		if before[string(c)] {
			shared++
			sharedBytes += len(c)
		}
	}); err != nil {
		t.Fatal(err)
	}
	return shared, total, float64(sharedBytes) / float64(len(edited))
}

// edits are the changes TestCompareLibraries measures re-synchronisation on.
var edits = []struct {
	name string
	edit func([]byte) []byte
}{
	{"insert 5 B at 1 KiB", func(b []byte) []byte { return slices.Insert(slices.Clone(b), 1<<10, []byte("hello")...) }},
	{"insert 3 B at 300 KiB", func(b []byte) []byte { return slices.Insert(slices.Clone(b), 300<<10, 1, 2, 3) }},
	{"delete 100 B at 10 KiB", func(b []byte) []byte { return slices.Delete(slices.Clone(b), 10<<10, 10<<10+100) }},
	{"insert 4 KiB mid-file", func(b []byte) []byte {
		return slices.Insert(slices.Clone(b), len(b)/2, randomData(4<<10, 99)...)
	}},
}

// TestCompareLibraries logs, for both libraries and the default params,
// the chunk size distribution, whether Min and Max hold, whether boundaries
// depend on read sizes, and how many chunks survive a small edit. It fails
// on a broken invariant of either library.
func TestCompareLibraries(t *testing.T) {
	p := DefaultParams()
	libs := libraries
	if raceEnabled {
		// The race detector makes this the package's slowest test; jotfs
		// is here for the record of the choice, not to check this package.
		libs = libs[:2]
	}
	for _, kind := range dataKinds {
		data := kind.gen(testSize(64<<20), 1)
		for _, lib := range libs {
			t.Run(kind.name+"/"+lib.name, func(t *testing.T) {
				ls := lengths(t, lib, bytes.NewReader(data), p)
				checkBounds(t, ls, len(data), p)
				lo, hi := slices.Min(ls[:len(ls)-1]), slices.Max(ls)
				t.Logf("%d chunks, mean %d KiB, min %d KiB, max %d KiB", len(ls), len(data)/len(ls)>>10, lo>>10, hi>>10)

				odd := lengths(t, lib, &oddReader{r: bytes.NewReader(data)}, p)
				if !slices.Equal(ls, odd) {
					t.Errorf("boundaries depend on read sizes: %d chunks with whole reads, %d with odd-sized reads", len(ls), len(odd))
				}

				for _, e := range edits {
					shared, total, frac := resync(t, lib, data, e.edit(data), p)
					t.Logf("%-24s %3d of %3d chunks shared, %5.1f %% of bytes", e.name+":", shared, total, 100*frac)
				}
			})
		}
	}
}

// checkBounds fails unless the lengths add up to n and every chunk but the
// last is within [p.Min, p.Max], the last within [1, p.Max].
func checkBounds(t testing.TB, ls []int, n int, p Params) {
	t.Helper()
	sum := 0
	for i, l := range ls {
		sum += l
		if l > p.Max || l < 1 || (l < p.Min && i < len(ls)-1) {
			t.Errorf("chunk %d of %d is %d bytes, outside [%d, %d]", i, len(ls), l, p.Min, p.Max)
		}
	}
	if sum != n {
		t.Errorf("chunks add up to %d bytes, want %d", sum, n)
	}
}

// oddReader returns reads of a repeating pattern of awkward sizes, and now
// and then an empty read, as pipes and network streams do.
type oddReader struct {
	r io.Reader
	i int
}

var oddSizes = []int{1, 7, 0, 4093, 13, 65537, 2, 1 << 20, 333, 0, 8191}

func (o *oddReader) Read(b []byte) (int, error) {
	n := oddSizes[o.i%len(oddSizes)]
	o.i++
	return o.r.Read(b[:min(n, len(b))])
}

// TestMatchesReference checks that Chunker cuts exactly where the library
// that defines Algorithm cuts, for every kind of data, a range of
// parameters (including the library's own defaults, which have fixed masks)
// and lengths around the bounds; FuzzChunker checks the same on arbitrary
// input.
func TestMatchesReference(t *testing.T) {
	params := []Params{
		DefaultParams(),
		{Min: 64 << 10, Avg: 128 << 10, Max: 256 << 10},
		{Min: 64 << 10, Avg: 1 << 20, Max: 16 << 20},
		smallParams,
		{Min: 2 << 10, Avg: 8 << 10, Max: 64 << 10},
		{Min: 64, Avg: 256, Max: 1024},
	}
	for _, kind := range dataKinds {
		data := kind.gen(testSize(12<<20), 31)
		for _, p := range params {
			for _, n := range []int{0, 1, p.Min, p.Min + 1, p.Avg, p.Max, p.Max + 1, 3*p.Max + 17, len(data)} {
				in := data[:min(n, len(data))]
				want := lengths(t, reference, bytes.NewReader(in), p)
				got := chunkLengths(splitWith(t, bytes.NewReader(in), p))
				if !slices.Equal(got, want) {
					t.Errorf("%s, params %v, %d bytes: cut into %v, the reference into %v", kind.name, p, len(in), got, want)
				}
			}
		}
	}
}
