// Package repotest builds repositories and small snapshots for the engine's
// tests: a repository on any backend and index (by default in memory), and
// snapshots of file trees given as a map, read back the same way.
package repotest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	mrand "math/rand/v2"
	"path"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/blobstore"
	"github.com/cofferhq/coffer/internal/engine/blobstore/mem"
	"github.com/cofferhq/coffer/internal/engine/chunker"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/repository/memindex"
	"github.com/cofferhq/coffer/internal/engine/tree"
)

// Options configure New. Zero values choose a memory backend, a memory
// index, an unencrypted repository with the smallest allowed chunker
// parameters and 1 MiB packs, so tests make many packs from little data.
type Options struct {
	Backend   blobstore.Backend
	Index     repository.Index
	MasterKey []byte
	Encrypted bool
	Chunker   chunker.Params
	PackSize  int
}

// SmallChunks are the smallest chunker parameters a repository accepts.
var SmallChunks = chunker.Params{Min: 64 << 10, Avg: 128 << 10, Max: 256 << 10}

// MasterKey returns a fresh random master key.
func MasterKey() []byte {
	k := make([]byte, repository.MasterKeySize)
	rand.Read(k)
	return k
}

// Random returns n incompressible bytes, the same for the same seed, so
// that stored sizes do not depend on the compression level.
func Random(seed uint64, n int) []byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	b := make([]byte, n)
	mrand.NewChaCha8(s).Read(b)
	return b
}

// Objects lists the objects under prefix in b: name → size.
func Objects(t testing.TB, b blobstore.Backend, prefix string) map[string]int64 {
	t.Helper()
	m := map[string]int64{}
	err := b.List(context.Background(), prefix, func(o blobstore.ObjectInfo) error {
		m[o.Name] = o.Size
		return nil
	})
	if err != nil {
		t.Fatalf("list %q: %v", prefix, err)
	}
	return m
}

