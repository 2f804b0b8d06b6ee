package tree

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/google/go-cmp/cmp"
)

// enc builds encodings by hand, field by field, to make inputs Encode
// would never write.
type enc []byte

func (e enc) u(v uint64) enc       { return binary.AppendUvarint(e, v) }
func (e enc) s(v int64) enc        { return binary.AppendVarint(e, v) }
func (e enc) str(s string) enc     { return append(e.u(uint64(len(s))), s...) }
func (e enc) raw(b ...byte) enc    { return append(e, b...) }
func (e enc) id(id blob.ID) enc    { return append(e, id[:]...) }
func (e enc) fifo(name string) enc { return e.head(name, Fifo).u(0) }

// header starts a nodes tree of count nodes.
func header(count uint64) enc { return enc{Version, kindNodes}.u(count) }

// head writes a node up to its payload: mode 0644, ids 0, no owner names,
// mtime 0.
func (e enc) head(name string, typ Type) enc {
	return e.str(name).raw(byte(typ)).u(0o644).u(0).u(0).str("").str("").s(0).u(0)
}

// TestEncBuilder checks the hand encoder against Encode, so that the bad
// inputs below differ from valid ones only where they mean to.
func TestEncBuilder(t *testing.T) {
	fifo := func(name string) Node {
		return Node{Name: name, Type: Fifo, Mode: 0o644, ModTime: pre70.Add(500_000_000)}
	}
	tr := &Tree{Nodes: []Node{fifo("a"), fifo("b"),
		{Name: "d", Type: Dir, Mode: 0o644, ModTime: fifo("").ModTime, Subtree: testID(1)},
		{Name: "f", Type: File, Mode: 0o644, ModTime: fifo("").ModTime, Size: 7, Links: 2, Inode: 3, DeviceID: 4, Content: []blob.ID{testID(2)},
			Xattrs: []Xattr{{Name: "x", Value: []byte("v")}}}}}
	want, err := tr.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got := header(4).fifo("a").fifo("b").head("d", Dir).id(testID(1)).u(0).
		head("f", File).u(7).u(2).u(3).u(4).u(1).id(testID(2)).u(1).str("x").str("v")
	if !bytes.Equal(got, want) {
		t.Fatalf("hand encoding\n%x\ndiffers from Encode\n%x", got, want)
	}
}

type badEncoding struct {
	name string
	in   []byte
	want string // in the error message
}

