package restorer

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/tree"
)

// memRepo is a Repository serving nodes and blobs from maps. Its nodes
// are not encoded, so tests can hand the restorer names that no tree
// decoder would let through.
type memRepo struct {
	mu       sync.Mutex
	next     uint64
	dirs     map[blob.ID][]tree.Node
	data     map[blob.ID][]byte
	failRead map[blob.ID]error
	locates  int
}

func newMemRepo() *memRepo {
	return &memRepo{dirs: map[blob.ID][]tree.Node{}, data: map[blob.ID][]byte{}, failRead: map[blob.ID]error{}}
}

func (m *memRepo) id() blob.ID {
	m.next++
	var id blob.ID
	binary.LittleEndian.PutUint64(id[:], m.next)
	return id
}

// dir stores a directory (sorted as given) and returns its id.
func (m *memRepo) dir(nodes ...tree.Node) blob.ID {
	id := m.id()
	m.dirs[id] = nodes
	return id
}

var mtime = time.Date(2023, 4, 5, 6, 7, 8, 9, time.UTC)

// file returns a file node whose content is stored in chunks of chunk bytes.
func (m *memRepo) file(name string, content []byte, chunk int) tree.Node {
	n := tree.Node{Name: name, Type: tree.File, Mode: 0o640, ModTime: mtime, Size: uint64(len(content))}
	for len(content) > 0 {
		c := content[:min(chunk, len(content))]
		content = content[len(c):]
		id := m.id()
		m.data[id] = c
		n.Content = append(n.Content, id)
	}
	return n
}

func (m *memRepo) dirNode(name string, nodes ...tree.Node) tree.Node {
	return tree.Node{Name: name, Type: tree.Dir, Mode: 0o755, ModTime: mtime, Subtree: m.dir(nodes...)}
}

func (m *memRepo) LoadDir(ctx context.Context, id blob.ID) ([]tree.Node, error) {
	nodes, ok := m.dirs[id]
	if !ok {
		return nil, fmt.Errorf("tree %s: %w", id.Short(), repository.ErrNotIndexed)
	}
	return nodes, nil
}

func (m *memRepo) Locate(ctx context.Context, ids []blob.ID) (map[blob.ID]repository.Location, error) {
	m.mu.Lock()
	m.locates++
	m.mu.Unlock()
	out := map[blob.ID]repository.Location{}
	for _, id := range ids {
		if b, ok := m.data[id]; ok {
			out[id] = repository.Location{Type: blob.Data, RawLength: uint32(len(b))}
		}
	}
	return out, nil
}

func (m *memRepo) ReadBlobs(ctx context.Context, t blob.Type, reqs []repository.BlobRequest, fn func(int, []byte, error) error) error {
	for i, req := range reqs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(i, m.data[req.ID], m.failRead[req.ID]); err != nil {
			return err
		}
	}
	return nil
}

func newRestorer(t *testing.T, repo Repository, edit func(*Options)) *Restorer {
	t.Helper()
	var o Options
	if edit != nil {
		edit(&o)
	}
	r, err := New(repo, o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// listing describes every entry below root: type, and content or target.
func listing(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			out[rel] = "link " + target
		case d.IsDir():
			out[rel] = "dir"
		case d.Type()&fs.ModeNamedPipe != 0:
			out[rel] = "fifo"
		default:
			b, _ := os.ReadFile(p)
			out[rel] = "file " + string(b)
		}
		return nil
	})
	must(t, err)
	return out
}

func wantListing(t *testing.T, root string, want map[string]string) {
	t.Helper()
	got := listing(t, root)
	for p, w := range want {
		if got[p] != w {
			t.Errorf("%s: %q, want %q", p, got[p], w)
		}
		delete(got, p)
	}
	for p, g := range got {
		t.Errorf("%s: unexpected %q", p, g)
	}
}

