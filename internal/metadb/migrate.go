package metadb

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"

	"github.com/cofferhq/coffer"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

//go:embed migrations
var migrations embed.FS

// SchemaStatus says how the database schema relates to this binary.
type SchemaStatus struct {
	Current int64 // version applied in the database (0: empty database)
	Latest  int64 // newest version this binary knows
}

// UpToDate reports whether the database is at this binary's version.
func (s SchemaStatus) UpToDate() bool { return s.Current == s.Latest }

func (db *DB) provider(logger *slog.Logger) (*goose.Provider, error) {
	sub, err := fs.Sub(migrations, "migrations/"+string(db.dialect))
	if err != nil {
		return nil, err
	}
	opts := []goose.ProviderOption{goose.WithDisableGlobalRegistry(true)}
	if logger != nil {
		opts = append(opts, goose.WithSlog(logger))
	}
	dialect := goose.DialectSQLite3
	if db.dialect == Postgres {
		dialect = goose.DialectPostgres
		// Several replicas may start at once: one migrates, the others wait.
		locker, err := lock.NewPostgresSessionLocker()
		if err != nil {
			return nil, err
		}
		opts = append(opts, goose.WithSessionLocker(locker))
	}
	return goose.NewProvider(dialect, db.sql, sub, opts...)
}

// Schema reports the applied and the latest schema versions.
func (db *DB) Schema(ctx context.Context) (SchemaStatus, error) {
	p, err := db.provider(nil)
	if err != nil {
		return SchemaStatus{}, err
	}
	var s SchemaStatus
	if src := p.ListSources(); len(src) > 0 {
		s.Latest = src[len(src)-1].Version
	}
	s.Current, err = p.GetDBVersion(ctx)
	if err != nil && !errors.Is(err, goose.ErrVersionNotFound) {
		return s, fmt.Errorf("read schema version: %w", err)
	}
	return s, nil
}

// Migrate brings the schema up to this binary's version. It refuses to touch
// a database whose schema is newer than the binary: an older server would
// misread data written by a newer one.
func (db *DB) Migrate(ctx context.Context, logger *slog.Logger) error {
	s, err := db.Schema(ctx)
	if err != nil {
		return err
	}
	if s.Current > s.Latest {
		return coffer.Errorf(coffer.KindConflict, "schema_too_new",
			"database schema version %d is newer than this coffer binary supports (%d): run the newer coffer version, or restore a database backup taken before the upgrade", s.Current, s.Latest)
	}
	p, err := db.provider(logger)
	if err != nil {
		return err
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrate %s schema: %w", db.dialect, err)
	}
	return nil
}
