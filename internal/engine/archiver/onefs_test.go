//go:build linux

package archiver

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// checkOneFileSystem backs up base, where mnt is a mount point holding
// inner/f, with and without OneFileSystem; hook, when set, configures each
// archiver (the device hook).
func checkOneFileSystem(t *testing.T, base string, hook func(*Archiver)) {
	t.Helper()
	mnt := filepath.Join(base, "mnt")
	for _, oneFS := range []bool{false, true} {
		s := newMemSaver(t)
		a := newArchiver(t, s, func(o *Options) { o.OneFileSystem = oneFS })
		if hook != nil {
			hook(a)
		}
		root, st, err := a.Archive(context.Background(), s, base)
		must(t, err)
		if len(st.Errors) > 0 {
			t.Fatal(st.Errors)
		}
		nodes := s.walk(t, root)
		if _, ok := nodes["before/x"]; !ok {
			t.Errorf("oneFS %v: before/x not stored", oneFS)
		}
		if _, ok := nodes["mnt/inner/f"]; ok == oneFS {
			t.Errorf("oneFS %v: mnt/inner/f stored %v", oneFS, ok)
		}
		if diff := cmp.Diff(metaOf(t, mnt, false), bare(nodes["mnt"])); diff != "" {
			t.Errorf("oneFS %v: mount point (-stat +stored):\n%s", oneFS, diff)
		}
		if oneFS {
			if got := s.dir(t, nodes["mnt"].Subtree); len(got) != 0 {
				t.Errorf("mount point stored with entries %v", got)
			}
		}

		// A path given to ArchivePaths starts on its own file system.
		root, _, err = a.ArchivePaths(context.Background(), s, []string{mnt})
		must(t, err)
		if _, ok := s.walk(t, root)[rel(mnt)+"/inner/f"]; !ok {
			t.Errorf("oneFS %v: the given mount point's content was not stored", oneFS)
		}
	}
}

func makeMountTree(t *testing.T) string {
	base := t.TempDir()
	write(t, filepath.Join(base, "before/x"), []byte("x"), 0o644)
	must(t, os.Mkdir(filepath.Join(base, "mnt"), 0o755))
	return base
}

// OneFileSystem records a directory on another device with its metadata
// and no entries. The device is simulated through the archiver's device
// hook, which the real test below cannot replace where mounting is not
// allowed.
func TestArchiveOneFileSystemSimulated(t *testing.T) {
	base := makeMountTree(t)
	write(t, filepath.Join(base, "mnt/inner/f"), []byte("on another device"), 0o644)
	mnt := filepath.Join(base, "mnt")
	var calls int
	checkOneFileSystem(t, base, func(a *Archiver) {
		a.devHook = func(p string, st *unix.Stat_t) uint64 {
			calls++
			if p == mnt || filepath.Dir(p) == mnt || filepath.Dir(filepath.Dir(p)) == mnt {
				return uint64(st.Dev) + 1
			}
			return uint64(st.Dev)
		}
	})
	if calls == 0 {
		t.Error("the device hook was never called")
	}
}

// OneFileSystem at a real mount point: a tmpfs mounted in the test's
// directory, which needs root and the right to mount.
func TestArchiveOneFileSystemMounted(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root; TestArchiveOneFileSystemSimulated covers the logic")
	}
	base := makeMountTree(t)
	mnt := filepath.Join(base, "mnt")
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m,mode=0755"); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v); TestArchiveOneFileSystemSimulated covers the logic", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	write(t, filepath.Join(mnt, "inner/f"), []byte("on another device"), 0o644)
	var a, b unix.Stat_t
	must(t, unix.Stat(base, &a))
	must(t, unix.Stat(mnt, &b))
	if a.Dev == b.Dev {
		t.Fatalf("the tmpfs at %s has the device of %s", mnt, base)
	}
	checkOneFileSystem(t, base, nil)
}
