package metadb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cofferhq/coffer"
	"github.com/oklog/ulid/v2"
)

// This file keeps the storage configuration: S3-compatible endpoints and
// the repositories backups live in. A repository's credentials are stored
// as the opaque bytes the storage service sealed; this store never sees
// them in the clear.

const endpointColumns = `id, display_name, url, https, kind, region, addressing, created_at, updated_at`

func scanEndpoint(row rowScanner) (*coffer.Endpoint, error) {
	var e coffer.Endpoint
	err := row.Scan(&e.ID, &e.DisplayName, &e.URL, &e.HTTPS, &e.Type, &e.Region, &e.Addressing, utc{&e.CreatedAt}, utc{&e.UpdatedAt})
	if err != nil {
		return nil, err
	}
	return &e, nil
}

func errEndpointNotFound(id string) error {
	return coffer.Errorf(coffer.KindNotFound, "endpoint_not_found", "no storage endpoint with id %q", id).With("endpoint_id", id)
}

func errEndpointNameTaken(name string) error {
	return coffer.Errorf(coffer.KindConflict, "endpoint_name_taken",
		"an endpoint named %q already exists (names are compared without regard to letter case): choose another name", name).
		With("display_name", name)
}

// CreateEndpoint stores a new endpoint, assigning its ID, CreatedAt and
// UpdatedAt. A display name another endpoint has in any letter case is
// "endpoint_name_taken".
func (db *DB) CreateEndpoint(ctx context.Context, e *coffer.Endpoint) error {
	out := *e
	now := db.now()
	out.ID = ulid.Make().String()
	out.CreatedAt, out.UpdatedAt = now, now
	_, err := db.sql.ExecContext(ctx, `INSERT INTO endpoints (`+endpointColumns+`, name_key)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
		out.ID, out.DisplayName, out.URL, out.HTTPS, out.Type, out.Region, out.Addressing, out.CreatedAt, out.UpdatedAt,
		nameKey(out.DisplayName))
	switch {
	case isUniqueViolation(err):
		return errEndpointNameTaken(out.DisplayName)
	case err != nil:
		return fmt.Errorf("insert endpoint: %w", err)
	}
	*e = out
	return nil
}

// GetEndpoint returns the endpoint with the given id, or "endpoint_not_found".
func (db *DB) GetEndpoint(ctx context.Context, id string) (*coffer.Endpoint, error) {
	e, err := scanEndpoint(db.sql.QueryRowContext(ctx, `SELECT `+endpointColumns+` FROM endpoints WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errEndpointNotFound(id)
	}
	if err != nil {
		return nil, fmt.Errorf("read endpoint: %w", err)
	}
	return e, nil
}

// EndpointFilter selects a page of endpoints for ListEndpoints.
type EndpointFilter struct {
	Limit  int // at most this many (0: no limit)
	Offset int
}

// ListEndpoints returns one page of endpoints ordered by display name
// (without regard to letter case) and id, and how many there are in all.
func (db *DB) ListEndpoints(ctx context.Context, p EndpointFilter) ([]coffer.Endpoint, int, error) {
	var total int
	if err := db.sql.QueryRowContext(ctx, `SELECT COUNT(*) FROM endpoints`).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count endpoints: %w", err)
	}
	var w sqlFilter
	rows, err := queryAll(ctx, db.sql, scanEndpoint, `SELECT `+endpointColumns+` FROM endpoints ORDER BY name_key, id`+
		w.page(p.Limit, p.Offset), w.args...)
	if err != nil {
		return nil, 0, fmt.Errorf("list endpoints: %w", err)
	}
	return deref(rows), total, nil
}

// UpdateEndpoint replaces every field of the endpoint with e's ID but ID and
// CreatedAt, and sets UpdatedAt; on success e holds the endpoint as stored.
// A missing endpoint is "endpoint_not_found", a taken display name
// "endpoint_name_taken".
func (db *DB) UpdateEndpoint(ctx context.Context, e *coffer.Endpoint) error {
	got, err := scanEndpoint(db.sql.QueryRowContext(ctx, `UPDATE endpoints SET display_name = $2, name_key = $3, url = $4,
		https = $5, kind = $6, region = $7, addressing = $8, updated_at = $9 WHERE id = $1 RETURNING `+endpointColumns,
		e.ID, e.DisplayName, nameKey(e.DisplayName), e.URL, e.HTTPS, e.Type, e.Region, e.Addressing, db.now()))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return errEndpointNotFound(e.ID)
	case isUniqueViolation(err):
		return errEndpointNameTaken(e.DisplayName)
	case err != nil:
		return fmt.Errorf("update endpoint: %w", err)
	}
	*e = *got
	return nil
}

