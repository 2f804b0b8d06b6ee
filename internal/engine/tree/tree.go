package tree

import (
	"errors"
	"fmt"
	"iter"
	"slices"
	"strings"
	"time"

	"github.com/cofferhq/coffer/internal/engine/blob"
)

// Format limits of version 1.
const (
	Version = 1 // the tree encoding version

	// MaxNameLen bounds a node name. Linux allows 255 bytes on most file
	// systems but more where names are converted (a 255-character UTF-16
	// name is up to 765 bytes of UTF-8); 4095 is PATH_MAX-1, which no
	// single element can exceed.
	MaxNameLen = 4095
	// MaxLinkTargetLen bounds a symlink target (PATH_MAX-1 on Linux).
	MaxLinkTargetLen = 4095
	// MaxXattrNameLen bounds an extended attribute name (XATTR_NAME_MAX).
	MaxXattrNameLen = 255
	// ModeMask covers the bits Node.Mode may hold: permissions plus
	// setuid, setgid and sticky, in the Unix st_mode layout.
	ModeMask = 0o7777
)

// ErrCorrupt marks a tree or snapshot manifest that cannot be decoded:
// truncated, not in canonical form, or breaking a rule of the format.
var ErrCorrupt = errors.New("corrupt tree or snapshot")

// Type says what kind of file a node is.
type Type uint8

// The node types. Their values are part of the repository format.
const (
	File        Type = 1
	Dir         Type = 2
	Symlink     Type = 3
	CharDevice  Type = 4
	BlockDevice Type = 5
	Fifo        Type = 6
	Socket      Type = 7
)

var typeNames = [...]string{File: "file", Dir: "dir", Symlink: "symlink",
	CharDevice: "chardev", BlockDevice: "blockdev", Fifo: "fifo", Socket: "socket"}

