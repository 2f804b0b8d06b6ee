package tree

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/cofferhq/coffer/internal/engine/blob"
)

// Smallest encodings, which bound how many items a count can claim in the
// bytes that remain: nothing is allocated for items the input cannot hold.
const (
	minNodeSize  = 11 // name of one byte (2), type, mode, uid, gid, user, group, mtime (2), xattr count
	minXattrSize = 3  // name of one byte (2), empty value

	// maxPrealloc caps the slices made from a count: a node takes ~20 times
	// its smallest encoding in memory, so larger slices grow as items
	// actually decode.
	maxPrealloc = 1024
)

// Decode parses an encoded tree. It accepts only the canonical encoding
// of a valid tree (so Encode of the result gives back b) and never panics;
// errors match ErrCorrupt and say which node is wrong. The result does not
// share memory with b.
func Decode(b []byte) (*Tree, error) {
	if len(b) > blob.MaxSize {
		return nil, corrupt("%d bytes exceeds the %d-byte blob maximum", len(b), blob.MaxSize)
	}
	d := &decoder{b: b}
	version, kind := d.byte("version"), d.byte("kind")
	if d.err != nil {
		return nil, corrupt("%v", d.err)
	}
	if version != Version {
		return nil, corrupt("format version %d is not supported (this Coffer reads version %d)", version, Version)
	}
	var t *Tree
	var err error
	switch kind {
	case kindNodes:
		t, err = d.nodes()
	case kindParts:
		t, err = d.parts()
	default:
		return nil, corrupt("unknown kind %d", kind)
	}
	if err != nil {
		return nil, err
	}
	if d.off != len(b) {
		return nil, corrupt("%d trailing bytes", len(b)-d.off)
	}
	return t, nil
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("decode tree: %s: %w", fmt.Sprintf(format, args...), ErrCorrupt)
}

func (d *decoder) nodes() (*Tree, error) {
	count := d.count("node count", minNodeSize)
	if d.err != nil {
		return nil, corrupt("%v", d.err)
	}
	t := &Tree{}
	if count > 0 {
		t.Nodes = make([]Node, 0, min(count, maxPrealloc))
	}
	for i := range count {
		var n Node
		d.node(&n)
		err := d.err
		if err == nil {
			err = n.validate()
		}
		if err == nil && i > 0 && t.Nodes[i-1].Name >= n.Name {
			err = errOrder
		}
		if err != nil {
			return nil, corrupt("node %d %s: %v", i, quote(n.Name), err)
		}
		t.Nodes = append(t.Nodes, n)
	}
	return t, nil
}

func (d *decoder) parts() (*Tree, error) {
	count := d.count("part count", blob.IDSize)
	if d.err == nil && count == 0 {
		d.fail("parts tree without parts")
	}
	t := &Tree{Parts: make([]blob.ID, count)}
	for i := range t.Parts {
		t.Parts[i] = d.id("part")
	}
	if d.err != nil {
		return nil, corrupt("%v", d.err)
	}
	if err := t.Validate(); err != nil {
		return nil, corrupt("%v", err)
	}
	return t, nil
}

