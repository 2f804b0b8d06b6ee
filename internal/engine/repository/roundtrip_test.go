package repository_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/internal/benchcorpus"
	"github.com/cofferhq/coffer/internal/engine/archiver"
	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/blobstore"
	"github.com/cofferhq/coffer/internal/engine/blobstore/local"
	"github.com/cofferhq/coffer/internal/engine/blobstore/mem"
	"github.com/cofferhq/coffer/internal/engine/blobstore/s3/s3test"
	"github.com/cofferhq/coffer/internal/engine/chunker"
	"github.com/cofferhq/coffer/internal/engine/pack"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
	"github.com/cofferhq/coffer/internal/engine/restorer"
	"github.com/cofferhq/coffer/internal/engine/tree"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
)

// EnvRoundTripSize overrides the size of the round-trip corpus (bytes, or
// with a K, M or G suffix): 64 MiB by default, 16 MiB with -short or -race.
const EnvRoundTripSize = "COFFER_ROUNDTRIP_SIZE"

// TestRoundTrip backs up a generated corpus (with hard links, a fifo,
// special modes and extended attributes added) with the archiver, commits
// it, restores it with the restorer into a fresh directory and compares
// every entry byte for byte and by metadata; then mutates the corpus,
// backs it up again — which must add only a small fraction — and restores
// and compares the second snapshot. It runs on a local repository with a
// SQLite index and on S3 with a PostgreSQL index (those need the services
// scripts/test.sh starts), each with and without encryption.
func TestRoundTrip(t *testing.T) {
	size := roundTripSize(t)
	for _, c := range []struct {
		name    string
		backend func(t *testing.T) blobstore.Backend
		dialect metadb.Dialect
	}{
		{"local-sqlite", func(t *testing.T) blobstore.Backend { return openLocal(t, t.TempDir()) }, metadb.SQLite},
		{"s3-postgres", func(t *testing.T) blobstore.Backend { return s3test.Open(t) }, metadb.Postgres},
	} {
		for _, encrypted := range []bool{false, true} {
			name := c.name + map[bool]string{false: "-plain", true: "-encrypted"}[encrypted]
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				repo := openCorpusRepo(t, c.backend(t), metadbtest.Open(t, c.dialect), encrypted, repotest.SmallChunks)
				src := filepath.Join(t.TempDir(), "src")
				if err := benchcorpus.Generate(src, size, 1); err != nil {
					t.Fatal(err)
				}
				addSpecialEntries(t, src)
				first, firstID := backupAndCheck(t, repo, src, "first")
				if err := benchcorpus.Mutate(src, 1, 1); err != nil {
					t.Fatal(err)
				}
				second, secondID := backupAndCheck(t, repo, src, "second")
				checkIncremental(t, repo, firstID, secondID, second)
				if second.AddedBytes == 0 || second.AddedBytes > first.AddedBytes/5 {
					t.Errorf("the backup after a 5%% change added %d bytes, the first %d: want a small fraction",
						second.AddedBytes, first.AddedBytes)
				}
				t.Logf("first backup: %d files, %d bytes read, %d bytes added; second: %d bytes added",
					first.Files, first.Bytes, first.AddedBytes, second.AddedBytes)
			})
		}
	}
}

func roundTripSize(t *testing.T) int64 {
	if s := os.Getenv(EnvRoundTripSize); s != "" {
		n, err := parseSize(s)
		if err != nil {
			t.Fatalf("%s: %v", EnvRoundTripSize, err)
		}
		return n
	}
	if testing.Short() || raceEnabled() {
		return 16 << 20
	}
	return 64 << 20
}

// parseSize reads a byte count with an optional K, M or G suffix.
func parseSize(s string) (int64, error) {
	mult := int64(1)
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'K', 'k':
			mult, s = 1<<10, s[:n-1]
		case 'M', 'm':
			mult, s = 1<<20, s[:n-1]
		case 'G', 'g':
			mult, s = 1<<30, s[:n-1]
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("size %q: want a positive number of bytes, with K, M or G", s)
	}
	return n * mult, nil
}

