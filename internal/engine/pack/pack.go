// Package pack reads and writes pack files: many stored blobs back to back,
// followed by a sealed trailer that lists them, so a repository can be
// rebuilt from its packs alone.
//
//	pack    = blob* trailer footer
//	trailer = Seal("pack trailer v1", count:u32 ‖ entry* ‖ salt:[16])
//	entry   = type:u8 ‖ id:[32] ‖ offset:u32 ‖ length:u32 ‖ raw_length:u32   (45 bytes, little-endian)
//	footer  = trailer_length:u32 ‖ version:u8 ‖ "CFRP"
//
// Entries are in offset order and tile the blob region exactly. A pack's id
// is the BLAKE3-256 of all its bytes and its name is packs/<2 hex>/<id>, so
// any damage to a pack — even a bit a blob decoder would not notice — shows
// when the pack is re-hashed. The random salt makes every pack unique even
// when two writers pack the same blobs in the same order (unencrypted blobs
// are deterministic): a pack name that exists is always the writer's own
// earlier attempt, never someone else's pack that GC may be deleting. See
// docs/repository-format.md.
package pack

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/zeebo/blake3"
)

// Format constants.
const (
	Magic      = "CFRP"
	Version    = 1
	FooterSize = 4 + 1 + 4 // trailer length, version, magic
	EntrySize  = 1 + blob.IDSize + 4 + 4 + 4
	// MaxSize bounds a pack (offsets are 32-bit).
	MaxSize = 1 << 31
	// MaxEntries bounds the entries a trailer may claim.
	MaxEntries = MaxSize / EntrySize
	// SaltSize is the length of the random salt that ends a trailer.
	SaltSize = 16
)

const trailerKind = "pack trailer v1"

// ErrCorrupt marks a pack whose footer or trailer cannot be trusted.
var ErrCorrupt = errors.New("corrupt pack")

// ID is a pack's BLAKE3-256 hash.
type ID [32]byte

// String returns the id in lowercase hex.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Name is the pack's object name in the repository.
func (id ID) Name() string { s := id.String(); return "packs/" + s[:2] + "/" + s }

// ParseName returns the id of a pack object name.
func ParseName(name string) (ID, error) {
	var id ID
	rest, ok := strings.CutPrefix(name, "packs/")
	dir, file, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 || len(file) != 64 || dir != file[:2] {
		return id, fmt.Errorf("%q is not a pack name", name)
	}
	if _, err := hex.Decode(id[:], []byte(file)); err != nil {
		return id, fmt.Errorf("%q is not a pack name: %w", name, err)
	}
	return id, nil
}

// Sum returns the id of a pack's bytes.
func Sum(data []byte) ID { return ID(blake3.Sum256(data)) }

// Entry locates one blob in a pack.
type Entry struct {
	Type      blob.Type
	ID        blob.ID
	Offset    uint32
	Length    uint32 // stored bytes
	RawLength uint32 // plaintext bytes
}

// Writer assembles one pack in memory. It is not safe for concurrent use;
// run several writers to fill several packs at once.
type Writer struct {
	codec   *blob.Codec
	data    []byte
	entries []Entry
	ids     map[blob.ID]bool
}

// NewWriter returns a writer whose buffer is sized for a pack of about
// sizeHint bytes.
func NewWriter(codec *blob.Codec, sizeHint int) *Writer {
	return NewWriterBuffer(codec, make([]byte, 0, sizeHint+sizeHint/8))
}

// NewWriterBuffer returns a writer that assembles the pack in buf (from
// its start, whatever its length), for callers that recycle the Data of
// finished packs.
func NewWriterBuffer(codec *blob.Codec, buf []byte) *Writer {
	return &Writer{codec: codec, data: buf[:0], ids: map[blob.ID]bool{}}
}

// Add appends a stored blob (blob.Codec.Encode output) of rawLen plaintext
// bytes. A blob already in this pack is skipped (it returns false).
func (w *Writer) Add(t blob.Type, id blob.ID, stored []byte, rawLen int) (bool, error) {
	if w.ids[id] {
		return false, nil
	}
	if !t.Valid() || rawLen < 0 || rawLen > blob.MaxSize {
		return false, fmt.Errorf("add blob %s to pack: invalid type %v or size %d", id.Short(), t, rawLen)
	}
	if len(w.data)+len(stored) > MaxSize-FooterSize-(len(w.entries)+1)*EntrySize-w.codec.SealOverhead()-4-SaltSize {
		return false, fmt.Errorf("add blob %s to pack: the pack would exceed %d bytes", id.Short(), MaxSize)
	}
	w.entries = append(w.entries, Entry{Type: t, ID: id, Offset: uint32(len(w.data)),
		Length: uint32(len(stored)), RawLength: uint32(rawLen)})
	w.data = append(w.data, stored...)
	w.ids[id] = true
	return true, nil
}

// Size returns the bytes added so far (without the trailer).
func (w *Writer) Size() int { return len(w.data) }

