package restorer

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
)

// pathsSnapshot is a snapshot of absolute paths, as the archiver makes
// them: directories on the way with their own modes and times.
func pathsSnapshot(t *testing.T) (*hashRepo, blob.ID) {
	h := newHashRepo(t)
	t1, t2, t3 := mtime.Add(-time.Hour), mtime.Add(-2*time.Hour), mtime.Add(-3*time.Hour)
	root := h.dir(
		h.dirNode("etc", 0o751, t1, h.file("hosts", "hosts", 4), h.file("passwd", "passwd", 4)),
		h.dirNode("home", 0o711, t2,
			h.dirNode("u", 0o700, t3,
				h.dirNode("docs", 0o750, mtime, h.file("a.txt", "a", 4), h.dirNode("sub", 0o755, mtime, h.file("b.txt", "b", 4))),
				h.file("other.txt", "other", 4)),
			h.dirNode("v", 0o755, mtime, h.file("x", "x", 4))),
		h.file("top.txt", "top", 4),
		h.dirNode("var", 0o755, mtime, h.file("log", "log", 4)),
	)
	return h, root
}

var everything = map[string]string{
	"etc": "dir", "etc/hosts": "file hosts", "etc/passwd": "file passwd",
	"home": "dir", "home/u": "dir", "home/u/docs": "dir", "home/u/docs/a.txt": "file a", "home/u/docs/sub": "dir",
	"home/u/docs/sub/b.txt": "file b", "home/u/other.txt": "file other", "home/v": "dir", "home/v/x": "file x",
	"top.txt": "file top", "var": "dir", "var/log": "file log",
}

// Paths keep their place in the tree, below directories made with the
// recorded metadata; overlapping and repeated paths are restored once.
func TestRestorePathsLayout(t *testing.T) {
	h, root := pathsSnapshot(t)
	docs := map[string]string{"home": "dir", "home/u": "dir", "home/u/docs": "dir", "home/u/docs/a.txt": "file a",
		"home/u/docs/sub": "dir", "home/u/docs/sub/b.txt": "file b"}
	u := merge(docs, map[string]string{"home/u/other.txt": "file other"})
	cases := []struct {
		name        string
		paths       []string
		want        map[string]string
		files, dirs uint64
	}{
		{"several", []string{"/home/u/docs", "etc/hosts", "top.txt"}, merge(docs, map[string]string{"etc": "dir", "etc/hosts": "file hosts", "top.txt": "file top"}), 4, 5},
		{"inside another", []string{"home/u/docs/sub", "home/u", "home/u/docs/a.txt"}, u, 3, 4},
		{"another inside", []string{"home/u", "home/u/docs/sub/b.txt"}, u, 3, 4},
		{"repeated and unclean", []string{"home//u/./docs/", "/home/u/docs", "home/u/docs/sub"}, docs, 2, 4},
		{"a file", []string{"etc/hosts"}, map[string]string{"etc": "dir", "etc/hosts": "file hosts"}, 1, 1},
		{"no paths", nil, everything, 8, 7},
		{"the root", []string{"home/u", "/"}, everything, 8, 7},
		{"dot", []string{"."}, everything, 8, 7},
		{"empty", []string{""}, everything, 8, 7},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dst := t.TempDir()
			st, err := newRestorer(t, h, nil).RestorePaths(context.Background(), root, c.paths, dst)
			must(t, err)
			if len(st.Errors) > 0 {
				t.Errorf("errors: %v", st.Errors)
			}
			wantListing(t, dst, c.want)
			if st.Files != c.files || st.Dirs != c.dirs {
				t.Errorf("%d files, %d dirs; want %d, %d", st.Files, st.Dirs, c.files, c.dirs)
			}
			for p, m := range map[string]os.FileMode{"etc": 0o751, "home": 0o711, "home/u": 0o700, "home/u/docs": 0o750} {
				if _, ok := c.want[p]; ok {
					wantMode(t, dst, p, m)
				}
			}
			for p, ts := range map[string]time.Time{"etc": mtime.Add(-time.Hour), "home": mtime.Add(-2 * time.Hour), "home/u": mtime.Add(-3 * time.Hour), "home/u/docs": mtime} {
				if _, ok := c.want[p]; ok {
					wantMtime(t, dst, p, ts)
				}
			}
		})
	}
}

