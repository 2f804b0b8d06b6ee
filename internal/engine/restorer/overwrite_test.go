package restorer

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/internal/engine/tree"
)

// Every policy against every kind of entry in the way: files older, newer
// and as old as the backup's, a directory where a file goes and the
// reverse, directories merged into, symlinks, fifos, hard links (the
// first of a group in the way, or the second), and names already taken
// for renaming.
func TestOverwritePolicies(t *testing.T) {
	old, young := mtime.Add(-48*time.Hour), mtime.Add(48*time.Hour)
	h := newHashRepo(t)
	hard := func(name, content string, inode uint64) tree.Node {
		n := h.file(name, content, 4)
		n.Links, n.Inode, n.DeviceID = 2, inode, 1
		return n
	}
	newerFile := h.file("newer", "backup newer", 4)
	root := h.dir(
		h.file("blocker", "blk", 4),
		h.dirNode("dir", 0o750, mtime, h.file("add", "add", 4), h.file("f", "new dir/f", 4)),
		h.file("f", "new f", 4),
		h.file("fresh", "fresh", 4),
		h.file("g", "new g", 4),
		hard("h1", "linked", 1),
		hard("h2", "linked", 1),
		hard("k1", "klink", 2),
		hard("k2", "klink", 2),
		tree.Node{Name: "link", Type: tree.Symlink, ModTime: mtime, LinkTarget: "new-target"},
		newerFile,
		tree.Node{Name: "pipe", Type: tree.Fifo, Mode: 0o600, ModTime: mtime},
		h.file("same", "backup same", 4),
		h.dirNode("wasfile", 0o750, mtime, h.file("in", "in", 4)),
	)
	// What each policy does with what is there: path → listing, "" for
	// nothing there.
	existing := map[string]string{
		"blocker": "dir", "dir": "dir", "dir/f": "file old dir/f", "dir/mine": "file mine",
		"f": "file old f", "f.restored-1": "file taken", "g": "file old g", "g.restored-2": "file taken",
		"h2": "file old h2", "k1": "file mine k1", "link": "link old-target", "newer": "file mine newer",
		"pipe": "file was", "same": "file mine same", "wasfile": "file was",
	}
	times := map[string]time.Time{"newer": young, "same": mtime, "h2": young, "k1": young}
	common := map[string]string{"dir/add": "file add", "dir/mine": "file mine", "fresh": "file fresh",
		"f.restored-1": "file taken", "g.restored-2": "file taken", "blocker": "dir", "dir": "dir"}
	cases := []struct {
		policy  Overwrite
		want    map[string]string
		kept    uint64
		renamed uint64
		errs    []string // paths reported with ErrExistsAsDir
		linked  [][2]string
	}{
		{OverwriteAlways, merge(common, map[string]string{
			"dir/f": "file new dir/f", "f": "file new f", "g": "file new g", "h1": "file linked", "h2": "file linked",
			"k1": "file klink", "k2": "file klink", "link": "link new-target", "newer": "file backup newer", "pipe": "fifo",
			"same": "file backup same", "wasfile": "dir", "wasfile/in": "file in",
		}), 0, 0, []string{"blocker"}, [][2]string{{"h1", "h2"}, {"k1", "k2"}}},
		{OverwriteSkip, merge(common, map[string]string{
			"dir/f": "file old dir/f", "f": "file old f", "g": "file old g", "h1": "file linked", "h2": "file old h2",
			"k1": "file mine k1", "k2": "file klink", "link": "link old-target", "newer": "file mine newer", "pipe": "file was",
			"same": "file mine same", "wasfile": "file was",
		}), 11, 0, nil, nil},
		{OverwriteIfNewer, merge(common, map[string]string{
			"dir/f": "file new dir/f", "f": "file new f", "g": "file new g", "h1": "file linked", "h2": "file old h2",
			"k1": "file mine k1", "k2": "file klink", "link": "link new-target", "newer": "file mine newer", "pipe": "fifo",
			"same": "file mine same", "wasfile": "dir", "wasfile/in": "file in",
		}), 4, 0, []string{"blocker"}, nil},
		{OverwriteRename, merge(common, map[string]string{
			"blocker.restored-1": "file blk", "dir/f": "file old dir/f", "dir/f.restored-1": "file new dir/f",
			"f": "file old f", "f.restored-2": "file new f", "g": "file old g", "g.restored-1": "file new g",
			"h1": "file linked", "h2": "file old h2", "h2.restored-1": "file linked",
			"k1": "file mine k1", "k1.restored-1": "file klink", "k2": "file klink",
			"link": "link old-target", "link.restored-1": "link new-target",
			"newer": "file mine newer", "newer.restored-1": "file backup newer", "pipe": "file was", "pipe.restored-1": "fifo",
			"same": "file mine same", "same.restored-1": "file backup same",
			"wasfile": "file was", "wasfile.restored-1": "dir", "wasfile.restored-1/in": "file in",
		}), 0, 11, nil, [][2]string{{"h1", "h2.restored-1"}, {"k1.restored-1", "k2"}}},
	}
	for _, c := range cases {
		t.Run(c.policy.String(), func(t *testing.T) {
			dst := t.TempDir()
			makeEntries(t, dst, existing, old)
			for p, ts := range times {
				setTimes(t, filepath.Join(dst, p), ts)
			}
			st, err := newRestorer(t, h, func(o *Options) { o.Overwrite = c.policy }).Restore(context.Background(), root, "", dst)
			must(t, err)
			wantListing(t, dst, c.want)
			var errs []string
			for _, e := range st.Errors {
				if !errors.Is(e.Err, ErrExistsAsDir) {
					t.Errorf("unexpected error: %v", e)
				}
				errs = append(errs, e.Path)
			}
			if strings.Join(errs, ",") != strings.Join(c.errs, ",") {
				t.Errorf("errors: %v, want ErrExistsAsDir for %v", st.Errors, c.errs)
			}
			if st.Kept != c.kept || st.Renamed != c.renamed {
				t.Errorf("kept %d, renamed %d; want %d, %d", st.Kept, st.Renamed, c.kept, c.renamed)
			}
			for _, l := range c.linked {
				var a, b unix.Stat_t
				must(t, unix.Lstat(filepath.Join(dst, l[0]), &a))
				must(t, unix.Lstat(filepath.Join(dst, l[1]), &b))
				if a.Ino != b.Ino {
					t.Errorf("%s and %s are not linked", l[0], l[1])
				}
			}
			// Whatever was restored has the backup's time; whatever
			// was kept, its own.
			for p, w := range c.want {
				if existing[p] == w && !strings.HasPrefix(w, "dir") {
					wantMtime(t, dst, p, orDefault(times, p, old))
				} else if !strings.HasPrefix(w, "dir") && p != "dir/mine" {
					wantMtime(t, dst, p, mtime)
				}
			}
		})
	}
}

