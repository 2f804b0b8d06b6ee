//go:build linux

package archiver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/chunker"
	"github.com/cofferhq/coffer/internal/engine/tree"
)

// smallChunks are the smallest parameters a repository accepts, so that
// modest files make several chunks.
var smallChunks = chunker.Params{Min: 64 << 10, Avg: 128 << 10, Max: 256 << 10}

// memSaver is a Saver keeping blobs in a map. It checks every id it is
// given against the content, and counts calls.
type memSaver struct {
	codec *blob.Codec

	mu           sync.Mutex
	blobs        map[blob.ID][]byte
	types        map[blob.ID]blob.Type
	missingCalls int
	asked        map[blob.ID]int // ids asked about by Missing, and how often
	saves        int
	levels       map[blob.Compression]int
	failSave     error // returned by every Save when set
}

func newMemSaver(t testing.TB) *memSaver {
	codec, err := blob.NewCodec(blob.Keys{IDKey: [32]byte{1, 2, 3}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(codec.Close)
	return &memSaver{codec: codec, blobs: map[blob.ID][]byte{}, types: map[blob.ID]blob.Type{}, levels: map[blob.Compression]int{},
		asked: map[blob.ID]int{}}
}

func (s *memSaver) Missing(ctx context.Context, ids []blob.ID) ([]blob.ID, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.missingCalls++
	var out []blob.ID
	for _, id := range ids {
		s.asked[id]++
		if _, ok := s.blobs[id]; !ok {
			out = append(out, id)
		}
	}
	return out, nil
}

func (s *memSaver) Save(ctx context.Context, t blob.Type, id blob.ID, plaintext []byte, level blob.Compression) (bool, error) {
	if s.codec.IDOf(t, plaintext) != id {
		return false, fmt.Errorf("save %s blob %s: the id does not match the content", t, id.Short())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failSave != nil {
		return false, s.failSave
	}
	if _, ok := s.blobs[id]; ok {
		return false, nil
	}
	s.saves++
	s.levels[level]++
	s.blobs[id] = bytes.Clone(plaintext)
	s.types[id] = t
	return true, nil
}

// dir returns the nodes of a stored directory, joining its parts.
func (s *memSaver) dir(t *testing.T, id blob.ID) []tree.Node {
	t.Helper()
	tr := s.tree(t, id)
	if len(tr.Parts) == 0 {
		return tr.Nodes
	}
	var parts []*tree.Tree
	for _, p := range tr.Parts {
		parts = append(parts, s.tree(t, p))
	}
	joined, err := tree.Join(parts)
	if err != nil {
		t.Fatal(err)
	}
	return joined.Nodes
}

func (s *memSaver) tree(t *testing.T, id blob.ID) *tree.Tree {
	t.Helper()
	s.mu.Lock()
	b, typ := s.blobs[id], s.types[id]
	s.mu.Unlock()
	if b == nil || typ != blob.Tree {
		t.Fatalf("tree %s was not saved as a tree (type %v)", id.Short(), typ)
	}
	tr, err := tree.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// walk returns every node below root by path.
func (s *memSaver) walk(t *testing.T, root blob.ID) map[string]tree.Node {
	t.Helper()
	out := map[string]tree.Node{}
	var visit func(id blob.ID, dir string)
	visit = func(id blob.ID, dir string) {
		for _, n := range s.dir(t, id) {
			p := path.Join(dir, n.Name)
			out[p] = n
			if n.Type == tree.Dir {
				visit(n.Subtree, p)
			}
		}
	}
	visit(root, "")
	return out
}

func (s *memSaver) content(t *testing.T, n tree.Node) []byte {
	t.Helper()
	var b []byte
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range n.Content {
		if s.types[id] != blob.Data {
			t.Fatalf("content blob %s of %s was not saved as data", id.Short(), n.Name)
		}
		b = append(b, s.blobs[id]...)
	}
	return b
}

func newArchiver(t testing.TB, s *memSaver, edit func(*Options)) *Archiver {
	t.Helper()
	o := DefaultOptions(s.codec)
	o.Chunker = smallChunks
	if edit != nil {
		edit(&o)
	}
	a, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}).Read(b)
	return b
}

func write(t *testing.T, p string, b []byte, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}

// makeTree creates one of every kind of entry below dir.
func makeTree(t *testing.T, dir string) {
	t.Helper()
	min := smallChunks.Min
	write(t, filepath.Join(dir, "empty.txt"), nil, 0o644)
	write(t, filepath.Join(dir, "small.txt"), bytes.Repeat([]byte("hello, coffer\n"), 700), 0o640)
	write(t, filepath.Join(dir, "big.bin"), randomBytes(1<<20+12345, 1), 0o600)
	write(t, filepath.Join(dir, "exactly-min"), randomBytes(min, 2), 0o644)
	write(t, filepath.Join(dir, "min-plus-one"), randomBytes(min+1, 3), 0o644)
	write(t, filepath.Join(dir, "setuid"), []byte("#!/bin/sh\n"), 0o4755|os.ModeSetuid)
	write(t, filepath.Join(dir, "dir/sub/deep.txt"), []byte("deep"), 0o644)
	write(t, filepath.Join(dir, "dir/hard2"), nil, 0o644)
	write(t, filepath.Join(dir, "name with spaces\nand newline"), []byte("odd"), 0o644)
	must(t, os.Remove(filepath.Join(dir, "dir/hard2")))
	write(t, filepath.Join(dir, "hard1"), []byte("linked twice"), 0o644)
	must(t, os.Link(filepath.Join(dir, "hard1"), filepath.Join(dir, "dir/hard2")))
	must(t, os.MkdirAll(filepath.Join(dir, "dir/empty"), 0o750))
	must(t, os.Mkdir(filepath.Join(dir, "sticky"), 0o755))
	must(t, os.Chmod(filepath.Join(dir, "sticky"), 0o777|os.ModeSticky))
	must(t, os.Symlink("small.txt", filepath.Join(dir, "link-rel")))
	must(t, os.Symlink("/etc/passwd", filepath.Join(dir, "link-abs")))
	must(t, os.Symlink("../../nowhere", filepath.Join(dir, "dir/link-dangling")))
	must(t, unix.Mkfifo(filepath.Join(dir, "fifo"), 0o620))
	must(t, unix.Mknod(filepath.Join(dir, "socket"), unix.S_IFSOCK|0o644, 0))
	if os.Geteuid() == 0 {
		must(t, unix.Mknod(filepath.Join(dir, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	}
	if err := unix.Setxattr(filepath.Join(dir, "small.txt"), "user.coffer.test", []byte("value\x00with nul"), 0); err != nil {
		t.Logf("no user xattrs here: %v", err)
	}
	mtime := time.Date(2024, 2, 29, 12, 34, 56, 789012345, time.UTC)
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		must(t, err)
		ts := []unix.Timespec{unix.NsecToTimespec(mtime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
		must(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW))
		mtime = mtime.Add(time.Hour + time.Nanosecond)
		return nil
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestArchive stores one of every kind of entry and checks each node
// against what lstat says and each file's content against its bytes.
func TestArchive(t *testing.T) {
	dir := t.TempDir()
	makeTree(t, dir)
	s := newMemSaver(t)
	root, st, err := newArchiver(t, s, nil).Archive(context.Background(), s, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Errors) > 0 {
		t.Errorf("errors: %v", st.Errors)
	}
	nodes := s.walk(t, root)
	var files, dirs, links, others, size uint64
	err = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		n, ok := nodes[filepath.ToSlash(rel)]
		if !ok {
			t.Errorf("%s was not stored", rel)
			return nil
		}
		delete(nodes, filepath.ToSlash(rel))
		var lst unix.Stat_t
		must(t, unix.Lstat(p, &lst))
		want := tree.Node{Name: path.Base(filepath.ToSlash(rel)), Type: nodeType(lst.Mode), Mode: lst.Mode & 0o7777,
			UID: lst.Uid, GID: lst.Gid, User: n.User, Group: n.Group, ModTime: time.Unix(lst.Mtim.Unix()).UTC()}
		got := n
		got.Content, got.Subtree, got.Xattrs = nil, blob.ID{}, nil
		switch want.Type {
		case tree.File:
			files++
			size += uint64(lst.Size)
			want.Size = uint64(lst.Size)
			if lst.Nlink > 1 {
				want.Links, want.Inode, want.DeviceID = lst.Nlink, lst.Ino, lst.Dev
			}
			b, _ := os.ReadFile(p)
			if !bytes.Equal(s.content(t, n), b) {
				t.Errorf("%s: stored content differs", rel)
			}
			if ids := chunkIDs(t, s.codec, b); !slices.Equal(ids, n.Content) {
				t.Errorf("%s: content blobs %d differ from the chunker's %d", rel, len(n.Content), len(ids))
			}
		case tree.Dir:
			dirs++
		case tree.Symlink:
			links++
			want.LinkTarget, _ = os.Readlink(p)
		case tree.CharDevice:
			others++
			want.Device = lst.Rdev
		default:
			others++
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s (-lstat +stored):\n%s", rel, diff)
		}
		if want.Type == tree.File || want.Type == tree.Dir {
			checkXattrs(t, p, n.Xattrs)
		}
		return nil
	})
	must(t, err)
	for p := range nodes {
		t.Errorf("stored %s, which does not exist", p)
	}
	wantStats := tree.SnapshotStats{Files: files, Dirs: dirs, Symlinks: links, Others: others, Bytes: size,
		DataBlobs: st.DataBlobs, TreeBlobs: st.TreeBlobs}
	if diff := cmp.Diff(wantStats, st.SnapshotStats); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
	trees := map[blob.ID]bool{root: true}
	for _, n := range s.walk(t, root) {
		if n.Type == tree.Dir {
			trees[n.Subtree] = true
		}
	}
	if st.TreeBlobs != uint64(len(trees)) || len(trees) != int(dirs) { // two empty directories share a tree
		t.Errorf("%d tree blobs saved for %d distinct trees of %d directories and the root", st.TreeBlobs, len(trees), dirs)
	}
	if st.ReadBytes != size {
		t.Errorf("read %d bytes of %d", st.ReadBytes, size)
	}
}

func checkXattrs(t *testing.T, p string, got []tree.Xattr) {
	t.Helper()
	want, err := listXattrs(p)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("%s: xattrs (-file +stored):\n%s", p, diff)
	}
}

func listXattrs(p string) ([]tree.Xattr, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	return readXattrs(fd)
}

// chunkIDs chunks b directly.
func chunkIDs(t *testing.T, codec *blob.Codec, b []byte) []blob.ID {
	t.Helper()
	c, err := chunker.New(bytes.NewReader(b), smallChunks)
	must(t, err)
	var ids []blob.ID
	for {
		chunk, err := c.Next()
		if err == io.EOF {
			return ids
		}
		must(t, err)
		ids = append(ids, codec.ID(chunk))
	}
}

// A second backup of the same tree saves nothing and gives the same root.
func TestArchiveAgainSavesNothing(t *testing.T) {
	dir := t.TempDir()
	makeTree(t, dir)
	s := newMemSaver(t)
	a := newArchiver(t, s, nil)
	root1, _, err := a.Archive(context.Background(), s, dir)
	must(t, err)
	saves := s.saves
	root2, st, err := a.Archive(context.Background(), s, dir)
	must(t, err)
	if root1 != root2 || s.saves != saves || st.DataBlobs != 0 || st.TreeBlobs != 0 || st.AddedRawBytes != 0 {
		t.Errorf("second backup: root %s (first %s), %d more saves, stats %+v", root2.Short(), root1.Short(), s.saves-saves, st.SnapshotStats)
	}
}

// Missing is asked about many ids at a time, and each blob is saved once
// even when several files share it.
func TestArchiveBatchesLookups(t *testing.T) {
	dir := t.TempDir()
	for i := range 1000 {
		write(t, filepath.Join(dir, fmt.Sprintf("d%d/f%04d", i%7, i)), fmt.Appendf(nil, "file %d", i%600), 0o644)
	}
	s := newMemSaver(t)
	a := newArchiver(t, s, func(o *Options) { o.BatchSize = 100; o.BatchDelay = time.Minute })
	_, st, err := a.Archive(context.Background(), s, dir)
	must(t, err)
	// 600 distinct contents and 8 trees, in 1008 items: at most 100 ids a
	// call, and no call for fewer unless it was the last.
	if s.missingCalls > 11 || s.missingCalls < 10 {
		t.Errorf("%d Missing calls for 1008 blobs in batches of 100", s.missingCalls)
	}
	if st.DataBlobs != 600 || s.saves != 608 {
		t.Errorf("saved %d data blobs (%d saves), want 600 (608)", st.DataBlobs, s.saves)
	}
}

// Chunks that look random are saved without compression when asked.
func TestArchiveSkipsIncompressible(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "random"), randomBytes(300<<10, 5), 0o644)
	write(t, filepath.Join(dir, "text"), bytes.Repeat([]byte("compress me please "), 20000), 0o644)
	for _, skip := range []bool{false, true} {
		s := newMemSaver(t)
		a := newArchiver(t, s, func(o *Options) { o.SkipIncompressible = skip })
		_, _, err := a.Archive(context.Background(), s, dir)
		must(t, err)
		wantOff := 0
		if skip {
			wantOff = len(chunkIDs(t, s.codec, randomBytes(300<<10, 5)))
		}
		if s.levels[blob.Off] != wantOff || s.levels[blob.Fastest] == 0 {
			t.Errorf("skip %v: saves by level %v, want %d off", skip, s.levels, wantOff)
		}
	}
}

func TestLooksRandom(t *testing.T) {
	for _, c := range []struct {
		name string
		data []byte
		want bool
	}{
		{"random", randomBytes(1<<20, 9), true},
		{"short random", randomBytes(500, 9), false},
		{"text", bytes.Repeat([]byte("the quick brown fox jumps over the lazy dog\n"), 30000), false},
		{"zeros", make([]byte, 1<<20), false},
		{"random with a text hole", append(append(randomBytes(1<<19, 1), bytes.Repeat([]byte("ab"), 1<<18)...), randomBytes(1<<19, 2)...), false},
	} {
		if got := looksRandom(c.data); got != c.want {
			t.Errorf("looksRandom(%s) = %v", c.name, got)
		}
	}
}

// A directory whose tree would exceed the size limit is stored in parts.
func TestArchiveSplitsHugeDirectory(t *testing.T) {
	dir := t.TempDir()
	for i := range 400 {
		write(t, filepath.Join(dir, "huge", fmt.Sprintf("entry-%04d", i)), nil, 0o644)
	}
	s := newMemSaver(t)
	a := newArchiver(t, s, nil)
	a.maxTreeSize = 4096
	root, _, err := a.Archive(context.Background(), s, dir)
	must(t, err)
	top := s.dir(t, root)
	if len(top) != 1 {
		t.Fatalf("root has %d entries", len(top))
	}
	if parts := s.tree(t, top[0].Subtree).Parts; len(parts) < 2 {
		t.Fatalf("huge directory stored in %d parts", len(parts))
	}
	if nodes := s.dir(t, top[0].Subtree); len(nodes) != 400 {
		t.Errorf("huge directory has %d entries after joining, want 400", len(nodes))
	}
}

// Files that vanish, are replaced or change during the backup are
// reported, and the backup goes on.
func TestArchiveReportsChangingFiles(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"vanishes", "becomes-link", "becomes-dir", "grows", "steady"} {
		write(t, filepath.Join(dir, name), []byte("original content of "+name), 0o644)
	}
	s := newMemSaver(t)
	a := newArchiver(t, s, nil)
	a.hook = func(stage, p string) {
		abs := filepath.Join(dir, p)
		switch stage + " " + p {
		case "open vanishes":
			must(t, os.Remove(abs))
		case "open becomes-link":
			must(t, os.Remove(abs))
			must(t, os.Symlink("steady", abs))
		case "open becomes-dir":
			must(t, os.Remove(abs))
			must(t, os.Mkdir(abs, 0o755))
		case "read grows":
			f, err := os.OpenFile(abs, os.O_APPEND|os.O_WRONLY, 0)
			must(t, err)
			f.WriteString(" and more")
			f.Close()
		}
	}
	root, st, err := a.Archive(context.Background(), s, dir)
	must(t, err)
	got := map[string]error{}
	for _, e := range st.Errors {
		got[e.Path] = e.Err
	}
	for p, want := range map[string]error{"vanishes": ErrVanished, "becomes-link": ErrReplaced, "becomes-dir": ErrReplaced, "grows": ErrChanged} {
		if !errors.Is(got[p], want) {
			t.Errorf("%s: error %v, want %v", p, got[p], want)
		}
	}
	if len(st.Errors) != 4 {
		t.Errorf("errors: %v", st.Errors)
	}
	nodes := s.walk(t, root)
	var names []string
	for p := range nodes {
		names = append(names, p)
	}
	slices.Sort(names)
	if want := []string{"grows", "steady"}; !slices.Equal(names, want) {
		t.Errorf("stored %q, want %q", names, want)
	}
	if c := string(s.content(t, nodes["grows"])); c != "original content of grows and more" || nodes["grows"].Size != uint64(len(c)) {
		t.Errorf("grows stored as %q (size %d), want it as read", c, nodes["grows"].Size)
	}
}

func TestArchiveRootErrors(t *testing.T) {
	s := newMemSaver(t)
	a := newArchiver(t, s, nil)
	file := filepath.Join(t.TempDir(), "file")
	write(t, file, []byte("x"), 0o644)
	for _, root := range []string{filepath.Join(t.TempDir(), "missing"), file} {
		if _, _, err := a.Archive(context.Background(), s, root); err == nil {
			t.Errorf("archiving %s succeeded", root)
		}
	}
}

// A saver failure or a cancelled context ends the backup with an error,
// without leaving goroutines blocked.
func TestArchiveFails(t *testing.T) {
	dir := t.TempDir()
	for i := range 50 {
		write(t, filepath.Join(dir, fmt.Sprintf("f%02d", i)), randomBytes(200<<10, uint64(i)), 0o644)
	}
	t.Run("saver", func(t *testing.T) {
		s := newMemSaver(t)
		s.failSave = errors.New("disk on fire")
		_, _, err := newArchiver(t, s, func(o *Options) { o.MemoryLimit = 1 }).Archive(context.Background(), s, dir)
		if err == nil || !strings.Contains(err.Error(), "disk on fire") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		s := newMemSaver(t)
		a := newArchiver(t, s, nil)
		ctx, cancel := context.WithCancel(context.Background())
		a.hook = func(stage, p string) {
			if p == "f10" {
				cancel()
			}
		}
		_, _, err := a.Archive(ctx, s, dir)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	})
}
