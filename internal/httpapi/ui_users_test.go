package httpapi

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"testing"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
)

func TestUIUsers(t *testing.T) {
	t.Parallel()
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newFixture(t, db)
		admin := f.uiAs("admin")
		adminID, viewerID := f.userID("admin"), f.userID("viewer")

		admin.get("/users").want(t, 200, `id="users"`, `data-user-id="`+adminID+`"`, `data-user-id="`+viewerID+`"`,
			"admin</a> <span class=\"muted\">(you)</span>", `id="new-user"`, `href="/users/tokens"`)
		admin.get("/users/new").want(t, 200, `<option value="viewer" selected>`, `id="user-password"`, `id="user-confirm-password"`)

		// Bad input: each message on its field, the rest of the input kept,
		// never a password.
		r := admin.post("/users", url.Values{"username": {"dora"}, "role": {"operator"}, "password": {"dora-password"},
			"confirm_password": {"dora-passwrod"}})
		r.want(t, 400, `id="user-confirm-password-error"`, `value="dora"`, `<option value="operator" selected>`).
			wantNot(t, "dora-password", "dora-passwrod")
		admin.post("/users", url.Values{"username": {"dora"}, "role": {"operator"}, "password": {"short"},
			"confirm_password": {"short"}}).want(t, 400, `id="user-password-error"`, "too short", `value="dora"`).wantNot(t, `value="short"`)
		admin.post("/users", url.Values{"username": {"-dora"}, "role": {"viewer"}, "password": {"dora-password"},
			"confirm_password": {"dora-password"}}).want(t, 400, `id="user-username-error"`, `value="-dora"`)
		admin.post("/users", url.Values{"username": {"VIEWER"}, "role": {"viewer"}, "password": {"dora-password"},
			"confirm_password": {"dora-password"}}).want(t, 409, `id="user-username-error"`)
		admin.post("/users", url.Values{"username": {"dora"}, "role": {"root"}, "password": {"dora-password"},
			"confirm_password": {"dora-password"}}).want(t, 400, `id="user-role-error"`)

		admin.post("/users", url.Values{"username": {"dora"}, "role": {"operator"}, "password": {"dora-password"},
			"confirm_password": {"dora-password"}}).wantRedirect(t, "/users")
		admin.get("/users").want(t, 200, "User dora created.", ">dora</a>")
		doraID := f.userID("dora")
		f.login("dora", "dora-password")

		// Edit: role and status; then a reset password.
		edit := "/users/" + doraID
		admin.get(edit+"/edit").want(t, 200, `<option value="operator" selected>`, `id="user-disabled"`, `id="reset-password"`,
			`id="delete-user"`)
		admin.post(edit, url.Values{"username": {"dora"}, "role": {"viewer"}, "disabled": {"on"}}).wantRedirect(t, "/users")
		if u, _ := f.auth.GetUser(context.Background(), doraID); u.Role != coffer.RoleViewer || !u.Disabled {
			t.Errorf("after edit: %+v", u)
		}
		admin.get("/users").want(t, 200, "User dora saved.", ">disabled<")
		admin.post(edit, url.Values{"username": {"dora"}, "role": {"viewer"}}).wantRedirect(t, "/users")
		admin.post(edit+"/password", url.Values{"new_password": {"dora-new-password"}, "confirm_password": {"dora-new-pasword"}}).
			want(t, 400, `id="reset-confirm-password-error"`).wantNot(t, "dora-new-pas")
		admin.post(edit+"/password", url.Values{"new_password": {"short"}, "confirm_password": {"short"}}).
			want(t, 400, `id="reset-new-password-error"`, "too short")
		admin.post(edit+"/password", url.Values{"new_password": {"dora-new-password"}, "confirm_password": {"dora-new-password"}}).
			wantRedirect(t, "/users")
		f.login("dora", "dora-new-password")

		// Your own account: no role, status or delete controls, and the
		// service's refusal in place when asked anyway.
		self := admin.get("/users/"+adminID+"/edit").want(t, 200, "You cannot change your own role")
		self.wantNot(t, `id="user-role"`, `id="user-disabled"`, `id="delete-user"`, `id="reset-password"`)
		admin.post("/users/"+adminID+"/delete", nil).want(t, 409, `id="delete-error"`, "You cannot delete your own account")
		admin.post("/users/"+adminID+"/password", url.Values{"new_password": {"x-password"}, "confirm_password": {"x-password"}}).
			want(t, 409, `<p class="alert" role="alert">Change your own password on your account page`)
		admin.post("/users/"+adminID, url.Values{"username": {"admin"}, "role": {"viewer"}, "disabled": {"on"}}).wantRedirect(t, "/users")
		if u, _ := f.auth.GetUser(context.Background(), adminID); u.Role != coffer.RoleAdmin || u.Disabled {
			t.Errorf("an admin demoted or disabled themselves: %+v", u)
		}

		admin.post(edit+"/delete", nil).wantRedirect(t, "/users")
		admin.get("/users").want(t, 200, "User dora deleted").wantNot(t, ">dora</a>")
		admin.get(edit+"/edit").want(t, 404)

		// Viewers and operators: no Users page, no way to post.
		for _, name := range []string{"viewer", "operator"} {
			u := f.uiAs(name)
			u.get("/").wantNot(t, `href="/users"`)
			u.get("/users").want(t, 403, "manage permission")
			u.get("/users/tokens").want(t, 403)
			u.post("/users", url.Values{"username": {"mallory"}, "role": {"admin"}, "password": {"mallory-password"},
				"confirm_password": {"mallory-password"}}).want(t, 403)
			u.post("/users/"+viewerID, url.Values{"username": {"viewer"}, "role": {"admin"}}).want(t, 403)
			u.post("/users/"+adminID+"/delete", nil).want(t, 403)
		}
		if _, err := f.db.GetUserByUsername(context.Background(), "mallory"); err == nil {
			t.Error("a non-admin created a user")
		}
		// Without the CSRF token: refused.
		f.uiDo("POST", "/users/"+viewerID+"/delete", []*http.Cookie{admin.sess}, url.Values{}).want(t, 403, "security token")
		if _, err := f.auth.GetUser(context.Background(), viewerID); err != nil {
			t.Errorf("deleted without the token: %v", err)
		}
	})
}

