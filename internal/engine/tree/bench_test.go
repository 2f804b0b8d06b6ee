package tree

import (
	"fmt"
	"testing"
	"time"
)

// benchTree is a directory of 1000 entries: mostly files of a few chunks,
// some subdirectories and symlinks, a few with xattrs.
func benchTree() *Tree {
	nodes := make([]Node, 1000)
	for i := range nodes {
		n := Node{Name: fmt.Sprintf("entry-%04d.dat", i), Mode: 0o644, UID: 1000, GID: 1000,
			User: "alice", Group: "staff", ModTime: mtime.Add(-time.Duration(i) * 25 * time.Hour / 7)}
		switch i % 10 {
		case 0:
			n.Type, n.Mode, n.Subtree = Dir, 0o755, testID(i)
		case 1:
			n.Type, n.LinkTarget = Symlink, "../some/other/place"
		default:
			n.Type, n.Size = File, uint64(i+1)<<12
			for c := range 1 + i%4 {
				n.Content = append(n.Content, testID(i*4+c))
			}
		}
		if i%7 == 0 {
			n.Xattrs = []Xattr{{Name: "user.origin", Value: []byte("https://example.com/download")}}
		}
		nodes[i] = n
	}
	return &Tree{Nodes: nodes}
}

func BenchmarkEncode(b *testing.B) {
	t := benchTree()
	enc, err := t.Encode()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := t.Encode(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	enc, err := benchTree().Encode()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(enc); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSplit(b *testing.B) {
	nodes := manyNodes(100_000)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Split(nodes, 1<<20); err != nil {
			b.Fatal(err)
		}
	}
}
