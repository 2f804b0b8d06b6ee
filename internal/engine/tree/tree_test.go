package tree

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// testID returns a distinct non-zero id for each n.
func testID(n int) blob.ID {
	var id blob.ID
	for i := range id {
		id[i] = byte(n*31 + i + 1)
	}
	return id
}

var (
	mtime   = time.Date(2024, 5, 1, 12, 34, 56, 123456789, time.UTC)
	pre70   = time.Unix(-1, 500_000_000).UTC() // 1969-12-31T23:59:59.5Z
	cmpOpts = cmpopts.EquateEmpty()
)

// sampleTree covers every node type and every field; the golden file
// freezes its encoding.
func sampleTree() *Tree {
	nodes := []Node{
		{Name: "a dir", Type: Dir, Mode: 0o755, UID: 1000, GID: 1000, User: "alice", Group: "staff", ModTime: mtime,
			Subtree: testID(1), Xattrs: []Xattr{{Name: "user.comment", Value: []byte("hi")}}},
		{Name: "blockdev", Type: BlockDevice, Mode: 0o660, GID: 6, Group: "disk", ModTime: mtime, Device: 0x0801},
		{Name: "chardev", Type: CharDevice, Mode: 0o666, ModTime: mtime, Device: 0x0103},
		{Name: "fifo", Type: Fifo, Mode: 0o644, ModTime: mtime},
		{Name: "file", Type: File, Mode: 0o4755, UID: math.MaxUint32, GID: 7, User: "root", ModTime: mtime,
			Size: 3<<20 + 5, Content: []blob.ID{testID(2), testID(3), testID(4)},
			Xattrs: []Xattr{{Name: "security.capability", Value: []byte{0, 1, 2, 0xff}}, {Name: "user.empty", Value: []byte{}}}},
		{Name: "hardlink", Type: File, Mode: 0o600, ModTime: mtime, Size: 10, Content: []blob.ID{testID(5)},
			Links: 2, Inode: 123456789, DeviceID: 0x10303},
		{Name: "link", Type: Symlink, Mode: 0o777, ModTime: mtime, LinkTarget: "../target\nwith newline"},
		{Name: "old empty file", Type: File, Mode: 0o1777, ModTime: pre70},
		{Name: "sock", Type: Socket, Mode: 0o755, ModTime: time.Unix(0, 0).UTC()},
		{Name: "日本語 \n.txt", Type: File, Mode: 0o644, ModTime: mtime, Size: 1, Content: []blob.ID{testID(6)}},
		{Name: "\xff\xfe not utf-8", Type: Fifo, ModTime: time.Time{}},
	}
	Sort(nodes)
	return &Tree{Nodes: nodes}
}

// fileNode returns a valid one-chunk file.
func fileNode(name string) Node {
	return Node{Name: name, Type: File, Mode: 0o644, ModTime: mtime, Size: 100, Content: []blob.ID{testID(len(name))}}
}

func sorted(nodes ...Node) *Tree {
	Sort(nodes)
	return &Tree{Nodes: nodes}
}

func roundTrip(t *testing.T, tr *Tree) {
	t.Helper()
	b, err := tr.Encode()
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if diff := cmp.Diff(tr, got, cmpOpts); diff != "" {
		t.Fatalf("decoded tree differs (-want +got):\n%s", diff)
	}
	again, err := got.Encode()
	if err != nil || !bytes.Equal(again, b) {
		t.Fatalf("re-encoding the decoded tree gives other bytes (err %v)", err)
	}
}

