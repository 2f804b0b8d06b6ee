package metadb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/oklog/ulid/v2"
)

const commandColumns = `id, client_id, kind, payload, created_at, delivered_at, completed_at, result`

func scanCommand(row rowScanner) (*coffer.AgentCommand, error) {
	var c coffer.AgentCommand
	var payload, result string
	err := row.Scan(&c.ID, &c.ClientID, &c.Kind, &payload, utc{&c.CreatedAt}, nullUTC{&c.DeliveredAt}, nullUTC{&c.CompletedAt}, &result)
	if err != nil {
		return nil, err
	}
	if payload != "" {
		c.Payload = []byte(payload)
	}
	if result != "" {
		c.Result = []byte(result)
	}
	return &c, nil
}

func errCommandNotFound(id string) error {
	return coffer.Errorf(coffer.KindNotFound, "command_not_found", "no agent command with id %q", id).With("command_id", id)
}

// EnqueueCommand stores a command for a client's agent, assigning its id
// and creation time. An unknown client is "client_not_found"; a client's
// commands are deleted with it.
func (db *DB) EnqueueCommand(ctx context.Context, c *coffer.AgentCommand) error {
	c.ID = ulid.Make().String()
	c.CreatedAt = db.now()
	c.DeliveredAt, c.CompletedAt, c.Result = nil, nil, nil
	_, err := db.sql.ExecContext(ctx, `INSERT INTO agent_commands (id, client_id, kind, payload, created_at)
		VALUES ($1, $2, $3, $4, $5)`, c.ID, c.ClientID, c.Kind, string(c.Payload), c.CreatedAt)
	switch {
	case isForeignKeyViolation(err):
		return errClientNotFound(c.ClientID)
	case err != nil:
		return fmt.Errorf("insert agent command: %w", err)
	}
	return nil
}

// PendingCommands returns up to limit (0: all) of the client's commands not
// yet delivered, oldest first.
func (db *DB) PendingCommands(ctx context.Context, clientID string, limit int) ([]coffer.AgentCommand, error) {
	var w sqlFilter
	w.add("client_id = " + w.arg(clientID))
	w.add("delivered_at IS NULL")
	rows, err := queryAll(ctx, db.sql, scanCommand, `SELECT `+commandColumns+` FROM agent_commands`+w.where()+
		` ORDER BY created_at, id`+w.page(limit, 0), w.args...)
	if err != nil {
		return nil, fmt.Errorf("list pending agent commands: %w", err)
	}
	return deref(rows), nil
}

// MarkCommandDelivered records that the command was sent to its agent (the
// first delivery time is kept). An unknown command is "command_not_found".
func (db *DB) MarkCommandDelivered(ctx context.Context, id string) error {
	res, err := db.sql.ExecContext(ctx, `UPDATE agent_commands SET delivered_at = COALESCE(delivered_at, $2) WHERE id = $1`, id, db.now())
	if err != nil {
		return fmt.Errorf("mark agent command delivered: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("mark agent command delivered: %w", err)
	} else if n == 0 {
		return errCommandNotFound(id)
	}
	return nil
}

// CompleteCommand records the agent's answer to a command of its own; a
// command of another client is "command_not_found". Completing a command
// again changes nothing (the first answer stays). A completed command
// counts as delivered.
func (db *DB) CompleteCommand(ctx context.Context, id, clientID string, result []byte) error {
	res, err := db.sql.ExecContext(ctx, `UPDATE agent_commands SET
		result = CASE WHEN completed_at IS NULL THEN $3 ELSE result END,
		completed_at = COALESCE(completed_at, $4),
		delivered_at = COALESCE(delivered_at, $4)
		WHERE id = $1 AND client_id = $2`, id, clientID, string(result), db.now())
	if err != nil {
		return fmt.Errorf("complete agent command: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("complete agent command: %w", err)
	} else if n == 0 {
		return errCommandNotFound(id)
	}
	return nil
}

// GetCommand returns the command with the given id, or "command_not_found".
func (db *DB) GetCommand(ctx context.Context, id string) (*coffer.AgentCommand, error) {
	c, err := scanCommand(db.sql.QueryRowContext(ctx, `SELECT `+commandColumns+` FROM agent_commands WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errCommandNotFound(id)
	}
	if err != nil {
		return nil, fmt.Errorf("read agent command: %w", err)
	}
	return c, nil
}

// DeleteCommandsBefore removes commands created before t, delivered or not,
// and returns how many.
func (db *DB) DeleteCommandsBefore(ctx context.Context, t time.Time) (int64, error) {
	res, err := db.sql.ExecContext(ctx, `DELETE FROM agent_commands WHERE created_at < $1`, ts(t))
	if err != nil {
		return 0, fmt.Errorf("delete old agent commands: %w", err)
	}
	return res.RowsAffected()
}
