package archiver

import "sync/atomic"

// Progress counts a backup's work as it happens (Options.Progress), for a
// caller to read from any goroutine while Archive or ArchivePaths runs.
// When the backup ends, each counter equals the Stats field of its name
// (Errors: len(Stats.Errors)), if the Progress started at zero.
type Progress struct {
	// Entries stored so far, as in Stats.
	Files, Dirs, Symlinks, Others atomic.Uint64
	// Files by what the change cache said, as in Stats.
	FilesNew, FilesChanged, FilesUnchanged atomic.Uint64
	// Excluded counts the entries left out by Options.Exclude.
	Excluded atomic.Uint64
	// BrokenLinks counts the symlinks stored whose target does not exist.
	BrokenLinks atomic.Uint64
	// Errors counts the entries reported in Stats.Errors.
	Errors atomic.Uint64
	// Bytes is the size of the files done, read or reused; ReadBytes the
	// bytes read and hashed.
	Bytes, ReadBytes atomic.Uint64
	// DataBlobs, TreeBlobs and AddedRawBytes count the blobs saved and
	// their plaintext bytes.
	DataBlobs, TreeBlobs, AddedRawBytes atomic.Uint64
	// FoundFiles and FoundBytes count the regular files the walker found
	// so far, and their size: the work ahead of the readers, for an
	// estimate of what remains (the walk finishes well before the reads).
	FoundFiles, FoundBytes atomic.Uint64

	current atomic.Pointer[string]
}

// CurrentPath returns the absolute path of a file being backed up (one of
// those being read, with several readers), or "" before the first.
func (p *Progress) CurrentPath() string {
	if s := p.current.Load(); s != nil {
		return *s
	}
	return ""
}

// counters returns p's counters in the order of the run's.
func (p *Progress) counters() *[numCounters]*atomic.Uint64 {
	return &[numCounters]*atomic.Uint64{
		cFiles: &p.Files, cDirs: &p.Dirs, cSymlinks: &p.Symlinks, cOthers: &p.Others,
		cBytes: &p.Bytes, cRead: &p.ReadBytes,
		cDataBlobs: &p.DataBlobs, cTreeBlobs: &p.TreeBlobs, cAddedRaw: &p.AddedRawBytes,
		cFilesNew: &p.FilesNew, cFilesChanged: &p.FilesChanged, cFilesUnchanged: &p.FilesUnchanged,
		cExcluded: &p.Excluded, cErrors: &p.Errors,
		cFoundFiles: &p.FoundFiles, cFoundBytes: &p.FoundBytes, cBrokenLinks: &p.BrokenLinks,
	}
}
