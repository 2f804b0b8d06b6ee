//go:build linux

package archiver

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
	"github.com/cofferhq/coffer/internal/engine/tree"
)

// rel is where the absolute path abs is in an ArchivePaths snapshot.
func rel(abs string) string { return strings.TrimPrefix(abs, "/") }

// ancestors returns the directories above abs, from the top: /a/b/c gives
// a, a/b (snapshot paths).
func ancestors(abs string) []string {
	var out []string
	for d := filepath.Dir(abs); d != "/"; d = filepath.Dir(d) {
		out = append(out, rel(d))
	}
	slices.Reverse(out)
	return out
}

// metaOf returns the metadata a node of the file at abs records (stat when
// follow, else lstat), without names, content or subtree.
func metaOf(t *testing.T, abs string, follow bool) tree.Node {
	t.Helper()
	var st unix.Stat_t
	if follow {
		must(t, unix.Stat(abs, &st))
	} else {
		must(t, unix.Lstat(abs, &st))
	}
	n := tree.Node{Name: filepath.Base(abs), Type: nodeType(st.Mode), Mode: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid,
		ModTime: time.Unix(st.Mtim.Unix()).UTC()}
	if n.Type == tree.File {
		n.Size = uint64(st.Size)
	}
	return n
}

// bare drops what metaOf does not give.
func bare(n tree.Node) tree.Node {
	n.User, n.Group, n.Content, n.Subtree, n.Xattrs, n.LinkTarget = "", "", nil, blob.ID{}, nil, ""
	return n
}

func setMtime(t *testing.T, p string, mtime time.Time) {
	t.Helper()
	ts := unix.NsecToTimespec(mtime.UnixNano())
	must(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW))
}

// backUpPaths backs paths up into a fresh repository, commits the snapshot
// and returns the repository, the snapshot id and the stats.
func backUpPaths(t *testing.T, paths []string, edit func(*Options)) (*repository.Repository, string, Stats) {
	t.Helper()
	ctx := context.Background()
	repo := repotest.New(t, repotest.Options{})
	o := DefaultOptions(repo.Codec())
	o.Chunker = repo.Config().ChunkerParams()
	if edit != nil {
		edit(&o)
	}
	a, err := New(o)
	must(t, err)
	w, err := repo.NewWriter(ctx, repository.WriterOptions{})
	must(t, err)
	defer w.Close()
	root, st, err := a.ArchivePaths(ctx, w, paths)
	if err != nil {
		t.Fatal(err)
	}
	id, err := w.Commit(ctx, &tree.Snapshot{Version: tree.SnapshotVersion, Time: time.Now().UTC(), Tree: root,
		Hostname: "test", Paths: paths})
	must(t, err)
	return repo, id, st
}

// checkFiles compares file trees (cmp.Diff is slow on large contents).
func checkFiles(t *testing.T, want, got repotest.Files) {
	t.Helper()
	names := func(f repotest.Files) []string {
		var out []string
		for p := range f {
			out = append(out, p)
		}
		slices.Sort(out)
		return out
	}
	if diff := cmp.Diff(names(want), names(got)); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	for p, b := range want {
		if c, ok := got[p]; ok && !bytes.Equal(b, c) {
			t.Errorf("%s: content of %d bytes, want %d", p, len(c), len(b))
		}
	}
}

