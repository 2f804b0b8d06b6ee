package metadb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/stdlib"
)

// eventsChannel is the PostgreSQL notification channel InsertEvent signals
// on. The payload is empty: a notification only says "there is something
// new"; listeners read the events themselves.
const eventsChannel = "coffer_events"

// The listener's reconnection backoff.
const (
	listenMinBackoff = time.Second
	listenMaxBackoff = 30 * time.Second
)

// ListenEvents returns a channel that receives a value soon after any
// replica sharing this database commits an event, so that an event hub
// does not have to wait for its next poll. Wake-ups coalesce (the channel
// holds at most one) and carry no data: the receiver reads the events from
// the store. On SQLite it returns a nil channel: a single process needs no
// cross-process signal.
//
// On PostgreSQL a goroutine keeps one connection of the pool LISTENing. If
// that connection breaks, the goroutine logs, reconnects with backoff
// (1 s doubling to 30 s) and then sends one wake-up, since events may have
// been committed meanwhile. The goroutine is owned by ctx: it ends when ctx
// is done and closes the channel as its last act, so draining the channel
// waits for it. Cancel ctx before closing the DB.
//
// The error reports a failure to start listening (the database is
// unreachable); later failures are logged and retried.
func (db *DB) ListenEvents(ctx context.Context, logger *slog.Logger) (<-chan struct{}, error) {
	if db.dialect != Postgres {
		return nil, nil
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	conn, err := db.listen(ctx)
	if err != nil {
		return nil, err
	}
	wake := make(chan struct{}, 1)
	go db.listenLoop(ctx, logger, conn, wake)
	return wake, nil
}

// listen reserves a connection and subscribes it to eventsChannel.
func (db *DB) listen(ctx context.Context) (*sql.Conn, error) {
	conn, err := db.sql.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("listen for events: reserve connection: %w", err)
	}
	if _, err := conn.ExecContext(ctx, "LISTEN "+eventsChannel); err != nil {
		conn.Raw(func(any) error { return driver.ErrBadConn }) // discard it
		conn.Close()
		return nil, fmt.Errorf("listen for events: %w", err)
	}
	return conn, nil
}

// listenLoop forwards notifications from conn to wake, replacing conn
// whenever it breaks, until ctx is done.
func (db *DB) listenLoop(ctx context.Context, logger *slog.Logger, conn *sql.Conn, wake chan<- struct{}) {
	defer close(wake)
	for {
		err := waitNotifications(ctx, conn, wake)
		if ctx.Err() != nil {
			return
		}
		logger.Warn("event notifications interrupted; reconnecting", "err", err)
		conn = db.relisten(ctx, logger)
		if conn == nil {
			return
		}
		logger.Info("event notifications resumed")
		notifyWake(wake)
	}
}

// relisten retries listen with backoff until it succeeds or ctx is done
// (then it returns nil).
func (db *DB) relisten(ctx context.Context, logger *slog.Logger) *sql.Conn {
	backoff := listenMinBackoff
	timer := time.NewTimer(backoff)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		conn, err := db.listen(ctx)
		if err == nil {
			return conn
		}
		if ctx.Err() != nil {
			return nil
		}
		backoff = min(2*backoff, listenMaxBackoff)
		logger.Warn("event notifications still unavailable", "err", err, "retry_in", backoff)
		timer.Reset(backoff)
	}
}

// waitNotifications signals wake for every notification on conn until the
// connection fails or ctx is done. It always gives conn up: a LISTENing
// connection must not return to the pool, so it is discarded.
func waitNotifications(ctx context.Context, conn *sql.Conn, wake chan<- struct{}) error {
	defer conn.Close()
	var waitErr error
	err := conn.Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			waitErr = fmt.Errorf("wait for event notifications: driver connection is %T, not pgx", dc)
			return driver.ErrBadConn
		}
		pc := sc.Conn()
		for {
			if _, err := pc.WaitForNotification(ctx); err != nil {
				waitErr = fmt.Errorf("wait for event notifications: %w", err)
				return driver.ErrBadConn
			}
			notifyWake(wake)
		}
	})
	if waitErr == nil {
		waitErr = err
	}
	return waitErr
}

// notifyWake sends a wake-up unless one is already pending.
func notifyWake(wake chan<- struct{}) {
	select {
	case wake <- struct{}{}:
	default:
	}
}
