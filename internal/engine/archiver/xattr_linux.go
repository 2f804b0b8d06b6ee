package archiver

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/internal/engine/tree"
)

// oNoatime asks open not to update the access time.
const oNoatime = unix.O_NOATIME

// oPath opens a directory only to reach what it holds (ArchivePaths, on a
// directory the backup may search but not read).
const oPath = unix.O_PATH

// xattrs returns the extended attributes of the open file fd, sorted by
// name. A file system without them gives none; other failures are
// reported (the file is kept without them).
func (r *run) xattrs(fd int, p string) []tree.Xattr {
	xs, err := readXattrs(fd)
	if err != nil {
		r.report(p, fmt.Errorf("read extended attributes (stored without them): %w", err))
	}
	return xs
}

// linkXattrs returns the extended attributes of entry name of d without
// opening it (a file the change cache knows unchanged), as xattrs does.
// The entry is reached through d's descriptor (/proc/self/fd), so that a
// rename of d meanwhile does not matter; without /proc, through d's path.
func (r *run) linkXattrs(d *dir, name string) []tree.Xattr {
	p := "/proc/self/fd/" + strconv.Itoa(d.fd) + "/" + name
	xs, err := readXattrsOf(lxattrs{p})
	if errors.Is(err, unix.ENOENT) {
		if _, statErr := os.Stat("/proc/self/fd"); statErr != nil {
			xs, err = readXattrsOf(lxattrs{d.abs + "/" + name})
		}
	}
	if err != nil {
		r.report(d.join(name), fmt.Errorf("read extended attributes (stored without them): %w", err))
	}
	return xs
}

// xattrSource lists and reads extended attributes: of an open file
// (fdXattrs) or of a path whose last element is not followed (lxattrs).
type xattrSource interface {
	list(dst []byte) (int, error)
	get(name string, dst []byte) (int, error)
}

type fdXattrs struct{ fd int }

func (s fdXattrs) list(dst []byte) (int, error)             { return unix.Flistxattr(s.fd, dst) }
func (s fdXattrs) get(name string, dst []byte) (int, error) { return unix.Fgetxattr(s.fd, name, dst) }

type lxattrs struct{ path string }

func (s lxattrs) list(dst []byte) (int, error)             { return unix.Llistxattr(s.path, dst) }
func (s lxattrs) get(name string, dst []byte) (int, error) { return unix.Lgetxattr(s.path, name, dst) }

func readXattrs(fd int) ([]tree.Xattr, error) { return readXattrsOf(fdXattrs{fd}) }

func readXattrsOf(src xattrSource) ([]tree.Xattr, error) {
	var list []byte
	for {
		n, err := src.list(nil)
		if n == 0 || errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		list = make([]byte, n)
		n, err = src.list(list)
		if errors.Is(err, unix.ERANGE) {
			continue // the list grew meanwhile
		}
		if err != nil {
			return nil, err
		}
		list = list[:n]
		break
	}
	var xs []tree.Xattr
	for name := range bytes.SplitSeq(list, []byte{0}) {
		if len(name) == 0 {
			continue
		}
		value, err := getXattr(src, string(name))
		if errors.Is(err, unix.ENODATA) {
			continue // removed meanwhile
		}
		if err != nil {
			return xs, fmt.Errorf("%s: %w", name, err)
		}
		if len(name) > tree.MaxXattrNameLen {
			continue
		}
		xs = append(xs, tree.Xattr{Name: string(name), Value: value})
	}
	slices.SortFunc(xs, func(a, b tree.Xattr) int { return strings.Compare(a.Name, b.Name) })
	return xs, nil
}

func getXattr(src xattrSource, name string) ([]byte, error) {
	for {
		n, err := src.get(name, nil)
		if err != nil {
			return nil, err
		}
		v := make([]byte, n)
		n, err = src.get(name, v)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return v[:n], nil
	}
}
