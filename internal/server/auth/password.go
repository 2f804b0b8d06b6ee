package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
)

// argon2id parameters (OWASP's recommended minimum: 19 MiB, 2 passes, 1 lane).
// They are stored in each hash, so raising them later re-hashes passwords
// at their next login.
const (
	argonTime    = 2
	argonMemory  = 19 * 1024 // KiB
	argonThreads = 1
	argonKeyLen  = 32
	argonSaltLen = 16
)

// hashPassword returns the argon2id PHC string of password.
func hashPassword(password string) (string, error) {
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("password salt: %w", err)
	}
	key := argon2.IDKey([]byte(password), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, argonMemory, argonTime, argonThreads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// phc is a parsed argon2id hash.
type phc struct {
	memory       uint32
	time         uint32
	threads      uint8
	salt, key    []byte
	outdatedCost bool
}

func parsePHC(s string) (phc, error) {
	var h phc
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return h, fmt.Errorf("not an argon2id hash")
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return h, fmt.Errorf("unsupported argon2 version %q", parts[2])
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &h.memory, &h.time, &h.threads); err != nil {
		return h, fmt.Errorf("argon2 parameters %q: %w", parts[3], err)
	}
	if h.memory == 0 || h.time == 0 || h.threads == 0 || h.memory > 1<<22 || h.time > 100 {
		return h, fmt.Errorf("argon2 parameters %q out of range", parts[3])
	}
	var err error
	b64 := base64.RawStdEncoding
	if h.salt, err = b64.DecodeString(parts[4]); err != nil {
		return h, fmt.Errorf("argon2 salt: %w", err)
	}
	if h.key, err = b64.DecodeString(parts[5]); err != nil || len(h.key) == 0 {
		return h, fmt.Errorf("argon2 key: %v", err)
	}
	h.outdatedCost = h.memory != argonMemory || h.time != argonTime || h.threads != argonThreads
	return h, nil
}

// verifyPassword reports whether password matches the PHC hash, and whether
// the hash uses other parameters than the current ones (so the caller can
// store a fresh hash).
func verifyPassword(hash, password string) (ok, rehash bool, err error) {
	h, err := parsePHC(hash)
	if err != nil {
		return false, false, err
	}
	key := argon2.IDKey([]byte(password), h.salt, h.time, h.memory, h.threads, uint32(len(h.key)))
	return subtle.ConstantTimeCompare(key, h.key) == 1, h.outdatedCost, nil
}

// dummyHash is verified against when a username does not exist, so that a
// login for an unknown user takes as long as one for a known user.
var dummyHash = func() string {
	h, err := hashPassword("coffer-timing-equaliser")
	if err != nil {
		panic(err)
	}
	return h
}()
