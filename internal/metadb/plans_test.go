package metadb_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/google/go-cmp/cmp"
)

// fullPlan returns a plan with every field set.
func fullPlan(name, createdBy string) *coffer.Plan {
	start := time.Date(2026, 4, 1, 2, 3, 4, 567891234, time.FixedZone("CEST", 2*3600))
	return &coffer.Plan{
		Name: name, Group: "servers", ClientID: "client-1", RepositoryID: "repo-1",
		Schedule: "0 30 2 * * *", Timezone: "Europe/Berlin", StartAt: &start,
		Include: []string{"/etc", "/home"}, Exclude: []string{"*.tmp", "node_modules/"},
		PreCommands: []string{"pg_dump -f /var/backups/db.sql"}, PostCommands: []string{"rm /var/backups/db.sql"},
		CommandTimeout: 90 * time.Second,
		Retention: coffer.Retention{KeepLast: 3, KeepHourly: 24, KeepDaily: 7, KeepWeekly: 4, KeepMonthly: 12,
			KeepYearly: 5, KeepWithin: 36*time.Hour + 1, HoldDays: 30},
		Compression: "better", FullEvery: 10, OneFileSystem: true, Enabled: true, CreatedBy: createdBy,
	}
}

func createPlan(t *testing.T, db *metadb.DB, p *coffer.Plan) *coffer.Plan {
	t.Helper()
	if err := db.CreatePlan(context.Background(), p); err != nil {
		t.Fatalf("create plan %q: %v", p.Name, err)
	}
	return p
}

func TestPlanRoundTrip(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		clock := newJobClock(db)
		alice := newUser(t, db, "alice", coffer.RoleAdmin)
		now := clock.Add(time.Minute)

		p := fullPlan("Nightly", alice.ID)
		start := *p.StartAt
		want := *p
		wantStart := stored(start)
		want.StartAt = &wantStart
		if err := db.CreatePlan(ctx, p); err != nil {
			t.Fatal(err)
		}
		if p.ID == "" {
			t.Fatal("CreatePlan assigned no id")
		}
		want.ID, want.CreatedAt, want.UpdatedAt = p.ID, now, now
		if diff := cmp.Diff(&want, p); diff != "" {
			t.Errorf("created plan (-want +got):\n%s", diff)
		}
		got, err := db.GetPlan(ctx, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(&want, got); diff != "" {
			t.Errorf("GetPlan (-want +got):\n%s", diff)
		}
		if got.StartAt.Location() != time.UTC || got.CreatedAt.Location() != time.UTC {
			t.Errorf("times not in UTC: %v, %v", got.StartAt, got.CreatedAt)
		}

		// Both bounds set, then neither; nil lists come back empty.
		end := start.Add(90 * 24 * time.Hour)
		q := &coffer.Plan{Name: "bare", ClientID: "client-2", StartAt: &start, EndAt: &end}
		createPlan(t, db, q)
		got, err = db.GetPlan(ctx, q.ID)
		if err != nil {
			t.Fatal(err)
		}
		wantEnd := stored(end)
		wantBare := &coffer.Plan{ID: q.ID, Name: "bare", ClientID: "client-2", StartAt: &wantStart, EndAt: &wantEnd,
			Include: []string{}, Exclude: []string{}, PreCommands: []string{}, PostCommands: []string{},
			CreatedAt: now, UpdatedAt: now}
		if diff := cmp.Diff(wantBare, got); diff != "" {
			t.Errorf("bare plan (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(wantBare, q); diff != "" {
			t.Errorf("bare plan as created (-want +got):\n%s", diff)
		}
		for _, l := range [][]string{got.Include, got.Exclude, got.PreCommands, got.PostCommands} {
			if l == nil {
				t.Error("an empty list came back nil")
			}
		}

		r := createPlan(t, db, &coffer.Plan{Name: "open", ClientID: "client-2", Include: []string{}})
		got, err = db.GetPlan(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.StartAt != nil || got.EndAt != nil || got.Include == nil || len(got.Include) != 0 {
			t.Errorf("open plan: start %v, end %v, include %#v", got.StartAt, got.EndAt, got.Include)
		}

		_, err = db.GetPlan(ctx, "nope")
		wantCode(t, err, "plan_not_found")
		if !coffer.IsKind(err, coffer.KindNotFound) {
			t.Errorf("GetPlan of a missing plan: kind %q", coffer.ErrorKind(err))
		}

		err = db.CreatePlan(ctx, &coffer.Plan{Name: "ghost", ClientID: "c", CreatedBy: "no-such-user"})
		wantCode(t, err, "user_not_found")
	})
}

func TestPlanNameUnique(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		newJobClock(db)
		nightly := createPlan(t, db, &coffer.Plan{Name: "Nightly", ClientID: "c1"})
		weekly := createPlan(t, db, &coffer.Plan{Name: "weekly", ClientID: "c1"})

		err := db.CreatePlan(ctx, &coffer.Plan{Name: "NIGHTLY", ClientID: "c2"})
		wantCode(t, err, "plan_name_taken")
		if !coffer.IsKind(err, coffer.KindConflict) || !strings.Contains(err.Error(), `"NIGHTLY"`) {
			t.Errorf("duplicate name: kind %q, message %q", coffer.ErrorKind(err), err)
		}

		// Renaming onto another plan's name, in any case, is refused and
		// changes nothing.
		clash := *weekly
		clash.Name, clash.Group = "nightLY", "changed"
		err = db.UpdatePlan(ctx, &clash)
		wantCode(t, err, "plan_name_taken")
		if !coffer.IsKind(err, coffer.KindConflict) || !strings.Contains(err.Error(), `"nightLY"`) {
			t.Errorf("rename clash: kind %q, message %q", coffer.ErrorKind(err), err)
		}
		if got, err := db.GetPlan(ctx, weekly.ID); err != nil || got.Name != "weekly" || got.Group != "" {
			t.Errorf("after a refused rename: %+v, %v", got, err)
		}

		// A plan may change the case of its own name.
		own := *nightly
		own.Name = "NIGHTLY"
		if err := db.UpdatePlan(ctx, &own); err != nil {
			t.Fatalf("recase own name: %v", err)
		}
		// The old name is free once renamed away.
		own.Name = "daily"
		if err := db.UpdatePlan(ctx, &own); err != nil {
			t.Fatal(err)
		}
		createPlan(t, db, &coffer.Plan{Name: "Nightly", ClientID: "c3"})
	})
}