var tokenSecret = regexp.MustCompile(`<pre id="token-secret">(cfr_t_[A-Za-z0-9_-]+)</pre>`)

func TestUITokens(t *testing.T) {
	t.Parallel()
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newFixture(t, db)
		viewer, admin := f.uiAs("viewer"), f.uiAs("admin")

		page := viewer.get("/account").want(t, 200, `id="token-form"`, `id="token-access-read"`, "You have no API tokens.")
		page.wantNot(t, `id="token-access-operate"`, `id="token-access-manage"`, `id="token-secret"`)
		viewer.post("/account/tokens", url.Values{"name": {""}, "access": {"read"}, "expires": {"30"}}).
			want(t, 400, `id="token-name-error"`)
		viewer.post("/account/tokens", url.Values{"name": {"report"}, "access": {"manage"}, "expires": {"30"}}).
			want(t, 403, `id="token-access-error"`, "does not hold", `value="report"`)
		viewer.post("/account/tokens", url.Values{"name": {"report"}, "access": {"read"}, "expires": {"forever"}}).
			want(t, 400, `id="token-expires-error"`)

		r := viewer.post("/account/tokens", url.Values{"name": {"report"}, "access": {"read"}, "expires": {"30"}})
		r.want(t, 200, `data-copy="#token-secret"`, "shown only this once", `data-token-id="`)
		if r.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("the secret's page may be cached: %v", r.Header)
		}
		m := tokenSecret.FindStringSubmatch(r.Body)
		if m == nil {
			t.Fatalf("no secret shown:\n%s", r.Body)
		}
		secret := m[1]
		me := f.do("GET", "/api/v1/auth/me", secret, nil).Want(200)
		if me.Str("user", "username") != "viewer" {
			t.Errorf("the token is not the viewer's: %s", me.Body)
		}
		// Once only: never again on any page.
		viewer.get("/account").want(t, 200, ">report<").wantNot(t, secret, `id="token-secret"`)
		all := admin.get("/users/tokens").want(t, 200, ">report<", "<td>viewer</td>", "read")
		all.wantNot(t, secret)
		toks, _ := f.auth.ListTokens(context.Background(), &coffer.Principal{UserID: f.userID("viewer")}, false)
		if len(toks) != 1 || toks[0].ExpiresAt == nil {
			t.Fatalf("tokens: %+v", toks)
		}

		// Revoking: an operator cannot touch the viewer's token; the admin can.
		op := f.uiAs("operator")
		op.post("/account/tokens/"+toks[0].ID+"/revoke", nil).want(t, 404)
		op.post("/users/tokens/"+toks[0].ID+"/revoke", nil).want(t, 403)
		f.uiDo("POST", "/users/tokens/"+toks[0].ID+"/revoke", []*http.Cookie{admin.sess}, url.Values{}).want(t, 403, "security token")
		f.do("GET", "/api/v1/auth/me", secret, nil).Want(200)
		admin.post("/users/tokens/"+toks[0].ID+"/revoke", nil).wantRedirect(t, "/users/tokens")
		admin.get("/users/tokens").want(t, 200, "API token revoked.", "No API tokens.")
		f.do("GET", "/api/v1/auth/me", secret, nil).WantError(401, "invalid_token")

		// Anyone revokes their own; an admin's token may manage.
		admin.get("/account").want(t, 200, `id="token-access-manage"`)
		r = admin.post("/account/tokens", url.Values{"name": {"ci"}, "access": {"manage"}, "expires": {"never"}})
		r.want(t, 200, `id="token-secret"`, ">never<")
		admin.post("/account/tokens", url.Values{"name": {"ci"}, "access": {"read"}, "expires": {"7"}}).want(t, 409, `id="token-name-error"`)
		toks, _ = f.auth.ListTokens(context.Background(), &coffer.Principal{UserID: f.userID("admin")}, false)
		if len(toks) != 1 || toks[0].ExpiresAt != nil || len(toks[0].Scopes) != 3 {
			t.Fatalf("admin tokens: %+v", toks)
		}
		admin.post("/account/tokens/"+toks[0].ID+"/revoke", nil).wantRedirect(t, "/account")
		admin.get("/account").want(t, 200, "API token revoked.", "You have no API tokens.")
	})
}