// Replace rewrites object name in b with what edit makes of its content,
// to damage a repository behind its back (the engine never rewrites an
// object).
func Replace(t testing.TB, b blobstore.Backend, name string, edit func([]byte) []byte) {
	t.Helper()
	ctx := context.Background()
	info, err := b.Stat(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	data, err := blobstore.ReadRange(ctx, b, name, 0, info.Size)
	if err != nil {
		t.Fatal(err)
	}
	data = edit(data)
	if err := b.Delete(ctx, name); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, name, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
}

// New creates a repository for a test and closes it when the test ends.
func New(t testing.TB, o Options) *repository.Repository {
	t.Helper()
	if o.Backend == nil {
		o.Backend = mem.New(mem.Options{Name: t.Name()})
	}
	if o.Index == nil {
		o.Index = memindex.New(memindex.Options{})
	}
	if o.MasterKey == nil {
		o.MasterKey = MasterKey()
	}
	if o.Chunker == (chunker.Params{}) {
		o.Chunker = SmallChunks
	}
	if o.PackSize == 0 {
		o.PackSize = 1 << 20
	}
	ctx := context.Background()
	idx := o.Index
	r, _, err := repository.OpenOrInit(ctx, o.Backend, func(string) repository.Index { return idx }, repository.InitOptions{
		MasterKey: o.MasterKey, Encrypted: o.Encrypted, Chunker: o.Chunker, PackSize: o.PackSize})
	if err != nil {
		t.Fatalf("create repository: %v", err)
	}
	t.Cleanup(r.Close)
	return r
}

// Files is a file tree: slash-separated paths to contents. A path ending in
// "/" is an empty directory; parent directories are implied.
type Files map[string][]byte

// WriteSnapshot stores files as a snapshot through one Writer and commits
// it, returning the snapshot id and its root tree.
func WriteSnapshot(t testing.TB, r *repository.Repository, files Files) (string, blob.ID) {
	t.Helper()
	ctx := context.Background()
	w, err := r.NewWriter(ctx, repository.WriterOptions{})
	if err != nil {
		t.Fatalf("new writer: %v", err)
	}
	defer w.Close()
	root, err := StoreTree(ctx, r, w, files)
	if err != nil {
		t.Fatalf("store tree: %v", err)
	}
	id, err := w.Commit(ctx, &tree.Snapshot{Version: 1, Time: time.Now().UTC(), Tree: root,
		Hostname: "test", Paths: []string{"/"}})
	if err != nil {
		t.Fatalf("commit: %v", err)
	}
	return id, root
}

// StoreTree stores files through w (chunked with the repository's
// parameters; blobs the repository has are not stored again) and returns
// the root tree. It does not commit.
func StoreTree(ctx context.Context, r *repository.Repository, w *repository.Writer, files Files) (blob.ID, error) {
	dirs := map[string][]tree.Node{"": nil}
	var addDir func(p string)
	addDir = func(p string) {
		if _, ok := dirs[p]; ok {
			return
		}
		dirs[p] = nil
		addDir(parent(p))
	}
	mtime := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	for p, content := range files {
		if strings.HasSuffix(p, "/") {
			addDir(strings.TrimSuffix(p, "/"))
			continue
		}
		addDir(parent(p))
		ids, err := storeContent(ctx, r, w, content)
		if err != nil {
			return blob.ID{}, err
		}
		dirs[parent(p)] = append(dirs[parent(p)], tree.Node{Name: path.Base(p), Type: tree.File, Mode: 0o644,
			ModTime: mtime, Size: uint64(len(content)), Content: ids})
	}
	// Deepest directories first, so every subtree exists before its parent.
	paths := make([]string, 0, len(dirs))
	for p := range dirs {
		paths = append(paths, p)
	}
	slices.SortFunc(paths, func(a, b string) int { return depth(b) - depth(a) })
	ids := map[string]blob.ID{}
	for _, p := range paths {
		nodes := dirs[p]
		for q, id := range ids {
			if q != "" && parent(q) == p {
				nodes = append(nodes, tree.Node{Name: path.Base(q), Type: tree.Dir, Mode: 0o755, ModTime: mtime, Subtree: id})
			}
		}
		tree.Sort(nodes)
		id, err := storeBlob(ctx, r, w, blob.Tree, func() ([]byte, error) { return (&tree.Tree{Nodes: nodes}).Encode() })
		if err != nil {
			return blob.ID{}, err
		}
		ids[p] = id
	}
	return ids[""], nil
}

// depth is how deep a directory is: -1 for the root "", 0 for "a".
func depth(p string) int {
	if p == "" {
		return -1
	}
	return strings.Count(p, "/")
}

func parent(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return ""
}

func storeContent(ctx context.Context, r *repository.Repository, w *repository.Writer, content []byte) ([]blob.ID, error) {
	c, err := chunker.New(bytes.NewReader(content), r.Config().ChunkerParams())
	if err != nil {
		return nil, err
	}
	var ids []blob.ID
	for {
		chunk, err := c.Next()
		if err == io.EOF {
			return ids, nil
		}
		if err != nil {
			return nil, err
		}
		id, err := storeBlob(ctx, r, w, blob.Data, func() ([]byte, error) { return chunk, nil })
		if err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
}

func storeBlob(ctx context.Context, r *repository.Repository, w *repository.Writer, t blob.Type, data func() ([]byte, error)) (blob.ID, error) {
	b, err := data()
	if err != nil {
		return blob.ID{}, err
	}
	id := r.Codec().IDOf(t, b)
	missing, err := w.Missing(ctx, []blob.ID{id})
	if err != nil || len(missing) == 0 {
		return id, err
	}
	_, err = w.Save(ctx, t, id, b, blob.Fastest)
	return id, err
}

// ReadFiles reads a snapshot back as Files (empty directories end in "/").
func ReadFiles(t testing.TB, r *repository.Repository, snapID string) Files {
	t.Helper()
	files, err := LoadFiles(context.Background(), r, snapID)
	if err != nil {
		t.Fatalf("read snapshot %s: %v", snapID, err)
	}
	return files
}

// LoadFiles is ReadFiles returning the error.
func LoadFiles(ctx context.Context, r *repository.Repository, snapID string) (Files, error) {
	snap, err := r.LoadSnapshot(ctx, snapID)
	if err != nil {
		return nil, err
	}
	files := Files{}
	err = r.Walk(ctx, snap.Tree, func(p string, n *tree.Node) error {
		switch n.Type {
		case tree.Dir:
			files[p+"/"] = nil
		case tree.File:
			var content []byte
			for _, id := range n.Content {
				var err error
				if content, err = r.LoadBlob(ctx, blob.Data, id, content); err != nil {
					return err
				}
			}
			if uint64(len(content)) != n.Size {
				return errors.New("file " + p + " has the wrong size")
			}
			files[p] = content
		}
		return nil
	})
	// A directory that has entries is implied by them.
	for p := range files {
		if strings.HasSuffix(p, "/") {
			for q := range files {
				if q != p && strings.HasPrefix(q, p) {
					delete(files, p)
					break
				}
			}
		}
	}
	return files, err
}
