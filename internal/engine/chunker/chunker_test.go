package chunker

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"testing"
	"testing/iotest"

	"github.com/cofferhq/coffer"
)

// smallParams make many chunks out of little input; only tests may use them
// (they are below MinSizeFloor).
var smallParams = Params{Min: 4 << 10, Avg: 16 << 10, Max: 64 << 10}

// split returns the chunks c cuts, copied, and fails the test on an error.
func split(t testing.TB, c *Chunker) [][]byte {
	t.Helper()
	var chunks [][]byte
	for {
		chunk, err := c.Next()
		if err == io.EOF {
			if chunk != nil {
				t.Fatalf("Next returned %d bytes with io.EOF", len(chunk))
			}
			return chunks
		}
		if err != nil {
			t.Fatalf("Next after %d chunks: %v", len(chunks), err)
		}
		chunks = append(chunks, slices.Clone(chunk))
	}
}

// splitWith chunks the stream r with p, bypassing the repository bounds.
func splitWith(t testing.TB, r io.Reader, p Params) [][]byte {
	t.Helper()
	c, err := newChunker(r, p, make([]byte, BufferSize(p)))
	if err != nil {
		t.Fatal(err)
	}
	return split(t, c)
}

func chunkLengths(chunks [][]byte) []int {
	ls := make([]int, len(chunks))
	for i, c := range chunks {
		ls[i] = len(c)
	}
	return ls
}

// checkChunks fails unless chunks concatenate to data and respect p.
func checkChunks(t testing.TB, chunks [][]byte, data []byte, p Params) {
	t.Helper()
	if got := bytes.Join(chunks, nil); !bytes.Equal(got, data) {
		t.Fatalf("chunks concatenate to %d bytes that differ from the %d-byte input", len(got), len(data))
	}
	checkBounds(t, chunkLengths(chunks), len(data), p)
}

func TestDefaultParams(t *testing.T) {
	p := DefaultParams()
	if want := (Params{Min: 256 << 10, Avg: 1 << 20, Max: 4 << 20}); p != want {
		t.Errorf("DefaultParams() = %v, want %v", p, want)
	}
	if err := p.Validate(); err != nil {
		t.Errorf("DefaultParams().Validate() = %v", err)
	}
}

func TestParamsValidate(t *testing.T) {
	tests := []struct {
		name string
		p    Params
		ok   bool
	}{
		{"default", DefaultParams(), true},
		{"smallest", Params{Min: 64 << 10, Avg: 128 << 10, Max: 256 << 10}, true},
		{"largest", Params{Min: 4 << 20, Avg: 8 << 20, Max: 16 << 20}, true},
		{"wide", Params{Min: 64 << 10, Avg: 1 << 20, Max: 16 << 20}, true},
		{"zero", Params{}, false},
		{"min below floor", Params{Min: 32 << 10, Avg: 1 << 20, Max: 4 << 20}, false},
		{"max above ceiling", Params{Min: 1 << 20, Avg: 4 << 20, Max: 32 << 20}, false},
		{"avg not a power of two", Params{Min: 256 << 10, Avg: 1000 << 10, Max: 4 << 20}, false},
		{"min not a power of two", Params{Min: 300 << 10, Avg: 1 << 20, Max: 4 << 20}, false},
		{"max not a power of two", Params{Min: 256 << 10, Avg: 1 << 20, Max: 5 << 20}, false},
		{"min equals avg", Params{Min: 1 << 20, Avg: 1 << 20, Max: 4 << 20}, false},
		{"avg equals max", Params{Min: 256 << 10, Avg: 4 << 20, Max: 4 << 20}, false},
		{"min above avg", Params{Min: 2 << 20, Avg: 1 << 20, Max: 4 << 20}, false},
		{"negative", Params{Min: -256 << 10, Avg: 1 << 20, Max: 4 << 20}, false},
		{"small, tests only", smallParams, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Validate()
			if tt.ok {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				if _, err := New(bytes.NewReader(nil), tt.p); err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate() = nil, want an error")
			}
			if !coffer.IsKind(err, coffer.KindInvalid) || coffer.ErrorCode(err) != "invalid_chunker_params" {
				t.Errorf("Validate() = %v (kind %q, code %q), want kind invalid, code invalid_chunker_params",
					err, coffer.ErrorKind(err), coffer.ErrorCode(err))
			}
			if _, err := New(bytes.NewReader(nil), tt.p); err == nil {
				t.Error("New accepted invalid params")
			}
			if _, err := NewBuffer(bytes.NewReader(nil), tt.p, make([]byte, 64<<20)); err == nil {
				t.Error("NewBuffer accepted invalid params")
			}
		})
	}
}

