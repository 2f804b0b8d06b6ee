package restorer

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/tree"
)

// hashRepo is a Repository as an untrusting caller implements it: blobs
// are served from a map and re-hashed with the repository's id key before
// being delivered, so a damaged one is an error, never content. Its trees
// are the nodes the test crafts, unencoded, so names no tree decoder would
// let through reach the restorer.
type hashRepo struct {
	codec *blob.Codec
	mu    sync.Mutex
	next  uint64
	dirs  map[blob.ID][]tree.Node
	blobs map[blob.ID][]byte
	// lengths overrides the length Locate reports for a blob.
	lengths map[blob.ID]uint32
	// beforeRead, beforeLoad, when set, run before each ReadBlobs call
	// and each LoadDir of a directory (they may block).
	beforeRead func(ctx context.Context)
	beforeLoad func(ctx context.Context, id blob.ID)
}

func newHashRepo(t *testing.T) *hashRepo {
	t.Helper()
	var k [32]byte
	rand.Read(k[:])
	c, err := blob.NewCodec(blob.Keys{IDKey: k})
	must(t, err)
	t.Cleanup(c.Close)
	return &hashRepo{codec: c, dirs: map[blob.ID][]tree.Node{}, blobs: map[blob.ID][]byte{}, lengths: map[blob.ID]uint32{}}
}

// dir stores nodes (sorted as given) as a directory and returns its id.
func (h *hashRepo) dir(nodes ...tree.Node) blob.ID {
	h.next++
	var id blob.ID
	binary.BigEndian.PutUint64(id[24:], h.next)
	h.dirs[id] = nodes
	return id
}

func (h *hashRepo) dirNode(name string, mode uint32, mtime time.Time, nodes ...tree.Node) tree.Node {
	return tree.Node{Name: name, Type: tree.Dir, Mode: mode, ModTime: mtime, Subtree: h.dir(nodes...)}
}

// file returns a file node whose content is stored in blobs of chunk bytes.
func (h *hashRepo) file(name, content string, chunk int) tree.Node {
	n := tree.Node{Name: name, Type: tree.File, Mode: 0o644, ModTime: mtime, Size: uint64(len(content))}
	for b := []byte(content); len(b) > 0; {
		c := b[:min(chunk, len(b))]
		b = b[len(c):]
		id := h.codec.ID(c)
		h.blobs[id] = bytes.Clone(c)
		n.Content = append(n.Content, id)
	}
	return n
}

func (h *hashRepo) LoadDir(ctx context.Context, id blob.ID) ([]tree.Node, error) {
	if h.beforeLoad != nil {
		h.beforeLoad(ctx, id)
	}
	nodes, ok := h.dirs[id]
	if !ok {
		return nil, fmt.Errorf("tree %s: %w", id.Short(), repository.ErrNotIndexed)
	}
	return nodes, nil
}

func (h *hashRepo) Locate(ctx context.Context, ids []blob.ID) (map[blob.ID]repository.Location, error) {
	out := map[blob.ID]repository.Location{}
	for _, id := range ids {
		if b, ok := h.blobs[id]; ok {
			n, ok := h.lengths[id]
			if !ok {
				n = uint32(len(b))
			}
			out[id] = repository.Location{Type: blob.Data, RawLength: n}
		}
	}
	return out, nil
}

func (h *hashRepo) ReadBlobs(ctx context.Context, t blob.Type, reqs []repository.BlobRequest, fn func(int, []byte, error) error) error {
	if h.beforeRead != nil {
		h.beforeRead(ctx)
	}
	for i, req := range reqs {
		if err := ctx.Err(); err != nil {
			return err
		}
		b := h.blobs[req.ID]
		var err error
		if h.codec.ID(b) != req.ID {
			b, err = nil, fmt.Errorf("blob %s: %w: content does not hash to its id", req.ID.Short(), blob.ErrCorrupt)
		}
		if err := fn(i, b, err); err != nil {
			return err
		}
	}
	return nil
}

var policies = []Overwrite{OverwriteAlways, OverwriteSkip, OverwriteIfNewer, OverwriteRename}

// snapshotFS records every entry below root with its type, mode, size,
// modification time and content or target, to tell that nothing changed.
func snapshotFS(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	must(t, filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		desc := fmt.Sprintf("%v %d %v", fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			desc += " -> " + target
		case fi.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			desc += " " + string(b)
		}
		out[p] = desc
		return nil
	}))
	return out
}

func sameFS(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	for p, b := range before {
		if after[p] != b {
			t.Errorf("%s: %s changed: %q, was %q", what, p, after[p], b)
		}
	}
	for p, a := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s: %s appeared: %q", what, p, a)
		}
	}
}

