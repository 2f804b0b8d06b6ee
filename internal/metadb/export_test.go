package metadb

import "context"

// MigrateUpTo migrates the schema up to version v only, so that a test
// can store rows as an older server did and check a later migration.
func MigrateUpTo(ctx context.Context, db *DB, v int64) error {
	p, err := db.provider(nil)
	if err != nil {
		return err
	}
	_, err = p.UpTo(ctx, v)
	return err
}

// Exec runs a statement, for tests that write rows as an older schema had them.
func Exec(ctx context.Context, db *DB, query string, args ...any) error {
	_, err := db.sql.ExecContext(ctx, query, args...)
	return err
}

// HotStatements returns how many statements the cache holds.
func HotStatements(db *DB) int {
	db.hot.mu.Lock()
	defer db.hot.mu.Unlock()
	return len(db.hot.stmts)
}