// String names the type.
func (t Type) String() string {
	if t.Valid() {
		return typeNames[t]
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Valid reports whether t is a defined type.
func (t Type) Valid() bool { return t >= File && t <= Socket }

// Node is one directory entry. Which fields may be set depends on Type
// (Validate says which); the others must be zero.
type Node struct {
	Name    string // one path element, raw bytes (see ValidName)
	Type    Type
	Mode    uint32 // permission, setuid, setgid and sticky bits (ModeMask)
	UID     uint32
	GID     uint32
	User    string // owner name, may be empty
	Group   string // group name, may be empty
	ModTime time.Time

	Size    uint64    // files: content length
	Content []blob.ID // files: data blobs in order

	Subtree blob.ID // dirs: the directory's tree blob

	LinkTarget string // symlinks

	Device uint64 // char and block devices: rdev

	// Links, Inode and DeviceID are set only for files with more than one
	// link: Inode and DeviceID group the links of one file for restore.
	Links    uint64
	Inode    uint64
	DeviceID uint64

	Xattrs []Xattr // sorted by name, unique
}

// Xattr is an extended attribute.
type Xattr struct {
	Name  string
	Value []byte
}

// Tree is one encoded directory: either its nodes, or (for a directory too
// large for one blob) the tree blobs holding its nodes, in order. An empty
// directory has neither.
type Tree struct {
	Nodes []Node // sorted by name (bytewise), names unique
	Parts []blob.ID
}

// ValidName reports whether name is a safe path element: 1 to MaxNameLen
// bytes, not "." or "..", no '/' and no NUL. Restores join names to their
// destination, so this is what keeps them inside it. Names are Unix path
// elements: '\\' and ':' are ordinary bytes, so a restore to a system where
// they separate paths needs a check of its own.
func ValidName(name string) error {
	switch {
	case name == "":
		return errors.New("empty name")
	case len(name) > MaxNameLen:
		return fmt.Errorf("name of %d bytes exceeds %d", len(name), MaxNameLen)
	case name == "." || name == "..":
		return fmt.Errorf("name %q is not allowed", name)
	case strings.IndexByte(name, '/') >= 0:
		return fmt.Errorf("name %s contains '/'", quote(name))
	case strings.IndexByte(name, 0) >= 0:
		return fmt.Errorf("name %s contains a NUL byte", quote(name))
	}
	return nil
}

// Validate reports why t cannot be encoded, or nil. Decode applies the same
// rules (see the package documentation).
func (t *Tree) Validate() error {
	if len(t.Parts) > 0 {
		if len(t.Nodes) > 0 {
			return errors.New("tree has both nodes and parts")
		}
		for i, id := range t.Parts {
			if id.IsZero() {
				return fmt.Errorf("part %d is a zero id", i)
			}
		}
		return nil
	}
	for i := range t.Nodes {
		n := &t.Nodes[i]
		err := n.validate()
		if err == nil && i > 0 && t.Nodes[i-1].Name >= n.Name {
			err = errOrder
		}
		if err != nil {
			return fmt.Errorf("node %d %s: %w", i, quote(n.Name), err)
		}
	}
	return nil
}

var errOrder = errors.New("names not sorted or not unique")

// validate checks one node, whatever its neighbours.
func (n *Node) validate() error {
	if err := ValidName(n.Name); err != nil {
		return err
	}
	return n.validateFields()
}

func (n *Node) validateFields() error {
	if !n.Type.Valid() {
		return fmt.Errorf("unknown type %d", uint8(n.Type))
	}
	if n.Mode&^ModeMask != 0 {
		return fmt.Errorf("mode %#o outside %#o", n.Mode, ModeMask)
	}
	if err := validateXattrs(n.Xattrs); err != nil {
		return err
	}
	// Fields of other types must be zero: they would not be encoded.
	switch {
	case n.Type != File && (n.Size != 0 || len(n.Content) > 0 || n.Links != 0 || n.Inode != 0 || n.DeviceID != 0):
		return fmt.Errorf("size, content or hard link fields set on a %s", n.Type)
	case n.Type != Dir && !n.Subtree.IsZero():
		return fmt.Errorf("subtree set on a %s", n.Type)
	case n.Type != Symlink && n.LinkTarget != "":
		return fmt.Errorf("link target set on a %s", n.Type)
	case n.Type != CharDevice && n.Type != BlockDevice && n.Device != 0:
		return fmt.Errorf("device number set on a %s", n.Type)
	}
	switch n.Type {
	case File:
		return n.validateFile()
	case Dir:
		if n.Subtree.IsZero() {
			return errors.New("directory without a subtree")
		}
	case Symlink:
		switch {
		case n.LinkTarget == "":
			return errors.New("empty link target")
		case len(n.LinkTarget) > MaxLinkTargetLen:
			return fmt.Errorf("link target of %d bytes exceeds %d", len(n.LinkTarget), MaxLinkTargetLen)
		case strings.IndexByte(n.LinkTarget, 0) >= 0:
			return errors.New("link target contains a NUL byte")
		}
	}
	return nil
}

func (n *Node) validateFile() error {
	count := uint64(len(n.Content))
	switch {
	case (n.Size == 0) != (count == 0):
		return fmt.Errorf("size %d with %d content blobs", n.Size, count)
	case count > n.Size || n.Size > count*blob.MaxSize:
		return fmt.Errorf("%d content blobs cannot hold %d bytes", count, n.Size)
	case n.Links == 1:
		return errors.New("links is 1 (leave hard link fields zero for a single link)")
	case n.Links == 0 && (n.Inode != 0 || n.DeviceID != 0):
		return errors.New("inode or device id set without links")
	}
	for i, id := range n.Content {
		if id.IsZero() {
			return fmt.Errorf("content blob %d is a zero id", i)
		}
	}
	return nil
}

func validateXattrs(xs []Xattr) error {
	for i, x := range xs {
		switch {
		case x.Name == "":
			return fmt.Errorf("xattr %d has an empty name", i)
		case len(x.Name) > MaxXattrNameLen:
			return fmt.Errorf("xattr %d: name of %d bytes exceeds %d", i, len(x.Name), MaxXattrNameLen)
		case strings.IndexByte(x.Name, 0) >= 0:
			return fmt.Errorf("xattr %d: name %s contains a NUL byte", i, quote(x.Name))
		case i > 0 && xs[i-1].Name >= x.Name:
			return fmt.Errorf("xattr %d %s: names not sorted or not unique", i, quote(x.Name))
		}
	}
	return nil
}

// Sort sorts nodes by name, the order a Tree needs. It sorts nothing else:
// each node's Xattrs must already be sorted.
func Sort(nodes []Node) {
	slices.SortFunc(nodes, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
}

// Refs yields the blobs t references: its parts and subtrees (blob.Tree)
// and its files' content (blob.Data), in order. A blob referenced twice is
// yielded twice.
func (t *Tree) Refs() iter.Seq2[blob.Type, blob.ID] {
	return func(yield func(blob.Type, blob.ID) bool) {
		for _, id := range t.Parts {
			if !yield(blob.Tree, id) {
				return
			}
		}
		for i := range t.Nodes {
			n := &t.Nodes[i]
			if n.Type == Dir && !yield(blob.Tree, n.Subtree) {
				return
			}
			for _, id := range n.Content {
				if !yield(blob.Data, id) {
					return
				}
			}
		}
	}
}

// quote formats a name for a message, shortened: names may be 4 KiB of
// arbitrary bytes.
func quote(name string) string {
	const limit = 64
	if len(name) > limit {
		return fmt.Sprintf("%q…", name[:limit])
	}
	return fmt.Sprintf("%q", name)
}
