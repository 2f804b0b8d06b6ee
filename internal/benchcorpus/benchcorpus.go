// Package benchcorpus generates the deterministic file tree that Coffer's
// backup benchmarks and round-trip tests run on, shaped like a server's
// data (the shape of the reference generator gen-dataset.sh in the
// project's shared bench kit, on which the restic and borg figures we
// compare against were measured):
//
//	22 %  small source-like text files (100 B – 96 KiB, log-uniform) in nested
//	      project directories (projects/projNN-*/…, one project per ~40 MiB of
//	      text, at least 2), plus 12 empty files, 6 symlinks and an empty dir
//	28 %  medium files (128 KiB – 16 MiB): semi-compressible binaries (.so),
//	      random (.jpg, .tar.gz) and database pages (.sqlite)
//	 2 %  exact duplicates of other files (home/backup-copy/)
//	48 %  four large files: two random (data/vm.img, data/media.mkv), a log
//	      (var/log/app.log, ≈3.4× with zstd) and a database (data/db/main.db, ≈4.2×)
//
// Text compresses ≈3.4×, binaries ≈1.6×. The same size and seed give the
// same bytes, names, modes and modification times; Mutate then changes
// about 5 % of the corpus the way a day of use would, for incremental
// backups. Generation writes files in parallel, one goroutine per core,
// splitting large files into segments.
package benchcorpus

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Fractions of the corpus size, in percent.
const (
	textPercent      = 22
	mediumPercent    = 28
	duplicatePercent = 2
	largePercent     = 48
)

// The names of the four large files, in the order of largeKinds.
var (
	largeNames = []string{"data/vm.img", "data/media.mkv", "var/log/app.log", "data/db/main.db"}
	largeKinds = []kind{kindRandom, kindRandom, kindLog, kindDB}
)

// epoch is the base of the corpus's modification times.
var epoch = time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)

// segmentSize is the unit of work of generation: files larger than this are
// written in segments, in parallel, each from its own random stream.
const segmentSize = 8 << 20

// file is one planned regular file. Its content depends only on the seed,
// its stream number, its kind and its size.
type file struct {
	path   string
	kind   kind
	size   int64
	stream uint64
	mode   os.FileMode
	mtime  time.Time
}

type symlink struct {
	path, target string
	mtime        time.Time
}

// plan is the whole corpus before anything is written.
type plan struct {
	dirs     []string // every directory, parents first
	files    []file
	symlinks []symlink
	dirTimes map[string]time.Time
}

// Generate creates a corpus of about size bytes in dir, which must be absent
// or empty. The same size and seed give an identical tree.
func Generate(dir string, size int64, seed uint64) error {
	if size < 1<<20 {
		return fmt.Errorf("generate corpus: size %d is below 1 MiB", size)
	}
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return fmt.Errorf("generate corpus in %s: the directory is not empty", dir)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("generate corpus: %w", err)
	}
	v := newVocab(seed)
	p := newPlan(v, size, seed)
	if err := p.write(dir, v, seed); err != nil {
		return fmt.Errorf("generate corpus in %s: %w", dir, err)
	}
	return nil
}

// planner draws the corpus's layout from one random stream, so the plan is
// the same whatever the machine.
type planner struct {
	r      *rand.Rand
	v      *vocab
	p      *plan
	stream uint64
	names  map[string]bool // every path taken
}

func newPlan(v *vocab, size int64, seed uint64) *plan {
	pl := &planner{r: rand.New(rand.NewPCG(seed, 0x706c616e)), v: v,
		p: &plan{dirTimes: map[string]time.Time{}}, names: map[string]bool{}}
	pl.large(size * largePercent / 100)
	textFiles := pl.text(size * textPercent / 100)
	mediumFiles := pl.medium(size*mediumPercent/100, min(16<<20, size*largePercent/100/8))
	pl.duplicates(size*duplicatePercent/100, append(textFiles, mediumFiles...))
	return pl.p
}

func (pl *planner) mtime() time.Time {
	return epoch.Add(time.Duration(pl.r.Int64N(int64(300 * 24 * time.Hour))))
}

// dir adds directory d and its parents.
func (pl *planner) dir(d string) {
	if d == "." || pl.names[d] {
		return
	}
	pl.dir(path.Dir(d))
	pl.names[d] = true
	pl.p.dirs = append(pl.p.dirs, d)
	pl.p.dirTimes[d] = pl.mtime()
}