// Merged directories get the backup's metadata under OverwriteAlways
// only; new ones always.
func TestOverwriteMergedDirectoryMetadata(t *testing.T) {
	h := newHashRepo(t)
	root := h.dir(h.dirNode("dir", 0o750, mtime, h.file("f", "f", 4)), h.dirNode("new", 0o705, mtime))
	for _, policy := range policies {
		t.Run(policy.String(), func(t *testing.T) {
			dst := t.TempDir()
			must(t, os.Mkdir(filepath.Join(dst, "dir"), 0o777))
			must(t, os.Chmod(filepath.Join(dst, "dir"), 0o777))
			_, err := newRestorer(t, h, func(o *Options) { o.Overwrite = policy }).Restore(context.Background(), root, "", dst)
			must(t, err)
			wantMode(t, dst, "new", 0o705)
			wantMtime(t, dst, "new", mtime)
			if policy == OverwriteAlways {
				wantMode(t, dst, "dir", 0o750)
				wantMtime(t, dst, "dir", mtime)
			} else {
				wantMode(t, dst, "dir", 0o777)
			}
		})
	}
}

// Renaming takes the smallest free number, again on each restore.
func TestOverwriteRenameNumbering(t *testing.T) {
	h := newHashRepo(t)
	root := h.dir(h.dirNode("d", 0o755, mtime, h.file("x", "x", 4)), h.file("f", "f", 4))
	dst := t.TempDir()
	makeEntries(t, dst, map[string]string{"d": "file d", "f": "file mine", "f.restored-2": "file two", "d.restored-1": "dir"}, mtime)
	r := newRestorer(t, h, func(o *Options) { o.Overwrite = OverwriteRename })
	for range 2 {
		st, err := r.Restore(context.Background(), root, "", dst)
		must(t, err)
		if len(st.Errors) > 0 || st.Renamed != 2 {
			t.Errorf("renamed %d, errors %v", st.Renamed, st.Errors)
		}
	}
	wantListing(t, dst, map[string]string{
		"d": "file d", "d.restored-1": "dir", "d.restored-2": "dir", "d.restored-2/x": "file x", "d.restored-3": "dir", "d.restored-3/x": "file x",
		"f": "file mine", "f.restored-1": "file f", "f.restored-2": "file two", "f.restored-3": "file f",
	})
}

// makeEntries creates entries described as in listing ("dir", "file
// CONTENT", "link TARGET") below dst, with modification time ts.
func makeEntries(t *testing.T, dst string, entries map[string]string, ts time.Time) {
	t.Helper()
	for p, desc := range entries {
		full := filepath.Join(dst, p)
		must(t, os.MkdirAll(filepath.Dir(full), 0o755))
		kind, arg, _ := strings.Cut(desc, " ")
		switch kind {
		case "dir":
			must(t, os.MkdirAll(full, 0o755))
		case "file":
			must(t, os.WriteFile(full, []byte(arg), 0o644))
		case "link":
			must(t, os.Symlink(arg, full))
		default:
			t.Fatalf("bad entry %q", desc)
		}
	}
	for p := range entries {
		setTimes(t, filepath.Join(dst, p), ts)
	}
}

func orDefault(m map[string]time.Time, k string, def time.Time) time.Time {
	if v, ok := m[k]; ok {
		return v
	}
	return def
}

func wantMtime(t *testing.T, dst, p string, want time.Time) {
	t.Helper()
	fi, err := os.Lstat(filepath.Join(dst, p))
	if err != nil {
		t.Error(err)
		return
	}
	if !fi.ModTime().Equal(want) {
		t.Errorf("%s: modified %v, want %v", p, fi.ModTime(), want)
	}
}

func wantMode(t *testing.T, dst, p string, want os.FileMode) {
	t.Helper()
	fi, err := os.Lstat(filepath.Join(dst, p))
	if err != nil {
		t.Error(err)
		return
	}
	if fi.Mode().Perm() != want {
		t.Errorf("%s: mode %v, want %v", p, fi.Mode().Perm(), want)
	}
}
