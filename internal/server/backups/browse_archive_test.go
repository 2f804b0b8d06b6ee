package backups

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
	"github.com/cofferhq/coffer/internal/engine/tree"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
)

// archived is an entry read back from an archive.
type archived struct {
	kind    string // file, dir, symlink, hardlink, fifo
	mode    fs.FileMode
	perm    int64 // tar: the mode bits as written
	mtime   time.Time
	uid     int
	gid     int
	uname   string
	gname   string
	link    string // symlink target or hard link path
	content []byte
	method  uint16 // zip
}

// readArchive reads a whole archive, failing on anything malformed or
// truncated.
func readArchive(format ArchiveFormat, raw []byte) (map[string]archived, error) {
	out := map[string]archived{}
	if format == FormatTar {
		tr := tar.NewReader(bytes.NewReader(raw))
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, err
			}
			a := archived{mode: h.FileInfo().Mode(), perm: h.Mode, mtime: h.ModTime, uid: h.Uid, gid: h.Gid, uname: h.Uname,
				gname: h.Gname, link: h.Linkname}
			switch h.Typeflag {
			case tar.TypeReg:
				a.kind = "file"
			case tar.TypeDir:
				a.kind = "dir"
			case tar.TypeSymlink:
				a.kind = "symlink"
			case tar.TypeLink:
				a.kind = "hardlink"
			case tar.TypeFifo:
				a.kind = "fifo"
			default:
				return nil, fmt.Errorf("%s: type %c", h.Name, h.Typeflag)
			}
			if a.content, err = io.ReadAll(tr); err != nil {
				return nil, err
			}
			if _, dup := out[h.Name]; dup {
				return nil, fmt.Errorf("%s twice", h.Name)
			}
			out[h.Name] = a
		}
		// A tar ends with two zero blocks; a truncated one may not.
		if !bytes.HasSuffix(raw, make([]byte, 1024)) {
			return nil, io.ErrUnexpectedEOF
		}
		return out, nil
	}
	zr, err := zip.NewReader(bytes.NewReader(raw), int64(len(raw)))
	if err != nil {
		return nil, err
	}
	for _, f := range zr.File {
		a := archived{mode: f.Mode(), mtime: f.Modified, method: f.Method, uid: -1, gid: -1}
		switch {
		case f.Mode().IsDir():
			a.kind = "dir"
		case f.Mode()&fs.ModeSymlink != 0:
			a.kind = "symlink"
		case f.Mode().IsRegular():
			a.kind = "file"
		default:
			return nil, fmt.Errorf("%s: mode %v", f.Name, f.Mode())
		}
		for x := f.Extra; len(x) >= 4; {
			tag, size := binary.LittleEndian.Uint16(x), int(binary.LittleEndian.Uint16(x[2:]))
			if tag == 0x7875 && size == 11 {
				a.uid, a.gid = int(binary.LittleEndian.Uint32(x[6:])), int(binary.LittleEndian.Uint32(x[11:]))
			}
			x = x[min(len(x), 4+size):]
		}
		rc, err := f.Open()
		if err != nil {
			return nil, err
		}
		a.content, err = io.ReadAll(rc) // checks the CRC
		rc.Close()
		if err != nil {
			return nil, err
		}
		if a.kind == "symlink" {
			a.link, a.content = string(a.content), nil
		}
		if _, dup := out[f.Name]; dup {
			return nil, fmt.Errorf("%s twice", f.Name)
		}
		out[f.Name] = a
	}
	return out, nil
}

