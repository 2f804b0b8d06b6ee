package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeTree makes a small tree with every kind of entry the corpus has.
func writeTree(t *testing.T, root string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "a/b"), 0o755))
	must(os.MkdirAll(filepath.Join(root, "empty"), 0o700))
	must(os.WriteFile(filepath.Join(root, "a/one.txt"), []byte("hello\n"), 0o644))
	must(os.WriteFile(filepath.Join(root, "a/b/run.sh"), []byte("#!/bin/sh\n"), 0o755))
	must(os.WriteFile(filepath.Join(root, "zero"), nil, 0o644))
	must(os.Symlink("a/one.txt", filepath.Join(root, "link")))
	must(os.Symlink("does-not-exist", filepath.Join(root, "dangling")))
	mt := time.Date(2025, 6, 1, 12, 0, 0, 123456789, time.UTC)
	for _, f := range []string{"a/one.txt", "a/b/run.sh", "zero"} {
		must(os.Chtimes(filepath.Join(root, f), mt, mt))
	}
}

func TestHashTreeAndDiff(t *testing.T) {
	ctx := context.Background()
	want := filepath.Join(t.TempDir(), "want")
	writeTree(t, want)
	w, err := hashTree(ctx, want)
	if err != nil {
		t.Fatal(err)
	}
	if n, b := w.files(); n != 3 || b != 16 {
		t.Errorf("files = %d, %d bytes; want 3, 16", n, b)
	}
	if w["link"].Target != "a/one.txt" || w["empty"].Perm != 0o700 || w["a/b/run.sh"].Perm != 0o755 {
		t.Errorf("tree: %+v", w)
	}

	// A faithful copy, under the absolute layout of a restore.
	target := t.TempDir()
	got := restoredRoot(target, want)
	if !strings.HasPrefix(got, target+"/") || !strings.HasSuffix(got, want) {
		t.Fatalf("restoredRoot(%s, %s) = %s", target, want, got)
	}
	writeTree(t, got)
	if err := verifyRestore(ctx, "copy", w, got); err != nil {
		t.Errorf("a faithful copy differs: %v", err)
	}

	// Every kind of difference is reported, by path.
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(got, "a/one.txt"), []byte("hellO\n"), 0o644)) // same size, other bytes, new mtime
	must(os.Chmod(filepath.Join(got, "a/b/run.sh"), 0o644))
	must(os.Remove(filepath.Join(got, "zero")))
	must(os.WriteFile(filepath.Join(got, "extra"), []byte("x"), 0o644))
	must(os.Remove(filepath.Join(got, "link")))
	must(os.Symlink("elsewhere", filepath.Join(got, "link")))
	g, err := hashTree(ctx, got)
	if err != nil {
		t.Fatal(err)
	}
	d := diffTrees(w, g, 20)
	if len(d) != 5 {
		t.Fatalf("%d differences, want 5:\n%s", len(d), strings.Join(d, "\n"))
	}
	for i, prefix := range []string{"a/b/run.sh: got file -rw-r--r--", "a/one.txt: got file", "extra: not in the corpus", "link: got symlink → \"elsewhere\"", "zero: missing"} {
		if !strings.HasPrefix(d[i], prefix) {
			t.Errorf("difference %d = %q, want it to start with %q", i, d[i], prefix)
		}
	}
	if d := diffTrees(w, g, 2); len(d) != 3 || d[2] != "… and 3 more differences" {
		t.Errorf("limited diff = %q", d)
	}
	err = verifyRestore(ctx, "coffer", w, got)
	if err == nil || !strings.Contains(err.Error(), "coffer's restore at "+got+" differs") {
		t.Errorf("verifyRestore = %v", err)
	}
	if err := verifyRestore(ctx, "coffer", w, filepath.Join(target, "nowhere")); err == nil {
		t.Error("a missing restore verified")
	}
}

func TestDiskUsage(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root)
	big := make([]byte, 10000)
	if err := os.WriteFile(filepath.Join(root, "a/big"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(root, "a/big"), filepath.Join(root, "big-again")); err != nil {
		t.Fatal(err)
	}
	// Like du -sb: every entry's apparent size, the hard link once.
	var want int64
	for _, p := range []string{".", "a", "a/b", "empty", "a/one.txt", "a/b/run.sh", "zero", "link", "dangling", "a/big"} {
		st, err := os.Lstat(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		want += st.Size()
	}
	got, err := diskUsage(root)
	if err != nil || got != want {
		t.Errorf("diskUsage = %d, %v; want %d", got, err, want)
	}
	if _, err := diskUsage(filepath.Join(root, "missing")); err == nil {
		t.Error("diskUsage of a missing directory succeeded")
	}
}
