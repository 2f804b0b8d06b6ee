package agents

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
)

// secretLen is the number of random bytes in a credential or enrollment
// token (256 bits).
const secretLen = 32

// newSecret returns a fresh random secret with the given prefix and the
// hash to store for it.
func newSecret(prefix string) (secret, hash string) {
	b := make([]byte, secretLen)
	rand.Read(b) // never fails: crypto/rand.Read panics rather than return short
	secret = prefix + base64.RawURLEncoding.EncodeToString(b)
	return secret, hashSecret(secret)
}

// hashSecret is the stored form of a secret: SHA-256, hex. Secrets are 256
// random bits, so a fast hash is enough (there is no dictionary to attack).
func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}
