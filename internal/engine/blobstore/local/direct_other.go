//go:build !linux

package local

import "os"

// Direct I/O is used on Linux only (direct_linux.go).
const oDirect = 0

func clearDirect(*os.File) error { return nil }
