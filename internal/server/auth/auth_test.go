package auth

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"golang.org/x/crypto/argon2"
)

// recorder is a Publisher that keeps what it is given.
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

func (r *recorder) last() coffer.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.events[len(r.events)-1]
}

type fixture struct {
	svc   *Service
	db    *metadb.DB
	rec   *recorder
	clock *clock
	admin *coffer.Principal
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func setup(t *testing.T, db *metadb.DB) *fixture {
	t.Helper()
	f := &fixture{db: db, rec: &recorder{}, clock: &clock{t: time.Now().UTC()}}
	db.Now = f.clock.Now
	f.svc = New(Options{Store: db, Events: f.rec, Now: f.clock.Now})
	if _, _, err := f.svc.Bootstrap(context.Background(), "admin", "admin-password"); err != nil {
		t.Fatal(err)
	}
	f.admin = f.login(t, "admin", "admin-password")
	return f
}

func (f *fixture) login(t *testing.T, user, pw string) *coffer.Principal {
	t.Helper()
	res, err := f.svc.Login(context.Background(), LoginRequest{Username: user, Password: pw, RemoteIP: "10.0.0.1"})
	if err != nil {
		t.Fatalf("login %s: %v", user, err)
	}
	p, err := f.svc.Authenticate(context.Background(), res.Token)
	if err != nil {
		t.Fatalf("authenticate %s: %v", user, err)
	}
	return p
}

func (f *fixture) loginToken(t *testing.T, user, pw string) string {
	t.Helper()
	res, err := f.svc.Login(context.Background(), LoginRequest{Username: user, Password: pw, RemoteIP: "10.0.0.2"})
	if err != nil {
		t.Fatalf("login %s: %v", user, err)
	}
	return res.Token
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if got := coffer.ErrorCode(err); got != code {
		t.Fatalf("error = %v (code %q), want code %q", err, got, code)
	}
}

func TestBootstrap(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		svc := New(Options{Store: db})
		created, generated, err := svc.Bootstrap(ctx, "admin", "")
		if err != nil || !created || len(generated) < 16 {
			t.Fatalf("Bootstrap = %v, %q, %v; want a generated password", created, generated, err)
		}
		if _, err := svc.Login(ctx, LoginRequest{Username: "admin", Password: generated}); err != nil {
			t.Fatalf("login with the generated password: %v", err)
		}
		created, generated, err = svc.Bootstrap(ctx, "admin", "other-password")
		if err != nil || created || generated != "" {
			t.Fatalf("second Bootstrap = %v, %q, %v; want nothing done", created, generated, err)
		}
		u, _ := db.GetUserByUsername(ctx, "admin")
		if u.Role != coffer.RoleAdmin {
			t.Errorf("bootstrap role = %s", u.Role)
		}
	})
}

func TestLoginAndAuthenticate(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		f := setup(t, db)
		if f.admin.Kind != coffer.PrincipalSession || f.admin.Role != coffer.RoleAdmin || !f.admin.Can(coffer.PermManage) {
			t.Fatalf("admin principal = %+v", f.admin)
		}
		tok := f.loginToken(t, "ADMIN", "admin-password") // usernames are case-insensitive
		if !strings.HasPrefix(tok, "cfr_s_") || len(tok) < 40 {
			t.Errorf("session token %q lacks the cfr_s_ prefix or entropy", tok)
		}
		_, err := f.svc.Login(ctx, LoginRequest{Username: "admin", Password: "wrong-password", RemoteIP: "10.0.0.3"})
		wantCode(t, err, "invalid_credentials")
		_, err = f.svc.Login(ctx, LoginRequest{Username: "nobody", Password: "whatever1", RemoteIP: "10.0.0.3"})
		wantCode(t, err, "invalid_credentials")

		_, err = f.svc.Authenticate(ctx, "cfr_s_notarealtoken")
		wantCode(t, err, "invalid_token")
		_, err = f.svc.Authenticate(ctx, "Basic abc")
		wantCode(t, err, "invalid_token")

		// Sessions expire.
		f.clock.Advance(f.svc.SessionTTL() + time.Second)
		_, err = f.svc.Authenticate(ctx, tok)
		wantCode(t, err, "session_expired")
	})
}

