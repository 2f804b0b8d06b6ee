package httpapi

import (
	"net/http"
	"net/url"
	"strconv"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/server/auth"
)

// passwordsDiffer is the confirm field's message when it does not repeat
// the new password.
const passwordsDiffer = "The two passwords differ: type the same password in both fields."

// usersPageSize is how many users the users page lists at a time.
const usersPageSize = 50

// usersData is the users page's data.
type usersData struct {
	Users          []coffer.User
	Total          int
	Prev, Next     string // links to the neighbouring pages ("" for none)
	Self           string // the signed-in user's id
	PageOf, PageNo int
}

// userFormData is the data of the new-user and edit-user page.
type userFormData struct {
	User  *coffer.User // nil when creating
	Self  bool         // the user edits their own account
	Roles []coffer.Role
	Form  *formState
	// Password is the reset-password form of the edit page.
	Password *formState
	// DeleteError is why deleting the user was refused.
	DeleteError string
}

// registerUIUsers mounts the users and API tokens pages (admins) and the
// account page (everyone).
func (s *Server) registerUIUsers() {
	manage := func(h uiHandler) http.HandlerFunc { return s.uiPage(coffer.PermManage, h) }
	s.mux.HandleFunc("GET /users", manage(s.uiUsers))
	s.mux.HandleFunc("GET /users/new", manage(s.uiUserNew))
	s.mux.HandleFunc("POST /users", manage(s.uiUserCreate))
	s.mux.HandleFunc("GET /users/{id}/edit", manage(s.uiUserEdit))
	s.mux.HandleFunc("POST /users/{id}", manage(s.uiUserUpdate))
	s.mux.HandleFunc("POST /users/{id}/password", manage(s.uiUserResetPassword))
	s.mux.HandleFunc("POST /users/{id}/delete", manage(s.uiUserDelete))
	s.mux.HandleFunc("GET /users/tokens", manage(s.uiTokens))
	s.mux.HandleFunc("POST /users/tokens/{id}/revoke", manage(s.uiTokenRevokeAny))
	s.registerUIAccount()
}

func (s *Server) uiUsers(w http.ResponseWriter, r *http.Request, c *uiContext) {
	page, _ := strconv.Atoi(r.URL.Query().Get("page"))
	page = max(page, 1)
	users, total, err := s.opts.Auth.ListUsers(r.Context(), metadb.UserFilter{Limit: usersPageSize, Offset: (page - 1) * usersPageSize})
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	data := &usersData{Users: users, Total: total, Self: c.p.UserID, PageNo: page,
		PageOf: max(1, (total+usersPageSize-1)/usersPageSize)}
	if page > 1 {
		data.Prev = "/users?page=" + strconv.Itoa(page-1)
	}
	if page*usersPageSize < total {
		data.Next = "/users?page=" + strconv.Itoa(page+1)
	}
	s.render(w, r, http.StatusOK, "users", c.view("Users", "users", data))
}

func (s *Server) uiUserNew(w http.ResponseWriter, r *http.Request, c *uiContext) {
	form := newFormState(url.Values{"role": {string(coffer.RoleViewer)}})
	s.renderUserForm(w, r, c, http.StatusOK, &userFormData{Form: form})
}

func (s *Server) uiUserCreate(w http.ResponseWriter, r *http.Request, c *uiContext) {
	vals, ok := s.parseForm(w, r, c)
	if !ok {
		return
	}
	form := newFormState(vals)
	data := &userFormData{Form: form}
	password := vals.Get("password")
	if password != vals.Get("confirm_password") {
		form.set("confirm_password", passwordsDiffer)
	}
	if form.Invalid() {
		s.renderUserForm(w, r, c, http.StatusBadRequest, data)
		return
	}
	u, err := s.opts.Auth.CreateUser(r.Context(), c.p, auth.NewUser{Username: form.Value("username"), Password: password,
		Role: coffer.Role(form.Value("role"))})
	if err != nil {
		ff := failureOf(r.Context(), err)
		form.fail(ff, map[string]string{"password": "password"})
		s.renderUserForm(w, r, c, ff.status, data)
		return
	}
	s.uiDone(w, r, "/users", "User "+u.Username+" created.")
}

func (s *Server) uiUserEdit(w http.ResponseWriter, r *http.Request, c *uiContext) {
	u, err := s.opts.Auth.GetUser(r.Context(), r.PathValue("id"))
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	s.renderUserForm(w, r, c, http.StatusOK, &userFormData{User: u, Form: userValues(u), Password: newFormState(nil)})
}

// userValues fills the edit form with u's settings.
func userValues(u *coffer.User) *formState {
	v := url.Values{"username": {u.Username}, "role": {string(u.Role)}}
	if u.Disabled {
		v.Set("disabled", "on")
	}
	return newFormState(v)
}

