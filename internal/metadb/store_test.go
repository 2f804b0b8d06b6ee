package metadb_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/google/go-cmp/cmp"
)

func newUser(t *testing.T, db *metadb.DB, name string, role coffer.Role) *coffer.User {
	t.Helper()
	u := &coffer.User{Username: name, Role: role, PasswordHash: "$argon2id$test"}
	if err := db.CreateUser(context.Background(), u); err != nil {
		t.Fatalf("create user %s: %v", name, err)
	}
	return u
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if got := coffer.ErrorCode(err); got != code {
		t.Fatalf("error = %v (code %q), want code %q", err, got, code)
	}
}

func TestUsers(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		fixed := time.Date(2026, 11, 23, 10, 0, 0, 123456789, time.UTC)
		db.Now = func() time.Time { return fixed }

		alice := newUser(t, db, "Alice", coffer.RoleAdmin)
		got, err := db.GetUser(ctx, alice.ID)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(alice, got); diff != "" {
			t.Errorf("GetUser differs from what was created (-want +got):\n%s", diff)
		}
		if !got.CreatedAt.Equal(fixed.Truncate(time.Microsecond)) || got.CreatedAt.Location() != time.UTC {
			t.Errorf("created_at = %v, want %v in UTC", got.CreatedAt, fixed.Truncate(time.Microsecond))
		}

		byName, err := db.GetUserByUsername(ctx, "aLiCe")
		if err != nil || byName.ID != alice.ID {
			t.Fatalf("GetUserByUsername is not case-insensitive: %v, %v", byName, err)
		}
		err = db.CreateUser(ctx, &coffer.User{Username: "ALICE", Role: coffer.RoleViewer, PasswordHash: "x"})
		wantCode(t, err, "username_taken")

		_, err = db.GetUser(ctx, "nope")
		wantCode(t, err, "user_not_found")

		for _, n := range []string{"carol", "bob", "dave"} {
			newUser(t, db, n, coffer.RoleViewer)
		}
		users, total, err := db.ListUsers(ctx, metadb.UserFilter{Limit: 2, Offset: 1})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, u := range users {
			names = append(names, u.Username)
		}
		if total != 4 || !cmp.Equal(names, []string{"bob", "carol"}) {
			t.Errorf("ListUsers page = %v of %d, want [bob carol] of 4", names, total)
		}
		_, total, _ = db.ListUsers(ctx, metadb.UserFilter{Role: coffer.RoleAdmin, Limit: 10})
		if total != 1 {
			t.Errorf("admins = %d, want 1", total)
		}

		role := coffer.RoleOperator
		bob, _ := db.GetUserByUsername(ctx, "bob")
		upd, err := db.UpdateUser(ctx, bob.ID, metadb.UserUpdate{Role: &role})
		if err != nil || upd.Role != coffer.RoleOperator {
			t.Fatalf("promote bob: %v %v", upd, err)
		}
		taken := "carol"
		_, err = db.UpdateUser(ctx, bob.ID, metadb.UserUpdate{Username: &taken})
		wantCode(t, err, "username_taken")

		if err := db.RecordLogin(ctx, bob.ID); err != nil {
			t.Fatal(err)
		}
		bob, _ = db.GetUser(ctx, bob.ID)
		if bob.LastLoginAt == nil {
			t.Error("last_login_at not recorded")
		}

		deleted, err := db.DeleteUser(ctx, bob.ID)
		if err != nil || deleted.Username != "bob" {
			t.Fatalf("delete bob: %v %v", deleted, err)
		}
		_, err = db.DeleteUser(ctx, bob.ID)
		wantCode(t, err, "user_not_found")
	})
}

func TestLastAdminIsProtected(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		root := newUser(t, db, "root", coffer.RoleAdmin)
		viewer := coffer.RoleViewer
		yes := true

		_, err := db.UpdateUser(ctx, root.ID, metadb.UserUpdate{Role: &viewer})
		wantCode(t, err, "last_admin")
		_, err = db.UpdateUser(ctx, root.ID, metadb.UserUpdate{Disabled: &yes})
		wantCode(t, err, "last_admin")
		_, err = db.DeleteUser(ctx, root.ID)
		wantCode(t, err, "last_admin")

		// A disabled admin does not count as the remaining one.
		other := newUser(t, db, "other", coffer.RoleAdmin)
		if _, err := db.UpdateUser(ctx, other.ID, metadb.UserUpdate{Disabled: &yes}); err != nil {
			t.Fatal(err)
		}
		_, err = db.DeleteUser(ctx, root.ID)
		wantCode(t, err, "last_admin")
	})
}

