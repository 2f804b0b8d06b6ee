package blob

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"fmt"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/zeebo/blake3"
)

// Keys are a repository's secrets. IDKey keys the BLAKE3 hash of blob ids
// (so ids reveal nothing about content to someone without it); DataKey is
// the AES-256-GCM key of an encrypted repository.
type Keys struct {
	IDKey     [32]byte
	DataKey   [32]byte
	Encrypted bool
}

// Compression is how hard to compress (the zstd level), per call.
type Compression uint8

// The compression levels.
const (
	Off     Compression = iota // store plaintext
	Fastest                    // zstd fastest (≈ level 1)
	Default                    // zstd default (≈ level 3)
	Better                     // zstd better (≈ level 7)
	Best                       // zstd best (≈ level 11)
)

// ParseCompression maps a name ("off", "fastest", "default", "better",
// "best") to a level.
func ParseCompression(s string) (Compression, error) {
	for c, name := range compressionNames {
		if name == s {
			return Compression(c), nil
		}
	}
	return 0, fmt.Errorf("compression %q: use off, fastest, default, better or best", s)
}

var compressionNames = []string{"off", "fastest", "default", "better", "best"}

// String names the level.
func (c Compression) String() string {
	if int(c) < len(compressionNames) {
		return compressionNames[c]
	}
	return fmt.Sprintf("compression(%d)", uint8(c))
}

const (
	nonceSize = 12
	tagSize   = 16
)

// Codec encodes and decodes blobs of one repository. It is safe for
// concurrent use and meant to live as long as the repository is open.
type Codec struct {
	keys     Keys
	aead     cipher.AEAD
	encoders [Best + 1]func() (*zstd.Encoder, error)
	decoder  *zstd.Decoder
	// hashers and treeHashers reuse keyed BLAKE3 states: making one costs
	// ~10 KiB, once per chunk on the backup path.
	hashers, treeHashers sync.Pool
}

// treeKeyContext derives the key of tree blob ids from the id key, so that
// a tree and a file chunk with the same bytes get different ids: otherwise
// a client could store a 3-byte file equal to an empty directory's encoding
// and make every later backup's empty directories "already stored" as data.
const treeKeyContext = "coffer 2026-11-29 tree blob id v1"

// NewCodec returns a codec for the given keys.
func NewCodec(k Keys) (*Codec, error) {
	c := &Codec{keys: k}
	c.hashers.New = func() any {
		h, _ := blake3.NewKeyed(k.IDKey[:]) // the key is always 32 bytes
		return h
	}
	var treeKey [32]byte
	blake3.DeriveKey(treeKeyContext, k.IDKey[:], treeKey[:])
	c.treeHashers.New = func() any {
		h, _ := blake3.NewKeyed(treeKey[:])
		return h
	}
	if k.Encrypted {
		block, err := aes.NewCipher(k.DataKey[:])
		if err != nil {
			return nil, fmt.Errorf("blob codec: %w", err)
		}
		if c.aead, err = cipher.NewGCM(block); err != nil {
			return nil, fmt.Errorf("blob codec: %w", err)
		}
	}
	for lvl := Fastest; lvl <= Best; lvl++ {
		zl := []zstd.EncoderLevel{Fastest: zstd.SpeedFastest, Default: zstd.SpeedDefault,
			Better: zstd.SpeedBetterCompression, Best: zstd.SpeedBestCompression}[lvl]
		c.encoders[lvl] = sync.OnceValues(func() (*zstd.Encoder, error) {
			// EncodeAll is safe for concurrent use; encoders are made on
			// first use so unused levels cost no memory.
			// No frame checksum: the keyed BLAKE3 of every decoded blob
			// already proves its content.
			return zstd.NewWriter(nil, zstd.WithEncoderLevel(zl), zstd.WithZeroFrames(true), zstd.WithEncoderCRC(false))
		})
	}
	var err error
	c.decoder, err = zstd.NewReader(nil, zstd.WithDecoderMaxMemory(MaxSize), zstd.WithDecoderConcurrency(0))
	if err != nil {
		return nil, fmt.Errorf("blob codec: %w", err)
	}
	return c, nil
}

// Close releases the codec's compression state.
func (c *Codec) Close() {
	c.decoder.Close()
}

