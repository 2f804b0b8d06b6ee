package repository

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/blobstore"
	"github.com/cofferhq/coffer/internal/engine/chunker"
	"github.com/zeebo/blake3"
)

// FormatVersion is the repository format this package reads and writes.
const FormatVersion = 1

// ConfigName is the object name of a repository's config.
const ConfigName = "config"

// MasterKeySize is the size of the server's master key.
const MasterKeySize = 32

// Config describes a repository. It is stored as JSON in the "config"
// object, written once when the repository is created.
type Config struct {
	Version   int       `json:"version"`
	ID        string    `json:"id"`
	CreatedAt time.Time `json:"created_at"`
	Encrypted bool      `json:"encrypted"`
	Chunker   struct {
		Algorithm string `json:"algorithm"`
		Min       int    `json:"min"`
		Avg       int    `json:"avg"`
		Max       int    `json:"max"`
	} `json:"chunker"`
	PackSize int `json:"pack_size"`
	// Keys holds the id key and data key, encrypted with the master key.
	// The rest of the config is bound into that encryption, so changing
	// any field (turning encryption off, say) makes the keys unreadable.
	Keys struct {
		Algorithm   string `json:"algorithm"`     // "aes-256-gcm"
		MasterKeyID string `json:"master_key_id"` // which master key wraps them
		Wrapped     []byte `json:"wrapped"`       // nonce ‖ AES-256-GCM(id key ‖ data key)
	} `json:"keys"`
}

// ChunkerParams returns the repository's chunking parameters.
func (c *Config) ChunkerParams() chunker.Params {
	return chunker.Params{Min: c.Chunker.Min, Avg: c.Chunker.Avg, Max: c.Chunker.Max}
}

// binding is the config as the key encryption authenticates it: every
// field except the wrapped keys, in a fixed text form that does not depend
// on how JSON is encoded.
func (c *Config) binding() []byte {
	return fmt.Appendf(nil, "coffer repository config\nversion=%d\nid=%s\ncreated=%d\nencrypted=%t\nchunker=%s/%d/%d/%d\npack_size=%d\nkeys=%s/%s\n",
		c.Version, c.ID, c.CreatedAt.UnixMicro(), c.Encrypted, c.Chunker.Algorithm, c.Chunker.Min, c.Chunker.Avg,
		c.Chunker.Max, c.PackSize, c.Keys.Algorithm, c.Keys.MasterKeyID)
}

// MasterKeyID identifies a master key without revealing it.
func MasterKeyID(master []byte) string {
	sum := blake3.Sum256(append([]byte("coffer master key id\n"), master...))
	return hex.EncodeToString(sum[:8])
}

// InitOptions configure a new repository.
type InitOptions struct {
	MasterKey []byte
	Encrypted bool
	Chunker   chunker.Params // zero: chunker.DefaultParams()
	PackSize  int            // zero: 16 MiB
	Now       func() time.Time
}

// ErrNotRepository marks a location whose config is absent: nothing has
// been initialised there.
var ErrNotRepository = errors.New("no Coffer repository here")

// Init creates a repository: fresh keys, wrapped with the master key, in a
// new config object. It fails with blobstore.ErrExists when the location
// already holds a config (open that repository instead).
func Init(ctx context.Context, b blobstore.Backend, o InitOptions) (*Config, blob.Keys, error) {
	if len(o.MasterKey) != MasterKeySize {
		return nil, blob.Keys{}, fmt.Errorf("init repository: the master key must be %d bytes", MasterKeySize)
	}
	if o.Chunker == (chunker.Params{}) {
		o.Chunker = chunker.DefaultParams()
	}
	if err := o.Chunker.Validate(); err != nil {
		return nil, blob.Keys{}, fmt.Errorf("init repository: %w", err)
	}
	if o.PackSize == 0 {
		o.PackSize = 16 << 20
	}
	if o.PackSize < 1<<20 || o.PackSize > 512<<20 {
		return nil, blob.Keys{}, fmt.Errorf("init repository: pack size %d is outside 1 MiB to 512 MiB", o.PackSize)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	keys := blob.Keys{Encrypted: o.Encrypted}
	rand.Read(keys.IDKey[:])
	rand.Read(keys.DataKey[:])
	id := make([]byte, 16)
	rand.Read(id)

	c := &Config{Version: FormatVersion, ID: hex.EncodeToString(id), CreatedAt: o.Now().UTC().Truncate(time.Microsecond),
		Encrypted: o.Encrypted, PackSize: o.PackSize}
	c.Chunker.Algorithm, c.Chunker.Min, c.Chunker.Avg, c.Chunker.Max = chunker.Algorithm, o.Chunker.Min, o.Chunker.Avg, o.Chunker.Max
	c.Keys.Algorithm, c.Keys.MasterKeyID = "aes-256-gcm", MasterKeyID(o.MasterKey)
	aead, err := masterAEAD(o.MasterKey)
	if err != nil {
		return nil, blob.Keys{}, err
	}
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	c.Keys.Wrapped = aead.Seal(nonce, nonce, append(keys.IDKey[:], keys.DataKey[:]...), c.binding())

	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, blob.Keys{}, err
	}
	data = append(data, '\n')
	if err := b.Put(ctx, ConfigName, bytes.NewReader(data), int64(len(data))); err != nil {
		return nil, blob.Keys{}, fmt.Errorf("init repository at %s: %w", b.Location(), err)
	}
	return c, keys, nil
}

