package metadb

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"

	"github.com/cofferhq/coffer"
	"github.com/oklog/ulid/v2"
)

const userColumns = `id, username, role, disabled, password_hash, created_at, updated_at, password_changed_at, last_login_at`

func scanUser(row interface{ Scan(...any) error }) (*coffer.User, error) {
	var u coffer.User
	err := row.Scan(&u.ID, &u.Username, &u.Role, &u.Disabled, &u.PasswordHash,
		utc{&u.CreatedAt}, utc{&u.UpdatedAt}, utc{&u.PasswordChangedAt}, nullUTC{&u.LastLoginAt})
	if err != nil {
		return nil, err
	}
	return &u, nil
}

// usernameKey is the case-folded form usernames are unique by.
func usernameKey(username string) string { return strings.ToLower(username) }

// CreateUser stores a new user, assigning its id and timestamps. A username
// already taken (in any letter case) is a conflict "username_taken".
func (db *DB) CreateUser(ctx context.Context, u *coffer.User) error {
	now := db.now()
	u.ID = ulid.Make().String()
	u.CreatedAt, u.UpdatedAt, u.PasswordChangedAt = now, now, now
	_, err := db.sql.ExecContext(ctx, `INSERT INTO users (`+userColumns+`, username_key)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
		u.ID, u.Username, u.Role, u.Disabled, u.PasswordHash, now, now, now, tsPtr(u.LastLoginAt), usernameKey(u.Username))
	if isUniqueViolation(err) {
		return coffer.Errorf(coffer.KindConflict, "username_taken", "the username %q is already taken", u.Username).With("username", u.Username)
	}
	if err != nil {
		return fmt.Errorf("insert user: %w", err)
	}
	return nil
}

// GetUser returns the user with the given id, or "user_not_found".
func (db *DB) GetUser(ctx context.Context, id string) (*coffer.User, error) {
	return db.getUser(ctx, db.sql, id, "")
}

func (db *DB) getUser(ctx context.Context, q queryer, id, lock string) (*coffer.User, error) {
	u, err := scanUser(q.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE id = $1`+lock, id))
	if err != nil {
		return nil, notFound(err, "user_not_found", "no user with id %q", id)
	}
	return u, nil
}

