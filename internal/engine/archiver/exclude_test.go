//go:build linux

package archiver

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cofferhq/coffer/internal/engine/tree"
)

// storedUnder lists the snapshot paths below prefix (slash-terminated),
// relative to it, sorted.
func storedUnder(nodes map[string]tree.Node, prefix string) []string {
	var out []string
	for p := range nodes {
		if rest, ok := strings.CutPrefix(p, prefix); ok {
			out = append(out, rest)
		}
	}
	slices.Sort(out)
	return out
}

// Exclude patterns behave as in a .gitignore file rooted at "/": names at
// any depth, negation, directory-only patterns, anchored paths and "**".
// Excluded entries are not stored nor descended into, and are counted.
func TestArchiveExclude(t *testing.T) {
	base := t.TempDir()
	for _, p := range []string{"a.log", "keep.log", "b.txt", "node_modules/x.js", "node_modules/deep/y.js",
		"sub/node_modules", "sub/c.log", "sub/keep.log", "cache/f", "sub/cache/f", "sub/deep/x.tmp", "sub/deep/x.txt",
		"deep/x.tmp"} {
		write(t, filepath.Join(base, p), []byte(p), 0o644)
	}
	patterns := []string{
		"*.log", "!keep.log", // names at any depth, and a negation
		"node_modules/",          // directories only: sub/node_modules is a file
		base + "/cache",          // anchored at "/": not sub/cache
		"**/sub/deep/*.tmp",      // "**"
		"vanishes-but-excluded/", // never exists
	}
	s := newMemSaver(t)
	a := newArchiver(t, s, func(o *Options) { o.Exclude = patterns })
	opened := map[string]bool{}
	a.hook = func(stage, p string) { opened[p] = true }
	a.opts.Workers = 1 // the hook's map
	root, st, err := a.Archive(context.Background(), s, base)
	must(t, err)
	if len(st.Errors) > 0 {
		t.Fatal(st.Errors)
	}
	got := storedUnder(s.walk(t, root), "")
	want := []string{"b.txt", "deep", "deep/x.tmp", "keep.log", "sub", "sub/cache", "sub/cache/f", "sub/deep", "sub/deep/x.txt",
		"sub/keep.log", "sub/node_modules"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("stored (-want +got):\n%s", diff)
	}
	// a.log, node_modules (once, not descended into), cache, sub/c.log,
	// sub/deep/x.tmp.
	if st.Excluded != 5 {
		t.Errorf("Excluded = %d, want 5", st.Excluded)
	}
	for _, p := range []string{"a.log", "sub/c.log", "node_modules/x.js", "cache/f"} {
		if opened[p] {
			t.Errorf("%s was opened", p)
		}
	}

	// The same through ArchivePaths, which matches the given paths too.
	root, st, err = a.ArchivePaths(context.Background(), s, []string{filepath.Join(base, "sub"), filepath.Join(base, "a.log"),
		filepath.Join(base, "node_modules/deep")})
	must(t, err)
	got = storedUnder(s.walk(t, root), rel(base)+"/")
	want = []string{"sub", "sub/cache", "sub/cache/f", "sub/deep", "sub/deep/x.txt", "sub/keep.log", "sub/node_modules"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ArchivePaths stored (-want +got):\n%s", diff)
	}
	// a.log and node_modules/deep (given), sub/c.log, sub/deep/x.tmp.
	if st.Excluded != 4 || len(st.Errors) > 0 {
		t.Errorf("ArchivePaths: Excluded = %d, want 4; errors %v", st.Excluded, st.Errors)
	}
	_, st, err = a.ArchivePaths(context.Background(), s, []string{filepath.Join(base, "a.log")})
	if err == nil || !strings.Contains(err.Error(), "excluded") || st.Excluded != 1 {
		t.Errorf("only an excluded path: err %v, %d excluded", err, st.Excluded)
	}
}

// An exclude pattern go-git would silently never match is refused, named.
func TestExcludeInvalid(t *testing.T) {
	s := newMemSaver(t)
	for _, p := range []string{"[", "a/b[", "", "   ", "!", "/", "!/", "#comment", "a**b", `x\`} {
		_, err := New(Options{Codec: s.codec, Exclude: []string{"*.ok", p}})
		if err == nil || !strings.Contains(err.Error(), strconv.Quote(p)) {
			t.Errorf("pattern %q: err %v, want one naming it", p, err)
		}
	}
	for _, p := range []string{"*.log", "/var/cache", "node_modules/", "!keep.log", "**/x", "a/**", "a/**/b", `\#hash`, `[ab]c`, `trailing\ `} {
		if _, err := New(Options{Codec: s.codec, Exclude: []string{p}}); err != nil {
			t.Errorf("pattern %q: %v", p, err)
		}
	}
}

// Removing an excluded entry during the walk is not an error.
func TestArchiveExcludeVanished(t *testing.T) {
	base := t.TempDir()
	write(t, filepath.Join(base, "a.log"), nil, 0o644)
	write(t, filepath.Join(base, "b"), nil, 0o644)
	s := newMemSaver(t)
	a := newArchiver(t, s, func(o *Options) { o.Exclude = []string{"*.log"} })
	r := a.newRun(context.Background(), s)
	d := &dir{abs: base, comps: components(base), nodes: make([]tree.Node, 1)}
	f, err := os.Open(base)
	must(t, err)
	defer f.Close()
	d.f, d.fd = f, int(f.Fd())
	must(t, r.entry(d, 0, "gone.log"))
	if d.nodes[0].Type != skipped || r.counts[cExcluded].Load() != 1 || len(r.errors) > 0 {
		t.Errorf("node %v, %d excluded, errors %v", d.nodes[0].Type, r.counts[cExcluded].Load(), r.errors)
	}
}