// OpenConfig reads a repository's config and unwraps its keys with the
// master key. A missing config is ErrNotRepository; a wrong master key or
// a config changed after it was written are reported as such.
func OpenConfig(ctx context.Context, b blobstore.Backend, master []byte) (*Config, blob.Keys, error) {
	info, err := b.Stat(ctx, ConfigName)
	if errors.Is(err, blobstore.ErrNotFound) {
		return nil, blob.Keys{}, fmt.Errorf("open repository at %s: %w", b.Location(), ErrNotRepository)
	}
	if err != nil {
		return nil, blob.Keys{}, fmt.Errorf("open repository at %s: %w", b.Location(), err)
	}
	if info.Size > 1<<20 {
		return nil, blob.Keys{}, fmt.Errorf("open repository at %s: config is %d bytes, not a Coffer config", b.Location(), info.Size)
	}
	data, err := blobstore.ReadRange(ctx, b, ConfigName, 0, info.Size)
	if err != nil {
		return nil, blob.Keys{}, fmt.Errorf("open repository: %w", err)
	}
	var c Config
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, blob.Keys{}, fmt.Errorf("open repository at %s: config is not a Coffer config: %w", b.Location(), err)
	}
	if c.Version != FormatVersion {
		return nil, blob.Keys{}, fmt.Errorf("open repository at %s: format version %d is not supported (this Coffer reads version %d)",
			b.Location(), c.Version, FormatVersion)
	}
	if c.Chunker.Algorithm != chunker.Algorithm {
		return nil, blob.Keys{}, fmt.Errorf("open repository at %s: chunker %q is not supported", b.Location(), c.Chunker.Algorithm)
	}
	if id := MasterKeyID(master); c.Keys.MasterKeyID != id {
		return nil, blob.Keys{}, fmt.Errorf("open repository at %s: its keys are wrapped with master key %s, but this server's master key is %s: start the server with the master key file that created the repository",
			b.Location(), c.Keys.MasterKeyID, id)
	}
	aead, err := masterAEAD(master)
	if err != nil {
		return nil, blob.Keys{}, err
	}
	ns := aead.NonceSize()
	if len(c.Keys.Wrapped) < ns {
		return nil, blob.Keys{}, fmt.Errorf("open repository at %s: wrapped keys are truncated", b.Location())
	}
	plain, err := aead.Open(nil, c.Keys.Wrapped[:ns], c.Keys.Wrapped[ns:], c.binding())
	if err != nil || len(plain) != 64 {
		return nil, blob.Keys{}, fmt.Errorf("open repository at %s: the config was modified after it was written, or is damaged: refusing to use it; restore the config object from a copy of the repository, or check who can write to it", b.Location())
	}
	if err := c.ChunkerParams().Validate(); err != nil {
		return nil, blob.Keys{}, fmt.Errorf("open repository at %s: %w", b.Location(), err)
	}
	keys := blob.Keys{Encrypted: c.Encrypted}
	copy(keys.IDKey[:], plain[:32])
	copy(keys.DataKey[:], plain[32:])
	return &c, keys, nil
}

func masterAEAD(master []byte) (cipher.AEAD, error) {
	if len(master) != MasterKeySize {
		return nil, fmt.Errorf("the master key must be %d bytes, not %d", MasterKeySize, len(master))
	}
	block, err := aes.NewCipher(master)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