func TestListPlans(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		newJobClock(db)
		mk := func(name, client, group string, enabled bool) *coffer.Plan {
			return createPlan(t, db, &coffer.Plan{Name: name, ClientID: client, Group: group, Enabled: enabled})
		}
		// Created out of name order; listed by name in any case, then id.
		d := mk("delta", "c2", "", true)
		b := mk("Bravo_1", "c1", "web", false)
		a := mk("alpha", "c1", "web", true)
		e := mk("echo 100%", "c3", "db", true)
		c := mk("CHARLIE", "c2", "db", false)
		b2 := mk("bravoz1", "c1", "", true)

		names := func(ps []coffer.Plan) []string {
			out := []string{}
			for _, p := range ps {
				out = append(out, p.Name)
			}
			return out
		}
		yes, no := true, false
		for _, tc := range []struct {
			name  string
			f     metadb.PlanFilter
			want  []*coffer.Plan
			total int
		}{
			{"all", metadb.PlanFilter{}, []*coffer.Plan{a, b, b2, c, d, e}, 6},
			{"client", metadb.PlanFilter{ClientID: "c1"}, []*coffer.Plan{a, b, b2}, 3},
			{"group", metadb.PlanFilter{Group: "db"}, []*coffer.Plan{c, e}, 2},
			{"enabled", metadb.PlanFilter{Enabled: &yes}, []*coffer.Plan{a, b2, d, e}, 4},
			{"disabled", metadb.PlanFilter{Enabled: &no}, []*coffer.Plan{b, c}, 2},
			{"name any case", metadb.PlanFilter{Name: "BRAVO"}, []*coffer.Plan{b, b2}, 2},
			{"name underscore literal", metadb.PlanFilter{Name: "o_1"}, []*coffer.Plan{b}, 1},
			{"name percent literal", metadb.PlanFilter{Name: "0%"}, []*coffer.Plan{e}, 1},
			{"name percent alone", metadb.PlanFilter{Name: "%"}, []*coffer.Plan{e}, 1},
			{"combined", metadb.PlanFilter{ClientID: "c1", Group: "web", Enabled: &yes}, []*coffer.Plan{a}, 1},
			{"no match", metadb.PlanFilter{ClientID: "c9"}, nil, 0},
			{"first page", metadb.PlanFilter{Limit: 2}, []*coffer.Plan{a, b}, 6},
			{"second page", metadb.PlanFilter{Limit: 2, Offset: 2}, []*coffer.Plan{b2, c}, 6},
			{"offset only", metadb.PlanFilter{Offset: 4}, []*coffer.Plan{d, e}, 6},
			{"past the end", metadb.PlanFilter{Limit: 2, Offset: 6}, nil, 6},
			{"filtered page", metadb.PlanFilter{ClientID: "c1", Limit: 1, Offset: 1}, []*coffer.Plan{b}, 3},
		} {
			got, total, err := db.ListPlans(ctx, tc.f)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			want := []coffer.Plan{}
			for _, p := range tc.want {
				want = append(want, *p)
			}
			if diff := cmp.Diff(names(want), names(got)); diff != "" {
				t.Errorf("%s: names (-want +got):\n%s", tc.name, diff)
			} else if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("%s: plans (-want +got):\n%s", tc.name, diff)
			}
			if total != tc.total {
				t.Errorf("%s: total = %d, want %d", tc.name, total, tc.total)
			}
		}
	})
}