func (pl *planner) add(p string, k kind, size int64, mode os.FileMode) int {
	pl.dir(path.Dir(p))
	pl.names[p] = true
	pl.stream++
	pl.p.files = append(pl.p.files, file{path: p, kind: k, size: size, stream: pl.stream, mode: mode, mtime: pl.mtime()})
	return len(pl.p.files) - 1
}

// unique returns dir/base+ext, or a numbered variant if that is taken.
func (pl *planner) unique(dir, base, ext string) string {
	p := path.Join(dir, base+ext)
	for i := 2; pl.names[p]; i++ {
		p = path.Join(dir, base+"-"+strconv.Itoa(i)+ext)
	}
	return p
}

func (pl *planner) large(total int64) {
	for i, name := range largeNames {
		pl.add(name, largeKinds[i], total/4, 0o644)
	}
}

var textExts = []string{".go", ".go", ".go", ".c", ".h", ".py", ".md", ".txt", ".json", ".yaml"}

// logUniform draws from [lo, hi] with a uniform logarithm.
func (pl *planner) logUniform(lo, hi int64) int64 {
	return int64(math.Exp(math.Log(float64(lo)) + pl.r.Float64()*(math.Log(float64(hi))-math.Log(float64(lo)))))
}

// text plans the projects of small text files and returns their indexes.
func (pl *planner) text(total int64) []int {
	projects := max(2, int(total/(40<<20)))
	var dirs [][]string
	for i := range projects {
		root := fmt.Sprintf("projects/proj%02d-%s", i, pl.v.words[40+pl.r.IntN(400)])
		dirs = append(dirs, []string{root})
	}
	var out []int
	var written int64
	for n := 0; written < total; n++ {
		proj := n % projects
		ds := &dirs[proj]
		// About one directory per 12 files, at most 6 levels deep.
		if pl.r.IntN(12) == 0 {
			parent := (*ds)[pl.r.IntN(len(*ds))]
			if depth(parent) < 7 {
				d := pl.unique(parent, pl.v.words[27+pl.r.IntN(600)], "")
				pl.dir(d) // some stay empty
				*ds = append(*ds, d)
			}
		}
		d := (*ds)[pl.r.IntN(len(*ds))]
		size := min(pl.logUniform(100, 96<<10), total-written)
		mode := os.FileMode(0o644)
		if pl.r.IntN(20) == 0 {
			mode = 0o755
		}
		out = append(out, pl.add(pl.unique(d, pl.v.words[27+pl.r.IntN(2000)], textExts[pl.r.IntN(len(textExts))]), kindText, size, mode))
		written += size
	}
	for i := range 12 {
		ds := dirs[i%projects]
		pl.add(pl.unique(ds[pl.r.IntN(len(ds))], "empty", ".txt"), kindEmpty, 0, 0o644)
	}
	pl.dir(dirs[0][0] + "/build/empty")
	for i := range 6 {
		src := pl.p.files[out[pl.r.IntN(len(out))]].path
		d := path.Dir(src)
		target := path.Base(src)
		switch i {
		case 4:
			target = "../../../data/vm.img" // across the tree (may dangle)
		case 5:
			target = "does-not-exist" // dangling
		}
		p := pl.unique(d, "link", "")
		pl.names[p] = true
		pl.p.symlinks = append(pl.p.symlinks, symlink{path: p, target: target, mtime: pl.mtime()})
	}
	return out
}

// medium plans the medium-sized binaries, random files and databases, of
// at most maxSize bytes (half a large file in small corpora).
func (pl *planner) medium(total, maxSize int64) []int {
	kinds := []struct {
		dir, ext string
		kind     kind
	}{
		{"usr/lib", ".so", kindBinary},
		{"home/photos", ".jpg", kindRandom},
		{"srv/archives", ".tar.gz", kindRandom},
		{"var/lib/app", ".sqlite", kindDB},
	}
	var out []int
	var written int64
	for n := 0; written < total; n++ {
		k := kinds[n%len(kinds)]
		size := min(pl.logUniform(min(128<<10, maxSize/2), maxSize), total-written)
		mode := os.FileMode(0o644)
		if k.kind == kindBinary {
			mode = 0o755
		}
		out = append(out, pl.add(pl.unique(k.dir, pl.v.words[27+pl.r.IntN(2000)], k.ext), k.kind, size, mode))
		written += size
	}
	return out
}

