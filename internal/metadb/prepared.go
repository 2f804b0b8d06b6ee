package metadb

import (
	"context"
	"database/sql"
	"sync"
)

// hotStatements caches the prepared statements of the index's frequent
// queries, by text. Those texts come in a few fixed shapes (inBatches pads
// IN lists to powers of two, rowBatches splits inserts the same way), so a
// statement is parsed once per connection instead of on every call: SQLite
// spent a twelfth of the server's CPU in a backup parsing them again. Only
// statements of such bounded shapes may go through it.
//
// A statement is prepared into the cache only outside a transaction
// (stmt with a nil tx, or warm): preparing takes a connection from the
// pool, and a transaction holding SQLite's write lock while it waits for
// a connection that writers queued behind that lock hold would deadlock.
// Inside a transaction, a cached statement runs on the transaction's own
// connection, and one not cached is prepared on it for that one use.
type hotStatements struct {
	mu    sync.Mutex
	stmts map[string]*sql.Stmt
}

// warm prepares the statements of queries into the cache; call it before
// a transaction that will run them. It must not be called inside one.
func (db *DB) warm(ctx context.Context, queries ...string) error {
	for _, q := range queries {
		if _, err := db.stmt(ctx, nil, q); err != nil {
			return err
		}
	}
	return nil
}

// stmt returns the prepared statement of query: the cached one (prepared
// now if need be) when tx is nil; within tx, the cached one bound to tx,
// or one prepared on tx's connection if it is not cached.
func (db *DB) stmt(ctx context.Context, tx *sql.Tx, query string) (*sql.Stmt, error) {
	h := &db.hot
	h.mu.Lock()
	s, ok := h.stmts[query]
	h.mu.Unlock()
	switch {
	case ok && tx != nil:
		return tx.StmtContext(ctx, s), nil
	case ok:
		return s, nil
	case tx != nil:
		return tx.PrepareContext(ctx, query)
	}
	prepared, err := db.sql.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if s, ok := h.stmts[query]; ok {
		prepared.Close() // another caller got there first
		return s, nil
	}
	if h.stmts == nil {
		h.stmts = make(map[string]*sql.Stmt)
	}
	h.stmts[query] = prepared
	return prepared, nil
}

// hotQuery runs a query of bounded shape, outside a transaction, through
// its prepared statement.
func (db *DB) hotQuery(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	s, err := db.stmt(ctx, nil, query)
	if err != nil {
		return nil, err
	}
	return s.QueryContext(ctx, args...)
}

// hotExec runs a statement of bounded shape that returns no rows through
// its prepared statement, in tx when it is not nil.
func (db *DB) hotExec(ctx context.Context, tx *sql.Tx, query string, args ...any) (sql.Result, error) {
	s, err := db.stmt(ctx, tx, query)
	if err != nil {
		return nil, err
	}
	return s.ExecContext(ctx, args...)
}

// closeHot closes the cached statements.
func (db *DB) closeHot() {
	db.hot.mu.Lock()
	defer db.hot.mu.Unlock()
	for _, s := range db.hot.stmts {
		s.Close()
	}
	db.hot.stmts = nil
}
