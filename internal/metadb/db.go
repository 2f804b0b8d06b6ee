// Package metadb is Coffer's metadata store: accounts, credentials, events
// and, in later layers, clients, plans, backups and the storage index. It
// runs on an embedded SQLite database (the zero-configuration default) or on
// PostgreSQL (for larger installs and several server replicas).
//
// One SQL text serves both databases: queries stay in the portable subset
// ($n placeholders, RETURNING, ON CONFLICT, no casts or server-side clocks),
// timestamps come from Go in UTC with microsecond precision, and the few
// places that differ (row locks, schema) are switched on the dialect.
package metadb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Dialect names the database behind a DB.
type Dialect string

// The supported dialects.
const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// DB is the metadata store. Its methods are safe for concurrent use.
type DB struct {
	sql     *sql.DB
	dialect Dialect
	url     string
	// path is the SQLite database file ("" for PostgreSQL); the readiness
	// check makes sure it is still the file that was opened.
	path  string
	inode fileID

	// Now returns the current time; tests replace it. Times are stored in
	// UTC, truncated to microseconds (the precision both databases keep).
	Now func() time.Time

	hot hotStatements
}

// Options configures Open.
type Options struct {
	// URL is "sqlite:///abs/path.db", "sqlite://rel/path.db", or
	// "postgres://user:pass@host:port/db?sslmode=…".
	URL string
	// MaxOpenConns bounds the connection pool (0: a default per dialect).
	MaxOpenConns int
}

// Open connects to the database named by opts.URL. It does not migrate; call
// Migrate before using the store.
func Open(ctx context.Context, opts Options) (*DB, error) {
	u, err := url.Parse(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	db := &DB{Now: time.Now, url: opts.URL}
	switch u.Scheme {
	case "sqlite", "sqlite3", "file":
		db.dialect = SQLite
		db.path = sqlitePath(u)
		if db.path == "" {
			return nil, fmt.Errorf("database url %q names no file: use sqlite:///absolute/path.db or sqlite://relative/path.db", redactURL(opts.URL))
		}
		if err := os.MkdirAll(filepath.Dir(db.path), 0o700); err != nil {
			return nil, fmt.Errorf("create database directory: %w", err)
		}
		db.sql, err = sql.Open("sqlite", sqliteDSN(db.path))
		if err != nil {
			return nil, fmt.Errorf("open sqlite %s: %w", db.path, err)
		}
		db.sql.SetMaxOpenConns(max(opts.MaxOpenConns, 8))
	case "postgres", "postgresql":
		db.dialect = Postgres
		db.sql, err = sql.Open("pgx", opts.URL)
		if err != nil {
			return nil, fmt.Errorf("open postgres %s: %w", redactURL(opts.URL), err)
		}
		db.sql.SetMaxOpenConns(max(opts.MaxOpenConns, 20))
		db.sql.SetMaxIdleConns(10)
		db.sql.SetConnMaxIdleTime(5 * time.Minute)
	default:
		return nil, fmt.Errorf("database url %q: scheme must be sqlite:// or postgres://", redactURL(opts.URL))
	}
	if err := db.sql.PingContext(ctx); err != nil {
		db.sql.Close()
		return nil, fmt.Errorf("connect to %s database %s: %w", db.dialect, redactURL(opts.URL), err)
	}
	if db.path != "" {
		db.inode, err = statFileID(db.path)
		if err != nil {
			db.sql.Close()
			return nil, fmt.Errorf("stat database file: %w", err)
		}
	}
	return db, nil
}

// sqlitePath returns the file a sqlite URL names: sqlite:///abs and
// sqlite://rel/ative (host and path joined).
func sqlitePath(u *url.URL) string {
	p := u.Host + u.Path
	if u.Opaque != "" {
		p = u.Opaque
	}
	return filepath.Clean(p)
}

// sqliteDSN opens the file in WAL mode with foreign keys on, full
// synchronous commits (a committed backup must survive power loss), a busy
// timeout so writers queue instead of failing, IMMEDIATE transactions (a
// transaction takes the write lock at BEGIN, so read-then-write sequences are
// serialised), and timestamps stored as integer microseconds.
func sqliteDSN(path string) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(15000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Set("_txlock", "immediate")
	q.Set("_time_integer_format", "unix_micro")
	q.Set("_inttotime", "1")
	return "file:" + path + "?" + q.Encode()
}

// redactURL hides the password of a database URL for messages and logs.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable url)"
	}
	return u.Redacted()
}

