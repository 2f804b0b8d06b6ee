package metadb_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/google/go-cmp/cmp"
)

func TestUpdateClient(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		clock := newJobClock(db)
		alice := newUser(t, db, "alice", coffer.RoleOperator)
		bob := newUser(t, db, "bob", coffer.RoleOperator)
		c := enrollTestClient(t, db, alice.ID, "web")
		enrollTestClient(t, db, alice.ID, "db")

		now := clock.Add(time.Minute)
		name := "Web Front"
		before, after, err := db.UpdateClient(ctx, c.ID, metadb.ClientUpdate{Name: &name, OwnerID: &bob.ID})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(c, before); diff != "" {
			t.Errorf("before (-want +got):\n%s", diff)
		}
		want := *c
		want.Name, want.OwnerID, want.UpdatedAt = name, bob.ID, now
		if diff := cmp.Diff(&want, after); diff != "" {
			t.Errorf("after (-want +got):\n%s", diff)
		}
		if got, _ := db.GetClient(ctx, c.ID); !cmp.Equal(&want, got) {
			t.Errorf("stored = %+v", got)
		}
		// The new name is searched and sorted in any letter case.
		got, total, err := db.ListClients(ctx, metadb.ClientFilter{Name: "FRONT"})
		if err != nil || total != 1 || got[0].ID != c.ID {
			t.Errorf("list by new name = %v, %d, %v", got, total, err)
		}
		if got, _, _ := db.ListClients(ctx, metadb.ClientFilter{OwnerID: bob.ID}); len(got) != 1 || got[0].ID != c.ID {
			t.Errorf("list by new owner = %v", got)
		}

		// Names may repeat; nil fields stay; "" clears the owner.
		dup := "db"
		if _, after, err = db.UpdateClient(ctx, c.ID, metadb.ClientUpdate{Name: &dup}); err != nil || after.OwnerID != bob.ID {
			t.Fatalf("rename to a taken name: %+v, %v", after, err)
		}
		none := ""
		if _, after, err = db.UpdateClient(ctx, c.ID, metadb.ClientUpdate{OwnerID: &none}); err != nil || after.OwnerID != "" || after.Name != "db" {
			t.Fatalf("clear owner: %+v, %v", after, err)
		}

		ghost := "01NOSUCHUSER"
		_, _, err = db.UpdateClient(ctx, c.ID, metadb.ClientUpdate{OwnerID: &ghost})
		wantCode(t, err, "user_not_found")
		_, _, err = db.UpdateClient(ctx, "nope", metadb.ClientUpdate{Name: &name})
		wantCode(t, err, "client_not_found")
	})
}

// logLine is a line of client at time at.
func logLine(client string, at time.Time, level coffer.LogLevel, msg string) coffer.ClientLog {
	return coffer.ClientLog{ClientID: client, Level: level, Message: msg, Time: at}
}

func messages(ls []coffer.ClientLog) []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = l.Message
	}
	return out
}