// Overhead is how many bytes encryption adds to a payload.
func (c *Codec) Overhead() int {
	if c.keys.Encrypted {
		return nonceSize + tagSize
	}
	return 0
}

// ID returns the id of a data blob: the BLAKE3-256 hash of its plaintext
// keyed with IDKey.
func (c *Codec) ID(plaintext []byte) ID { return sum(&c.hashers, plaintext) }

// TreeID returns the id of a tree blob: the BLAKE3-256 hash of its
// plaintext keyed with a key derived from IDKey, so that no tree shares an
// id with a data blob.
func (c *Codec) TreeID(plaintext []byte) ID { return sum(&c.treeHashers, plaintext) }

// IDOf returns the id of a blob of type t (ID or TreeID).
func (c *Codec) IDOf(t Type, plaintext []byte) ID {
	if t == Tree {
		return c.TreeID(plaintext)
	}
	return c.ID(plaintext)
}

func sum(pool *sync.Pool, plaintext []byte) ID {
	h := pool.Get().(*blake3.Hasher)
	h.Reset()
	h.Write(plaintext)
	var id ID
	h.Sum(id[:0])
	pool.Put(h)
	return id
}

// Encode appends the stored form of a blob to dst and returns it. id must
// be c.IDOf(t, plaintext) (the caller usually has it already, to ask
// whether the blob is stored at all).
func (c *Codec) Encode(dst []byte, t Type, id ID, plaintext []byte, level Compression) ([]byte, error) {
	if len(plaintext) > MaxSize {
		return nil, fmt.Errorf("encode blob %s: %d bytes exceeds the %d-byte maximum", id.Short(), len(plaintext), MaxSize)
	}
	payload := plaintext
	if level != Off && len(plaintext) > 0 {
		enc, err := c.encoder(level)
		if err != nil {
			return nil, err
		}
		scratch := scratchBuffers.Get().(*[]byte)
		defer scratchBuffers.Put(scratch)
		compressed := enc.EncodeAll(plaintext, (*scratch)[:0])
		*scratch = compressed
		if len(compressed) < len(plaintext) {
			payload = compressed
		}
	}
	if !c.keys.Encrypted {
		return append(dst, payload...), nil
	}
	start := len(dst)
	dst = append(dst, make([]byte, nonceSize)...)
	nonce := dst[start : start+nonceSize]
	rand.Read(nonce)
	return c.aead.Seal(dst, nonce, payload, aad(t, id)), nil
}

// Compress appends to dst a blob's payload: its plaintext compressed at
// level when that shrinks it, else the plaintext itself. The payload is
// what Encode encrypts; an agent sends it to the server (which checks it
// with DecodePayload and stores it with SealPayload), never holding the data key.
func (c *Codec) Compress(dst []byte, plaintext []byte, level Compression) ([]byte, error) {
	if len(plaintext) > MaxSize {
		return nil, fmt.Errorf("compress blob: %d bytes exceeds the %d-byte maximum", len(plaintext), MaxSize)
	}
	if level != Off && len(plaintext) > 0 {
		enc, err := c.encoder(level)
		if err != nil {
			return nil, err
		}
		start := len(dst)
		dst = enc.EncodeAll(plaintext, dst)
		if len(dst)-start < len(plaintext) {
			return dst, nil
		}
		dst = dst[:start]
	}
	return append(dst, plaintext...), nil
}

// SealPayload appends the stored form of a payload (see Compress) to dst:
// encrypted and bound to t and id in an encrypted repository, the payload
// itself otherwise. The caller must have checked the payload against id
// (DecodePayload).
func (c *Codec) SealPayload(dst []byte, t Type, id ID, payload []byte) []byte {
	if !c.keys.Encrypted {
		return append(dst, payload...)
	}
	start := len(dst)
	dst = append(dst, make([]byte, nonceSize)...)
	nonce := dst[start : start+nonceSize]
	rand.Read(nonce)
	return c.aead.Seal(dst, nonce, payload, aad(t, id))
}

