package metadb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/oklog/ulid/v2"
)

const enrollmentTokenColumns = `id, token_hash, name, created_by, created_at, expires_at, used_at, client_id`

func scanEnrollmentToken(row rowScanner) (*coffer.EnrollmentToken, error) {
	var t coffer.EnrollmentToken
	var createdBy sql.NullString
	err := row.Scan(&t.ID, &t.TokenHash, &t.Name, &createdBy, utc{&t.CreatedAt}, utc{&t.ExpiresAt}, nullUTC{&t.UsedAt}, &t.ClientID)
	if err != nil {
		return nil, err
	}
	t.CreatedBy = createdBy.String
	return &t, nil
}

// CreateEnrollmentToken stores a new enrollment token, assigning its id and
// creation time. CreatedBy must name an existing user ("user_not_found"
// otherwise) or be "": a user's tokens are deleted with the user.
func (db *DB) CreateEnrollmentToken(ctx context.Context, t *coffer.EnrollmentToken) error {
	t.ID = ulid.Make().String()
	t.CreatedAt = db.now()
	t.ExpiresAt = ts(t.ExpiresAt)
	t.UsedAt = tsPtr(t.UsedAt)
	_, err := db.sql.ExecContext(ctx, `INSERT INTO enrollment_tokens (`+enrollmentTokenColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		t.ID, t.TokenHash, t.Name, nullString(t.CreatedBy), t.CreatedAt, t.ExpiresAt, t.UsedAt, t.ClientID)
	switch {
	case isForeignKeyViolation(err):
		return coffer.Errorf(coffer.KindNotFound, "user_not_found", "no user with id %q", t.CreatedBy)
	case err != nil:
		return fmt.Errorf("insert enrollment token: %w", err)
	}
	return nil
}

// EnrollClient spends the enrollment token with the given hash on a new
// client, in one transaction, and returns the token as it now is (used, with
// the client's id). A token that does not exist is "enrollment_token_invalid",
// one already spent "enrollment_token_used", one past its expiry
// "enrollment_token_expired" (all unauthenticated): of two enrollments with
// one token exactly one succeeds.
//
// The store assigns c's ID and timestamps, marks it online and seen now, and
// makes the token's creator its owner. An empty c.Name becomes the token's
// name or, failing that, c.Hostname.
func (db *DB) EnrollClient(ctx context.Context, tokenHash string, c *coffer.Client) (*coffer.EnrollmentToken, error) {
	var tok *coffer.EnrollmentToken
	out := *c
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		now := db.now()
		out.ID = ulid.Make().String()
		// The conditional update is the claim: on PostgreSQL a second
		// enrollment waits for the row lock and then no longer matches.
		var err error
		tok, err = scanEnrollmentToken(tx.QueryRowContext(ctx, `UPDATE enrollment_tokens SET used_at = $2, client_id = $3
			WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2
			RETURNING `+enrollmentTokenColumns, tokenHash, now, out.ID))
		if errors.Is(err, sql.ErrNoRows) {
			return db.refuseEnrollment(ctx, tx, tokenHash, now)
		}
		if err != nil {
			return fmt.Errorf("claim enrollment token: %w", err)
		}
		if out.Name == "" {
			out.Name = tok.Name
		}
		if out.Name == "" {
			out.Name = out.Hostname
		}
		out.OwnerID = tok.CreatedBy
		out.Status = coffer.ClientOnline
		out.LastSeenAt = &now
		out.CreatedAt, out.UpdatedAt = now, now
		return insertClient(ctx, tx, &out)
	})
	if err != nil {
		return nil, err
	}
	*c = out
	return tok, nil
}

// refuseEnrollment explains why no unused, unexpired token has the hash.
func (db *DB) refuseEnrollment(ctx context.Context, q queryer, tokenHash string, now time.Time) error {
	tok, err := scanEnrollmentToken(q.QueryRowContext(ctx, `SELECT `+enrollmentTokenColumns+` FROM enrollment_tokens WHERE token_hash = $1`, tokenHash))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return coffer.Errorf(coffer.KindUnauthenticated, "enrollment_token_invalid",
			"the enrollment token is not valid: create a new one (POST /api/v1/enrollment-tokens) and use its secret")
	case err != nil:
		return fmt.Errorf("read enrollment token: %w", err)
	case tok.UsedAt != nil:
		return coffer.Errorf(coffer.KindUnauthenticated, "enrollment_token_used",
			"the enrollment token was already used at %s: each token enrolls one machine; create a new one", tok.UsedAt.Format(time.RFC3339))
	case !tok.ExpiresAt.After(now):
		return coffer.Errorf(coffer.KindUnauthenticated, "enrollment_token_expired",
			"the enrollment token expired at %s: create a new one", tok.ExpiresAt.Format(time.RFC3339))
	}
	// Unreachable unless the row changed between the two statements.
	return coffer.Errorf(coffer.KindConflict, "enrollment_token_busy",
		"the enrollment token is being used by another enrollment right now: try again")
}

const clientColumns = `id, name, hostname, os, arch, ipv4, ipv6, agent_version, owner_id, status, credential_hash,
	last_seen_at, created_at, updated_at, commands_allowed`

