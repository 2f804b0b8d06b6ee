package backups

import (
	"archive/tar"
	"archive/zip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"

	"github.com/klauspost/compress/flate"

	"github.com/cofferhq/coffer/internal/engine/tree"
)

// tarSink writes a POSIX.1-2001 (PAX) tar archive. Every entry keeps its
// type, permission bits with setuid, setgid and sticky, owner and group ids
// and names, modification time to the nanosecond and extended attributes
// (as SCHILY.xattr records; not those with "=" in their name); names and link targets of any length. Hard
// links of one file (by device and inode) become link entries to its first
// path. Devices keep their numbers (Linux encoding; numbers too large for
// the header are left out); fifos are kept; sockets, which tar cannot
// hold, are left out.
type tarSink struct {
	tw *tar.Writer
}

func newTarSink() *tarSink { return &tarSink{} }

func (s *tarSink) open(w io.Writer) { s.tw = tar.NewWriter(w) }

func (s *tarSink) entry(e *dlEntry) error {
	h := tarHeader(e)
	if h == nil {
		return nil
	}
	if err := s.tw.WriteHeader(h); err != nil {
		return fmt.Errorf("tar entry %q: %w", truncate(e.path), err)
	}
	return nil
}

func (s *tarSink) data(p []byte) error {
	_, err := s.tw.Write(p)
	if errors.Is(err, tar.ErrWriteTooLong) {
		return fmt.Errorf("tar: %w", errSizeMismatch)
	}
	return err
}

// finish writes the end of the archive; it fails when the last file got
// fewer bytes than its size.
func (s *tarSink) finish() error { return s.tw.Close() }

// tarHeader is e's tar header, or nil for a node tar cannot hold.
func tarHeader(e *dlEntry) *tar.Header {
	n := &e.node
	h := &tar.Header{Name: e.path, Mode: int64(n.Mode), Uid: int(n.UID), Gid: int(n.GID), Uname: n.User, Gname: n.Group,
		ModTime: n.ModTime, Format: tar.FormatPAX}
	switch n.Type {
	case tree.Dir:
		h.Typeflag, h.Name = tar.TypeDir, e.path+"/"
	case tree.File:
		h.Typeflag, h.Size = tar.TypeReg, int64(n.Size)
		if e.link != "" {
			h.Typeflag, h.Linkname, h.Size = tar.TypeLink, e.link, 0
		}
	case tree.Symlink:
		h.Typeflag, h.Linkname = tar.TypeSymlink, n.LinkTarget
	case tree.CharDevice, tree.BlockDevice:
		h.Typeflag = tar.TypeChar
		if n.Type == tree.BlockDevice {
			h.Typeflag = tar.TypeBlock
		}
		h.Devmajor, h.Devminor = devMajor(n.Device), devMinor(n.Device)
		if h.Devmajor > maxDevNumber || h.Devminor > maxDevNumber {
			return nil // no tar format holds it (Linux's numbers fit)
		}
	case tree.Fifo:
		h.Typeflag = tar.TypeFifo
	default:
		return nil
	}
	if len(n.Xattrs) > 0 {
		h.PAXRecords = make(map[string]string, len(n.Xattrs))
		for _, x := range n.Xattrs {
			if !strings.Contains(x.Name, "=") { // a PAX key cannot hold one
				h.PAXRecords["SCHILY.xattr."+x.Name] = string(x.Value)
			}
		}
	}
	return h
}

// maxDevNumber is the largest device major or minor a ustar/PAX header
// holds (7 octal digits).
const maxDevNumber = 0o7777777

// devMajor and devMinor split a Linux device number (glibc's encoding).
func devMajor(dev uint64) int64 { return int64((dev>>8)&0xfff | (dev>>32)&^0xfff) }
func devMinor(dev uint64) int64 { return int64(dev&0xff | (dev>>12)&^0xff) }

