package metadb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/oklog/ulid/v2"
)

const clientLogColumns = `id, client_id, backup_id, restore_id, level, message, attrs, logged_at, received_at`

func scanClientLog(row rowScanner) (*coffer.ClientLog, error) {
	var l coffer.ClientLog
	var level int
	err := row.Scan(&l.ID, &l.ClientID, &l.BackupID, &l.RestoreID, &level, &l.Message, jsonObject{&l.Attrs},
		utc{&l.Time}, utc{&l.ReceivedAt})
	if err != nil {
		return nil, err
	}
	l.Level = coffer.LogLevel(level)
	if len(l.Attrs) == 0 {
		l.Attrs = nil
	}
	return &l, nil
}

// insertLogsChunk is how many lines one INSERT statement carries (nine
// placeholders each, well below both databases' limits).
const insertLogsChunk = 500

// InsertClientLogs stores log lines, in one transaction, assigning each its
// id and the time it was received. Lines of one call get increasing ids in
// their order, so lines logged at the same instant list newest first as
// the agent logged them. A client that does not exist (deleted meanwhile)
// is "client_not_found" and nothing is stored.
func (db *DB) InsertClientLogs(ctx context.Context, lines []coffer.ClientLog) error {
	if len(lines) == 0 {
		return nil
	}
	now := db.now()
	for i := range lines {
		lines[i].ID = ulid.Make().String()
		lines[i].ReceivedAt = now
		lines[i].Time = ts(lines[i].Time)
	}
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		for start := 0; start < len(lines); start += insertLogsChunk {
			chunk := lines[start:min(start+insertLogsChunk, len(lines))]
			var w sqlFilter
			values := make([]string, len(chunk))
			for i := range chunk {
				l := &chunk[i]
				values[i] = "(" + strings.Join([]string{w.arg(l.ID), w.arg(l.ClientID), w.arg(l.BackupID), w.arg(l.RestoreID),
					w.arg(int(l.Level)), w.arg(l.Message), w.arg(attrsArg(l.Attrs)), w.arg(l.Time), w.arg(l.ReceivedAt)}, ", ") + ")"
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO client_logs (`+clientLogColumns+`) VALUES `+strings.Join(values, ", "), w.args...)
			if err != nil {
				return err
			}
		}
		return nil
	})
	switch {
	case isForeignKeyViolation(err):
		return errClientNotFound(lines[0].ClientID)
	case err != nil:
		return fmt.Errorf("insert client logs: %w", err)
	}
	return nil
}

// attrsArg stores a line's attributes as a JSON object ("{}" for none).
func attrsArg(m map[string]string) jsonValue {
	if m == nil {
		m = map[string]string{}
	}
	return jsonValue{m}
}

// ClientLogFilter selects one client's log lines for ListClientLogs. Zero
// fields other than ClientID do not filter.
type ClientLogFilter struct {
	ClientID string
	// MinLevel keeps lines at this level or above, when set.
	MinLevel  *coffer.LogLevel
	BackupID  string
	RestoreID string
	Since     time.Time // logged at or after
	Until     time.Time // logged before
	// After is the last line of the previous page: its Time (as
	// CreatedAt) and ID.
	After *Keyset
	Limit int // at most this many (0: no limit)
}

// ListClientLogs returns a client's log lines newest first (the time the
// agent logged them, then id, descending).
func (db *DB) ListClientLogs(ctx context.Context, f ClientLogFilter) ([]coffer.ClientLog, error) {
	var w sqlFilter
	w.add("client_id = " + w.arg(f.ClientID))
	if f.MinLevel != nil {
		w.add("level >= " + w.arg(int(*f.MinLevel)))
	}
	if f.BackupID != "" {
		w.add("backup_id = " + w.arg(f.BackupID))
	}
	if f.RestoreID != "" {
		w.add("restore_id = " + w.arg(f.RestoreID))
	}
	if !f.Since.IsZero() {
		w.add("logged_at >= " + w.arg(ts(f.Since)))
	}
	if !f.Until.IsZero() {
		w.add("logged_at < " + w.arg(ts(f.Until)))
	}
	if f.After != nil {
		w.add("(logged_at, id) < (" + w.arg(ts(f.After.CreatedAt)) + ", " + w.arg(f.After.ID) + ")")
	}
	rows, err := queryAll(ctx, db.sql, scanClientLog, `SELECT `+clientLogColumns+` FROM client_logs`+w.where()+
		` ORDER BY logged_at DESC, id DESC`+w.page(f.Limit, 0), w.args...)
	if err != nil {
		return nil, fmt.Errorf("list client logs: %w", err)
	}
	return deref(rows), nil
}

// DeleteClientLogsBefore removes the log lines received before t and
// returns how many.
func (db *DB) DeleteClientLogsBefore(ctx context.Context, t time.Time) (int64, error) {
	res, err := db.sql.ExecContext(ctx, `DELETE FROM client_logs WHERE received_at < $1`, ts(t))
	if err != nil {
		return 0, fmt.Errorf("delete old client logs: %w", err)
	}
	return res.RowsAffected()
}

// TrimClientLogs keeps at most keep lines of every client — its newest —
// and returns how many it deleted. Several replicas may run it at once.
func (db *DB) TrimClientLogs(ctx context.Context, keep int) (int64, error) {
	if keep < 0 {
		return 0, fmt.Errorf("trim client logs: keep %d lines?", keep)
	}
	over, err := queryAll(ctx, db.sql, func(r rowScanner) (*string, error) {
		var id string
		return &id, r.Scan(&id)
	}, `SELECT client_id FROM client_logs GROUP BY client_id HAVING COUNT(*) > $1`, keep)
	if err != nil {
		return 0, fmt.Errorf("find clients over the log cap: %w", err)
	}
	var deleted int64
	for _, id := range over {
		// The newest line beyond the cap: it and every older one go.
		var k Keyset
		err := db.sql.QueryRowContext(ctx, `SELECT logged_at, id FROM client_logs WHERE client_id = $1
			ORDER BY logged_at DESC, id DESC LIMIT 1 OFFSET $2`, *id, keep).Scan(utc{&k.CreatedAt}, &k.ID)
		if errors.Is(err, sql.ErrNoRows) {
			continue // trimmed by another replica meanwhile
		}
		if err != nil {
			return deleted, fmt.Errorf("find the log cap of client %s: %w", *id, err)
		}
		res, err := db.sql.ExecContext(ctx, `DELETE FROM client_logs WHERE client_id = $1 AND (logged_at, id) <= ($2, $3)`,
			*id, k.CreatedAt, k.ID)
		if err != nil {
			return deleted, fmt.Errorf("trim the logs of client %s: %w", *id, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return deleted, err
		}
		deleted += n
	}
	return deleted, nil
}
