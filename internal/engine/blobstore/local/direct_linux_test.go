package local_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/cofferhq/coffer/internal/engine/blobstore/local"
	"github.com/cofferhq/coffer/internal/engine/blobstore/storetest"
)

// TestPutDirect writes objects around the sizes and alignments where Put
// switches between direct and buffered writes, and reads each back, with
// Options.DirectWrites. On a
// file system with direct I/O (the ext4 of the project's machines) it
// also checks that the aligned part of a large object was written past
// the page cache, the point of using it; on tmpfs (/dev/shm) the round
// trips alone are checked.
func TestPutDirect(t *testing.T) {
	dirs := map[string]string{"temp dir": t.TempDir()}
	if shm, err := os.MkdirTemp("/dev/shm", "coffer-local-test-"); err == nil {
		t.Cleanup(func() { os.RemoveAll(shm) })
		dirs["tmpfs"] = shm
	}
	const mib = 1 << 20
	data := storetest.Data(1, 20*mib+1)
	for fsName, dir := range dirs {
		b, err := local.NewWithOptions(dir, local.Options{DirectWrites: true})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		for _, tc := range []struct {
			name string
			data []byte
		}{
			{"under the direct minimum", data[:mib-1]},
			{"the direct minimum", data[:mib]},
			{"a byte over", data[:mib+1]},
			{"several pieces and a tail", data[:17*mib+4097]},
			{"an unaligned buffer", data[1 : 2*mib+1]},
		} {
			t.Run(fsName+"/"+tc.name, func(t *testing.T) {
				name := fmt.Sprintf("packs/00/%x", len(tc.data)^int(tc.data[0]))
				if err := b.Put(t.Context(), name, bytes.NewReader(tc.data), int64(len(tc.data))); err != nil {
					t.Fatal(err)
				}
				if got := storetest.Read(t, b, name); !bytes.Equal(got, tc.data) {
					t.Fatalf("read back %d bytes, want the %d written", len(got), len(tc.data))
				}
			})
		}
	}

	// The aligned part of a pack is not left in the page cache, where the
	// file system supports direct I/O.
	dir := dirs["temp dir"]
	b, err := local.NewWithOptions(dir, local.Options{DirectWrites: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	obj := data[:8*mib+100]
	if err := b.Put(t.Context(), "packs/01/cache", bytes.NewReader(obj), int64(len(obj))); err != nil {
		t.Fatal(err)
	}
	if !supportsDirect(t, dir) {
		t.Skipf("%s takes no O_DIRECT", dir)
	}
	if n := residentPages(t, filepath.Join(dir, "packs/01/cache")); n > 1 {
		t.Errorf("%d pages of a freshly put 8 MiB object are in the page cache: want at most the tail's", n)
	}
}

func supportsDirect(t *testing.T, dir string) bool {
	f, err := os.OpenFile(filepath.Join(dir, "probe"), os.O_WRONLY|os.O_CREATE|unix.O_DIRECT, 0o600)
	if err != nil {
		return false
	}
	f.Close()
	return os.Remove(filepath.Join(dir, "probe")) == nil
}

// residentPages counts the pages of the file at path in the page cache.
func residentPages(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	pages := make([]byte, (len(m)+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)),
		uintptr(unsafe.Pointer(&pages[0]))); errno != 0 {
		t.Fatal(errno)
	}
	n := 0
	for _, p := range pages {
		n += int(p & 1)
	}
	return n
}