func TestRoundTrip(t *testing.T) {
	long := strings.Repeat("x", MaxNameLen)
	withTime := func(tm time.Time) *Tree {
		n := fileNode("f")
		n.ModTime = tm
		return &Tree{Nodes: []Node{n}}
	}
	tests := []struct {
		name string
		tree *Tree
	}{
		{"empty", &Tree{}},
		{"sample", sampleTree()},
		{"parts", &Tree{Parts: []blob.ID{testID(1), testID(2), testID(1)}}},
		{"one part", &Tree{Parts: []blob.ID{testID(9)}}},
		{"names", sorted(fileNode("\n"), fileNode(" leading and trailing "), fileNode("\\back\\slash"),
			fileNode("a\nnewline"), fileNode("tab\there"), fileNode("ünïcødé"), fileNode("\x01\x7f\xc3\x28"),
			fileNode(long))},
		{"nanoseconds", withTime(time.Date(2001, 2, 3, 4, 5, 6, 999999999, time.UTC))},
		{"before 1970", withTime(time.Date(1901, 12, 13, 20, 45, 52, 1, time.UTC))},
		{"just before 1970", withTime(pre70)},
		{"zero time", withTime(time.Time{})},
		{"far future", withTime(time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC))},
		{"large numbers", &Tree{Nodes: []Node{
			{Name: "dev", Type: BlockDevice, Mode: ModeMask, UID: math.MaxUint32, GID: math.MaxUint32, Device: math.MaxUint64, ModTime: mtime},
			{Name: "file", Type: File, Size: blob.MaxSize, Content: []blob.ID{testID(1)},
				Links: math.MaxUint64, Inode: math.MaxUint64, DeviceID: math.MaxUint64, ModTime: mtime},
		}}},
		{"binary xattrs", &Tree{Nodes: []Node{{Name: "d", Type: Dir, Subtree: testID(1), ModTime: mtime, Xattrs: []Xattr{
			{Name: "a", Value: []byte{0}}, {Name: "b", Value: bytes.Repeat([]byte{0xff, 0, '\n'}, 1000)},
			{Name: strings.Repeat("n", MaxXattrNameLen), Value: []byte("v")}, {Name: "user.\xff", Value: nil},
		}}}}},
		{"long link target", &Tree{Nodes: []Node{{Name: "l", Type: Symlink, LinkTarget: "/" + strings.Repeat("a/", MaxLinkTargetLen/2-1) + "z", ModTime: mtime}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { roundTrip(t, tt.tree) })
	}
}

// A time in another zone or with a monotonic reading encodes as the same
// instant.
func TestModTimeZones(t *testing.T) {
	utc := fileNode("f")
	local := utc
	local.ModTime = mtime.In(time.FixedZone("X", -7*3600))
	now := utc
	now.ModTime = time.Now()
	nowUTC := utc
	nowUTC.ModTime = now.ModTime.Round(0).UTC()
	for _, pair := range [][2]Node{{utc, local}, {now, nowUTC}} {
		a, err := (&Tree{Nodes: pair[:1]}).Encode()
		if err != nil {
			t.Fatal(err)
		}
		b, err := (&Tree{Nodes: pair[1:]}).Encode()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%v and %v encode differently", pair[0].ModTime, pair[1].ModTime)
		}
	}
}

func TestValidName(t *testing.T) {
	good := []string{"a", "...", ".hidden", "a.", "-", " ", "\n", "\xff", "a\\b", strings.Repeat("é", MaxNameLen/2)}
	for _, name := range good {
		if err := ValidName(name); err != nil {
			t.Errorf("ValidName(%q) = %v", name, err)
		}
	}
	bad := []string{"", ".", "..", "/", "a/b", "/a", "a/", "../x", "a\x00", "\x00", strings.Repeat("x", MaxNameLen+1)}
	for _, name := range bad {
		if err := ValidName(name); err == nil {
			t.Errorf("ValidName(%q) accepted", name)
		}
	}
}