// raceEnabled reports whether the test binary was built with -race.
func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

func openLocal(t testing.TB, dir string) blobstore.Backend {
	t.Helper()
	b, err := local.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// openCorpusRepo creates a repository with chunker parameters p (zero:
// the defaults) and the default pack size on b, indexed in db.
func openCorpusRepo(t testing.TB, b blobstore.Backend, db *metadb.DB, encrypted bool, p chunker.Params) *repository.Repository {
	t.Helper()
	ctx := context.Background()
	key := repotest.MasterKey()
	cfg, _, err := repository.Init(ctx, b, repository.InitOptions{MasterKey: key, Encrypted: encrypted, Chunker: p})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := repository.Open(ctx, b, db.Index(cfg.ID), key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(repo.Close)
	return repo
}

// backupCorpus stores dir as a committed snapshot and returns its id and
// statistics.
func backupCorpus(ctx context.Context, repo *repository.Repository, dir string) (string, tree.SnapshotStats, []archiver.FileError, error) {
	o := archiver.DefaultOptions(repo.Codec())
	o.Chunker = repo.Config().ChunkerParams()
	a, err := archiver.New(o)
	if err != nil {
		return "", tree.SnapshotStats{}, nil, err
	}
	w, err := repo.NewWriter(ctx, repository.WriterOptions{})
	if err != nil {
		return "", tree.SnapshotStats{}, nil, err
	}
	defer w.Close()
	start := time.Now().UTC()
	root, st, err := a.Archive(ctx, w, dir)
	if err != nil {
		return "", tree.SnapshotStats{}, nil, err
	}
	if err := w.Flush(ctx); err != nil {
		return "", tree.SnapshotStats{}, nil, err
	}
	stats := st.SnapshotStats
	stats.AddedBytes = uint64(w.Stats().StoredBytes)
	id, err := w.Commit(ctx, &tree.Snapshot{Version: tree.SnapshotVersion, Time: start, Tree: root,
		Hostname: "roundtrip", Paths: []string{dir}, Stats: stats})
	return id, stats, st.Errors, err
}

// restoreCorpus restores snapshot id into dst.
func restoreCorpus(ctx context.Context, repo *repository.Repository, id, dst string) (restorer.Stats, error) {
	snap, err := repo.LoadSnapshot(ctx, id)
	if err != nil {
		return restorer.Stats{}, err
	}
	r, err := restorer.New(repo, restorer.Options{})
	if err != nil {
		return restorer.Stats{}, err
	}
	return r.Restore(ctx, snap.Tree, "", dst)
}

// checkIncremental checks that the second backup saved exactly the blobs
// its snapshot reaches and the first does not: nothing stored again.
func checkIncremental(t *testing.T, repo *repository.Repository, first, second string, stats tree.SnapshotStats) {
	t.Helper()
	ctx := context.Background()
	seen := map[blob.ID]struct{}{}
	roots := func(id string) []blob.ID {
		snap, err := repo.LoadSnapshot(ctx, id)
		mustDo(t, err)
		return []blob.ID{snap.Tree}
	}
	mustDo(t, repo.Reach(ctx, roots(first), seen, func(blob.Type, blob.ID) error { return nil }))
	var data, trees uint64
	mustDo(t, repo.Reach(ctx, roots(second), seen, func(typ blob.Type, _ blob.ID) error {
		if typ == blob.Tree {
			trees++
		} else {
			data++
		}
		return nil
	}))
	if stats.DataBlobs != data || stats.TreeBlobs != trees {
		t.Errorf("the second backup saved %d data and %d tree blobs; its snapshot reaches %d and %d that the first does not",
			stats.DataBlobs, stats.TreeBlobs, data, trees)
	}
}

// backupAndCheck backs src up, restores the snapshot into a fresh
// directory, compares the two, and returns the backup's statistics and
// snapshot id.
func backupAndCheck(t *testing.T, repo *repository.Repository, src, what string) (tree.SnapshotStats, string) {
	t.Helper()
	ctx := context.Background()
	id, stats, errs, err := backupCorpus(ctx, repo, src)
	if err != nil {
		t.Fatalf("%s backup: %v", what, err)
	}
	if len(errs) > 0 {
		t.Errorf("%s backup: %v", what, errs)
	}
	dst := filepath.Join(t.TempDir(), "restored")
	rst, err := restoreCorpus(ctx, repo, id, dst)
	if err != nil {
		t.Fatalf("%s restore: %v", what, err)
	}
	if len(rst.Errors) > 0 {
		t.Errorf("%s restore: %v", what, rst.Errors)
	}
	if rst.Files+rst.Links != stats.Files || rst.Bytes+hardLinkedBytes(t, src) != stats.Bytes {
		t.Errorf("%s: restored %d files and %d links (%d bytes) of %d files (%d bytes)", what, rst.Files, rst.Links, rst.Bytes, stats.Files, stats.Bytes)
	}
	compareTrees(t, src, dst)
	return stats, id
}

// addSpecialEntries adds what the generated corpus lacks: hard links, a
// fifo, a socket (not restored), setuid and sticky modes, extended
// attributes, and a device when running as root.
func addSpecialEntries(t *testing.T, dir string) {
	t.Helper()
	special := filepath.Join(dir, "special")
	mustDo(t, os.MkdirAll(filepath.Join(special, "sticky"), 0o755))
	mustDo(t, os.Chmod(filepath.Join(special, "sticky"), 0o1777))
	mustDo(t, os.WriteFile(filepath.Join(special, "hard-a"), bytes.Repeat([]byte("hard link "), 1000), 0o644))
	mustDo(t, os.Mkdir(filepath.Join(special, "links"), 0o700))
	mustDo(t, os.Link(filepath.Join(special, "hard-a"), filepath.Join(special, "links", "hard-b")))
	mustDo(t, os.Link(filepath.Join(special, "hard-a"), filepath.Join(special, "sticky", "hard-c")))
	mustDo(t, os.WriteFile(filepath.Join(special, "setuid"), []byte("#!/bin/sh\necho hi\n"), 0o755))
	mustDo(t, os.Chmod(filepath.Join(special, "setuid"), 0o4755|fs.ModeSetuid))
	mustDo(t, unix.Mkfifo(filepath.Join(special, "fifo"), 0o640))
	mustDo(t, unix.Mknod(filepath.Join(special, "socket"), unix.S_IFSOCK|0o600, 0))
	for _, p := range []string{filepath.Join(special, "setuid"), filepath.Join(special, "links")} {
		if err := unix.Setxattr(p, "user.coffer.note", []byte("kept\x00binary"), 0); err != nil {
			t.Logf("no extended attributes on this file system: %v", err)
		}
	}
	if os.Geteuid() == 0 {
		err := unix.Mknod(filepath.Join(special, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3)))
		if err != nil && !errors.Is(err, unix.EPERM) {
			t.Fatal(err)
		}
	}
	mtime := time.Date(2025, 12, 24, 18, 0, 0, 123456789, time.UTC)
	ts := []unix.Timespec{unix.NsecToTimespec(mtime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	for _, p := range []string{"setuid", "fifo", "links", "sticky", "."} {
		mustDo(t, unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(special, p), ts, unix.AT_SYMLINK_NOFOLLOW))
	}
}

func mustDo(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// hardLinkedBytes counts the bytes of the second and later links of files
// below dir, which a restore links rather than writes.
func hardLinkedBytes(t *testing.T, dir string) uint64 {
	seen := map[uint64]bool{}
	var n uint64
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		var st unix.Stat_t
		if err == nil && d.Type().IsRegular() && unix.Lstat(p, &st) == nil && st.Nlink > 1 {
			if seen[st.Ino] {
				n += uint64(st.Size)
			}
			seen[st.Ino] = true
		}
		return nil
	})
	return n
}

// compareTrees checks that dst holds exactly what src holds, sockets
// excepted: types, permission and special mode bits, owners, modification
// times, sizes and content, symlink targets, device numbers, extended
// attributes, and which paths are hard links of one another.
func compareTrees(t *testing.T, src, dst string) {
	t.Helper()
	srcLinks, dstLinks := map[uint64]string{}, map[uint64]string{}
	seen := map[string]bool{}
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		var a, b unix.Stat_t
		mustDo(t, unix.Lstat(p, &a))
		if a.Mode&unix.S_IFMT == unix.S_IFSOCK {
			return nil
		}
		seen[rel] = true
		q := filepath.Join(dst, rel)
		if err := unix.Lstat(q, &b); err != nil {
			t.Errorf("%s: not restored: %v", rel, err)
			return nil
		}
		if rel != "." && (a.Mode != b.Mode || a.Uid != b.Uid || a.Gid != b.Gid || a.Mtim != b.Mtim || a.Rdev != b.Rdev) {
			t.Errorf("%s: mode %#o uid %d gid %d mtime %v rdev %d, restored as %#o %d %d %v %d", rel,
				a.Mode, a.Uid, a.Gid, time.Unix(a.Mtim.Unix()), a.Rdev, b.Mode, b.Uid, b.Gid, time.Unix(b.Mtim.Unix()), b.Rdev)
		}
		switch a.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			if a.Size != b.Size || !sameContent(t, p, q) {
				t.Errorf("%s: content differs (%d bytes, restored %d)", rel, a.Size, b.Size)
			}
			if a.Nlink > 1 || b.Nlink > 1 {
				checkLinkGroup(t, rel, srcLinks, a.Ino, dstLinks, b.Ino)
			}
		case unix.S_IFLNK:
			ta, _ := os.Readlink(p)
			tb, _ := os.Readlink(q)
			if ta != tb {
				t.Errorf("%s: symlink to %q restored to %q", rel, ta, tb)
			}
		}
		if m := a.Mode & unix.S_IFMT; m == unix.S_IFREG || m == unix.S_IFDIR {
			if xa, xb := xattrList(t, p), xattrList(t, q); xa != xb {
				t.Errorf("%s: extended attributes %q restored as %q", rel, xa, xb)
			}
		}
		return nil
	})
	mustDo(t, err)
	mustDo(t, filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if rel, _ := filepath.Rel(dst, p); !seen[rel] {
			t.Errorf("%s: restored, but not in the source", rel)
		}
		return nil
	}))
}

