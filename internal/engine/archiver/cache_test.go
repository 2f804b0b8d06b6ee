//go:build linux

package archiver

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
	"github.com/cofferhq/coffer/internal/engine/tree"
)

// memCache is a ChangeCache as the agent keeps one: what OnFile reported
// last time, looked up by path.
type memCache struct {
	mu      sync.Mutex
	prev    map[string]cacheEntry // what Lookup answers from
	next    map[string]cacheEntry // what OnFile reported in this backup
	lookups map[string]CacheState
}

type cacheEntry struct {
	st      FileStat
	content []blob.ID
}

func newMemCache() *memCache {
	return &memCache{prev: map[string]cacheEntry{}, next: map[string]cacheEntry{}, lookups: map[string]CacheState{}}
}

func (c *memCache) Lookup(p string, st FileStat) ([]blob.ID, CacheState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.prev[p]
	state := CacheUnchanged
	switch {
	case !ok:
		state = CacheMiss
	case e.st != st:
		state = CacheChanged
	}
	c.lookups[p] = state
	if state != CacheUnchanged {
		return nil, state
	}
	return e.content, state
}

func (c *memCache) onFile(p string, st FileStat, content []blob.ID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, dup := c.next[p]; dup {
		panic("OnFile called twice for " + p)
	}
	c.next[p] = cacheEntry{st, slices.Clone(content)}
}

// rotate starts the next backup: what OnFile reported becomes the cache.
func (c *memCache) rotate() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.prev, c.next, c.lookups = c.next, map[string]cacheEntry{}, map[string]CacheState{}
}

// opens counts the files the archiver opens, by path.
type opens struct {
	mu sync.Mutex
	m  map[string]int
}

func countOpens(a *Archiver) *opens {
	o := &opens{m: map[string]int{}}
	a.hook = func(stage, p string) {
		if stage == "open" {
			o.mu.Lock()
			o.m[p]++
			o.mu.Unlock()
		}
	}
	return o
}

func (o *opens) take() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []string
	for p := range o.m {
		out = append(out, p)
	}
	slices.Sort(out)
	clear(o.m)
	return out
}

func lstatOf(t *testing.T, p string) FileStat {
	t.Helper()
	var st unix.Stat_t
	must(t, unix.Lstat(p, &st))
	return fileStat(&st)
}