func TestUpdatePlan(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		clock := newJobClock(db)
		alice := newUser(t, db, "alice", coffer.RoleAdmin)
		bob := newUser(t, db, "bob", coffer.RoleAdmin)
		created := clock.Add(time.Minute)
		p := createPlan(t, db, fullPlan("Nightly", alice.ID))

		updated := clock.Add(time.Hour)
		end := time.Date(2027, 1, 1, 0, 0, 0, 999, time.UTC)
		edit := &coffer.Plan{
			ID: p.ID, Name: "Hourly", Group: "", ClientID: "client-9", RepositoryID: "repo-9",
			Schedule: "@hourly", Timezone: "", StartAt: nil, EndAt: &end,
			Include: []string{"/srv"}, Exclude: nil, PreCommands: []string{}, PostCommands: []string{"sync"},
			Retention: coffer.Retention{KeepDaily: 1}, Compression: "off", FullEvery: 0,
			OneFileSystem: false, Enabled: false,
			// Not editable: ignored.
			CreatedBy: bob.ID, CreatedAt: time.Unix(0, 0),
		}
		if err := db.UpdatePlan(ctx, edit); err != nil {
			t.Fatal(err)
		}
		wantEnd := stored(end)
		want := &coffer.Plan{
			ID: p.ID, Name: "Hourly", ClientID: "client-9", RepositoryID: "repo-9", Schedule: "@hourly",
			EndAt: &wantEnd, Include: []string{"/srv"}, Exclude: []string{}, PreCommands: []string{},
			PostCommands: []string{"sync"}, Retention: coffer.Retention{KeepDaily: 1}, Compression: "off",
			CreatedBy: alice.ID, CreatedAt: created, UpdatedAt: updated,
		}
		if diff := cmp.Diff(want, edit); diff != "" {
			t.Errorf("updated plan as returned (-want +got):\n%s", diff)
		}
		got, err := db.GetPlan(ctx, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("GetPlan after update (-want +got):\n%s", diff)
		}

		missing := fullPlan("whatever", "")
		missing.ID = "no-such-plan"
		err = db.UpdatePlan(ctx, missing)
		wantCode(t, err, "plan_not_found")
		if !coffer.IsKind(err, coffer.KindNotFound) {
			t.Errorf("update of a missing plan: kind %q", coffer.ErrorKind(err))
		}
		if _, total, _ := db.ListPlans(ctx, metadb.PlanFilter{}); total != 1 {
			t.Errorf("update of a missing plan created one: %d plans", total)
		}
	})
}

func TestDeletePlan(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		newJobClock(db)
		alice := newUser(t, db, "alice", coffer.RoleAdmin)
		p := createPlan(t, db, fullPlan("Nightly", alice.ID))
		other := createPlan(t, db, &coffer.Plan{Name: "other", ClientID: "c"})

		deleted, err := db.DeletePlan(ctx, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(p, deleted); diff != "" {
			t.Errorf("deleted plan (-want +got):\n%s", diff)
		}
		_, err = db.GetPlan(ctx, p.ID)
		wantCode(t, err, "plan_not_found")
		_, err = db.DeletePlan(ctx, p.ID)
		wantCode(t, err, "plan_not_found")
		if _, err := db.GetPlan(ctx, other.ID); err != nil {
			t.Errorf("the other plan: %v", err)
		}
		// The name is free again.
		createPlan(t, db, &coffer.Plan{Name: "NIGHTLY", ClientID: "c"})
	})
}

func TestPlanOutlivesCreatorAndClient(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		newJobClock(db)
		newUser(t, db, "root", coffer.RoleAdmin)
		bob := newUser(t, db, "bob", coffer.RoleOperator)
		client := enrollTestClient(t, db, bob.ID, "web1")
		p := fullPlan("Nightly", bob.ID)
		p.ClientID = client.ID
		createPlan(t, db, p)

		if _, err := db.DeleteUser(ctx, bob.ID); err != nil {
			t.Fatal(err)
		}
		got, err := db.GetPlan(ctx, p.ID)
		if err != nil {
			t.Fatalf("plan after its creator was deleted: %v", err)
		}
		want := *p
		want.CreatedBy = ""
		if diff := cmp.Diff(&want, got); diff != "" {
			t.Errorf("plan after its creator was deleted (-want +got):\n%s", diff)
		}

		// Deleting the client does not delete its plans silently.
		if _, err := db.DeleteClient(ctx, client.ID); err != nil {
			t.Fatal(err)
		}
		got, err = db.GetPlan(ctx, p.ID)
		if err != nil || got.ClientID != client.ID {
			t.Fatalf("plan after its client was deleted: %+v, %v", got, err)
		}
	})
}