func scanClient(row rowScanner) (*coffer.Client, error) {
	var c coffer.Client
	var owner sql.NullString
	err := row.Scan(&c.ID, &c.Name, &c.Hostname, &c.OS, &c.Arch, jsonList[string]{&c.IPv4}, jsonList[string]{&c.IPv6},
		&c.AgentVersion, &owner, &c.Status, &c.CredentialHash, nullUTC{&c.LastSeenAt}, utc{&c.CreatedAt}, utc{&c.UpdatedAt},
		&c.CommandsAllowed)
	if err != nil {
		return nil, err
	}
	c.OwnerID = owner.String
	return &c, nil
}

// nameKey is the case-folded form client names are searched and sorted by.
func nameKey(name string) string { return strings.ToLower(name) }

func insertClient(ctx context.Context, q queryer, c *coffer.Client) error {
	_, err := q.ExecContext(ctx, `INSERT INTO clients (`+clientColumns+`, name_key)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)`,
		c.ID, c.Name, c.Hostname, c.OS, c.Arch, jsonArg[string](c.IPv4), jsonArg[string](c.IPv6), c.AgentVersion,
		nullString(c.OwnerID), c.Status, c.CredentialHash, tsPtr(c.LastSeenAt), c.CreatedAt, c.UpdatedAt, c.CommandsAllowed,
		nameKey(c.Name))
	switch {
	case isUniqueViolation(err):
		return coffer.Errorf(coffer.KindConflict, "client_credential_taken",
			"another client already has this credential: enroll again to get a new one")
	case isForeignKeyViolation(err):
		return coffer.Errorf(coffer.KindNotFound, "user_not_found", "no user with id %q (the client's owner)", c.OwnerID)
	case err != nil:
		return fmt.Errorf("insert client: %w", err)
	}
	return nil
}

func errClientNotFound(id string) error {
	return coffer.Errorf(coffer.KindNotFound, "client_not_found", "no client with id %q", id).With("client_id", id)
}

