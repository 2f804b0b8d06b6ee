package tree

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"

	"github.com/cofferhq/coffer/internal/engine/blob"
)

// The kinds of tree encoding (the byte after the version).
const (
	kindNodes = 1
	kindParts = 2
)

// Encode returns the canonical encoding of t. It fails if t is invalid
// (Validate) or encodes to more than blob.MaxSize bytes (Split it).
func (t *Tree) Encode() ([]byte, error) {
	if err := t.Validate(); err != nil {
		return nil, fmt.Errorf("encode tree: %w", err)
	}
	var b []byte
	if len(t.Parts) > 0 {
		b = make([]byte, 0, headerSize(len(t.Parts))+len(t.Parts)*blob.IDSize)
		b = append(b, Version, kindParts)
		b = binary.AppendUvarint(b, uint64(len(t.Parts)))
		for _, id := range t.Parts {
			b = append(b, id[:]...)
		}
	} else {
		b = make([]byte, 0, t.sizeHint())
		b = append(b, Version, kindNodes)
		b = binary.AppendUvarint(b, uint64(len(t.Nodes)))
		for i := range t.Nodes {
			b = appendNode(b, &t.Nodes[i])
		}
	}
	if len(b) > blob.MaxSize {
		return nil, fmt.Errorf("encode tree: %d bytes exceeds the %d-byte blob maximum (split the directory)", len(b), blob.MaxSize)
	}
	return b, nil
}

// sizeHint estimates the encoded size of t's nodes, generously.
func (t *Tree) sizeHint() int {
	n := headerSize(len(t.Nodes))
	for i := range t.Nodes {
		nd := &t.Nodes[i]
		n += 64 + len(nd.Name) + len(nd.User) + len(nd.Group) + len(nd.LinkTarget) + len(nd.Content)*blob.IDSize
		if nd.Type == Dir {
			n += blob.IDSize
		}
		for _, x := range nd.Xattrs {
			n += 2*binary.MaxVarintLen32 + len(x.Name) + len(x.Value)
		}
	}
	return min(n, blob.MaxSize+1)
}

// headerSize is the size of the version, kind and count of a tree of count
// nodes or parts.
func headerSize(count int) int { return 2 + uvarintLen(uint64(count)) }

func uvarintLen(v uint64) int {
	n := 1
	for ; v >= 0x80; v >>= 7 {
		n++
	}
	return n
}

func appendNode(b []byte, n *Node) []byte {
	b = appendBytes(b, n.Name)
	b = append(b, byte(n.Type))
	b = binary.AppendUvarint(b, uint64(n.Mode))
	b = binary.AppendUvarint(b, uint64(n.UID))
	b = binary.AppendUvarint(b, uint64(n.GID))
	b = appendBytes(b, n.User)
	b = appendBytes(b, n.Group)
	b = binary.AppendVarint(b, n.ModTime.Unix())
	b = binary.AppendUvarint(b, uint64(n.ModTime.Nanosecond()))
	switch n.Type {
	case File:
		b = binary.AppendUvarint(b, n.Size)
		b = binary.AppendUvarint(b, n.Links)
		if n.Links >= 2 {
			b = binary.AppendUvarint(b, n.Inode)
			b = binary.AppendUvarint(b, n.DeviceID)
		}
		b = binary.AppendUvarint(b, uint64(len(n.Content)))
		for _, id := range n.Content {
			b = append(b, id[:]...)
		}
	case Dir:
		b = append(b, n.Subtree[:]...)
	case Symlink:
		b = appendBytes(b, n.LinkTarget)
	case CharDevice, BlockDevice:
		b = binary.AppendUvarint(b, n.Device)
	}
	b = binary.AppendUvarint(b, uint64(len(n.Xattrs)))
	for _, x := range n.Xattrs {
		b = appendBytes(b, x.Name)
		b = appendBytes(b, x.Value)
	}
	return b
}

func appendBytes[S string | []byte](b []byte, s S) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// minSplitSize is the smallest useful limit for Split: a tree listing two
// parts.
const minSplitSize = 2 + 1 + 2*blob.IDSize