func (s *Server) uiUserUpdate(w http.ResponseWriter, r *http.Request, c *uiContext) {
	vals, ok := s.parseForm(w, r, c)
	if !ok {
		return
	}
	u, err := s.opts.Auth.GetUser(r.Context(), r.PathValue("id"))
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	form := newFormState(vals)
	ch := auth.UserChanges{}
	if name := form.Value("username"); name != u.Username {
		ch.Username = &name
	}
	// Your own role and status are not on your form; another admin's are.
	if u.ID != c.p.UserID {
		role, disabled := coffer.Role(form.Value("role")), form.Checked("disabled")
		ch.Role, ch.Disabled = &role, &disabled
	}
	updated, err := s.opts.Auth.UpdateUser(r.Context(), c.p, u.ID, ch)
	if err != nil {
		ff := failureOf(r.Context(), err)
		form.fail(ff, nil)
		s.renderUserForm(w, r, c, ff.status, &userFormData{User: u, Form: form, Password: newFormState(nil)})
		return
	}
	s.uiDone(w, r, "/users", "User "+updated.Username+" saved.")
}

func (s *Server) uiUserResetPassword(w http.ResponseWriter, r *http.Request, c *uiContext) {
	vals, ok := s.parseForm(w, r, c)
	if !ok {
		return
	}
	u, err := s.opts.Auth.GetUser(r.Context(), r.PathValue("id"))
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	pw := newFormState(vals)
	data := &userFormData{User: u, Form: userValues(u), Password: pw}
	if u.ID == c.p.UserID {
		data.Form.Error = "Change your own password on your account page: it asks for your current one."
		s.renderUserForm(w, r, c, http.StatusConflict, data)
		return
	}
	password := vals.Get("new_password")
	if password != vals.Get("confirm_password") {
		pw.set("confirm_password", passwordsDiffer)
		s.renderUserForm(w, r, c, http.StatusBadRequest, data)
		return
	}
	if err := s.opts.Auth.ChangePassword(r.Context(), c.p, u.ID, "", password); err != nil {
		ff := failureOf(r.Context(), err)
		pw.fail(ff, map[string]string{"password": "new_password"})
		s.renderUserForm(w, r, c, ff.status, data)
		return
	}
	s.uiDone(w, r, "/users", "Password of "+u.Username+" reset; their sessions were signed out.")
}

func (s *Server) uiUserDelete(w http.ResponseWriter, r *http.Request, c *uiContext) {
	u, err := s.opts.Auth.GetUser(r.Context(), r.PathValue("id"))
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	if err := s.opts.Auth.DeleteUser(r.Context(), c.p, u.ID); err != nil {
		ff := failureOf(r.Context(), err)
		s.renderUserForm(w, r, c, ff.status, &userFormData{User: u, Form: userValues(u), Password: newFormState(nil),
			DeleteError: ff.message})
		return
	}
	s.uiDone(w, r, "/users", "User "+u.Username+" deleted, with their sessions and API tokens.")
}

func (s *Server) renderUserForm(w http.ResponseWriter, r *http.Request, c *uiContext, status int, data *userFormData) {
	data.Roles = coffer.Roles
	title := "New user"
	if data.User != nil {
		data.Self = data.User.ID == c.p.UserID
		title = "User " + data.User.Username
	}
	s.render(w, r, status, "user_form", c.view(title, "users", data))
}

// tokenRow is an API token as a list shows it: never its secret.
type tokenRow struct {
	coffer.APIToken
	Owner   string // the owner's username
	Expired bool
}

// tokensData is the data of the all-tokens page.
type tokensData struct {
	Tokens []tokenRow
}

func (s *Server) uiTokens(w http.ResponseWriter, r *http.Request, c *uiContext) {
	rows, err := s.tokenRows(r, c, true)
	if err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	s.render(w, r, http.StatusOK, "tokens", c.view("API tokens", "users", &tokensData{Tokens: rows}))
}

// tokenRows lists the signed-in user's tokens, or with all every user's,
// with their owners' names.
func (s *Server) tokenRows(r *http.Request, c *uiContext, all bool) ([]tokenRow, error) {
	toks, err := s.opts.Auth.ListTokens(r.Context(), c.p, all)
	if err != nil {
		return nil, err
	}
	names := map[string]string{c.p.UserID: c.p.Username}
	now := s.opts.Now()
	rows := make([]tokenRow, len(toks))
	for i, t := range toks {
		if _, ok := names[t.UserID]; !ok {
			names[t.UserID] = t.UserID
			if u, err := s.opts.Auth.GetUser(r.Context(), t.UserID); err == nil {
				names[t.UserID] = u.Username
			}
		}
		rows[i] = tokenRow{APIToken: t, Owner: names[t.UserID], Expired: t.ExpiresAt != nil && !now.Before(*t.ExpiresAt)}
	}
	return rows, nil
}

func (s *Server) uiTokenRevokeAny(w http.ResponseWriter, r *http.Request, c *uiContext) {
	if err := s.opts.Auth.RevokeToken(r.Context(), c.p, r.PathValue("id")); err != nil {
		s.uiFail(w, r, c, err)
		return
	}
	s.uiDone(w, r, "/users/tokens", "API token revoked.")
}
