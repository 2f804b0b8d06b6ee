package chunker

import (
	"bytes"
	"testing"

	"github.com/cofferhq/coffer/internal/engine/blob"
)

// The per-stage numbers of the backup pipeline, per core: chunking through
// this package's API (BenchmarkChunker), and chunking followed by the blob id
// hash (BenchmarkChunkAndHash; the hash alone is blob.BenchmarkHash).
// BenchmarkLibrary (compare_test.go) measures the two FastCDC libraries raw.

func BenchmarkChunker(b *testing.B) { benchmarkChunks(b, func([]byte) {}) }

func BenchmarkChunkAndHash(b *testing.B) {
	codec, err := blob.NewCodec(blob.Keys{})
	if err != nil {
		b.Fatal(err)
	}
	benchmarkChunks(b, func(chunk []byte) { codec.ID(chunk) })
}

// benchmarkChunks chunks each kind of data with the default parameters and
// hands every chunk to each.
func benchmarkChunks(b *testing.B, each func([]byte)) {
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
					chunk, err := c.Next()
					if err != nil {
						break
					}
					each(chunk)
				}
			}
		})
	}
}
