package blob

import (
	"crypto/hmac"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/zeebo/blake3"
)

// macSize is the length of the MAC that authenticates objects of an
// unencrypted repository.
const macSize = 32

// ErrAuth marks a sealed object that fails authentication: damaged,
// truncated, sealed for another kind of object, or sealed with another key.
var ErrAuth = errors.New("authentication failed")

// Seal protects a small repository object that is not a blob (a pack
// trailer, a snapshot manifest): encrypted repositories encrypt it with
// AES-256-GCM, unencrypted ones append a keyed BLAKE3 MAC. kind names what
// the object is ("pack trailer v1") and is bound into the seal, so one kind
// of object can never be passed off as another.
func (c *Codec) Seal(dst []byte, kind string, plaintext []byte) []byte {
	if c.keys.Encrypted {
		start := len(dst)
		dst = append(dst, make([]byte, nonceSize)...)
		nonce := dst[start : start+nonceSize]
		rand.Read(nonce)
		return c.aead.Seal(dst, nonce, plaintext, []byte(kind))
	}
	dst = append(dst, plaintext...)
	return append(dst, c.mac(kind, plaintext)...)
}

// SealOverhead is how many bytes Seal adds.
func (c *Codec) SealOverhead() int {
	if c.keys.Encrypted {
		return nonceSize + tagSize
	}
	return macSize
}

// Open checks and returns the plaintext of a sealed object of the given
// kind; errors match ErrAuth.
func (c *Codec) Open(kind string, sealed []byte) ([]byte, error) {
	if len(sealed) < c.SealOverhead() {
		return nil, fmt.Errorf("%s: truncated to %d bytes: %w", kind, len(sealed), ErrAuth)
	}
	if c.keys.Encrypted {
		plain, err := c.aead.Open(nil, sealed[:nonceSize], sealed[nonceSize:], []byte(kind))
		if err != nil {
			return nil, fmt.Errorf("%s: damaged, or sealed with another key: %w", kind, ErrAuth)
		}
		return plain, nil
	}
	plain, mac := sealed[:len(sealed)-macSize], sealed[len(sealed)-macSize:]
	if !hmac.Equal(mac, c.mac(kind, plain)) {
		return nil, fmt.Errorf("%s: damaged, or sealed with another key: %w", kind, ErrAuth)
	}
	return plain, nil
}

// mac is BLAKE3 keyed with the id key over the kind and the plaintext. The
// kind is length-prefixed so that kind and content cannot be re-split.
func (c *Codec) mac(kind string, plaintext []byte) []byte {
	h, _ := blake3.NewKeyed(c.keys.IDKey[:])
	h.Write([]byte{byte(len(kind))})
	h.Write([]byte(kind))
	h.Write(plaintext)
	return h.Sum(nil)
}