func TestClientLogs(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		clock := newJobClock(db)
		alice := newUser(t, db, "alice", coffer.RoleOperator)
		web := enrollTestClient(t, db, alice.ID, "web")
		other := enrollTestClient(t, db, alice.ID, "other")
		t0 := clock.Now().Add(-time.Hour).Truncate(time.Microsecond)

		lines := []coffer.ClientLog{
			logLine(web.ID, t0, coffer.LogDebug, "d0"),
			logLine(web.ID, t0.Add(time.Second), coffer.LogInfo, "i1"),
			logLine(web.ID, t0.Add(time.Second), coffer.LogWarn, "w2"), // same instant: listed after i1 was logged
			logLine(web.ID, t0.Add(2*time.Second), coffer.LogError, "e3"),
			logLine(other.ID, t0.Add(3*time.Second), coffer.LogError, "other"),
		}
		lines[1].BackupID = "b1"
		lines[2].BackupID = "b1"
		lines[2].Attrs = map[string]string{"path": "/etc/shadow", "err": "permission denied"}
		lines[3].RestoreID = "r1"
		if err := db.InsertClientLogs(ctx, lines); err != nil {
			t.Fatal(err)
		}
		for _, l := range lines {
			if l.ID == "" || !l.ReceivedAt.Equal(stored(clock.Now())) {
				t.Fatalf("inserted line = %+v", l)
			}
		}

		all, err := db.ListClientLogs(ctx, metadb.ClientLogFilter{ClientID: web.ID})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"e3", "w2", "i1", "d0"}, messages(all)); diff != "" {
			t.Errorf("newest first (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(lines[2], all[1]); diff != "" {
			t.Errorf("stored line (-want +got):\n%s", diff)
		}

		warn := coffer.LogWarn
		for name, tc := range map[string]struct {
			f    metadb.ClientLogFilter
			want []string
		}{
			"level":   {metadb.ClientLogFilter{MinLevel: &warn}, []string{"e3", "w2"}},
			"backup":  {metadb.ClientLogFilter{BackupID: "b1"}, []string{"w2", "i1"}},
			"restore": {metadb.ClientLogFilter{RestoreID: "r1"}, []string{"e3"}},
			"since":   {metadb.ClientLogFilter{Since: t0.Add(time.Second)}, []string{"e3", "w2", "i1"}},
			"until":   {metadb.ClientLogFilter{Until: t0.Add(time.Second)}, []string{"d0"}},
			"limit":   {metadb.ClientLogFilter{Limit: 2}, []string{"e3", "w2"}},
			"after": {metadb.ClientLogFilter{After: &metadb.Keyset{CreatedAt: all[1].Time, ID: all[1].ID}},
				[]string{"i1", "d0"}},
		} {
			tc.f.ClientID = web.ID
			got, err := db.ListClientLogs(ctx, tc.f)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if diff := cmp.Diff(tc.want, messages(got)); diff != "" {
				t.Errorf("%s (-want +got):\n%s", name, diff)
			}
		}

		// A line of a client that does not exist: nothing of the batch is stored.
		err = db.InsertClientLogs(ctx, []coffer.ClientLog{logLine("01NOSUCHCLIENT", t0, coffer.LogInfo, "ghost")})
		wantCode(t, err, "client_not_found")

		// Retention counts from when the server received the lines.
		clock.Add(time.Hour)
		late := []coffer.ClientLog{logLine(web.ID, t0.Add(-24*time.Hour), coffer.LogInfo, "late")}
		if err := db.InsertClientLogs(ctx, late); err != nil {
			t.Fatal(err)
		}
		n, err := db.DeleteClientLogsBefore(ctx, clock.Now().Add(-time.Minute))
		if err != nil || n != 5 {
			t.Fatalf("DeleteClientLogsBefore = %d, %v; want 5", n, err)
		}
		got, _ := db.ListClientLogs(ctx, metadb.ClientLogFilter{ClientID: web.ID})
		if diff := cmp.Diff([]string{"late"}, messages(got)); diff != "" {
			t.Errorf("after retention (-want +got):\n%s", diff)
		}

		// A client's lines go with it.
		if _, err := db.DeleteClient(ctx, web.ID); err != nil {
			t.Fatal(err)
		}
		var left int
		if err := db.SQL().QueryRowContext(ctx, `SELECT COUNT(*) FROM client_logs`).Scan(&left); err != nil || left != 0 {
			t.Errorf("lines left after deleting the client: %d, %v", left, err)
		}
	})
}

func TestTrimClientLogs(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		clock := newJobClock(db)
		alice := newUser(t, db, "alice", coffer.RoleOperator)
		big := enrollTestClient(t, db, alice.ID, "big")
		small := enrollTestClient(t, db, alice.ID, "small")
		t0 := clock.Now()
		var lines []coffer.ClientLog
		for i := range 10 {
			// Two lines share each instant, so the cap cuts between equal times.
			lines = append(lines, logLine(big.ID, t0.Add(time.Duration(i/2)*time.Second), coffer.LogInfo, fmt.Sprint(i)))
		}
		lines = append(lines, logLine(small.ID, t0, coffer.LogInfo, "s0"), logLine(small.ID, t0, coffer.LogInfo, "s1"))
		if err := db.InsertClientLogs(ctx, lines); err != nil {
			t.Fatal(err)
		}
		n, err := db.TrimClientLogs(ctx, 3)
		if err != nil || n != 7 {
			t.Fatalf("TrimClientLogs = %d, %v; want 7", n, err)
		}
		got, _ := db.ListClientLogs(ctx, metadb.ClientLogFilter{ClientID: big.ID})
		if diff := cmp.Diff([]string{"9", "8", "7"}, messages(got)); diff != "" {
			t.Errorf("kept (-want +got):\n%s", diff)
		}
		got, _ = db.ListClientLogs(ctx, metadb.ClientLogFilter{ClientID: small.ID})
		if len(got) != 2 {
			t.Errorf("a client under the cap lost lines: %v", messages(got))
		}
		if n, err := db.TrimClientLogs(ctx, 3); err != nil || n != 0 {
			t.Errorf("second trim = %d, %v", n, err)
		}
	})
}
