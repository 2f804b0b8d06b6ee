// Package archiver stores local files in a repository: it walks the
// directory trees, reads and chunks every file, hashes the chunks, asks the
// repository which blobs it lacks, and saves those, then writes the
// directories' trees bottom-up and returns the root tree's id. The caller
// commits that root as a snapshot (repository.Writer.Commit).
//
// Archive backs up one directory, its entries at the root of the snapshot;
// ArchivePaths backs up several absolute paths into one root tree that
// mirrors the absolute layout (/home/u/docs is stored as home → u → docs).
//
// The archiver consumes the small Saver interface, which
// *repository.Writer implements in process; the agent puts an uploader to
// the server behind the same interface.
//
// # Pipeline
//
// Throughput comes from keeping both kinds of CPU work — chunking and
// hashing, then compression and encryption — running on every core at once,
// with bounded memory:
//
//	walker ─files─▶ readers (Workers) ─chunks─▶ batcher ─Missing─▶ savers (Savers) ─Save─▶
//	   └─────── directories finish bottom-up as their entries finish ─trees─┘
//
// One walker lists directories in name order. Readers (one per core by
// default) open each file relative to its directory, read and chunk it
// (small files in one read), hash each chunk and copy it into a pooled
// buffer; a large file is chunked by one reader while its chunks are
// compressed by all savers, so the four large files of a typical server do
// not serialise on one core. A file's node is complete once its chunks are
// hashed: directories are encoded as soon as their last entry completes,
// without waiting for anything to be stored. The batcher asks the saver
// which of a batch of ids (up to BatchSize, or a few milliseconds' worth)
// are missing — one database or server round trip per batch, not per
// chunk, with a few batches in flight at once — and hands the missing
// blobs to the savers, which compress and encrypt them
// on their own goroutines (Saver.Save). Memory is bounded by MemoryLimit
// bytes of chunk buffers plus each reader's chunker buffer.
//
// # Incremental backups
//
// With a ChangeCache (Options.Cache), a regular file whose size,
// modification time, change time, inode and device equal those the cache
// holds for its path is not opened: its node takes the content blobs the
// cache gives, and those are not asked about (Saver.Missing) again — the
// snapshot's commit is what checks that they still exist. Options.OnFile
// hands every stored file's stat and content to the caller, who keeps
// them for the next backup. Directories are still listed, encoded and
// hashed: an unchanged directory gives the same tree id, which the
// repository already has.
//
// # What a snapshot records
//
// Each node records its type, permission bits with setuid, setgid and
// sticky, owner and group (ids and names), modification time to the
// nanosecond, and its extended attributes (Linux; files and directories).
// Files record their size and content blobs, and their inode and device
// when they have more than one link, so a restore can recreate hard links;
// symlinks record their target (never followed); devices their number;
// fifos and sockets only that they exist. Empty directories are kept.
// Sparse files are stored with their holes as zeros. The root's tree lists
// the root's entries; the root directory's own metadata is not recorded (a
// restore writes into a directory the caller chose).
// Each link of a hard-linked file is read again (deduplication makes the
// second copy free to store, not to read).
//
// Options.Exclude leaves out entries matching gitignore patterns, and
// Options.OneFileSystem stops at mount points.
//
// # Errors
//
// A file that vanishes, cannot be opened or read, or is replaced during
// the backup is left out; one that changes while read (its size or
// modification time differ afterwards) is kept as read. Either way the
// backup goes on and Stats.Errors says which path and why; the backup is
// then partial. Errors of the saver, the context, or the root directory
// end the backup.
//
// The archiver is Unix-only: it reads directories through file descriptors
// (openat, fstatat) so that no symlink and no rename during the walk can
// make it read outside the tree it was given.
package archiver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-git/v5/plumbing/format/gitignore"
	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/chunker"
	"github.com/cofferhq/coffer/internal/engine/tree"
)