// TestArchiveCache backs a tree up three times with a change cache: the
// first reads everything (new files), the second reads nothing and gives
// the same root, the third reads exactly the files whose size,
// modification time or change time changed, and the new one. OnFile gets
// every file with its content each time, and a backup without the cache
// gives the same root as one with it.
func TestArchiveCache(t *testing.T) {
	dir := t.TempDir()
	files := map[string][]byte{
		"empty":          nil,
		"small":          []byte("small file"),
		"big":            randomBytes(700<<10, 11),
		"sub/touched":    []byte("its mtime changes"),
		"sub/chmodded":   []byte("its mode changes: ctime only"),
		"sub/grows":      []byte("it grows"),
		"sub/deep/still": []byte("unchanged"),
		"hard":           []byte("two links"),
	}
	for p, b := range files {
		write(t, filepath.Join(dir, p), b, 0o644)
	}
	must(t, os.Link(filepath.Join(dir, "hard"), filepath.Join(dir, "sub/hard2")))
	files["sub/hard2"] = files["hard"]
	must(t, os.Symlink("small", filepath.Join(dir, "link")))

	s := newMemSaver(t)
	cache := newMemCache()
	a := newArchiver(t, s, func(o *Options) { o.Cache = cache; o.OnFile = cache.onFile })
	a.racyWindow = 0
	opened := countOpens(a)
	ctx := context.Background()
	all := func() []string {
		var out []string
		for p := range files {
			out = append(out, p)
		}
		slices.Sort(out)
		return out
	}
	// checkOnFile checks that OnFile reported every file with its stat
	// and content, and that the nodes hold that content.
	checkOnFile := func(what string, root blob.ID) {
		t.Helper()
		nodes := s.walk(t, root)
		if len(cache.next) != len(files) {
			t.Errorf("%s: OnFile got %d files, want %d", what, len(cache.next), len(files))
		}
		for p, b := range files {
			abs := filepath.Join(dir, p)
			e, ok := cache.next[abs]
			if !ok {
				t.Errorf("%s: OnFile not called for %s", what, abs)
				continue
			}
			if e.st != lstatOf(t, abs) {
				t.Errorf("%s: OnFile got %s with stat %+v, lstat says %+v", what, p, e.st, lstatOf(t, abs))
			}
			if !slices.Equal(e.content, nodes[p].Content) || string(s.content(t, nodes[p])) != string(b) {
				t.Errorf("%s: %s: OnFile content or stored content differ from the file", what, p)
			}
		}
	}

	root1, st, err := a.Archive(ctx, s, dir)
	must(t, err)
	if st.FilesNew != uint64(len(files)) || st.FilesChanged != 0 || st.FilesUnchanged != 0 || st.Files != uint64(len(files)) {
		t.Errorf("first backup: %d new, %d changed, %d unchanged of %d", st.FilesNew, st.FilesChanged, st.FilesUnchanged, st.Files)
	}
	if got := opened.take(); !slices.Equal(got, all()) {
		t.Errorf("first backup opened %q", got)
	}
	checkOnFile("first", root1)

	// Second backup: nothing read, nothing asked about but trees.
	cache.rotate()
	clear(s.asked)
	root2, st, err := a.Archive(ctx, s, dir)
	must(t, err)
	if got := opened.take(); len(got) > 0 {
		t.Errorf("second backup opened %q", got)
	}
	if root2 != root1 {
		t.Errorf("second backup: root %s, first %s", root2.Short(), root1.Short())
	}
	if st.FilesUnchanged != uint64(len(files)) || st.FilesNew != 0 || st.FilesChanged != 0 || st.ReadBytes != 0 {
		t.Errorf("second backup: %d new, %d changed, %d unchanged, %d bytes read", st.FilesNew, st.FilesChanged, st.FilesUnchanged, st.ReadBytes)
	}
	var size uint64
	for _, b := range files {
		size += uint64(len(b))
	}
	if st.Bytes != size {
		t.Errorf("second backup: Bytes %d, want %d", st.Bytes, size)
	}
	for id := range s.asked {
		if s.types[id] != blob.Tree {
			t.Errorf("second backup asked about data blob %s", id.Short())
		}
	}
	checkOnFile("second", root2)

	// Third backup, after changes.
	old := time.Date(2001, 2, 3, 4, 5, 6, 7, time.UTC)
	setMtime(t, filepath.Join(dir, "sub/touched"), old) // mtime and ctime
	must(t, os.Chmod(filepath.Join(dir, "sub/chmodded"), 0o600))
	f, err := os.OpenFile(filepath.Join(dir, "sub/grows"), os.O_APPEND|os.O_WRONLY, 0)
	must(t, err)
	_, err = f.WriteString(", and grows")
	must(t, err)
	must(t, f.Close())
	files["sub/grows"] = []byte("it grows, and grows")
	write(t, filepath.Join(dir, "sub/new"), []byte("a new file"), 0o644)
	files["sub/new"] = []byte("a new file")
	cache.rotate()
	root3, st, err := a.Archive(ctx, s, dir)
	must(t, err)
	if got, want := opened.take(), []string{"sub/chmodded", "sub/grows", "sub/new", "sub/touched"}; !slices.Equal(got, want) {
		t.Errorf("third backup opened %q, want %q", got, want)
	}
	if st.FilesNew != 1 || st.FilesChanged != 3 || st.FilesUnchanged != uint64(len(files)-4) {
		t.Errorf("third backup: %d new, %d changed, %d unchanged", st.FilesNew, st.FilesChanged, st.FilesUnchanged)
	}
	checkOnFile("third", root3)

	// The same tree without a cache: the same root.
	plain := newArchiver(t, s, nil)
	root, st, err := plain.Archive(ctx, s, dir)
	must(t, err)
	if root != root3 {
		t.Errorf("without the cache: root %s, with it %s", root.Short(), root3.Short())
	}
	if st.FilesNew != uint64(len(files)) {
		t.Errorf("without the cache: %d new files of %d", st.FilesNew, len(files))
	}
}

// A cache entry that cannot be the file's content (none for a non-empty
// file, some for an empty one) makes the file be read, as changed.
func TestArchiveCacheInconsistent(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "full"), []byte("content"), 0o644)
	write(t, filepath.Join(dir, "empty"), nil, 0o644)
	s := newMemSaver(t)
	cache := newMemCache()
	cache.prev[filepath.Join(dir, "full")] = cacheEntry{st: lstatOf(t, filepath.Join(dir, "full"))}
	cache.prev[filepath.Join(dir, "empty")] = cacheEntry{st: lstatOf(t, filepath.Join(dir, "empty")), content: []blob.ID{{1}}}
	a := newArchiver(t, s, func(o *Options) { o.Cache = cache })
	opened := countOpens(a)
	root, st, err := a.Archive(context.Background(), s, dir)
	must(t, err)
	if got := opened.take(); !slices.Equal(got, []string{"empty", "full"}) {
		t.Errorf("opened %q", got)
	}
	if st.FilesChanged != 2 {
		t.Errorf("%d changed files, want 2", st.FilesChanged)
	}
	if n := s.walk(t, root)["full"]; string(s.content(t, n)) != "content" {
		t.Errorf("full stored as %q", s.content(t, n))
	}
}

