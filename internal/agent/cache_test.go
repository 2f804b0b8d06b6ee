package agent

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cofferhq/coffer/internal/engine/archiver"
	"github.com/cofferhq/coffer/internal/engine/blob"
)

func testEntries() map[string]cacheEntry {
	return map[string]cacheEntry{
		"/home/u/a.txt":    {st: archiver.FileStat{Size: 10, MtimeNs: 1700000000123456789, CtimeNs: 1700000000987654321, Inode: 42, Dev: 2049}, content: []blob.ID{{1}}},
		"/home/u/big":      {st: archiver.FileStat{Size: 1 << 40, MtimeNs: -5, CtimeNs: 0, Inode: 1<<63 + 7, Dev: 1}, content: []blob.ID{{2}, {3}, {4}}},
		"/home/u/empty":    {st: archiver.FileStat{Inode: 3}},
		"/home/u/ünï cödé": {st: archiver.FileStat{Size: 1}, content: []blob.ID{{5}}},
	}
}

func TestCacheRoundTrip(t *testing.T) {
	name := cacheFile(t.TempDir(), "repo", []string{"/home/u", "/etc"})
	entries := testEntries()
	if err := saveCache(name, "repo", []string{"/home/u", "/etc"}, "b1", entries); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(name); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("cache file: %v %v", fi, err)
	}
	// The paths' order does not matter.
	c, err := loadCache(name, "repo", []string{"/etc", "/home/u"})
	if err != nil {
		t.Fatal(err)
	}
	if c.backupID != "b1" || len(c.entries) != len(entries) {
		t.Fatalf("loaded %q with %d entries", c.backupID, len(c.entries))
	}
	for p, want := range entries {
		got := c.entries[p]
		if got.st != want.st || !slices.Equal(got.content, want.content) {
			t.Errorf("%s: %+v, want %+v", p, got, want)
		}
		content, state := c.Lookup(p, want.st)
		if state != archiver.CacheUnchanged || !slices.Equal(content, want.content) {
			t.Errorf("Lookup(%s) = %v, %v", p, content, state)
		}
		changed := want.st
		changed.CtimeNs++
		if _, state := c.Lookup(p, changed); state != archiver.CacheChanged {
			t.Errorf("Lookup(%s, changed) = %v", p, state)
		}
	}
	if _, state := c.Lookup("/home/u/new", archiver.FileStat{}); state != archiver.CacheMiss {
		t.Errorf("Lookup(new) = %v", state)
	}

	// Another repository or other paths: refused.
	if _, err := loadCache(name, "other", []string{"/etc", "/home/u"}); !errors.Is(err, errCacheCorrupt) {
		t.Errorf("other repository: %v", err)
	}
	if _, err := loadCache(name, "repo", []string{"/etc"}); !errors.Is(err, errCacheCorrupt) {
		t.Errorf("other paths: %v", err)
	}
	// No file: no cache, no error.
	if c, err := loadCache(name+".none", "repo", nil); c != nil || err != nil {
		t.Errorf("missing file: %v %v", c, err)
	}
}

func TestCacheCorrupt(t *testing.T) {
	name := filepath.Join(t.TempDir(), "c.cache")
	paths := []string{"/x"}
	if err := saveCache(name, "repo", paths, "b1", testEntries()); err != nil {
		t.Fatal(err)
	}
	good, _ := os.ReadFile(name)
	for _, tc := range []struct {
		name string
		edit func([]byte) []byte
	}{
		{"empty", func(b []byte) []byte { return nil }},
		{"truncated", func(b []byte) []byte { return b[:len(b)/2] }},
		{"no trailer", func(b []byte) []byte { return b[:len(b)-32] }},
		{"extra byte", func(b []byte) []byte { return append(b, 0) }},
		{"flipped magic", func(b []byte) []byte { b[0] ^= 1; return b }},
		{"flipped content id", func(b []byte) []byte { b[len(b)-40] ^= 0x80; return b }},
		{"flipped trailer", func(b []byte) []byte { b[len(b)-1] ^= 1; return b }},
		{"huge count", func(b []byte) []byte {
			i := len(cacheMagic) + 1 + len("repo") + 1 + 1 + len("/x") + 1 + len("b1")
			return append(append(b[:i:i], 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f), b[i+1:]...)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.WriteFile(name, tc.edit(slices.Clone(good)), 0o600)
			c, err := loadCache(name, "repo", paths)
			if c != nil || !errors.Is(err, errCacheCorrupt) {
				t.Errorf("got %v, %v; want errCacheCorrupt", c, err)
			}
		})
	}
	// A cache that cannot be read at all is an error too (the backup then reads every file).
	os.Remove(name)
	os.Mkdir(name, 0o700)
	if c, err := loadCache(name, "repo", paths); c != nil || err == nil {
		t.Errorf("directory as cache: %v %v", c, err)
	}
}

func TestCacheKey(t *testing.T) {
	if cacheKey("r", []string{"/a", "/b"}) != cacheKey("r", []string{"/b", "/a"}) {
		t.Error("the key depends on the paths' order")
	}
	if cacheKey("r", []string{"/a"}) == cacheKey("s", []string{"/a"}) || cacheKey("r", []string{"/a", "/b"}) == cacheKey("r", []string{"/a\x00/b"}) {
		t.Error("keys collide")
	}
}
