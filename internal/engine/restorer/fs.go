package restorer

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/internal/engine/tree"
)

// This file holds the only code that turns names into file-system calls.
// Every call takes a directory descriptor and one checked name, and none
// follows a symlink in that name.

func euid() int { return os.Geteuid() }

// checkName refuses a name that is not exactly one safe path element.
func checkName(name string) error {
	if err := tree.ValidName(name); err != nil {
		return fmt.Errorf("%w: %v", ErrUnsafeName, err)
	}
	return nil
}

// openDirAt opens the directory name in dirfd; a symlink there is ELOOP.
func openDirAt(dirfd int, name string) (int, error) {
	if err := checkName(name); err != nil {
		return -1, err
	}
	return retry(func() (int, error) {
		return unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	})
}

// openPath opens the directory at the slash-separated path rel below
// rootfd, one element at a time, refusing unsafe elements and symlinks.
// The empty path is rootfd itself (duplicated).
func openPath(rootfd int, rel string) (int, error) {
	fd, err := retry(func() (int, error) { return unix.Dup(rootfd) })
	if err != nil || rel == "" {
		return fd, err
	}
	for _, name := range strings.Split(rel, "/") {
		next, err := openDirAt(fd, name)
		unix.Close(fd)
		if err != nil {
			return -1, fmt.Errorf("open %s: %w", rel, err)
		}
		fd = next
	}
	return fd, nil
}

// mkdirAt creates the directory name in dirfd, accessible only to its
// owner (its mode is restored at the end).
func mkdirAt(dirfd int, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	return unix.Mkdirat(dirfd, name, 0o700)
}

// lstatAt returns the status of name in dirfd, not following a symlink.
func lstatAt(dirfd int, name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	if err := checkName(name); err != nil {
		return st, err
	}
	err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	return st, err
}

func isDir(st *unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFDIR }

func mtimeOf(st *unix.Stat_t) time.Time {
	sec, nsec := st.Mtim.Unix()
	return time.Unix(sec, nsec)
}

// linkNoReplace renames the regular file old in dirfd to new unless an
// entry exists at new (EEXIST), by making a hard link and removing old:
// for systems and file systems without an atomic rename that does not
// replace.
func linkNoReplace(dirfd int, old, new string) error {
	if err := unix.Linkat(dirfd, old, dirfd, new, 0); err != nil {
		return err
	}
	if err := unix.Unlinkat(dirfd, old, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}

// clearEntry removes a non-directory at name so that something else can be
// created there. A directory there is ErrExistsAsDir; nothing is fine.
func clearEntry(dirfd int, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	var st unix.Stat_t
	err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil
	case err != nil:
		return err
	case st.Mode&unix.S_IFMT == unix.S_IFDIR:
		return ErrExistsAsDir
	}
	err = unix.Unlinkat(dirfd, name, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	return err
}

// setMtime sets the modification time of name in dirfd, and its access
// time to the same (snapshots do not record access times), without
// following a symlink.
func setMtime(dirfd int, name string, mtime time.Time) error {
	t := unix.NsecToTimespec(mtime.UnixNano())
	ts := []unix.Timespec{t, t}
	return unix.UtimesNanoAt(dirfd, name, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// lchown sets the owner of name in dirfd without following a symlink.
func lchown(dirfd int, name string, n *tree.Node) error {
	return unix.Fchownat(dirfd, name, int(n.UID), int(n.GID), unix.AT_SYMLINK_NOFOLLOW)
}

// pwriteAll writes all of b at off.
func pwriteAll(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := unix.Pwrite(fd, b, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

func retry(f func() (int, error)) (int, error) {
	for {
		fd, err := f()
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// setXattrs sets a node's extended attributes on the open file fd.
func setXattrs(fd int, xs []tree.Xattr) error {
	var errs []error
	for _, x := range xs {
		if err := unix.Fsetxattr(fd, x.Name, x.Value, 0); err != nil {
			errs = append(errs, fmt.Errorf("set extended attribute %q: %w", x.Name, err))
		}
	}
	return errors.Join(errs...)
}
