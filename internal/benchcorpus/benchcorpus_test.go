package benchcorpus

import (
	"crypto/sha256"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/klauspost/compress/zstd"
)

const testSize = 32 << 20

// info is what the tests compare of one entry.
type info struct {
	Mode   fs.FileMode
	MTime  time.Time
	Size   int64
	Sum    [32]byte // regular files
	Target string   // symlinks
}

// manifest describes every entry below root by its slash path.
func manifest(t *testing.T, root string) map[string]info {
	t.Helper()
	m := map[string]info{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		in := info{Mode: fi.Mode(), MTime: fi.ModTime()}
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			in.Size, in.Sum = int64(len(b)), sha256.Sum256(b)
		case fi.Mode()&fs.ModeSymlink != 0:
			if in.Target, err = os.Readlink(p); err != nil {
				return err
			}
		}
		m[filepath.ToSlash(rel)] = in
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func generate(t *testing.T, size int64, seed uint64) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "corpus")
	if err := Generate(dir, size, seed); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestGenerateDeterministic(t *testing.T) {
	a, b := manifest(t, generate(t, testSize, 7)), manifest(t, generate(t, testSize, 7))
	if diff := cmp.Diff(a, b); diff != "" {
		t.Errorf("same seed, different corpus (-first +second):\n%s", diff)
	}
	c := manifest(t, generate(t, testSize, 8))
	same := 0
	for p, in := range c {
		if in.Size > 0 && a[p].Sum == in.Sum {
			same++
		}
	}
	if same > 0 {
		t.Errorf("seeds 7 and 8 share %d non-empty files at the same paths", same)
	}
}

// TestGenerateShape checks the corpus's proportions and compressibility
// roughly: these are what make benchmark numbers comparable to the peers'.
func TestGenerateShape(t *testing.T) {
	dir := generate(t, testSize, 1)
	m := manifest(t, dir)
	var total, text, medium, dups, large int64
	var empty, links, emptyDirs int
	bySum := map[[32]byte]int{}
	for p, in := range m {
		switch {
		case in.Mode.IsDir():
			if entries, _ := os.ReadDir(filepath.Join(dir, p)); len(entries) == 0 {
				emptyDirs++
			}
			continue
		case in.Mode&fs.ModeSymlink != 0:
			links++
			continue
		case in.Size == 0:
			empty++
			continue
		}
		total += in.Size
		bySum[in.Sum]++
		switch {
		case strings.HasPrefix(p, "projects/"):
			text += in.Size
		case strings.HasPrefix(p, "home/backup-copy/"):
			dups += in.Size
		case slices.Contains(largeNames, p):
			large += in.Size
		default:
			medium += in.Size
		}
	}
	pct := func(n int64) float64 { return 100 * float64(n) / float64(total) }
	t.Logf("%d entries, %d bytes: text %.1f%%, medium %.1f%%, duplicates %.1f%%, large %.1f%%",
		len(m), total, pct(text), pct(medium), pct(dups), pct(large))
	for _, c := range []struct {
		name   string
		got    float64
		lo, hi float64
	}{
		{"total size (% of requested)", 100 * float64(total) / testSize, 97, 101},
		{"text %", pct(text), 19, 25},
		{"medium %", pct(medium), 24, 31},
		{"duplicates %", pct(dups), 1, 3},
		{"large %", pct(large), 45, 51},
	} {
		if c.got < c.lo || c.got > c.hi {
			t.Errorf("%s = %.1f, want %.0f–%.0f", c.name, c.got, c.lo, c.hi)
		}
	}
	if empty != 12 || links != 6 || emptyDirs < 1 {
		t.Errorf("%d empty files, %d symlinks, %d empty dirs; want 12, 6, ≥1", empty, links, emptyDirs)
	}
	dupFiles := 0
	for _, n := range bySum {
		if n > 1 {
			dupFiles++
		}
	}
	if dupFiles == 0 {
		t.Error("no two files have the same content")
	}
	checkRatios(t, dir)
}

