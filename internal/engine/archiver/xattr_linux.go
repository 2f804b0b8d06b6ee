package archiver

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/internal/engine/tree"
)

// oNoatime asks open not to update the access time.
const oNoatime = unix.O_NOATIME

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

func readXattrs(fd int) ([]tree.Xattr, error) {
	var list []byte
	for {
		n, err := unix.Flistxattr(fd, nil)
		if n == 0 || errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		list = make([]byte, n)
		n, err = unix.Flistxattr(fd, list)
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
		value, err := getXattr(fd, string(name))
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

func getXattr(fd int, name string) ([]byte, error) {
	for {
		n, err := unix.Fgetxattr(fd, name, nil)
		if err != nil {
			return nil, err
		}
		v := make([]byte, n)
		n, err = unix.Fgetxattr(fd, name, v)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return v[:n], nil
	}
}