// zipSink writes a zip archive, streamed: every file's sizes and CRC
// follow its data in a data descriptor, and ZIP64 records are written
// where sizes need them. Entries keep their permission bits (with setuid,
// setgid and sticky) and type in the Unix external attributes, their
// modification time (an extended timestamp, to the second) and their owner
// and group ids (an Info-ZIP "ux" field). Symlinks are entries whose
// content is the target, as Info-ZIP writes them. Files whose blobs were
// stored compressed are deflated (fastest level); the others are stored.
// Hard links are written as separate files; devices, fifos and sockets,
// which zip cannot hold, are left out. Names are UTF-8 when they are valid
// UTF-8 (the zip writer flags them), else raw bytes; a backslash, which
// the format reserves and Windows tools read as a separator, becomes "_".
type zipSink struct {
	zw  *zip.Writer
	fw  *flate.Writer // reused from one entry to the next
	cur io.Writer     // the file being written
	e   *dlEntry
	n   uint64
}

func newZipSink() *zipSink { return &zipSink{} }

func (s *zipSink) open(w io.Writer) {
	s.zw = zip.NewWriter(w)
	s.zw.RegisterCompressor(zip.Deflate, s.deflater)
}

func (s *zipSink) deflater(w io.Writer) (io.WriteCloser, error) {
	if s.fw == nil {
		fw, err := flate.NewWriter(w, flate.BestSpeed)
		if err != nil {
			return nil, err
		}
		s.fw = fw
		return fw, nil
	}
	s.fw.Reset(w)
	return s.fw, nil
}

func (s *zipSink) entry(e *dlEntry) error {
	if err := s.endEntry(); err != nil {
		return err
	}
	fh, content := zipHeader(e)
	if fh == nil {
		return nil
	}
	w, err := s.zw.CreateHeader(fh)
	if err == nil && content != "" {
		_, err = io.WriteString(w, content)
	}
	if err != nil {
		return fmt.Errorf("zip entry %q: %w", truncate(e.path), err)
	}
	if e.node.Type == tree.File {
		s.cur, s.e, s.n = w, e, 0
	}
	return nil
}

func (s *zipSink) data(p []byte) error {
	if s.cur == nil {
		return fmt.Errorf("zip: content outside a file: %w", errSizeMismatch)
	}
	s.n += uint64(len(p))
	if s.n > s.e.node.Size {
		return fmt.Errorf("zip entry %q: more than its %d bytes: %w", truncate(s.e.path), s.e.node.Size, errSizeMismatch)
	}
	_, err := s.cur.Write(p)
	return err
}

// endEntry checks that the file being written got all its bytes.
func (s *zipSink) endEntry() error {
	e, n := s.e, s.n
	s.cur, s.e, s.n = nil, nil, 0
	if e != nil && n != e.node.Size {
		return fmt.Errorf("zip entry %q: %d bytes of %d: %w", truncate(e.path), n, e.node.Size, errSizeMismatch)
	}
	return nil
}

func (s *zipSink) finish() error {
	if err := s.endEntry(); err != nil {
		return err
	}
	return s.zw.Close()
}

// zipHeader is e's zip header and the content it carries itself (a
// symlink's target), or nil for a node zip cannot hold.
func zipHeader(e *dlEntry) (*zip.FileHeader, string) {
	n := &e.node
	fh := &zip.FileHeader{Name: strings.ReplaceAll(e.path, `\`, "_"), Modified: n.ModTime, Method: zip.Store,
		Extra: uxField(n.UID, n.GID)}
	mode := fs.FileMode(n.Mode & 0o777)
	if n.Mode&0o4000 != 0 {
		mode |= fs.ModeSetuid
	}
	if n.Mode&0o2000 != 0 {
		mode |= fs.ModeSetgid
	}
	if n.Mode&0o1000 != 0 {
		mode |= fs.ModeSticky
	}
	content := ""
	switch n.Type {
	case tree.Dir:
		fh.Name += "/"
		mode |= fs.ModeDir
	case tree.File:
		if e.compressible {
			fh.Method = zip.Deflate
		}
	case tree.Symlink:
		mode |= fs.ModeSymlink
		content = n.LinkTarget
	default:
		return nil, ""
	}
	fh.SetMode(mode)
	return fh, content
}

// uxField is the Info-ZIP Unix extra field "ux" (0x7875), version 1, with
// 4-byte uid and gid.
func uxField(uid, gid uint32) []byte {
	b := []byte{0x75, 0x78, 11, 0, 1, 4, 0, 0, 0, 0, 4, 0, 0, 0, 0}
	binary.LittleEndian.PutUint32(b[6:], uid)
	binary.LittleEndian.PutUint32(b[11:], gid)
	return b
}