// checkLinkGroup checks that paths sharing an inode in the source share
// one in the restore, and only those.
func checkLinkGroup(t *testing.T, rel string, srcFirst map[uint64]string, srcIno uint64, dstFirst map[uint64]string, dstIno uint64) {
	a, okA := srcFirst[srcIno]
	b, okB := dstFirst[dstIno]
	switch {
	case !okA && !okB:
		srcFirst[srcIno], dstFirst[dstIno] = rel, rel
	case a != b:
		t.Errorf("%s: hard link of %q in the source, of %q in the restore", rel, a, b)
	}
}

func sameContent(t *testing.T, a, b string) bool {
	fa, err := os.Open(a)
	mustDo(t, err)
	defer fa.Close()
	fb, err := os.Open(b)
	mustDo(t, err)
	defer fb.Close()
	ba, bb := make([]byte, 1<<20), make([]byte, 1<<20)
	for {
		na, ea := io.ReadFull(fa, ba)
		nb, eb := io.ReadFull(fb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return false
		}
		if ea != nil || eb != nil {
			return (ea == io.EOF || ea == io.ErrUnexpectedEOF) && (eb == io.EOF || eb == io.ErrUnexpectedEOF)
		}
	}
}

// xattrList lists a file's extended attributes and values, in order.
func xattrList(t *testing.T, p string) string {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return ""
		}
		t.Fatalf("list xattrs of %s: %v", p, err)
	}
	var out []byte
	names := bytes.Split(buf[:n], []byte{0})
	slices.SortFunc(names, bytes.Compare)
	for _, name := range names {
		if len(name) == 0 {
			continue
		}
		v := make([]byte, 64<<10)
		m, err := unix.Lgetxattr(p, string(name), v)
		mustDo(t, err)
		out = fmt.Appendf(out, "%s=%q;", name, v[:m])
	}
	return string(out)
}

