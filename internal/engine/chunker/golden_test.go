package chunker

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// Chunk boundaries are part of the repository format: if they changed, a new
// version of Coffer would cut unchanged files differently from the chunks a
// repository already holds, and nothing would deduplicate. The golden file
// freezes the boundaries of deterministic inputs. Never refresh it with
// -update to make a failure go away: a difference means the chunker (or the
// library under it) changed the format, which needs a new repository format
// version.

const goldenFile = "testdata/boundaries.golden.json"

type goldenCase struct {
	Name        string `json:"name"`
	Params      Params `json:"params"`
	Input       string `json:"input"` // a goldenInputs key
	Size        int    `json:"size"`
	Seed        uint64 `json:"seed"`
	InputSHA256 string `json:"input_sha256"`
	Lengths     []int  `json:"lengths"`
}

type golden struct {
	Algorithm string       `json:"algorithm"`
	Cases     []goldenCase `json:"cases"`
}

var goldenCases = []goldenCase{
	{Name: "random, default params", Params: DefaultParams(), Input: "random", Size: 32 << 20, Seed: 1},
	{Name: "text, default params", Params: DefaultParams(), Input: "text", Size: 16 << 20, Seed: 2},
	{Name: "sparse, default params", Params: DefaultParams(), Input: "sparse", Size: 16 << 20, Seed: 3},
	{Name: "random, smallest params", Params: Params{Min: 64 << 10, Avg: 128 << 10, Max: 256 << 10}, Input: "random", Size: 12 << 20, Seed: 4},
	{Name: "random, wide params", Params: Params{Min: 64 << 10, Avg: 1 << 20, Max: 16 << 20}, Input: "random", Size: 32 << 20, Seed: 5},
	{Name: "text, tiny test-only params", Params: Params{Min: 64, Avg: 256, Max: 1024}, Input: "text", Size: 128 << 10, Seed: 6},
	{Name: "sparse, small test-only params", Params: smallParams, Input: "sparse", Size: 1 << 20, Seed: 7},
}

// goldenInputs generate the inputs of the golden cases. They are frozen
// here, not shared with the benchmark generators, so that tuning those
// cannot change the golden inputs; InputSHA256 catches a change anyway.
var goldenInputs = map[string]func(n int, seed uint64) []byte{
	"random": goldenRandom,
	"text":   goldenText,
	"sparse": goldenSparse,
}

// splitmix64 is a tiny, fully specified PRNG: the golden inputs must not
// depend on the standard library's generators staying the same.
type splitmix64 uint64

func (s *splitmix64) next() uint64 {
	*s += 0x9e3779b97f4a7c15
	z := uint64(*s)
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

func goldenRandom(n int, seed uint64) []byte {
	s := splitmix64(seed)
	b := make([]byte, (n+7)&^7)
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], s.next())
	}
	return b[:n]
}

var goldenWords = []string{"func", "return", "if", "err", "nil", "{", "}", "the", "chunk", "pack",
	"index", "blob", "snapshot", "tree", "config", "server", "client", ":=", "for", "range",
	"data", "path", "size", "2024-06-01T12:00:00Z", "INFO", "WARN", "request", "latency=12ms"}

// goldenText returns lines of words from a small vocabulary: low-entropy
// input like source code and logs.
func goldenText(n int, seed uint64) []byte {
	s := splitmix64(seed)
	b := make([]byte, 0, n+64)
	for len(b) < n {
		v := s.next()
		for i := range 1 + v%12 {
			if i > 0 {
				b = append(b, ' ')
			}
			b = append(b, goldenWords[(v>>(8+4*i))%uint64(len(goldenWords))]...)
		}
		b = append(b, '\n')
	}
	return b[:n]
}

// goldenSparse returns 4 KiB blocks, each random or zero, like database
// pages and binaries with padding: long runs where no cut point matches.
func goldenSparse(n int, seed uint64) []byte {
	s := splitmix64(seed)
	b := make([]byte, (n+4095)&^4095)
	for off := 0; off < len(b); off += 4096 {
		if s.next()%3 == 0 {
			continue
		}
		for i := off; i < off+4096; i += 8 {
			binary.LittleEndian.PutUint64(b[i:], s.next())
		}
	}
	return b[:n]
}

func (gc goldenCase) input() []byte { return goldenInputs[gc.Input](gc.Size, gc.Seed) }

// boundaries chunks the case's input with the public API when its params are
// valid for a repository, and with newChunker when they are test-only.
func (gc goldenCase) boundaries(t *testing.T, data []byte) []int {
	t.Helper()
	if gc.Params.Validate() == nil {
		c, err := New(bytes.NewReader(data), gc.Params)
		if err != nil {
			t.Fatal(err)
		}
		return chunkLengths(split(t, c))
	}
	return chunkLengths(splitWith(t, bytes.NewReader(data), gc.Params))
}

func TestGoldenBoundaries(t *testing.T) {
	if *update {
		g := golden{Algorithm: Algorithm}
		for _, gc := range goldenCases {
			data := gc.input()
			sum := sha256.Sum256(data)
			gc.InputSHA256 = hex.EncodeToString(sum[:])
			gc.Lengths = gc.boundaries(t, data)
			g.Cases = append(g.Cases, gc)
		}
		b, err := json.MarshalIndent(g, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(goldenFile), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(goldenFile, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", goldenFile)
	}

	b, err := os.ReadFile(goldenFile)
	if err != nil {
		t.Fatalf("%v (run go test -run TestGoldenBoundaries -update once to create it)", err)
	}
	var g golden
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatalf("%s: %v", goldenFile, err)
	}
	if g.Algorithm != Algorithm {
		t.Errorf("golden boundaries are for algorithm %q, the package implements %q", g.Algorithm, Algorithm)
	}
	if len(g.Cases) != len(goldenCases) {
		t.Errorf("%s has %d cases, the test defines %d: refresh it with -update only when adding cases", goldenFile, len(g.Cases), len(goldenCases))
	}
	for _, want := range g.Cases {
		t.Run(want.Name, func(t *testing.T) {
			if _, ok := goldenInputs[want.Input]; !ok {
				t.Fatalf("unknown input kind %q", want.Input)
			}
			data := want.input()
			if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != want.InputSHA256 {
				t.Fatalf("the %q input generator changed (SHA-256 %x, golden %s): restore it; the boundaries are unverified",
					want.Input, sum, want.InputSHA256)
			}
			got := want.boundaries(t, data)
			if !slices.Equal(got, want.Lengths) {
				t.Errorf("chunk boundaries changed for params %v: this breaks deduplication against every existing repository (-golden +got):\n%s",
					want.Params, cmp.Diff(want.Lengths, got))
			}
		})
	}
}
