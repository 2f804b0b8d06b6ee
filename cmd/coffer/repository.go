package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/cofferhq/coffer/internal/engine/blobstore"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/server/masterkey"
	"github.com/cofferhq/coffer/internal/server/storage"
)

// locations are where the server's state lives, with the defaults that
// depend on the data directory filled in.
type locations struct {
	dataDir       string
	databaseURL   string
	masterKeyFile string
	repositoryDir string
	repositoryURL string
}

// locate resolves the shared settings.
func (c *serverCmd) locate() (locations, error) {
	dataDir, err := filepath.Abs(c.DataDir)
	if err != nil {
		return locations{}, err
	}
	l := locations{dataDir: dataDir, databaseURL: c.DatabaseURL, masterKeyFile: c.MasterKeyFile, repositoryDir: c.RepositoryDir,
		repositoryURL: c.RepositoryURL}
	if l.databaseURL == "" {
		l.databaseURL = "sqlite://" + filepath.Join(dataDir, "coffer.db")
	}
	if l.masterKeyFile == "" {
		l.masterKeyFile = filepath.Join(dataDir, "master.key")
	}
	if l.repositoryDir == "" {
		l.repositoryDir = filepath.Join(dataDir, "repository")
	}
	return l, nil
}

// openDatabase creates the data directory (the SQLite database's home)
// and opens the metadata database, bringing its schema up to date.
func openDatabase(ctx context.Context, l locations, log *slog.Logger) (*metadb.DB, error) {
	if err := os.MkdirAll(l.dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	db, err := metadb.Open(ctx, metadb.Options{URL: l.databaseURL})
	if err != nil {
		return nil, err
	}
	if err := db.Migrate(ctx, log.With("component", "migrate")); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// openDefaultRepository opens the default repository, creating it and the
// master key on the first start (close it with closeRepository), and
// returns it with the master key. It is encrypted: its copies (rsync'd off
// site, on a stolen disk) are unreadable without the master key, and the
// key costs nothing extra, since even an unencrypted repository's id key is
// wrapped with it.
func openDefaultRepository(ctx context.Context, l locations, db *metadb.DB, log *slog.Logger) (*repository.Repository, []byte, error) {
	backend, err := openBackend(ctx, l)
	if err != nil {
		return nil, nil, err
	}
	key, err := loadOrCreateMasterKey(ctx, l.masterKeyFile, backend, log)
	if err != nil {
		backend.Close()
		return nil, nil, err
	}
	repo, created, err := openRepository(ctx, backend, db, key, l.masterKeyFile, repository.InitOptions{Encrypted: true})
	if err != nil {
		backend.Close()
		return nil, nil, err
	}
	cfg := repo.Config()
	log.Info("default repository open", "repository", repo.Location(), "repository_id", cfg.ID, "encrypted", cfg.Encrypted,
		"created", created)
	if lost, err := storage.IndexLooksLost(ctx, repo); err != nil {
		log.Warn("could not compare the index with the repository", "repository", repo.Location(), "err", err)
	} else if lost {
		log.Warn("the metadata database knows no pack of this repository, but its storage holds packs: if the database was lost or replaced, stop the server and run 'coffer server rebuild-index' with the same settings",
			"repository", repo.Location(), "repository_id", cfg.ID)
	}
	return repo, key, nil
}

// closeRepository closes a repository and the backend it was opened on.
func closeRepository(repo *repository.Repository) error {
	repo.Close()
	return repo.Backend().Close()
}

// loadOrCreateMasterKey loads the master key, or creates it on the first
// start, warning that it must be backed up. It refuses to create a key
// beside a repository that exists: that repository was made with the key
// now missing, and a new one could never open it.
func loadOrCreateMasterKey(ctx context.Context, path string, b blobstore.Backend, log *slog.Logger) ([]byte, error) {
	key, err := masterkey.Load(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	if _, serr := b.Stat(ctx, repository.ConfigName); serr == nil {
		return nil, fmt.Errorf("the master key file %s is missing, but the repository at %s exists: restore the master key file that created it (or point --master-key-file at it); a new key could not open it",
			path, b.Location())
	}
	key, created, err := masterkey.LoadOrCreate(path)
	if err != nil {
		return nil, err
	}
	if created {
		log.Warn("created a new master key: back up this file separately from the repository; losing it loses every encrypted repository",
			"master_key_file", path, "master_key_id", repository.MasterKeyID(key))
	}
	return key, nil
}

// openRepository opens the repository on b with the metadb index of its
// config id, creating it with init when the location holds none (created
// reports it). A config the master key cannot open is refused with the key
// file named.
func openRepository(ctx context.Context, b blobstore.Backend, db *metadb.DB, key []byte, keyFile string,
	init repository.InitOptions) (repo *repository.Repository, created bool, err error) {
	init.MasterKey = key
	indexFor := func(id string) repository.Index { return db.Index(id) }
	repo, created, err = repository.OpenOrInit(ctx, b, indexFor, init)
	if err != nil {
		return nil, false, configError(err, keyFile)
	}
	return repo, created, nil
}

// configError names the master key file in the error of a config that did
// not open: most often the key is the wrong one.
func configError(err error, keyFile string) error {
	if errors.Is(err, repository.ErrNotRepository) {
		return err
	}
	return fmt.Errorf("%w (master key file in use: %s; if another master key created this repository, give its file with --master-key-file or COFFER_MASTER_KEY_FILE)", err, keyFile)
}
