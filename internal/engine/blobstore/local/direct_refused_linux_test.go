package local

import (
	"bytes"
	"io"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestPutDirectRefusedAtOpen stands in a file system that refuses direct
// I/O at open (EINVAL, as FUSE and some network file systems do): Put
// falls back to an ordinary file and leaves no temporary file behind.
// O_CREAT|O_DIRECTORY is refused with EINVAL since Linux 6.4; on older
// kernels the test has nothing to stand in with.
func TestPutDirectRefusedAtOpen(t *testing.T) {
	dir := t.TempDir()
	probe := filepath.Join(dir, "probe")
	if fd, err := unix.Open(probe, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_DIRECTORY, 0o600); err == nil {
		unix.Close(fd)
		t.Skip("this kernel does not refuse O_CREAT|O_DIRECTORY")
	} else if err != unix.EINVAL {
		t.Skipf("O_CREAT|O_DIRECTORY fails with %v, not EINVAL", err)
	}
	old := oDirect
	oDirect = unix.O_DIRECTORY
	defer func() { oDirect = old }()

	b, err := NewWithOptions(dir, Options{DirectWrites: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	data := bytes.Repeat([]byte("coffer"), 1<<19) // 3 MiB
	if err := b.Put(t.Context(), "packs/00/refused", bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("Put when direct I/O is refused at open: %v", err)
	}
	rc, err := b.Open(t.Context(), "packs/00/refused", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes (%v), want the %d written", len(got), err, len(data))
	}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), tempPrefix) {
			t.Errorf("temporary file left behind: %s", p)
		}
		return nil
	})
}
