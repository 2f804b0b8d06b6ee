package metadb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/pack"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/jackc/pgx/v5/pgconn"
)

// Index is the storage engine's index of one repository (see
// repository.Index for the contract), in the tables engine_repos,
// engine_packs, engine_blobs, engine_sessions and engine_snapshots.
//
// Blob and pack ids are stored as their 32 raw bytes. Batches of ids are
// split into statements of a size that suits the database (batchSizes).
//
// Locking: every transaction that stamps rows with the epoch (AddPack,
// CommitSnapshot, BeginSession) first reads it with a shared row lock on the
// repository's engine_repos row; BeginGC advances it with an UPDATE, which
// waits for those transactions. On SQLite every write transaction holds the
// database write lock from BEGIN, which serialises them anyway.
type Index struct {
	db           *DB
	repositoryID string

	// Now returns the current time, which decides when leases run out and
	// stamps packs added without a time; nil means the store's DB.Now.
	// Tests replace it before first use.
	Now func() time.Time

	mu  sync.Mutex
	key int64 // engine_repos.id, 0 until first use
}

var _ repository.Index = (*Index)(nil)

// Index returns the engine index of the repository whose config id is
// repositoryID. Its row in engine_repos is created on first use.
func (db *DB) Index(repositoryID string) *Index {
	return &Index{db: db, repositoryID: repositoryID}
}

func (ix *Index) now() time.Time {
	if ix.Now != nil {
		return ts(ix.Now())
	}
	return ix.db.now()
}

// repo returns the repository's engine_repos key, creating the row (epoch 1,
// no GC lease) the first time.
func (ix *Index) repo(ctx context.Context) (int64, error) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if ix.key != 0 {
		return ix.key, nil
	}
	_, err := ix.db.sql.ExecContext(ctx, `INSERT INTO engine_repos (repository_id, epoch, gc_owner)
		VALUES ($1, 1, '') ON CONFLICT (repository_id) DO NOTHING`, ix.repositoryID)
	if err != nil {
		return 0, fmt.Errorf("register repository %s in the index: %w", ix.repositoryID, err)
	}
	err = ix.db.sql.QueryRowContext(ctx, `SELECT id FROM engine_repos WHERE repository_id = $1`, ix.repositoryID).Scan(&ix.key)
	if err != nil {
		return 0, fmt.Errorf("read index key of repository %s: %w", ix.repositoryID, err)
	}
	return ix.key, nil
}

// inTx runs fn in a transaction, again when PostgreSQL aborted it to break
// a deadlock: two transactions touching overlapping blob rows may lock them
// in different orders, and the retry is cheaper than ordering every lock.
func (ix *Index) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := ix.db.inTx(ctx, fn)
		var pe *pgconn.PgError
		if attempt < 5 && errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001") {
			continue
		}
		return err
	}
}

// epoch reads the repository's epoch inside tx with a shared lock, so that
// BeginGC cannot advance it until tx ends.
func (ix *Index) epoch(ctx context.Context, tx *sql.Tx, repo int64) (int64, error) {
	var e int64
	err := tx.QueryRowContext(ctx, `SELECT epoch FROM engine_repos WHERE id = $1`+ix.db.forShare(), repo).Scan(&e)
	if err != nil {
		return 0, fmt.Errorf("read epoch: %w", err)
	}
	return e, nil
}

// Batch sizes, measured with the BenchmarkIndex* benchmarks. SQLite runs in
// process and compiles every statement, so short statements win; PostgreSQL
// pays a round trip per statement, but with a thousand ids in one list its
// planner starts to prefer a sequential scan over the primary key, so lists
// stay well below that. Both stay far below the parameter limits (SQLite
// 32766, PostgreSQL 65535).
func (db *DB) batchSizes() (inList, insertRows int) {
	if db.dialect == Postgres {
		return 256, 64
	}
	return 128, 16
}

// pageSize is the number of rows per page of a listing.
const pageSize = 5000