// Entries whose names could lead outside their directory — of every type,
// at the top and deeper, on the way to a path asked for — are reported as
// ErrUnsafeName and never written, under every overwrite policy; nothing
// appears or changes beside the destination.
func TestNeverWritesOutsideDestination(t *testing.T) {
	bad := []string{"..", ".", "a/b", "/etc/x", "", "nul\x00byte", "../escape", "a/../../b"}
	h := newHashRepo(t)
	var top, inner []tree.Node
	for _, name := range bad {
		hard := h.file(name, "hard link", 4)
		hard.Links, hard.Inode, hard.DeviceID = 2, 1, 1
		top = append(top, h.file(name, "outside!", 3), hard)
		inner = append(inner,
			h.dirNode(name, 0o777, mtime, h.file("passwd", "outside!", 3), h.file("x", "outside!", 3)),
			tree.Node{Name: name, Type: tree.Symlink, ModTime: mtime, LinkTarget: "/etc/passwd"},
			tree.Node{Name: name, Type: tree.Fifo, Mode: 0o666, ModTime: mtime},
		)
	}
	// The first of a hard link group is the unsafe one: the safe one
	// becomes a file of its own.
	safeLink := h.file("link", "hard link", 4)
	safeLink.Links, safeLink.Inode, safeLink.DeviceID = 2, 1, 1
	top = append(top, h.file("ok", "inside", 4), h.dirNode("sub", 0o755, mtime, append(inner, safeLink)...))
	root := h.dir(top...)
	// A path asked for may lead through a directory with an unsafe name.
	unsafeAncestor := h.dirNode("nul\x00byte", 0o755, mtime, h.file("f", "outside!", 3))
	pathsRoot := h.dir(unsafeAncestor, h.file("ok", "inside", 4))

	want := map[string]string{"ok": "file inside", "sub": "dir", "sub/link": "file hard link"}
	wantUnsafe := 2*len(bad) + 3*len(bad)
	for _, policy := range policies {
		t.Run(policy.String(), func(t *testing.T) {
			base := t.TempDir()
			sentinel := filepath.Join(base, "sentinel")
			must(t, os.MkdirAll(filepath.Join(sentinel, "etc"), 0o755))
			must(t, os.WriteFile(filepath.Join(sentinel, "etc", "x"), []byte("keep"), 0o644))
			must(t, os.MkdirAll(filepath.Join(base, "a", "b"), 0o755))
			must(t, os.Symlink(sentinel, filepath.Join(base, "etc")))
			dst := filepath.Join(base, "dst")
			before := snapshotFS(t, base)

			var called int
			r := newRestorer(t, h, func(o *Options) {
				o.Overwrite = policy
				o.OnError = func(EntryError) { called++ }
			})
			st, err := r.Restore(context.Background(), root, "", dst)
			must(t, err)
			wantListing(t, dst, want)
			unsafe := 0
			for _, e := range st.Errors {
				if errors.Is(e.Err, ErrUnsafeName) {
					unsafe++
				} else {
					t.Errorf("unexpected error: %v", e)
				}
			}
			if unsafe != wantUnsafe || called != len(st.Errors) {
				t.Errorf("%d unsafe-name errors (%d reported to OnError), want %d: %v", unsafe, called, wantUnsafe, st.Errors)
			}

			st, err = r.RestorePaths(context.Background(), pathsRoot, []string{"ok", "nul\x00byte/f"}, filepath.Join(base, "dst2"))
			must(t, err)
			wantListing(t, filepath.Join(base, "dst2"), map[string]string{"ok": "file inside"})
			if len(st.Errors) != 1 || !errors.Is(st.Errors[0].Err, ErrUnsafeName) {
				t.Errorf("restoring below an unsafe directory: %v", st.Errors)
			}

			after := snapshotFS(t, base)
			for p := range after {
				if strings.HasPrefix(p, dst+string(filepath.Separator)) || p == dst || strings.HasPrefix(p, dst+"2") {
					delete(after, p)
				}
			}
			delete(before, base) // its modification time changes
			delete(after, base)
			sameFS(t, "beside the destination", before, after)
		})
	}
}