// TestArchivePathsLayout backs up several absolute paths — directories, a
// file, a symlink — into a real repository and reads the snapshot back:
// one root mirroring the absolute layout, the directories on the way with
// their own metadata and only the entries on the way.
func TestArchivePathsLayout(t *testing.T) {
	base := t.TempDir()
	write(t, filepath.Join(base, "home/u/docs/a.txt"), []byte("docs a"), 0o644)
	write(t, filepath.Join(base, "home/u/docs/sub/b.bin"), randomBytes(300<<10, 4), 0o600)
	write(t, filepath.Join(base, "home/u/other/not-given.txt"), []byte("left out"), 0o644)
	write(t, filepath.Join(base, "home/top.txt"), []byte("left out too"), 0o644)
	write(t, filepath.Join(base, "etc/conf"), []byte("conf"), 0o640)
	must(t, os.MkdirAll(filepath.Join(base, "etc/empty"), 0o755))
	write(t, filepath.Join(base, "single.txt"), []byte("a single file"), 0o644)
	must(t, os.Symlink("etc", filepath.Join(base, "link")))
	must(t, unix.Mkfifo(filepath.Join(base, "fifo"), 0o600))
	must(t, os.Chmod(filepath.Join(base, "home"), 0o711))
	must(t, os.Chmod(filepath.Join(base, "home/u"), 0o750))
	setMtime(t, filepath.Join(base, "home"), time.Date(2020, 1, 2, 3, 4, 5, 6, time.UTC))
	setMtime(t, filepath.Join(base, "home/u"), time.Date(2021, 1, 2, 3, 4, 5, 7, time.UTC))

	paths := []string{filepath.Join(base, "home/u/docs"), filepath.Join(base, "etc"), filepath.Join(base, "single.txt"),
		filepath.Join(base, "link"), filepath.Join(base, "fifo")}
	repo, id, st := backUpPaths(t, paths, nil)
	if len(st.Errors) > 0 {
		t.Fatalf("errors: %v", st.Errors)
	}
	got := repotest.ReadFiles(t, repo, id)
	b := rel(base)
	want := repotest.Files{
		b + "/home/u/docs/a.txt":     []byte("docs a"),
		b + "/home/u/docs/sub/b.bin": randomBytes(300<<10, 4),
		b + "/etc/conf":              []byte("conf"),
		b + "/etc/empty/":            nil,
		b + "/single.txt":            []byte("a single file"),
	}
	checkFiles(t, want, got)

	snap, err := repo.LoadSnapshot(context.Background(), id)
	must(t, err)
	nodes := map[string]tree.Node{}
	must(t, repo.Walk(context.Background(), snap.Tree, func(p string, n *tree.Node) error {
		nodes[p] = *n
		return nil
	}))
	var wantPaths []string
	wantPaths = append(wantPaths, ancestors(filepath.Join(base, "x"))...)
	for _, p := range []string{"home", "home/u", "home/u/docs", "home/u/docs/a.txt", "home/u/docs/sub", "home/u/docs/sub/b.bin",
		"etc", "etc/conf", "etc/empty", "single.txt", "link", "fifo"} {
		wantPaths = append(wantPaths, b+"/"+p)
	}
	slices.Sort(wantPaths)
	var gotPaths []string
	for p := range nodes {
		gotPaths = append(gotPaths, p)
	}
	slices.Sort(gotPaths)
	if diff := cmp.Diff(wantPaths, gotPaths); diff != "" {
		t.Errorf("snapshot paths (-want +got):\n%s", diff)
	}
	// The directories on the way carry their own metadata; those above
	// the test's directory change as other tests run, so only their type
	// and mode are compared.
	for _, a := range append(ancestors(base), b, b+"/home", b+"/home/u") {
		want, got := metaOf(t, "/"+a, true), bare(nodes[a])
		if !strings.HasPrefix(a, b) {
			want.ModTime, got.ModTime = time.Time{}, time.Time{}
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s (-stat +stored):\n%s", a, diff)
		}
	}
	if n := nodes[b+"/link"]; n.Type != tree.Symlink || n.LinkTarget != "etc" {
		t.Errorf("link stored as %v → %q, want a symlink to etc", n.Type, n.LinkTarget)
	}
	if n := nodes[b+"/fifo"]; n.Type != tree.Fifo {
		t.Errorf("fifo stored as %v", n.Type)
	}
	if st.Files != 4 || st.Symlinks != 1 || st.Others != 1 || st.Dirs != uint64(len(ancestors(base))+1+6) {
		t.Errorf("stats %+v", st.SnapshotStats)
	}
}

// Duplicate paths, paths inside others and unclean spellings are stored
// once, as the outer paths alone would be.
func TestArchivePathsNested(t *testing.T) {
	base := t.TempDir()
	write(t, filepath.Join(base, "a/b/c.txt"), []byte("c"), 0o644)
	write(t, filepath.Join(base, "a/d.txt"), []byte("d"), 0o644)
	write(t, filepath.Join(base, "e/f.txt"), []byte("f"), 0o644)
	write(t, filepath.Join(base, "e f/g.txt"), []byte("g"), 0o644)
	s := newMemSaver(t)
	a := newArchiver(t, s, nil)
	ctx := context.Background()
	want, st, err := a.ArchivePaths(ctx, s, []string{filepath.Join(base, "a"), filepath.Join(base, "e"), filepath.Join(base, "e f")})
	must(t, err)
	if len(st.Errors) > 0 {
		t.Fatal(st.Errors)
	}
	// The base directory's tree, not the root's: the root records the
	// ancestors' metadata too, and the temporary directory's parent
	// changes whenever another test creates a file in it.
	baseTree := func(root blob.ID) blob.ID { return s.walk(t, root)[rel(base)].Subtree }
	if baseTree(want).IsZero() {
		t.Fatalf("no tree for %s in the snapshot", base)
	}
	// As another test would, between the backups.
	later := time.Now().Add(time.Hour)
	must(t, os.Chtimes(filepath.Dir(base), later, later))
	for _, paths := range [][]string{
		{base + "/e f/", base + "/a/b", base + "/e/f.txt", base + "/a", base + "//e", base + "/a/../a", base + "/e", base + "/e f"},
		{base + "/e/./", base + "/a/b/c.txt", base + "/e f/g.txt", base + "/a/", base + "/e f"},
	} {
		got, st2, err := a.ArchivePaths(ctx, s, paths)
		must(t, err)
		if baseTree(got) != baseTree(want) || st2.Files != st.Files || st2.Dirs != st.Dirs {
			t.Errorf("%q: %s holds %s with %d files and %d dirs, want %s with %d and %d",
				paths, base, baseTree(got).Short(), st2.Files, st2.Dirs, baseTree(want).Short(), st.Files, st.Dirs)
		}
	}
	nodes := s.walk(t, want)
	for _, p := range []string{"a/b/c.txt", "a/d.txt", "e/f.txt", "e f/g.txt"} {
		if _, ok := nodes[rel(base)+"/"+p]; !ok {
			t.Errorf("%s not stored", p)
		}
	}
}

