package backups

// Browsing a committed backup: downloading one file (OpenFile), a subtree as
// a tar or zip archive (OpenArchive), and one path across the backups of a
// plan (Versions). Listing a directory is TreeOf, in tree.go.
//
// Downloads read the repository blob by blob, a few megabytes ahead of the
// writer (see browse_download.go): never a whole file in memory, never a
// temporary copy. Every blob is authenticated and its id checked against
// its plaintext as it is read, so a download is exactly what the backup
// stored, or fails.

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/zeebo/blake3"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/blobstore"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/tree"
	"github.com/cofferhq/coffer/internal/metadb"
)

// ContentHash identifies a regular file's content within one repository:
// the hex BLAKE3-256 of its content blob ids, concatenated in order. Blob
// ids are a keyed hash of the chunks' plaintext and a repository chunks
// every file the same way, so two files of one repository have equal
// hashes exactly when their contents are equal; the hashes of two
// repositories are not comparable. It costs no read of the file's data.
func ContentHash(content []blob.ID) string {
	h := blake3.New()
	for i := range content {
		h.Write(content[i][:])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// nodeHash is the content hash of any node (see Version.ContentHash).
func nodeHash(n *tree.Node) string {
	switch n.Type {
	case tree.File:
		return ContentHash(n.Content)
	case tree.Dir:
		return n.Subtree.String()
	case tree.Symlink:
		sum := blake3.Sum256([]byte(n.LinkTarget))
		return hex.EncodeToString(sum[:])
	}
	return ""
}

// splitPath checks a path into a backup (slash-separated, relative to its
// root; a leading "/" and "." elements are ignored) and returns its
// elements; none for the root.
func splitPath(p string) ([]string, error) {
	if len(p) > MaxPathLen || strings.IndexByte(p, 0) >= 0 {
		return nil, coffer.Errorf(coffer.KindInvalid, "invalid_path", "path %q is longer than 4096 bytes or holds a NUL byte", truncate(p)).
			With("field", "path")
	}
	var elems []string
	for _, e := range strings.Split(p, "/") {
		if e != "" && e != "." {
			elems = append(elems, e)
		}
	}
	return elems, nil
}

// committedRoot returns the root tree of b, which must be committed.
func committedRoot(b *coffer.Backup) (blob.ID, error) {
	if b.RootTree == "" || b.SnapshotID == "" {
		return blob.ID{}, coffer.Errorf(coffer.KindConflict, "backup_not_committed",
			"backup %s is %s and has no snapshot to read", b.ID, b.State).With("state", string(b.State))
	}
	root, err := blob.ParseID(b.RootTree)
	if err != nil {
		return blob.ID{}, fmt.Errorf("backup %s: root tree %q: %w", b.ID, b.RootTree, err)
	}
	return root, nil
}

// lookupStep is one directory a path lookup passes: how deep, in which
// repository, which tree.
type lookupStep struct {
	repo  string
	depth int
	dir   blob.ID
}

// lookupCache remembers, for the directories a path lookup passed, the node
// it found there (nil: none), so that looking one path up in many backups
// reads each distinct directory once: unchanged directories keep their
// tree id from one backup to the next.
type lookupCache map[lookupStep]*tree.Node

// lookup finds the node at elems below the directory tree root; nil, nil
// is the root itself, and errPathNotFound a path the tree does not hold.
// cache may be nil.
func lookup(ctx context.Context, repo *repository.Repository, root blob.ID, elems []string, cache lookupCache) (*tree.Node, error) {
	dir := root
	var n *tree.Node
	for depth, name := range elems {
		step := lookupStep{repo: repo.Config().ID, depth: depth, dir: dir}
		found, ok := cache[step]
		if !ok {
			nodes, err := repo.LoadDir(ctx, dir)
			if err != nil {
				return nil, err
			}
			i := sort.Search(len(nodes), func(k int) bool { return nodes[k].Name >= name })
			if i < len(nodes) && nodes[i].Name == name {
				node := nodes[i] // not a pointer into nodes: the cache keeps one node, not the directory
				found = &node
			}
			if cache != nil {
				cache[step] = found
			}
		}
		if found == nil || (depth < len(elems)-1 && found.Type != tree.Dir) {
			return nil, errPathNotFound
		}
		n = found
		dir = n.Subtree
	}
	return n, nil
}

var errPathNotFound = errors.New("path not found")

// at resolves path p in committed backup b: its repository, root tree and
// node (nil for the root).
func (s *Service) at(ctx context.Context, b *coffer.Backup, p string) (*repository.Repository, blob.ID, *tree.Node, error) {
	elems, err := splitPath(p)
	if err != nil {
		return nil, blob.ID{}, nil, err
	}
	root, err := committedRoot(b)
	if err != nil {
		return nil, blob.ID{}, nil, err
	}
	repo, err := s.repoOf(ctx, b)
	if err != nil {
		return nil, blob.ID{}, nil, err
	}
	n, err := lookup(ctx, repo, root, elems, nil)
	if errors.Is(err, errPathNotFound) {
		return nil, blob.ID{}, nil, pathNotFound(b, p)
	}
	if err != nil {
		return nil, blob.ID{}, nil, s.readFailed(b, p, err)
	}
	return repo, root, n, nil
}

// mayDownload checks that p may download from b: it may operate b's
// client (coffer.Principal.MayOperate). A client deleted since is judged
// as one without an owner: only admins may.
func (s *Service) mayDownload(ctx context.Context, p *coffer.Principal, b *coffer.Backup) error {
	c, err := s.clients.GetClient(ctx, b.ClientID)
	if coffer.IsKind(err, coffer.KindNotFound) {
		name := b.HostName
		if name == "" {
			name = b.ClientID
		}
		c, err = &coffer.Client{ID: b.ClientID, Name: name}, nil
	}
	if err != nil {
		return err
	}
	return p.MayOperate(c)
}

// readFailed turns an error reading backup b at path p into what the
// caller is told, and logs the details. Data the repository lacks or
// cannot authenticate is coffer.KindConflict "backup_damaged".
func (s *Service) readFailed(b *coffer.Backup, p string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	s.log.Error("read backup", "backup_id", b.ID, "repository_id", b.RepositoryID, "path", truncate(p), "err", err)
	if errors.Is(err, blob.ErrCorrupt) || errors.Is(err, tree.ErrCorrupt) || errors.Is(err, repository.ErrNotIndexed) ||
		errors.Is(err, blobstore.ErrNotFound) || errors.Is(err, errSizeMismatch) {
		return coffer.Errorf(coffer.KindConflict, "backup_damaged",
			"backup %s cannot be read at %q: data it references is missing from the repository or damaged (the server log names it); verify the repository",
			b.ID, truncate(p)).With("path", truncate(p))
	}
	return fmt.Errorf("read backup %s at %q: %w", b.ID, truncate(p), err)
}

var errSizeMismatch = fmt.Errorf("file size differs from its content's: %w", blob.ErrCorrupt)

// File is a regular file of a backup, ready to download.
type File struct {
	Name    string // its name, the last element of its path
	Size    int64
	ModTime time.Time
	// Hash is its ContentHash: a strong validator (an HTTP ETag).
	Hash string

	s      *Service
	b      *coffer.Backup
	path   string
	repo   *repository.Repository
	node   tree.Node
	blobs  []repository.BlobRequest // the content, located, in order
	starts []int64                  // offset in the file of each blob
}

// OpenFile looks up the regular file at path p in backup id for principal
// to download, after checking that principal may operate the backup's client
// (operate_required / client_not_owned, KindForbidden). Another type of
// node is coffer.KindInvalid "not_a_file". It locates every content blob:
// one the repository lacks, or sizes that do not add up to the file's,
// are "backup_damaged" now rather than a broken download later.
func (s *Service) OpenFile(ctx context.Context, principal *coffer.Principal, id, p string) (*File, error) {
	b, err := s.store.GetBackup(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := s.mayDownload(ctx, principal, b); err != nil {
		return nil, err
	}
	repo, _, n, err := s.at(ctx, b, p)
	if err != nil {
		return nil, err
	}
	if n == nil || n.Type != tree.File {
		typ := "dir"
		if n != nil {
			typ = entryTypes[n.Type]
		}
		return nil, coffer.Errorf(coffer.KindInvalid, "not_a_file",
			"%q in backup %s is a %s, not a regular file: download a directory as an archive (/archive), list it with /tree",
			truncate(p), b.ID, typ).With("path", truncate(p)).With("type", typ)
	}
	f := &File{Name: n.Name, Size: int64(n.Size), ModTime: n.ModTime, Hash: ContentHash(n.Content), s: s, b: b, path: p,
		repo: repo, node: *n}
	if err := f.locate(ctx); err != nil {
		return nil, s.readFailed(b, p, err)
	}
	return f, nil
}

// locate looks up where every content blob of f is, in batches.
func (f *File) locate(ctx context.Context) error {
	content := f.node.Content
	f.blobs = make([]repository.BlobRequest, len(content))
	f.starts = make([]int64, len(content))
	var off int64
	for i := 0; i < len(content); i += locateMax {
		ids := content[i:min(i+locateMax, len(content))]
		locs, err := f.repo.Locate(ctx, ids)
		if err != nil {
			return err
		}
		for j, id := range ids {
			loc, ok := locs[id]
			if !ok {
				return fmt.Errorf("content blob %s: %w", id, repository.ErrNotIndexed)
			}
			f.blobs[i+j] = repository.BlobRequest{ID: id, Loc: loc}
			f.starts[i+j] = off
			off += int64(loc.RawLength)
		}
	}
	if off != f.Size {
		return fmt.Errorf("%d bytes recorded, %d in %d blobs: %w", f.Size, off, len(content), errSizeMismatch)
	}
	return nil
}

// Download starts reading bytes [off, off+n) of f (0 ≤ off, off+n ≤
// Size). It returns once the first blobs are read, so that a file that
// cannot be read fails here, before anything is sent; Download.WriteTo
// writes the bytes.
func (f *File) Download(ctx context.Context, off, n int64) (*Download, error) {
	if off < 0 || n < 0 || off+n > f.Size {
		return nil, fmt.Errorf("download of [%d, %d) outside a file of %d bytes", off, off+n, f.Size)
	}
	src := func(_ context.Context, emit func(op) error) error {
		if err := emit(op{entry: &dlEntry{node: f.node}}); err != nil {
			return err
		}
		end := off + n
		first := sort.Search(len(f.starts), func(i int) bool { return f.starts[i]+int64(f.blobs[i].Loc.RawLength) > off })
		for i := first; i < len(f.blobs) && f.starts[i] < end; i++ {
			o := op{id: f.blobs[i].ID, loc: f.blobs[i].Loc, located: true}
			if off > f.starts[i] {
				o.from = uint32(off - f.starts[i])
			}
			if blobEnd := f.starts[i] + int64(o.loc.RawLength); end < blobEnd {
				o.to = uint32(end - f.starts[i])
			}
			if err := emit(o); err != nil {
				return err
			}
		}
		return nil
	}
	return f.s.startDownload(ctx, f.b, f.path, f.repo, src, &fileSink{want: n})
}

// Archive is a subtree of a backup, ready to download as an archive.
type Archive struct {
	// Name is the file name of the archive: the subtree's name (or
	// "backup-<id>" for the whole backup) and ".tar" or ".zip".
	Name string

	s      *Service
	b      *coffer.Backup
	path   string
	repo   *repository.Repository
	top    dlEntry // the subtree's own entry
	format ArchiveFormat
}

// ArchiveFormat is the format of an archive download.
type ArchiveFormat string

// The archive formats.
const (
	FormatTar ArchiveFormat = "tar"
	FormatZip ArchiveFormat = "zip"
)

// OpenArchive looks up the node at path p in backup id for principal to
// download as an archive of the given format, after checking that it may
// operate the backup's client (see OpenFile). The node may be of any type:
// a file or a symlink makes an archive of one entry.
//
// Paths in the archive start with the node's name, so that extracting it
// recreates the node (for the backup's root, which has no name,
// "backup-<id>"); they are relative and never hold "..". See tarSink and
// zipSink for what each format keeps.
func (s *Service) OpenArchive(ctx context.Context, principal *coffer.Principal, id, p string, format ArchiveFormat) (*Archive, error) {
	if format != FormatTar && format != FormatZip {
		return nil, coffer.Errorf(coffer.KindInvalid, "invalid_format", "archive format %q is not tar or zip", format).
			With("field", "format")
	}
	b, err := s.store.GetBackup(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := s.mayDownload(ctx, principal, b); err != nil {
		return nil, err
	}
	repo, root, n, err := s.at(ctx, b, p)
	if err != nil {
		return nil, err
	}
	a := &Archive{s: s, b: b, path: p, repo: repo, format: format}
	if n != nil {
		a.top = dlEntry{path: n.Name, node: *n}
	} else {
		// The root's own metadata is not recorded: a directory of the
		// backup's time.
		mtime := b.CreatedAt
		if b.StartedAt != nil {
			mtime = *b.StartedAt
		}
		a.top = dlEntry{path: "backup-" + b.ID, node: tree.Node{Name: "backup-" + b.ID, Type: tree.Dir, Mode: 0o755,
			ModTime: mtime, Subtree: root}}
	}
	a.Name = a.top.path + "." + string(format)
	return a, nil
}

// Download starts writing the archive. It returns once the first blobs
// are read (see File.Download); Download.WriteTo writes the archive.
func (a *Archive) Download(ctx context.Context) (*Download, error) {
	tarLinks := a.format == FormatTar
	src := func(ctx context.Context, emit func(op) error) error {
		// device and inode → the first link: a later link with the same
		// content becomes a link entry (the archiver reads every link, so
		// one that changed in between has content of its own).
		links := map[[2]uint64]*dlEntry{}
		visit := func(e *dlEntry) error {
			n := &e.node
			if tarLinks && n.Type == tree.File && n.Links > 1 {
				key := [2]uint64{n.DeviceID, n.Inode}
				if first, ok := links[key]; ok && slices.Equal(first.node.Content, n.Content) {
					e.link = first.path
					return emit(op{entry: e})
				} else if !ok {
					links[key] = e
				}
			}
			if err := emit(op{entry: e}); err != nil {
				return err
			}
			for _, id := range n.Content {
				if err := emit(op{id: id}); err != nil {
					return err
				}
			}
			return nil
		}
		top := a.top
		if err := visit(&top); err != nil || top.node.Type != tree.Dir {
			return err
		}
		return a.repo.Walk(ctx, top.node.Subtree, func(p string, n *tree.Node) error {
			return visit(&dlEntry{path: top.path + "/" + p, node: *n})
		})
	}
	var sink sink
	if a.format == FormatZip {
		sink = newZipSink()
	} else {
		sink = newTarSink()
	}
	return a.s.startDownload(ctx, a.b, a.path, a.repo, src, sink)
}

// Version is one backup's view of a path (see Versions).
type Version struct {
	Backup *coffer.Backup
	// Present reports whether the backup holds the path. Absent, the
	// fields below are zero.
	Present bool
	Type    string // file, dir, symlink, dev, chardev, fifo, socket
	Size    uint64
	ModTime time.Time
	// ContentHash tells versions apart: for a file its ContentHash; for
	// a directory the id of its tree (equal when everything below it,
	// metadata included, is); for a symlink the BLAKE3-256 of its
	// target; empty for other types. Like ContentHash, comparable only
	// within one repository.
	ContentHash string
	// Error, when set, says the backup's trees could not be read to
	// look the path up (the server log has why); Present is false.
	Error string
}

// committedStates are the states of backups that have a snapshot.
var committedStates = []coffer.JobState{coffer.JobSucceeded, coffer.JobPartial}

// Versions lists path p in every committed backup (succeeded or partial)
// of the plan that made backup id — or, for an ad-hoc backup, of its
// client's backups without a plan — newest first: at most limit of them
// after the keyset position after (nil: from the newest). A backup that
// does not hold p is listed with Present false, so that a file's deletion
// and return show. next is the position to continue from, nil at the end.
func (s *Service) Versions(ctx context.Context, id, p string, after *metadb.Keyset, limit int) (versions []Version, next *metadb.Keyset, err error) {
	elems, err := splitPath(p)
	if err != nil {
		return nil, nil, err
	}
	b, err := s.store.GetBackup(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	limit = max(limit, 1)
	bs, next, err := s.siblings(ctx, b, after, limit)
	if err != nil {
		return nil, nil, err
	}
	cache := lookupCache{}
	versions = make([]Version, len(bs))
	for i := range bs {
		versions[i], err = s.version(ctx, &bs[i], elems, p, cache)
		if err != nil {
			return nil, nil, err
		}
	}
	return versions, next, nil
}

// siblings returns a page of the committed backups of b's plan (or of its
// client's ad-hoc backups, when b has no plan), newest first, and the
// position of the next page (nil at the end).
func (s *Service) siblings(ctx context.Context, b *coffer.Backup, after *metadb.Keyset, limit int) ([]coffer.Backup, *metadb.Keyset, error) {
	f := metadb.BackupFilter{PlanID: b.PlanID, States: committedStates, After: after, Limit: limit + 1}
	if b.PlanID == "" {
		f.ClientID, f.AdHoc = b.ClientID, true
	}
	bs, err := s.store.ListBackups(ctx, f)
	if err != nil {
		return nil, nil, err
	}
	if len(bs) <= limit {
		return bs, nil, nil
	}
	bs = bs[:limit]
	return bs, keysetOf(&bs[limit-1]), nil
}

func keysetOf(b *coffer.Backup) *metadb.Keyset {
	return &metadb.Keyset{CreatedAt: b.CreatedAt, ID: b.ID}
}

// version looks path elems up in backup b. Only a failure to reach the
// store or the repository at all fails it; damaged trees mark the version.
func (s *Service) version(ctx context.Context, b *coffer.Backup, elems []string, p string, cache lookupCache) (Version, error) {
	v := Version{Backup: b}
	root, err := committedRoot(b)
	if err != nil {
		return v, err
	}
	repo, err := s.repoOf(ctx, b)
	if err != nil {
		return v, err
	}
	n, err := lookup(ctx, repo, root, elems, cache)
	switch {
	case errors.Is(err, errPathNotFound):
		return v, nil
	case err != nil:
		rerr := s.readFailed(b, p, err)
		var ce *coffer.Error
		if !errors.As(rerr, &ce) {
			return v, rerr
		}
		v.Error = ce.Detail
		return v, nil
	case n == nil:
		v.Present, v.Type, v.ContentHash = true, "dir", root.String()
		return v, nil
	}
	v.Present, v.Type, v.Size, v.ModTime, v.ContentHash = true, entryTypes[n.Type], n.Size, n.ModTime, nodeHash(n)
	return v, nil
}
