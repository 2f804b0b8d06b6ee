// Package archiver stores a local directory tree in a repository: it walks
// the tree, reads and chunks every file, hashes the chunks, asks the
// repository which blobs it lacks, and saves those, then writes the
// directories' trees bottom-up and returns the root tree's id. The caller
// commits that root as a snapshot (repository.Writer.Commit).
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
// are missing — one database round trip per batch, not per chunk — and
// hands the missing blobs to the savers, which compress and encrypt them
// on their own goroutines (Saver.Save). Memory is bounded by MemoryLimit
// bytes of chunk buffers plus each reader's chunker buffer.
//
// # What a snapshot records
//
// Each node records its type, permission bits with setuid, setgid and
// sticky, owner and group (ids and names), modification time to the
// nanosecond, and its extended attributes (Linux; files and directories).
// Files record their size and content blobs, and their inode and device
// when they have more than one link, so a restore can recreate hard links;
// symlinks record their target (never followed); devices their number;
// fifos and sockets only that they exist. Empty directories are kept. The
// root's tree lists the root's entries; the root directory's own metadata
// is not recorded (a restore writes into a directory the caller chose).
// Each link of a hard-linked file is read again (deduplication makes the
// second copy free to store, not to read).
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
	"runtime"
	"sync"
	"time"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/chunker"
	"github.com/cofferhq/coffer/internal/engine/tree"
)

// Saver stores blobs. *repository.Writer implements it.
type Saver interface {
	// Missing returns, in input order, the ids among ids that the
	// repository lacks, and keeps the others alive for this backup.
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
	// MemoryLimit bounds the bytes of chunk buffers waiting to be looked
	// up or saved (default 64 MiB, at least 4×Chunker.Max). Each reader
	// also holds a chunker buffer of 2×Chunker.Max.
	MemoryLimit int64
	// OnError, when set, is called (from any goroutine) for each file the
	// backup could not store as it is, as it happens.
	OnError func(FileError)
}

// DefaultOptions returns the options of an ordinary backup with codec:
// default chunker parameters, fastest compression (not tried on chunks that
// look random), and a goroutine per core at each stage.
func DefaultOptions(codec *blob.Codec) Options {
	return Options{Codec: codec, Chunker: chunker.DefaultParams(), Compression: blob.Fastest, SkipIncompressible: true}
}

// Archiver stores directory trees. It holds no state between calls to
// Archive, which may run concurrently.
type Archiver struct {
	opts Options
	// maxTreeSize bounds an encoded tree before it is split; tests lower
	// it to split small directories.
	maxTreeSize int
	// hook, when set by tests, runs before a file is opened (stage
	// "open") and after, before it is read ("read").
	hook func(stage, path string)
	// pools hold free chunk buffers by size class, shared by the
	// Archive calls of this Archiver: sync.Pool lets the runtime drop
	// them when memory is short, and keeps them warm across backups.
	pools [maxClass + 1]sync.Pool
}

// New returns an Archiver with opts, defaults filled in.
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
	if opts.MemoryLimit <= 0 {
		opts.MemoryLimit = 64 << 20
	}
	opts.MemoryLimit = max(opts.MemoryLimit, 4*int64(bufferSize(opts.Chunker.Max)))
	return &Archiver{opts: opts, maxTreeSize: blob.MaxSize}, nil
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
	// Errors lists the entries that could not be stored as they are.
	Errors []FileError
}

// FileError is an entry the backup left out, or stored as read although it
// changed meanwhile.
type FileError struct {
	Path string // slash-separated, relative to the root
	Err  error
}

func (e FileError) Error() string { return e.Path + ": " + e.Err.Error() }

// Reasons an entry is reported; FileError.Err wraps one of them.
var (
	ErrVanished = errors.New("vanished during the backup")
	ErrReplaced = errors.New("replaced during the backup")
	ErrChanged  = errors.New("changed while read (stored as read)")
)
