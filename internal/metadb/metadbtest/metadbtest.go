// Package metadbtest opens metadata stores for tests on both databases.
//
// SQLite always runs. PostgreSQL runs when COFFER_TEST_POSTGRES_URL names a
// server (make test starts a throwaway one); each test gets its own fresh
// database there. Without that variable the PostgreSQL variants skip — unless
// CI is set, where a missing database is a failure, never a silent skip.
package metadbtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/metadb"
)

// EnvPostgresURL names the environment variable holding an admin URL of the
// test PostgreSQL server.
const EnvPostgresURL = "COFFER_TEST_POSTGRES_URL"

// ForEach runs fn as a subtest against a migrated SQLite store and a migrated
// PostgreSQL store.
func ForEach(t *testing.T, fn func(t *testing.T, db *metadb.DB)) {
	t.Helper()
	for _, d := range []metadb.Dialect{metadb.SQLite, metadb.Postgres} {
		t.Run(string(d), func(t *testing.T) {
			fn(t, Open(t, d))
		})
	}
}

// Open returns a migrated, empty store of the given dialect, closed when the
// test ends.
func Open(t testing.TB, d metadb.Dialect) *metadb.DB {
	t.Helper()
	ctx := context.Background()
	db, err := metadb.Open(ctx, metadb.Options{URL: URL(t, d)})
	if err != nil {
		t.Fatalf("open %s store: %v", d, err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Migrate(ctx, nil); err != nil {
		t.Fatalf("migrate %s store: %v", d, err)
	}
	return db
}

// URL returns the URL of a fresh, empty database of the given dialect that
// lives as long as the test.
func URL(t testing.TB, d metadb.Dialect) string {
	t.Helper()
	if d == metadb.SQLite {
		return "sqlite://" + filepath.Join(t.TempDir(), "coffer.db")
	}
	return freshPostgres(t)
}

// RequirePostgres returns the admin URL of the test PostgreSQL server, or
// skips the test (fails it under CI) when there is none.
func RequirePostgres(t testing.TB) string {
	t.Helper()
	admin := os.Getenv(EnvPostgresURL)
	if admin == "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not set: under CI the PostgreSQL tests must run (use make test, which starts a server)", EnvPostgresURL)
		}
		t.Skipf("PostgreSQL variant skipped: set %s or run make test", EnvPostgresURL)
	}
	return admin
}

func freshPostgres(t testing.TB) string {
	t.Helper()
	admin := RequirePostgres(t)
	conn, err := sql.Open("pgx", admin)
	if err != nil {
		t.Fatalf("open %s: %v", EnvPostgresURL, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	name := "coffer_test_" + randomHex(8)
	if _, err := conn.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create test database (is PostgreSQL at %s running?): %v", EnvPostgresURL, err)
	}
	t.Cleanup(func() { DropPostgres(t, name) })
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatalf("parse %s: %v", EnvPostgresURL, err)
	}
	u.Path = "/" + name
	return u.String()
}

// DropPostgres drops a test database, ending its connections first.
func DropPostgres(t testing.TB, name string) {
	t.Helper()
	conn, err := sql.Open("pgx", os.Getenv(EnvPostgresURL))
	if err != nil {
		t.Errorf("open %s: %v", EnvPostgresURL, err)
		return
	}
	defer conn.Close()
	if _, err := conn.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)"); err != nil {
		t.Errorf("drop test database %s: %v", name, err)
	}
}

// DatabaseName returns the database name in a PostgreSQL URL.
func DatabaseName(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return ""
	}
	return filepath.Base(u.Path)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// OpenReplicas returns two independent handles on one fresh, migrated
// database, as two server replicas would hold.
func OpenReplicas(t testing.TB, d metadb.Dialect) (*metadb.DB, *metadb.DB) {
	t.Helper()
	db := Open(t, d)
	return db, OpenSame(t, db)
}

// OpenSame opens a second, independent handle on the database db uses, as
// a second server replica would.
func OpenSame(t testing.TB, db *metadb.DB) *metadb.DB {
	t.Helper()
	other, err := metadb.Open(context.Background(), metadb.Options{URL: db.URL()})
	if err != nil {
		t.Fatalf("open a second handle: %v", err)
	}
	t.Cleanup(func() { other.Close() })
	return other
}