// duplicates copies files (same kind, size and stream, so the same bytes)
// under home/backup-copy.
func (pl *planner) duplicates(total int64, from []int) {
	var written int64
	for tries := 0; written < total && len(from) > 0 && tries < 1000; tries++ {
		src := pl.p.files[from[pl.r.IntN(len(from))]]
		if src.size > total-written && written > 0 {
			continue
		}
		i := pl.add(pl.unique("home/backup-copy", path.Base(src.path), ""), src.kind, src.size, src.mode)
		pl.p.files[i].stream = src.stream
		written += src.size
	}
}

// depth is how many directories p lies below the corpus root.
func depth(p string) int { return strings.Count(p, "/") }

// segment is one unit of writing: bytes [off, off+n) of a file.
type segment struct {
	f      *file
	off, n int64
}

// write creates the planned tree under root: directories, then every file
// in parallel segments, then symlinks and finally modification times
// (directories last, deepest first, since creating entries changes them).
func (p *plan) write(root string, v *vocab, seed uint64) error {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	for _, d := range p.dirs {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
	}
	var segs []segment
	for i := range p.files {
		f := &p.files[i]
		fh, err := os.OpenFile(filepath.Join(root, f.path), os.O_WRONLY|os.O_CREATE|os.O_EXCL, f.mode)
		if err != nil {
			return err
		}
		err = fh.Truncate(f.size)
		if cerr := fh.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		for off := int64(0); off < f.size; off += segmentSize {
			segs = append(segs, segment{f: f, off: off, n: min(segmentSize, f.size-off)})
		}
	}
	// Largest first, so that the big segments do not all land at the end.
	slices.SortStableFunc(segs, func(a, b segment) int { return cmp.Compare(b.n, a.n) })
	if err := writeSegments(root, v, seed, segs); err != nil {
		return err
	}
	for _, l := range p.symlinks {
		if err := os.Symlink(l.target, filepath.Join(root, l.path)); err != nil {
			return err
		}
	}
	return p.setTimes(root)
}

func writeSegments(root string, v *vocab, seed uint64, segs []segment) error {
	work := make(chan segment)
	errs := make(chan error, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			var buf []byte
			var firstErr error
			for s := range work {
				if firstErr != nil {
					continue
				}
				buf, firstErr = writeSegment(root, v, seed, s, buf)
			}
			errs <- firstErr
		})
	}
	for _, s := range segs {
		work <- s
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// writeSegment generates one segment from its own stream (the file's
// stream and the segment's index) and writes it in place.
func writeSegment(root string, v *vocab, seed uint64, s segment, buf []byte) ([]byte, error) {
	g := newGenerator(v, seed, s.f.stream<<20|uint64(s.off/segmentSize))
	buf = g.appendKind(buf[:0], s.f.kind, int(s.n))
	fh, err := os.OpenFile(filepath.Join(root, s.f.path), os.O_WRONLY, 0)
	if err != nil {
		return buf, err
	}
	_, err = fh.WriteAt(buf, s.off)
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	return buf, err
}

func (p *plan) setTimes(root string) error {
	for _, f := range p.files {
		if err := os.Chtimes(filepath.Join(root, f.path), f.mtime, f.mtime); err != nil {
			return err
		}
	}
	for _, l := range p.symlinks {
		if err := lutimes(filepath.Join(root, l.path), l.mtime); err != nil {
			return err
		}
	}
	dirs := slices.Clone(p.dirs)
	slices.SortStableFunc(dirs, func(a, b string) int { return depth(b) - depth(a) })
	for _, d := range dirs {
		if err := os.Chtimes(filepath.Join(root, d), p.dirTimes[d], p.dirTimes[d]); err != nil {
			return err
		}
	}
	return nil
}

// lutimes sets a symlink's own times.
func lutimes(p string, t time.Time) error {
	ts := []unix.Timespec{unix.NsecToTimespec(t.UnixNano()), unix.NsecToTimespec(t.UnixNano())}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &fs.PathError{Op: "lutimes", Path: p, Err: err}
	}
	return nil
}
