package archiver

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/internal/engine/blob"
)

// FileStat is what decides whether a file changed since the last backup.
// The change time is part of it: a chmod, a rename or a write that keeps
// the modification time (touch -r, tar -x) still changes it.
type FileStat struct {
	Size             int64
	MtimeNs, CtimeNs int64 // nanoseconds since the Unix epoch
	Inode, Dev       uint64
}

// CacheState is what a ChangeCache knows of a file.
type CacheState uint8

// The states of a file in the change cache.
const (
	// CacheMiss: the path is unknown (a new file).
	CacheMiss CacheState = iota
	// CacheChanged: the path is known with another stat; it is read.
	CacheChanged
	// CacheUnchanged: the path is known with the same stat; its content
	// is reused without reading it.
	CacheUnchanged
)

// String names the state.
func (s CacheState) String() string {
	switch s {
	case CacheMiss:
		return "miss"
	case CacheChanged:
		return "changed"
	case CacheUnchanged:
		return "unchanged"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// ChangeCache answers for a file (absolute path) whether its content is
// known. Lookup is called from several goroutines at once. The content it
// gives for CacheUnchanged must be the file's full list of data blobs, as
// Options.OnFile reported it: those blobs are not checked by the archiver
// (whoever commits the snapshot checks that they exist). A list that
// cannot be the file's (none for a non-empty file, some for an empty one)
// makes the file be read, as a changed one.
type ChangeCache interface {
	Lookup(path string, st FileStat) (content []blob.ID, state CacheState)
}

// fileStat returns the change-detection stat of st.
func fileStat(st *unix.Stat_t) FileStat {
	return FileStat{Size: int64(st.Size), MtimeNs: unix.TimespecToNsec(st.Mtim), CtimeNs: unix.TimespecToNsec(st.Ctim),
		Inode: uint64(st.Ino), Dev: uint64(st.Dev)}
}

// smudge returns st to report to OnFile for a file read from start on:
// st itself, or, when the file changed within window before start, st
// with CtimeNs 0, so that no later stat matches it. (A write right after
// the read could keep the size and, on a file system with coarse
// timestamps, the same modification and change times.)
func smudge(st FileStat, start time.Time, window time.Duration) FileStat {
	limit := start.Add(-window).UnixNano()
	if st.MtimeNs > limit || st.CtimeNs > limit {
		st.CtimeNs = 0
	}
	return st
}
