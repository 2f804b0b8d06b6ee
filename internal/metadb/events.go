package metadb

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/cofferhq/coffer"
)

// eventOrderLock is the PostgreSQL advisory lock key that serialises event
// inserts, so that ids become visible in increasing order: a reader that has
// seen id n never later finds a smaller id committed (which would break
// Last-Event-ID replay). SQLite transactions are serialised anyway.
const eventOrderLock = 0x636f66666572 // "coffer"

const eventColumns = `id, level, code, title, message, resource_type, resource_id, actor_id, actor, audience, user_id, created_at`

func scanEvent(row interface{ Scan(...any) error }) (coffer.Event, error) {
	var e coffer.Event
	err := row.Scan(&e.ID, &e.Level, &e.Code, &e.Title, &e.Message, &e.Resource.Type, &e.Resource.ID,
		&e.ActorID, &e.Actor, &e.Audience, &e.UserID, utc{&e.CreatedAt})
	return e, err
}

// InsertEvent stores an event, assigning its id and creation time (a
// non-zero CreatedAt is kept). On PostgreSQL it also notifies the listeners
// of ListenEvents when the insert commits.
func (db *DB) InsertEvent(ctx context.Context, e *coffer.Event) error {
	if e.CreatedAt.IsZero() {
		e.CreatedAt = db.now()
	}
	e.CreatedAt = ts(e.CreatedAt)
	if !e.Audience.Valid() {
		return fmt.Errorf("insert event %s: invalid audience %q", e.Code, e.Audience)
	}
	return db.inTx(ctx, func(tx *sql.Tx) error {
		if db.dialect == Postgres {
			if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(eventOrderLock)); err != nil {
				return fmt.Errorf("lock event order: %w", err)
			}
		}
		err := tx.QueryRowContext(ctx, `INSERT INTO events (level, code, title, message, resource_type, resource_id,
			actor_id, actor, audience, user_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id`,
			e.Level, e.Code, e.Title, e.Message, e.Resource.Type, e.Resource.ID, e.ActorID, e.Actor, e.Audience, e.UserID, e.CreatedAt,
		).Scan(&e.ID)
		if err != nil {
			return fmt.Errorf("insert event %s: %w", e.Code, err)
		}
		if db.dialect == Postgres {
			// Wakes the event hubs of every replica (see ListenEvents);
			// PostgreSQL delivers it when the transaction commits.
			if _, err := tx.ExecContext(ctx, `SELECT pg_notify($1, '')`, eventsChannel); err != nil {
				return fmt.Errorf("notify event %s: %w", e.Code, err)
			}
		}
		return nil
	})
}

// EventQuery selects events for ListEvents.
type EventQuery struct {
	AfterID  int64 // only ids greater than this (0: no bound)
	BeforeID int64 // only ids smaller than this (0: no bound)
	// Classes keeps events whose level is in one of these classes (empty: all).
	Classes []coffer.Level
	Since   *time.Time // created at or after
	Until   *time.Time // created before
	// Audiences and UserID restrict to what one principal may see: events
	// whose audience is one of Audiences, or that are about UserID.
	// Both empty: no restriction.
	Audiences []coffer.Role
	UserID    string
	// Resource keeps the events about one resource (Type and ID both set;
	// zero: all).
	Resource coffer.ResourceRef
	Limit    int
	// Descending returns newest first (history pages); otherwise oldest
	// first (replay).
	Descending bool
}

// ListEvents returns events matching q, at most q.Limit of them.
func (db *DB) ListEvents(ctx context.Context, q EventQuery) ([]coffer.Event, error) {
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if q.AfterID > 0 {
		where = append(where, "id > "+arg(q.AfterID))
	}
	if q.BeforeID > 0 {
		where = append(where, "id < "+arg(q.BeforeID))
	}
	if len(q.Classes) > 0 {
		var or []string
		for _, c := range q.Classes {
			or = append(or, fmt.Sprintf("(level >= %s AND level < %s)", arg(int(c.Class())), arg(int(c.Class())+16)))
		}
		where = append(where, "("+strings.Join(or, " OR ")+")")
	}
	if q.Resource.Type != "" {
		where = append(where, "resource_type = "+arg(q.Resource.Type), "resource_id = "+arg(q.Resource.ID))
	}
	if q.Since != nil {
		where = append(where, "created_at >= "+arg(ts(*q.Since)))
	}
	if q.Until != nil {
		where = append(where, "created_at < "+arg(ts(*q.Until)))
	}
	if len(q.Audiences) > 0 || q.UserID != "" {
		var or []string
		if len(q.Audiences) > 0 {
			var in []string
			for _, r := range q.Audiences {
				in = append(in, arg(string(r)))
			}
			or = append(or, "audience IN ("+strings.Join(in, ", ")+")")
		}
		if q.UserID != "" {
			or = append(or, "user_id = "+arg(q.UserID))
		}
		where = append(where, "("+strings.Join(or, " OR ")+")")
	}
	query := `SELECT ` + eventColumns + ` FROM events`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	if q.Descending {
		query += " ORDER BY id DESC"
	} else {
		query += " ORDER BY id"
	}
	query += " LIMIT " + arg(q.Limit)
	rows, err := db.sql.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	defer rows.Close()
	var out []coffer.Event
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return nil, fmt.Errorf("scan event: %w", err)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// LastEventID returns the id of the newest event, 0 when there is none.
func (db *DB) LastEventID(ctx context.Context) (int64, error) {
	var id sql.NullInt64
	err := db.sql.QueryRowContext(ctx, `SELECT MAX(id) FROM events`).Scan(&id)
	return id.Int64, err
}

// DeleteEventsBefore removes events created before t and returns how many.
func (db *DB) DeleteEventsBefore(ctx context.Context, t time.Time) (int64, error) {
	res, err := db.sql.ExecContext(ctx, `DELETE FROM events WHERE created_at < $1`, ts(t))
	if err != nil {
		return 0, fmt.Errorf("delete old events: %w", err)
	}
	return res.RowsAffected()
}