// DeleteEndpoint removes the endpoint with the given id and returns it. It
// is "endpoint_not_found" when missing and a conflict "endpoint_in_use"
// (metadata: repositories) while a repository uses it.
func (db *DB) DeleteEndpoint(ctx context.Context, id string) (*coffer.Endpoint, error) {
	var e *coffer.Endpoint
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM repositories WHERE endpoint_id = $1`, id).Scan(&n); err != nil {
			return fmt.Errorf("count repositories of endpoint: %w", err)
		}
		if n > 0 {
			return coffer.Errorf(coffer.KindConflict, "endpoint_in_use",
				"%d repositories live on endpoint %s: delete them first (deleting a repository keeps its data)", n, id).
				With("endpoint_id", id).With("repositories", n)
		}
		var err error
		e, err = scanEndpoint(tx.QueryRowContext(ctx, `DELETE FROM endpoints WHERE id = $1 RETURNING `+endpointColumns, id))
		if errors.Is(err, sql.ErrNoRows) {
			return errEndpointNotFound(id)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return e, nil
}

const repositoryColumns = `id, name, kind, path, endpoint_id, bucket, prefix, credentials, quota_bytes, quota_level,
	encrypted, chunker, is_default, last_verify, last_gc, created_at, updated_at`

func scanRepository(row rowScanner) (*coffer.Repository, error) {
	var r coffer.Repository
	var endpoint sql.NullString
	err := row.Scan(&r.ID, &r.Name, &r.Kind, &r.Path, &endpoint, &r.Bucket, &r.Prefix, &r.Credentials, &r.QuotaBytes,
		&r.QuotaLevel, &r.Encrypted, jsonObject{&r.Chunker}, &r.IsDefault, optionalJSON[coffer.MaintenanceResult]{&r.LastVerify},
		optionalJSON[coffer.MaintenanceResult]{&r.LastGC}, utc{&r.CreatedAt}, utc{&r.UpdatedAt})
	if err != nil {
		return nil, err
	}
	r.EndpointID = endpoint.String
	if len(r.Credentials) == 0 {
		r.Credentials = nil
	}
	return &r, nil
}

// optionalJSON stores a pointer as JSON text, nil as "", and scans it back.
type optionalJSON[T any] struct{ p **T }

// Value implements driver.Valuer.
func (o optionalJSON[T]) Value() (driver.Value, error) {
	if *o.p == nil {
		return "", nil
	}
	return jsonValue{*o.p}.Value()
}

// Scan implements sql.Scanner.
func (o optionalJSON[T]) Scan(v any) error {
	*o.p = nil
	text, err := jsonText(v)
	if err != nil || text == "" {
		return err
	}
	var x T
	if err := json.Unmarshal([]byte(text), &x); err != nil {
		return fmt.Errorf("decode %T: %w", x, err)
	}
	*o.p = &x
	return nil
}

func errRepositoryNotFound(id string) error {
	return coffer.Errorf(coffer.KindNotFound, "repository_not_found", "no repository with id %q", id).With("repository_id", id)
}

func errRepositoryNameTaken(name string) error {
	return coffer.Errorf(coffer.KindConflict, "repository_name_taken",
		"a repository named %q already exists (names are compared without regard to letter case): choose another name", name).
		With("name", name)
}

// credentialsArg stores sealed credentials, nil as NULL.
func credentialsArg(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

// CreateRepository stores a new repository under its ID (the engine
// repository's config id, which the caller sets), assigning CreatedAt and
// UpdatedAt. An ID that is taken is a conflict "repository_exists" naming
// the repository that has it; a taken name "repository_name_taken"; an
// unknown endpoint "endpoint_not_found". IsDefault is stored as false:
// SetDefaultRepository chooses the default.
func (db *DB) CreateRepository(ctx context.Context, r *coffer.Repository) error {
	if r.ID == "" {
		return errors.New("create repository: the id (the repository's config id) is empty")
	}
	out := *r
	now := db.now()
	out.CreatedAt, out.UpdatedAt, out.IsDefault = now, now, false
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		var name string
		err := tx.QueryRowContext(ctx, `SELECT name FROM repositories WHERE id = $1`, out.ID).Scan(&name)
		if err == nil {
			return coffer.Errorf(coffer.KindConflict, "repository_exists",
				"this storage location holds repository %s, which is already attached as %q: use that one", out.ID, name).
				With("repository_id", out.ID).With("name", name)
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("look up repository: %w", err)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO repositories (`+repositoryColumns+`, name_key)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)`,
			out.ID, out.Name, out.Kind, out.Path, nullString(out.EndpointID), out.Bucket, out.Prefix, credentialsArg(out.Credentials),
			out.QuotaBytes, out.QuotaLevel, out.Encrypted, jsonValue{out.Chunker}, out.IsDefault,
			optionalJSON[coffer.MaintenanceResult]{&out.LastVerify}, optionalJSON[coffer.MaintenanceResult]{&out.LastGC},
			out.CreatedAt, out.UpdatedAt, nameKey(out.Name))
		switch {
		case isUniqueViolation(err):
			return errRepositoryNameTaken(out.Name)
		case isForeignKeyViolation(err):
			return errEndpointNotFound(out.EndpointID)
		case err != nil:
			return fmt.Errorf("insert repository: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	*r = out
	return nil
}

// GetRepository returns the repository with the given id, or
// "repository_not_found".
func (db *DB) GetRepository(ctx context.Context, id string) (*coffer.Repository, error) {
	r, err := scanRepository(db.sql.QueryRowContext(ctx, `SELECT `+repositoryColumns+` FROM repositories WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errRepositoryNotFound(id)
	}
	if err != nil {
		return nil, fmt.Errorf("read repository: %w", err)
	}
	return r, nil
}

// RepositoryFilter selects repositories for ListRepositories. Zero fields
// do not filter.
type RepositoryFilter struct {
	EndpointID string
	Kind       coffer.RepositoryKind
	Limit      int // at most this many (0: no limit)
	Offset     int
}

// ListRepositories returns one page of repositories ordered by name
// (without regard to letter case) and id, and how many match in all.
func (db *DB) ListRepositories(ctx context.Context, f RepositoryFilter) ([]coffer.Repository, int, error) {
	var w sqlFilter
	if f.EndpointID != "" {
		w.add("endpoint_id = " + w.arg(f.EndpointID))
	}
	if f.Kind != "" {
		w.add("kind = " + w.arg(f.Kind))
	}
	var total int
	if err := db.sql.QueryRowContext(ctx, `SELECT COUNT(*) FROM repositories`+w.where(), w.args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count repositories: %w", err)
	}
	query := `SELECT ` + repositoryColumns + ` FROM repositories` + w.where() + ` ORDER BY name_key, id` + w.page(f.Limit, f.Offset)
	rows, err := queryAll(ctx, db.sql, scanRepository, query, w.args...)
	if err != nil {
		return nil, 0, fmt.Errorf("list repositories: %w", err)
	}
	return deref(rows), total, nil
}

// UpdateRepository stores r's name, quota and credentials (the fields that
// may change; location, encryption and chunking never do) and sets
// UpdatedAt; on success r holds the repository as stored. A missing
// repository is "repository_not_found", a taken name
// "repository_name_taken".
func (db *DB) UpdateRepository(ctx context.Context, r *coffer.Repository) error {
	got, err := scanRepository(db.sql.QueryRowContext(ctx, `UPDATE repositories SET name = $2, name_key = $3,
		quota_bytes = $4, credentials = $5, updated_at = $6 WHERE id = $1 RETURNING `+repositoryColumns,
		r.ID, r.Name, nameKey(r.Name), r.QuotaBytes, credentialsArg(r.Credentials), db.now()))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return errRepositoryNotFound(r.ID)
	case isUniqueViolation(err):
		return errRepositoryNameTaken(r.Name)
	case err != nil:
		return fmt.Errorf("update repository: %w", err)
	}
	*r = *got
	return nil
}

// DeleteRepository removes the record of repository id (its data and index
// stay) and returns it. It is refused — a conflict — for the default
// repository ("repository_is_default"), while a backup record or a plan
// names it ("repository_in_use", metadata backups and plans), and while a
// verify or GC runs on it ("repository_job_running").
func (db *DB) DeleteRepository(ctx context.Context, id string) (*coffer.Repository, error) {
	var r *coffer.Repository
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		r, err = scanRepository(tx.QueryRowContext(ctx, `SELECT `+repositoryColumns+` FROM repositories WHERE id = $1`+db.forUpdate(), id))
		if errors.Is(err, sql.ErrNoRows) {
			return errRepositoryNotFound(id)
		}
		if err != nil {
			return fmt.Errorf("read repository: %w", err)
		}
		if r.IsDefault {
			return coffer.Errorf(coffer.KindConflict, "repository_is_default",
				"repository %q is the server's default repository (set by --repository-dir or --repository-url) and cannot be deleted", r.Name).
				With("repository_id", id)
		}
		var backups, plans, jobs int
		err = tx.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM backups WHERE repository_id = $1),
			(SELECT COUNT(*) FROM plans WHERE repository_id = $1),
			(SELECT COUNT(*) FROM repository_jobs WHERE repository_id = $1 AND state = 'running')`, id).Scan(&backups, &plans, &jobs)
		if err != nil {
			return fmt.Errorf("count what uses repository %s: %w", id, err)
		}
		if backups > 0 || plans > 0 {
			return coffer.Errorf(coffer.KindConflict, "repository_in_use",
				"repository %q is still in use by %d backup records and %d plans: forget (delete) its backups and delete its plans or move them to another repository first",
				r.Name, backups, plans).With("repository_id", id).With("backups", backups).With("plans", plans)
		}
		if jobs > 0 {
			return coffer.Errorf(coffer.KindConflict, "repository_job_running",
				"a verify or garbage collection is running on repository %q: wait until it ends", r.Name).With("repository_id", id)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM repositories WHERE id = $1`, id); err != nil {
			return fmt.Errorf("delete repository: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

// SetDefaultRepository makes repository id the default one, and no other.
func (db *DB) SetDefaultRepository(ctx context.Context, id string) error {
	return db.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE repositories SET is_default = FALSE WHERE is_default AND id <> $1`, id); err != nil {
			return fmt.Errorf("clear default repository: %w", err)
		}
		res, err := tx.ExecContext(ctx, `UPDATE repositories SET is_default = TRUE WHERE id = $1`, id)
		if err != nil {
			return fmt.Errorf("set default repository: %w", err)
		}
		if n, err := res.RowsAffected(); err == nil && n == 0 {
			return errRepositoryNotFound(id)
		}
		return nil
	})
}