// GetClient returns the client with the given id, or "client_not_found".
func (db *DB) GetClient(ctx context.Context, id string) (*coffer.Client, error) {
	c, err := scanClient(db.sql.QueryRowContext(ctx, `SELECT `+clientColumns+` FROM clients WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errClientNotFound(id)
	}
	if err != nil {
		return nil, fmt.Errorf("read client: %w", err)
	}
	return c, nil
}

// ClientByCredentialHash returns the client whose credential has the given
// SHA-256, or "client_not_found".
func (db *DB) ClientByCredentialHash(ctx context.Context, hash string) (*coffer.Client, error) {
	c, err := scanClient(db.sql.QueryRowContext(ctx, `SELECT `+clientColumns+` FROM clients WHERE credential_hash = $1`, hash))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, coffer.Errorf(coffer.KindNotFound, "client_not_found", "no client has this credential")
	}
	if err != nil {
		return nil, fmt.Errorf("read client by credential: %w", err)
	}
	return c, nil
}

// ClientFilter selects clients for ListClients. Zero fields do not filter.
type ClientFilter struct {
	Status  coffer.ClientStatus
	Name    string // a substring of the name, in any letter case
	OwnerID string
	Limit   int // at most this many (0: no limit)
	Offset  int
}

// ListClients returns one page of clients ordered by name (without regard
// to letter case) and id, and how many clients match the filter in all.
func (db *DB) ListClients(ctx context.Context, f ClientFilter) ([]coffer.Client, int, error) {
	var w sqlFilter
	if f.Status != "" {
		w.add("status = " + w.arg(f.Status))
	}
	if f.Name != "" {
		w.add(`name_key LIKE ` + w.arg("%"+escapeLike(nameKey(f.Name))+"%") + ` ESCAPE '\'`)
	}
	if f.OwnerID != "" {
		w.add("owner_id = " + w.arg(f.OwnerID))
	}
	var total int
	if err := db.sql.QueryRowContext(ctx, `SELECT COUNT(*) FROM clients`+w.where(), w.args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count clients: %w", err)
	}
	query := `SELECT ` + clientColumns + ` FROM clients` + w.where() + ` ORDER BY name_key, id` + w.page(f.Limit, f.Offset)
	rows, err := queryAll(ctx, db.sql, scanClient, query, w.args...)
	if err != nil {
		return nil, 0, fmt.Errorf("list clients: %w", err)
	}
	return deref(rows), total, nil
}

// ClientUpdate names the fields UpdateClient changes; nil fields stay as
// they are.
type ClientUpdate struct {
	Name    *string
	OwnerID *string // "" clears the owner
}

// UpdateClient applies upd to the client and returns the client as it was
// and as it is now, or "client_not_found". An owner that is not a user is
// "user_not_found". Names need not be unique: two machines may share a
// hostname, which is what enrollment names them by default.
func (db *DB) UpdateClient(ctx context.Context, id string, upd ClientUpdate) (before, after *coffer.Client, err error) {
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		c, err := scanClient(tx.QueryRowContext(ctx, `SELECT `+clientColumns+` FROM clients WHERE id = $1`+db.forUpdate(), id))
		if errors.Is(err, sql.ErrNoRows) {
			return errClientNotFound(id)
		}
		if err != nil {
			return fmt.Errorf("lock client: %w", err)
		}
		before = c
		next := *c
		if upd.Name != nil {
			next.Name = *upd.Name
		}
		if upd.OwnerID != nil {
			next.OwnerID = *upd.OwnerID
		}
		next.UpdatedAt = db.now()
		after, err = scanClient(tx.QueryRowContext(ctx, `UPDATE clients SET name = $2, name_key = $3, owner_id = $4, updated_at = $5
			WHERE id = $1 RETURNING `+clientColumns, id, next.Name, nameKey(next.Name), nullString(next.OwnerID), next.UpdatedAt))
		switch {
		case isForeignKeyViolation(err):
			return coffer.Errorf(coffer.KindNotFound, "user_not_found", "no user with id %q (the client's new owner)", next.OwnerID).
				With("user_id", next.OwnerID)
		case err != nil:
			return fmt.Errorf("update client: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return before, after, nil
}

// DeleteClient removes a client, its pending commands and its log lines
// and returns it, or "client_not_found". Its backups and restores stay, as
// history; those still queued or running fail, since nothing can run or
// finish them any more.
func (db *DB) DeleteClient(ctx context.Context, id string) (*coffer.Client, error) {
	var c *coffer.Client
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		c, err = scanClient(tx.QueryRowContext(ctx, `DELETE FROM clients WHERE id = $1 RETURNING `+clientColumns, id))
		if errors.Is(err, sql.ErrNoRows) {
			return errClientNotFound(id)
		}
		if err != nil {
			return fmt.Errorf("delete client: %w", err)
		}
		// Its queued and running jobs can never run or finish now; left
		// active, a plan's backup would block the plan's schedule.
		now := db.now()
		if _, err := tx.ExecContext(ctx, `UPDATE backups SET state = $1, error_message = $2, finished_at = $3, updated_at = $3
			WHERE client_id = $4 AND state IN ($5, $6)`,
			coffer.JobFailed, "the client was deleted before the backup ended", now, id, coffer.JobQueued, coffer.JobRunning); err != nil {
			return fmt.Errorf("delete client: end its backups: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE restores SET state = $1, error_message = $2, finished_at = $3, updated_at = $3
			WHERE target_client_id = $4 AND state IN ($5, $6)`,
			coffer.JobFailed, "the target client was deleted before the restore ended", now, id, coffer.JobQueued, coffer.JobRunning); err != nil {
			return fmt.Errorf("delete client: end its restores: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// RecordHeartbeat stores what the client's agent reports about its machine,
// marks the client online and seen now, and reports whether it was offline
// until now (exactly one of several concurrent heartbeats says so).
func (db *DB) RecordHeartbeat(ctx context.Context, id string, info coffer.ClientInfo) (wasOffline bool, err error) {
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		// The row lock keeps MarkClientsOffline and other heartbeats out
		// until the status below is settled.
		var status coffer.ClientStatus
		err := tx.QueryRowContext(ctx, `SELECT status FROM clients WHERE id = $1`+db.forUpdate(), id).Scan(&status)
		if errors.Is(err, sql.ErrNoRows) {
			return errClientNotFound(id)
		}
		if err != nil {
			return fmt.Errorf("lock client: %w", err)
		}
		wasOffline = status != coffer.ClientOnline
		now := db.now()
		_, err = tx.ExecContext(ctx, `UPDATE clients SET hostname = $2, os = $3, arch = $4, ipv4 = $5, ipv6 = $6,
			agent_version = $7, status = $8, last_seen_at = $9, updated_at = $9, commands_allowed = $10 WHERE id = $1`,
			id, info.Hostname, info.OS, info.Arch, jsonArg[string](info.IPv4), jsonArg[string](info.IPv6),
			info.AgentVersion, coffer.ClientOnline, now, info.CommandsAllowed)
		if err != nil {
			return fmt.Errorf("record heartbeat: %w", err)
		}
		return nil
	})
	return wasOffline, err
}

// MarkClientsOffline marks offline every online client last seen before
// seenBefore and returns them, ordered by id. Each client is returned by one
// call only, even when several replicas run it at once.
func (db *DB) MarkClientsOffline(ctx context.Context, seenBefore time.Time) ([]coffer.Client, error) {
	rows, err := queryAll(ctx, db.sql, scanClient, `UPDATE clients SET status = $1, updated_at = $2
		WHERE status = $3 AND (last_seen_at IS NULL OR last_seen_at < $4)
		RETURNING `+clientColumns, coffer.ClientOffline, db.now(), coffer.ClientOnline, ts(seenBefore))
	if err != nil {
		return nil, fmt.Errorf("mark clients offline: %w", err)
	}
	out := deref(rows)
	slices.SortFunc(out, func(a, b coffer.Client) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// nullString stores "" as NULL (optional references).
func nullString(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }

// escapeLike escapes the LIKE wildcards of s for ESCAPE '\'.
func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}