// A symlink on the way to a given path is followed: the directory it
// points to is recorded under the link's name.
func TestArchivePathsFollowsLinksOnTheWay(t *testing.T) {
	base := t.TempDir()
	write(t, filepath.Join(base, "real/x.txt"), []byte("x"), 0o644)
	must(t, os.Symlink("real", filepath.Join(base, "via")))
	s := newMemSaver(t)
	root, st, err := newArchiver(t, s, nil).ArchivePaths(context.Background(), s, []string{filepath.Join(base, "via/x.txt")})
	must(t, err)
	if len(st.Errors) > 0 {
		t.Fatal(st.Errors)
	}
	nodes := s.walk(t, root)
	via := nodes[rel(base)+"/via"]
	want := metaOf(t, filepath.Join(base, "real"), true)
	want.Name = "via"
	if diff := cmp.Diff(want, bare(via)); diff != "" {
		t.Errorf("via (-target's stat +stored):\n%s", diff)
	}
	if x := nodes[rel(base)+"/via/x.txt"]; string(s.content(t, x)) != "x" {
		t.Errorf("via/x.txt stored as %q", s.content(t, x))
	}
}

// Paths that do not exist, or have a file on their way, are reported and
// the others stored; a directory on the way to nothing stored is left out.
// When no path can be stored, the backup fails.
func TestArchivePathsMissing(t *testing.T) {
	base := t.TempDir()
	write(t, filepath.Join(base, "here/x.txt"), []byte("x"), 0o644)
	write(t, filepath.Join(base, "file"), []byte("a file"), 0o644)
	must(t, os.Mkdir(filepath.Join(base, "empty-way"), 0o755))
	s := newMemSaver(t)
	a := newArchiver(t, s, nil)
	missing := []string{filepath.Join(base, "missing"), filepath.Join(base, "file/below"),
		filepath.Join(base, "nodir/deeper/x"), filepath.Join(base, "empty-way/gone")}
	var reported []FileError
	a.opts.OnError = func(e FileError) { reported = append(reported, e) }
	root, st, err := a.ArchivePaths(context.Background(), s, append([]string{filepath.Join(base, "here")}, missing...))
	must(t, err)
	got := map[string]error{}
	for _, e := range st.Errors {
		got[e.Path] = e.Err
	}
	for _, p := range missing {
		if got[p] == nil {
			t.Errorf("%s: not reported", p)
		}
	}
	for _, p := range []string{filepath.Join(base, "missing"), filepath.Join(base, "nodir/deeper/x"), filepath.Join(base, "empty-way/gone")} {
		if !errors.Is(got[p], fs.ErrNotExist) {
			t.Errorf("%s: %v, want a does-not-exist error", p, got[p])
		}
	}
	if e := got[filepath.Join(base, "file/below")]; e == nil || !strings.Contains(e.Error(), "not a directory") {
		t.Errorf("file/below: %v, want a not-a-directory error", e)
	}
	if len(st.Errors) != len(missing) || len(reported) != len(missing) {
		t.Errorf("errors: %v (OnError got %d)", st.Errors, len(reported))
	}
	var stored []string
	for p := range s.walk(t, root) {
		if strings.HasPrefix(p, rel(base)+"/") {
			stored = append(stored, strings.TrimPrefix(p, rel(base)+"/"))
		}
	}
	slices.Sort(stored)
	if want := []string{"here", "here/x.txt"}; !slices.Equal(stored, want) {
		t.Errorf("stored %q, want %q", stored, want)
	}

	_, st, err = a.ArchivePaths(context.Background(), s, missing)
	if err == nil || !strings.Contains(err.Error(), "none of the paths") || len(st.Errors) != len(missing) {
		t.Errorf("all missing: err %v, errors %v", err, st.Errors)
	}
}

