package restorer

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/internal/engine/tree"
)

// maxRenames bounds the N of "<name>.restored-N" tried for one entry.
const maxRenames = 10000

// place makes a non-directory entry called name in dirfd by calling create,
// following the overwrite policy (mtime is the restored entry's
// modification time). create(name, false) must fail with EEXIST when an
// entry exists at name, so that nothing is replaced by accident;
// create(name, true) replaces a non-directory there (a directory there is
// ErrExistsAsDir). place returns the name the entry was made under, or ""
// when an existing entry was kept.
func (run *run) place(dirfd int, name string, mtime time.Time, create func(name string, replace bool) error) (string, error) {
	if err := checkName(name); err != nil {
		return "", err
	}
	switch run.policy {
	case OverwriteSkip:
		err := create(name, false)
		if errors.Is(err, unix.EEXIST) {
			return "", nil
		}
		return name, err
	case OverwriteIfNewer:
		err := create(name, false)
		if !errors.Is(err, unix.EEXIST) {
			return name, err
		}
		st, err := lstatAt(dirfd, name)
		switch {
		case errors.Is(err, unix.ENOENT): // gone meanwhile
		case err != nil:
			return "", err
		case isDir(&st):
			return "", ErrExistsAsDir
		case !mtime.After(mtimeOf(&st)):
			return "", nil
		}
		return name, create(name, true)
	case OverwriteRename:
		for i := 0; i <= maxRenames; i++ {
			try := name
			if i > 0 {
				try = restoredName(name, i)
				if err := checkName(try); err != nil {
					return "", err
				}
			}
			if err := create(try, false); !errors.Is(err, unix.EEXIST) {
				return try, err
			}
		}
		return "", noFreeName(name)
	default:
		return name, create(name, true)
	}
}

// placeDir makes the directory for n in dirfd (owner-only until its mode
// is restored at the end), following the overwrite policy. It returns the
// name of the directory to restore into and whether it existed before, or
// "" when a non-directory there is kept. An existing directory is always
// used as it is; an existing symlink is never followed (it is an entry
// like a file).
func (run *run) placeDir(dirfd int, n *tree.Node) (name string, existed bool, err error) {
	err = mkdirAt(dirfd, n.Name)
	if err == nil || !errors.Is(err, unix.EEXIST) {
		return n.Name, false, err
	}
	st, err := lstatAt(dirfd, n.Name)
	if err != nil {
		return "", false, err
	}
	if isDir(&st) {
		return n.Name, true, nil
	}
	switch run.policy {
	case OverwriteSkip:
		return "", false, nil
	case OverwriteIfNewer:
		if !n.ModTime.After(mtimeOf(&st)) {
			return "", false, nil
		}
	case OverwriteRename:
		for i := 1; i <= maxRenames; i++ {
			try := restoredName(n.Name, i)
			if err := mkdirAt(dirfd, try); !errors.Is(err, unix.EEXIST) {
				return try, false, err
			}
		}
		return "", false, noFreeName(n.Name)
	}
	if err := unix.Unlinkat(dirfd, n.Name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return "", false, err
	}
	return n.Name, false, mkdirAt(dirfd, n.Name)
}

func restoredName(name string, i int) string {
	return name + ".restored-" + strconv.Itoa(i)
}

func noFreeName(name string) error {
	return fmt.Errorf("no free name to restore beside the existing entry: %s.restored-1 to -%d all exist; remove some", name, maxRenames)
}