// SetRepositoryQuotaLevel moves repository id's quota warning level from
// one value to another and reports whether it did: false when the level
// was no longer from (another replica moved it first), so that each
// crossing is announced once.
func (db *DB) SetRepositoryQuotaLevel(ctx context.Context, id string, from, to int) (bool, error) {
	res, err := db.sql.ExecContext(ctx, `UPDATE repositories SET quota_level = $3 WHERE id = $1 AND quota_level = $2`, id, from, to)
	if err != nil {
		return false, fmt.Errorf("set quota level of repository %s: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("set quota level of repository %s: %w", id, err)
	}
	return n == 1, nil
}

// RepositoryStoredBytes returns the bytes of the packs the index of
// repository id knows: what the repository takes in storage, from one
// aggregate query.
func (db *DB) RepositoryStoredBytes(ctx context.Context, id string) (int64, error) {
	var n int64
	err := db.sql.QueryRowContext(ctx, `SELECT COALESCE(SUM(p.size), 0) FROM engine_packs p
		JOIN engine_repos r ON r.id = p.repo WHERE r.repository_id = $1`, id).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("stored bytes of repository %s: %w", id, err)
	}
	return n, nil
}

// SnapshotOwner is a committed backup's snapshot and whose it is.
type SnapshotOwner struct {
	BackupID   string
	ClientID   string
	PlanID     string // "" for an ad-hoc backup
	SnapshotID string
}

// RepositorySnapshots returns the snapshots the backup records of
// repository id name, oldest first.
func (db *DB) RepositorySnapshots(ctx context.Context, id string) ([]SnapshotOwner, error) {
	rows, err := queryAll(ctx, db.sql, func(row rowScanner) (SnapshotOwner, error) {
		var o SnapshotOwner
		err := row.Scan(&o.BackupID, &o.ClientID, &o.PlanID, &o.SnapshotID)
		return o, err
	}, `SELECT id, client_id, plan_id, snapshot_id FROM backups WHERE repository_id = $1 AND snapshot_id <> ''
		ORDER BY created_at, id`, id)
	if err != nil {
		return nil, fmt.Errorf("list snapshots of repository %s: %w", id, err)
	}
	return rows, nil
}
