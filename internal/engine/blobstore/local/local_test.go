package local_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cofferhq/coffer/internal/engine/blobstore"
	"github.com/cofferhq/coffer/internal/engine/blobstore/local"
	"github.com/cofferhq/coffer/internal/engine/blobstore/storetest"
)

func TestConformance(t *testing.T) {
	for _, o := range []local.Options{{}, {DirectWrites: true}} {
		t.Run(fmt.Sprintf("direct=%v", o.DirectWrites), func(t *testing.T) {
			storetest.Run(t, func(t *testing.T) blobstore.Backend {
				b, err := local.NewWithOptions(t.TempDir(), o)
				if err != nil {
					t.Fatal(err)
				}
				return b
			})
		})
	}
}

func newBackend(t *testing.T) (*local.Backend, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "repo", "nested")
	b, err := local.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b, dir
}

// tempFiles lists the temporary files below dir.
func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".tmp~") {
			found = append(found, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

func TestModes(t *testing.T) {
	b, dir := newBackend(t)
	storetest.Put(t, b, "packs/ab/abc", storetest.Data(1, 10))
	for _, tt := range []struct {
		path string
		want fs.FileMode
	}{
		{dir, fs.ModeDir | 0o700},
		{filepath.Join(dir, "packs"), fs.ModeDir | 0o700},
		{filepath.Join(dir, "packs", "ab"), fs.ModeDir | 0o700},
		{filepath.Join(dir, "packs", "ab", "abc"), 0o600},
	} {
		fi, err := os.Stat(tt.path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != tt.want {
			t.Errorf("%s has mode %v, want %v", tt.path, fi.Mode(), tt.want)
		}
	}
}

func TestFailedPutLeavesNoTempFile(t *testing.T) {
	b, dir := newBackend(t)
	data := storetest.Data(1, 1<<20)
	ctx := t.Context()
	cancelled, cancel := context.WithCancel(ctx)
	cancel()

	storetest.Put(t, b, "packs/ab/exists", data[:10])
	cases := []struct {
		name string
		put  func() error
	}{
		{"size mismatch", func() error { return b.Put(ctx, "packs/ab/short", bytes.NewReader(data), 1<<21) }},
		{"too long", func() error { return b.Put(ctx, "packs/ab/long", bytes.NewReader(data), 100) }},
		{"reader error", func() error {
			return b.Put(ctx, "packs/ab/err", iotestErrReader{bytes.NewReader(data)}, int64(len(data)))
		}},
		{"cancelled", func() error { return b.Put(cancelled, "packs/ab/cancelled", bytes.NewReader(data), int64(len(data))) }},
		{"exists", func() error { return b.Put(ctx, "packs/ab/exists", bytes.NewReader(data), int64(len(data))) }},
		{"succeeds", func() error { return b.Put(ctx, "packs/ab/ok", bytes.NewReader(data), int64(len(data))) }},
	}
	for _, tc := range cases {
		err := tc.put()
		if (err == nil) != (tc.name == "succeeds") {
			t.Errorf("%s: Put: %v", tc.name, err)
		}
		if tmp := tempFiles(t, dir); len(tmp) != 0 {
			t.Errorf("%s: temporary files left: %q", tc.name, tmp)
		}
	}
}

// iotestErrReader fails after the first read.
type iotestErrReader struct{ *bytes.Reader }

func (r iotestErrReader) Read(p []byte) (int, error) {
	if int64(r.Len()) < r.Size() {
		return 0, errors.New("device gone")
	}
	return r.Reader.Read(p[:min(len(p), 1000)])
}

func TestCrashLeftoversAreInvisible(t *testing.T) {
	b, dir := newBackend(t)
	ctx := t.Context()
	storetest.Put(t, b, "packs/ab/real", storetest.Data(1, 10))
	old := time.Now().Add(-2 * time.Hour)
	leftovers := map[string]time.Time{
		filepath.Join(dir, ".tmp~0123456789abcdef"):                old,
		filepath.Join(dir, "packs", "ab", ".tmp~fedcba9876543210"): old,
		filepath.Join(dir, "packs", "ab", ".tmp~young"):            time.Now(),
	}
	for p, mtime := range leftovers {
		if err := os.WriteFile(p, []byte("torn"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	// Junk that is no object: an invalid name and a directory of one.
	if err := os.MkdirAll(filepath.Join(dir, "lost+found"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "lost+found", "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}

	if diff := cmp.Diff([]string{"packs/ab/real"}, storetest.Names(t, b, "")); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}
	n, err := b.Clean(ctx, time.Hour)
	if err != nil || n != 2 {
		t.Errorf("Clean = %d, %v; want 2 removed", n, err)
	}
	if diff := cmp.Diff([]string{filepath.Join(dir, "packs", "ab", ".tmp~young")}, tempFiles(t, dir)); diff != "" {
		t.Errorf("temporary files after Clean (-want +got):\n%s", diff)
	}
	if got := storetest.Read(t, b, "packs/ab/real"); !bytes.Equal(got, storetest.Data(1, 10)) {
		t.Error("Clean damaged an object")
	}
}

func TestSymlinksAreNoObjects(t *testing.T) {
	b, dir := newBackend(t)
	ctx := t.Context()
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret")
	if err := os.WriteFile(secret, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	storetest.Put(t, b, "packs/ab/real", storetest.Data(1, 10))
	if err := os.Symlink(secret, filepath.Join(dir, "packs", "ab", "evil")); err != nil {
		t.Skipf("symlinks unsupported: %v", err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "packs", "cd")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"packs/ab/evil", "packs/cd/secret"} {
		if _, err := b.Stat(ctx, name); err == nil {
			t.Errorf("Stat(%q) through a symlink succeeded", name)
		}
		if rc, err := b.Open(ctx, name, 0, -1); err == nil {
			rc.Close()
			t.Errorf("Open(%q) through a symlink succeeded", name)
		}
	}
	if err := b.Delete(ctx, "packs/ab/evil"); err != nil {
		t.Errorf("Delete of a symlink: %v", err)
	}
	if _, err := os.Stat(secret); err != nil {
		t.Errorf("the symlink's target is gone: %v", err)
	}
	if diff := cmp.Diff([]string{"packs/ab/real"}, storetest.Names(t, b, "")); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}
}

func TestNameInTheWay(t *testing.T) {
	b, _ := newBackend(t)
	storetest.Put(t, b, "a/b/c", storetest.Data(1, 10))
	err := b.Put(t.Context(), "a/b", bytes.NewReader([]byte("x")), 1)
	if err == nil || errors.Is(err, blobstore.ErrExists) {
		t.Errorf("Put over a directory: %v, want an error other than ErrExists", err)
	}
	err = b.Put(t.Context(), "a/b/c/d", bytes.NewReader([]byte("x")), 1)
	if err == nil || errors.Is(err, blobstore.ErrExists) {
		t.Errorf("Put below an object: %v, want an error other than ErrExists", err)
	}
}

func TestErrorsNameLocationAndObject(t *testing.T) {
	b, dir := newBackend(t)
	_, err := b.Stat(t.Context(), "packs/ab/missing")
	if err == nil || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "packs/ab/missing") {
		t.Errorf("Stat error %q does not name %s and the object", err, dir)
	}
	if want := "local:" + dir; b.Location() != want {
		t.Errorf("Location() = %q, want %q", b.Location(), want)
	}
}

func TestNewOnAFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := local.New(file); err == nil {
		t.Error("New on a regular file succeeded")
	}
}

func TestReopen(t *testing.T) {
	b, dir := newBackend(t)
	storetest.Put(t, b, "config", storetest.Data(1, 100))
	b.Close()
	b2, err := local.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	if got := storetest.Read(t, b2, "config"); !bytes.Equal(got, storetest.Data(1, 100)) {
		t.Error("content changed across reopening")
	}
}
