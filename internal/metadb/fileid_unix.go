//go:build unix

package metadb

import (
	"fmt"
	"os"
	"syscall"
)

// fileID identifies a file independently of its name.
type fileID struct{ dev, ino uint64 }

func statFileID(path string) (fileID, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileID{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, fmt.Errorf("stat %s: no inode information", path)
	}
	return fileID{dev: uint64(st.Dev), ino: st.Ino}, nil
}
