package metadb

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/repository"
)

// errRefused rolls back a commit whose refs are not all indexed.
var errRefused = errors.New("snapshot refs missing")

// CommitSnapshot implements repository.Index. The ids it returns are in
// the order of refs, each once. A refused commit touches nothing.
func (ix *Index) CommitSnapshot(ctx context.Context, snap repository.SnapshotInfo, refs []blob.ID) ([]blob.ID, error) {
	repo, err := ix.repo(ctx)
	if err != nil {
		return nil, err
	}
	unique := slices.Clone(refs)
	sortIDs(unique)
	unique = slices.Compact(unique)
	var warm []string
	for _, b := range ix.inBatchSizes(len(unique)) {
		update, count, _ := touchRefsQueries(placeholders(3, b.padded))
		warm = append(warm, update, count)
	}
	if err := ix.db.warm(ctx, warm...); err != nil {
		return nil, fmt.Errorf("commit snapshot %s: %w", snap.ID, err)
	}
	var gone map[blob.ID]bool
	err = ix.inTx(ctx, func(tx *sql.Tx) error {
		epoch, err := ix.epoch(ctx, tx, repo)
		if err != nil {
			return err
		}
		if gone, err = ix.touchRefs(ctx, tx, repo, epoch, unique); err != nil {
			return err
		}
		if len(gone) > 0 {
			return errRefused
		}
		return insertSnapshot(ctx, tx, repo, snap)
	})
	if errors.Is(err, errRefused) {
		var out []blob.ID
		for _, id := range refs {
			if gone[id] {
				out = append(out, id)
				delete(gone, id)
			}
		}
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("commit snapshot %s: %w", snap.ID, err)
	}
	return nil, nil
}

// touchRefs touches ids (distinct) at epoch and returns those not indexed.
// Counting is the common case's one cheap answer; only when rows are
// missing are their ids read back.
func (ix *Index) touchRefs(ctx context.Context, tx *sql.Tx, repo, epoch int64, ids []blob.ID) (map[blob.ID]bool, error) {
	gone := make(map[blob.ID]bool)
	err := ix.inBatches(ids, []any{repo, epoch}, func(in string, args []any, batch []blob.ID) error {
		update, count, list := touchRefsQueries(in)
		if _, err := ix.db.hotExec(ctx, tx, update, args...); err != nil {
			return fmt.Errorf("touch refs: %w", err)
		}
		counter, err := ix.db.stmt(ctx, tx, count)
		if err != nil {
			return fmt.Errorf("count refs: %w", err)
		}
		var n int
		if err := counter.QueryRowContext(ctx, args...).Scan(&n); err != nil {
			return fmt.Errorf("count refs: %w", err)
		}
		if n == len(batch) {
			return nil
		}
		found := make(map[blob.ID]bool, n)
		if err := markIDs(found)(tx.QueryContext(ctx, list, args...)); err != nil {
			return fmt.Errorf("find missing refs: %w", err)
		}
		for _, id := range batch {
			if !found[id] {
				gone[id] = true
			}
		}
		return nil
	})
	return gone, err
}

// touchRefsQueries are touchRefs' statements for an IN list ($1 is the
// repository, $2 the epoch): touch the ids, count those indexed, list them.
func touchRefsQueries(in string) (update, count, list string) {
	present := `FROM engine_blobs WHERE repo = $1 AND id IN (` + in + `) AND touched >= $2`
	return `UPDATE engine_blobs SET touched = $2 WHERE repo = $1 AND id IN (` + in + `) AND touched < $2`,
		`SELECT COUNT(*) ` + present, `SELECT id ` + present
}

func insertSnapshot(ctx context.Context, tx queryer, repo int64, snap repository.SnapshotInfo) error {
	manifest := snap.Manifest
	if manifest == nil {
		manifest = []byte{}
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO engine_snapshots (repo, id, taken_at, tree, manifest) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (repo, id) DO NOTHING`, repo, snap.ID, ts(snap.Time), snap.Tree[:], manifest)
	if err != nil {
		return fmt.Errorf("insert snapshot: %w", err)
	}
	return nil
}

// AddSnapshot implements repository.Index. An existing snapshot of the same
// id is kept.
func (ix *Index) AddSnapshot(ctx context.Context, snap repository.SnapshotInfo) error {
	repo, err := ix.repo(ctx)
	if err != nil {
		return err
	}
	if err := insertSnapshot(ctx, ix.db.sql, repo, snap); err != nil {
		return fmt.Errorf("add snapshot %s: %w", snap.ID, err)
	}
	return nil
}

const snapshotColumns = `id, taken_at, tree, manifest`

func scanSnapshot(row rowScanner) (repository.SnapshotInfo, error) {
	var s repository.SnapshotInfo
	err := row.Scan(&s.ID, utc{&s.Time}, bytes32{(*[32]byte)(&s.Tree)}, &s.Manifest)
	return s, err
}

// Snapshots implements repository.Index: oldest first, then by id (byte
// order: the database's collation plays no part).
func (ix *Index) Snapshots(ctx context.Context) ([]repository.SnapshotInfo, error) {
	repo, err := ix.repo(ctx)
	if err != nil {
		return nil, err
	}
	out, err := queryAll(ctx, ix.db.sql, scanSnapshot, `SELECT `+snapshotColumns+` FROM engine_snapshots WHERE repo = $1 ORDER BY taken_at`, repo)
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	slices.SortFunc(out, func(a, b repository.SnapshotInfo) int {
		return cmp.Or(a.Time.Compare(b.Time), strings.Compare(a.ID, b.ID))
	})
	return out, nil
}

// Snapshot implements repository.Index.
func (ix *Index) Snapshot(ctx context.Context, id string) (repository.SnapshotInfo, error) {
	repo, err := ix.repo(ctx)
	if err != nil {
		return repository.SnapshotInfo{}, err
	}
	s, err := scanSnapshot(ix.db.sql.QueryRowContext(ctx, `SELECT `+snapshotColumns+` FROM engine_snapshots WHERE repo = $1 AND id = $2`, repo, id))
	if errors.Is(err, sql.ErrNoRows) {
		return s, fmt.Errorf("snapshot %s: %w", id, repository.ErrSnapshotNotFound)
	}
	if err != nil {
		return s, fmt.Errorf("read snapshot %s: %w", id, err)
	}
	return s, nil
}

// DeleteSnapshot implements repository.Index.
func (ix *Index) DeleteSnapshot(ctx context.Context, id string) error {
	repo, err := ix.repo(ctx)
	if err != nil {
		return err
	}
	if _, err := ix.db.sql.ExecContext(ctx, `DELETE FROM engine_snapshots WHERE repo = $1 AND id = $2`, repo, id); err != nil {
		return fmt.Errorf("delete snapshot %s: %w", id, err)
	}
	return nil
}
