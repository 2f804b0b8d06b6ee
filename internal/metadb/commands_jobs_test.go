package metadb_test

import (
	"context"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/google/go-cmp/cmp"
)

func commandIDs(cs []coffer.AgentCommand) []string {
	var ids []string
	for _, c := range cs {
		ids = append(ids, c.ID)
	}
	return ids
}

func TestAgentCommands(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		clock := newJobClock(db)
		a := enrollTestClient(t, db, "", "a")
		b := enrollTestClient(t, db, "", "b")

		err := db.EnqueueCommand(ctx, &coffer.AgentCommand{ClientID: "nope", Kind: "backup"})
		wantCode(t, err, "client_not_found")

		enqueue := func(clientID, kind, payload string) *coffer.AgentCommand {
			t.Helper()
			c := &coffer.AgentCommand{ClientID: clientID, Kind: kind, Payload: []byte(payload)}
			if err := db.EnqueueCommand(ctx, c); err != nil {
				t.Fatal(err)
			}
			return c
		}
		created := stored(clock.Now())
		first := enqueue(a.ID, "backup", `{"backup_id":"b1","paths":["/etc"]}`)
		second := enqueue(a.ID, "list_dir", `{"request_id":"r1","path":"/"}`) // same created_at: id order
		clock.Add(time.Second)
		third := enqueue(a.ID, "cancel", `{"job_id":"b1"}`)
		other := enqueue(b.ID, "backup", `{}`)

		want := &coffer.AgentCommand{ID: first.ID, ClientID: a.ID, Kind: "backup",
			Payload: []byte(`{"backup_id":"b1","paths":["/etc"]}`), CreatedAt: created}
		if diff := cmp.Diff(want, first); diff != "" {
			t.Errorf("enqueued (-want +got):\n%s", diff)
		}
		got, err := db.GetCommand(ctx, first.ID)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("GetCommand (-want +got):\n%s", diff)
		}
		_, err = db.GetCommand(ctx, "nope")
		wantCode(t, err, "command_not_found")

		pending := func(clientID string, limit int) []string {
			t.Helper()
			cs, err := db.PendingCommands(ctx, clientID, limit)
			if err != nil {
				t.Fatal(err)
			}
			return commandIDs(cs)
		}
		if diff := cmp.Diff([]string{first.ID, second.ID, third.ID}, pending(a.ID, 10)); diff != "" {
			t.Errorf("pending, oldest first (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]string{first.ID, second.ID}, pending(a.ID, 2)); diff != "" {
			t.Errorf("pending, limited (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]string{other.ID}, pending(b.ID, 0)); diff != "" {
			t.Errorf("another client's pending (-want +got):\n%s", diff)
		}

		delivered := clock.Add(time.Second)
		if err := db.MarkCommandDelivered(ctx, first.ID); err != nil {
			t.Fatal(err)
		}
		clock.Add(time.Second)
		if err := db.MarkCommandDelivered(ctx, first.ID); err != nil {
			t.Fatalf("delivering twice: %v", err)
		}
		wantCode(t, db.MarkCommandDelivered(ctx, "nope"), "command_not_found")
		if diff := cmp.Diff([]string{second.ID, third.ID}, pending(a.ID, 10)); diff != "" {
			t.Errorf("pending after a delivery (-want +got):\n%s", diff)
		}
		got, err = db.GetCommand(ctx, first.ID)
		if err != nil || got.DeliveredAt == nil || !got.DeliveredAt.Equal(delivered) || got.CompletedAt != nil {
			t.Errorf("delivered command = %+v, %v; want delivered at %v (the first time)", got, err, delivered)
		}

		// Only its own client completes a command; the first answer stays.
		wantCode(t, db.CompleteCommand(ctx, second.ID, b.ID, []byte(`{}`)), "command_not_found")
		wantCode(t, db.CompleteCommand(ctx, "nope", a.ID, nil), "command_not_found")
		completed := clock.Add(time.Second)
		result := []byte(`{"entries":[{"name":"etc","type":"dir"}]}`)
		if err := db.CompleteCommand(ctx, second.ID, a.ID, result); err != nil {
			t.Fatal(err)
		}
		clock.Add(time.Second)
		if err := db.CompleteCommand(ctx, second.ID, a.ID, []byte(`{"entries":[]}`)); err != nil {
			t.Fatalf("completing twice: %v", err)
		}
		got, err = db.GetCommand(ctx, second.ID)
		if err != nil {
			t.Fatal(err)
		}
		wantSecond := &coffer.AgentCommand{ID: second.ID, ClientID: a.ID, Kind: "list_dir", Payload: second.Payload,
			CreatedAt: created, DeliveredAt: &completed, CompletedAt: &completed, Result: result}
		if diff := cmp.Diff(wantSecond, got); diff != "" {
			t.Errorf("completed command (-want +got):\n%s", diff)
		}
		// A completed command is no longer pending, even if never marked delivered.
		if diff := cmp.Diff([]string{third.ID}, pending(a.ID, 10)); diff != "" {
			t.Errorf("pending after a completion (-want +got):\n%s", diff)
		}
		// Completing without a result.
		if err := db.CompleteCommand(ctx, third.ID, a.ID, nil); err != nil {
			t.Fatal(err)
		}
		if got, err := db.GetCommand(ctx, third.ID); err != nil || got.CompletedAt == nil || got.Result != nil {
			t.Errorf("command completed without a result = %+v, %v", got, err)
		}

		// Housekeeping removes commands created before the bound.
		n, err := db.DeleteCommandsBefore(ctx, created.Add(time.Millisecond))
		if err != nil || n != 2 {
			t.Fatalf("DeleteCommandsBefore = %d, %v; want 2", n, err)
		}
		_, err = db.GetCommand(ctx, first.ID)
		wantCode(t, err, "command_not_found")
		for _, id := range []string{third.ID, other.ID} {
			if _, err := db.GetCommand(ctx, id); err != nil {
				t.Errorf("a newer command was deleted: %v", err)
			}
		}
	})
}
