//go:build unix && !linux

package archiver

import "github.com/cofferhq/coffer/internal/engine/tree"

// oNoatime is Linux-only.
const oNoatime = 0

// xattrs are recorded on Linux only.
func (r *run) xattrs(fd int, p string) []tree.Xattr { return nil }