// makeTree fills dir with what archives must keep: empty directories,
// special permission bits, names with spaces, unicode and great length,
// symlinks (one dangling), a hard link, a fifo, multi-blob files, and
// nanosecond modification times.
func makeTree(t *testing.T, dir string) {
	t.Helper()
	text := []byte(strings.Repeat("a line of compressible text\n", 20000)) // 560 KiB
	writeFile(t, dir, "docs/a.txt", text, 0o644)
	writeFile(t, dir, "docs/b.bin", repotest.Random(3, 700<<10), 0o600)
	if err := os.Link(filepath.Join(dir, "docs/a.txt"), filepath.Join(dir, "docs/hard")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "ünïcödé 名前.txt", []byte("héllo wörld\n"), 0o640)
	writeFile(t, dir, "run me.sh", []byte("#!/bin/sh\necho hi\n"), 0o4755)
	long := strings.Repeat("long-name-", 20) + ".txt"
	writeFile(t, dir, "deep/"+strings.Repeat("nested-directory/", 8)+long, []byte("deep"), 0o644)
	for _, d := range []struct {
		name string
		mode os.FileMode
	}{{"empty dir", 0o700}, {"shared", 0o2775 | os.ModeSetgid}, {"tmp", 0o777 | os.ModeSticky}} {
		if err := os.Mkdir(filepath.Join(dir, d.name), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Join(dir, d.name), d.mode&0o777|d.mode&(os.ModeSetgid|os.ModeSticky)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("docs/a.txt", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/nonexistent/target", filepath.Join(dir, "docs/dangling")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Times with nanoseconds, deepest first so that directories keep theirs.
	var paths []string
	filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		paths = append(paths, p)
		return err
	})
	slices.Reverse(paths)
	for i, p := range paths {
		at := time.Date(2025, 6, 7, 8, 9, 10, 123456789+i, time.UTC).Add(time.Duration(i) * time.Hour)
		ts := []unix.Timespec{unix.NsecToTimespec(at.UnixNano()), unix.NsecToTimespec(at.UnixNano())}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatal(err)
		}
	}
}

// source is an entry of the directory an archive was made of.
type sourceEntry struct {
	rel string // "" for the directory itself
	fi  fs.FileInfo
	st  *syscall.Stat_t
}

func sourceEntries(t *testing.T, dir string) []sourceEntry {
	t.Helper()
	var out []sourceEntry
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			rel = ""
		}
		out = append(out, sourceEntry{rel: filepath.ToSlash(rel), fi: fi, st: fi.Sys().(*syscall.Stat_t)})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// lookupName is the user (or group) name of id, as the archiver records
// it; "" when it has none.
func lookupName(id uint32, group bool) string {
	if group {
		g, err := user.LookupGroupId(strconv.Itoa(int(id)))
		if err != nil {
			return ""
		}
		return g.Name
	}
	u, err := user.LookupId(strconv.Itoa(int(id)))
	if err != nil {
		return ""
	}
	return u.Username
}

// checkArchive compares an archive read back with the directory dir it
// was made of, its entries under top.
func checkArchive(t *testing.T, format ArchiveFormat, got map[string]archived, dir, top string, rootMeta bool) {
	t.Helper()
	want := map[string]bool{}
	hardFirst := map[uint64]string{}
	names := map[[2]uint32]string{} // lookupName reads /etc/passwd
	ownerName := func(id uint32, group bool) string {
		key := [2]uint32{id, 0}
		if group {
			key[1] = 1
		}
		n, ok := names[key]
		if !ok {
			n = lookupName(id, group)
			names[key] = n
		}
		return n
	}
	for _, s := range sourceEntries(t, dir) {
		name := top
		if s.rel != "" {
			name = top + "/" + s.rel
		}
		kind := map[fs.FileMode]string{0: "file", fs.ModeDir: "dir", fs.ModeSymlink: "symlink", fs.ModeNamedPipe: "fifo"}[s.fi.Mode().Type()]
		if kind == "dir" {
			name += "/" // both formats mark directories so
		}
		if kind == "fifo" && format == FormatZip {
			continue // zip cannot hold one
		}
		if kind == "file" && s.st.Nlink > 1 && format == FormatTar {
			if first, ok := hardFirst[s.st.Ino]; ok {
				kind = "hardlink"
				if a := got[name]; a.link != first {
					t.Errorf("%s: hard link to %q, want %q", name, a.link, first)
				}
			} else {
				hardFirst[s.st.Ino] = name
			}
		}
		want[name] = true
		a, ok := got[name]
		if !ok {
			t.Errorf("%s is missing", name)
			continue
		}
		if a.kind != kind {
			t.Errorf("%s: %s, want %s", name, a.kind, kind)
		}
		if s.rel == "" && !rootMeta {
			continue // the backup's root: its metadata is not recorded
		}
		mt := time.Unix(s.st.Mtim.Sec, s.st.Mtim.Nsec)
		if format == FormatTar {
			if a.perm != int64(s.st.Mode&0o7777) || !a.mtime.Equal(mt) || a.uid != int(s.st.Uid) || a.gid != int(s.st.Gid) ||
				a.uname != ownerName(s.st.Uid, false) || a.gname != ownerName(s.st.Gid, true) {
				t.Errorf("%s: mode %o mtime %v owner %d/%d %s/%s; want %o %v %d/%d", name, a.perm, a.mtime, a.uid, a.gid, a.uname,
					a.gname, s.st.Mode&0o7777, mt, s.st.Uid, s.st.Gid)
			}
		} else {
			if a.mode != s.fi.Mode() || a.mtime.Unix() != mt.Unix() || a.uid != int(s.st.Uid) || a.gid != int(s.st.Gid) {
				t.Errorf("%s: mode %v mtime %v owner %d/%d; want %v %v %d/%d", name, a.mode, a.mtime, a.uid, a.gid,
					s.fi.Mode(), mt, s.st.Uid, s.st.Gid)
			}
		}
		switch kind {
		case "file":
			content, err := os.ReadFile(filepath.Join(dir, s.rel))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a.content, content) {
				t.Errorf("%s: %d bytes differ from the source's %d", name, len(a.content), len(content))
			}
		case "symlink":
			target, err := os.Readlink(filepath.Join(dir, s.rel))
			if err != nil {
				t.Fatal(err)
			}
			if a.link != target {
				t.Errorf("%s: target %q, want %q", name, a.link, target)
			}
		}
	}
	for name := range got {
		if !want[name] {
			t.Errorf("unexpected entry %q", name)
		}
		if strings.HasPrefix(name, "/") || slices.Contains(strings.Split(name, "/"), "..") {
			t.Errorf("unsafe name %q", name)
		}
	}
}