// Split divides the sorted nodes of one directory into trees that each
// encode to at most maxSize bytes (at most blob.MaxSize). If the whole
// directory fits, it returns that one tree: store it as the directory's
// tree. Otherwise it returns the parts in order: store each, then store
// Tree{Parts: their ids} as the directory's tree. Parts share nodes'
// backing array.
//
// Part boundaries depend on the names around them, not only on sizes, so
// adding or removing one entry of a huge directory changes one or two
// parts rather than every part after it, and the others deduplicate
// against the previous backup.
func Split(nodes []Node, maxSize int) ([]*Tree, error) {
	if maxSize < minSplitSize || maxSize > blob.MaxSize {
		return nil, fmt.Errorf("split tree: size limit %d outside %d..%d", maxSize, minSplitSize, blob.MaxSize)
	}
	if err := (&Tree{Nodes: nodes}).Validate(); err != nil {
		return nil, fmt.Errorf("split tree: %w", err)
	}
	sizes := make([]int, len(nodes))
	total := headerSize(len(nodes))
	var scratch []byte
	for i := range nodes {
		scratch = appendNode(scratch[:0], &nodes[i])
		sizes[i] = len(scratch)
		total += sizes[i]
		if headerSize(1)+sizes[i] > maxSize {
			return nil, fmt.Errorf("split tree: node %d %s encodes to %d bytes, over the %d-byte limit", i, quote(nodes[i].Name), sizes[i], maxSize)
		}
	}
	if total <= maxSize {
		return []*Tree{{Nodes: nodes}}, nil
	}
	// A part ends after a node whose name hashes below a threshold
	// proportional to the node's size (one boundary per target bytes on
	// average, like content-defined chunking), once the part holds minPart
	// bytes; or where the next node would not fit.
	minPart, target := maxSize/4, uint64(maxSize/4)
	var parts []*Tree
	start, size := 0, 0
	cut := func(end int) {
		parts = append(parts, &Tree{Nodes: nodes[start:end:end]})
		start, size = end, 0
	}
	for i, n := range sizes {
		if i > start && headerSize(i-start+1)+size+n > maxSize {
			cut(i)
		}
		size += n
		if size >= minPart && boundary(nodes[i].Name, n, target) {
			cut(i + 1)
		}
	}
	if start < len(nodes) {
		cut(len(nodes))
	}
	if headerSize(len(parts))+len(parts)*blob.IDSize > maxSize {
		return nil, fmt.Errorf("split tree: %d nodes need %d parts, more than one %d-byte tree can list", len(nodes), len(parts), maxSize)
	}
	return parts, nil
}

// boundary reports whether a part may end after a node of size bytes named
// name: with probability size/target, decided by the hash of the name.
func boundary(name string, size int, target uint64) bool {
	if uint64(size) >= target {
		return true
	}
	h := fnv.New64a()
	h.Write([]byte(name))
	return h.Sum64() < uint64(size)*(math.MaxUint64/target)
}

// Nodes returns the nodes of the directory whose tree is t, loading and
// joining its parts with load when it was split. Every reader of
// directories (the repository, an agent restoring through the server)
// goes through it, so that there is one place that knows how a split
// directory is stored.
func Nodes(ctx context.Context, t *Tree, load func(context.Context, blob.ID) (*Tree, error)) ([]Node, error) {
	if len(t.Parts) == 0 {
		return t.Nodes, nil
	}
	parts := make([]*Tree, len(t.Parts))
	for i, part := range t.Parts {
		var err error
		if parts[i], err = load(ctx, part); err != nil {
			return nil, err
		}
	}
	whole, err := Join(parts)
	if err != nil {
		return nil, err
	}
	return whole.Nodes, nil
}

// Join returns the directory stored as parts (decoded part trees, in
// order): their nodes concatenated. Each part must list nodes (not parts)
// and at least one, and names must keep increasing across parts; errors
// match ErrCorrupt.
func Join(parts []*Tree) (*Tree, error) {
	if len(parts) == 0 {
		return nil, fmt.Errorf("join tree: no parts: %w", ErrCorrupt)
	}
	total := 0
	for i, p := range parts {
		if len(p.Parts) > 0 || len(p.Nodes) == 0 {
			return nil, fmt.Errorf("join tree: part %d lists %d parts and %d nodes, want nodes only: %w", i, len(p.Parts), len(p.Nodes), ErrCorrupt)
		}
		total += len(p.Nodes)
	}
	t := &Tree{Nodes: make([]Node, 0, total)}
	for _, p := range parts {
		t.Nodes = append(t.Nodes, p.Nodes...)
	}
	if err := t.Validate(); err != nil {
		return nil, fmt.Errorf("join tree: %w: %w", err, ErrCorrupt)
	}
	return t, nil
}
