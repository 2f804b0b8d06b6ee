package coffer

import (
	"path"
	"strconv"
	"strings"
)

// Limits of what a backup names on its client.
const (
	MaxPathLen    = 4096 // bytes of one path to back up
	MaxExcludeLen = 4096 // bytes of one exclude pattern
)

// PathProblem says what is wrong with p as a path to back up — it must be
// absolute and clean, without NUL bytes, at most MaxPathLen bytes — as the
// end of a sentence naming it, or "" when nothing is.
func PathProblem(p string) string {
	switch {
	case len(p) > MaxPathLen:
		return "is longer than " + strconv.Itoa(MaxPathLen) + " bytes"
	case strings.IndexByte(p, 0) >= 0:
		return "contains a NUL byte"
	case !path.IsAbs(p):
		return "is not absolute: give the full path, starting with /"
	case path.Clean(p) != p:
		return "is not clean (no //, /./, /../ or trailing /): write it as " + path.Clean(p)
	}
	return ""
}

// ExcludeProblem says what is wrong with p as an exclude pattern — it must
// be 1 to MaxExcludeLen bytes without NUL bytes — as the end of a sentence
// naming it, or "" when nothing is.
func ExcludeProblem(p string) string {
	switch {
	case p == "":
		return "is empty"
	case len(p) > MaxExcludeLen:
		return "is longer than " + strconv.Itoa(MaxExcludeLen) + " bytes"
	case strings.IndexByte(p, 0) >= 0:
		return "contains a NUL byte"
	}
	return ""
}
