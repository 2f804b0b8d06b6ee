package local

import (
	"os"

	"golang.org/x/sys/unix"
)

// oDirect is the open flag asking for direct I/O; a variable only so that
// a test can make the open fail the way a file system without direct I/O
// makes it fail.
var oDirect = unix.O_DIRECT

// clearDirect turns direct I/O off for f.
func clearDirect(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var opErr error
	err = rc.Control(func(fd uintptr) {
		flags, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
		if err != nil {
			opErr = err
			return
		}
		_, opErr = unix.FcntlInt(fd, unix.F_SETFL, flags&^unix.O_DIRECT)
	})
	if err != nil {
		return err
	}
	return opErr
}
