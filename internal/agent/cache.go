package agent

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/zeebo/blake3"

	"github.com/cofferhq/coffer/internal/engine/archiver"
	"github.com/cofferhq/coffer/internal/engine/blob"
)

// The change cache remembers, for each file of the last committed backup
// of one set of paths to one repository, its size, times, inode and device
// and the blobs of its content, so that the next backup does not read a
// file that did not change. It lives in <state>/cache/, one file per
// (repository, sorted paths), and is replaced only after a backup
// committed: a cache never names blobs that no committed snapshot holds
// (should garbage collection remove them anyway, the commit fails with
// missing_blobs and the backup runs again without the cache).
//
// File format (all integers varints):
//
//	"COFFERCC" 0x01
//	repository id, paths (count, then each), backup id      (length-prefixed strings)
//	entry count, then per entry, sorted by path:
//	    path, size, mtime ns, ctime ns, inode, device, content count, 32-byte ids
//	BLAKE3-256 of everything before
//
// A damaged or unreadable file is ignored (the backup reads every file).

const cacheMagic = "COFFERCC\x01"

// cacheEntry is one file of the cache.
type cacheEntry struct {
	st      archiver.FileStat
	content []blob.ID
}

// changeCache is a loaded cache: read-only, safe for concurrent Lookups.
type changeCache struct {
	backupID string // the backup it came from
	entries  map[string]cacheEntry
}

// Lookup implements archiver.ChangeCache.
func (c *changeCache) Lookup(p string, st archiver.FileStat) ([]blob.ID, archiver.CacheState) {
	e, ok := c.entries[p]
	switch {
	case !ok:
		return nil, archiver.CacheMiss
	case e.st != st:
		return nil, archiver.CacheChanged
	}
	return e.content, archiver.CacheUnchanged
}

// cacheRecorder collects the files a backup stored (archiver.Options.OnFile).
type cacheRecorder struct {
	mu      sync.Mutex
	entries map[string]cacheEntry
}

func newCacheRecorder() *cacheRecorder { return &cacheRecorder{entries: map[string]cacheEntry{}} }

func (r *cacheRecorder) record(p string, st archiver.FileStat, content []blob.ID) {
	e := cacheEntry{st: st, content: slices.Clone(content)}
	r.mu.Lock()
	r.entries[p] = e
	r.mu.Unlock()
}

// cacheFile returns the cache file of a repository and set of paths.
func cacheFile(stateDir, repoID string, paths []string) string {
	return filepath.Join(stateDir, "cache", cacheKey(repoID, paths)+".cache")
}

