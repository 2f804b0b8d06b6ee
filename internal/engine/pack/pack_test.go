package pack

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden packs in testdata/")

func keys(encrypted bool) blob.Keys {
	var k blob.Keys
	for i := range k.IDKey {
		k.IDKey[i], k.DataKey[i] = byte(i), byte(255-i)
	}
	k.Encrypted = encrypted
	return k
}

func codec(t testing.TB, encrypted bool) *blob.Codec {
	t.Helper()
	c, err := blob.NewCodec(keys(encrypted))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// plaintexts are deterministic blob contents: some compressible, some not.
func plaintexts(n int) [][]byte {
	r := rand.New(rand.NewPCG(1, 2))
	out := make([][]byte, n)
	for i := range out {
		b := make([]byte, 100+r.IntN(5000))
		for j := range b {
			if i%2 == 0 {
				b[j] = "abcdefgh \n"[r.IntN(10)]
			} else {
				b[j] = byte(r.Uint32())
			}
		}
		out[i] = b
	}
	return out
}

func build(t testing.TB, c *blob.Codec, plains [][]byte) *Pack {
	t.Helper()
	w := NewWriter(c, 1<<20)
	for i, p := range plains {
		typ := blob.Data
		if i%3 == 2 {
			typ = blob.Tree
		}
		id := c.IDOf(typ, p)
		stored, err := c.Encode(nil, typ, id, p, blob.Fastest)
		if err != nil {
			t.Fatal(err)
		}
		if added, err := w.Add(typ, id, stored, len(p)); err != nil || !added {
			t.Fatalf("Add: %v %v", added, err)
		}
		if added, _ := w.Add(typ, id, stored, len(p)); added {
			t.Fatal("a blob already in the pack was added again")
		}
	}
	if w.Count() != len(plains) {
		t.Fatalf("Count = %d", w.Count())
	}
	return w.Finish()
}

// checkBlobs decodes every entry of data and compares with plains.
func checkBlobs(t *testing.T, c *blob.Codec, data []byte, entries []Entry, plains [][]byte) {
	t.Helper()
	if len(entries) != len(plains) {
		t.Fatalf("%d entries, want %d", len(entries), len(plains))
	}
	for i, e := range entries {
		got, err := c.Decode(nil, e.Type, e.ID, data[e.Offset:e.Offset+e.Length], int(e.RawLength))
		if err != nil {
			t.Fatalf("blob %d: %v", i, err)
		}
		if !bytes.Equal(got, plains[i]) {
			t.Fatalf("blob %d differs", i)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	for _, encrypted := range []bool{false, true} {
		c := codec(t, encrypted)
		plains := plaintexts(20)
		p := build(t, c, plains)
		if p.ID != Sum(p.Data) {
			t.Fatal("pack id is not the hash of its bytes")
		}
		entries, err := Parse(c, p.Data)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(p.Entries, entries); diff != "" {
			t.Fatalf("entries (-written +parsed):\n%s", diff)
		}
		checkBlobs(t, c, p.Data, entries, plains)
		id, err := ParseName(p.ID.Name())
		if err != nil || id != p.ID {
			t.Fatalf("ParseName(%s) = %v, %v", p.ID.Name(), id, err)
		}
	}
	// An empty pack is valid.
	c := codec(t, true)
	empty := NewWriter(c, 0).Finish()
	if entries, err := Parse(c, empty.Data); err != nil || len(entries) != 0 {
		t.Fatalf("empty pack: %v %v", entries, err)
	}
}

func TestParseName(t *testing.T) {
	for _, bad := range []string{"", "packs/", "packs/ab/cd", "snapshots/ab/" + fmt.Sprintf("%064x", 0),
		"packs/00/" + fmt.Sprintf("%063x", 0) + "g", "packs/01/" + fmt.Sprintf("%064x", 0)} {
		if _, err := ParseName(bad); err == nil {
			t.Errorf("ParseName(%q) accepted", bad)
		}
	}
}

func wantCorrupt(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("%s: error = %v, want ErrCorrupt", what, err)
	}
}

func TestDamageIsDetected(t *testing.T) {
	for _, encrypted := range []bool{false, true} {
		c := codec(t, encrypted)
		p := build(t, c, plaintexts(5))
		// Every truncation is refused, never a panic.
		for n := range len(p.Data) {
			_, err := Parse(c, p.Data[:n])
			wantCorrupt(t, fmt.Sprintf("truncated to %d", n), err)
		}
		// Every bit flip in the trailer or footer is refused.
		region := p.Entries[len(p.Entries)-1].Offset + p.Entries[len(p.Entries)-1].Length
		for i := int(region) * 8; i < len(p.Data)*8; i++ {
			bad := append([]byte(nil), p.Data...)
			bad[i/8] ^= 1 << (i % 8)
			_, err := Parse(c, bad)
			wantCorrupt(t, fmt.Sprintf("bit %d flipped", i), err)
		}
		// A flip in the blob region leaves the trailer readable but changes
		// the pack's hash.
		bad := append([]byte(nil), p.Data...)
		bad[10] ^= 1
		if _, err := Parse(c, bad); err != nil {
			t.Fatalf("trailer unreadable after a blob-region flip: %v", err)
		}
		if Sum(bad) == p.ID {
			t.Fatal("a damaged pack hashes to its id")
		}
		// A pack read with another repository's keys is refused.
		other, _ := blob.NewCodec(blob.Keys{Encrypted: encrypted})
		_, err := Parse(other, p.Data)
		wantCorrupt(t, "other keys", err)
	}
}

// FuzzParse: arbitrary bytes as a pack never panic, and whatever parses
// has entries that stay inside the data.
func FuzzParse(f *testing.F) {
	for _, encrypted := range []bool{false, true} {
		c := codec(f, encrypted)
		f.Add(encrypted, build(f, c, plaintexts(3)).Data)
	}
	f.Add(false, []byte("CFRP"))
	f.Add(false, []byte{0, 0, 0, 0, 1, 'C', 'F', 'R', 'P'})
	f.Fuzz(func(t *testing.T, encrypted bool, data []byte) {
		c := codec(t, encrypted)
		entries, err := Parse(c, data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error is not ErrCorrupt: %v", err)
			}
			return
		}
		for _, e := range entries {
			if int(e.Offset)+int(e.Length) > len(data) {
				t.Fatalf("entry %+v outside %d bytes", e, len(data))
			}
		}
	})
}

// TestGoldenPacks reads packs written by an earlier build: if the format
// changes, this fails. Refresh (only with a new format version) with
// go test ./internal/engine/pack -run Golden -update.
func TestGoldenPacks(t *testing.T) {
	plains := plaintexts(7)
	for _, encrypted := range []bool{false, true} {
		c := codec(t, encrypted)
		path := filepath.Join("testdata", map[bool]string{false: "v1-plain.pack", true: "v1-encrypted.pack"}[encrypted])
		if *update {
			if err := os.WriteFile(path, build(t, c, plains).Data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("golden pack missing (run with -update once): %v", err)
		}
		entries, err := Parse(c, data)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		checkBlobs(t, c, data, entries, plains)
	}
}

func BenchmarkWrite(b *testing.B) {
	c := codec(b, true)
	chunk := plaintexts(2)[1]
	id := c.ID(chunk)
	stored, _ := c.Encode(nil, blob.Data, id, chunk, blob.Off)
	b.SetBytes(16 << 20)
	for b.Loop() {
		w := NewWriter(c, 16<<20)
		for i := 0; w.Size() < 16<<20; i++ {
			var bid blob.ID
			bid[0], bid[1], bid[2] = byte(i), byte(i>>8), byte(i>>16)
			w.Add(blob.Data, bid, stored, len(chunk))
		}
		w.Finish()
	}
}

// TestPacksAreUnique: the same blobs in the same order make different packs,
// even unencrypted, so a pack name never collides with another writer's.
func TestPacksAreUnique(t *testing.T) {
	c := codec(t, false)
	plains := plaintexts(3)
	a, b := build(t, c, plains), build(t, c, plains)
	if a.ID == b.ID {
		t.Fatalf("two packs of the same blobs share the id %s", a.ID)
	}
}