func TestLoginThrottle(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		f := setup(t, db)
		attempt := func(user, pw, ip string) error {
			_, err := f.svc.Login(ctx, LoginRequest{Username: user, Password: pw, RemoteIP: ip})
			return err
		}
		for range 5 {
			wantCode(t, attempt("admin", "bad-password", "192.0.2.1"), "invalid_credentials")
		}
		// The 6th attempt is refused before the password is checked, even a right one.
		err := attempt("admin", "admin-password", "192.0.2.99")
		wantCode(t, err, "too_many_login_attempts")
		var ce *coffer.Error
		if !asError(err, &ce) || ce.Meta["retry_after_seconds"].(int) < 1 {
			t.Fatalf("retry_after_seconds missing: %+v", ce)
		}
		// After the wait, one more attempt is allowed.
		f.clock.Advance(time.Duration(ce.Meta["retry_after_seconds"].(int)) * time.Second)
		if err := attempt("admin", "admin-password", "192.0.2.99"); err != nil {
			t.Fatalf("after waiting: %v", err)
		}

		// Per address: many usernames from one address.
		for i := range 20 {
			wantCode(t, attempt("user"+strings.Repeat("x", i), "bad-password", "198.51.100.7"), "invalid_credentials")
		}
		wantCode(t, attempt("someone-new", "bad-password", "198.51.100.7"), "too_many_login_attempts")
		// Another address is unaffected.
		wantCode(t, attempt("someone-new", "bad-password", "198.51.100.8"), "invalid_credentials")

		if !contains(f.rec.codes(), "auth.login_failed") {
			t.Error("no auth.login_failed audit event")
		}
	})
}

func TestDisableAndDelete(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		f := setup(t, db)
		u, err := f.svc.CreateUser(ctx, f.admin, NewUser{Username: "op", Password: "op-password", Role: coffer.RoleOperator})
		if err != nil {
			t.Fatal(err)
		}
		if ev := f.rec.last(); ev.Code != "user.created" || ev.ActorID != f.admin.UserID || ev.Resource.ID != u.ID {
			t.Errorf("audit event = %+v", ev)
		}
		sess := f.loginToken(t, "op", "op-password")
		opP, _ := f.svc.Authenticate(ctx, sess)
		secret, _, err := f.svc.CreateToken(ctx, opP, NewToken{Name: "script"})
		if err != nil {
			t.Fatal(err)
		}
		yes, no := true, false
		if _, err := f.svc.UpdateUser(ctx, f.admin, u.ID, UserChanges{Disabled: &yes}); err != nil {
			t.Fatal(err)
		}
		_, err = f.svc.Authenticate(ctx, sess)
		wantCode(t, err, "invalid_token") // the session was ended
		_, err = f.svc.Authenticate(ctx, secret)
		wantCode(t, err, "account_disabled")
		_, err = f.svc.Login(ctx, LoginRequest{Username: "op", Password: "op-password"})
		wantCode(t, err, "account_disabled")

		if _, err := f.svc.UpdateUser(ctx, f.admin, u.ID, UserChanges{Disabled: &no}); err != nil {
			t.Fatal(err)
		}
		if _, err := f.svc.Authenticate(ctx, secret); err != nil {
			t.Fatalf("token after re-enabling: %v", err)
		}
		if err := f.svc.DeleteUser(ctx, f.admin, u.ID); err != nil {
			t.Fatal(err)
		}
		_, err = f.svc.Authenticate(ctx, secret)
		wantCode(t, err, "invalid_token")

		// Self-protection and the last admin.
		wantCode(t, f.svc.DeleteUser(ctx, f.admin, f.admin.UserID), "cannot_delete_self")
		_, err = f.svc.UpdateUser(ctx, f.admin, f.admin.UserID, UserChanges{Disabled: &yes})
		wantCode(t, err, "cannot_disable_self")
		viewer := coffer.RoleViewer
		_, err = f.svc.UpdateUser(ctx, f.admin, f.admin.UserID, UserChanges{Role: &viewer})
		wantCode(t, err, "cannot_change_own_role")
		a2, _ := f.svc.CreateUser(ctx, f.admin, NewUser{Username: "admin2", Password: "admin2-password", Role: coffer.RoleAdmin})
		a2p := f.login(t, "admin2", "admin2-password")
		if _, err := f.svc.UpdateUser(ctx, a2p, f.admin.UserID, UserChanges{Role: &viewer}); err != nil {
			t.Fatal(err)
		}
		_, err = f.svc.UpdateUser(ctx, f.admin, a2.ID, UserChanges{Role: &viewer}) // f.admin is now a viewer; a2 is last
		wantCode(t, err, "last_admin")
	})
}