// The destination's path is resolved once, when the restore starts: an
// attacker re-pointing a symlink on that path in the middle of the restore
// gets nothing written into the new target — not the files written after,
// not the directories made after, not the hard links or the directory
// metadata applied at the end.
func TestDestinationResolvedOnce(t *testing.T) {
	base := t.TempDir()
	first, second := filepath.Join(base, "first"), filepath.Join(base, "second")
	must(t, os.MkdirAll(filepath.Join(first, "dst"), 0o755))
	must(t, os.MkdirAll(filepath.Join(second, "dst"), 0o755))
	link := filepath.Join(base, "link")
	must(t, os.Symlink(first, link))

	h := newHashRepo(t)
	var nodes []tree.Node
	for i := range 8 {
		nodes = append(nodes, h.file(fmt.Sprintf("f%d", i), strings.Repeat("x", i+1), 1))
	}
	hard1 := h.file("hard1", "linked", 2)
	hard1.Links, hard1.Inode, hard1.DeviceID = 2, 9, 9
	hard2 := hard1
	hard2.Name = "hard2"
	later := h.dirNode("later", 0o750, mtime, hard2, h.file("g", "after the swap", 3),
		tree.Node{Name: "sym", Type: tree.Symlink, ModTime: mtime, LinkTarget: "g"})
	nodes = append(nodes, hard1, later)
	root := h.dir(nodes...)

	reading, swapped := make(chan struct{}), make(chan struct{})
	var once sync.Once
	wait := func(ctx context.Context) {
		select {
		case <-swapped:
		case <-ctx.Done():
		}
	}
	h.beforeRead = func(ctx context.Context) {
		once.Do(func() { close(reading) })
		wait(ctx)
	}
	h.beforeLoad = func(ctx context.Context, id blob.ID) {
		if id == later.Subtree {
			wait(ctx)
		}
	}
	type result struct {
		st  Stats
		err error
	}
	done := make(chan result, 1)
	r := newRestorer(t, h, func(o *Options) { o.LocateBatch = 2; o.Workers = 2 })
	go func() {
		st, err := r.Restore(context.Background(), root, "", filepath.Join(link, "dst"))
		done <- result{st, err}
	}()
	select {
	case <-reading:
	case res := <-done:
		t.Fatalf("restore ended before reading a blob: %v", res.err)
	}
	tmp := filepath.Join(base, "link.new")
	must(t, os.Symlink(second, tmp))
	must(t, os.Rename(tmp, link))
	close(swapped)
	res := <-done
	must(t, res.err)
	if len(res.st.Errors) > 0 {
		t.Errorf("errors: %v", res.st.Errors)
	}

	wantListing(t, second, map[string]string{"dst": "dir"})
	want := map[string]string{"hard1": "file linked", "later": "dir", "later/hard2": "file linked",
		"later/g": "file after the swap", "later/sym": "link g"}
	for i := range 8 {
		want[fmt.Sprintf("f%d", i)] = "file " + strings.Repeat("x", i+1)
	}
	wantListing(t, filepath.Join(first, "dst"), want)
	fi, err := os.Lstat(filepath.Join(first, "dst", "later"))
	must(t, err)
	if fi.Mode().Perm() != 0o750 || !fi.ModTime().Equal(mtime) {
		t.Errorf("later: mode %v, mtime %v", fi.Mode(), fi.ModTime())
	}
	var a, b unix.Stat_t
	must(t, unix.Lstat(filepath.Join(first, "dst", "hard1"), &a))
	must(t, unix.Lstat(filepath.Join(first, "dst", "later", "hard2"), &b))
	if a.Ino != b.Ino {
		t.Error("hard1 and later/hard2 are not linked")
	}
}

