package pack

import (
	"testing"

	"github.com/cofferhq/coffer/internal/engine/blob"
)

// BenchmarkRead measures reading a 16 MiB pack the way a restore or verify
// does: parse the footer and trailer, then decode (authenticate,
// decompress, re-hash) every blob. Bytes are the plaintext bytes. Half the
// 1 MiB blobs compress, half are random; BenchmarkWrite is the other side.
func BenchmarkRead(b *testing.B) {
	for _, encrypted := range []bool{false, true} {
		b.Run(map[bool]string{false: "plain", true: "encrypted"}[encrypted], func(b *testing.B) {
			c := codec(b, encrypted)
			defer c.Close()
			w := NewWriter(c, 16<<20)
			var raw int64
			for i := 0; w.Size() < 16<<20; i++ {
				p := benchBlob(i)
				stored, err := c.Encode(nil, blob.Data, c.ID(p), p, blob.Fastest)
				if err != nil {
					b.Fatal(err)
				}
				w.Add(blob.Data, c.ID(p), stored, len(p))
				raw += int64(len(p))
			}
			data := w.Finish().Data
			b.SetBytes(raw)
			b.ReportAllocs()
			var buf []byte
			for b.Loop() {
				entries, err := Parse(c, data)
				if err != nil {
					b.Fatal(err)
				}
				for _, e := range entries {
					buf, err = c.Decode(buf[:0], e.Type, e.ID, data[e.Offset:e.Offset+e.Length], int(e.RawLength))
					if err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// BenchmarkParse measures the trailer alone, for a pack of 16 MiB of
// small (16 KiB) blobs: the most entries a typical pack has.
func BenchmarkParse(b *testing.B) {
	c := codec(b, true)
	defer c.Close()
	w := NewWriter(c, 16<<20)
	stored := make([]byte, 16<<10)
	for i := 0; w.Size() < 16<<20; i++ {
		var id blob.ID
		id[0], id[1], id[2] = byte(i), byte(i>>8), byte(i>>16)
		w.Add(blob.Data, id, stored, len(stored))
	}
	data := w.Finish().Data
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(c, data); err != nil {
			b.Fatal(err)
		}
	}
}

// benchBlob is the i-th 1 MiB blob: text-like for even i, random for odd.
func benchBlob(i int) []byte {
	p := plaintexts(2)[i%2]
	out := make([]byte, 0, 1<<20)
	for len(out) < 1<<20 {
		out = append(out, p...)
		if i%2 == 1 {
			// Vary the random blob so it does not compress by repetition.
			p = append(p[:0:0], p...)
			for j := range p {
				p[j] = p[j]*31 + byte(len(out))
			}
		}
	}
	out = out[:1<<20]
	out[0], out[1] = byte(i), byte(i>>8)
	return out
}
