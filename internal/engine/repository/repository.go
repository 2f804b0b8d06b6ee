package repository

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/blobstore"
)

// Repository is an open repository: its objects on a backend, its index in
// the metadata database, and its keys. It is safe for concurrent use; many
// Writers and readers may work on it at once, and so may other Repository
// values on other servers that share the backend and the database.
type Repository struct {
	backend blobstore.Backend
	index   Index
	cfg     *Config
	codec   *blob.Codec

	// packBuffers keeps the buffers packs are assembled in between
	// Writers: a server makes a Writer per upload request, and a fresh
	// zeroed 18 MiB buffer each time cost it a tenth of its CPU.
	packBuffers sync.Pool
}

// Open opens the repository at b, unwrapping its keys with the master key.
// A location without a config is ErrNotRepository.
func Open(ctx context.Context, b blobstore.Backend, idx Index, master []byte) (*Repository, error) {
	cfg, keys, err := OpenConfig(ctx, b, master)
	if err != nil {
		return nil, err
	}
	return newRepository(b, idx, cfg, keys)
}

// OpenOrInit opens the repository at b, or creates one there with o when the
// location holds none, with the index indexFor returns for its config id
// (known only once the config is read or made). created reports which
// happened. Two servers racing to create it end up sharing the winner's.
func OpenOrInit(ctx context.Context, b blobstore.Backend, indexFor func(repositoryID string) Index, o InitOptions) (r *Repository, created bool, err error) {
	cfg, keys, err := OpenConfig(ctx, b, o.MasterKey)
	if errors.Is(err, ErrNotRepository) {
		cfg, keys, err = Init(ctx, b, o)
		created = err == nil
		if errors.Is(err, blobstore.ErrExists) {
			cfg, keys, err = OpenConfig(ctx, b, o.MasterKey)
		}
	}
	if err != nil {
		return nil, false, err
	}
	r, err = newRepository(b, indexFor(cfg.ID), cfg, keys)
	return r, created && err == nil, err
}

func newRepository(b blobstore.Backend, idx Index, cfg *Config, keys blob.Keys) (*Repository, error) {
	codec, err := blob.NewCodec(keys)
	if err != nil {
		return nil, fmt.Errorf("open repository at %s: %w", b.Location(), err)
	}
	return &Repository{backend: b, index: idx, cfg: cfg, codec: codec}, nil
}

// Close releases the repository's codec. It does not close the backend or
// the index, which the caller owns.
func (r *Repository) Close() { r.codec.Close() }

// Config returns the repository's config.
func (r *Repository) Config() *Config { return r.cfg }

// Codec returns the repository's blob codec.
func (r *Repository) Codec() *blob.Codec { return r.codec }

// Backend returns the storage the repository lives on.
func (r *Repository) Backend() blobstore.Backend { return r.backend }

// Index returns the repository's index.
func (r *Repository) Index() Index { return r.index }

// Location describes where the repository lives, for messages.
func (r *Repository) Location() string { return r.backend.Location() }

// BlobID returns the id of a data blob's plaintext in this repository.
func (r *Repository) BlobID(plaintext []byte) blob.ID { return r.codec.ID(plaintext) }

// TreeID returns the id of a tree blob's plaintext (an encoded tree).
func (r *Repository) TreeID(plaintext []byte) blob.ID { return r.codec.TreeID(plaintext) }
