package metadb

import (
	"context"
	"fmt"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/oklog/ulid/v2"
)

// CreateSession stores a new login session, assigning its id.
func (db *DB) CreateSession(ctx context.Context, s *coffer.Session) error {
	s.ID = ulid.Make().String()
	s.CreatedAt = db.now()
	s.LastSeenAt = s.CreatedAt
	s.ExpiresAt = ts(s.ExpiresAt)
	_, err := db.sql.ExecContext(ctx, `INSERT INTO sessions (id, user_id, token_hash, created_at, expires_at, last_seen_at, user_agent, remote_ip)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		s.ID, s.UserID, s.TokenHash, s.CreatedAt, s.ExpiresAt, s.LastSeenAt, s.UserAgent, s.RemoteIP)
	if isForeignKeyViolation(err) {
		return coffer.Errorf(coffer.KindNotFound, "user_not_found", "no user with id %q", s.UserID)
	}
	if err != nil {
		return fmt.Errorf("insert session: %w", err)
	}
	return nil
}

// SessionByTokenHash returns the session with the given token hash and its
// user, or "session_not_found". Expiry is the caller's to check.
func (db *DB) SessionByTokenHash(ctx context.Context, hash string) (*coffer.Session, *coffer.User, error) {
	var s coffer.Session
	row := db.sql.QueryRowContext(ctx, `SELECT s.id, s.user_id, s.token_hash, s.created_at, s.expires_at, s.last_seen_at,
		s.user_agent, s.remote_ip, u.id, u.username, u.role, u.disabled, u.password_hash, u.created_at, u.updated_at,
		u.password_changed_at, u.last_login_at
		FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = $1`, hash)
	var u coffer.User
	err := row.Scan(&s.ID, &s.UserID, &s.TokenHash, utc{&s.CreatedAt}, utc{&s.ExpiresAt}, utc{&s.LastSeenAt},
		&s.UserAgent, &s.RemoteIP, &u.ID, &u.Username, &u.Role, &u.Disabled, &u.PasswordHash,
		utc{&u.CreatedAt}, utc{&u.UpdatedAt}, utc{&u.PasswordChangedAt}, nullUTC{&u.LastLoginAt})
	if err != nil {
		return nil, nil, notFound(err, "session_not_found", "no such session")
	}
	return &s, &u, nil
}

// TouchSession records that the session was used.
func (db *DB) TouchSession(ctx context.Context, id string) error {
	_, err := db.sql.ExecContext(ctx, `UPDATE sessions SET last_seen_at = $2 WHERE id = $1`, id, db.now())
	return err
}

// DeleteSession ends one session; a missing session is not an error.
func (db *DB) DeleteSession(ctx context.Context, id string) error {
	_, err := db.sql.ExecContext(ctx, `DELETE FROM sessions WHERE id = $1`, id)
	return err
}

// DeleteUserSessions ends every session of the user except keepID (which may
// be "") and returns how many it ended.
func (db *DB) DeleteUserSessions(ctx context.Context, userID, keepID string) (int64, error) {
	res, err := db.sql.ExecContext(ctx, `DELETE FROM sessions WHERE user_id = $1 AND id <> $2`, userID, keepID)
	if err != nil {
		return 0, fmt.Errorf("delete sessions: %w", err)
	}
	return res.RowsAffected()
}

// DeleteExpiredSessions removes sessions that expired before t.
func (db *DB) DeleteExpiredSessions(ctx context.Context, t time.Time) (int64, error) {
	res, err := db.sql.ExecContext(ctx, `DELETE FROM sessions WHERE expires_at < $1`, ts(t))
	if err != nil {
		return 0, fmt.Errorf("delete expired sessions: %w", err)
	}
	return res.RowsAffected()
}
