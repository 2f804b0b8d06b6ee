//go:build linux

package archiver

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestArchiveCountsBrokenLinks checks that symlinks whose target does not
// exist are counted, whatever way they fail, and that links that resolve —
// relative to their own directory, absolute, to a directory — are not.
func TestArchiveCountsBrokenLinks(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "file"), []byte("x"), 0o644)
	write(t, filepath.Join(dir, "sub", "inner"), []byte("y"), 0o644)
	links := map[string]string{
		"ok-relative":     "file",
		"ok-absolute":     filepath.Join(dir, "file"),
		"ok-dir":          "sub",
		"sub/ok-up":       "../file",
		"sub/ok-sibling":  "inner",
		"dangling":        "no-such-file",
		"sub/dangling-up": "../inner", // resolved from sub/, where there is no ../inner
		"through-a-file":  "file/below",
		"loop-a":          "loop-b",
		"loop-b":          "loop-a",
	}
	for name, target := range links {
		must(t, os.Symlink(target, filepath.Join(dir, name)))
	}
	s := newMemSaver(t)
	var p Progress
	a := newArchiver(t, s, func(o *Options) { o.Progress = &p })
	_, st, err := a.Archive(context.Background(), s, dir)
	must(t, err)
	if st.Symlinks != uint64(len(links)) || st.BrokenLinks != 5 {
		t.Errorf("%d symlinks, %d broken; want %d and 5 (dangling, dangling-up, through-a-file, loop-a, loop-b)",
			st.Symlinks, st.BrokenLinks, len(links))
	}
	if p.BrokenLinks.Load() != st.BrokenLinks {
		t.Errorf("progress counted %d broken links, the stats %d", p.BrokenLinks.Load(), st.BrokenLinks)
	}
	if len(st.Errors) != 0 {
		t.Errorf("broken links are reported as errors: %v", st.Errors)
	}
}
