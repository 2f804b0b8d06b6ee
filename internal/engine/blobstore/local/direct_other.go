//go:build !linux

package local

import "os"

// Direct I/O is used on Linux only (direct_linux.go).
const (
	oDirect     = 0
	directAlign = 4096
	directMin   = 1 << 20
)

func clearDirect(*os.File) error { return nil }