// Two admins demote each other at the same moment: exactly one may win.
func TestLastAdminUnderConcurrency(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		for round := range 10 {
			a := newUser(t, db, fmt.Sprintf("a%d", round), coffer.RoleAdmin)
			b := newUser(t, db, fmt.Sprintf("b%d", round), coffer.RoleAdmin)
			if round > 0 {
				// Only a and b are admins in this round.
				admins, _, _ := db.ListUsers(ctx, metadb.UserFilter{Role: coffer.RoleAdmin, Limit: 100})
				viewer := coffer.RoleViewer
				for _, u := range admins {
					if u.ID != a.ID && u.ID != b.ID {
						if _, err := db.UpdateUser(ctx, u.ID, metadb.UserUpdate{Role: &viewer}); err != nil {
							t.Fatal(err)
						}
					}
				}
			}
			var wg sync.WaitGroup
			errs := make([]error, 2)
			for i, id := range []string{a.ID, b.ID} {
				wg.Go(func() {
					viewer := coffer.RoleViewer
					_, errs[i] = db.UpdateUser(ctx, id, metadb.UserUpdate{Role: &viewer})
				})
			}
			wg.Wait()
			var ok, refused int
			for _, err := range errs {
				switch {
				case err == nil:
					ok++
				case coffer.ErrorCode(err) == "last_admin":
					refused++
				default:
					t.Fatalf("round %d: unexpected error %v", round, err)
				}
			}
			if ok != 1 || refused != 1 {
				t.Fatalf("round %d: %d demotions succeeded and %d were refused, want 1 and 1", round, ok, refused)
			}
		}
	})
}

func TestSessions(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		u := newUser(t, db, "sam", coffer.RoleOperator)
		other := newUser(t, db, "admin", coffer.RoleAdmin)
		exp := time.Now().Add(time.Hour)
		s1 := &coffer.Session{UserID: u.ID, TokenHash: "h1", ExpiresAt: exp, UserAgent: "curl", RemoteIP: "127.0.0.1"}
		s2 := &coffer.Session{UserID: u.ID, TokenHash: "h2", ExpiresAt: exp}
		for _, s := range []*coffer.Session{s1, s2} {
			if err := db.CreateSession(ctx, s); err != nil {
				t.Fatal(err)
			}
		}
		err := db.CreateSession(ctx, &coffer.Session{UserID: "ghost", TokenHash: "h3", ExpiresAt: exp})
		wantCode(t, err, "user_not_found")

		s, su, err := db.SessionByTokenHash(ctx, "h1")
		if err != nil {
			t.Fatal(err)
		}
		if s.ID != s1.ID || su.Username != "sam" || s.UserAgent != "curl" || !s.ExpiresAt.Equal(exp.Truncate(time.Microsecond)) {
			t.Errorf("SessionByTokenHash = %+v, %+v", s, su)
		}
		_, _, err = db.SessionByTokenHash(ctx, "nope")
		wantCode(t, err, "session_not_found")

		n, err := db.DeleteUserSessions(ctx, u.ID, s1.ID)
		if err != nil || n != 1 {
			t.Fatalf("DeleteUserSessions = %d, %v; want 1", n, err)
		}
		if _, _, err := db.SessionByTokenHash(ctx, "h1"); err != nil {
			t.Errorf("kept session was deleted: %v", err)
		}

		// Disabling a user ends their sessions.
		yes := true
		if _, err := db.UpdateUser(ctx, u.ID, metadb.UserUpdate{Disabled: &yes}); err != nil {
			t.Fatal(err)
		}
		_, _, err = db.SessionByTokenHash(ctx, "h1")
		wantCode(t, err, "session_not_found")

		old := &coffer.Session{UserID: other.ID, TokenHash: "old", ExpiresAt: time.Now().Add(-time.Minute)}
		if err := db.CreateSession(ctx, old); err != nil {
			t.Fatal(err)
		}
		n, err = db.DeleteExpiredSessions(ctx, time.Now())
		if err != nil || n != 1 {
			t.Errorf("DeleteExpiredSessions = %d, %v; want 1", n, err)
		}
	})
}