// TestEncodeRefusesInvalid checks every rule of Validate through Encode.
func TestEncodeRefusesInvalid(t *testing.T) {
	dir := Node{Name: "d", Type: Dir, Subtree: testID(1)}
	with := func(n Node, f func(*Node)) *Tree { f(&n); return &Tree{Nodes: []Node{n}} }
	tests := []struct {
		name string
		tree *Tree
		want string
	}{
		{"bad name", with(dir, func(n *Node) { n.Name = "a/b" }), "contains '/'"},
		{"dot dot", with(dir, func(n *Node) { n.Name = ".." }), "not allowed"},
		{"unknown type", with(dir, func(n *Node) { n.Type = 0 }), "unknown type 0"},
		{"type 8", with(dir, func(n *Node) { n.Type = 8 }), "unknown type 8"},
		{"type bits in mode", with(fileNode("f"), func(n *Node) { n.Mode = 0o100644 }), "outside"},
		{"unsorted", &Tree{Nodes: []Node{fileNode("b"), fileNode("a")}}, "not sorted"},
		{"duplicate", &Tree{Nodes: []Node{fileNode("a"), fileNode("a")}}, "not sorted"},
		{"nodes and parts", &Tree{Nodes: []Node{dir}, Parts: []blob.ID{testID(1)}}, "both"},
		{"zero part", &Tree{Parts: []blob.ID{testID(1), {}}}, "zero id"},
		{"dir without subtree", with(dir, func(n *Node) { n.Subtree = blob.ID{} }), "without a subtree"},
		{"dir with content", with(dir, func(n *Node) { n.Content = []blob.ID{testID(2)} }), "on a dir"},
		{"dir with size", with(dir, func(n *Node) { n.Size = 1 }), "on a dir"},
		{"dir with links", with(dir, func(n *Node) { n.Links = 2 }), "on a dir"},
		{"symlink with content", with(Node{Name: "l", Type: Symlink, LinkTarget: "x"}, func(n *Node) { n.Content = []blob.ID{testID(2)} }), "on a symlink"},
		{"file with subtree", with(fileNode("f"), func(n *Node) { n.Subtree = testID(2) }), "subtree set on a file"},
		{"file with link target", with(fileNode("f"), func(n *Node) { n.LinkTarget = "x" }), "link target set on a file"},
		{"fifo with device", with(Node{Name: "p", Type: Fifo}, func(n *Node) { n.Device = 1 }), "device number set on a fifo"},
		{"size without content", with(fileNode("f"), func(n *Node) { n.Content = nil }), "size 100 with 0"},
		{"content without size", with(fileNode("f"), func(n *Node) { n.Size = 0 }), "size 0 with 1"},
		{"more blobs than bytes", with(fileNode("f"), func(n *Node) { n.Size = 1; n.Content = []blob.ID{testID(1), testID(2)} }), "cannot hold"},
		{"more bytes than blobs hold", with(fileNode("f"), func(n *Node) { n.Size = blob.MaxSize + 1 }), "cannot hold"},
		{"zero content id", with(fileNode("f"), func(n *Node) { n.Content = []blob.ID{{}} }), "zero id"},
		{"one link", with(fileNode("f"), func(n *Node) { n.Links = 1 }), "links is 1"},
		{"inode without links", with(fileNode("f"), func(n *Node) { n.Inode = 5 }), "without links"},
		{"empty link target", &Tree{Nodes: []Node{{Name: "l", Type: Symlink}}}, "empty link target"},
		{"NUL in link target", &Tree{Nodes: []Node{{Name: "l", Type: Symlink, LinkTarget: "a\x00b"}}}, "NUL"},
		{"long link target", &Tree{Nodes: []Node{{Name: "l", Type: Symlink, LinkTarget: strings.Repeat("a", MaxLinkTargetLen+1)}}}, "exceeds"},
		{"unsorted xattrs", with(dir, func(n *Node) { n.Xattrs = []Xattr{{Name: "b"}, {Name: "a"}} }), "xattr 1"},
		{"duplicate xattrs", with(dir, func(n *Node) { n.Xattrs = []Xattr{{Name: "a"}, {Name: "a"}} }), "xattr 1"},
		{"empty xattr name", with(dir, func(n *Node) { n.Xattrs = []Xattr{{Name: ""}} }), "empty name"},
		{"NUL in xattr name", with(dir, func(n *Node) { n.Xattrs = []Xattr{{Name: "a\x00"}} }), "NUL"},
		{"long xattr name", with(dir, func(n *Node) { n.Xattrs = []Xattr{{Name: strings.Repeat("a", MaxXattrNameLen+1)}} }), "exceeds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.tree.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tt.want)
			}
			if _, err := tt.tree.Encode(); err == nil {
				t.Fatal("Encode accepted an invalid tree")
			}
		})
	}
}