// Saver stores blobs. *repository.Writer implements it.
type Saver interface {
	// Missing returns, in input order, the ids among ids that the
	// repository lacks, and keeps the others alive for this backup. It
	// is called from several goroutines at once (Options.Queries).
	Missing(ctx context.Context, ids []blob.ID) ([]blob.ID, error)
	// Save stores a blob, compressed at level when that shrinks it. It
	// reports false when the blob was already saved by this backup. It is
	// called from several goroutines at once.
	Save(ctx context.Context, t blob.Type, id blob.ID, plaintext []byte, level blob.Compression) (bool, error)
}

// Options configure an Archiver. DefaultOptions fills in the usual values.
type Options struct {
	// Codec computes blob ids (the repository's keyed hash). Required.
	Codec *blob.Codec
	// Chunker are the repository's chunker parameters (zero: the
	// defaults). They must be the repository's, or nothing deduplicates.
	Chunker chunker.Params
	// Compression is the level passed to Save (blob.Off is the zero
	// value: DefaultOptions sets blob.Fastest).
	Compression blob.Compression
	// SkipIncompressible saves chunks that look random (judged from a
	// sample's byte histogram) with blob.Off, sparing the saver a
	// compression attempt that would not shrink them.
	SkipIncompressible bool
	// Workers is how many goroutines read, chunk and hash files
	// (default GOMAXPROCS).
	Workers int
	// Savers is how many goroutines call Save, each compressing and
	// encrypting one blob at a time (default GOMAXPROCS).
	Savers int
	// BatchSize is the most ids asked about in one Missing call
	// (default 256).
	BatchSize int
	// BatchDelay is how long the first chunk of a batch waits for more
	// before the batch is sent anyway (default 2 ms).
	BatchDelay time.Duration
	// Queries is how many Missing calls may run at once (default 2).
	Queries int
	// MemoryLimit bounds the bytes of chunk buffers waiting to be looked
	// up or saved (default 64 MiB, at least 4×Chunker.Max). Each reader
	// also holds a chunker buffer of 2×Chunker.Max.
	MemoryLimit int64
	// OnError, when set, is called (from any goroutine) for each file the
	// backup could not store as it is, as it happens.
	OnError func(FileError)

	// Exclude lists gitignore patterns ("*.log", "/var/cache",
	// "node_modules/", "!keep.log"); later patterns take precedence, as
	// in a .gitignore file. They match an entry's absolute path as if the
	// repository's root were "/": a pattern without a slash matches a
	// name at any depth, one with a slash (leading, or in the middle) is
	// anchored at "/", a trailing slash matches directories only, and
	// "**" matches any number of directories. An excluded entry is not
	// stored, nor descended into (a negation cannot bring back an entry
	// of an excluded directory), and counts in Stats.Excluded. A path
	// given to ArchivePaths is matched too, and since a pattern matches
	// a whole path, one that matches a directory above a backup path
	// excludes everything below it ("tmp" leaves out all of /tmp/x).
	Exclude []string
	// OneFileSystem keeps each backup path on its own file system: a
	// directory on another device than the path's starting directory (a
	// mount point) is recorded with its metadata but no entries.
	OneFileSystem bool
	// Cache, when set, says which files are unchanged since the last
	// backup (see ChangeCache); nil reads every file.
	Cache ChangeCache
	// OnFile, when set, is called (from any goroutine) for every regular
	// file stored, read or reused from Cache, with the path Cache is asked
	// about, the stat that identifies this content and the full content
	// list; not for files that changed while read, nor for those left
	// out. A file modified too shortly before it was read (within two
	// seconds: its content could change again without its stat changing,
	// the file system's timestamps being coarser than that) is reported
	// with CtimeNs 0, a stat no file has, so that the next backup reads it
	// again.
	OnFile func(path string, st FileStat, content []blob.ID)
	// Progress, when set, counts the backup's work as it happens, for the
	// caller to poll. One Progress serves one backup at a time.
	Progress *Progress
}

// DefaultOptions returns the options of an ordinary backup with codec:
// default chunker parameters, fastest compression (not tried on chunks that
// look random), and a goroutine per core at each stage.
func DefaultOptions(codec *blob.Codec) Options {
	return Options{Codec: codec, Chunker: chunker.DefaultParams(), Compression: blob.Fastest, SkipIncompressible: true}
}

