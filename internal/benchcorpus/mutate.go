package benchcorpus

import (
	"cmp"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Mutate changes a corpus in place the way a day of use would, about 5 % of
// it, for the next (incremental) backup. round numbers successive mutations
// (1, 2, …); the same corpus, round and seed give the same result.
//
//   - in the middle of two of the four largest files, 1–3 runs of 1–5000
//     bytes are inserted (content-defined chunking must resynchronise
//     after them); a third gets 1 MiB overwritten in place; the fourth is
//     left alone;
//   - of the other files, ≈2 % are edited in place (same size), ≈1 %
//     appended to, ≈1 % rewritten and ≈1 % deleted;
//   - ≈1.25 % new small text files appear, some in a new directory, and one
//     new binary of ≈1 % of the corpus;
//   - one nested directory is renamed (unchanged content, new path).
func Mutate(dir string, round int, seed uint64) error {
	m, err := newMutation(dir, round, seed)
	if err != nil {
		return fmt.Errorf("mutate corpus %s: %w", dir, err)
	}
	if err := m.run(); err != nil {
		return fmt.Errorf("mutate corpus %s (round %d): %w", dir, round, err)
	}
	return nil
}

type mutation struct {
	root  string
	round int
	seed  uint64
	r     *rand.Rand
	v     *vocab
	files []entry // regular files, sorted by path
	dirs  []string
	total int64
	mtime time.Time
	n     uint64 // streams drawn
	// touched are the directories whose entries changed: they get the
	// round's time at the end, so the result is reproducible.
	touched map[string]bool
}

type entry struct {
	path string // slash-separated, relative to root
	size int64
}

func newMutation(root string, round int, seed uint64) (*mutation, error) {
	m := &mutation{root: root, round: round, seed: seed, v: newVocab(seed),
		r:     rand.New(rand.NewPCG(seed, 0x6d757461<<16|uint64(round))),
		mtime: epoch.Add(time.Duration(300+round) * 24 * time.Hour), touched: map[string]bool{}}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		switch {
		case d.IsDir():
			m.dirs = append(m.dirs, rel)
		case d.Type().IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			m.files = append(m.files, entry{rel, info.Size()})
			m.total += info.Size()
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(m.files) < 8 {
		return nil, fmt.Errorf("only %d files: too few to mutate", len(m.files))
	}
	return m, nil
}

// generator returns a fresh content generator for this round.
func (m *mutation) generator() *generator {
	m.n++
	return newGenerator(m.v, m.seed, 1<<62|uint64(m.round)<<40|m.n)
}

// largeFiles returns the four large files of a generated corpus or, in
// another tree, the four largest files.
func (m *mutation) largeFiles() []entry {
	var named []entry
	for _, e := range m.files {
		if slices.Contains(largeNames, e.path) {
			named = append(named, e)
		}
	}
	if len(named) == len(largeNames) {
		return named
	}
	bySize := slices.Clone(m.files)
	slices.SortStableFunc(bySize, func(a, b entry) int { return cmp.Compare(b.size, a.size) })
	return bySize[:4]
}

func (m *mutation) run() error {
	large := m.largeFiles()
	order := m.r.Perm(4)
	for _, i := range order[:2] {
		if err := m.insert(large[i]); err != nil {
			return err
		}
	}
	if err := m.overwrite(large[order[2]].path, large[order[2]].size/2, 1<<20); err != nil {
		return err
	}
	isLarge := map[string]bool{}
	for _, e := range large {
		isLarge[e.path] = true
	}
	var rest []entry
	for _, e := range m.files {
		if !isLarge[e.path] {
			rest = append(rest, e)
		}
	}
	if err := m.changeFiles(rest); err != nil {
		return err
	}
	if err := m.addFiles(); err != nil {
		return err
	}
	if err := m.renameDir(); err != nil {
		return err
	}
	dirs := slices.Sorted(maps.Keys(m.touched))
	slices.SortStableFunc(dirs, func(a, b string) int { return depth(b) - depth(a) })
	for _, d := range dirs {
		if err := os.Chtimes(m.abs(d), m.mtime, m.mtime); err != nil {
			return err
		}
	}
	return nil
}

// touch records that the entries of rel's directory changed.
func (m *mutation) touch(rel string) { m.touched[path.Dir(rel)] = true }

// changeFiles edits, appends to, rewrites and deletes a few of files.
func (m *mutation) changeFiles(files []entry) error {
	perm := m.r.Perm(len(files))
	pick := func(percent int) []entry {
		n := max(1, len(files)*percent/100)
		n = min(n, len(perm))
		out := make([]entry, n)
		for i := range out {
			out[i] = files[perm[i]]
		}
		perm = perm[n:]
		return out
	}
	for _, e := range pick(2) {
		if e.size == 0 {
			continue
		}
		n := min(e.size, 1+m.r.Int64N(4096))
		if err := m.overwrite(e.path, m.r.Int64N(e.size-n+1), n); err != nil {
			return err
		}
	}
	for _, e := range pick(1) {
		b := m.generator().appendKind(nil, kindOf(e.path), 100+m.r.IntN(8<<10))
		if err := m.appendTo(e.path, b); err != nil {
			return err
		}
	}
	for _, e := range pick(1) {
		size := max(e.size+m.r.Int64N(e.size/4+1)-e.size/8, 1)
		b := m.generator().appendKind(nil, kindOf(e.path), int(size))
		if err := m.writeFile(e.path, b, os.O_TRUNC); err != nil {
			return err
		}
	}
	for _, e := range pick(1) {
		if err := os.Remove(m.abs(e.path)); err != nil {
			return err
		}
		m.touch(e.path)
	}
	return nil
}

// addFiles adds small text files (a quarter of them in a new directory)
// and one binary of about 1 % of the corpus.
func (m *mutation) addFiles() error {
	n := max(2, len(m.files)/80)
	var textDirs []string
	for _, d := range m.dirs {
		if depth(d) >= 2 && strings.HasPrefix(d, "projects/") {
			textDirs = append(textDirs, d)
		}
	}
	if len(textDirs) == 0 {
		textDirs = []string{"."}
	}
	newDir := path.Join(textDirs[m.r.IntN(len(textDirs))], "new-"+strconv.Itoa(m.round))
	if err := os.Mkdir(m.abs(newDir), 0o755); err != nil {
		return err
	}
	m.touch(newDir)
	for i := range n {
		d := textDirs[m.r.IntN(len(textDirs))]
		if i%4 == 0 {
			d = newDir
		}
		name := fmt.Sprintf("%s-r%d-%d%s", m.v.words[27+m.r.IntN(2000)], m.round, i, textExts[m.r.IntN(len(textExts))])
		b := m.generator().appendKind(nil, kindText, int(100+m.r.Int64N(24<<10)))
		if err := m.writeFile(path.Join(d, name), b, os.O_EXCL); err != nil {
			return err
		}
	}
	b := m.generator().appendKind(nil, kindBinary, int(max(m.total/100, 4096)))
	if err := os.MkdirAll(m.abs("usr/lib"), 0o755); err != nil {
		return err
	}
	return m.writeFile(fmt.Sprintf("usr/lib/new-r%d.so", m.round), b, os.O_EXCL)
}

// renameDir renames one nested directory that still exists.
func (m *mutation) renameDir() error {
	var nested []string
	for _, d := range m.dirs {
		if depth(d) >= 2 {
			if _, err := os.Lstat(m.abs(d)); err == nil {
				nested = append(nested, d)
			}
		}
	}
	if len(nested) == 0 {
		return nil
	}
	d := nested[m.r.IntN(len(nested))]
	m.touch(d)
	renamed := d + "-renamed-" + strconv.Itoa(m.round)
	if err := os.Rename(m.abs(d), m.abs(renamed)); err != nil {
		return err
	}
	// Directories below it that changed are now under the new name.
	for t := range m.touched {
		if t == d || strings.HasPrefix(t, d+"/") {
			delete(m.touched, t)
			m.touched[renamed+strings.TrimPrefix(t, d)] = true
		}
	}
	return nil
}

func (m *mutation) abs(rel string) string { return filepath.Join(m.root, filepath.FromSlash(rel)) }

// insert rewrites a large file with 1–3 runs of 1–5000 bytes inserted near
// its middle, copying the rest in the kernel.
func (m *mutation) insert(e entry) error {
	runs := 1 + m.r.IntN(3)
	offs := make([]int64, runs)
	for i := range offs {
		offs[i] = e.size/4 + m.r.Int64N(e.size/2+1)
	}
	slices.Sort(offs)
	src, err := os.Open(m.abs(e.path))
	if err != nil {
		return err
	}
	defer src.Close()
	tmp := m.abs(e.path) + ".mutate-tmp"
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	var pos int64
	g := m.generator()
	for _, off := range offs {
		if _, err := io.Copy(dst, io.NewSectionReader(src, pos, off-pos)); err != nil {
			dst.Close()
			return err
		}
		pos = off
		if _, err := dst.Write(g.appendKind(nil, kindOf(e.path), 1+m.r.IntN(5000))); err != nil {
			dst.Close()
			return err
		}
	}
	if _, err := io.Copy(dst, io.NewSectionReader(src, pos, e.size-pos)); err != nil {
		dst.Close()
		return err
	}
	if err := dst.Close(); err != nil {
		return err
	}
	if err := os.Chtimes(tmp, m.mtime, m.mtime); err != nil {
		return err
	}
	m.touch(e.path)
	return os.Rename(tmp, m.abs(e.path))
}

// overwrite replaces n bytes at off with new content of the file's kind.
func (m *mutation) overwrite(rel string, off, n int64) error {
	f, err := os.OpenFile(m.abs(rel), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteAt(m.generator().appendKind(nil, kindOf(rel), int(n)), off)
	return m.finish(f, rel, err)
}

func (m *mutation) appendTo(rel string, b []byte) error {
	f, err := os.OpenFile(m.abs(rel), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	return m.finish(f, rel, err)
}

func (m *mutation) writeFile(rel string, b []byte, flag int) error {
	if flag&os.O_EXCL != 0 {
		m.touch(rel)
	}
	f, err := os.OpenFile(m.abs(rel), os.O_WRONLY|os.O_CREATE|flag, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	return m.finish(f, rel, err)
}

// finish closes a changed file and gives it the round's modification time.
func (m *mutation) finish(f *os.File, rel string, err error) error {
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Chtimes(m.abs(rel), m.mtime, m.mtime)
}