// Paths that are not in the snapshot, or that climb with "..", are
// errors naming them, returned before anything is written.
func TestRestorePathsRefused(t *testing.T) {
	h, root := pathsSnapshot(t)
	r := newRestorer(t, h, nil)
	cases := []struct {
		paths []string
		err   error
		named string
	}{
		{[]string{"etc/hosts", "home/u/missing"}, ErrNotInSnapshot, "home/u/missing"},
		{[]string{"nothing"}, ErrNotInSnapshot, "nothing"},
		{[]string{"etc/hosts/x"}, ErrNotInSnapshot, "etc/hosts/x"},
		{[]string{"home/u", "home/u/docs/gone"}, ErrNotInSnapshot, "home/u/docs/gone"},
		{[]string{"etc", "home/../etc"}, ErrBadPath, "home/../etc"},
		{[]string{"../x"}, ErrBadPath, "../x"},
		{[]string{"/.."}, ErrBadPath, "/.."},
		{[]string{"a/.."}, ErrBadPath, "a/.."},
	}
	for _, c := range cases {
		dst := filepath.Join(t.TempDir(), "dst")
		_, err := r.RestorePaths(context.Background(), root, c.paths, dst)
		if !errors.Is(err, c.err) || !strings.Contains(err.Error(), c.named) {
			t.Errorf("%q: %v, want %v naming %s", c.paths, err, c.err, c.named)
		}
		if _, serr := os.Lstat(dst); !errors.Is(serr, os.ErrNotExist) {
			t.Errorf("%q: the destination was created", c.paths)
		}
		if len(c.paths) == 1 {
			if _, err := r.Restore(context.Background(), root, c.paths[0], dst); !errors.Is(err, c.err) {
				t.Errorf("Restore(%q): %v, want %v", c.paths[0], err, c.err)
			}
		}
	}
}

// Restore and RestorePaths work on a real repository's snapshot.
func TestRestorePathsRepository(t *testing.T) {
	repo := repotest.New(t, repotest.Options{})
	big := repotest.Random(1, 600<<10) // several chunks
	_, root := repotest.WriteSnapshot(t, repo, repotest.Files{
		"home/u/docs/big": big, "home/u/docs/small": []byte("small"), "home/u/skip": []byte("skip"),
		"etc/hosts": []byte("hosts"), "etc/empty/": nil,
	})
	r := newRestorer(t, repo, nil)
	dst := t.TempDir()
	st, err := r.RestorePaths(context.Background(), root, []string{"/home/u/docs", "etc"}, dst)
	must(t, err)
	if len(st.Errors) > 0 || st.Bytes != uint64(len(big)+5+5) {
		t.Errorf("%d bytes, errors %v", st.Bytes, st.Errors)
	}
	wantListing(t, dst, map[string]string{"home": "dir", "home/u": "dir", "home/u/docs": "dir",
		"home/u/docs/big": "file " + string(big), "home/u/docs/small": "file small",
		"etc": "dir", "etc/hosts": "file hosts", "etc/empty": "dir"})
	dst = t.TempDir()
	_, err = r.Restore(context.Background(), root, "home/u", dst)
	must(t, err)
	wantListing(t, dst, map[string]string{"docs": "dir", "docs/big": "file " + string(big), "docs/small": "file small", "skip": "file skip"})
}

// Progress counts as the restore goes and can be read meanwhile.
func TestProgress(t *testing.T) {
	h, root := pathsSnapshot(t)
	bad := h.file("bad", "corrupt me", 100)
	h.blobs[bad.Content[0]] = []byte("damaged")
	root2 := h.dir(bad, h.dirNode("tree", 0o755, mtime, h.dirs[root]...))
	var p Progress
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // polls, for the race detector
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				_ = p.CurrentPath()
				_ = p.Bytes.Load()
			}
		}
	}()
	r := newRestorer(t, h, func(o *Options) { o.Progress = &p })
	st, err := r.Restore(context.Background(), root2, "", t.TempDir())
	close(stop)
	wg.Wait()
	must(t, err)
	if p.Files.Load() != st.Files || p.Dirs.Load() != st.Dirs || p.Bytes.Load() != st.Bytes || p.Errors.Load() != uint64(len(st.Errors)) ||
		st.Files != 8 || len(st.Errors) != 1 {
		t.Errorf("progress: %d files, %d dirs, %d bytes, %d errors; stats %+v",
			p.Files.Load(), p.Dirs.Load(), p.Bytes.Load(), p.Errors.Load(), st)
	}
	if cur := p.CurrentPath(); !strings.HasPrefix(cur, "tree") {
		t.Errorf("current path %q", cur)
	}
	if (&Progress{}).CurrentPath() != "" {
		t.Error("a new Progress has a current path")
	}
}
