// Package restorer writes a snapshot — or some paths in it — back to a
// directory: files, directories, symlinks, hard links, fifos and (as root)
// devices, with their modes, modification times, extended attributes and
// (as root) owners.
//
// # Never outside the destination
//
// Names come from trees, which the repository authenticates and the tree
// decoder validates (no "", ".", "..", "/" or NUL). The restorer checks
// every name again before using it, and uses it only as one path element
// relative to an open directory (openat and friends), never as part of a
// path string. Directories are opened with O_NOFOLLOW, so a symlink inside
// the destination — one this restore created or one that was there before
// — is never followed: depending on the overwrite policy it is replaced by
// a real directory, kept (and nothing is written below it), or left beside
// a new directory. Only the destination's own path is resolved as given
// (its parent may be a symlink, as for any command given a path), once, when
// the restore starts: everything is written relative to the directory it
// named then, even if the path is re-pointed during the restore.
//
// # Files
//
// A file is written under a temporary name in its directory and renamed
// to its final name once complete and checked, so a restore never leaves a
// torn or failed file under a real name. Blobs are looked up in batches
// (Locate, one call for many files), sorted by pack and offset, and read
// in jobs of neighbouring blobs (ReadBlobs: one ranged read for many
// blobs, each authenticated and re-hashed by the Repository), then written
// at their offsets in their files; each blob's length and each file's
// total size are checked against the index and the tree. A large file's
// chunks spread over several jobs and workers, so one huge file does not
// serialize the restore.
//
// Directories get their modes and times last, deepest first, since
// creating entries changes them; hard links are made after every file is
// written, to the first restored path of their group.
//
// # Existing entries
//
// The Overwrite policy decides what happens to an entry in the way of a
// restored one: replace it, keep it, replace it when the backup's copy is
// newer, or keep it and write the restored entry beside it under a new
// name. An existing directory where a directory is restored is always
// merged into, never replaced or renamed.
//
// Entries that cannot be restored are reported in Stats.Errors and the
// restore goes on; repository, context and destination failures end it.
package restorer

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/tree"
)

// Repository is what a restore reads. *repository.Repository implements
// it; so does the agent's implementation reading through the server.
//
// The restorer trusts what it is given to be the snapshot's content: an
// implementation must deliver only trees and blobs it has checked — in
// particular, ReadBlobs and LoadDir must deliver a blob only if its
// plaintext hashes to its id (re-hashed after decryption and
// decompression), and deliver any other as an error (blob.ErrCorrupt).
// The restorer still validates every name and checks every size.
type Repository interface {
	// LoadDir returns a directory's nodes, joining a split directory's
	// parts, from tree blobs checked against their ids.
	LoadDir(ctx context.Context, id blob.ID) ([]tree.Node, error)
	// Locate returns the locations of ids; absent ids are not indexed.
	Locate(ctx context.Context, ids []blob.ID) (map[blob.ID]repository.Location, error)
	// ReadBlobs reads blobs of type t, neighbours in a pack together,
	// calling fn once per request with its plaintext (valid during the
	// call), authenticated and hashing to the request's id, or its error;
	// it returns fn's error or ctx's.
	ReadBlobs(ctx context.Context, t blob.Type, reqs []repository.BlobRequest, fn func(i int, plaintext []byte, err error) error) error
}

// Overwrite says what happens to an entry that exists where a restored
// entry goes. Whatever the policy, an existing directory where a directory
// is restored is merged into (never replaced), and the restorer never
// follows a symlink it finds: a symlink is an entry like a file.
type Overwrite uint8

// The overwrite policies.
const (
	// OverwriteAlways replaces an existing file, symlink or special file;
	// an existing directory is kept and restored into, and gets the
	// backup's metadata. An existing directory where a non-directory goes
	// is an error (ErrExistsAsDir: never removed).
	OverwriteAlways Overwrite = iota
	// OverwriteSkip keeps an existing entry (a directory where a file
	// goes, a file where a directory goes, anything) and skips the
	// restored one — for a directory, with everything in it — counting
	// it in Stats.Kept. Existing directories restored into keep their
	// metadata.
	OverwriteSkip
	// OverwriteIfNewer replaces an existing non-directory only when the
	// backup's copy has a newer modification time (compared with the
	// existing entry's own, not a symlink's target's); otherwise the
	// existing one is kept, counted in Stats.Kept. An existing directory
	// where a non-directory goes is an error (ErrExistsAsDir). Existing
	// directories restored into keep their metadata.
	OverwriteIfNewer
	// OverwriteRename keeps an existing entry and writes the restored one
	// beside it as "<name>.restored-N", with the smallest N ≥ 1 that is
	// free, counting it in Stats.Renamed (and in Files, Dirs… as usual).
	// Existing directories restored into keep their metadata.
	OverwriteRename
)

// String returns the policy's name, as in coffer.Overwrite.
func (o Overwrite) String() string {
	switch o {
	case OverwriteAlways:
		return "overwrite"
	case OverwriteSkip:
		return "skip"
	case OverwriteIfNewer:
		return "if-newer"
	case OverwriteRename:
		return "rename"
	}
	return fmt.Sprintf("Overwrite(%d)", uint8(o))
}