// Archiver stores directory trees. It holds no state between calls to
// Archive and ArchivePaths, which may run concurrently (sharing
// Options.Progress and the callbacks, if set).
type Archiver struct {
	opts Options
	// exclude matches Options.Exclude; nil when there are none.
	exclude gitignore.Matcher
	// maxTreeSize bounds an encoded tree before it is split; tests lower
	// it to split small directories.
	maxTreeSize int
	// racyWindow is how recently before its read a file's stat may have
	// changed for OnFile to report it as is (see Options.OnFile); tests
	// set it to zero, since the files they write are always that recent.
	racyWindow time.Duration
	// hook, when set by tests, runs before a file is opened (stage
	// "open") and after, before it is read ("read").
	hook func(stage, path string)
	// devHook, when set by tests, gives the device of a directory from
	// its stat, so that mount points can be simulated without mounting.
	devHook func(path string, st *unix.Stat_t) uint64
	// pools hold free chunk buffers by size class, shared by the
	// Archive calls of this Archiver: sync.Pool lets the runtime drop
	// them when memory is short, and keeps them warm across backups.
	pools [maxClass + 1]sync.Pool
}

// New returns an Archiver with opts, defaults filled in. It fails on an
// invalid exclude pattern, naming it.
func New(opts Options) (*Archiver, error) {
	if opts.Codec == nil {
		return nil, errors.New("archiver: no codec")
	}
	if opts.Chunker == (chunker.Params{}) {
		opts.Chunker = chunker.DefaultParams()
	}
	if err := opts.Chunker.Validate(); err != nil {
		return nil, fmt.Errorf("archiver: %w", err)
	}
	if opts.Compression > blob.Best {
		return nil, fmt.Errorf("archiver: unknown compression level %d", opts.Compression)
	}
	exclude, err := newExcluder(opts.Exclude)
	if err != nil {
		return nil, fmt.Errorf("archiver: %w", err)
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	if opts.Savers <= 0 {
		opts.Savers = runtime.GOMAXPROCS(0)
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 256
	}
	if opts.BatchDelay <= 0 {
		opts.BatchDelay = 2 * time.Millisecond
	}
	if opts.Queries <= 0 {
		opts.Queries = 2
	}
	if opts.MemoryLimit <= 0 {
		opts.MemoryLimit = 64 << 20
	}
	opts.MemoryLimit = max(opts.MemoryLimit, 4*int64(bufferSize(opts.Chunker.Max)))
	opts.Exclude = append([]string(nil), opts.Exclude...)
	return &Archiver{opts: opts, exclude: exclude, maxTreeSize: blob.MaxSize, racyWindow: 2 * time.Second}, nil
}

// Stats describe one backup. The embedded snapshot statistics count what
// the tree holds and which blobs this backup saved; AddedBytes is left to
// the caller, since only the saver knows the stored (compressed,
// encrypted) size (repository.WriterStats.StoredBytes).
type Stats struct {
	tree.SnapshotStats
	// ReadBytes counts the file bytes read and hashed.
	ReadBytes uint64
	// AddedRawBytes counts the plaintext bytes of the blobs saved.
	AddedRawBytes uint64
	// FilesNew, FilesChanged and FilesUnchanged split Files by what the
	// change cache said: unknown (every file, without a cache), known
	// with another stat (both read), or unchanged (reused, not read).
	FilesNew, FilesChanged, FilesUnchanged uint64
	// Excluded counts the entries Options.Exclude left out (an excluded
	// directory counts once, whatever it holds).
	Excluded uint64
	// BrokenLinks counts the symlinks (among Symlinks) whose target does
	// not exist: following them fails with ENOENT, ENOTDIR or ELOOP. Each
	// symlink costs one stat more to tell.
	BrokenLinks uint64
	// Errors lists the entries that could not be stored as they are.
	Errors []FileError
}

// FileError is an entry the backup left out, or stored as read although it
// changed meanwhile.
type FileError struct {
	// Path is slash-separated: relative to the root for Archive, absolute
	// for ArchivePaths.
	Path string
	Err  error
}

func (e FileError) Error() string { return e.Path + ": " + e.Err.Error() }

// Reasons an entry is reported; FileError.Err wraps one of them, or an
// error of the system (for a path given to ArchivePaths that does not
// exist, one that errors.Is(err, fs.ErrNotExist)).
var (
	ErrVanished = errors.New("vanished during the backup")
	ErrReplaced = errors.New("replaced during the backup")
	ErrChanged  = errors.New("changed while read (stored as read)")
)

// Archive backs up the directory tree at root (which must be a directory;
// a symlink given as root is followed, none below it is) through s and
// returns the id of the root's tree, which lists root's entries. It fails
// when the root cannot be read, when s fails, or when ctx ends; unreadable
// entries below the root are reported in Stats.Errors instead. Exclude
// patterns match root's entries by their absolute path.
func (a *Archiver) Archive(ctx context.Context, s Saver, root string) (blob.ID, Stats, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return blob.ID{}, Stats{}, fmt.Errorf("archive %s: %w", root, err)
	}
	f, err := os.Open(root)
	if err != nil {
		return blob.ID{}, Stats{}, fmt.Errorf("archive %s: %w", root, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		f.Close()
		if err == nil {
			err = errors.New("not a directory")
		}
		return blob.ID{}, Stats{}, fmt.Errorf("archive %s: %w", root, err)
	}
	r := a.newRun(ctx, s)
	top := &dir{f: f, fd: int(f.Fd()), abs: strings.TrimSuffix(abs, "/")}
	top.dev = r.dev(abs, &st)
	if r.a.exclude != nil {
		top.comps = components(abs)
	}
	id, stats, err := r.archive(top)
	if err == nil && id.IsZero() {
		// Only an internal error can leave the root unfinished.
		err = errors.New("the root directory was not stored")
	}
	if err != nil {
		return blob.ID{}, stats, fmt.Errorf("archive %s: %w", root, err)
	}
	return id, stats, nil
}

// ArchivePaths backs up paths, which must be absolute, into one root tree
// that mirrors their absolute layout: /home/u/docs and /etc give a root
// holding etc, and home holding u holding docs. The directories on the way
// (home, u) are recorded with their own metadata and only the entries on
// the way; a symlink on the way is followed (the directory it points to is
// recorded under the link's name). A given path may be any kind of file:
// a directory is stored with everything below it, a symlink as a symlink.
// Paths are cleaned and de-duplicated; one inside another given path is
// covered by the outer one. A path that does not exist or cannot be read
// is reported in Stats.Errors (under its absolute path, as all errors of
// ArchivePaths are) and the backup goes on without it; it fails only when
// none of the paths could be stored, besides the failures of Archive.
func (a *Archiver) ArchivePaths(ctx context.Context, s Saver, paths []string) (blob.ID, Stats, error) {
	plan, err := planPaths(paths)
	if err != nil {
		return blob.ID{}, Stats{}, fmt.Errorf("archive: %w", err)
	}
	f, err := os.Open("/")
	if err != nil {
		return blob.ID{}, Stats{}, fmt.Errorf("archive: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return blob.ID{}, Stats{}, fmt.Errorf("archive: %w", err)
	}
	r := a.newRun(ctx, s)
	top := &dir{f: f, fd: int(f.Fd()), path: "/"}
	top.dev = r.dev("/", &st)
	if r.a.exclude != nil {
		top.comps = []string{}
	}
	if !plan.given {
		top.way = plan
	}
	id, stats, err := r.archive(top)
	if err != nil {
		return blob.ID{}, stats, fmt.Errorf("archive %s: %w", strings.Join(paths, ", "), err)
	}
	if id.IsZero() {
		return blob.ID{}, stats, noneStored(paths, stats)
	}
	return id, stats, nil
}

// noneStored is the error of an ArchivePaths call that stored nothing.
func noneStored(paths []string, st Stats) error {
	var why []string
	for _, e := range st.Errors {
		why = append(why, e.Error())
	}
	if st.Excluded > 0 {
		why = append(why, fmt.Sprintf("%d excluded by the exclude patterns", st.Excluded))
	}
	if len(why) == 0 {
		why = append(why, "nothing to store")
	}
	return fmt.Errorf("archive %s: none of the paths could be backed up (%s); check that they exist and are readable",
		strings.Join(paths, ", "), strings.Join(why, "; "))
}
