package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"strings"
)

// Credential prefixes. Every secret Coffer issues starts with "cfr_" and a
// kind letter, so a leaked one is recognisable (secret scanners, logs) and
// the server knows which table to look it up in.
const (
	PrefixSession  = "cfr_s_"
	PrefixAPIToken = "cfr_t_"
)

// secretLen is the number of random bytes in a secret (256 bits).
const secretLen = 32

var secretEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// newSecret returns a fresh random secret with the given prefix and the hash
// to store for it.
func NewSecret(prefix string) (secret, hash string) {
	b := make([]byte, secretLen)
	rand.Read(b) // never fails: crypto/rand.Read panics rather than return short
	secret = prefix + strings.ToLower(secretEncoding.EncodeToString(b))
	return secret, HashSecret(secret)
}

// hashSecret is the stored form of a secret: SHA-256, hex. Secrets are 256
// random bits, so a fast hash is enough (there is no dictionary to attack).
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// displayPrefix is the part of a secret shown in token lists.
func displayPrefix(secret string) string {
	return secret[:min(len(secret), len(PrefixAPIToken)+6)]
}