func TestArchives(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		dir := t.TempDir()
		makeTree(t, dir)
		b := e.commitDir(e.client, dir, nil)
		for _, format := range []ArchiveFormat{FormatTar, FormatZip} {
			t.Run(string(format), func(t *testing.T) {
				// The whole backup, under backup-<id>.
				a, err := e.svc.OpenArchive(ctx, e.admin, b.ID, "/", format)
				if err != nil {
					t.Fatal(err)
				}
				if a.Name != "backup-"+b.ID+"."+string(format) {
					t.Errorf("name = %q", a.Name)
				}
				raw, err := e.archive(e.admin, b, "", format)
				if err != nil {
					t.Fatal(err)
				}
				got, err := readArchive(format, raw)
				if err != nil {
					t.Fatal(err)
				}
				checkArchive(t, format, got, dir, "backup-"+b.ID, false)
				if format == FormatZip {
					top := "backup-" + b.ID + "/docs/"
					if got[top+"a.txt"].method != zip.Deflate || got[top+"b.bin"].method != zip.Store {
						t.Errorf("methods: text %d, random %d", got[top+"a.txt"].method, got[top+"b.bin"].method)
					}
				}

				// A directory, under its own name, with its metadata.
				raw, err = e.archive(e.admin, b, "docs", format)
				if err != nil {
					t.Fatal(err)
				}
				if got, err = readArchive(format, raw); err != nil {
					t.Fatal(err)
				}
				checkArchive(t, format, got, filepath.Join(dir, "docs"), "docs", true)

				// A file, and a symlink: archives of one entry.
				raw, err = e.archive(e.admin, b, "/ünïcödé 名前.txt", format)
				if err != nil {
					t.Fatal(err)
				}
				got, err = readArchive(format, raw)
				if a := got["ünïcödé 名前.txt"]; err != nil || len(got) != 1 || string(a.content) != "héllo wörld\n" {
					t.Fatalf("file archive = %v, %v", got, err)
				}
				raw, err = e.archive(e.admin, b, "link", format)
				if err != nil {
					t.Fatal(err)
				}
				got, err = readArchive(format, raw)
				if a := got["link"]; err != nil || len(got) != 1 || a.kind != "symlink" || a.link != "docs/a.txt" {
					t.Fatalf("symlink archive = %v, %v", got, err)
				}
			})
		}
		_, err := e.svc.OpenArchive(ctx, e.admin, b.ID, "nope", FormatTar)
		wantCode(t, err, "path_not_found")
		_, err = e.svc.OpenArchive(ctx, e.admin, b.ID, "docs", "rar")
		wantCode(t, err, "invalid_format")
		_, err = e.svc.OpenArchive(ctx, e.admin, "nope", "docs", FormatZip)
		wantCode(t, err, "backup_not_found")
	})
}