func TestNewBufferTooSmall(t *testing.T) {
	p := DefaultParams()
	if _, err := NewBuffer(bytes.NewReader(nil), p, make([]byte, p.Max-1)); err == nil {
		t.Fatal("NewBuffer accepted a buffer shorter than Max")
	}
	c, err := NewBuffer(bytes.NewReader(randomData(10<<20, 5)), p, make([]byte, p.Max))
	if err != nil {
		t.Fatalf("NewBuffer with a buffer of exactly Max: %v", err)
	}
	want := chunkLengths(splitWith(t, bytes.NewReader(randomData(10<<20, 5)), p))
	if got := chunkLengths(split(t, c)); !slices.Equal(got, want) {
		t.Errorf("boundaries with a Max-sized buffer %v, with the default buffer %v", got, want)
	}
}

func TestChunkInvariants(t *testing.T) {
	for _, kind := range dataKinds {
		data := kind.gen(testSize(32<<20), 7)
		for _, p := range []Params{DefaultParams(), smallParams, {Min: 64 << 10, Avg: 128 << 10, Max: 16 << 20}} {
			t.Run(kind.name+"/"+p.String(), func(t *testing.T) {
				chunks := splitWith(t, bytes.NewReader(data), p)
				checkChunks(t, chunks, data, p)
				if mean := len(data) / len(chunks); mean < p.Min || mean > 2*p.Avg {
					t.Errorf("mean chunk size %d, want between Min (%d) and 2×Avg (%d)", mean, p.Min, 2*p.Avg)
				}
			})
		}
	}
}

func TestEmptyInput(t *testing.T) {
	c, err := New(bytes.NewReader(nil), DefaultParams())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if chunk, err := c.Next(); chunk != nil || err != io.EOF {
			t.Fatalf("Next #%d on empty input = (%d bytes, %v), want (nil, io.EOF)", i, len(chunk), err)
		}
	}
}

// TestSizesAroundBounds chunks inputs whose sizes sit at the edges of the
// parameters, where cut-point arithmetic goes wrong first.
func TestSizesAroundBounds(t *testing.T) {
	p := DefaultParams()
	data := randomData(3*p.Max, 11)
	for _, n := range []int{1, 2, 4095, p.Min - 1, p.Min, p.Min + 1, p.Avg - 1, p.Avg, p.Avg + 1,
		p.Max - 1, p.Max, p.Max + 1, 2*p.Max - 1, 2 * p.Max, 2*p.Max + 1, 3 * p.Max} {
		chunks := splitWith(t, bytes.NewReader(data[:n]), p)
		checkChunks(t, chunks, data[:n], p)
		if n <= p.Min && len(chunks) != 1 {
			t.Errorf("%d bytes (≤ Min) made %d chunks, want 1", n, len(chunks))
		}
	}
	// Zeros never match a cut mask: every chunk is Max long.
	zeros := make([]byte, 3*p.Max+5)
	ls := chunkLengths(splitWith(t, bytes.NewReader(zeros), p))
	if want := []int{p.Max, p.Max, p.Max, 5}; !slices.Equal(ls, want) {
		t.Errorf("zeros cut into %v, want %v", ls, want)
	}
}

