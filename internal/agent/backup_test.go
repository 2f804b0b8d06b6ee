package agent

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
)

// makeTree writes a small tree with files of several kinds and sizes
// (some spanning several chunks) and returns how many regular files it
// holds.
func makeTree(t *testing.T, dir string) int {
	t.Helper()
	files := map[string][]byte{
		"a.txt":              []byte("hello"),
		"empty":              nil,
		"big.bin":            repotest.Random(1, 700<<10),
		"text/compressible":  bytes.Repeat([]byte("coffer backs up "), 40<<10),
		"text/deep/er/c.txt": []byte("deep"),
		"spaced name ü.txt":  []byte("unicode"),
	}
	for p, b := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, b, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	must(t, os.Mkdir(filepath.Join(dir, "emptydir"), 0o700))
	must(t, os.Symlink("a.txt", filepath.Join(dir, "link")))
	return len(files)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// sameTree compares the tree at want with the one at got: types, modes,
// file contents, symlink targets.
func sameTree(t *testing.T, want, got string) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(want, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(want, p)
		wi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		gi, err := os.Lstat(filepath.Join(got, rel))
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			return nil
		}
		n++
		if wi.Mode() != gi.Mode() {
			t.Errorf("%s: mode %v, want %v", rel, gi.Mode(), wi.Mode())
		}
		switch {
		case wi.Mode().IsRegular():
			wb, _ := os.ReadFile(p)
			gb, _ := os.ReadFile(filepath.Join(got, rel))
			if !bytes.Equal(wb, gb) {
				t.Errorf("%s: content differs (%d bytes, want %d)", rel, len(gb), len(wb))
			}
			if !wi.ModTime().Equal(gi.ModTime()) {
				t.Errorf("%s: mtime %v, want %v", rel, gi.ModTime(), wi.ModTime())
			}
		case wi.Mode()&os.ModeSymlink != 0:
			wt, _ := os.Readlink(p)
			gt, _ := os.Readlink(filepath.Join(got, rel))
			if wt != gt {
				t.Errorf("%s: target %q, want %q", rel, gt, wt)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	count := 0
	filepath.WalkDir(got, func(string, fs.DirEntry, error) error { count++; return nil })
	if count != n {
		t.Errorf("%s holds %d entries, want %d", got, count, n)
	}
}

// settle waits until files written now count as settled for the change
// cache: the archiver does not trust the stat of a file changed within
// two seconds of its read (see archiver.Options.OnFile).
func settle() { time.Sleep(2100 * time.Millisecond) }

func TestBackupAndRestore(t *testing.T) {
	s := newFakeServer(t)
	a := s.agent(t)
	src := t.TempDir()
	nfiles := makeTree(t, src)
	settle()
	ctx := context.Background()

	var calls atomic.Int32
	res, err := a.Backup(ctx, BackupRequest{Paths: []string{src}}, func(p Progress) { calls.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	st := res.Stats
	if res.State != coffer.JobSucceeded || st.Files != uint64(nfiles) || st.FilesNew != uint64(nfiles) || st.FilesUnchanged != 0 ||
		st.Symlinks != 1 || st.ReadBytes != st.LogicalBytes || st.AddedBytes == 0 || st.UploadedBytes < st.AddedBytes || st.DataBlobs == 0 ||
		st.AddedBytes >= st.ReadBytes || len(res.Errors) != 0 || res.Duration <= 0 {
		t.Fatalf("first backup: %+v", res)
	}
	if calls.Load() == 0 {
		t.Error("onProgress never called")
	}
	b1 := s.backup(res.BackupID)
	if b1.state != coffer.JobSucceeded || b1.commit.ParentID != "" || b1.commit.Stats != st {
		t.Errorf("server's record: %+v", b1)
	}

	// Change one file, add one: the rest is not read again.
	must(t, os.WriteFile(filepath.Join(src, "a.txt"), []byte("hello, again"), 0o640))
	must(t, os.WriteFile(filepath.Join(src, "new.txt"), []byte("new file"), 0o600))
	res2, err := a.Backup(ctx, BackupRequest{Paths: []string{src}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	st = res2.Stats
	if res2.State != coffer.JobSucceeded || st.Files != uint64(nfiles+1) || st.FilesNew != 1 || st.FilesChanged != 1 ||
		st.FilesUnchanged != uint64(nfiles-1) || st.ReadBytes != uint64(len("hello, again")+len("new file")) {
		t.Fatalf("second backup: %+v", res2)
	}
	if p := s.backup(res2.BackupID).commit.ParentID; p != res.BackupID {
		t.Errorf("parent %q, want %q", p, res.BackupID)
	}

	// Restore everything: the tree appears under its absolute path.
	dst := t.TempDir()
	var rcalls atomic.Int32
	rres, err := a.Restore(ctx, RestoreRequest{BackupID: res2.BackupID, Destination: dst}, func(RestoreProgress) { rcalls.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	if rres.State != coffer.JobSucceeded || rres.Stats.Files != uint64(nfiles+1) || rres.Stats.Bytes != res2.Stats.LogicalBytes || rcalls.Load() == 0 {
		t.Fatalf("restore: %+v", rres)
	}
	sameTree(t, src, filepath.Join(dst, src))
	if r := s.restore(rres.RestoreID); r.state != coffer.JobSucceeded || r.finish.Stats != rres.Stats {
		t.Errorf("server's record: %+v", r)
	}

	// Restore one directory of the first backup, with a relative destination.
	t.Chdir(t.TempDir())
	rel := strings.TrimPrefix(src, "/") + "/text"
	rres, err = a.Restore(ctx, RestoreRequest{BackupID: res.BackupID, Destination: "out", Paths: []string{rel}}, nil)
	if err != nil || rres.State != coffer.JobSucceeded || rres.Stats.Files != 2 {
		t.Fatalf("restore of %s: %+v, %v", rel, rres, err)
	}
	sameTree(t, filepath.Join(src, "text"), filepath.Join("out", rel))
}

func TestBackupMissingBlobs(t *testing.T) {
	s := newFakeServer(t)
	a := s.agent(t)
	src := t.TempDir()
	nfiles := makeTree(t, src)
	settle()
	ctx := context.Background()
	if _, err := a.Backup(ctx, BackupRequest{Paths: []string{src}}, nil); err != nil {
		t.Fatal(err)
	}
	// The repository lost blobs the cache promises: the first commit is
	// refused, and the agent backs up again reading every file.
	var commits atomic.Int32
	s.commitHook = func(id string, w http.ResponseWriter) bool {
		if commits.Add(1) == 1 {
			writeJSON(w, 409, map[string]any{"code": "missing_blobs", "detail": "1 blob is missing", "metadata": map[string]any{"missing": []string{"00"}}})
			return true
		}
		return false
	}
	res, err := a.Backup(ctx, BackupRequest{Paths: []string{src}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if commits.Load() != 2 || res.State != coffer.JobSucceeded || res.Stats.FilesUnchanged != 0 || res.Stats.Files != uint64(nfiles) ||
		res.Stats.ReadBytes != res.Stats.LogicalBytes {
		t.Fatalf("%d commits; result %+v", commits.Load(), res)
	}
	if p := s.backup(res.BackupID).commit.ParentID; p != "" {
		t.Errorf("parent %q after a full backup", p)
	}

	// Refused twice: the backup fails.
	commits.Store(0)
	s.commitHook = func(id string, w http.ResponseWriter) bool {
		commits.Add(1)
		writeJSON(w, 409, map[string]any{"code": "missing_blobs", "detail": "1 blob is missing"})
		return true
	}
	res, err = a.Backup(ctx, BackupRequest{Paths: []string{src}}, nil)
	if err == nil || res.State != coffer.JobFailed || commits.Load() != 2 {
		t.Fatalf("%d commits; %+v %v", commits.Load(), res, err)
	}
	if b := s.backup(res.BackupID); b.state != coffer.JobFailed || !strings.Contains(b.fail.Error, "missing") {
		t.Errorf("server's record: %+v", b)
	}
}

func TestBackupDamagedCache(t *testing.T) {
	s := newFakeServer(t)
	a := s.agent(t)
	src := t.TempDir()
	nfiles := makeTree(t, src)
	settle()
	ctx := context.Background()
	if _, err := a.Backup(ctx, BackupRequest{Paths: []string{src}}, nil); err != nil {
		t.Fatal(err)
	}
	caches, _ := filepath.Glob(filepath.Join(a.opts.StateDir, "cache", "*.cache"))
	if len(caches) != 1 {
		t.Fatalf("cache files %v", caches)
	}
	b, _ := os.ReadFile(caches[0])
	b[len(b)/2] ^= 0xff
	must(t, os.WriteFile(caches[0], b, 0o600))

	res, err := a.Backup(ctx, BackupRequest{Paths: []string{src}}, nil)
	if err != nil || res.State != coffer.JobSucceeded || res.Stats.FilesNew != uint64(nfiles) || res.Stats.FilesUnchanged != 0 {
		t.Fatalf("%+v %v", res, err)
	}
	// The cache is good again: the next backup reads nothing.
	res, err = a.Backup(ctx, BackupRequest{Paths: []string{src}}, nil)
	if err != nil || res.Stats.FilesUnchanged != uint64(nfiles) || res.Stats.ReadBytes != 0 {
		t.Fatalf("%+v %v", res, err)
	}
	// Full reads every file, and still leaves a cache.
	res, err = a.Backup(ctx, BackupRequest{Paths: []string{src}, Full: true}, nil)
	if err != nil || res.Stats.FilesUnchanged != 0 || res.Stats.ReadBytes != res.Stats.LogicalBytes {
		t.Fatalf("full: %+v %v", res, err)
	}
	res, err = a.Backup(ctx, BackupRequest{Paths: []string{src}}, nil)
	if err != nil || res.Stats.FilesUnchanged != uint64(nfiles) {
		t.Fatalf("after full: %+v %v", res, err)
	}
}

// hangUploads makes every upload wait until its client leaves, and
// signals arrived when one comes in.
func hangUploads(s *fakeServer) chan struct{} {
	arrived := make(chan struct{}, 1000)
	s.uploadHook = func(r *http.Request) bool {
		io.Copy(io.Discard, r.Body)
		arrived <- struct{}{}
		<-r.Context().Done()
		return true
	}
	return arrived
}

func TestBackupCanceledOnServer(t *testing.T) {
	s := newFakeServer(t)
	a := s.agent(t)
	src := t.TempDir()
	makeTree(t, src)
	hangUploads(s)
	id := s.queue(src)
	s.mu.Lock()
	s.cancel[id] = true // the next progress report learns it
	s.mu.Unlock()
	res, err := a.Backup(context.Background(), BackupRequest{BackupID: id}, nil)
	if !errors.Is(err, context.Canceled) || res.State != coffer.JobCanceled || res.BackupID != id {
		t.Fatalf("%+v %v", res, err)
	}
	if b := s.backup(id); b.state != coffer.JobCanceled || b.fail.Error != errCanceledOnServer.Error() || b.snapshots != 0 {
		t.Errorf("server's record: %+v", b)
	}
	if ids := a.jobs.ids(); len(ids) != 0 {
		t.Errorf("jobs still registered: %v", ids)
	}
}

func TestBackupInterrupted(t *testing.T) {
	s := newFakeServer(t)
	a := s.agent(t)
	src := t.TempDir()
	makeTree(t, src)
	arrived := hangUploads(s)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-arrived
		cancel() // Ctrl-C
	}()
	res, err := a.Backup(ctx, BackupRequest{Paths: []string{src}}, nil)
	if !errors.Is(err, context.Canceled) || res.State != coffer.JobCanceled {
		t.Fatalf("%+v %v", res, err)
	}
	if b := s.backup(res.BackupID); b.state != coffer.JobCanceled || b.snapshots != 0 {
		t.Errorf("server's record: %+v", b)
	}
}

func TestBackupFails(t *testing.T) {
	s := newFakeServer(t)
	a := s.agent(t)
	ctx := context.Background()
	res, err := a.Backup(ctx, BackupRequest{Paths: []string{filepath.Join(t.TempDir(), "missing")}}, nil)
	if err == nil || res.State != coffer.JobFailed || res.BackupID == "" {
		t.Fatalf("%+v %v", res, err)
	}
	if b := s.backup(res.BackupID); b.state != coffer.JobFailed || !strings.Contains(b.fail.Error, "none of the paths") {
		t.Errorf("server's record: %+v", b)
	}
	// A backup the server does not know: nothing to record.
	res, err = a.Backup(ctx, BackupRequest{BackupID: "nope"}, nil)
	if err == nil || res.State != coffer.JobFailed || !strings.Contains(err.Error(), "backup_not_found") {
		t.Fatalf("%+v %v", res, err)
	}
	if _, err := a.Backup(ctx, BackupRequest{}, nil); err == nil || !strings.Contains(err.Error(), "no paths") {
		t.Errorf("no paths: %v", err)
	}
}

func TestBackupPartial(t *testing.T) {
	if os.Geteuid() == 0 {
		// root reads a 0000 file; a path that vanishes gives the same outcome.
		t.Log("running as root: using a missing path for the partial backup")
	}
	s := newFakeServer(t)
	a := s.agent(t)
	src := t.TempDir()
	makeTree(t, src)
	missing := filepath.Join(t.TempDir(), "gone")
	res, err := a.Backup(context.Background(), BackupRequest{Paths: []string{src, missing}}, nil)
	if err != nil || res.State != coffer.JobPartial || len(res.Errors) != 1 || res.Errors[0].Path != missing || res.Stats.ErrorCount != 1 {
		t.Fatalf("%+v %v", res, err)
	}
	if b := s.backup(res.BackupID); b.state != coffer.JobPartial || len(b.commit.Errors) != 1 {
		t.Errorf("server's record: %+v", b)
	}
}
