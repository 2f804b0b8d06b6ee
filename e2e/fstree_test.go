package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fsEntry is what a restore must reproduce of one path.
type fsEntry struct {
	Type   string // file, dir, symlink, fifo
	Mode   fs.FileMode
	UID    uint32
	GID    uint32
	Size   int64
	Mtime  int64 // ns; not compared for symlinks
	Hash   string
	Target string
	Link   string // the first path (by name) of its hard-link group, for files with several links
	Xattrs string
}

// fsManifest walks root without following symlinks and records every
// entry below it (root itself as "."), keyed by slash path. Paths under
// skip (relative) are left out.
func fsManifest(t *testing.T, root string, skip ...string) map[string]fsEntry {
	t.Helper()
	out := map[string]fsEntry{}
	groups := map[[2]uint64][]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		for _, s := range skip {
			if rel == s || strings.HasPrefix(rel, s+"/") {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		e := fsEntry{Mode: fs.FileMode(st.Mode & 0o7777), UID: st.Uid, GID: st.Gid, Mtime: st.Mtim.Nano()}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			e.Type, e.Size = "file", st.Size
			e.Hash = fileHash(t, p)
			if st.Nlink > 1 {
				k := [2]uint64{uint64(st.Dev), st.Ino}
				groups[k] = append(groups[k], rel)
			}
		case unix.S_IFDIR:
			e.Type = "dir"
		case unix.S_IFLNK:
			e.Type, e.Mtime = "symlink", 0
			e.Target, _ = os.Readlink(p)
		case unix.S_IFIFO:
			e.Type = "fifo"
		default:
			e.Type = fmt.Sprintf("other(%o)", st.Mode&unix.S_IFMT)
		}
		if e.Type == "file" || e.Type == "dir" {
			e.Xattrs = userXattrs(p)
		}
		out[rel] = e
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	for _, paths := range groups {
		sort.Strings(paths)
		for _, p := range paths {
			e := out[p]
			e.Link = paths[0]
			out[p] = e
		}
	}
	return out
}

func fileHash(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// userXattrs lists a path's user.* extended attributes as "name=value;…".
func userXattrs(p string) string {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil || n == 0 {
		return ""
	}
	var names []string
	for _, name := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		if strings.HasPrefix(name, "user.") {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	var b strings.Builder
	for _, name := range names {
		v := make([]byte, 64<<10)
		m, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			continue
		}
		fmt.Fprintf(&b, "%s=%s;", name, v[:m])
	}
	return b.String()
}

// makeEdgeTree fills dir with the entries backups get wrong: odd names,
// every kind of file, hard links, dangling symlinks, special modes, a
// fifo and a sparse file. It reports whether user xattrs could be set.
func makeEdgeTree(t *testing.T, dir string) (xattrs bool) {
	t.Helper()
	write := func(rel string, data []byte, mode fs.FileMode) {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // past the umask
			t.Fatal(err)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	write("unicode/héllo wörld ✓.txt", []byte("unicode\n"), 0o644)
	write("unicode/日本語のファイル.txt", []byte("にほんご\n"), 0o644)
	write(strings.Repeat("l", 255), []byte("a name of 255 bytes\n"), 0o644)
	write("unicode/"+strings.Repeat("é", 127), []byte("254 bytes of two-byte letters\n"), 0o644)
	write("with space/a b  c.txt", []byte("spaces\n"), 0o644)
	write("new\nline.txt", []byte("a newline in the name\n"), 0o644)
	write(" leading and trailing ", []byte("blanks\n"), 0o644)
	write("empty", nil, 0o644)
	must(os.MkdirAll(filepath.Join(dir, "emptydir/nested-empty"), 0o755))
	write("hard/a", []byte("linked content\n"), 0o644)
	must(os.MkdirAll(filepath.Join(dir, "hard/sub"), 0o755))
	must(os.Link(filepath.Join(dir, "hard/a"), filepath.Join(dir, "hard/b")))
	must(os.Link(filepath.Join(dir, "hard/a"), filepath.Join(dir, "hard/sub/c")))
	must(os.MkdirAll(filepath.Join(dir, "links"), 0o755))
	must(os.Symlink("../unicode", filepath.Join(dir, "links/relative")))
	must(os.Symlink("/etc/hostname", filepath.Join(dir, "links/absolute")))
	must(os.Symlink("does/not/exist", filepath.Join(dir, "links/dangling")))
	write("modes/private", []byte("0600\n"), 0o600)
	write("modes/exec.sh", []byte("#!/bin/sh\necho hi\n"), 0o755)
	write("modes/readonly", []byte("0444\n"), 0o444)
	must(os.MkdirAll(filepath.Join(dir, "modes/setgid-dir"), 0o755))
	must(unix.Chmod(filepath.Join(dir, "modes/setgid-dir"), 0o2775))
	write("modes/setgid-dir/inside", []byte("x\n"), 0o640)
	must(os.MkdirAll(filepath.Join(dir, "special"), 0o755))
	must(unix.Mkfifo(filepath.Join(dir, "special/fifo"), 0o640))
	// A sparse file: data at both ends of 24 MiB of hole.
	f, err := os.Create(filepath.Join(dir, "sparse.img"))
	must(err)
	_, err = f.WriteString("head")
	must(err)
	_, err = f.WriteAt([]byte("tail"), 24<<20)
	must(err)
	must(f.Close())
	// Content that spans several chunks, compressible and not.
	write("data/random.bin", pseudoRandom(6<<20, 1), 0o644)
	write("data/text.log", []byte(strings.Repeat("2026-11-29 INFO backup of a line of text that compresses\n", 60000)), 0o644)
	err = unix.Setxattr(filepath.Join(dir, "data/text.log"), "user.coffer.note", []byte("kept"), 0)
	xattrs = err == nil
	if err != nil && !errors.Is(err, syscall.ENOTSUP) && !errors.Is(err, syscall.EPERM) {
		t.Fatal(err)
	}
	// Fixed times, so a restore that forgets them is caught.
	old := time.Date(2021, 3, 4, 5, 6, 7, 890_000_000, time.UTC)
	must(os.Chtimes(filepath.Join(dir, "unicode/héllo wörld ✓.txt"), old, old))
	return xattrs
}

func pseudoRandom(n int, seed uint64) []byte {
	b := make([]byte, n)
	x := seed*0x9E3779B97F4A7C15 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}

// mutateEdgeTree changes dir the way a day of work does: edits, a new
// file, a deletion, a rename, a mode change, a re-pointed symlink.
func mutateEdgeTree(t *testing.T, dir string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.OpenFile(filepath.Join(dir, "data/text.log"), os.O_APPEND|os.O_WRONLY, 0)
	must(err)
	_, err = f.WriteString("2026-11-30 WARN a new line at the end\n")
	must(err)
	must(f.Close())
	b, err := os.ReadFile(filepath.Join(dir, "data/random.bin"))
	must(err)
	copy(b[3<<20:], "an edit in the middle of a big file")
	must(os.WriteFile(filepath.Join(dir, "data/random.bin"), b, 0o644))
	must(os.WriteFile(filepath.Join(dir, "new file.txt"), []byte("added after the first backup\n"), 0o644))
	must(os.Remove(filepath.Join(dir, "empty")))
	must(os.Rename(filepath.Join(dir, "with space/a b  c.txt"), filepath.Join(dir, "with space/renamed.txt")))
	must(os.Chmod(filepath.Join(dir, "modes/private"), 0o640))
	must(os.Remove(filepath.Join(dir, "links/dangling")))
	must(os.Symlink("now/points/elsewhere", filepath.Join(dir, "links/dangling")))
}