// Reused content is not checked by the archiver: a cache naming a blob the
// repository lacks makes the commit fail with MissingBlobsError, which
// tells the agent to back up again without the cache.
func TestArchiveCacheMissingBlob(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "f"), []byte("content"), 0o644)
	cache := newMemCache()
	bogus := blob.ID{0xde, 0xad}
	cache.prev[filepath.Join(dir, "f")] = cacheEntry{st: lstatOf(t, filepath.Join(dir, "f")), content: []blob.ID{bogus}}
	ctx := context.Background()
	repo := repotest.New(t, repotest.Options{})
	o := DefaultOptions(repo.Codec())
	o.Chunker = repo.Config().ChunkerParams()
	o.Cache = cache
	a, err := New(o)
	must(t, err)
	w, err := repo.NewWriter(ctx, repository.WriterOptions{})
	must(t, err)
	defer w.Close()
	root, _, err := a.Archive(ctx, w, dir)
	must(t, err)
	_, err = w.Commit(ctx, &tree.Snapshot{Version: tree.SnapshotVersion, Time: time.Now().UTC(), Tree: root, Hostname: "test"})
	var missing *repository.MissingBlobsError
	if !errors.As(err, &missing) || !slices.Equal(missing.IDs, []blob.ID{bogus}) {
		t.Fatalf("commit: %v, want the bogus blob missing", err)
	}
}

// A file modified shortly before it is read is reported to OnFile with a
// stat no file has, so that the next backup reads it again.
func TestArchiveCacheRacyFiles(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "fresh"), []byte("just written"), 0o644)
	s := newMemSaver(t)
	cache := newMemCache()
	a := newArchiver(t, s, func(o *Options) { o.Cache = cache; o.OnFile = cache.onFile })
	// The default window: the file was written within it.
	_, _, err := a.Archive(context.Background(), s, dir)
	must(t, err)
	e := cache.next[filepath.Join(dir, "fresh")]
	if want := lstatOf(t, filepath.Join(dir, "fresh")); e.st.CtimeNs != 0 || e.st.MtimeNs != want.MtimeNs || e.st.Size != want.Size {
		t.Errorf("OnFile got %+v for a fresh file, want its stat (%+v) with CtimeNs 0", e.st, want)
	}
	cache.rotate()
	opened := countOpens(a)
	_, st, err := a.Archive(context.Background(), s, dir)
	must(t, err)
	if got := opened.take(); len(got) != 1 || st.FilesChanged != 1 {
		t.Errorf("the racy file was not read again: opened %q, %d changed", got, st.FilesChanged)
	}

	start := time.Unix(1000, 0)
	for _, c := range []struct {
		mtime, ctime int64 // seconds
		racy         bool
	}{{990, 997, false}, {990, 998, false}, {999, 999, true}, {1001, 1001, true}, {990, 1001, true}} {
		st := FileStat{Size: 1, MtimeNs: c.mtime * 1e9, CtimeNs: c.ctime * 1e9}
		got := smudge(st, start, 2*time.Second)
		want := st
		if c.racy {
			want.CtimeNs = 0
		}
		if got != want {
			t.Errorf("smudge(mtime %d, ctime %d) = %+v, want %+v", c.mtime, c.ctime, got, want)
		}
	}
}

func TestCacheStateString(t *testing.T) {
	got := []string{CacheMiss.String(), CacheChanged.String(), CacheUnchanged.String(), CacheState(9).String()}
	if diff := cmp.Diff([]string{"miss", "changed", "unchanged", "state(9)"}, got); diff != "" {
		t.Error(diff)
	}
}

// Reusing every file of the tree with every kind of entry (extended
// attributes, hard links, special modes) gives the tree read in full.
func TestArchiveCacheSameTree(t *testing.T) {
	dir := t.TempDir()
	makeTree(t, dir)
	s := newMemSaver(t)
	cache := newMemCache()
	a := newArchiver(t, s, func(o *Options) { o.Cache = cache; o.OnFile = cache.onFile })
	a.racyWindow = 0
	root1, _, err := a.Archive(context.Background(), s, dir)
	must(t, err)
	cache.rotate()
	opened := countOpens(a)
	root2, st, err := a.Archive(context.Background(), s, dir)
	must(t, err)
	if got := opened.take(); len(got) > 0 || st.FilesUnchanged != st.Files || len(st.Errors) > 0 {
		t.Errorf("opened %q; %d of %d files unchanged; errors %v", got, st.FilesUnchanged, st.Files, st.Errors)
	}
	if root1 != root2 {
		t.Errorf("reusing the content gave root %s, reading it %s", root2.Short(), root1.Short())
		first, second := s.walk(t, root1), s.walk(t, root2)
		for p, n := range first {
			if diff := cmp.Diff(n, second[p]); diff != "" {
				t.Errorf("%s (-read +reused):\n%s", p, diff)
			}
		}
	}
}
