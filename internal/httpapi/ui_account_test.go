package httpapi

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
)

func TestUIAccount(t *testing.T) {
	t.Parallel()
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newFixture(t, db)
		viewer := f.uiAs("viewer")
		other := f.uiSignIn("viewer", "viewer-password") // another session of the same user
		page := viewer.get("/account").want(t, 200, `id="account-link"`, `id="account-username">viewer<`, `id="account-role">viewer<`,
			`id="current-password"`, `id="new-password"`, `id="confirm-password"`, `id="change-password"`, `<label for="current-password">`)
		page.wantNot(t, `href="/users"`)
		viewer.get("/").want(t, 200, `<a href="/account" id="account-link">Account</a>`)

		form := func(current, next, confirm string) url.Values {
			return url.Values{"current_password": {current}, "new_password": {next}, "confirm_password": {confirm}}
		}
		r := viewer.post("/account/password", form("wrong-password", "brand-new-password", "brand-new-password"))
		r.want(t, 403, `id="current-password-error"`, "The current password is wrong.",
			`id="current-password" name="current_password" value="" maxlength="1024" autocomplete="current-password" required aria-invalid="true" aria-describedby="current-password-error"`)
		r.wantNot(t, "wrong-password", "brand-new-password")
		viewer.post("/account/password", form("", "brand-new-password", "brand-new-password")).want(t, 400, `id="current-password-error"`)
		viewer.post("/account/password", form("viewer-password", "short", "short")).want(t, 400, `id="new-password-error"`, "too short")
		viewer.post("/account/password", form("viewer-password", "brand-new-password", "brand-new-pasword")).
			want(t, 400, `id="confirm-password-error"`)
		f.login("viewer", "viewer-password") // nothing changed yet

		viewer.post("/account/password", form("viewer-password", "brand-new-password", "brand-new-password")).wantRedirect(t, "/account")
		viewer.get("/account").want(t, 200, "Password changed. Your other sessions were signed out")
		f.login("viewer", "brand-new-password")
		f.do("POST", "/api/v1/auth/login", "", map[string]any{"username": "viewer", "password": "viewer-password"}).
			WantError(401, "invalid_credentials")
		if r := f.uiDo("GET", "/account", []*http.Cookie{other}, nil); r.StatusCode != http.StatusSeeOther ||
			!strings.HasPrefix(r.Header.Get("Location"), "/login") {
			t.Errorf("the other session still works: %d", r.StatusCode)
		}

		// CSRF: refused without the token.
		f.uiDo("POST", "/account/password", []*http.Cookie{viewer.sess}, form("brand-new-password", "another-password", "another-password")).
			want(t, 403, "security token")
		f.login("viewer", "brand-new-password")
		if r := f.uiDo("GET", "/account", nil, nil); r.StatusCode != http.StatusSeeOther {
			t.Errorf("account without a session: %d", r.StatusCode)
		}
	})
}