// Names that are not one safe path element are never written, wherever
// they appear; everything else is.
func TestRestoreRefusesUnsafeNames(t *testing.T) {
	m := newMemRepo()
	bad := []string{"..", "../escape", "a/b", "/etc", ".", "", "nul\x00byte"}
	var nodes, inner []tree.Node
	for _, name := range bad {
		nodes = append(nodes, m.file(name, []byte("outside!"), 4))
		inner = append(inner, m.dirNode(name, m.file("passwd", []byte("outside!"), 4)))
	}
	nodes = append(nodes, m.file("ok", []byte("inside"), 4), m.dirNode("sub", inner...))
	root := m.dir(nodes...)

	sandbox := t.TempDir()
	dst := filepath.Join(sandbox, "a", "dst")
	must(t, os.MkdirAll(filepath.Join(sandbox, "a", "b"), 0o755))
	st, err := newRestorer(t, m, nil).Restore(context.Background(), root, "", dst)
	must(t, err)
	wantListing(t, sandbox, map[string]string{"a": "dir", "a/b": "dir", "a/dst": "dir", "a/dst/ok": "file inside", "a/dst/sub": "dir"})
	unsafe := 0
	for _, e := range st.Errors {
		if errors.Is(e.Err, ErrUnsafeName) {
			unsafe++
		}
	}
	if unsafe != 2*len(bad) || len(st.Errors) != unsafe {
		t.Errorf("%d unsafe-name errors of %d, want %d: %v", unsafe, len(st.Errors), 2*len(bad), st.Errors)
	}
}

// The helpers that open paths refuse anything but plain elements, and
// never follow a symlink.
func TestOpenPathRefuses(t *testing.T) {
	dir := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(dir, "a", "b"), 0o755))
	must(t, os.Symlink("a", filepath.Join(dir, "link")))
	must(t, os.Symlink("/", filepath.Join(dir, "a", "root")))
	rootfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	must(t, err)
	defer unix.Close(rootfd)
	for _, rel := range []string{"a", "a/b", ""} {
		fd, err := openPath(rootfd, rel)
		if err != nil {
			t.Errorf("openPath(%q): %v", rel, err)
			continue
		}
		unix.Close(fd)
	}
	for _, rel := range []string{"..", "../a", "a/../a", "/etc", "/", "a//b", "./a", "a/", "link", "link/b", "a/root", "a/root/etc"} {
		if fd, err := openPath(rootfd, rel); err == nil {
			unix.Close(fd)
			t.Errorf("openPath(%q) succeeded", rel)
		}
	}
	for _, name := range []string{"..", ".", "", "a/b", "/etc"} {
		if err := clearEntry(rootfd, name); !errors.Is(err, ErrUnsafeName) {
			t.Errorf("clearEntry(%q) = %v", name, err)
		}
		if err := mkdirAt(rootfd, name); !errors.Is(err, ErrUnsafeName) {
			t.Errorf("mkdirAt(%q) = %v", name, err)
		}
		if _, err := lstatAt(rootfd, name); !errors.Is(err, ErrUnsafeName) {
			t.Errorf("lstatAt(%q) = %v", name, err)
		}
	}
}

// A destination reached through a symlink is used as given; symlinks
// inside it, pointing outside or inside, are replaced, never followed.
func TestRestoreNeverFollowsSymlinks(t *testing.T) {
	sandbox := t.TempDir()
	outside := filepath.Join(sandbox, "outside")
	must(t, os.MkdirAll(filepath.Join(outside, "deep"), 0o755))
	must(t, os.WriteFile(filepath.Join(outside, "secret"), []byte("keep me"), 0o600))
	must(t, os.MkdirAll(filepath.Join(sandbox, "real", "dest", "inner"), 0o755))
	must(t, os.Symlink("real", filepath.Join(sandbox, "parent")))
	dest := filepath.Join(sandbox, "real", "dest")
	for name, target := range map[string]string{
		"sub": outside, "file": filepath.Join(outside, "secret"), "dir2": "inner", "rel": "../../outside",
	} {
		must(t, os.Symlink(target, filepath.Join(dest, name)))
	}

	m := newMemRepo()
	root := m.dir(
		m.dirNode("dir2", m.file("y", []byte("y"), 10)),
		m.file("file", []byte("new file"), 3),
		m.dirNode("rel", m.dirNode("deep", m.file("z", []byte("z"), 10))),
		m.dirNode("sub", m.file("secret", []byte("overwritten?"), 10)),
		tree.Node{Name: "zlink", Type: tree.Symlink, ModTime: mtime, LinkTarget: "../outside"},
	)
	st, err := newRestorer(t, m, nil).Restore(context.Background(), root, "", filepath.Join(sandbox, "parent", "dest"))
	must(t, err)
	if len(st.Errors) > 0 {
		t.Errorf("errors: %v", st.Errors)
	}
	wantListing(t, outside, map[string]string{"deep": "dir", "secret": "file keep me"})
	wantListing(t, dest, map[string]string{
		"dir2": "dir", "dir2/y": "file y", "file": "file new file", "inner": "dir",
		"rel": "dir", "rel/deep": "dir", "rel/deep/z": "file z",
		"sub": "dir", "sub/secret": "file overwritten?", "zlink": "link ../outside",
	})
}

