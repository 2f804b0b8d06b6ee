//go:build unix && !linux

package archiver

import "github.com/cofferhq/coffer/internal/engine/tree"

// oNoatime is Linux-only.
const oNoatime = 0

// oPath is Linux-only: elsewhere a directory on the way to a path given to
// ArchivePaths must be readable.
const oPath = 0

// xattrs are recorded on Linux only.
func (r *run) xattrs(fd int, p string) []tree.Xattr { return nil }

// linkXattrs: recorded on Linux only.
func (r *run) linkXattrs(d *dir, name string) []tree.Xattr { return nil }