func TestEncodeRefusesOversized(t *testing.T) {
	x := Xattr{Name: "user.big", Value: make([]byte, blob.MaxSize)}
	tr := &Tree{Nodes: []Node{{Name: "d", Type: Dir, Subtree: testID(1), Xattrs: []Xattr{x}}}}
	if _, err := tr.Encode(); err == nil || !strings.Contains(err.Error(), "blob maximum") {
		t.Fatalf("Encode of a %d-byte tree: %v", blob.MaxSize+20, err)
	}
}

func TestSort(t *testing.T) {
	nodes := []Node{fileNode("b"), fileNode("\xff"), fileNode("B"), fileNode("a b"), fileNode("a"), fileNode("é")}
	Sort(nodes)
	var names []string
	for _, n := range nodes {
		names = append(names, n.Name)
	}
	want := []string{"B", "a", "a b", "b", "é", "\xff"}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("sorted names (-want +got):\n%s", diff)
	}
	if err := (&Tree{Nodes: nodes}).Validate(); err != nil {
		t.Errorf("sorted nodes do not validate: %v", err)
	}
}

func TestRefs(t *testing.T) {
	type ref struct {
		Type blob.Type
		ID   blob.ID
	}
	collect := func(tr *Tree, limit int) []ref {
		var refs []ref
		for typ, id := range tr.Refs() {
			refs = append(refs, ref{typ, id})
			if len(refs) == limit {
				break
			}
		}
		return refs
	}
	want := []ref{{blob.Tree, testID(1)}, {blob.Data, testID(2)}, {blob.Data, testID(3)}, {blob.Data, testID(4)},
		{blob.Data, testID(5)}, {blob.Data, testID(6)}}
	if diff := cmp.Diff(want, collect(sampleTree(), -1)); diff != "" {
		t.Errorf("refs of the sample tree (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want[:2], collect(sampleTree(), 2)); diff != "" {
		t.Errorf("refs after stopping early (-want +got):\n%s", diff)
	}
	parts := &Tree{Parts: []blob.ID{testID(7), testID(8)}}
	if diff := cmp.Diff([]ref{{blob.Tree, testID(7)}, {blob.Tree, testID(8)}}, collect(parts, -1)); diff != "" {
		t.Errorf("refs of a parts tree (-want +got):\n%s", diff)
	}
}

// TestGolden decodes trees encoded by an earlier build and re-encodes them:
// if the format changes, this fails. Refresh (only with a new format
// version) with go test ./internal/engine/tree -run Golden -update.
func TestGolden(t *testing.T) {
	tests := []struct {
		file string
		tree *Tree
	}{
		{"tree-v1.golden", sampleTree()},
		{"tree-parts-v1.golden", &Tree{Parts: []blob.ID{testID(1), testID(2)}}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join("testdata", tt.file)
			b, err := tt.tree.Encode()
			if err != nil {
				t.Fatal(err)
			}
			if *update {
				writeHex(t, path, b)
			}
			golden := readHex(t, path)
			if !bytes.Equal(b, golden) {
				t.Errorf("encoding differs from %s: the tree format changed", path)
			}
			got, err := Decode(golden)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.tree, got, cmpOpts); diff != "" {
				t.Errorf("%s decodes differently (-want +got):\n%s", path, diff)
			}
		})
	}
}

// writeHex writes b as lines of 32 hex digits, so a format change shows in
// a diff.
func writeHex(t *testing.T, path string, b []byte) {
	var s strings.Builder
	for len(b) > 0 {
		n := min(16, len(b))
		s.WriteString(hex.EncodeToString(b[:n]) + "\n")
		b = b[n:]
	}
	if err := os.WriteFile(path, []byte(s.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readHex(t *testing.T, path string) []byte {
	t.Helper()
	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("golden file missing (run with -update once): %v", err)
	}
	b, err := hex.DecodeString(strings.Join(strings.Fields(string(text)), ""))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return b
}

func wantCorrupt(t *testing.T, err error, want string) {
	t.Helper()
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("error = %v, want ErrCorrupt", err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error = %v, want it to mention %q", err, want)
	}
}
