//go:build unix && !linux

package restorer

import (
	"errors"

	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/internal/engine/tree"
)

// makeSpecial would create a fifo or device relative to a directory
// descriptor, which this platform's system calls do not offer.
func makeSpecial(dirfd int, name string, n *tree.Node) error {
	return errors.New("restoring fifos and devices is supported on Linux only")
}

// chmodNoFollow sets the mode of name in dirfd, not following a symlink.
func chmodNoFollow(dirfd int, name string, mode uint32) error {
	return unix.Fchmodat(dirfd, name, mode, unix.AT_SYMLINK_NOFOLLOW)
}

// renameNoReplace renames the regular file old in dirfd to new unless an
// entry exists at new (EEXIST).
func renameNoReplace(dirfd int, old, new string) error {
	return linkNoReplace(dirfd, old, new)
}