// TestArchiveBatching archives many small files and a few large ones, so
// that batches hold many entries, and entries and files span batches.
func TestArchiveBatching(t *testing.T) {
	e := newEnv(t, metadbtest.Open(t, metadb.SQLite))
	dir := t.TempDir()
	for i := range 2500 { // an entry and a blob each: more ops than a batch holds
		writeFile(t, dir, fmt.Sprintf("many/%02d/%04d", i%25, i), []byte(strconv.Itoa(i)), 0o644)
	}
	for i := range 2 { // more than a batch's bytes each
		writeFile(t, dir, fmt.Sprintf("large/%d.bin", i), repotest.Random(uint64(10+i), batchBytes+1<<20+i), 0o644)
	}
	b := e.commitDir(e.client, dir, nil)
	for _, format := range []ArchiveFormat{FormatTar, FormatZip} {
		raw, err := e.archive(e.admin, b, "", format)
		if err != nil {
			t.Fatal(err)
		}
		got, err := readArchive(format, raw)
		if err != nil {
			t.Fatal(err)
		}
		checkArchive(t, format, got, dir, "backup-"+b.ID, false)
	}
}

func TestZipHeader(t *testing.T) {
	mtime := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, c := range []struct {
		e       dlEntry
		name    string
		mode    fs.FileMode
		method  uint16
		content string
	}{
		{dlEntry{path: `a/..\..\evil`, node: tree.Node{Type: tree.File, Mode: 0o644, ModTime: mtime}}, "a/.._.._evil", 0o644, zip.Store, ""},
		{dlEntry{path: "d", node: tree.Node{Type: tree.Dir, Mode: 0o3750, ModTime: mtime}}, "d/",
			fs.ModeDir | fs.ModeSetgid | fs.ModeSticky | 0o750, zip.Store, ""},
		{dlEntry{path: "s", node: tree.Node{Type: tree.File, Mode: 0o4755}, compressible: true}, "s", fs.ModeSetuid | 0o755, zip.Deflate, ""},
		{dlEntry{path: "l", node: tree.Node{Type: tree.Symlink, Mode: 0o777, LinkTarget: "../t"}}, "l", fs.ModeSymlink | 0o777, zip.Store, "../t"},
	} {
		fh, content := zipHeader(&c.e)
		if fh == nil || fh.Name != c.name || fh.Mode() != c.mode || fh.Method != c.method || content != c.content {
			t.Errorf("%q: %+v, %q", c.e.path, fh, content)
		}
	}
	for _, typ := range []tree.Type{tree.Fifo, tree.Socket, tree.CharDevice, tree.BlockDevice} {
		if fh, _ := zipHeader(&dlEntry{path: "x", node: tree.Node{Type: typ}}); fh != nil {
			t.Errorf("%s: %+v", typ, fh)
		}
	}
}

func TestTarHeader(t *testing.T) {
	dev := uint64(8<<8 | 1) // /dev/sda1
	h := tarHeader(&dlEntry{path: "dev", node: tree.Node{Type: tree.BlockDevice, Device: dev,
		Xattrs: []tree.Xattr{{Name: "user.a=b", Value: []byte("x")}, {Name: "user.k", Value: []byte("v\x00w")}}}})
	if h.Typeflag != tar.TypeBlock || h.Devmajor != 8 || h.Devminor != 1 || len(h.PAXRecords) != 1 ||
		h.PAXRecords["SCHILY.xattr.user.k"] != "v\x00w" {
		t.Fatalf("device header = %+v", h)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(h); err != nil {
		t.Fatal(err)
	}
	tw.Close()
	back, err := tar.NewReader(&buf).Next()
	if err != nil || back.PAXRecords["SCHILY.xattr.user.k"] != "v\x00w" || back.Devmajor != h.Devmajor {
		t.Fatalf("read back %+v, %v", back, err)
	}
	// makedev(259, 65537) in glibc's encoding.
	d := uint64(65537&0xff) | uint64(259&0xfff)<<8 | uint64(65537&^0xff)<<12 | uint64(259&^0xfff)<<32
	if devMajor(d) != 259 || devMinor(d) != 65537 {
		t.Fatalf("major, minor = %d, %d", devMajor(d), devMinor(d))
	}
	if tarHeader(&dlEntry{path: "sock", node: tree.Node{Type: tree.Socket}}) != nil {
		t.Fatal("a socket has a tar header")
	}
	if h := tarHeader(&dlEntry{path: "huge", node: tree.Node{Type: tree.CharDevice, Device: 0x12345678abc}}); h != nil {
		t.Fatalf("an unencodable device has a header: %+v", h)
	}
}