func TestAPITokens(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		u := newUser(t, db, "ops", coffer.RoleOperator)
		v := newUser(t, db, "view", coffer.RoleViewer)
		exp := time.Now().Add(24 * time.Hour)
		tok := &coffer.APIToken{UserID: u.ID, Name: "ci", Prefix: "cfr_t_abcd", TokenHash: "th1",
			Scopes: []coffer.Permission{coffer.PermRead}, ExpiresAt: &exp}
		if err := db.CreateAPIToken(ctx, tok); err != nil {
			t.Fatal(err)
		}
		dup := &coffer.APIToken{UserID: u.ID, Name: "ci", Prefix: "p", TokenHash: "th2"}
		wantCode(t, db.CreateAPIToken(ctx, dup), "token_name_taken")
		// Another user may reuse the name.
		if err := db.CreateAPIToken(ctx, &coffer.APIToken{UserID: v.ID, Name: "ci", Prefix: "p", TokenHash: "th3",
			Scopes: []coffer.Permission{coffer.PermRead}}); err != nil {
			t.Fatal(err)
		}

		got, owner, err := db.APITokenByHash(ctx, "th1")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tok, got); diff != "" || owner.ID != u.ID {
			t.Errorf("APITokenByHash (-want +got):\n%s owner=%s", diff, owner.Username)
		}
		if err := db.TouchAPIToken(ctx, tok.ID); err != nil {
			t.Fatal(err)
		}
		got, _ = db.GetAPIToken(ctx, tok.ID)
		if got.LastUsedAt == nil {
			t.Error("last_used_at not recorded")
		}

		mine, _ := db.ListAPITokens(ctx, u.ID)
		all, _ := db.ListAPITokens(ctx, "")
		if len(mine) != 1 || len(all) != 2 {
			t.Errorf("ListAPITokens: mine=%d all=%d, want 1 and 2", len(mine), len(all))
		}
		if err := db.DeleteAPIToken(ctx, tok.ID); err != nil {
			t.Fatal(err)
		}
		wantCode(t, db.DeleteAPIToken(ctx, tok.ID), "token_not_found")
		_, _, err = db.APITokenByHash(ctx, "th1")
		wantCode(t, err, "token_not_found")

		// Deleting the user revokes their tokens.
		if _, err := db.DeleteUser(ctx, v.ID); err != nil {
			t.Fatal(err)
		}
		_, _, err = db.APITokenByHash(ctx, "th3")
		wantCode(t, err, "token_not_found")
	})
}

