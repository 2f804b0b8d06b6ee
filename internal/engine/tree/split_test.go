package tree

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/internal/engine/blob"
)

// manyNodes returns n sorted files with names of varied length.
func manyNodes(n int) []Node {
	nodes := make([]Node, n)
	for i := range nodes {
		nodes[i] = fileNode(fmt.Sprintf("file-%06d%s", i, strings.Repeat("x", i%23)))
		nodes[i].Content = []blob.ID{testID(i), testID(i + 1)}
	}
	return nodes
}

// storeParts encodes and decodes each part as the repository would,
// checking each against maxSize, and returns the encodings.
func storeParts(t *testing.T, parts []*Tree, maxSize int) (encodings []string, decoded []*Tree) {
	t.Helper()
	for i, p := range parts {
		b, err := p.Encode()
		if err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
		if len(b) > maxSize {
			t.Fatalf("part %d encodes to %d bytes, over the %d-byte limit", i, len(b), maxSize)
		}
		if len(p.Nodes) == 0 {
			t.Fatalf("part %d is empty", i)
		}
		d, err := Decode(b)
		if err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
		encodings, decoded = append(encodings, string(b)), append(decoded, d)
	}
	return encodings, decoded
}

func TestSplit(t *testing.T) {
	big, small := manyNodes(500), manyNodes(30)
	bigSize, smallSize := encodedSize(t, big), encodedSize(t, small)
	tests := []struct {
		nodes   []Node
		maxSize int
	}{{big, bigSize}, {big, bigSize - 1}, {big, 8000}, {small, smallSize}, {small, 1000}, {small, 600}}
	for _, tt := range tests {
		nodes, maxSize := tt.nodes, tt.maxSize
		whole, err := (&Tree{Nodes: nodes}).Encode()
		if err != nil {
			t.Fatal(err)
		}
		t.Run(fmt.Sprintf("%d-nodes-in-%d-bytes", len(nodes), maxSize), func(t *testing.T) {
			parts, err := Split(nodes, maxSize)
			if err != nil {
				t.Fatal(err)
			}
			if (len(parts) == 1) != (maxSize >= len(whole)) {
				t.Fatalf("%d parts for a %d-byte directory with limit %d", len(parts), len(whole), maxSize)
			}
			_, decoded := storeParts(t, parts, maxSize)
			joined, err := Join(decoded)
			if err != nil {
				t.Fatal(err)
			}
			if b, err := joined.Encode(); err != nil || string(b) != string(whole) {
				t.Fatalf("joined parts differ from the directory (err %v)", err)
			}
			ids := make([]blob.ID, len(parts))
			for i := range ids {
				ids[i] = testID(i)
			}
			if b, err := (&Tree{Parts: ids}).Encode(); err != nil || len(b) > maxSize {
				t.Fatalf("the parts list encodes to %d bytes (limit %d): %v", len(b), maxSize, err)
			}
		})
	}
}

// TestSplitDeduplicates: inserting or removing one entry in a split
// directory changes few parts, so the rest are stored once across backups.
func TestSplitDeduplicates(t *testing.T) {
	const maxSize = 8000
	nodes := manyNodes(3000)
	before, _ := splitEncodings(t, nodes, maxSize)
	if len(before) < 30 {
		t.Fatalf("only %d parts: the test needs many", len(before))
	}
	extra := fileNode("file-000100-inserted")
	edits := map[string][]Node{
		"insert": slices.Insert(slices.Clone(nodes), 100, extra),
		"remove": slices.Delete(slices.Clone(nodes), 1500, 1501),
		"grow":   slices.Clone(nodes),
	}
	edits["grow"][40].Content = append(edits["grow"][40].Content, testID(9999))
	edits["grow"][40].Size = 1 << 20
	for name, edited := range edits {
		after, _ := splitEncodings(t, edited, maxSize)
		old := map[string]bool{}
		for _, e := range before {
			old[e] = true
		}
		var changed int
		for _, e := range after {
			if !old[e] {
				changed++
			}
		}
		if changed > 2 {
			t.Errorf("%s: %d of %d parts changed, want at most 2", name, changed, len(after))
		}
	}
}

func encodedSize(t *testing.T, nodes []Node) int {
	b, err := (&Tree{Nodes: nodes}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	return len(b)
}

func splitEncodings(t *testing.T, nodes []Node, maxSize int) ([]string, []*Tree) {
	t.Helper()
	parts, err := Split(nodes, maxSize)
	if err != nil {
		t.Fatal(err)
	}
	return storeParts(t, parts, maxSize)
}

func TestSplitRefuses(t *testing.T) {
	huge := fileNode("huge")
	huge.Xattrs = []Xattr{{Name: "user.x", Value: make([]byte, 300)}}
	tests := []struct {
		name    string
		nodes   []Node
		maxSize int
		want    string
	}{
		{"invalid nodes", []Node{fileNode("b"), fileNode("a")}, 1000, "not sorted"},
		{"node over the limit", []Node{fileNode("a"), huge}, 200, `node 1 "huge" encodes to`},
		{"too many parts", manyNodes(200), 300, "more than one 300-byte tree can list"},
		{"zero limit", nil, 0, "outside"},
		{"limit below two parts", nil, 2 + 1 + 2*blob.IDSize - 1, "size limit 66 outside 67.."},
		{"limit over the blob maximum", nil, blob.MaxSize + 1, "outside"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Split(tt.nodes, tt.maxSize)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Split error = %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

func TestSplitEmpty(t *testing.T) {
	parts, err := Split(nil, 2+1+2*blob.IDSize)
	if err != nil || len(parts) != 1 || len(parts[0].Nodes) != 0 {
		t.Fatalf("Split(nil) = %v, %v; want one empty tree", parts, err)
	}
}

func TestJoinRefuses(t *testing.T) {
	a, b, c := fileNode("a"), fileNode("b"), fileNode("c")
	tests := []struct {
		name  string
		parts []*Tree
		want  string
	}{
		{"no parts", nil, "no parts"},
		{"empty part", []*Tree{{Nodes: []Node{a}}, {}}, "part 1 lists 0 parts and 0 nodes"},
		{"nested parts", []*Tree{{Parts: []blob.ID{testID(1)}}}, "part 0 lists 1 parts"},
		{"out of order", []*Tree{{Nodes: []Node{a, c}}, {Nodes: []Node{b}}}, `node 2 "b": names not sorted`},
		{"same name in two parts", []*Tree{{Nodes: []Node{a, b}}, {Nodes: []Node{b, c}}}, `node 2 "b": names not sorted`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Join(tt.parts)
			wantCorrupt(t, err, tt.want)
		})
	}
}
