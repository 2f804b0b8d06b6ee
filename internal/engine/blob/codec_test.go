package blob

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
)

func testKeys(encrypted bool, seed byte) Keys {
	var k Keys
	for i := range k.IDKey {
		k.IDKey[i] = seed + byte(i)
		k.DataKey[i] = seed ^ byte(3*i+1)
	}
	k.Encrypted = encrypted
	return k
}

func newCodec(t testing.TB, encrypted bool) *Codec {
	t.Helper()
	c, err := NewCodec(testKeys(encrypted, 7))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// randomBytes is incompressible; textBytes compresses like source code or logs.
func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func textBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	words := strings.Fields("the quick brown fox jumps over lazy dog backup server coffer repository chunk blob pack tree snapshot restore client agent plan schedule func return error nil if for range")
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(words[r.IntN(len(words))])
		if r.IntN(12) == 0 {
			b.WriteByte('\n')
		} else {
			b.WriteByte(' ')
		}
	}
	return b.Bytes()[:n]
}

func TestRoundTrip(t *testing.T) {
	inputs := map[string][]byte{
		"empty": {}, "one": {42}, "text-4k": textBytes(4<<10, 1), "text-1m": textBytes(1<<20, 2),
		"random-1m": randomBytes(1<<20, 3), "zeros-1m": make([]byte, 1<<20),
	}
	for _, encrypted := range []bool{false, true} {
		c := newCodec(t, encrypted)
		for name, plain := range inputs {
			for lvl := Off; lvl <= Best; lvl++ {
				id := c.ID(plain)
				stored, err := c.Encode(nil, Data, id, plain, lvl)
				if err != nil {
					t.Fatalf("%s/%v/enc=%v: %v", name, lvl, encrypted, err)
				}
				got, err := c.Decode(nil, Data, id, stored, len(plain))
				if err != nil {
					t.Fatalf("%s/%v/enc=%v: decode: %v", name, lvl, encrypted, err)
				}
				if !bytes.Equal(got, plain) {
					t.Fatalf("%s/%v/enc=%v: round trip differs", name, lvl, encrypted)
				}
				payload := len(stored) - c.Overhead()
				switch {
				case lvl == Off || strings.HasPrefix(name, "random") || len(plain) < 2:
					if payload != len(plain) {
						t.Errorf("%s/%v: payload %d bytes, want it stored raw (%d)", name, lvl, payload, len(plain))
					}
				case payload >= len(plain):
					t.Errorf("%s/%v: compressible input stored with %d bytes of %d", name, lvl, payload, len(plain))
				}
			}
		}
	}
}

func TestIDsAreKeyed(t *testing.T) {
	a, _ := NewCodec(testKeys(false, 1))
	b, _ := NewCodec(testKeys(false, 2))
	plain := []byte("same content")
	if a.ID(plain) == b.ID(plain) {
		t.Error("two repositories' id keys give the same id")
	}
	if a.ID(plain) != a.ID(append([]byte(nil), plain...)) {
		t.Error("ids are not deterministic")
	}
	id, err := ParseID(a.ID(plain).String())
	if err != nil || id != a.ID(plain) {
		t.Errorf("ParseID(String()) = %v, %v", id, err)
	}
	for _, bad := range []string{"", "zz", strings.Repeat("g", 64), strings.Repeat("a", 63)} {
		if _, err := ParseID(bad); err == nil {
			t.Errorf("ParseID(%q) accepted", bad)
		}
	}
}

func wantCorrupt(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("%s: error = %v, want ErrCorrupt", what, err)
	}
}

func TestCorruptionIsDetected(t *testing.T) {
	for _, encrypted := range []bool{false, true} {
		c := newCodec(t, encrypted)
		plain := textBytes(3000, 9)
		id := c.ID(plain)
		stored, _ := c.Encode(nil, Data, id, plain, Default)
		// Every single-bit flip is caught when encrypted. Unencrypted, a
		// flip may land in a part of the zstd frame that does not change
		// the output (the pack's own hash catches those); what must never
		// happen is different bytes coming back.
		var harmless int // flips that decode to the exact plaintext
		for i := range len(stored) * 8 {
			bad := append([]byte(nil), stored...)
			bad[i/8] ^= 1 << (i % 8)
			got, err := c.Decode(nil, Data, id, bad, len(plain))
			if err == nil && !encrypted && bytes.Equal(got, plain) {
				harmless++
				continue
			}
			wantCorrupt(t, "bit flip", err)
		}
		if encrypted && harmless > 0 {
			t.Errorf("%d bit flips went unnoticed in an encrypted blob", harmless)
		}
		for _, n := range []int{0, 1, len(stored) / 2, len(stored) - 1} {
			_, err := c.Decode(nil, Data, id, stored[:n], len(plain))
			wantCorrupt(t, "truncated", err)
		}
		_, err := c.Decode(nil, Data, id, stored, len(plain)+1)
		wantCorrupt(t, "wrong recorded length", err)
		_, err = c.Decode(nil, Data, id, stored, -1)
		wantCorrupt(t, "negative length", err)
		other := c.ID([]byte("another blob"))
		_, err = c.Decode(nil, Data, other, stored, len(plain))
		wantCorrupt(t, "substituted id", err)
		// Unencrypted too: a tree's id is keyed differently.
		_, err = c.Decode(nil, Tree, id, stored, len(plain))
		wantCorrupt(t, "data passed off as a tree", err)
		if encrypted {
			wrong, _ := NewCodec(testKeys(true, 99))
			wrong.keys.IDKey = c.keys.IDKey
			_, err = wrong.Decode(nil, Data, id, stored, len(plain))
			wantCorrupt(t, "wrong data key", err)
		}
	}
}

