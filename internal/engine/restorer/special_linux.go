package restorer

import (
	"errors"
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/internal/engine/tree"
)

// makeSpecial creates a fifo or device node name in dirfd, accessible only
// to its owner: the caller sets its owner, then its mode (chmodNoFollow).
func makeSpecial(dirfd int, name string, n *tree.Node) error {
	if err := checkName(name); err != nil {
		return err
	}
	var kind uint32
	dev := 0
	switch n.Type {
	case tree.Fifo:
		kind = unix.S_IFIFO
	case tree.CharDevice:
		kind, dev = unix.S_IFCHR, int(n.Device)
	case tree.BlockDevice:
		kind, dev = unix.S_IFBLK, int(n.Device)
	}
	return unix.Mknodat(dirfd, name, kind|0o600, dev)
}

// chmodNoFollow sets the mode of name in dirfd, which must not be a
// symlink, without opening it for reading or writing (opening a device can
// have effects): through an O_PATH descriptor, as glibc's fchmodat does
// for AT_SYMLINK_NOFOLLOW.
func chmodNoFollow(dirfd int, name string, mode uint32) error {
	fd, err := retry(func() (int, error) {
		return unix.Openat(dirfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	})
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return unix.ELOOP
	}
	err = unix.Fchmodat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), mode, 0)
	if errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("set the mode of a special file through /proc/self/fd: %w (is /proc mounted?)", err)
	}
	return err
}

// renameNoReplace renames old in dirfd to new unless an entry exists at
// new (EEXIST).
func renameNoReplace(dirfd int, old, new string) error {
	err := unix.Renameat2(dirfd, old, dirfd, new, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
		return linkNoReplace(dirfd, old, new) // a file system without RENAME_NOREPLACE
	}
	return err
}
