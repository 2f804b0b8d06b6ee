package httpapi

import (
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/server/auth"
)

// accountData is the account page's data.
type accountData struct {
	User     *coffer.User
	Password *formState // the change-password form
	Tokens   []tokenRow
	Token    *formState // the new-token form
	// Access lists the access levels a new token may have: those the
	// signed-in user holds.
	Access []tokenAccess
	// Expiries are the lifetimes a new token may have.
	Expiries []tokenExpiry
	// Secret is a token just created: shown on this one page, never again.
	Secret      string
	SecretToken *tokenRow
}

// tokenAccess is one level of access a token may have: each includes the
// ones before it, as roles do.
type tokenAccess struct {
	Value, Label string
	Scopes       []coffer.Permission
}

// tokenAccessLevels are the access levels, least first.
var tokenAccessLevels = []tokenAccess{
	{Value: "read", Label: "Read: see everything your account sees", Scopes: []coffer.Permission{coffer.PermRead}},
	{Value: "operate", Label: "Operate: also run backups and restores", Scopes: []coffer.Permission{coffer.PermRead, coffer.PermOperate}},
	{Value: "manage", Label: "Manage: also users, storage and settings",
		Scopes: []coffer.Permission{coffer.PermRead, coffer.PermOperate, coffer.PermManage}},
}

// tokenExpiry is one lifetime a new token may have (Days 0: never expires).
type tokenExpiry struct {
	Value, Label string
	Days         int
}

// tokenExpiries are the lifetimes a new token may have; defaultExpiry is
// the one the form starts with.
var tokenExpiries = []tokenExpiry{
	{Value: "7", Label: "7 days", Days: 7},
	{Value: "30", Label: "30 days", Days: 30},
	{Value: "90", Label: "90 days", Days: 90},
	{Value: "365", Label: "1 year", Days: 365},
	{Value: "never", Label: "Never"},
}

const defaultExpiry = "30"

// registerUIAccount mounts the signed-in user's own page: their password
// and their API tokens (everyone may have tokens; they never hold more
// than the account does).
func (s *Server) registerUIAccount() {
	read := func(h uiHandler) http.HandlerFunc { return s.uiPage(coffer.PermRead, h) }
	s.mux.HandleFunc("GET /account", read(s.uiAccount))
	s.mux.HandleFunc("POST /account/password", read(s.uiAccountPassword))
	s.mux.HandleFunc("POST /account/tokens", read(s.uiAccountTokenCreate))
	s.mux.HandleFunc("POST /account/tokens/{id}/revoke", read(s.uiAccountTokenRevoke))
}

func (s *Server) uiAccount(w http.ResponseWriter, r *http.Request, c *uiContext) {
	s.renderAccount(w, r, c, http.StatusOK, &accountData{})
}

// renderAccount fills in what data lacks (the user, their tokens, empty
// forms) and renders the account page.
func (s *Server) renderAccount(w http.ResponseWriter, r *http.Request, c *uiContext, status int, data *accountData) {
	var err error
	if data.User, err = s.opts.Auth.GetUser(r.Context(), c.p.UserID); err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	if data.Tokens, err = s.tokenRows(r, c, false); err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	if data.Password == nil {
		data.Password = newFormState(nil)
	}
	for _, a := range tokenAccessLevels {
		if c.p.Can(a.Scopes[len(a.Scopes)-1]) {
			data.Access = append(data.Access, a)
		}
	}
	if data.Token == nil {
		data.Token = newFormState(url.Values{"expires": {defaultExpiry}})
		if len(data.Access) > 0 {
			data.Token.values.Set("access", data.Access[0].Value)
		}
	}
	data.Expiries = tokenExpiries
	s.render(w, r, status, "account", c.view("Account", "", data))
}

func (s *Server) uiAccountPassword(w http.ResponseWriter, r *http.Request, c *uiContext) {
	vals, ok := s.parseForm(w, r, c)
	if !ok {
		return
	}
	form := newFormState(vals)
	current, next := vals.Get("current_password"), vals.Get("new_password")
	if current == "" {
		form.set("current_password", "Enter your current password.")
	}
	if next != vals.Get("confirm_password") {
		form.set("confirm_password", passwordsDiffer)
	}
	if !form.Invalid() {
		err := s.opts.Auth.ChangePassword(r.Context(), c.p, c.p.UserID, current, next)
		if err == nil {
			s.uiDone(w, r, "/account", "Password changed. Your other sessions were signed out; this one stays signed in.")
			return
		}
		ff := failureOf(r.Context(), err)
		form.fail(ff, map[string]string{"old_password": "current_password", "password": "new_password"})
		s.renderAccount(w, r, c, ff.status, &accountData{Password: form})
		return
	}
	s.renderAccount(w, r, c, http.StatusBadRequest, &accountData{Password: form})
}

// uiAccountTokenCreate issues an API token to the signed-in user and shows
// its secret on the page it answers with: once, never in a URL or cookie.
func (s *Server) uiAccountTokenCreate(w http.ResponseWriter, r *http.Request, c *uiContext) {
	vals, ok := s.parseForm(w, r, c)
	if !ok {
		return
	}
	form := newFormState(vals)
	nt := auth.NewToken{Name: form.Value("name")}
	i := slices.IndexFunc(tokenAccessLevels, func(a tokenAccess) bool { return a.Value == form.Value("access") })
	if i < 0 {
		form.set("access", "Choose what the token may do.")
	} else {
		nt.Scopes = tokenAccessLevels[i].Scopes
	}
	j := slices.IndexFunc(tokenExpiries, func(e tokenExpiry) bool { return e.Value == form.Value("expires") })
	if j < 0 {
		form.set("expires", "Choose when the token expires.")
	} else if d := tokenExpiries[j].Days; d > 0 {
		at := s.opts.Now().Add(time.Duration(d) * 24 * time.Hour).UTC().Truncate(time.Second)
		nt.ExpiresAt = &at
	}
	if nt.Name == "" {
		form.set("name", "Give the token a name that says where it is used, e.g. “nightly report script”.")
	}
	if form.Invalid() {
		s.renderAccount(w, r, c, http.StatusBadRequest, &accountData{Token: form})
		return
	}
	secret, tok, err := s.opts.Auth.CreateToken(r.Context(), c.p, nt)
	if err != nil {
		ff := failureOf(r.Context(), err)
		form.fail(ff, map[string]string{"scopes": "access", "expires_at": "expires"})
		s.renderAccount(w, r, c, ff.status, &accountData{Token: form})
		return
	}
	c.flash = "API token “" + tok.Name + "” created. Copy it now: it is not shown again."
	s.renderAccount(w, r, c, http.StatusOK, &accountData{Secret: secret, SecretToken: &tokenRow{APIToken: *tok, Owner: c.p.Username}})
}

func (s *Server) uiAccountTokenRevoke(w http.ResponseWriter, r *http.Request, c *uiContext) {
	if err := s.opts.Auth.RevokeToken(r.Context(), c.p, r.PathValue("id")); err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	s.uiDone(w, r, "/account", "API token revoked.")
}