// node reads one node; the caller validates it. Fields follow the order of
// appendNode.
func (d *decoder) node(n *Node) {
	n.Name = string(d.bytes("name"))
	n.Type = Type(d.byte("type"))
	if d.err == nil && !n.Type.Valid() {
		d.fail("unknown type %d", n.Type)
	}
	mode := d.uvarint("mode")
	if d.err == nil && mode&^ModeMask != 0 {
		d.fail("mode %#o outside %#o", mode, ModeMask)
	}
	n.Mode = uint32(mode)
	n.UID, n.GID = d.uint32("uid"), d.uint32("gid")
	n.User, n.Group = d.owner(&d.user, "user"), d.owner(&d.group, "group")
	sec, nsec := d.varint("mtime"), d.uvarint("mtime nanoseconds")
	if d.err == nil && nsec >= 1e9 {
		d.fail("mtime nanoseconds %d out of range", nsec)
	}
	n.ModTime = time.Unix(sec, int64(nsec)).UTC()
	switch n.Type {
	case File:
		n.Size, n.Links = d.uvarint("size"), d.uvarint("links")
		if n.Links >= 2 {
			n.Inode, n.DeviceID = d.uvarint("inode"), d.uvarint("device id")
		}
		if count := d.count("content count", blob.IDSize); count > 0 {
			n.Content = make([]blob.ID, count)
			for i := range n.Content {
				n.Content[i] = d.id("content")
			}
		}
	case Dir:
		n.Subtree = d.id("subtree")
	case Symlink:
		n.LinkTarget = string(d.bytes("link target"))
	case CharDevice, BlockDevice:
		n.Device = d.uvarint("device")
	}
	if count := d.count("xattr count", minXattrSize); count > 0 {
		n.Xattrs = make([]Xattr, 0, min(count, maxPrealloc))
		for range count {
			if d.err != nil {
				break
			}
			name, value := string(d.bytes("xattr name")), append([]byte{}, d.bytes("xattr value")...)
			n.Xattrs = append(n.Xattrs, Xattr{Name: name, Value: value})
		}
	}
}

// decoder reads the fields of an encoding. Its error is sticky: after the
// first failure every read returns a zero value, so a caller checks err
// once per node.
type decoder struct {
	b   []byte
	off int
	err error

	user, group string // the last owner names read, shared by nodes alike
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format, args...)
	}
}

func (d *decoder) byte(what string) byte {
	if d.err != nil {
		return 0
	}
	if d.off >= len(d.b) {
		d.fail("%s: truncated", what)
		return 0
	}
	d.off++
	return d.b[d.off-1]
}

// uvarint reads an unsigned varint and insists on its shortest form (the
// last byte of a longer one is not zero), which keeps encodings canonical.
func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	switch {
	case n == 0:
		d.fail("%s: truncated", what)
		return 0
	case n < 0:
		d.fail("%s: varint overflows 64 bits", what)
		return 0
	case n > 1 && d.b[d.off+n-1] == 0:
		d.fail("%s: varint not in its shortest form", what)
		return 0
	}
	d.off += n
	return v
}

// varint reads a zig-zag signed varint, as binary.AppendVarint writes it.
func (d *decoder) varint(what string) int64 {
	u := d.uvarint(what)
	x := int64(u >> 1)
	if u&1 != 0 {
		x = ^x
	}
	return x
}

func (d *decoder) uint32(what string) uint32 {
	v := d.uvarint(what)
	if v > math.MaxUint32 {
		d.fail("%s %d exceeds 32 bits", what, v)
		return 0
	}
	return uint32(v)
}

// count reads a count of items of at least minSize bytes each.
func (d *decoder) count(what string, minSize int) int {
	v := d.uvarint(what)
	if rest := uint64(len(d.b) - d.off); v > rest/uint64(minSize) {
		d.fail("%s %d cannot fit in the remaining %d bytes", what, v, rest)
		return 0
	}
	return int(v)
}

// bytes reads a length-prefixed string. The result aliases the input.
func (d *decoder) bytes(what string) []byte {
	n := d.uvarint(what)
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)-d.off) {
		d.fail("%s: length %d exceeds the remaining %d bytes", what, n, len(d.b)-d.off)
		return nil
	}
	d.off += int(n)
	return d.b[d.off-int(n) : d.off]
}

// owner reads a user or group name, reusing the previous one when equal:
// most entries of a directory have the same owner.
func (d *decoder) owner(last *string, what string) string {
	if b := d.bytes(what); string(b) != *last {
		*last = string(b)
	}
	return *last
}

func (d *decoder) id(what string) blob.ID {
	var id blob.ID
	if d.err != nil {
		return id
	}
	if len(d.b)-d.off < blob.IDSize {
		d.fail("%s id: truncated", what)
		return id
	}
	d.off += copy(id[:], d.b[d.off:])
	return id
}