func cacheKey(repoID string, paths []string) string {
	sorted := slices.Sorted(slices.Values(paths))
	h := blake3.New()
	for _, s := range append([]string{repoID}, sorted...) {
		h.Write(binary.AppendUvarint(nil, uint64(len(s))))
		h.WriteString(s)
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// errCacheCorrupt marks a cache file that cannot be used.
var errCacheCorrupt = errors.New("the change cache is damaged")

// loadCache reads the cache file name for repoID and paths; a missing file
// is (nil, nil).
func loadCache(name, repoID string, paths []string) (*changeCache, error) {
	f, err := os.Open(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return decodeCache(f, repoID, paths)
}

// decodeCache parses a cache file and checks its trailer.
func decodeCache(r io.Reader, repoID string, paths []string) (*changeCache, error) {
	h := blake3.New()
	d := &cacheDecoder{r: bufio.NewReaderSize(r, 256<<10), h: h}
	magic := d.bytes(len(cacheMagic))
	if d.err == nil && string(magic) != cacheMagic {
		return nil, fmt.Errorf("%w: not a change cache file (or another version)", errCacheCorrupt)
	}
	if got := d.string(); d.err == nil && got != repoID {
		return nil, fmt.Errorf("%w: it is for repository %q, not %q", errCacheCorrupt, got, repoID)
	}
	n := d.count(1 << 20)
	gotPaths := make([]string, 0, min(n, 1024))
	for range n {
		gotPaths = append(gotPaths, d.string())
	}
	if d.err == nil && !slices.Equal(gotPaths, slices.Sorted(slices.Values(paths))) {
		return nil, fmt.Errorf("%w: it is for paths %q", errCacheCorrupt, gotPaths)
	}
	c := &changeCache{backupID: d.string()}
	n = d.count(1 << 40)
	c.entries = make(map[string]cacheEntry, min(n, 1<<20))
	for i := 0; i < n && d.err == nil; i++ {
		p := d.string()
		var e cacheEntry
		e.st.Size = int64(d.uvarint())
		e.st.MtimeNs = d.varint()
		e.st.CtimeNs = d.varint()
		e.st.Inode = d.uvarint()
		e.st.Dev = d.uvarint()
		k := d.count(1 << 24)
		e.content = make([]blob.ID, 0, min(k, 1024))
		for range k {
			var id blob.ID
			copy(id[:], d.bytes(blob.IDSize))
			e.content = append(e.content, id)
		}
		c.entries[p] = e
	}
	sum := h.Sum(nil)
	trailer := d.bytes(len(sum))
	if d.err != nil {
		return nil, fmt.Errorf("%w: %v", errCacheCorrupt, d.err)
	}
	if string(trailer) != string(sum) {
		return nil, fmt.Errorf("%w: its checksum does not match", errCacheCorrupt)
	}
	if _, err := d.r.ReadByte(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the checksum", errCacheCorrupt)
	}
	return c, nil
}

// cacheDecoder reads varints and strings, hashing what it consumes until
// the trailer; the first error sticks.
type cacheDecoder struct {
	r   *bufio.Reader
	h   *blake3.Hasher
	err error
	buf []byte
}

func (d *cacheDecoder) fail(err error) {
	if d.err == nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		d.err = err
	}
}

func (d *cacheDecoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, err := binary.ReadUvarint(hashingByteReader{d})
	d.fail(err)
	return v
}

func (d *cacheDecoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, err := binary.ReadVarint(hashingByteReader{d})
	d.fail(err)
	return v
}

// count reads a count and checks it against limit.
func (d *cacheDecoder) count(limit uint64) int {
	n := d.uvarint()
	if n > limit {
		d.fail(fmt.Errorf("count %d exceeds %d", n, limit))
		return 0
	}
	return int(n)
}

func (d *cacheDecoder) bytes(n int) []byte {
	if d.err != nil {
		return nil
	}
	if cap(d.buf) < n {
		d.buf = make([]byte, n)
	}
	b := d.buf[:n]
	if _, err := io.ReadFull(d.r, b); err != nil {
		d.fail(err)
		return nil
	}
	d.h.Write(b)
	return b
}

func (d *cacheDecoder) string() string {
	n := d.count(1 << 20)
	return string(d.bytes(n))
}

// hashingByteReader feeds the bytes of varints to the hash too.
type hashingByteReader struct{ d *cacheDecoder }

func (r hashingByteReader) ReadByte() (byte, error) {
	b, err := r.d.r.ReadByte()
	if err == nil {
		r.d.h.Write([]byte{b})
	}
	return b, err
}

// saveCache writes the entries a backup recorded to the cache file name,
// atomically.
func saveCache(name, repoID string, paths []string, backupID string, entries map[string]cacheEntry) error {
	if err := os.MkdirAll(filepath.Dir(name), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	h := blake3.New()
	w := bufio.NewWriterSize(io.MultiWriter(f, h), 256<<10)
	e := cacheEncoder{w: w}
	e.w.WriteString(cacheMagic)
	e.string(repoID)
	sorted := slices.Sorted(slices.Values(paths))
	e.uvarint(uint64(len(sorted)))
	for _, p := range sorted {
		e.string(p)
	}
	e.string(backupID)
	keys := make([]string, 0, len(entries))
	for p := range entries {
		keys = append(keys, p)
	}
	slices.Sort(keys)
	e.uvarint(uint64(len(keys)))
	for _, p := range keys {
		en := entries[p]
		e.string(p)
		e.uvarint(uint64(en.st.Size))
		e.varint(en.st.MtimeNs)
		e.varint(en.st.CtimeNs)
		e.uvarint(en.st.Inode)
		e.uvarint(en.st.Dev)
		e.uvarint(uint64(len(en.content)))
		for _, id := range en.content {
			w.Write(id[:])
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if _, err := f.Write(h.Sum(nil)); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, name); err != nil {
		return err
	}
	ok = true
	return nil
}

type cacheEncoder struct {
	w   *bufio.Writer
	tmp [binary.MaxVarintLen64]byte
}

func (e *cacheEncoder) uvarint(v uint64) { e.w.Write(binary.AppendUvarint(e.tmp[:0], v)) }
func (e *cacheEncoder) varint(v int64)   { e.w.Write(binary.AppendVarint(e.tmp[:0], v)) }
func (e *cacheEncoder) string(s string) {
	e.uvarint(uint64(len(s)))
	e.w.WriteString(s)
}