// Count returns the number of blobs added.
func (w *Writer) Count() int { return len(w.entries) }

// Pack is a finished pack.
type Pack struct {
	ID      ID
	Data    []byte
	Entries []Entry
}

// Finish seals the trailer and returns the pack. The writer must not be
// used afterwards.
func (w *Writer) Finish() *Pack {
	plain := make([]byte, 4, 4+len(w.entries)*EntrySize+SaltSize)
	binary.LittleEndian.PutUint32(plain, uint32(len(w.entries)))
	for _, e := range w.entries {
		plain = appendEntry(plain, e)
	}
	salt := make([]byte, SaltSize)
	rand.Read(salt)
	plain = append(plain, salt...)
	start := len(w.data)
	data := w.codec.Seal(w.data, trailerKind, plain)
	data = binary.LittleEndian.AppendUint32(data, uint32(len(data)-start))
	data = append(data, Version)
	data = append(data, Magic...)
	p := &Pack{ID: Sum(data), Data: data, Entries: w.entries}
	w.data, w.entries, w.ids = nil, nil, nil
	return p
}

func appendEntry(b []byte, e Entry) []byte {
	b = append(b, byte(e.Type))
	b = append(b, e.ID[:]...)
	b = binary.LittleEndian.AppendUint32(b, e.Offset)
	b = binary.LittleEndian.AppendUint32(b, e.Length)
	return binary.LittleEndian.AppendUint32(b, e.RawLength)
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrCorrupt)
}

// TrailerLength reads the footer (the last FooterSize bytes of a pack of
// packSize bytes) and returns the length of the sealed trailer before it.
func TrailerLength(footer []byte, packSize int64) (int, error) {
	if len(footer) != FooterSize || packSize < FooterSize {
		return 0, corrupt("pack of %d bytes is too short for its footer", packSize)
	}
	if string(footer[5:]) != Magic {
		return 0, corrupt("footer has no %q magic: not a Coffer pack, or truncated", Magic)
	}
	if footer[4] != Version {
		return 0, corrupt("pack format version %d is not supported (this Coffer reads version %d)", footer[4], Version)
	}
	n := int64(binary.LittleEndian.Uint32(footer[:4]))
	if n > packSize-FooterSize {
		return 0, corrupt("footer claims a %d-byte trailer in a %d-byte pack", n, packSize)
	}
	return int(n), nil
}

// ParseTrailer opens and checks a sealed trailer of a pack of packSize
// bytes and returns its entries. Every entry must be a known type, lie
// inside the blob region, follow the previous one without gap or overlap,
// and be large enough to hold a stored blob.
func ParseTrailer(codec *blob.Codec, sealed []byte, packSize int64) ([]Entry, error) {
	plain, err := codec.Open(trailerKind, sealed)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if len(plain) < 4+SaltSize {
		return nil, corrupt("trailer of %d bytes has no entry count and salt", len(plain))
	}
	count := int(binary.LittleEndian.Uint32(plain))
	if count > MaxEntries || len(plain) != 4+count*EntrySize+SaltSize {
		return nil, corrupt("trailer claims %d entries in %d bytes", count, len(plain))
	}
	region := packSize - FooterSize - int64(len(sealed))
	entries := make([]Entry, count)
	var next int64
	for i := range entries {
		b := plain[4+i*EntrySize:]
		e := Entry{Type: blob.Type(b[0]), Offset: binary.LittleEndian.Uint32(b[33:]),
			Length: binary.LittleEndian.Uint32(b[37:]), RawLength: binary.LittleEndian.Uint32(b[41:])}
		copy(e.ID[:], b[1:33])
		switch {
		case !e.Type.Valid():
			return nil, corrupt("entry %d (blob %s) has unknown type %d", i, e.ID.Short(), b[0])
		case int64(e.Offset) != next:
			return nil, corrupt("entry %d (blob %s) starts at %d, want %d", i, e.ID.Short(), e.Offset, next)
		case int64(e.Offset)+int64(e.Length) > region:
			return nil, corrupt("entry %d (blob %s) ends past the blob region (%d bytes)", i, e.ID.Short(), region)
		case int(e.Length) < codec.Overhead() || e.RawLength > blob.MaxSize:
			return nil, corrupt("entry %d (blob %s) has impossible sizes %d/%d", i, e.ID.Short(), e.Length, e.RawLength)
		}
		next = int64(e.Offset) + int64(e.Length)
		entries[i] = e
	}
	if next != region {
		return nil, corrupt("entries cover %d of the %d-byte blob region", next, region)
	}
	return entries, nil
}

// Parse reads the entries of a whole pack held in memory.
func Parse(codec *blob.Codec, data []byte) ([]Entry, error) {
	size := int64(len(data))
	n, err := TrailerLength(data[max(0, len(data)-FooterSize):], size)
	if err != nil {
		return nil, err
	}
	end := len(data) - FooterSize
	return ParseTrailer(codec, data[end-n:end], size)
}