func TestValidation(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		f := setup(t, db)
		cases := []struct {
			in   NewUser
			code string
		}{
			{NewUser{Username: "", Password: "long-enough", Role: coffer.RoleViewer}, "invalid_username"},
			{NewUser{Username: "bad name", Password: "long-enough", Role: coffer.RoleViewer}, "invalid_username"},
			{NewUser{Username: "ok", Password: "short", Role: coffer.RoleViewer}, "invalid_password"},
			{NewUser{Username: "ok", Password: "long-enough", Role: "root"}, "invalid_role"},
			{NewUser{Username: "Admin", Password: "long-enough", Role: coffer.RoleViewer}, "username_taken"},
		}
		for _, c := range cases {
			_, err := f.svc.CreateUser(ctx, f.admin, c.in)
			wantCode(t, err, c.code)
		}
	})
}

func TestPasswords(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		f := setup(t, db)
		u, _ := f.svc.CreateUser(ctx, f.admin, NewUser{Username: "vee", Password: "vee-password", Role: coffer.RoleViewer})
		current := f.login(t, "vee", "vee-password")
		other := f.loginToken(t, "vee", "vee-password")

		wantCode(t, f.svc.ChangePassword(ctx, current, u.ID, "", "new-password"), "invalid_old_password")
		wantCode(t, f.svc.ChangePassword(ctx, current, u.ID, "not-it-at-all", "new-password"), "wrong_password")
		wantCode(t, f.svc.ChangePassword(ctx, current, u.ID, "vee-password", "short"), "invalid_password")
		wantCode(t, f.svc.ChangePassword(ctx, current, f.admin.UserID, "", "new-password"), "forbidden")
		if err := f.svc.ChangePassword(ctx, current, u.ID, "vee-password", "new-password"); err != nil {
			t.Fatal(err)
		}
		if _, err := f.svc.Authenticate(ctx, other); coffer.ErrorCode(err) != "invalid_token" {
			t.Errorf("other session survived a password change: %v", err)
		}
		f.login(t, "vee", "new-password")

		// An admin resets without the old password; every session ends.
		if err := f.svc.ChangePassword(ctx, f.admin, u.ID, "", "reset-password"); err != nil {
			t.Fatal(err)
		}
		if ev := f.rec.last(); ev.Code != "user.password_reset" || ev.UserID != u.ID {
			t.Errorf("audit event = %+v", ev)
		}
		_, err := f.svc.Login(ctx, LoginRequest{Username: "vee", Password: "new-password", RemoteIP: "10.9.9.9"})
		wantCode(t, err, "invalid_credentials")
		f.login(t, "vee", "reset-password")
	})
}

func TestHashUpgradeOnLogin(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		f := setup(t, db)
		// A hash made with weaker, older parameters.
		salt := []byte("0123456789abcdef")
		key := argon2.IDKey([]byte("legacy-password"), salt, 1, 8*1024, 1, 32)
		old := "$argon2id$v=19$m=8192,t=1,p=1$" + b64(salt) + "$" + b64(key)
		u := &coffer.User{Username: "legacy", Role: coffer.RoleViewer, PasswordHash: old}
		if err := db.CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
		f.login(t, "legacy", "legacy-password")
		after, _ := db.GetUser(ctx, u.ID)
		if after.PasswordHash == old || !strings.Contains(after.PasswordHash, "m=19456,t=2,p=1") {
			t.Errorf("hash not upgraded: %s", after.PasswordHash)
		}
		f.login(t, "legacy", "legacy-password")
	})
}

