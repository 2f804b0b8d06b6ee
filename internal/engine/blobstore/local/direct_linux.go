package local

import (
	"os"

	"golang.org/x/sys/unix"
)

// Direct I/O (Options.DirectWrites): objects of directMin bytes or more
// are written with O_DIRECT.
const (
	directAlign = 4096 // covers 512-byte and 4 KiB logical blocks
	directMin   = 1 << 20
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