func TestDecompressionBombIsRefused(t *testing.T) {
	c := newCodec(t, false)
	huge := make([]byte, MaxSize+1)
	enc, _ := c.encoder(Best)
	bomb := enc.EncodeAll(huge, nil)
	_, err := c.Decode(nil, Data, c.ID(huge), bomb, MaxSize+1)
	wantCorrupt(t, "oversized", err)
	_, err = c.Decode(nil, Data, c.ID(huge[:10]), bomb, 10)
	wantCorrupt(t, "decompresses beyond its recorded size", err)
	if _, err := c.Encode(nil, Data, ID{}, huge, Off); err == nil {
		t.Error("Encode accepted a blob over MaxSize")
	}
}

func TestCompressionNames(t *testing.T) {
	for lvl := Off; lvl <= Best; lvl++ {
		got, err := ParseCompression(lvl.String())
		if err != nil || got != lvl {
			t.Errorf("ParseCompression(%q) = %v, %v", lvl.String(), got, err)
		}
	}
	if _, err := ParseCompression("max"); err == nil {
		t.Error("ParseCompression accepted an unknown name")
	}
}

// FuzzDecode feeds arbitrary stored bytes to the decoder: it must never
// panic, and whatever it accepts must hash to the id it was asked for.
func FuzzDecode(f *testing.F) {
	plain := textBytes(500, 4)
	for _, encrypted := range []bool{false, true} {
		c, _ := NewCodec(testKeys(encrypted, 7))
		stored, _ := c.Encode(nil, Data, c.ID(plain), plain, Default)
		f.Add(encrypted, stored, len(plain))
	}
	f.Add(false, []byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0}, 100)
	f.Add(true, []byte{}, 0)
	f.Fuzz(func(t *testing.T, encrypted bool, stored []byte, rawLen int) {
		c, _ := NewCodec(testKeys(encrypted, 7))
		id := c.ID(plain)
		got, err := c.Decode(nil, Data, id, stored, rawLen)
		if err == nil && c.ID(got) != id {
			t.Fatal("decode accepted content that does not match the id")
		}
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("decode error is not ErrCorrupt: %v", err)
		}
	})
}

func benchmarkInputs() map[string][]byte {
	return map[string][]byte{"text": textBytes(1<<20, 5), "random": randomBytes(1<<20, 6)}
}

func BenchmarkHash(b *testing.B) {
	c := newCodec(b, false)
	data := randomBytes(1<<20, 1)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		c.ID(data)
	}
}

func BenchmarkCompress(b *testing.B) {
	c := newCodec(b, false)
	for name, data := range benchmarkInputs() {
		for _, lvl := range []Compression{Fastest, Default, Better} {
			b.Run(name+"/"+lvl.String(), func(b *testing.B) {
				id := c.ID(data)
				b.SetBytes(int64(len(data)))
				buf := make([]byte, 0, len(data)+64)
				for b.Loop() {
					c.Encode(buf[:0], Data, id, data, lvl)
				}
			})
		}
	}
}

func BenchmarkEncrypt(b *testing.B) {
	c := newCodec(b, true)
	data := randomBytes(1<<20, 2)
	id := c.ID(data)
	b.SetBytes(int64(len(data)))
	buf := make([]byte, 0, len(data)+64)
	for b.Loop() {
		c.Encode(buf[:0], Data, id, data, Off)
	}
}

func BenchmarkDecode(b *testing.B) {
	for name, data := range benchmarkInputs() {
		for _, encrypted := range []bool{false, true} {
			b.Run(name+map[bool]string{false: "/plain", true: "/encrypted"}[encrypted], func(b *testing.B) {
				c := newCodec(b, encrypted)
				id := c.ID(data)
				stored, _ := c.Encode(nil, Data, id, data, Fastest)
				buf := make([]byte, 0, len(data))
				b.SetBytes(int64(len(data)))
				for b.Loop() {
					if _, err := c.Decode(buf[:0], Data, id, stored, len(data)); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// IDs computed concurrently (hashers come from a shared pool) equal those
// computed one by one.
func TestIDConcurrent(t *testing.T) {
	c := newCodec(t, false)
	inputs := make([][]byte, 64)
	want := make([]ID, len(inputs))
	for i := range inputs {
		inputs[i] = randomBytes(1000+i*37, uint64(i))
		want[i] = c.ID(inputs[i])
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for r := range 20 {
				i := (w*7 + r*13) % len(inputs)
				if got := c.ID(inputs[i]); got != want[i] {
					t.Errorf("concurrent id of input %d differs", i)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestTreeIDsDiffer: the same bytes stored as a file chunk and as a tree get
// different ids, so one can never be taken for the other (an empty
// directory encodes to 3 bytes any client could back up as a file).
func TestTreeIDsDiffer(t *testing.T) {
	c, err := NewCodec(testKeys(false, 1))
	if err != nil {
		t.Fatal(err)
	}
	plain := []byte{1, 1, 0}
	if c.ID(plain) == c.TreeID(plain) {
		t.Fatal("a data blob and a tree with the same bytes share an id")
	}
	if c.IDOf(Data, plain) != c.ID(plain) || c.IDOf(Tree, plain) != c.TreeID(plain) {
		t.Fatal("IDOf does not pick the id by type")
	}
	other, _ := NewCodec(testKeys(false, 2))
	if other.TreeID(plain) == c.TreeID(plain) {
		t.Fatal("tree ids do not depend on the repository's id key")
	}
}