// TestReadBlobs checks the batched reader a restore uses: every request is
// answered once, with the blob's content or its own error, and neighbours
// in a pack share one read.
func TestReadBlobs(t *testing.T) {
	ctx := context.Background()
	opens := 0
	backend := mem.New(mem.Options{Name: t.Name(), BeforeOp: func(op mem.Op, name string) error {
		if op == mem.OpOpen && strings.HasPrefix(name, "packs/") {
			opens++
		}
		return nil
	}})
	repo := repotest.New(t, repotest.Options{Backend: backend, Encrypted: true})
	files := repotest.Files{}
	for i := range 40 {
		b := make([]byte, 40000+i*6000)
		rand.NewChaCha8([32]byte{byte(i)}).Read(b)
		files[fmt.Sprintf("f%02d", i)] = b
	}
	_, root := repotest.WriteSnapshot(t, repo, files)
	var ids []blob.ID
	mustDo(t, repo.Walk(ctx, root, func(_ string, n *tree.Node) error {
		ids = append(ids, n.Content...)
		return nil
	}))
	locs, err := repo.Locate(ctx, ids)
	mustDo(t, err)
	var reqs []repository.BlobRequest
	for i := len(ids) - 1; i >= 0; i-- { // out of pack order on purpose
		reqs = append(reqs, repository.BlobRequest{ID: ids[i], Loc: locs[ids[i]]})
	}
	good := len(reqs)
	// A blob asked for under another's location fails alone; one whose
	// pack is gone is looked up again and read where it is now (as after
	// a repack), unless it is gone too.
	wrong := reqs[0]
	wrong.ID = ids[1]
	moved := reqs[1]
	moved.Loc.Pack[0] ^= 0xff
	lost := moved
	lost.ID[0] ^= 0xff
	reqs = append(reqs, wrong, moved, lost)

	want := map[blob.ID][]byte{}
	for _, id := range ids {
		want[id], err = repo.LoadBlob(ctx, blob.Data, id, nil)
		mustDo(t, err)
	}
	opens = 0
	calls := make([]int, len(reqs))
	err = repo.ReadBlobs(ctx, blob.Data, reqs, func(i int, plain []byte, err error) error {
		calls[i]++
		switch {
		case i < good && err != nil:
			t.Errorf("request %d: %v", i, err)
		case i < good:
			if !bytes.Equal(plain, want[reqs[i].ID]) {
				t.Errorf("request %d: wrong content", i)
			}
		case i == good && !errors.Is(err, blob.ErrCorrupt):
			t.Errorf("blob under another's location: err = %v, want ErrCorrupt", err)
		case i == good+1 && (err != nil || !bytes.Equal(plain, want[reqs[i].ID])):
			t.Errorf("blob moved to another pack: err = %v, or wrong content", err)
		case i == good+2 && !errors.Is(err, blobstore.ErrNotFound):
			t.Errorf("blob of a missing pack: err = %v, want ErrNotFound", err)
		}
		return nil
	})
	mustDo(t, err)
	for i, n := range calls {
		if n != 1 {
			t.Errorf("request %d answered %d times", i, n)
		}
	}
	packs := map[pack.ID]bool{}
	for _, r := range reqs[:good] {
		packs[r.Loc.Pack] = true
	}
	// One read per pack; for the moved and the lost blob, one read of the
	// missing pack together, then one each blob by blob, and the moved
	// one's read from its new pack.
	if opens != len(packs)+4 || len(packs) < 2 {
		t.Errorf("%d reads of %d packs for %d blobs", opens, len(packs), good)
	}
}
