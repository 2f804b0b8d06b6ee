// Package blob encodes the unit of deduplication: a blob is a chunk of file
// content (type data) or an encoded directory (type tree), identified by the
// keyed BLAKE3-256 hash of its plaintext.
//
// Stored form (see docs/repository-format.md):
//
//	payload = zstd(plaintext)   if that is shorter than the plaintext
//	        = plaintext         otherwise
//	stored  = payload                                        (unencrypted repository)
//	        = nonce(12) ‖ AES-256-GCM(payload, aad=type‖id)  (encrypted repository)
//
// Whether a payload is compressed needs no flag: it is compressed exactly
// when it is shorter than the plaintext, whose length the index records.
// Decoding authenticates, decompresses, and re-hashes: a blob is returned
// only if its content matches its id, so a corrupted or substituted blob can
// never come back as data. (In an unencrypted repository a damaged bit that
// does not change the decoded content — an unused zstd header bit — passes
// here; the pack's hash, checked by verify, catches it.)
package blob

import (
	"encoding/hex"
	"errors"
	"fmt"
)

// IDSize is the size of a blob id in bytes.
const IDSize = 32

// ID is a blob's keyed BLAKE3-256 hash.
type ID [IDSize]byte

// String returns the id in lowercase hex.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Short returns the first 12 hex digits, for messages.
func (id ID) Short() string { return id.String()[:12] }

// IsZero reports whether id is all zeros (no id).
func (id ID) IsZero() bool { return id == ID{} }

// ParseID parses a 64-digit hex id.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 2*IDSize {
		return id, fmt.Errorf("blob id %q: want %d hex digits", s, 2*IDSize)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("blob id %q: %w", s, err)
	}
	return id, nil
}

// Type says what a blob holds.
type Type uint8

// The blob types. Their values are part of the repository format.
const (
	Data Type = 1 // file content
	Tree Type = 2 // an encoded directory
)

// String names the type.
func (t Type) String() string {
	switch t {
	case Data:
		return "data"
	case Tree:
		return "tree"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Valid reports whether t is a defined type.
func (t Type) Valid() bool { return t == Data || t == Tree }

// MaxSize bounds a blob's plaintext. Chunks are at most 16 MiB (the
// largest chunker maximum); trees of huge directories are split by the
// tree layer to stay under it.
const MaxSize = 16 << 20

// ErrCorrupt marks a stored blob that cannot be decoded: truncated, failing
// authentication (corruption or a wrong key), or not matching its id.
var ErrCorrupt = errors.New("corrupt blob")