// Existing files are replaced; a directory in a file's way is kept and
// reported.
func TestRestoreOverwrite(t *testing.T) {
	dst := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dst, "file"), []byte("old content that is longer"), 0o644))
	must(t, os.MkdirAll(filepath.Join(dst, "blocked", "x"), 0o755))
	must(t, os.WriteFile(filepath.Join(dst, "was-file"), []byte("x"), 0o644))
	m := newMemRepo()
	root := m.dir(
		m.file("blocked", []byte("cannot"), 10),
		m.file("file", []byte("new"), 10),
		m.dirNode("was-file", m.file("in", []byte("in"), 10)),
	)
	st, err := newRestorer(t, m, nil).Restore(context.Background(), root, "", dst)
	must(t, err)
	wantListing(t, dst, map[string]string{"blocked": "dir", "blocked/x": "dir", "file": "file new", "was-file": "dir", "was-file/in": "file in"})
	if len(st.Errors) != 1 || st.Errors[0].Path != "blocked" || !errors.Is(st.Errors[0].Err, ErrExistsAsDir) {
		t.Errorf("errors: %v", st.Errors)
	}
}

// Metadata, hard links, fifos and big files split across workers.
func TestRestoreEntries(t *testing.T) {
	m := newMemRepo()
	big := bytes.Repeat([]byte("0123456789abcdef"), 10000)
	hard1 := m.file("hard1", []byte("linked"), 4)
	hard1.Links, hard1.Inode, hard1.DeviceID = 2, 77, 5
	hard2 := hard1
	hard2.Name = "hard2"
	setuid := m.file("setuid", []byte("#!/bin/sh\n"), 100)
	setuid.Mode = 0o4755
	xattr := m.file("xattr", []byte("x"), 100)
	xattr.Xattrs = []tree.Xattr{{Name: "user.coffer", Value: []byte("v\x00w")}}
	root := m.dir(
		m.file("big", big, 1000),
		m.file("empty", nil, 10),
		tree.Node{Name: "fifo", Type: tree.Fifo, Mode: 0o640, ModTime: mtime},
		hard1,
		m.dirNode("readonly", m.dirNode("d", hard2)),
		setuid,
		tree.Node{Name: "sock", Type: tree.Socket, Mode: 0o644, ModTime: mtime},
		xattr,
	)
	dst := t.TempDir()
	st, err := newRestorer(t, m, func(o *Options) { o.JobSize = 7000; o.LocateBatch = 50 }).Restore(context.Background(), root, "", dst)
	must(t, err)
	if len(st.Errors) > 0 {
		t.Errorf("errors: %v", st.Errors)
	}
	want := Stats{Files: 5, Dirs: 2, Links: 1, Others: 1, Skipped: 1, Bytes: uint64(len(big) + 6 + 10 + 1)}
	if st.Files != want.Files || st.Dirs != want.Dirs || st.Links != want.Links || st.Others != want.Others || st.Skipped != want.Skipped || st.Bytes != want.Bytes {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "big")); !bytes.Equal(b, big) {
		t.Error("big file differs")
	}
	if m.locates < 2 {
		t.Errorf("%d Locate calls for %d blobs in batches of 50", m.locates, len(m.data))
	}
	var a, b, fifo, su unix.Stat_t
	must(t, unix.Lstat(filepath.Join(dst, "hard1"), &a))
	must(t, unix.Lstat(filepath.Join(dst, "readonly/d/hard2"), &b))
	must(t, unix.Lstat(filepath.Join(dst, "fifo"), &fifo))
	must(t, unix.Lstat(filepath.Join(dst, "setuid"), &su))
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("hard links: inodes %d and %d, %d links", a.Ino, b.Ino, a.Nlink)
	}
	if fifo.Mode != unix.S_IFIFO|0o640 || su.Mode&0o7777 != 0o4755 {
		t.Errorf("fifo mode %#o, setuid mode %#o", fifo.Mode, su.Mode)
	}
	for _, p := range []string{"big", "fifo", "readonly", "readonly/d", "readonly/d/hard2", "empty"} {
		fi, err := os.Lstat(filepath.Join(dst, p))
		must(t, err)
		if !fi.ModTime().Equal(mtime) {
			t.Errorf("%s: mtime %v, want %v", p, fi.ModTime(), mtime)
		}
	}
	v := make([]byte, 16)
	if n, err := unix.Lgetxattr(filepath.Join(dst, "xattr"), "user.coffer", v); err != nil || string(v[:n]) != "v\x00w" {
		t.Errorf("xattr: %q, %v", v[:max(n, 0)], err)
	}
	if entries, _ := filepath.Glob(filepath.Join(dst, ".coffer-restore-*")); len(entries) > 0 {
		t.Errorf("temporary files left: %v", entries)
	}
}