// Symlinks already in the destination, where the backup has a directory
// or a file, are never followed: under every policy, what they point to
// stays as it was, and files go into real directories.
func TestExistingSymlinksInDestination(t *testing.T) {
	h := newHashRepo(t)
	root := h.dir(
		h.dirNode("a", 0o755, mtime, h.file("f1", "one", 2), h.dirNode("sub", 0o755, mtime, h.file("f2", "two", 2))),
		h.file("b", "bee", 2),
		h.dirNode("home", 0o755, mtime, h.dirNode("u", 0o700, mtime, h.file("doc", "doc", 2))),
	)
	old, young := mtime.Add(-time.Hour), mtime.Add(time.Hour)
	aDir := map[string]string{"a": "dir", "a/f1": "file one", "a/sub": "dir", "a/sub/f2": "file two"}
	cases := []struct {
		policy  Overwrite
		want    map[string]string
		kept    uint64
		renamed uint64
	}{
		{OverwriteAlways, merge(aDir, map[string]string{"b": "file bee", "home": "dir", "home/u": "dir", "home/u/doc": "file doc"}), 0, 0},
		{OverwriteSkip, map[string]string{"a": "link OUT", "b": "link OUT/keep", "home": "link OUT"}, 3, 0},
		// a and home are older than the backup's, b is newer.
		{OverwriteIfNewer, merge(aDir, map[string]string{"b": "link OUT/keep", "home": "dir", "home/u": "dir", "home/u/doc": "file doc"}), 1, 0},
		{OverwriteRename, map[string]string{"a": "link OUT", "b": "link OUT/keep", "home": "link OUT",
			"a.restored-1": "dir", "a.restored-1/f1": "file one", "a.restored-1/sub": "dir", "a.restored-1/sub/f2": "file two",
			"b.restored-1": "file bee", "home.restored-1": "dir", "home.restored-1/u": "dir", "home.restored-1/u/doc": "file doc"}, 0, 3},
	}
	for _, c := range cases {
		t.Run(c.policy.String(), func(t *testing.T) {
			base := t.TempDir()
			outside := filepath.Join(base, "outside")
			must(t, os.MkdirAll(filepath.Join(outside, "sub"), 0o755))
			must(t, os.WriteFile(filepath.Join(outside, "keep"), []byte("keep"), 0o644))
			must(t, os.WriteFile(filepath.Join(outside, "f1"), []byte("mine"), 0o644))
			dst := filepath.Join(base, "dst")
			must(t, os.Mkdir(dst, 0o755))
			for name, target := range map[string]string{"a": outside, "b": filepath.Join(outside, "keep"), "home": outside} {
				must(t, os.Symlink(target, filepath.Join(dst, name)))
				ts := old
				if name == "b" {
					ts = young
				}
				setTimes(t, filepath.Join(dst, name), ts)
			}
			before := snapshotFS(t, outside)
			r := newRestorer(t, h, func(o *Options) { o.Overwrite = c.policy })
			st, err := r.RestorePaths(context.Background(), root, []string{"a", "b", "home/u"}, dst)
			must(t, err)
			if len(st.Errors) > 0 {
				t.Errorf("errors: %v", st.Errors)
			}
			sameFS(t, "outside", before, snapshotFS(t, outside))
			want := map[string]string{}
			for p, w := range c.want {
				want[p] = strings.ReplaceAll(w, "OUT", outside)
			}
			wantListing(t, dst, want)
			if st.Kept != c.kept || st.Renamed != c.renamed {
				t.Errorf("kept %d, renamed %d; want %d, %d", st.Kept, st.Renamed, c.kept, c.renamed)
			}
		})
	}
}

// setTimes sets the modification and access times of p, not following a
// symlink.
func setTimes(t *testing.T, p string, ts time.Time) {
	t.Helper()
	spec := unix.NsecToTimespec(ts.UnixNano())
	must(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{spec, spec}, unix.AT_SYMLINK_NOFOLLOW))
}

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// A file that fails a check — a blob that does not hash to its id, one
// longer or shorter than the index says, blobs that do not add up to the
// file's size — is reported and never left under its final name, nor
// under its temporary one; an existing file there is left alone.
func TestFailedFilesNeverInPlace(t *testing.T) {
	h := newHashRepo(t)
	corrupt := h.file("corrupt", "abcdefgh", 3)
	h.blobs[corrupt.Content[1]] = []byte("XYZ") // damaged in storage
	long := h.file("long", "ghijkl", 3)
	h.lengths[long.Content[0]] = 2 // index and content disagree, sizes add up
	h.lengths[long.Content[1]] = 4
	short := h.file("short", "mnopqr", 3)
	short.Size = 5
	big := h.file("big", "stu", 3)
	big.Size = 7
	root := h.dir(big, corrupt, h.file("fine", "fine", 2), long, short)
	for _, policy := range policies {
		t.Run(policy.String(), func(t *testing.T) {
			dst := t.TempDir()
			must(t, os.WriteFile(filepath.Join(dst, "corrupt"), []byte("mine"), 0o644))
			setTimes(t, filepath.Join(dst, "corrupt"), mtime.Add(-time.Hour))
			st, err := newRestorer(t, h, func(o *Options) { o.Overwrite = policy; o.JobSize = 3 }).Restore(context.Background(), root, "", dst)
			must(t, err)
			wantListing(t, dst, map[string]string{"corrupt": "file mine", "fine": "file fine"})
			want := map[string]error{"big": ErrSize, "corrupt": blob.ErrCorrupt, "long": ErrSize, "short": ErrSize}
			if policy == OverwriteSkip {
				delete(want, "corrupt") // kept, never read
			}
			for _, e := range st.Errors {
				if !errors.Is(e.Err, want[e.Path]) {
					t.Errorf("%s: %v, want %v", e.Path, e.Err, want[e.Path])
				}
				delete(want, e.Path)
			}
			if len(want) > 0 {
				t.Errorf("not reported: %v (errors: %v)", want, st.Errors)
			}
		})
	}
}
