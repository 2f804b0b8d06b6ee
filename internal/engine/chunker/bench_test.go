package chunker

import (
	"bytes"
	"crypto/sha256"
	"testing"

	"github.com/zeebo/blake3"
)

// The per-stage numbers of the backup pipeline, per core: chunking through
// this package's API (BenchmarkChunker), hashing a chunk with the repository's
// keyed BLAKE3 (BenchmarkHash), and both in sequence (BenchmarkChunkAndHash).
// BenchmarkLibrary (compare_test.go) measures the two FastCDC libraries raw.

func BenchmarkChunker(b *testing.B) {
	p := DefaultParams()
	for _, kind := range dataKinds {
		b.Run(kind.name, func(b *testing.B) {
			data := sharedData(kind.name)
			r := bytes.NewReader(data)
			c, err := New(r, p)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				r.Reset(data)
				c.Reset(r)
				for {
					if _, err := c.Next(); err != nil {
						break
					}
				}
			}
		})
	}
}

// hashKey stands in for a repository's blob id key.
var hashKey = bytes.Repeat([]byte{0x5c}, 32)

func BenchmarkHash(b *testing.B) {
	chunk := randomData(1<<20, 1)
	b.Run("blake3-keyed/1MiB", func(b *testing.B) {
		h, err := blake3.NewKeyed(hashKey)
		if err != nil {
			b.Fatal(err)
		}
		var sum [32]byte
		b.SetBytes(int64(len(chunk)))
		b.ReportAllocs()
		for b.Loop() {
			h.Reset()
			h.Write(chunk)
			h.Sum(sum[:0])
		}
	})
	b.Run("sha256/1MiB", func(b *testing.B) { // reference point only
		b.SetBytes(int64(len(chunk)))
		b.ReportAllocs()
		for b.Loop() {
			sha256.Sum256(chunk)
		}
	})
}

func BenchmarkChunkAndHash(b *testing.B) {
	p := DefaultParams()
	for _, kind := range dataKinds {
		b.Run(kind.name, func(b *testing.B) {
			data := sharedData(kind.name)
			r := bytes.NewReader(data)
			c, err := New(r, p)
			if err != nil {
				b.Fatal(err)
			}
			h, err := blake3.NewKeyed(hashKey)
			if err != nil {
				b.Fatal(err)
			}
			var sum [32]byte
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				r.Reset(data)
				c.Reset(r)
				for {
					chunk, err := c.Next()
					if err != nil {
						break
					}
					h.Reset()
					h.Write(chunk)
					h.Sum(sum[:0])
				}
			}
		})
	}
}