// checkRatios compresses each kind of file with zstd's default level and
// checks the ratio lies near the reference corpus's.
func checkRatios(t *testing.T, dir string) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	ratio := func(paths ...string) float64 {
		var in, out int
		for _, p := range paths {
			b, err := os.ReadFile(filepath.Join(dir, p))
			if err != nil {
				t.Fatal(err)
			}
			in += len(b)
			out += len(enc.EncodeAll(b, nil))
		}
		return float64(in) / float64(out)
	}
	var texts, libs []string
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case d.Type().IsRegular() && strings.HasPrefix(rel, "projects/"):
			texts = append(texts, rel)
		case d.Type().IsRegular() && strings.HasSuffix(rel, ".so"):
			libs = append(libs, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		got    float64
		lo, hi float64
	}{
		{"text files", ratio(texts...), 2.2, 4.5},
		{"libraries", ratio(libs...), 1.3, 2.0},
		{"log", ratio("var/log/app.log"), 2.9, 4.0},
		{"database", ratio("data/db/main.db"), 3.6, 5.0},
		{"random", ratio("data/vm.img"), 0.99, 1.01},
	} {
		t.Logf("zstd ratio of %s: %.2f", c.name, c.got)
		if c.got < c.lo || c.got > c.hi {
			t.Errorf("zstd ratio of %s = %.2f, want %.1f–%.1f", c.name, c.got, c.lo, c.hi)
		}
	}
}

func TestMutate(t *testing.T) {
	dirs := []string{generate(t, testSize, 3), generate(t, testSize, 3)}
	before := manifest(t, dirs[0])
	for _, d := range dirs {
		if err := Mutate(d, 1, 3); err != nil {
			t.Fatal(err)
		}
	}
	after := manifest(t, dirs[0])
	if diff := cmp.Diff(after, manifest(t, dirs[1])); diff != "" {
		t.Fatalf("the same mutation of the same corpus differs (-first +second):\n%s", diff)
	}

	var files, changed, added, removed, renamed int
	var changedBytes, totalBytes int64
	for p, in := range before {
		if !in.Mode.IsRegular() {
			continue
		}
		files++
		totalBytes += in.Size
		a, ok := after[p]
		switch {
		case !ok:
			removed++
		case a.Sum != in.Sum:
			changed++
			if slices.Contains(largeNames, p) {
				if d := a.Size - in.Size; d != 0 && (d < 1 || d > 15000) {
					t.Errorf("%s grew by %d bytes, want 1–15000 (insertions)", p, d)
				}
			}
		}
	}
	for p, a := range after {
		if _, ok := before[p]; !ok {
			if strings.Contains(p, "-renamed-1/") {
				renamed++
			} else if a.Mode.IsRegular() {
				added++
				changedBytes += a.Size
			}
		}
	}
	largeChanged := 0
	for _, n := range largeNames {
		if before[n].Sum != after[n].Sum {
			largeChanged++
		}
	}
	t.Logf("%d files: %d changed, %d added (%d bytes), %d removed or renamed, %d entries renamed",
		files, changed, added, changedBytes, removed, renamed)
	switch {
	case largeChanged != 3:
		t.Errorf("%d of the 4 large files changed, want 3", largeChanged)
	case renamed == 0:
		t.Error("no directory was renamed")
	case changed < files*3/100 || changed > files*6/100:
		t.Errorf("%d of %d files changed, want about 4 %%", changed, files)
	case added < files/100 || changedBytes < totalBytes/200 || changedBytes > totalBytes/20:
		t.Errorf("%d files (%d bytes) added to %d (%d bytes), want about 1.25 %% of the files and 1 %% of the bytes",
			added, changedBytes, files, totalBytes)
	}
}

// TestMutateManySeeds: a renamed directory whose subdirectories also
// changed once made the final chtimes pass fail on their old paths.
func TestMutateManySeeds(t *testing.T) {
	for seed := range uint64(12) {
		d := generate(t, 4<<20, seed)
		if err := Mutate(d, 1, seed); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
	}
}
