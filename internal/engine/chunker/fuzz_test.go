package chunker

import (
	"bytes"
	"io"
	"slices"
	"testing"
)

// fuzzParams maps three fuzzed bytes onto small valid parameters:
// Min 64 B to 1 KiB, Avg 2 to 8 times Min, Max 2 to 8 times Avg.
func fuzzParams(minShift, avgShift, maxShift uint8) Params {
	p := Params{Min: 64 << (minShift % 5)}
	p.Avg = p.Min << (1 + avgShift%3)
	p.Max = p.Avg << (1 + maxShift%3)
	return p
}

// stepReader hands data over in reads of size bytes, then 1, then size, …
type stepReader struct {
	data []byte
	size int
	odd  bool
}

func (s *stepReader) Read(b []byte) (int, error) {
	if len(s.data) == 0 {
		return 0, io.EOF
	}
	n := s.size
	if s.odd = !s.odd; s.odd {
		n = 1
	}
	n = copy(b[:min(n, len(b))], s.data)
	s.data = s.data[n:]
	return n, nil
}

// FuzzChunker checks the chunker's invariants on arbitrary input and small
// parameters: the chunks concatenate to the input, all but the last are
// within [Min, Max], the boundaries do not depend on read sizes, and they
// are the reference implementation's. Its seed
// corpus runs with the other tests. When fuzzing, -fuzzminimizetime 5s keeps
// the minimisation of large inputs from stalling progress for a minute.
func FuzzChunker(f *testing.F) {
	f.Add([]byte{}, uint8(0), uint8(0), uint8(0), uint16(1))
	f.Add([]byte{42}, uint8(0), uint8(0), uint8(0), uint16(7))
	f.Add(bytes.Repeat([]byte{0}, 5000), uint8(1), uint8(1), uint8(1), uint16(100))
	f.Add(randomData(64, 1), uint8(0), uint8(0), uint8(0), uint16(3))
	f.Add(randomData(65, 1), uint8(0), uint8(0), uint8(0), uint16(64))
	f.Add(randomData(8<<10, 2), uint8(0), uint8(1), uint8(2), uint16(1000))
	f.Add(randomData(16<<10, 3), uint8(4), uint8(2), uint8(2), uint16(4096))
	f.Add(textData(16<<10, 4), uint8(2), uint8(0), uint8(1), uint16(17))
	f.Add(mixedData(24<<10, 5), uint8(3), uint8(1), uint8(0), uint16(65535))

	f.Fuzz(func(t *testing.T, data []byte, minShift, avgShift, maxShift uint8, readSize uint16) {
		p := fuzzParams(minShift, avgShift, maxShift)
		chunks := splitWith(t, bytes.NewReader(data), p)
		checkChunks(t, chunks, data, p)
		if len(data) == 0 && len(chunks) != 0 {
			t.Fatalf("empty input made %d chunks", len(chunks))
		}
		if len(data) > 0 && len(data) <= p.Min && len(chunks) != 1 {
			t.Fatalf("%d bytes (≤ Min %d) made %d chunks, want 1", len(data), p.Min, len(chunks))
		}
		if got, want := chunkLengths(chunks), lengths(t, reference, bytes.NewReader(data), p); !slices.Equal(got, want) {
			t.Fatalf("params %v: boundaries %v, the reference's %v", p, got, want)
		}
		stepped := splitWith(t, &stepReader{data: data, size: 1 + int(readSize)}, p)
		if got, want := chunkLengths(stepped), chunkLengths(chunks); !slices.Equal(got, want) {
			t.Fatalf("params %v, reads of %d bytes: boundaries %v, whole reads %v", p, 1+int(readSize), got, want)
		}
	})
}