func badEncodings() []badEncoding {
	file := func(name string) enc { return header(1).head(name, File) }
	xattrs := func(x enc) enc { return header(1).head("p", Fifo).raw(x...) }
	var oversized enc = make([]byte, blob.MaxSize+1)
	copy(oversized, header(0))
	return []badEncoding{
		{"empty", enc{}, "version: truncated"},
		{"no kind", enc{Version}, "kind: truncated"},
		{"version 0", enc{0, kindNodes, 0}, "version 0 is not supported"},
		{"version 2", enc{2, kindNodes, 0}, "version 2 is not supported"},
		{"kind 0", enc{Version, 0, 0}, "unknown kind 0"},
		{"kind 3", enc{Version, 3, 0}, "unknown kind 3"},
		{"no count", enc{Version, kindNodes}, "node count: truncated"},
		{"count without nodes", header(1), "node count 1 cannot fit"},
		{"huge count", header(1 << 40).fifo("a"), "cannot fit"},
		{"count beyond the nodes", header(3).fifo("a").fifo("b"), "node count 3 cannot fit in the remaining 24 bytes"},
		{"truncated node", header(2).fifo("a").head("b", Fifo), `node 1 "b": xattr count: truncated`},
		{"trailing bytes", header(1).fifo("a").raw(0), "1 trailing bytes"},
		{"non-minimal count", enc{Version, kindNodes, 0x81, 0}.fifo("a"), "shortest form"},
		{"non-minimal mode", header(1).str("a").raw(byte(Fifo)).raw(0x80, 0).u(0).u(0).str("").str("").s(0).u(0).u(0), "mode: varint not in its shortest form"},
		{"varint overflow", header(1).str("a").raw(byte(Fifo)).raw(bytes.Repeat([]byte{0xff}, 12)...), "overflows 64 bits"},
		{"type 0", header(1).head("a", 0).u(0), "unknown type 0"},
		{"type 8", header(1).head("a", 8).u(0), "unknown type 8"},
		{"type bits in mode", header(1).str("a").raw(byte(Fifo)).u(0o10644).u(0).u(0).str("").str("").s(0).u(0).u(0), "mode 010644 outside 07777"},
		{"uid over 32 bits", header(1).str("a").raw(byte(Fifo)).u(0).u(1 << 32).u(0).str("").str("").s(0).u(0).u(0), "uid 4294967296 exceeds 32 bits"},
		{"nanoseconds out of range", header(1).str("a").raw(byte(Fifo)).u(0).u(0).u(0).str("").str("").s(-1).u(1e9).u(0), "nanoseconds 1000000000 out of range"},
		{"empty name", header(1).fifo(""), "empty name"},
		{"dot", header(1).fifo("."), `name "." is not allowed`},
		{"dot dot", header(1).fifo(".."), `name ".." is not allowed`},
		{"slash", header(1).fifo("a/b"), "contains '/'"},
		{"just a slash", header(1).fifo("/"), "contains '/'"},
		{"NUL", header(1).fifo("a\x00b"), "NUL"},
		{"long name", header(1).fifo(strings.Repeat("x", MaxNameLen+1)), "name of 4096 bytes exceeds 4095"},
		{"unsorted", header(2).fifo("b").fifo("a"), `node 1 "a": names not sorted`},
		{"duplicate", header(3).fifo("a").fifo("b").fifo("b"), `node 2 "b": names not sorted`},
		{"name beyond the input", header(1).u(200).raw(bytes.Repeat([]byte{'a'}, 20)...), "name: length 200 exceeds the remaining 20 bytes"},
		{"zero subtree", header(1).head("d", Dir).id(blob.ID{}).u(0), `node 0 "d": directory without a subtree`},
		{"truncated subtree", header(1).head("d", Dir).raw(1, 2, 3), "subtree id: truncated"},
		{"size without content", file("f").u(10).u(0).u(0).u(0), "size 10 with 0 content blobs"},
		{"content without size", file("f").u(0).u(0).u(1).id(testID(1)).u(0), "size 0 with 1 content blobs"},
		{"more blobs than bytes", file("f").u(1).u(0).u(2).id(testID(1)).id(testID(2)).u(0), "2 content blobs cannot hold 1 bytes"},
		{"zero content id", file("f").u(1).u(0).u(1).id(blob.ID{}).u(0), "content blob 0 is a zero id"},
		{"content count beyond the input", file("f").u(5).u(0).u(1000).id(testID(1)).u(0), "content count 1000 cannot fit"},
		{"one link", file("f").u(1).u(1).u(1).id(testID(1)).u(0), "links is 1"},
		{"empty link target", header(1).head("l", Symlink).str("").u(0), "empty link target"},
		{"NUL in link target", header(1).head("l", Symlink).str("a\x00").u(0), "link target contains a NUL byte"},
		{"long link target", header(1).head("l", Symlink).str(strings.Repeat("a", MaxLinkTargetLen+1)).u(0), "link target of 4096 bytes"},
		{"unsorted xattrs", xattrs(enc{}.u(2).str("b").str("").str("a").str("")), "xattr 1 \"a\": names not sorted"},
		{"duplicate xattrs", xattrs(enc{}.u(2).str("a").str("1").str("a").str("2")), "xattr 1 \"a\": names not sorted"},
		{"empty xattr name", xattrs(enc{}.u(1).str("").str("v")), "xattr 0 has an empty name"},
		{"NUL in xattr name", xattrs(enc{}.u(1).str("a\x00").str("v")), "NUL"},
		{"xattr count beyond the input", xattrs(enc{}.u(100).str("a").str("")), "xattr count 100 cannot fit"},
		{"xattr value beyond the input", xattrs(enc{}.u(1).str("a").u(10).raw(1, 2)), "xattr value: length 10 exceeds"},
		// The layout has no place for content on a dir or a link target on
		// a fifo: such bytes are misread, and the result is refused.
		{"content on a dir", header(1).head("d", Dir).id(testID(1)).u(1).id(testID(2)).u(0), ""},
		{"link target on a fifo", header(1).head("p", Fifo).str("target").u(0), ""},
		{"parts without parts", enc{Version, kindParts, 0}, "parts tree without parts"},
		{"zero part", enc{Version, kindParts, 2}.id(testID(1)).id(blob.ID{}), "part 1 is a zero id"},
		{"parts beyond the input", enc{Version, kindParts, 2}.id(testID(1)), "part count 2 cannot fit"},
		{"truncated part", enc{Version, kindParts, 1}.id(testID(1))[:34], "part count 1 cannot fit"},
		{"parts with trailing bytes", enc{Version, kindParts, 1}.id(testID(1)).raw(0), "1 trailing bytes"},
		{"oversized", oversized, "exceeds the 16777216-byte blob maximum"},
	}
}

