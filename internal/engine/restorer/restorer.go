// Package restorer writes a snapshot — or one path in it — back to a
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
// — is never followed: an entry in its way is replaced, an entry below it
// is written into a real directory made in its place. Only the
// destination's own path is resolved as given (its parent may be a
// symlink, as for any command given a path).
//
// # Files
//
// A file is written under a temporary name in its directory and renamed
// over its final name once complete, so a restore never leaves a torn file
// under a real name. Blobs are looked up in batches (Locate, one call for
// many files), sorted by pack and offset, and read in jobs of neighbouring
// blobs (ReadBlobs: one ranged read for many blobs, each authenticated and
// re-hashed), then written at their offsets in their files; a file's total
// size is checked against the tree. A large file's chunks spread over
// several jobs and workers, so one huge file does not serialize the
// restore.
//
// Directories get their modes and times last, deepest first, since
// creating entries changes them; hard links are made after every file is
// written, to the first restored path of their group.
//
// Entries that cannot be restored are reported in Stats.Errors and the
// restore goes on; repository, context and destination failures end it.
package restorer

import (
	"context"
	"errors"
	"runtime"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/tree"
)

// Repository is what a restore reads. *repository.Repository implements it.
type Repository interface {
	// LoadDir returns a directory's nodes, joining a split directory's parts.
	LoadDir(ctx context.Context, id blob.ID) ([]tree.Node, error)
	// Locate returns the locations of ids; absent ids are not indexed.
	Locate(ctx context.Context, ids []blob.ID) (map[blob.ID]repository.Location, error)
	// ReadBlobs reads blobs of type t, neighbours in a pack together,
	// calling fn once per request with its authenticated plaintext (valid
	// during the call) or its error; it returns fn's error or ctx's.
	ReadBlobs(ctx context.Context, t blob.Type, reqs []repository.BlobRequest, fn func(i int, plaintext []byte, err error) error) error
}

// Overwrite says what happens to an entry that exists where a restored
// entry goes.
type Overwrite uint8

// The overwrite policies.
const (
	// OverwriteAlways replaces an existing file, symlink or special file;
	// an existing directory is kept and restored into. An existing
	// directory where a non-directory goes is an error (never removed).
	OverwriteAlways Overwrite = iota
)

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
	if opts.Overwrite != OverwriteAlways {
		return nil, errors.New("restorer: unknown overwrite policy")
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
	Dirs     uint64
	Symlinks uint64
	Links    uint64 // hard links made
	Others   uint64 // fifos and devices
	Skipped  uint64 // sockets, and devices when not root
	Bytes    uint64 // file content written
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
