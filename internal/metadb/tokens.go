package metadb

import (
	"context"
	"fmt"

	"github.com/cofferhq/coffer"
	"github.com/oklog/ulid/v2"
)

const tokenColumns = `t.id, t.user_id, t.name, t.prefix, t.token_hash, t.scopes, t.created_at, t.expires_at, t.last_used_at`

func scanToken(row interface{ Scan(...any) error }, extra ...any) (*coffer.APIToken, error) {
	var t coffer.APIToken
	var scopes string
	dest := append([]any{&t.ID, &t.UserID, &t.Name, &t.Prefix, &t.TokenHash, &scopes,
		utc{&t.CreatedAt}, nullUTC{&t.ExpiresAt}, nullUTC{&t.LastUsedAt}}, extra...)
	if err := row.Scan(dest...); err != nil {
		return nil, err
	}
	t.Scopes = splitList[coffer.Permission](scopes)
	return &t, nil
}

// CreateAPIToken stores a new API token, assigning its id. A name the user
// already uses is a conflict "token_name_taken".
func (db *DB) CreateAPIToken(ctx context.Context, t *coffer.APIToken) error {
	t.ID = ulid.Make().String()
	t.CreatedAt = db.now()
	t.ExpiresAt = tsPtr(t.ExpiresAt)
	_, err := db.sql.ExecContext(ctx, `INSERT INTO api_tokens (id, user_id, name, prefix, token_hash, scopes, created_at, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		t.ID, t.UserID, t.Name, t.Prefix, t.TokenHash, joinList(t.Scopes), t.CreatedAt, t.ExpiresAt)
	switch {
	case isUniqueViolation(err):
		return coffer.Errorf(coffer.KindConflict, "token_name_taken", "you already have a token named %q: pick another name or revoke that token", t.Name).With("name", t.Name)
	case isForeignKeyViolation(err):
		return coffer.Errorf(coffer.KindNotFound, "user_not_found", "no user with id %q", t.UserID)
	case err != nil:
		return fmt.Errorf("insert api token: %w", err)
	}
	return nil
}

// APITokenByHash returns the token with the given hash and its owner, or
// "token_not_found". Expiry is the caller's to check.
func (db *DB) APITokenByHash(ctx context.Context, hash string) (*coffer.APIToken, *coffer.User, error) {
	var u coffer.User
	t, err := scanToken(db.sql.QueryRowContext(ctx, `SELECT `+tokenColumns+`, u.id, u.username, u.role, u.disabled,
		u.password_hash, u.created_at, u.updated_at, u.password_changed_at, u.last_login_at
		FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1`, hash),
		&u.ID, &u.Username, &u.Role, &u.Disabled, &u.PasswordHash,
		utc{&u.CreatedAt}, utc{&u.UpdatedAt}, utc{&u.PasswordChangedAt}, nullUTC{&u.LastLoginAt})
	if err != nil {
		return nil, nil, notFound(err, "token_not_found", "no such API token")
	}
	return t, &u, nil
}

// GetAPIToken returns the token with the given id, or "token_not_found".
func (db *DB) GetAPIToken(ctx context.Context, id string) (*coffer.APIToken, error) {
	t, err := scanToken(db.sql.QueryRowContext(ctx, `SELECT `+tokenColumns+` FROM api_tokens t WHERE t.id = $1`, id))
	if err != nil {
		return nil, notFound(err, "token_not_found", "no API token with id %q", id)
	}
	return t, nil
}

// ListAPITokens returns the user's tokens (every user's when userID is ""),
// newest first.
func (db *DB) ListAPITokens(ctx context.Context, userID string) ([]coffer.APIToken, error) {
	rows, err := db.sql.QueryContext(ctx, `SELECT `+tokenColumns+` FROM api_tokens t
		WHERE $1 = '' OR t.user_id = $1 ORDER BY t.created_at DESC, t.id DESC`, userID)
	if err != nil {
		return nil, fmt.Errorf("list api tokens: %w", err)
	}
	defer rows.Close()
	var out []coffer.APIToken
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("scan api token: %w", err)
		}
		out = append(out, *t)
	}
	return out, rows.Err()
}

// DeleteAPIToken revokes a token; "token_not_found" if there is none.
func (db *DB) DeleteAPIToken(ctx context.Context, id string) error {
	res, err := db.sql.ExecContext(ctx, `DELETE FROM api_tokens WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("delete api token: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return coffer.Errorf(coffer.KindNotFound, "token_not_found", "no API token with id %q", id)
	}
	return nil
}

// TouchAPIToken records that the token was used.
func (db *DB) TouchAPIToken(ctx context.Context, id string) error {
	_, err := db.sql.ExecContext(ctx, `UPDATE api_tokens SET last_used_at = $2 WHERE id = $1`, id, db.now())
	return err
}