// inBatches calls fn for successive batches of ids with the SQL placeholder
// list for the batch, the arguments (fixed, then the batch's ids) and the
// batch. A batch is padded to a power of two (at least 8) by repeating its
// last id, which changes no IN (…) result but keeps the number of statement
// shapes small (PostgreSQL prepares each shape once per connection).
func (ix *Index) inBatches(ids []blob.ID, fixed []any, fn func(in string, args []any, batch []blob.ID) error) error {
	for _, b := range ix.inBatchSizes(len(ids)) {
		args := make([]any, len(fixed), len(fixed)+b.padded)
		copy(args, fixed)
		for i := range b.padded {
			args = append(args, ids[min(i, b.n-1)][:])
		}
		if err := fn(placeholders(len(fixed)+1, b.padded), args, ids[:b.n]); err != nil {
			return err
		}
		ids = ids[b.n:]
	}
	return nil
}

// inBatch is one batch of inBatches: n ids, padded to a list of padded.
type inBatch struct{ n, padded int }

// inBatchSizes returns the batches inBatches splits n ids into.
func (ix *Index) inBatchSizes(n int) []inBatch {
	maxIn, _ := ix.db.batchSizes()
	var out []inBatch
	for n > 0 {
		b := inBatch{n: min(n, maxIn), padded: 8}
		for b.padded < b.n {
			b.padded *= 2
		}
		out = append(out, b)
		n -= b.n
	}
	return out
}

// placeholders returns "$first, $first+1, …" (n of them).
func placeholders(first, n int) string {
	var b strings.Builder
	b.Grow(n * 7)
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(first + i))
	}
	return b.String()
}

// rowBatches splits n rows into INSERT sizes: as many of the largest
// (a power of two) as fit, then the remainder's binary digits, so that
// statements come in few shapes.
func rowBatches(n, largest int) []int {
	var sizes []int
	for ; n >= largest; n -= largest {
		sizes = append(sizes, largest)
	}
	for s := largest / 2; s > 0; s /= 2 {
		if n >= s {
			sizes = append(sizes, s)
			n -= s
		}
	}
	return sizes
}

// bytes32 scans a 32-byte id (blob.ID, pack.ID).
type bytes32 struct{ dst *[32]byte }

func (s bytes32) Scan(v any) error {
	b, ok := v.([]byte)
	if !ok || len(b) != len(s.dst) {
		return fmt.Errorf("scan id: want %d bytes, got %T of length %d", len(s.dst), v, len(b))
	}
	copy(s.dst[:], b)
	return nil
}

func sortIDs(ids []blob.ID) {
	slices.SortFunc(ids, func(a, b blob.ID) int { return slices.Compare(a[:], b[:]) })
}