// OpenPayload appends to dst the payload of a stored blob (the inverse of SealPayload),
// authenticated in an encrypted repository but not decompressed or
// re-hashed: the receiver does that with DecodePayload.
func (c *Codec) OpenPayload(dst []byte, t Type, id ID, stored []byte) ([]byte, error) {
	if !c.keys.Encrypted {
		return append(dst, stored...), nil
	}
	if len(stored) < nonceSize+tagSize {
		return nil, corrupt(id, "it is truncated to %d bytes", len(stored))
	}
	out, err := c.aead.Open(dst, stored[:nonceSize], stored[nonceSize:], aad(t, id))
	if err != nil {
		return nil, corrupt(id, "it fails authentication (damaged, or encrypted with another key)")
	}
	return out, nil
}

// DecodePayload appends to dst the plaintext of a payload (see Compress)
// whose plaintext is rawLen bytes, and fails with an error matching
// ErrCorrupt unless it decompresses to exactly rawLen bytes that hash to
// id. Only the id key is needed.
func (c *Codec) DecodePayload(dst []byte, t Type, id ID, payload []byte, rawLen int) ([]byte, error) {
	if rawLen < 0 || rawLen > MaxSize {
		return nil, corrupt(id, "its recorded size %d is out of range", rawLen)
	}
	start := len(dst)
	switch {
	case len(payload) == rawLen:
		dst = append(dst, payload...)
	case len(payload) < rawLen:
		var err error
		dst, err = c.decoder.DecodeAll(payload, dst)
		if err != nil {
			return nil, corrupt(id, "it does not decompress: %v", err)
		}
	default:
		return nil, corrupt(id, "it holds %d bytes, more than its recorded size %d", len(payload), rawLen)
	}
	plain := dst[start:]
	if len(plain) != rawLen {
		return nil, corrupt(id, "it decompresses to %d bytes, not its recorded %d", len(plain), rawLen)
	}
	if c.IDOf(t, plain) != id {
		return nil, corrupt(id, "its content does not match its id")
	}
	return dst, nil
}

// scratchBuffers hold compressed and decrypted payloads between the steps
// of Encode and Decode: without them every blob would allocate its size
// again (about 0.6 GB of garbage per GiB backed up).
var scratchBuffers = sync.Pool{New: func() any { return new([]byte) }}

func (c *Codec) encoder(level Compression) (*zstd.Encoder, error) {
	if level > Best {
		return nil, fmt.Errorf("encode blob: unknown compression level %d", level)
	}
	return c.encoders[level]()
}

// Decode returns the plaintext of a stored blob whose plaintext is rawLen
// bytes, appended to dst. It fails with an error matching ErrCorrupt unless
// the blob authenticates (encrypted repositories), decompresses to exactly
// rawLen bytes, and hashes to id.
func (c *Codec) Decode(dst []byte, t Type, id ID, stored []byte, rawLen int) ([]byte, error) {
	if rawLen < 0 || rawLen > MaxSize {
		return nil, corrupt(id, "its recorded size %d is out of range", rawLen)
	}
	payload := stored
	if c.keys.Encrypted {
		if len(stored) < nonceSize+tagSize {
			return nil, corrupt(id, "it is truncated to %d bytes", len(stored))
		}
		scratch := scratchBuffers.Get().(*[]byte)
		defer scratchBuffers.Put(scratch)
		var err error
		payload, err = c.aead.Open((*scratch)[:0], stored[:nonceSize], stored[nonceSize:], aad(t, id))
		if err == nil {
			*scratch = payload
		}
		if err != nil {
			return nil, corrupt(id, "it fails authentication (damaged, or encrypted with another key)")
		}
	}
	return c.DecodePayload(dst, t, id, payload, rawLen)
}

// aad binds a ciphertext to its type and id, so that a stored blob cannot
// be passed off as another one (or a tree as data).
func aad(t Type, id ID) []byte {
	b := make([]byte, 0, 1+IDSize)
	b = append(b, byte(t))
	return append(b, id[:]...)
}

func corrupt(id ID, format string, args ...any) error {
	return fmt.Errorf("blob %s: %s: %w", id, fmt.Sprintf(format, args...), ErrCorrupt)
}

// IDKey returns the key of blob ids. An agent needs it to compute the ids
// of what it backs up; it reveals nothing about the data key.
func (c *Codec) IDKey() [32]byte { return c.keys.IDKey }

// Encrypted reports whether blobs are encrypted.
func (c *Codec) Encrypted() bool { return c.keys.Encrypted }
