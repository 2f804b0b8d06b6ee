package metadb_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
)

// wakeWait bounds how long a test waits for a wake-up that must come. It is
// a bound against hanging, not a latency assertion.
const wakeWait = 10 * time.Second

// listen starts ListenEvents on db for the rest of the test and waits for
// its goroutine to end when the test does.
func listen(t *testing.T, db *metadb.DB) <-chan struct{} {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	wake, err := db.ListenEvents(ctx, slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		for range wake {
		}
	})
	return wake
}

func insertEvent(t *testing.T, db *metadb.DB, code string) {
	t.Helper()
	e := &coffer.Event{Code: code, Title: "t", Audience: coffer.RoleViewer}
	if err := db.InsertEvent(context.Background(), e); err != nil {
		t.Fatal(err)
	}
}

func waitWake(t *testing.T, wake <-chan struct{}, what string) {
	t.Helper()
	select {
	case _, ok := <-wake:
		if !ok {
			t.Fatalf("%s: wake-up channel closed", what)
		}
	case <-time.After(wakeWait):
		t.Fatalf("%s: no wake-up within %v", what, wakeWait)
	}
}

// drain empties a pending wake-up, if any.
func drain(wake <-chan struct{}) {
	select {
	case <-wake:
	default:
	}
}

func TestListenEventsAcrossHandles(t *testing.T) {
	listener, writer := metadbtest.OpenReplicas(t, metadb.Postgres)
	wake := listen(t, listener)

	insertEvent(t, writer, "test.one")
	waitWake(t, wake, "event inserted by another handle")

	// A burst wakes too (wake-ups coalesce: the channel holds at most one).
	for range 3 {
		insertEvent(t, writer, "test.many")
	}
	waitWake(t, wake, "burst of events")
}

func TestListenEventsReconnects(t *testing.T) {
	listener, writer := metadbtest.OpenReplicas(t, metadb.Postgres)
	wake := listen(t, listener)
	ctx := context.Background()

	// Kill the listening backend from the other handle.
	res, err := writer.SQL().ExecContext(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE 'LISTEN%'`)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("terminated %d listening backends, want 1", n)
	}
	// The listener reconnects and wakes its owner once, because events
	// may have been committed while it was away.
	waitWake(t, wake, "reconnection")
	drain(wake)

	insertEvent(t, writer, "test.after_reconnect")
	waitWake(t, wake, "event after reconnection")
}

func TestListenEventsEndsWithContext(t *testing.T) {
	db := metadbtest.Open(t, metadb.Postgres)
	ctx, cancel := context.WithCancel(context.Background())
	wake, err := db.ListenEvents(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	deadline := time.After(wakeWait)
	for {
		select {
		case _, ok := <-wake:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatalf("wake-up channel still open %v after the context ended", wakeWait)
		}
	}
}

func TestListenEventsSQLite(t *testing.T) {
	db := metadbtest.Open(t, metadb.SQLite)
	wake, err := db.ListenEvents(t.Context(), nil)
	if wake != nil || err != nil {
		t.Errorf("ListenEvents on SQLite = %v, %v; want nil, nil", wake, err)
	}
}