// A file whose blob cannot be read, or whose blobs do not add up to its
// size, is reported and not left behind, under either name.
func TestRestoreBadFiles(t *testing.T) {
	m := newMemRepo()
	broken := m.file("broken", []byte("abcdefghij"), 3)
	m.failRead[broken.Content[2]] = blob.ErrCorrupt
	short := m.file("short", []byte("abc"), 3)
	short.Size = 4
	unindexed := m.file("unindexed", []byte("abc"), 3)
	delete(m.data, unindexed.Content[0])
	root := m.dir(broken, m.file("fine", []byte("fine"), 3), short, unindexed)
	dst := t.TempDir()
	st, err := newRestorer(t, m, func(o *Options) { o.JobSize = 3 }).Restore(context.Background(), root, "", dst)
	must(t, err)
	wantListing(t, dst, map[string]string{"fine": "file fine"})
	var paths []string
	for _, e := range st.Errors {
		paths = append(paths, e.Path)
	}
	if !slices.Equal(paths, []string{"broken", "short", "unindexed"}) || !errors.Is(st.Errors[0].Err, blob.ErrCorrupt) ||
		!errors.Is(st.Errors[1].Err, ErrSize) || !errors.Is(st.Errors[2].Err, repository.ErrNotIndexed) {
		t.Errorf("errors: %v", st.Errors)
	}
}

func TestRestorePath(t *testing.T) {
	m := newMemRepo()
	root := m.dir(m.dirNode("a", m.dirNode("b", m.file("c", []byte("c"), 1)), m.file("f", []byte("f"), 1)))
	r := newRestorer(t, m, nil)
	for _, c := range []struct {
		path string
		want map[string]string
	}{
		{"a/b", map[string]string{"c": "file c"}},
		{"a/f", map[string]string{"f": "file f"}},
		{"/a/", map[string]string{"b": "dir", "b/c": "file c", "f": "file f"}},
	} {
		dst := t.TempDir()
		if _, err := r.Restore(context.Background(), root, c.path, dst); err != nil {
			t.Errorf("%s: %v", c.path, err)
			continue
		}
		wantListing(t, dst, c.want)
	}
	for _, p := range []string{"a/missing", "a/f/x", "../a"} {
		if _, err := r.Restore(context.Background(), root, p, t.TempDir()); err == nil {
			t.Errorf("restoring %q succeeded", p)
		}
	}
}

