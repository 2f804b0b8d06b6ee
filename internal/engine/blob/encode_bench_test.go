package blob

import "testing"

// BenchmarkEncode is a backup's per-chunk work after hashing, with and
// without encryption: compress at the default plan level (fastest, kept
// only when it shrinks), then seal with AES-256-GCM. BenchmarkCompress
// varies the level, BenchmarkEncrypt measures encryption alone.
func BenchmarkEncode(b *testing.B) {
	for name, data := range benchmarkInputs() {
		for _, encrypted := range []bool{false, true} {
			b.Run(name+map[bool]string{false: "/plain", true: "/encrypted"}[encrypted], func(b *testing.B) {
				c := newCodec(b, encrypted)
				id := c.ID(data)
				buf := make([]byte, 0, len(data)+64)
				b.SetBytes(int64(len(data)))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := c.Encode(buf[:0], Data, id, data, Fastest); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
