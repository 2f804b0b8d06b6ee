package agent

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestAbsPaths: the paths of an ad-hoc backup (coffer backup PATH...) are
// made absolute against the working directory and clean; an empty one is
// refused, not taken for the working directory.
func TestAbsPaths(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	cwd, err := os.Getwd() // dir with symlinks the way the process sees it
	if err != nil {
		t.Fatal(err)
	}
	got, err := absPaths([]string{"docs", "./a/../b/", "/etc", "../up"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(cwd, "docs"), filepath.Join(cwd, "b"), "/etc", filepath.Join(filepath.Dir(cwd), "up")}
	if !slices.Equal(got, want) {
		t.Errorf("absPaths = %q, want %q", got, want)
	}
	for _, in := range [][]string{{""}, {"/etc", ""}, nil} {
		if _, err := absPaths(in); err == nil {
			t.Errorf("absPaths(%q) was accepted", in)
		}
	}
}
