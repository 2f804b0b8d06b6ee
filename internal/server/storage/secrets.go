package storage

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/zeebo/blake3"
)

// Credentials are an S3 access key and its secret. They never leave the
// server: the API takes them and shows only whether a repository has
// them; String and LogValue leave them out, so a stray log line cannot
// leak them.
type Credentials struct {
	AccessKey string `json:"access_key"`
	SecretKey string `json:"secret_key"`
}

// Empty reports whether there are no credentials (anonymous access).
func (c Credentials) Empty() bool { return c.AccessKey == "" && c.SecretKey == "" }

// String hides both values.
func (c Credentials) String() string {
	if c.Empty() {
		return "{none}"
	}
	return "{[redacted]}"
}

// LogValue hides both values.
func (c Credentials) LogValue() slog.Value { return slog.StringValue(c.String()) }

// credentialsKeyContext derives the key that seals credentials from the
// master key, so that the master key itself encrypts nothing but
// repository keys, and a key recovered from one use says nothing of the
// other.
const credentialsKeyContext = "coffer 2026-12-01 storage credentials v1"

// sealVersion is the first byte of sealed credentials.
const sealVersion = 1

// sealer encrypts credentials for the database with AES-256-GCM under a
// key derived from the master key. The repository id is authenticated
// with them: sealed credentials copied onto another repository's row do
// not open.
type sealer struct{ aead cipher.AEAD }

func newSealer(master []byte) (*sealer, error) {
	if len(master) != 32 {
		return nil, fmt.Errorf("storage: the master key must be 32 bytes, not %d", len(master))
	}
	var key [32]byte
	blake3.DeriveKey(credentialsKeyContext, master, key[:])
	block, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &sealer{aead: aead}, nil
}

func sealBinding(repositoryID string) []byte {
	return []byte("coffer repository credentials\nrepository=" + repositoryID + "\n")
}

// seal encrypts c for repository id; no credentials seal to nil.
func (s *sealer) seal(repositoryID string, c Credentials) ([]byte, error) {
	if c.Empty() {
		return nil, nil
	}
	plain, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 1+s.aead.NonceSize(), 1+s.aead.NonceSize()+len(plain)+s.aead.Overhead())
	out[0] = sealVersion
	rand.Read(out[1:])
	return s.aead.Seal(out, out[1:], plain, sealBinding(repositoryID)), nil
}

// errUnseal says sealed credentials do not open: another master key
// sealed them, or the row was changed.
var errUnseal = errors.New("the stored credentials do not decrypt with this server's master key (another master key sealed them, or they were changed in the database): set them again")

// open decrypts what seal made for repository id; nil opens as none.
func (s *sealer) open(repositoryID string, sealed []byte) (Credentials, error) {
	if len(sealed) == 0 {
		return Credentials{}, nil
	}
	ns := s.aead.NonceSize()
	if len(sealed) < 1+ns || sealed[0] != sealVersion {
		return Credentials{}, errUnseal
	}
	plain, err := s.aead.Open(nil, sealed[1:1+ns], sealed[1+ns:], sealBinding(repositoryID))
	if err != nil {
		return Credentials{}, errUnseal
	}
	var c Credentials
	if err := json.Unmarshal(plain, &c); err != nil {
		return Credentials{}, errUnseal
	}
	return c, nil
}