// ParseOverwrite returns the policy named s, as String names it (the
// names of coffer.Overwrite); "" is OverwriteAlways.
func ParseOverwrite(s string) (Overwrite, error) {
	if s == "" {
		return OverwriteAlways, nil
	}
	for o := OverwriteAlways; o <= OverwriteRename; o++ {
		if o.String() == s {
			return o, nil
		}
	}
	return 0, fmt.Errorf("unknown overwrite policy %q: use overwrite, skip, if-newer or rename", s)
}

// Options configure a Restorer.
type Options struct {
	// Workers is how many files (or ranges of a large file) are restored
	// at once (default 2×GOMAXPROCS: reading blobs waits on storage).
	Workers int
	// Overwrite is the policy for existing entries.
	Overwrite Overwrite
	// NoOwnership leaves owners alone even when running as root (owners
	// are restored only as root).
	NoOwnership bool
	// LocateBatch is about how many blob ids one Locate call looks up
	// (default 4096). Blobs of one batch are read in pack order.
	LocateBatch int
	// JobSize is about how many bytes of blobs one worker reads and
	// writes at a time (default 8 MiB): a large file is spread over
	// several workers in jobs of this size.
	JobSize int64
	// OnError, when set, is called (from any goroutine) for each entry
	// that could not be restored, as it happens.
	OnError func(EntryError)
	// Progress, when set, is updated as the restore goes, for the caller
	// to poll from another goroutine. Restores sharing one Progress add
	// up in it.
	Progress *Progress
}

// Progress is a running count of what restores have done so far, safe to
// read while they run.
type Progress struct {
	Files  atomic.Uint64 // regular files completed
	Dirs   atomic.Uint64 // directories made or entered
	Bytes  atomic.Uint64 // file content written, including files not complete yet
	Errors atomic.Uint64 // entries reported in Stats.Errors
	path   atomic.Pointer[string]
}

// CurrentPath returns the path (slash-separated, relative to the
// destination) of an entry being restored at the moment: a file whose
// content is being written, or the last other entry made. It is "" before
// anything was written.
func (p *Progress) CurrentPath() string {
	if s := p.path.Load(); s != nil {
		return *s
	}
	return ""
}

// Restorer restores snapshots from one repository.
type Restorer struct {
	repo Repository
	opts Options
	root bool // running as root: restore owners and devices
}

// New returns a Restorer reading repo.
func New(repo Repository, opts Options) (*Restorer, error) {
	if repo == nil {
		return nil, errors.New("restorer: no repository")
	}
	if opts.Overwrite > OverwriteRename {
		return nil, fmt.Errorf("restorer: unknown overwrite policy %d (use OverwriteAlways, OverwriteSkip, OverwriteIfNewer or OverwriteRename)", opts.Overwrite)
	}
	if opts.Workers <= 0 {
		opts.Workers = 2 * runtime.GOMAXPROCS(0)
	}
	if opts.LocateBatch <= 0 {
		opts.LocateBatch = 4096
	}
	if opts.JobSize <= 0 {
		opts.JobSize = 8 << 20
	}
	return &Restorer{repo: repo, opts: opts, root: euid() == 0}, nil
}

// Stats count what a restore wrote.
type Stats struct {
	Files    uint64 // regular files written (hard links not counted)
	Dirs     uint64 // directories made or entered
	Symlinks uint64
	Links    uint64 // hard links made
	Others   uint64 // fifos and devices
	Skipped  uint64 // sockets, and devices when not root
	Bytes    uint64 // content of the files written
	Kept     uint64 // entries not restored because an existing one was kept (OverwriteSkip, OverwriteIfNewer)
	Renamed  uint64 // entries restored beside an existing one as "<name>.restored-N" (OverwriteRename)
	// Errors lists the entries that were not restored, or not fully.
	Errors []EntryError
}

// EntryError is an entry a restore could not (fully) write.
type EntryError struct {
	Path string // slash-separated, relative to the destination
	Err  error
}

func (e EntryError) Error() string { return e.Path + ": " + e.Err.Error() }

// Errors wrapped by EntryError.Err.
var (
	// ErrUnsafeName marks an entry whose name could lead outside its
	// directory; it is never written.
	ErrUnsafeName = errors.New("unsafe name")
	// ErrExistsAsDir marks a non-directory entry that a directory stands in
	// the way of.
	ErrExistsAsDir = errors.New("a directory exists there")
	// ErrSize marks a file whose blobs do not add up to its recorded size.
	ErrSize = errors.New("content does not match the recorded size")
)

// Errors wrapped by the error of Restore and RestorePaths; nothing is
// written when they are returned.
var (
	// ErrNotInSnapshot marks a path to restore that the snapshot does not
	// have.
	ErrNotInSnapshot = errors.New("no such path in the snapshot")
	// ErrBadPath marks a path to restore with a ".." element.
	ErrBadPath = errors.New("invalid path")
)
