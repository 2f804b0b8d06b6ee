package metadb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/pack"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/oklog/ulid/v2"
)

// BeginSession implements repository.Index.
func (ix *Index) BeginSession(ctx context.Context, ttl time.Duration) (repository.Session, error) {
	repo, err := ix.repo(ctx)
	if err != nil {
		return repository.Session{}, err
	}
	s := repository.Session{ID: ulid.Make().String()}
	err = ix.inTx(ctx, func(tx *sql.Tx) error {
		epoch, err := ix.epoch(ctx, tx, repo)
		if err != nil {
			return err
		}
		s.Epoch = epoch
		now := ix.now()
		_, err = tx.ExecContext(ctx, `INSERT INTO engine_sessions (repo, id, epoch, started_at, expires_at)
			VALUES ($1, $2, $3, $4, $5)`, repo, s.ID, s.Epoch, now, ts(now.Add(ttl)))
		return err
	})
	if err != nil {
		return repository.Session{}, fmt.Errorf("begin write session: %w", err)
	}
	return s, nil
}

// RenewSession implements repository.Index.
func (ix *Index) RenewSession(ctx context.Context, s repository.Session, ttl time.Duration) error {
	repo, err := ix.repo(ctx)
	if err != nil {
		return err
	}
	now := ix.now()
	res, err := ix.db.sql.ExecContext(ctx, `UPDATE engine_sessions SET expires_at = $3
		WHERE repo = $1 AND id = $2 AND expires_at > $4`, repo, s.ID, ts(now.Add(ttl)), now)
	if err != nil {
		return fmt.Errorf("renew write session %s: %w", s.ID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("renew write session %s: %w", s.ID, err)
	} else if n == 0 {
		return fmt.Errorf("renew write session %s: %w", s.ID, repository.ErrSessionExpired)
	}
	return nil
}

// EndSession implements repository.Index.
func (ix *Index) EndSession(ctx context.Context, s repository.Session) error {
	repo, err := ix.repo(ctx)
	if err != nil {
		return err
	}
	if _, err := ix.db.sql.ExecContext(ctx, `DELETE FROM engine_sessions WHERE repo = $1 AND id = $2`, repo, s.ID); err != nil {
		return fmt.Errorf("end write session %s: %w", s.ID, err)
	}
	return nil
}

// BeginGC implements repository.Index. It also forgets expired sessions.
func (ix *Index) BeginGC(ctx context.Context, owner string, ttl time.Duration) (int64, error) {
	if owner == "" {
		return 0, errors.New("begin gc: owner is empty: name the collector that takes the lease")
	}
	repo, err := ix.repo(ctx)
	if err != nil {
		return 0, err
	}
	var bound int64
	err = ix.inTx(ctx, func(tx *sql.Tx) error {
		now := ix.now()
		var err error
		if bound, err = takeGCLease(ctx, tx, repo, owner, now, ttl); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM engine_sessions WHERE repo = $1 AND expires_at <= $2`, repo, now); err != nil {
			return fmt.Errorf("forget expired sessions: %w", err)
		}
		var oldest sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT MIN(epoch) FROM engine_sessions WHERE repo = $1 AND expires_at > $2`, repo, now).Scan(&oldest); err != nil {
			return fmt.Errorf("read sessions: %w", err)
		}
		if oldest.Valid {
			bound = min(bound, oldest.Int64)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("begin gc: %w", err)
	}
	return bound, nil
}

// takeGCLease takes the lease, advances the epoch and returns the new one.
// The UPDATE takes the row exclusively: it waits for every transaction that
// read the old epoch with a shared lock.
func takeGCLease(ctx context.Context, tx *sql.Tx, repo int64, owner string, now time.Time, ttl time.Duration) (int64, error) {
	for {
		var epoch int64
		err := tx.QueryRowContext(ctx, `UPDATE engine_repos SET epoch = epoch + 1, gc_owner = $2, gc_expires_at = $3
			WHERE id = $1 AND (gc_owner = '' OR gc_owner = $2 OR gc_expires_at <= $4) RETURNING epoch`,
			repo, owner, ts(now.Add(ttl)), now).Scan(&epoch)
		if err == nil {
			return epoch, nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return 0, fmt.Errorf("take gc lease: %w", err)
		}
		// On PostgreSQL the holder may have released the lease between the
		// UPDATE and this read, each seeing the latest commit: then try again.
		var holder string
		var until *time.Time
		if err := tx.QueryRowContext(ctx, `SELECT gc_owner, gc_expires_at FROM engine_repos WHERE id = $1`, repo).Scan(&holder, nullUTC{&until}); err != nil {
			return 0, fmt.Errorf("read gc lease: %w", err)
		}
		if holder != "" && holder != owner && until != nil && until.After(now) {
			return 0, fmt.Errorf("%w (held by %s until %s)", repository.ErrGCRunning, holder, until.Format(time.RFC3339))
		}
	}
}

// EndGC implements repository.Index. It does nothing when owner does not
// hold the lease (it ran out and another GC took it).
func (ix *Index) EndGC(ctx context.Context, owner string) error {
	repo, err := ix.repo(ctx)
	if err != nil {
		return err
	}
	_, err = ix.db.sql.ExecContext(ctx, `UPDATE engine_repos SET gc_owner = '', gc_expires_at = NULL WHERE id = $1 AND gc_owner = $2`, repo, owner)
	if err != nil {
		return fmt.Errorf("end gc: %w", err)
	}
	return nil
}

// DeleteBlobs implements repository.Index, in one transaction.
func (ix *Index) DeleteBlobs(ctx context.Context, ids []blob.ID, bound int64) (int, error) {
	repo, err := ix.repo(ctx)
	if err != nil {
		return 0, err
	}
	ids = slices.Clone(ids)
	sortIDs(ids)
	var deleted int64
	err = ix.inTx(ctx, func(tx *sql.Tx) error {
		deleted = 0
		return ix.inBatches(ids, []any{repo, bound}, func(in string, args []any, _ []blob.ID) error {
			res, err := tx.ExecContext(ctx, `DELETE FROM engine_blobs WHERE repo = $1 AND id IN (`+in+`) AND touched < $2`, args...)
			if err != nil {
				return err
			}
			n, err := res.RowsAffected()
			deleted += n
			return err
		})
	})
	if err != nil {
		return 0, fmt.Errorf("delete blobs: %w", err)
	}
	return int(deleted), nil
}

// MoveBlobs implements repository.Index. It records pack to if it is not
// indexed yet.
func (ix *Index) MoveBlobs(ctx context.Context, from pack.ID, to repository.PackInfo, entries []pack.Entry) error {
	repo, err := ix.repo(ctx)
	if err != nil {
		return err
	}
	err = ix.inTx(ctx, func(tx *sql.Tx) error {
		if err := ix.insertPack(ctx, tx, repo, to); err != nil {
			return err
		}
		stmt, err := tx.PrepareContext(ctx, `UPDATE engine_blobs SET pack_id = $3, blob_type = $5, blob_offset = $6, blob_length = $7, raw_length = $8
			WHERE repo = $1 AND id = $4 AND pack_id = $2`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, e := range entries {
			if _, err := stmt.ExecContext(ctx, repo, from[:], to.ID[:], e.ID[:], int64(e.Type), int64(e.Offset), int64(e.Length), int64(e.RawLength)); err != nil {
				return fmt.Errorf("move blob %s: %w", e.ID.Short(), err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("move blobs from pack %s to %s: %w", from, to.ID, err)
	}
	return nil
}

// DeletePack implements repository.Index.
func (ix *Index) DeletePack(ctx context.Context, id pack.ID) (bool, error) {
	repo, err := ix.repo(ctx)
	if err != nil {
		return false, err
	}
	res, err := ix.db.sql.ExecContext(ctx, `DELETE FROM engine_packs WHERE repo = $1 AND id = $2
		AND NOT EXISTS (SELECT 1 FROM engine_blobs WHERE repo = $1 AND pack_id = $2)`, repo, id[:])
	if isForeignKeyViolation(err) {
		return false, nil // a row pointing at it was added meanwhile
	}
	if err != nil {
		return false, fmt.Errorf("delete pack %s: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("delete pack %s: %w", id, err)
	}
	return n == 1, nil
}