// GetUserByUsername returns the user with the given username (matched
// without regard to letter case), or "user_not_found".
func (db *DB) GetUserByUsername(ctx context.Context, username string) (*coffer.User, error) {
	u, err := scanUser(db.sql.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE username_key = $1`, usernameKey(username)))
	if err != nil {
		return nil, notFound(err, "user_not_found", "no user named %q", username)
	}
	return u, nil
}

// CountUsers returns how many accounts exist.
func (db *DB) CountUsers(ctx context.Context) (int, error) {
	var n int
	err := db.sql.QueryRowContext(ctx, `SELECT COUNT(*) FROM users`).Scan(&n)
	return n, err
}

// UserFilter selects users for ListUsers.
type UserFilter struct {
	Role     coffer.Role // "" for any
	Disabled *bool       // nil for any
	Offset   int
	Limit    int
}

// ListUsers returns one page of users ordered by username, and how many
// users match the filter in all.
func (db *DB) ListUsers(ctx context.Context, f UserFilter) ([]coffer.User, int, error) {
	var where []string
	var args []any
	if f.Role != "" {
		args = append(args, f.Role)
		where = append(where, fmt.Sprintf("role = $%d", len(args)))
	}
	if f.Disabled != nil {
		args = append(args, *f.Disabled)
		where = append(where, fmt.Sprintf("disabled = $%d", len(args)))
	}
	cond := ""
	if len(where) > 0 {
		cond = " WHERE " + strings.Join(where, " AND ")
	}
	var total int
	if err := db.sql.QueryRowContext(ctx, `SELECT COUNT(*) FROM users`+cond, args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count users: %w", err)
	}
	args = append(args, f.Limit, f.Offset)
	rows, err := db.sql.QueryContext(ctx, `SELECT `+userColumns+` FROM users`+cond+
		fmt.Sprintf(` ORDER BY username_key LIMIT $%d OFFSET $%d`, len(args)-1, len(args)), args...)
	if err != nil {
		return nil, 0, fmt.Errorf("list users: %w", err)
	}
	defer rows.Close()
	var users []coffer.User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, 0, fmt.Errorf("scan user: %w", err)
		}
		users = append(users, *u)
	}
	return users, total, rows.Err()
}

// UserUpdate names the fields UpdateUser changes; nil fields stay as they are.
type UserUpdate struct {
	Username     *string
	Role         *coffer.Role
	Disabled     *bool
	PasswordHash *string
}

// UpdateUser applies upd to the user and returns the result. A change that
// would leave no active admin is refused with conflict "last_admin";
// disabling a user also ends their sessions.
func (db *DB) UpdateUser(ctx context.Context, id string, upd UserUpdate) (*coffer.User, error) {
	var out *coffer.User
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		admins, err := db.lockActiveAdmins(ctx, tx)
		if err != nil {
			return err
		}
		u, err := db.getUser(ctx, tx, id, db.forUpdate())
		if err != nil {
			return err
		}
		if upd.Username != nil {
			u.Username = *upd.Username
		}
		if upd.Role != nil {
			u.Role = *upd.Role
		}
		if upd.Disabled != nil {
			u.Disabled = *upd.Disabled
		}
		now := db.now()
		if upd.PasswordHash != nil {
			u.PasswordHash = *upd.PasswordHash
			u.PasswordChangedAt = now
		}
		stillAdmin := u.Role == coffer.RoleAdmin && !u.Disabled
		if !stillAdmin && slices.Equal(admins, []string{id}) {
			return errLastAdmin(u.Username)
		}
		u.UpdatedAt = now
		_, err = tx.ExecContext(ctx, `UPDATE users SET username = $2, username_key = $3, role = $4, disabled = $5,
			password_hash = $6, password_changed_at = $7, updated_at = $8 WHERE id = $1`,
			u.ID, u.Username, usernameKey(u.Username), u.Role, u.Disabled, u.PasswordHash, u.PasswordChangedAt, u.UpdatedAt)
		if isUniqueViolation(err) {
			return coffer.Errorf(coffer.KindConflict, "username_taken", "the username %q is already taken", u.Username).With("username", u.Username)
		}
		if err != nil {
			return fmt.Errorf("update user: %w", err)
		}
		if u.Disabled {
			if _, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE user_id = $1`, id); err != nil {
				return fmt.Errorf("end sessions of disabled user: %w", err)
			}
		}
		out = u
		return nil
	})
	return out, err
}

// DeleteUser removes the user with their sessions and API tokens. Deleting
// the last active admin is refused with conflict "last_admin".
func (db *DB) DeleteUser(ctx context.Context, id string) (*coffer.User, error) {
	var out *coffer.User
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		admins, err := db.lockActiveAdmins(ctx, tx)
		if err != nil {
			return err
		}
		u, err := db.getUser(ctx, tx, id, db.forUpdate())
		if err != nil {
			return err
		}
		if slices.Equal(admins, []string{id}) {
			return errLastAdmin(u.Username)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM users WHERE id = $1`, id); err != nil {
			return fmt.Errorf("delete user: %w", err)
		}
		out = u
		return nil
	})
	return out, err
}

// RecordLogin stamps the user's last successful login.
func (db *DB) RecordLogin(ctx context.Context, id string) error {
	_, err := db.sql.ExecContext(ctx, `UPDATE users SET last_login_at = $2 WHERE id = $1`, id, db.now())
	return err
}

// lockActiveAdmins returns the ids of the active admins, row-locked on
// PostgreSQL so that two concurrent demotions cannot both see "another admin
// remains" (SQLite transactions already hold the write lock).
func (db *DB) lockActiveAdmins(ctx context.Context, tx *sql.Tx) ([]string, error) {
	rows, err := tx.QueryContext(ctx, `SELECT id FROM users WHERE role = $1 AND disabled = $2 ORDER BY id`+db.forUpdate(),
		coffer.RoleAdmin, false)
	if err != nil {
		return nil, fmt.Errorf("lock admins: %w", err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

func errLastAdmin(username string) error {
	return coffer.Errorf(coffer.KindConflict, "last_admin",
		"%q is the last active admin: make another user an admin first", username).With("username", username)
}