func TestEvents(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		mk := func(i int, level coffer.Level, audience coffer.Role, userID string) *coffer.Event {
			e := &coffer.Event{Level: level, Code: fmt.Sprintf("test.%d", i), Title: "t", Audience: audience,
				UserID: userID, CreatedAt: base.Add(time.Duration(i) * time.Hour),
				Resource: coffer.ResourceRef{Type: "user", ID: []string{"u1", "u2"}[i%2]}, Actor: "system"}
			if err := db.InsertEvent(ctx, e); err != nil {
				t.Fatal(err)
			}
			return e
		}
		var evs []*coffer.Event
		evs = append(evs, mk(0, coffer.LevelInfo, coffer.RoleViewer, ""))
		evs = append(evs, mk(1, coffer.LevelSuccess+1, coffer.RoleViewer, ""))
		evs = append(evs, mk(2, coffer.LevelWarning, coffer.RoleAdmin, ""))
		evs = append(evs, mk(3, coffer.LevelError+3, coffer.RoleAdmin, "u9"))
		evs = append(evs, mk(4, coffer.LevelInfo, coffer.RoleOperator, ""))
		for i := 1; i < len(evs); i++ {
			if evs[i].ID <= evs[i-1].ID {
				t.Fatalf("ids not increasing: %d then %d", evs[i-1].ID, evs[i].ID)
			}
		}
		ids := func(q metadb.EventQuery) []int64 {
			t.Helper()
			if q.Limit == 0 {
				q.Limit = 100
			}
			got, err := db.ListEvents(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			var out []int64
			for _, e := range got {
				out = append(out, e.ID)
			}
			return out
		}
		id := func(is ...int) []int64 {
			var out []int64
			for _, i := range is {
				out = append(out, evs[i].ID)
			}
			return out
		}
		since, until := base.Add(time.Hour), base.Add(3*time.Hour)
		cases := []struct {
			name string
			q    metadb.EventQuery
			want []int64
		}{
			{"all", metadb.EventQuery{}, id(0, 1, 2, 3, 4)},
			{"after", metadb.EventQuery{AfterID: evs[1].ID}, id(2, 3, 4)},
			{"desc before", metadb.EventQuery{BeforeID: evs[3].ID, Descending: true}, id(2, 1, 0)},
			{"limit", metadb.EventQuery{Limit: 2}, id(0, 1)},
			{"classes", metadb.EventQuery{Classes: []coffer.Level{coffer.LevelSuccess, coffer.LevelError}}, id(1, 3)},
			{"time range", metadb.EventQuery{Since: &since, Until: &until}, id(1, 2)},
			{"viewer", metadb.EventQuery{Audiences: []coffer.Role{coffer.RoleViewer}, UserID: "u0"}, id(0, 1)},
			{"viewer it concerns", metadb.EventQuery{Audiences: []coffer.Role{coffer.RoleViewer}, UserID: "u9"}, id(0, 1, 3)},
			{"operator", metadb.EventQuery{Audiences: []coffer.Role{coffer.RoleViewer, coffer.RoleOperator}}, id(0, 1, 4)},
			{"resource", metadb.EventQuery{Resource: coffer.ResourceRef{Type: "user", ID: "u2"}}, id(1, 3)},
			{"resource newest first", metadb.EventQuery{Resource: coffer.ResourceRef{Type: "user", ID: "u1"}, Descending: true}, id(4, 2, 0)},
			{"another resource type", metadb.EventQuery{Resource: coffer.ResourceRef{Type: "client", ID: "u1"}}, nil},
		}
		for _, c := range cases {
			if got := ids(c.q); !cmp.Equal(got, c.want) {
				t.Errorf("%s: ids = %v, want %v", c.name, got, c.want)
			}
		}
		full, _ := db.ListEvents(ctx, metadb.EventQuery{AfterID: evs[2].ID, Limit: 1})
		if diff := cmp.Diff(*evs[3], full[0]); diff != "" {
			t.Errorf("stored event differs (-want +got):\n%s", diff)
		}
		last, err := db.LastEventID(ctx)
		if err != nil || last != evs[4].ID {
			t.Errorf("LastEventID = %d, %v; want %d", last, err, evs[4].ID)
		}
		n, err := db.DeleteEventsBefore(ctx, base.Add(2*time.Hour))
		if err != nil || n != 2 {
			t.Errorf("DeleteEventsBefore = %d, %v; want 2", n, err)
		}
	})
}

// Concurrent inserts must commit in id order, so a reader polling "after the
// last id I saw" never misses an event.
func TestEventIDsCommitInOrder(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		const writers, each = 4, 25
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				for i := range each {
					e := &coffer.Event{Code: fmt.Sprintf("w%d.%d", w, i), Title: "t", Audience: coffer.RoleViewer}
					if err := db.InsertEvent(ctx, e); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		seen := map[int64]bool{}
		var last int64
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		poll := func() {
			evs, err := db.ListEvents(ctx, metadb.EventQuery{AfterID: last, Limit: 1000})
			if err != nil {
				t.Error(err)
				return
			}
			for _, e := range evs {
				seen[e.ID] = true
				last = e.ID
			}
		}
		for running := true; running; {
			select {
			case <-done:
				running = false
			default:
			}
			poll()
		}
		poll()
		all, _ := db.ListEvents(ctx, metadb.EventQuery{Limit: 1000})
		if len(all) != writers*each {
			t.Fatalf("stored %d events, want %d", len(all), writers*each)
		}
		for _, e := range all {
			if !seen[e.ID] {
				t.Errorf("poller never saw event %d: it committed after a larger id", e.ID)
			}
		}
	})
}

func TestSchemaGuard(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		s, err := db.Schema(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !s.UpToDate() || s.Latest < 1 {
			t.Fatalf("after Migrate: %+v, want up to date", s)
		}
		// Migrating again is a no-op.
		if err := db.Migrate(ctx, nil); err != nil {
			t.Fatal(err)
		}
		// A schema written by a newer binary is refused.
		if _, err := db.SQL().ExecContext(ctx, `INSERT INTO goose_db_version (version_id, is_applied) VALUES ($1, $2)`, s.Latest+1, true); err != nil {
			t.Fatal(err)
		}
		err = db.Migrate(ctx, nil)
		wantCode(t, err, "schema_too_new")
		var ce *coffer.Error
		if !errors.As(err, &ce) {
			t.Fatalf("want *coffer.Error, got %T", err)
		}
	})
}