func TestAPITokens(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		f := setup(t, db)
		f.svc.CreateUser(ctx, f.admin, NewUser{Username: "op", Password: "op-password", Role: coffer.RoleOperator})
		op := f.login(t, "op", "op-password")

		secret, tok, err := f.svc.CreateToken(ctx, op, NewToken{Name: "  backup script  "})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(secret, "cfr_t_") || tok.Name != "backup script" || !strings.HasPrefix(secret, tok.Prefix) {
			t.Errorf("token = %q %+v", secret, tok)
		}
		p, err := f.svc.Authenticate(ctx, secret)
		if err != nil || p.Kind != coffer.PrincipalAPIToken || !p.Can(coffer.PermOperate) || p.Can(coffer.PermManage) {
			t.Fatalf("token principal = %+v, %v", p, err)
		}
		// A read-only token cannot mint a token with more scopes.
		roSecret, _, err := f.svc.CreateToken(ctx, op, NewToken{Name: "ro", Scopes: []coffer.Permission{coffer.PermRead}})
		if err != nil {
			t.Fatal(err)
		}
		ro, _ := f.svc.Authenticate(ctx, roSecret)
		if ro.Can(coffer.PermOperate) {
			t.Fatal("read-only token can operate")
		}
		_, _, err = f.svc.CreateToken(ctx, ro, NewToken{Name: "escalate", Scopes: []coffer.Permission{coffer.PermOperate}})
		wantCode(t, err, "scope_not_held")
		_, _, err = f.svc.CreateToken(ctx, op, NewToken{Name: "mgr", Scopes: []coffer.Permission{coffer.PermManage}})
		wantCode(t, err, "scope_not_held")
		_, _, err = f.svc.CreateToken(ctx, op, NewToken{Name: "bogus", Scopes: []coffer.Permission{"root"}})
		wantCode(t, err, "invalid_scopes")
		_, _, err = f.svc.CreateToken(ctx, op, NewToken{Name: "backup script"})
		wantCode(t, err, "token_name_taken")
		past := f.clock.Now().Add(-time.Hour)
		_, _, err = f.svc.CreateToken(ctx, op, NewToken{Name: "old", ExpiresAt: &past})
		wantCode(t, err, "invalid_expires_at")

		// Expiry.
		soon := f.clock.Now().Add(time.Hour)
		expSecret, _, err := f.svc.CreateToken(ctx, op, NewToken{Name: "short", ExpiresAt: &soon})
		if err != nil {
			t.Fatal(err)
		}
		f.clock.Advance(2 * time.Hour)
		_, err = f.svc.Authenticate(ctx, expSecret)
		wantCode(t, err, "token_expired")

		// Listing and revoking: own tokens; someone else's look absent; admins see all.
		mine, _ := f.svc.ListTokens(ctx, op, false)
		if len(mine) != 3 {
			t.Errorf("op has %d tokens, want 3", len(mine))
		}
		_, err = f.svc.ListTokens(ctx, op, true)
		wantCode(t, err, "forbidden")
		_, adminTok, _ := f.svc.CreateToken(ctx, f.admin, NewToken{Name: "admin-tok"})
		wantCode(t, f.svc.RevokeToken(ctx, op, adminTok.ID), "token_not_found")
		all, _ := f.svc.ListTokens(ctx, f.admin, true)
		if len(all) != 4 {
			t.Errorf("admin sees %d tokens, want 4", len(all))
		}
		if err := f.svc.RevokeToken(ctx, f.admin, tok.ID); err != nil {
			t.Fatal(err)
		}
		_, err = f.svc.Authenticate(ctx, secret)
		wantCode(t, err, "invalid_token")
		if ev := f.rec.last(); ev.Code != "token.revoked" || ev.UserID != op.UserID {
			t.Errorf("audit event = %+v", ev)
		}

		// Logout ends sessions, and refuses API tokens.
		wantCode(t, f.svc.Logout(ctx, ro), "not_a_session")
		if err := f.svc.Logout(ctx, op); err != nil {
			t.Fatal(err)
		}
	})
}

func TestThrottleMemoryIsBounded(t *testing.T) {
	th := newThrottle(5, time.Second, 100)
	now := time.Now()
	for i := range 1000 {
		th.fail(strings.Repeat("k", i%500)+string(rune('a'+i%26)), now)
	}
	if len(th.keys) > 100 {
		t.Errorf("throttle holds %d keys, want at most 100", len(th.keys))
	}
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}
