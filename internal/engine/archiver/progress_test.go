//go:build linux

package archiver

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Progress can be read while the backup runs, names the file being read,
// and ends equal to the Stats.
func TestArchiveProgress(t *testing.T) {
	dir := t.TempDir()
	makeTree(t, dir)
	write(t, filepath.Join(dir, "vanishes"), []byte("soon gone"), 0o644)
	write(t, filepath.Join(dir, "skip.log"), []byte("excluded"), 0o644)
	s := newMemSaver(t)
	var p Progress
	a := newArchiver(t, s, func(o *Options) {
		o.Progress = &p
		o.Workers = 1 // one file at a time: CurrentPath is that file
		o.Exclude = []string{"*.log"}
	})
	a.hook = func(stage, rel string) {
		switch stage {
		case "open":
			if rel == "vanishes" {
				must(t, os.Remove(filepath.Join(dir, rel)))
			}
		case "read":
			if got, want := p.CurrentPath(), filepath.Join(dir, rel); got != want {
				t.Errorf("reading %s: CurrentPath %q", want, got)
			}
		}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // a poller, for the race detector
		defer wg.Done()
		for {
			_ = p.CurrentPath()
			_ = p.Files.Load() + p.Bytes.Load() + p.ReadBytes.Load() + p.FoundBytes.Load()
			select {
			case <-done:
				return
			default:
			}
		}
	}()
	if p.CurrentPath() != "" {
		t.Errorf("CurrentPath before the backup: %q", p.CurrentPath())
	}
	_, st, err := a.Archive(context.Background(), s, dir)
	close(done)
	wg.Wait()
	must(t, err)
	if len(st.Errors) != 1 || st.Excluded != 1 {
		t.Errorf("errors %v, %d excluded; want the vanished file and the excluded one", st.Errors, st.Excluded)
	}
	type counts struct {
		Files, Dirs, Symlinks, Others, FilesNew, FilesChanged, FilesUnchanged, Excluded, Errors uint64
		Bytes, ReadBytes, DataBlobs, TreeBlobs, AddedRawBytes, BrokenLinks                      uint64
	}
	want := counts{st.Files, st.Dirs, st.Symlinks, st.Others, st.FilesNew, st.FilesChanged, st.FilesUnchanged, st.Excluded,
		uint64(len(st.Errors)), st.Bytes, st.ReadBytes, st.DataBlobs, st.TreeBlobs, st.AddedRawBytes, st.BrokenLinks}
	got := counts{p.Files.Load(), p.Dirs.Load(), p.Symlinks.Load(), p.Others.Load(), p.FilesNew.Load(), p.FilesChanged.Load(),
		p.FilesUnchanged.Load(), p.Excluded.Load(), p.Errors.Load(), p.Bytes.Load(), p.ReadBytes.Load(), p.DataBlobs.Load(),
		p.TreeBlobs.Load(), p.AddedRawBytes.Load(), p.BrokenLinks.Load()}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("progress (-stats +progress):\n%s", diff)
	}
	if p.FoundFiles.Load() != st.Files+1 || p.FoundBytes.Load() != st.Bytes+uint64(len("soon gone")) {
		t.Errorf("found %d files of %d bytes; stored %d of %d and one vanished", p.FoundFiles.Load(), p.FoundBytes.Load(), st.Files, st.Bytes)
	}
	if p.Files.Load() == 0 || p.ReadBytes.Load() == 0 || p.AddedRawBytes.Load() == 0 {
		t.Error("nothing counted")
	}
}

// Sparse files are stored with their holes as zeros.
func TestArchiveSparseFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "sparse")
	f, err := os.Create(p)
	must(t, err)
	_, err = f.WriteAt([]byte("data in the middle"), 3<<20)
	must(t, err)
	must(t, f.Truncate(8<<20))
	must(t, f.Close())
	want, err := os.ReadFile(p)
	must(t, err)
	s := newMemSaver(t)
	root, st, err := newArchiver(t, s, nil).Archive(context.Background(), s, dir)
	must(t, err)
	n := s.walk(t, root)["sparse"]
	if got := s.content(t, n); string(got) != string(want) || n.Size != 8<<20 || st.Bytes != 8<<20 {
		t.Errorf("sparse file stored as %d bytes (size %d), want %d", len(got), n.Size, len(want))
	}
}