// URL returns the URL the store was opened with (it may hold a password:
// do not log it).
func (db *DB) URL() string { return db.url }

// Dialect returns the database kind.
func (db *DB) Dialect() Dialect { return db.dialect }

// SQL returns the connection pool, for pool metrics and tests.
func (db *DB) SQL() *sql.DB { return db.sql }

// Optimize refreshes the query planner's statistics where they are stale.
// SQLite keeps none by itself, and without them it can pick an index that
// reads a whole table (every backup by state, say) over one that stops
// after a page; the server calls Optimize hourly. PostgreSQL's autovacuum
// keeps its statistics, so there it does nothing.
func (db *DB) Optimize(ctx context.Context) error {
	if db.dialect != SQLite {
		return nil
	}
	// 0x10002: analyze every table whose statistics are missing or stale
	// (not only those this connection has queried), with a bounded effort.
	if _, err := db.sql.ExecContext(ctx, "PRAGMA optimize=0x10002"); err != nil {
		return fmt.Errorf("optimize database: %w", err)
	}
	return nil
}

// Close closes the connection pool.
func (db *DB) Close() error {
	db.closeHot()
	return db.sql.Close()
}

// Ping checks that the database answers a query and, for SQLite, that the
// database file is still the one that was opened (a deleted or replaced file
// would silently lose every write from here on).
func (db *DB) Ping(ctx context.Context) error {
	var one int
	if err := db.sql.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("query database: %w", err)
	}
	if db.path != "" {
		id, err := statFileID(db.path)
		if err != nil {
			return fmt.Errorf("database file %s: %w", db.path, err)
		}
		if id != db.inode {
			return fmt.Errorf("database file %s was replaced after the server opened it", db.path)
		}
	}
	return nil
}

func (db *DB) now() time.Time { return ts(db.Now()) }

// ts normalises a time for storage: UTC, microsecond precision.
func ts(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// tsPtr is ts for optional times.
func tsPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	v := ts(*t)
	return &v
}

// forUpdate is the row-lock suffix of a SELECT inside a transaction.
// SQLite needs none: its transactions take the database write lock at BEGIN.
func (db *DB) forUpdate() string {
	if db.dialect == Postgres {
		return " FOR UPDATE"
	}
	return ""
}

// forShare is the shared row-lock suffix of a SELECT inside a transaction:
// many holders at once, but an UPDATE of the row waits for all of them.
// SQLite needs none: its transactions take the write lock at BEGIN.
func (db *DB) forShare() string {
	if db.dialect == Postgres {
		return " FOR SHARE"
	}
	return ""
}

// queryer is what both *sql.DB and *sql.Tx offer.
type queryer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// inTx runs fn in a transaction, committing when it returns nil.
func (db *DB) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := db.sql.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// isUniqueViolation reports whether err is a unique-constraint failure.
func isUniqueViolation(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "23505"
	}
	return false
}

// isForeignKeyViolation reports whether err is a foreign-key failure.
func isForeignKeyViolation(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "23503"
	}
	return false
}

// notFound turns sql.ErrNoRows into a coffer not-found error with the given
// code and detail; other errors pass through wrapped with context.
func notFound(err error, code, detail string, args ...any) error {
	if errors.Is(err, sql.ErrNoRows) {
		return coffer.Errorf(coffer.KindNotFound, code, detail, args...)
	}
	return err
}

// utc scans a timestamp and normalises it to UTC (pgx returns local time).
type utc struct{ t *time.Time }

func (s utc) Scan(v any) error {
	switch x := v.(type) {
	case time.Time:
		*s.t = x.UTC()
		return nil
	case nil:
		return errors.New("scan timestamp: unexpected NULL")
	}
	return fmt.Errorf("scan timestamp: unexpected %T", v)
}

// nullUTC scans an optional timestamp.
type nullUTC struct{ t **time.Time }

func (s nullUTC) Scan(v any) error {
	switch x := v.(type) {
	case nil:
		*s.t = nil
		return nil
	case time.Time:
		u := x.UTC()
		*s.t = &u
		return nil
	}
	return fmt.Errorf("scan timestamp: unexpected %T", v)
}

// joinList and splitList store short string lists (scopes) in one column.
func joinList[T ~string](xs []T) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = string(x)
	}
	return strings.Join(s, ",")
}

func splitList[T ~string](s string) []T {
	if s == "" {
		return nil
	}
	parts := strings.Split(s, ",")
	out := make([]T, len(parts))
	for i, p := range parts {
		out[i] = T(p)
	}
	return out
}