func TestArchivePathsRejects(t *testing.T) {
	s := newMemSaver(t)
	a := newArchiver(t, s, nil)
	for _, paths := range [][]string{nil, {"relative/path"}, {"/ok", "./x"}, {"/nul\x00byte"}} {
		if _, _, err := a.ArchivePaths(context.Background(), s, paths); err == nil {
			t.Errorf("%q: accepted", paths)
		}
	}
}

func TestPlanPaths(t *testing.T) {
	// dump lists the plan's given paths and the way directories (ending
	// in "/") in order.
	var dump func(p string, n *pathNode, out *[]string)
	dump = func(p string, n *pathNode, out *[]string) {
		switch {
		case n.given:
			*out = append(*out, p)
		case p != "":
			*out = append(*out, p+"/")
		}
		for _, c := range n.children {
			dump(p+"/"+c.name, c, out)
		}
	}
	for _, c := range []struct {
		paths []string
		want  []string
	}{
		{[]string{"/etc", "/home/u/docs"}, []string{"/etc", "/home/", "/home/u/", "/home/u/docs"}},
		{[]string{"/a/b", "/a", "/a/b/c", "/ab", "/a b"}, []string{"/a", "/a b", "/ab"}},
		{[]string{"/x/", "/x/.", "//x//"}, []string{"/x"}},
		{[]string{"/etc", "/", "/home"}, nil},
	} {
		root, err := planPaths(c.paths)
		must(t, err)
		var got []string
		dump("", root, &got)
		if c.want == nil {
			if !root.given || len(root.children) > 0 {
				t.Errorf("%q: root not given alone: %q", c.paths, got)
			}
			continue
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%q: planned %q, want %q", c.paths, got, c.want)
		}
	}
}

// envSearchOnly names the directory TestArchivePathsSearchOnly prepared,
// for the copy of the test that runs as an unprivileged user.
const envSearchOnly = "COFFER_TEST_ARCHIVER_SEARCH_ONLY"

// A directory on the way that may be searched but not read (mode 711) is
// still passed through. Root reads everything, so as root the test runs
// again as nobody, from a copy of the test binary that nobody can run.
func TestArchivePathsSearchOnly(t *testing.T) {
	base := os.Getenv(envSearchOnly)
	if base == "" {
		base = t.TempDir()
		write(t, filepath.Join(base, "locked/open/f"), []byte("reachable"), 0o644)
		must(t, os.Chmod(filepath.Join(base, "locked"), 0o711))
		must(t, os.Chmod(base, 0o755))
		must(t, os.Chmod(filepath.Dir(base), 0o755)) // the test's, made by TempDir
		if os.Geteuid() == 0 {
			reexecAsNobody(t, base, "^TestArchivePathsSearchOnly$")
			return
		}
	}
	s := newMemSaver(t)
	root, st, err := newArchiver(t, s, nil).ArchivePaths(context.Background(), s, []string{filepath.Join(base, "locked/open")})
	must(t, err)
	if len(st.Errors) > 0 {
		t.Fatal(st.Errors)
	}
	nodes := s.walk(t, root)
	if n := nodes[rel(base)+"/locked"]; n.Type != tree.Dir || n.Mode != 0o711 {
		t.Errorf("locked stored as %v mode %#o", n.Type, n.Mode)
	}
	if n := nodes[rel(base)+"/locked/open/f"]; string(s.content(t, n)) != "reachable" {
		t.Errorf("locked/open/f stored as %q", s.content(t, n))
	}
}

// reexecAsNobody runs the tests matching run of a copy of this test binary
// as the user nobody, with envSearchOnly set to dir (which nobody must be
// able to reach), and fails if they fail.
func reexecAsNobody(t *testing.T, dir, run string) {
	t.Helper()
	self, err := os.Executable()
	must(t, err)
	b, err := os.ReadFile(self)
	must(t, err)
	bin := filepath.Join(dir, "archiver.test")
	must(t, os.WriteFile(bin, b, 0o755))
	cmd := exec.Command(bin, "-test.run", run, "-test.v")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), envSearchOnly+"="+dir, "TMPDIR="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the test as nobody: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "--- PASS: ") {
		t.Fatalf("the test as nobody did not run:\n%s", out)
	}
}