// A cancelled restore stops with the context's error and leaves no
// temporary file.
func TestRestoreCancel(t *testing.T) {
	m := newMemRepo()
	var nodes []tree.Node
	for i := range 200 {
		nodes = append(nodes, m.file(fmt.Sprintf("f%03d", i), bytes.Repeat([]byte{byte(i)}, 5000), 1000))
	}
	root := m.dir(nodes...)
	ctx, cancel := context.WithCancel(context.Background())
	dst := t.TempDir()
	r := newRestorer(t, m, func(o *Options) {
		o.OnError = func(EntryError) {}
		o.LocateBatch = 10
		o.JobSize = 1000
	})
	cr := &cancelRepo{memRepo: m, after: 60, cancel: cancel}
	r.repo = cr
	_, err := r.Restore(ctx, root, "", dst)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if entries, _ := filepath.Glob(filepath.Join(dst, ".coffer-restore-*")); len(entries) > 0 {
		t.Errorf("temporary files left: %v", entries)
	}
	if n := len(listing(t, dst)); n == 0 || n == 200 {
		t.Errorf("%d files restored, want some", n)
	}
}

// cancelRepo cancels a context after some blob reads.
type cancelRepo struct {
	*memRepo
	mu     sync.Mutex
	after  int
	cancel func()
}

func (c *cancelRepo) ReadBlobs(ctx context.Context, t blob.Type, reqs []repository.BlobRequest, fn func(int, []byte, error) error) error {
	return c.memRepo.ReadBlobs(ctx, t, reqs, func(i int, b []byte, err error) error {
		c.mu.Lock()
		c.after--
		if c.after == 0 {
			c.cancel()
		}
		c.mu.Unlock()
		return fn(i, b, err)
	})
}

func TestNewRefusesUnknownPolicy(t *testing.T) {
	for _, o := range []Overwrite{OverwriteRename + 1, 9, 255} {
		if _, err := New(newMemRepo(), Options{Overwrite: o}); err == nil || !strings.Contains(err.Error(), "policy") {
			t.Errorf("%d: err = %v", o, err)
		}
	}
	for _, o := range []Overwrite{OverwriteAlways, OverwriteSkip, OverwriteIfNewer, OverwriteRename} {
		if _, err := New(newMemRepo(), Options{Overwrite: o}); err != nil {
			t.Errorf("%v: %v", o, err)
		}
		if p, err := ParseOverwrite(o.String()); p != o || err != nil {
			t.Errorf("ParseOverwrite(%q) = %v, %v", o.String(), p, err)
		}
	}
	if p, err := ParseOverwrite(""); p != OverwriteAlways || err != nil {
		t.Errorf("ParseOverwrite(\"\") = %v, %v", p, err)
	}
	if _, err := ParseOverwrite("never"); err == nil {
		t.Error("ParseOverwrite(\"never\") succeeded")
	}
}

// Extended attributes are set before the mode: a file or directory
// restored read-only keeps them even when the restore does not run as root
// (setting a user attribute needs write permission).
func TestRestoreReadOnlyXattrs(t *testing.T) {
	m := newMemRepo()
	xs := []tree.Xattr{{Name: "user.coffer", Value: []byte("ro")}}
	file := m.file("file", []byte("read-only"), 100)
	file.Mode, file.Xattrs = 0o400, xs
	dir := m.dirNode("dir")
	dir.Mode, dir.Xattrs = 0o500, xs
	root := m.dir(dir, file)
	dst := t.TempDir()
	st, err := newRestorer(t, m, nil).Restore(context.Background(), root, "", dst)
	must(t, err)
	if len(st.Errors) > 0 {
		t.Errorf("errors: %v", st.Errors)
	}
	for name, mode := range map[string]fs.FileMode{"dir": 0o500, "file": 0o400} {
		p := filepath.Join(dst, name)
		v := make([]byte, 16)
		if n, err := unix.Lgetxattr(p, "user.coffer", v); err != nil || string(v[:n]) != "ro" {
			t.Errorf("%s: xattr %q, %v", name, v[:max(n, 0)], err)
		}
		fi, err := os.Lstat(p)
		must(t, err)
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode().Perm(), mode)
		}
	}
}