// Lookup implements repository.Index.
func (ix *Index) Lookup(ctx context.Context, ids []blob.ID) (map[blob.ID]repository.Location, error) {
	repo, err := ix.repo(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[blob.ID]repository.Location, len(ids))
	err = ix.inBatches(ids, []any{repo}, func(in string, args []any, _ []blob.ID) error {
		rows, err := ix.db.hotQuery(ctx, `SELECT `+blobColumns+` FROM engine_blobs WHERE repo = $1 AND id IN (`+in+`)`, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			b, err := scanBlob(rows)
			if err != nil {
				return err
			}
			out[b.ID] = b.Location
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("look up blobs: %w", err)
	}
	return out, nil
}

// Missing implements repository.Index. An id given twice and not indexed
// is returned twice.
//
// It reads first and writes only the rows not yet touched in the current
// epoch (after the first backup of an epoch, usually none), reporting
// present those the write still found: a row GC deleted in between is
// reported missing, and a row reported present was touched before Missing
// returned.
func (ix *Index) Missing(ctx context.Context, ids []blob.ID) ([]blob.ID, error) {
	repo, err := ix.repo(ctx)
	if err != nil {
		return nil, err
	}
	present := make(map[blob.ID]bool, len(ids))
	var stale []blob.ID
	err = ix.inBatches(ids, []any{repo}, func(in string, args []any, _ []blob.ID) error {
		rows, err := ix.db.hotQuery(ctx, `SELECT b.id, b.touched < r.epoch FROM engine_blobs b, engine_repos r
			WHERE r.id = $1 AND b.repo = $1 AND b.id IN (`+in+`)`, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id blob.ID
			var old bool
			if err := rows.Scan(bytes32{(*[32]byte)(&id)}, &old); err != nil {
				return err
			}
			if old {
				stale = append(stale, id)
			} else {
				present[id] = true
			}
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("find missing blobs: %w", err)
	}
	if len(stale) > 0 {
		sortIDs(stale)
		err := ix.inBatches(stale, []any{repo}, func(in string, args []any, _ []blob.ID) error {
			return markIDs(present)(ix.db.hotQuery(ctx, `UPDATE engine_blobs SET touched = (SELECT epoch FROM engine_repos WHERE id = $1)
				WHERE repo = $1 AND id IN (`+in+`) RETURNING id`, args...))
		})
		if err != nil {
			return nil, fmt.Errorf("touch blobs: %w", err)
		}
	}
	var missing []blob.ID
	for _, id := range ids {
		if !present[id] {
			missing = append(missing, id)
		}
	}
	return missing, nil
}

// markIDs returns a function that reads rows of blob ids (as a query
// returns them) and sets each in set.
func markIDs(set map[blob.ID]bool) func(*sql.Rows, error) error {
	return func(rows *sql.Rows, err error) error {
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id blob.ID
			if err := rows.Scan(bytes32{(*[32]byte)(&id)}); err != nil {
				return err
			}
			set[id] = true
		}
		return rows.Err()
	}
}

// AddPack implements repository.Index. A zero p.AddedAt is recorded as now;
// adding a pack again keeps its first row. Entries are inserted in id order
// (fewer lock-order conflicts between concurrent writers on PostgreSQL).
func (ix *Index) AddPack(ctx context.Context, p repository.PackInfo, entries []pack.Entry) error {
	repo, err := ix.repo(ctx)
	if err != nil {
		return err
	}
	entries = slices.Clone(entries)
	slices.SortStableFunc(entries, func(a, b pack.Entry) int { return slices.Compare(a.ID[:], b.ID[:]) })
	entries = slices.CompactFunc(entries, func(a, b pack.Entry) bool { return a.ID == b.ID })
	_, largest := ix.db.batchSizes()
	batches := rowBatches(len(entries), largest)
	warm := []string{insertPackQuery}
	for _, n := range batches {
		warm = append(warm, insertBlobsQuery(n))
	}
	if err := ix.db.warm(ctx, warm...); err != nil {
		return fmt.Errorf("add pack %s to the index: %w", p.ID, err)
	}
	err = ix.inTx(ctx, func(tx *sql.Tx) error {
		epoch, err := ix.epoch(ctx, tx, repo)
		if err != nil {
			return err
		}
		if err := ix.insertPack(ctx, tx, repo, p); err != nil {
			return err
		}
		rest := entries
		for _, n := range batches {
			if err := insertBlobs(ctx, ix.db, tx, repo, p.ID, epoch, rest[:n]); err != nil {
				return err
			}
			rest = rest[n:]
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("add pack %s to the index: %w", p.ID, err)
	}
	return nil
}

const insertPackQuery = `INSERT INTO engine_packs (repo, id, size, blobs, added_at) VALUES ($1, $2, $3, $4, $5)
	ON CONFLICT (repo, id) DO NOTHING`

func (ix *Index) insertPack(ctx context.Context, tx *sql.Tx, repo int64, p repository.PackInfo) error {
	added := ts(p.AddedAt)
	if p.AddedAt.IsZero() {
		added = ix.now()
	}
	_, err := ix.db.hotExec(ctx, tx, insertPackQuery, repo, p.ID[:], p.Size, p.Blobs, added)
	if err != nil {
		return fmt.Errorf("insert pack: %w", err)
	}
	return nil
}

// insertBlobs inserts entries of pack p in one statement; ids already
// indexed keep their row and are touched at epoch.
func insertBlobs(ctx context.Context, db *DB, tx *sql.Tx, repo int64, p pack.ID, epoch int64, entries []pack.Entry) error {
	args := make([]any, 0, 3+5*len(entries))
	args = append(args, repo, p[:], epoch)
	for i := range entries {
		e := &entries[i]
		args = append(args, e.ID[:], int64(e.Type), int64(e.Offset), int64(e.Length), int64(e.RawLength))
	}
	if _, err := db.hotExec(ctx, tx, insertBlobsQuery(len(entries)), args...); err != nil {
		return fmt.Errorf("insert blobs: %w", err)
	}
	return nil
}

// insertBlobsQuery is the statement of insertBlobs for rows entries:
// $1–$3 are the repository, the pack and the epoch, then five a row.
func insertBlobsQuery(rows int) string {
	var q strings.Builder
	q.WriteString(`INSERT INTO engine_blobs (repo, pack_id, touched, id, blob_type, blob_offset, blob_length, raw_length) VALUES `)
	for i := range rows {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString("($1, $2, $3, ")
		q.WriteString(placeholders(4+5*i, 5))
		q.WriteByte(')')
	}
	q.WriteString(` ON CONFLICT (repo, id) DO UPDATE SET touched = excluded.touched WHERE engine_blobs.touched < excluded.touched`)
	return q.String()
}

// Packs implements repository.Index. Like Blobs, it reads in pages (in id
// order) and calls fn between reads, so fn may take its time and use the
// index; a pack added or removed during the walk may or may not be seen.
func (ix *Index) Packs(ctx context.Context, fn func(repository.PackInfo) error) error {
	repo, err := ix.repo(ctx)
	if err != nil {
		return err
	}
	page := func(after []byte) ([]repository.PackInfo, error) {
		rows, err := queryAll(ctx, ix.db.sql, scanPack,
			`SELECT id, size, blobs, added_at FROM engine_packs WHERE repo = $1 AND id > $2 ORDER BY id LIMIT $3`, repo, after, pageSize)
		if err != nil {
			return nil, fmt.Errorf("list packs: %w", err)
		}
		return rows, nil
	}
	return walk(page, func(p repository.PackInfo) []byte { return p.ID[:] }, fn)
}

// Blobs implements repository.Index, like Packs.
func (ix *Index) Blobs(ctx context.Context, fn func(repository.IndexedBlob) error) error {
	repo, err := ix.repo(ctx)
	if err != nil {
		return err
	}
	page := func(after []byte) ([]repository.IndexedBlob, error) {
		rows, err := queryAll(ctx, ix.db.sql, scanBlob,
			`SELECT `+blobColumns+` FROM engine_blobs WHERE repo = $1 AND id > $2 ORDER BY id LIMIT $3`, repo, after, pageSize)
		if err != nil {
			return nil, fmt.Errorf("list blobs: %w", err)
		}
		return rows, nil
	}
	return walk(page, func(b repository.IndexedBlob) []byte { return b.ID[:] }, fn)
}

// walk calls fn for every row of a listing that page reads pageSize rows
// at a time, each page the rows whose id (key) sorts after the last one's.
// An error from page or fn stops the walk and is returned as it is.
func walk[T any](page func(after []byte) ([]T, error), key func(T) []byte, fn func(T) error) error {
	after := []byte{} // below every id
	for {
		rows, err := page(after)
		if err != nil {
			return err
		}
		for _, r := range rows {
			if err := fn(r); err != nil {
				return err
			}
		}
		if len(rows) < pageSize {
			return nil
		}
		after = key(rows[len(rows)-1])
	}
}

// rowScanner is what both *sql.Row and *sql.Rows offer.
type rowScanner interface{ Scan(dest ...any) error }

// queryAll runs a query and scans all its rows.
func queryAll[T any](ctx context.Context, q queryer, scan func(rowScanner) (T, error), query string, args ...any) ([]T, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		r, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

func scanPack(row rowScanner) (repository.PackInfo, error) {
	var p repository.PackInfo
	err := row.Scan(bytes32{(*[32]byte)(&p.ID)}, &p.Size, &p.Blobs, utc{&p.AddedAt})
	return p, err
}

const blobColumns = `id, pack_id, blob_type, blob_offset, blob_length, raw_length, touched`

func scanBlob(rows rowScanner) (repository.IndexedBlob, error) {
	var b repository.IndexedBlob
	err := rows.Scan(bytes32{(*[32]byte)(&b.ID)}, bytes32{(*[32]byte)(&b.Pack)}, &b.Type, &b.Offset, &b.Length, &b.RawLength, &b.Touched)
	return b, err
}

// PackBlobs implements repository.Index.
func (ix *Index) PackBlobs(ctx context.Context, id pack.ID) ([]repository.IndexedBlob, error) {
	repo, err := ix.repo(ctx)
	if err != nil {
		return nil, err
	}
	out, err := queryAll(ctx, ix.db.sql, scanBlob, `SELECT `+blobColumns+` FROM engine_blobs
		WHERE repo = $1 AND pack_id = $2 ORDER BY blob_offset, id`, repo, id[:])
	if err != nil {
		return nil, fmt.Errorf("list blobs of pack %s: %w", id, err)
	}
	return out, nil
}