// TestReadPatterns checks that boundaries depend only on the content, not
// on how the reader hands it over.
func TestReadPatterns(t *testing.T) {
	cases := []struct {
		name string
		p    Params
		data []byte
	}{
		{"default", DefaultParams(), mixedData(testSize(24<<20), 3)},
		{"small", smallParams, textData(2<<20, 3)},
	}
	readers := []struct {
		name string
		wrap func(io.Reader) io.Reader
	}{
		{"odd sizes", func(r io.Reader) io.Reader { return &oddReader{r: r} }},
		{"half reads", iotest.HalfReader},
		{"EOF with data", iotest.DataErrReader},
		{"one byte", iotest.OneByteReader},
	}
	for _, tc := range cases {
		want := chunkLengths(splitWith(t, bytes.NewReader(tc.data), tc.p))
		for _, rd := range readers {
			if rd.name == "one byte" && len(tc.data) > 4<<20 {
				continue // 24 M calls to Read take long under -race; "small" covers it
			}
			t.Run(tc.name+"/"+rd.name, func(t *testing.T) {
				chunks := splitWith(t, rd.wrap(bytes.NewReader(tc.data)), tc.p)
				checkChunks(t, chunks, tc.data, tc.p)
				if got := chunkLengths(chunks); !slices.Equal(got, want) {
					t.Errorf("boundaries differ from whole reads:\n got %v\nwant %v", got, want)
				}
			})
		}
	}
}

func TestReaderError(t *testing.T) {
	boom := errors.New("disk on fire")
	p := smallParams
	data := randomData(1<<20, 9)
	r := io.MultiReader(bytes.NewReader(data), iotest.ErrReader(boom))
	c, err := newChunker(r, p, make([]byte, p.Max))
	if err != nil {
		t.Fatal(err)
	}
	var n int
	for {
		chunk, err := c.Next()
		if err != nil {
			// A read error must never pass for the end of the stream.
			if !errors.Is(err, boom) {
				t.Fatalf("Next = %v after %d bytes, want the reader's error", err, n)
			}
			break
		}
		n += len(chunk)
	}
	if _, err := c.Next(); !errors.Is(err, boom) {
		t.Errorf("Next after the error = %v, want the same error again", err)
	}
	// Reset clears the error.
	c.Reset(bytes.NewReader(data))
	checkChunks(t, split(t, c), data, p)
}

// TestResetReuse checks that a reset Chunker cuts like a new one and that
// chunking allocates nothing per chunk or per stream.
func TestResetReuse(t *testing.T) {
	p := DefaultParams()
	a, b := mixedData(12<<20, 21), randomData(9<<20, 22)
	c, err := New(bytes.NewReader(a), p)
	if err != nil {
		t.Fatal(err)
	}
	split(t, c)
	c.Reset(bytes.NewReader(b))
	got := chunkLengths(split(t, c))
	if want := chunkLengths(splitWith(t, bytes.NewReader(b), p)); !slices.Equal(got, want) {
		t.Errorf("after Reset: %v, fresh chunker: %v", got, want)
	}
	if c.Params() != p {
		t.Errorf("Params() = %v, want %v", c.Params(), p)
	}

	r := bytes.NewReader(nil)
	allocs := testing.AllocsPerRun(5, func() {
		r.Reset(a)
		c.Reset(r)
		for {
			if _, err := c.Next(); err != nil {
				break
			}
		}
	})
	if allocs > 0 {
		t.Errorf("chunking a reset stream allocates %.1f times, want 0", allocs)
	}
}

// TestResync checks that content-defined chunking re-synchronises after an
// edit: only the chunks around it change.
func TestResync(t *testing.T) {
	p := DefaultParams()
	for _, kind := range dataKinds {
		data := kind.gen(testSize(64<<20), 13)
		orig := map[string]bool{}
		for _, c := range splitWith(t, bytes.NewReader(data), p) {
			orig[string(c)] = true
		}
		for _, e := range edits {
			t.Run(kind.name+"/"+e.name, func(t *testing.T) {
				edited := e.edit(data)
				chunks := splitWith(t, bytes.NewReader(edited), p)
				shared := 0
				for _, c := range chunks {
					if orig[string(c)] {
						shared++
					}
				}
				// An edit touches the chunk it falls in and, when it moves a
				// cut point, the next one.
				if shared < len(chunks)-2 {
					t.Errorf("%d of %d chunks shared after the edit, want at least %d", shared, len(chunks), len(chunks)-2)
				}
			})
		}
	}
}