func TestDecodeRejects(t *testing.T) {
	for _, tt := range badEncodings() {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := Decode(tt.in)
			if err == nil {
				t.Fatalf("Decode accepted %x as %+v", tt.in[:min(len(tt.in), 64)], tr)
			}
			wantCorrupt(t, err, tt.want)
			t.Log(err)
		})
	}
}

// checkDecode is the property every input must have: Decode fails with
// ErrCorrupt, or its result is valid and encodes back to the input.
func checkDecode(t *testing.T, b []byte) bool {
	t.Helper()
	tr, err := Decode(b)
	if err != nil {
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Decode error is not ErrCorrupt: %v", err)
		}
		return false
	}
	if err := tr.Validate(); err != nil {
		t.Fatalf("Decode returned an invalid tree: %v", err)
	}
	again, err := tr.Encode()
	if err != nil {
		t.Fatalf("Decode accepted %x, but Encode of the result fails: %v", b, err)
	}
	if !bytes.Equal(again, b) {
		t.Fatalf("Decode accepted the non-canonical\n%x\nwhich re-encodes as\n%x", b, again)
	}
	return true
}

func TestDecodeTruncated(t *testing.T) {
	for _, tr := range []*Tree{sampleTree(), {Parts: []blob.ID{testID(1), testID(2)}}} {
		b, err := tr.Encode()
		if err != nil {
			t.Fatal(err)
		}
		for n := range len(b) {
			if checkDecode(t, b[:n]) {
				t.Fatalf("Decode accepted the encoding truncated to %d of %d bytes", n, len(b))
			}
		}
	}
}

// TestDecodeMutations flips every bit and drops every byte of the sample
// encoding: many results are refused, some are other valid trees (a flipped
// id bit), and none may break the property.
func TestDecodeMutations(t *testing.T) {
	b, err := sampleTree().Encode()
	if err != nil {
		t.Fatal(err)
	}
	var accepted, refused int
	count := func(ok bool) {
		if ok {
			accepted++
		} else {
			refused++
		}
	}
	for i := range len(b) * 8 {
		bad := bytes.Clone(b)
		bad[i/8] ^= 1 << (i % 8)
		count(checkDecode(t, bad))
	}
	for i := range b {
		count(checkDecode(t, append(bytes.Clone(b[:i]), b[i+1:]...)))
	}
	if refused < len(b) || accepted == 0 {
		t.Errorf("%d mutations refused and %d accepted: expected both kinds", refused, accepted)
	}
}

// FuzzDecode: Decode never panics, and whatever it accepts is valid and
// canonical (Encode gives back the input).
func FuzzDecode(f *testing.F) {
	for _, tr := range []*Tree{{}, sampleTree(), {Parts: []blob.ID{testID(1), testID(2)}}} {
		b, err := tr.Encode()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, bad := range badEncodings() {
		if len(bad.in) < 1<<16 {
			f.Add(bad.in)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkDecode(t, b)
	})
}

// The decoded tree owns its memory: callers reuse blob buffers.
func TestDecodeDoesNotAlias(t *testing.T) {
	b, err := sampleTree().Encode()
	if err != nil {
		t.Fatal(err)
	}
	tr, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = 0xaa
	}
	if diff := cmp.Diff(sampleTree(), tr, cmpOpts); diff != "" {
		t.Errorf("overwriting the input changed the decoded tree (-want +got):\n%s", diff)
	}
}
